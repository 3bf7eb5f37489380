"""One decoded OTLP request to the records it sends: events (events topic) and dead letters.

Every event document is judged by the sink's own contract check (`agentaudit.sink.decode.
validate`, the bytes the sink will read): an event the sink would dead-letter is dead-lettered
here, with the sink's reason, and counted as rejected in the response's `partial_success`, so
the exporter's user learns of it. A span that maps to nothing is a dead letter too
(`unknown_type`): its record on the DLQ topic is the span as OTLP/JSON (hex ids) with its
resource and scope, under the same headers the sink writes (`reason`, `detail`, `source`).
Pure: no I/O, the same request always gives the same records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agentaudit.otlp import attrs as A
from agentaudit.otlp.evals import eval_result
from agentaudit.otlp.genai import Origin, Unmapped, map_span, origin, scoped
from agentaudit.sink.deadletter import LAND, keep
from agentaudit.sink.decode import Reason, Rejected, validate

Headers = list[tuple[str, bytes]]
WHOLE_RESOURCE_BYTES = 2048
"""A resource (as JSON) up to this size is copied into every dead letter of its items."""
MAX_MESSAGES = 5
"""Distinct dead-letter reasons quoted in the response's error message."""
SPAN_IDS = ("trace_id", "span_id", "parent_span_id")
LOG_IDS = ("trace_id", "span_id")
"""The id fields written as hex in a dead letter's OTLP/JSON copy of a span or log record."""


@dataclass
class Outcome:
    """What a request gives: records to send and how many of its items were rejected."""

    events: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(key, value) for the events topic: key = tenant."""
    dead_letters: list[tuple[bytes, bytes, Headers]] = field(default_factory=list)
    """(key, value, headers) for the dead-letter topic."""
    items: int = 0
    rejected: int = 0
    timestamp_ms: int | None = None
    """The records' Kafka timestamp (ms): the time they were judged against; None = the
    producer's clock."""
    reasons: dict[str, int] = field(default_factory=dict)

    def size(self) -> int:
        """Bytes of the records (values) this outcome holds."""
        return sum(len(v) for _, v in self.events) + sum(len(v) for _, v, _ in self.dead_letters)

    def message(self) -> str:
        """The partial-success message: counts per reason and where the records went."""
        if not self.rejected:
            return ""
        parts = [f"{n} {reason}" for reason, n in sorted(self.reasons.items())[:MAX_MESSAGES]]
        return f"{self.rejected} of {self.items} dead-lettered ({', '.join(parts)})"


def _otlp_json(msg: Message, ids: tuple[str, ...]) -> dict[str, Any]:
    """A span or log record as OTLP/JSON: hex ids, not protobuf JSON's base64."""
    doc = json_format.MessageToDict(msg)
    for name in ids:
        raw = getattr(msg, name)
        if raw:
            doc[_camel(name)] = raw.hex()
    return doc


def _jsonable(value: object) -> object:
    """bytes attribute values (hex) in a dead letter's JSON."""
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(p.title() for p in rest)


class _Collector:
    def __init__(self, tenant: str, source: str, not_after_ms: float | None) -> None:
        self.key = tenant.encode()
        self.source = source.encode()
        self.not_after_ms = not_after_ms
        self.out = Outcome()

    def dead(self, reason: str, detail: str, value: bytes, *, count: bool = True) -> None:
        kept, extra, note = keep(value)
        self.out.dead_letters.append(
            (
                self.key,
                kept,
                [
                    ("reason", reason.encode()),
                    ("detail", (detail + note)[:512].encode()),
                    ("source", self.source),
                    LAND,
                    *extra,
                ],
            )
        )
        if count:
            self.out.reasons[reason] = self.out.reasons.get(reason, 0) + 1

    def unmapped(
        self, why: Unmapped, item: Message, ids: tuple[str, ...], ctx: tuple[_Resource, str]
    ) -> None:
        res, scope = ctx
        value = orjson.dumps({**res.ctx(scope), "item": _otlp_json(item, ids)}, default=_jsonable)
        self.dead(why.reason, why.detail, value)
        self.out.rejected += 1

    def item(
        self,
        produce: Callable[[], list[dict[str, Any]] | Unmapped],
        item: Message,
        ids: tuple[str, ...],
        ctx: tuple[_Resource, str],
    ) -> None:
        """One span or log record: its events, or its dead letter. Whatever one item holds
        that the mapping did not foresee (a token sum past 64 bits, ...) makes it a dead
        letter (`unencodable`, as in the sink), never an error for the whole request."""
        self.out.items += 1
        try:
            mapped = produce()
            values = mapped if isinstance(mapped, Unmapped) else [orjson.dumps(d) for d in mapped]
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - one item's dead letter, not a 500 for all
            values = Unmapped(Reason.UNENCODABLE.value, f"{type(exc).__name__}: {exc}"[:500])
        if isinstance(values, Unmapped):
            self.unmapped(values, item, ids, ctx)
        else:
            self.events(values)

    def events(self, values: list[bytes]) -> None:
        """One item's events: all sent, or all dead letters when any is refused. An item is
        whole or rejected: an `invoke_agent` span whose end failed the contract (dated past
        the clock skew, say) had its `run_started` stored, a run that never finishes, while
        the response reported the span as dead-lettered."""
        verdicts = [validate(value, self.not_after_ms) for value in values]
        refused = [v for v in verdicts if isinstance(v, Rejected)]
        if not refused:
            self.out.events += [(self.key, value) for value in values]
            return
        first = refused[0]
        for value, verdict in zip(values, verdicts, strict=True):
            if isinstance(verdict, Rejected):
                self.dead(verdict.reason.value, verdict.detail, value)
            else:  # counted once, under its item's reason
                detail = f"another event of its span was refused: {first.detail}"
                self.dead(first.reason.value, detail, value, count=False)
        self.out.rejected += 1


