"""The committed JSON Schema is what the models export today, and says what the sink enforces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentaudit_schemas import export
from agentaudit_schemas.envelope import MAX_ATTRIBUTES, SCHEMA_VERSION
from agentaudit_schemas.events import EVENT_CLASSES


def test_committed_schema_is_current() -> None:
    committed = export.SCHEMA_PATH.read_text(encoding="utf-8")
    assert committed == export.render(export.trace_event_schema()), (
        "schemas/jsonschema is stale: run `python -m agentaudit_schemas.export`"
    )


def test_check_mode_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export.main(["--check"]) == 0
    stale = tmp_path / "trace-event.v1.json"
    assert export.main(["--check", "--out", str(stale)]) == 1  # missing
    stale.write_text("{}\n", encoding="utf-8")
    assert export.main(["--check", "--out", str(stale)]) == 1  # stale
    assert export.main(["--out", str(stale)]) == 0  # regenerate
    assert export.main(["--check", "--out", str(stale)]) == 0
    assert stale.read_bytes() == export.SCHEMA_PATH.read_bytes()
    capsys.readouterr()


def test_render_is_deterministic_and_newline_terminated() -> None:
    first = export.render(export.trace_event_schema())
    assert first == export.render(export.trace_event_schema())
    assert first.endswith("}\n") and not first.endswith("\n\n")
    assert json.loads(first) == export.trace_event_schema()


def test_schema_identity() -> None:
    schema = json.loads(export.SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$id"] == f"urn:agentaudit:schema:trace-event:v{SCHEMA_VERSION}"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["version"] == SCHEMA_VERSION
    assert schema["title"]
    assert export.SCHEMA_PATH.name == f"trace-event.v{SCHEMA_VERSION}.json"


def test_schema_covers_every_event_type_and_requires_type() -> None:
    schema = json.loads(export.SCHEMA_PATH.read_text(encoding="utf-8"))
    mapping = schema["discriminator"]["mapping"]
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(mapping) == set(EVENT_CLASSES)
    assert len(schema["oneOf"]) == len(EVENT_CLASSES)
    for type_, ref in mapping.items():
        definition = schema["$defs"][ref.rsplit("/", 1)[1]]
        assert definition["properties"]["type"]["const"] == type_
        assert definition["additionalProperties"] is False
        assert {"type", "event_id", "tenant_id", "occurred_at", "payload"} <= set(
            definition["required"]
        )
        assert definition["properties"]["attributes"]["maxProperties"] == MAX_ATTRIBUTES


def test_payload_models_forbid_extra_fields() -> None:
    schema = json.loads(export.SCHEMA_PATH.read_text(encoding="utf-8"))
    objects = [d for d in schema["$defs"].values() if d.get("type") == "object"]
    assert objects
    assert all(d.get("additionalProperties") is False for d in objects)
