"""Export the event contract as a versioned JSON Schema, and check the committed copy is current.

    python -m agentaudit_schemas.export           # (re)write schemas/jsonschema/trace-event.v1.json
    python -m agentaudit_schemas.export --check   # exit 1 if the committed file is not current

The output is deterministic (sorted keys, two-space indent, UTF-8, trailing newline), so the
committed file changes exactly when the contract does and a stale copy fails CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agentaudit_schemas.envelope import MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTES, SCHEMA_VERSION
from agentaudit_schemas.events import EVENT_ADAPTER

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = f"urn:agentaudit:schema:trace-event:v{SCHEMA_VERSION}"
SCHEMA_PATH = Path(__file__).resolve().parent / "jsonschema" / f"trace-event.v{SCHEMA_VERSION}.json"


def _mirror_validator_rules(schema: dict[str, Any]) -> None:
    """Add to the generated schema the rules pydantic enforces in code, so that a producer
    validating against the file is not stricter-looking than the sink is lenient-acting.

    * `type` is required on the wire (it selects the model); pydantic lists it as optional
      because each class gives it a default for Python constructors.
    * `attributes` is capped in count and key length by an AfterValidator.
    Not expressible here, checked by the sink only: cached_input_tokens + cache_write_tokens
    <= input_tokens and reasoning_tokens <= output_tokens in `Usage`; UTC normalisation;
    `occurred_at`'s range as an instant (the `pattern` checks the year as written, so the
    two differ only within a UTC offset of 2000-01-01 and 2200-01-01); no duplicate keys.
    """
    defs = schema["$defs"]
    for ref in schema["discriminator"]["mapping"].values():
        event = defs[ref.rsplit("/", 1)[1]]
        if "type" not in event["required"]:
            event["required"].insert(0, "type")
        attributes = event["properties"]["attributes"]
        attributes["maxProperties"] = MAX_ATTRIBUTES
        attributes["propertyNames"] = {"minLength": 1, "maxLength": MAX_ATTRIBUTE_KEY}


def trace_event_schema() -> dict[str, Any]:
    """The JSON Schema of `TraceEvent` (the discriminated union of every event type)."""
    schema = EVENT_ADAPTER.json_schema(mode="validation")
    _mirror_validator_rules(schema)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "title": "agentaudit trace event",
        "description": (
            "One event an agent emits to agentaudit.events.v1: the common envelope plus a "
            "payload selected by `type`. Generated from agentaudit_schemas.events; do not "
            "edit by hand."
        ),
        "version": SCHEMA_VERSION,
        **schema,
    }


def render(schema: dict[str, Any]) -> str:
    """Deterministic text form: sorted keys, indent 2, non-ASCII kept, trailing newline."""
    return json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m agentaudit_schemas.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed file is stale"
    )
    parser.add_argument("--out", type=Path, default=SCHEMA_PATH, help="output path")
    args = parser.parse_args(argv)

    text = render(trace_event_schema())
    current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
    if args.check:
        if current != text:
            state = "missing" if current is None else "stale"
            print(
                f"{args.out} is {state}; run: python -m agentaudit_schemas.export", file=sys.stderr
            )
            return 1
        print(f"{args.out} is current")
        return 0
    if current == text:
        print(f"{args.out} unchanged")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # newline="\n": the same bytes on every OS, or --check would flap on Windows checkouts.
    args.out.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