class _Resource:
    """What a dead letter says of its item's resource, bounded per request.

    A resource is sent once for all its items, but every dead letter carried it whole: a
    170 KB request (a 100 KB resource attribute, 2,000 non-GenAI spans) held 200 MB of dead
    letters in the worker's memory and sent them all to the DLQ topic; within the 16 MiB body
    limit that reaches hundreds of GB, an out-of-memory kill of the worker (and its sink)
    that the exporter's retry repeats. A resource up to `WHOLE_RESOURCE_BYTES` (as JSON) is
    still in every dead letter; a larger one is whole in its first dead letter of the
    request, and the others name it (service.name, size, SHA-256 of its JSON)."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.resource = resource
        self._json = orjson.dumps(resource, default=_jsonable)
        self._given = False

    def ctx(self, scope: str) -> dict[str, Any]:
        """The `resource` and `scope` of one dead letter."""
        if len(self._json) <= WHOLE_RESOURCE_BYTES or not self._given:
            self._given = True
            return {"resource": self.resource, "scope": scope[:256]}
        name = self.resource.get("service.name")
        reference = {
            "service.name": str(name)[:256] if name is not None else None,
            "otlp.resource_bytes": len(self._json),
            "otlp.resource_sha256": hashlib.sha256(self._json).hexdigest(),
            "otlp.resource_in": "the first dead letter of its request",
        }
        return {"resource": reference, "scope": scope[:256]}


def _eval_events(o: Origin, rec: Any) -> list[dict[str, Any]] | Unmapped:
    mapped = eval_result(o, rec)
    return mapped if isinstance(mapped, Unmapped) else [mapped]


def traces(
    tenant: str,
    request: ExportTraceServiceRequest,
    source: str = "otlp:/v1/traces",
    *,
    not_after_ms: float | None = None,
) -> Outcome:
    """The records of a trace export request for `tenant` (from its API key); an event dated
    after `not_after_ms` (the records' Kafka timestamp plus the allowed clock skew: the sink's
    `not_after`) is a dead letter, as the sink would make it."""
    c = _Collector(tenant, source, not_after_ms)
    for rs in request.resource_spans:
        resource = A.to_dict(rs.resource.attributes)
        # Once per resource, not per scope: a scope costs a few bytes to send.
        base, res = origin(tenant, resource, "", ""), _Resource(resource)
        for ss in rs.scope_spans:
            o = scoped(base, ss.scope.name, ss.scope.version)
            ctx = (res, ss.scope.name)
            for span in ss.spans:
                c.item(partial(map_span, o, span), span, SPAN_IDS, ctx)
    return c.out


def logs(
    tenant: str,
    request: ExportLogsServiceRequest,
    source: str = "otlp:/v1/logs",
    *,
    not_after_ms: float | None = None,
) -> Outcome:
    """The records of a logs export request: `gen_ai.evaluation.result` events become
    `eval_result`s; other records are dead letters (`not_after_ms` as for `traces`)."""
    c = _Collector(tenant, source, not_after_ms)
    for rl in request.resource_logs:
        resource = A.to_dict(rl.resource.attributes)
        base, res = origin(tenant, resource, "", ""), _Resource(resource)
        for sl in rl.scope_logs:
            o = scoped(base, sl.scope.name, sl.scope.version)
            ctx = (res, sl.scope.name)
            for rec in sl.log_records:
                c.item(partial(_eval_events, o, rec), rec, LOG_IDS, ctx)
    return c.out
