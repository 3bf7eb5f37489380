"""The record sink and the SDK's kill switch read the control topic alike: one corpus of
control-topic messages, each through the SDK's `ControlState.apply_control_record` and the
record sink's `RecordProcessor.add`; the sink stores exactly what the SDK obeys (typed
columns as the SDK read them, the bytes as published) and dead-letters, with a reason,
exactly what it refuses.

Before, the sink parsed strictly: a newer CLI's block with one unknown field (which the SDK
obeys with the field dropped) was dead-lettered (`schema_violation`), a block without the
`record` tag likewise (`unknown_type`), and records the SDK refuses on that topic (an alert,
a heartbeat under a scope key, a control message under a heartbeat key) were stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agentaudit.sink.pipeline_records.decode import MAX_RECORD_BYTES
from agentaudit.sink.pipeline_records.routing import RecordProcessor
from agentaudit.sink.pipeline_records.rows import CONTROL, HEARTBEATS
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, Source
from agentaudit_schemas.records import ControlAction, Heartbeat
from agentaudit_sdk.control import ControlState, InvalidRecord, decode_control_value
from tests.unit.sink.pipeline_records.factories import alert, control, wire

FIXED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TOPIC = "control"
BLOCK = control(0)
KEY = BLOCK.scope.key.encode()
BEAT = Heartbeat.make("stream_jobs", FIXED, 3, "host:1", 5.0)
BEAT_DOC = json.loads(BEAT.model_dump_json())


def doc(**changes: Any) -> dict[str, Any]:
    """The block as JSON, with fields set (None removes one)."""
    out = json.loads(BLOCK.model_dump_json())
    for name, value in changes.items():
        if value is None:
            out.pop(name)
        else:
            out[name] = value
    return out


def raw(value: Any) -> bytes:
    return json.dumps(value).encode()


SCOPE = doc()["scope"]
CORPUS: list[tuple[str, bytes | None, bytes, str | None]] = [
    # (case, key, value, the sink's dead-letter reason; None = stored)
    ("block", KEY, wire(BLOCK), None),
    ("unknown field", KEY, raw(doc(ticket="INC-7")), None),
    ("unknown scope part", KEY, raw(doc(scope={**SCOPE, "region": "eu"})), None),
    ("unknown nested object", KEY, raw(doc(approval={"by": "cto", "at": [1, 2]})), None),
    ("no record tag", KEY, raw(doc(record=None)), None),
    ("unblock, unknown field", KEY, raw(doc(action="unblock", ticket="INC-7")), None),
    ("no key", None, raw(doc(ticket="INC-7")), None),
    ("bare tenant key", b"acme", raw(doc(ticket="INC-7")), None),
    ("over the record limit", KEY, raw(doc(note="x" * (MAX_RECORD_BYTES + 1))), None),
    ("heartbeat", BEAT.key.encode(), wire(BEAT), None),
    ("unknown action", KEY, raw(doc(action="pause", ticket="INC-7")), "schema_violation"),
    ("unknown reason", KEY, raw(doc(reason="cosmic_rays")), "schema_violation"),
    ("no scope", KEY, raw(doc(scope=None, ticket="INC-7")), "schema_violation"),
    ("no tenant", KEY, raw(doc(scope={"agent_id": "bot"})), "missing_tenant"),
    ("bad tenant", KEY, raw(doc(scope={"tenant_id": "ACME!"})), "invalid_tenant"),
    ("no action", KEY, raw(doc(action=None, ticket="x")), "schema_violation"),
    ("bad id, unknown field", KEY, raw(doc(control_id="nope", ticket="x")), "schema_violation"),
    ("scope not an object", KEY, raw(doc(scope="tenant=acme")), "schema_violation"),
    ("year out of range", KEY, raw(doc(issued_at="0001-01-01T00:30:00+01:00")), "schema_violation"),
    ("until past 9999", KEY, raw(doc(until="9999-12-31T23:30:00-01:00")), "schema_violation"),
    ("another record tag", KEY, raw(doc(record="control_v2")), "unknown_type"),
    ("an alert", KEY, wire(alert(0)), "unknown_type"),
    ("a heartbeat under a scope key", KEY, wire(BEAT), "unknown_type"),
    ("a block under a heartbeat key", BEAT.key.encode(), wire(BLOCK), "unknown_type"),
    ("heartbeat, unknown field", BEAT.key.encode(), raw({**BEAT_DOC, "zone": "eu"}), None),
    (
        "heartbeat, bad seq",
        BEAT.key.encode(),
        raw({**BEAT_DOC, "seq": -1, "x": 1}),
        "schema_violation",
    ),
    ("not JSON", KEY, b"{block", "invalid_json"),
    ("a JSON list", KEY, b"[1, 2]", "invalid_json"),
    ("JSON null", KEY, b"null", "invalid_json"),
]


def sdk_obeys(key: bytes | None, value: bytes) -> bool:
    try:
        ControlState().apply_control_record(key, value)
    except InvalidRecord:
        return False
    except Exception:  # noqa: BLE001 - a reading the SDK cannot finish is not obeyed either
        return False
    return True


def sink_of(key: bytes | None, value: bytes) -> RecordProcessor:
    p = RecordProcessor(dedup_capacity=10, clock=lambda: FIXED, control_topic=TOPIC)
    p.add(Source(TOPIC, 0, 7, 1_700_000_000_000, key), value)
    return p


@pytest.mark.parametrize(("case", "key", "value", "reason"), CORPUS, ids=[c[0] for c in CORPUS])
def test_the_sink_stores_what_the_sdk_obeys_and_dead_letters_the_rest(
    case: str, key: bytes | None, value: bytes, reason: str | None
) -> None:
    obeyed = sdk_obeys(key, value)
    p = sink_of(key, value)
    stored = sum(p.counters.stored.values())
    assert (stored, p.counters.dead_lettered) == ((1, 0) if obeyed else (0, 1)), case
    batch = p.take()
    if not obeyed:
        (row,) = batch.dead_letters
        got = row[DEAD_LETTER_COLUMNS.index("reason")]
        assert got == reason, (case, got)
        assert (batch.dlq[0].key, batch.dlq[0].value) == (key, value)
        return
    assert reason is None, f"{case}: the SDK obeys it"
    (rows,) = batch.rows.values()
    (row,) = rows
    read = decode_control_value(key, value)
    table = HEARTBEATS if isinstance(read, Heartbeat) else CONTROL
    assert row == table.row(read, value, Source(TOPIC, 0, 7, 1_700_000_000_000, key)), case
    assert row[table.columns.index("record")] == value  # the trail holds what was obeyed


def test_the_corpus_covers_both_verdicts_of_both_kinds() -> None:
    verdicts = {(case, sdk_obeys(key, value)) for case, key, value, _ in CORPUS}
    assert sum(ok for _, ok in verdicts) >= 10 and sum(not ok for _, ok in verdicts) >= 10


def test_an_unblock_with_an_unknown_field_is_stored_as_an_unblock() -> None:
    value = raw(doc(action="unblock", ticket="INC-7"))
    (rows,) = sink_of(KEY, value).take().rows.values()
    assert rows[0][CONTROL.columns.index("action")] == ControlAction.UNBLOCK.value


@pytest.mark.parametrize("value", [wire(BLOCK), wire(BEAT)], ids=["a block", "a heartbeat"])
def test_a_kill_switch_record_on_the_alerts_topic_is_a_dead_letter(value: bytes) -> None:
    """No agent reads the alerts topic. A block published there was stored as a control row:
    a block nobody obeyed, in force on the dashboards, and `restore-blocks` (which publishes
    the newest stored block of each scope the control topic lacks) put it on the control
    topic, where the agents then obeyed it. A heartbeat there faked the jobs' liveness."""
    p = RecordProcessor(dedup_capacity=10, clock=lambda: FIXED, control_topic=TOPIC)
    p.add(Source("alerts", 0, 3, 1_700_000_000_000, KEY), value)
    batch = p.take()
    assert batch.rows == {}
    (row,) = batch.dead_letters
    assert row[DEAD_LETTER_COLUMNS.index("reason")] == "unknown_type"
