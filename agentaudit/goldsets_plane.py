"""Gold sets and pins on their compacted topics, and a pin's reference built from the store.

- `settings.goldsets_topic`: key `<id>@<version>`, value = the version's id, content hash,
  number (1, 2, … per id, in the order added), case ids, when and from which file it was
  added. The cases' content stays in the file (the version is its hash); drift needs to
  know which cases belong to a version, and the topic stays far below Kafka's message size.
- `settings.pins_topic`: key `<tenant>|<gold set>|<metric>` (`|` cannot occur in ids), value
  `{"pin": Pin.to_state(), "models": [[agent_id, request_model, response_model], ...]}`: the
  reference scores of the approved agent_version/model, and the served model the approved
  run's LLM calls reported (what `ModelVersionChanged` compares with). The stream jobs
  follow this topic; the latest pin per key is current, and a tombstone (`unpin`) removes
  it.

The reference of a pin is every `eval_result` event stored for the tenant, gold set, metric
and agent_version (re-runs of a case all count), read from `agentaudit.events.payload`.
Publishing and reading reuse `agentaudit.control_plane`; aiokafka is imported only when a
function runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from agentaudit.control_plane import DEFAULT_TIMEOUT_S, _read_latest, produce
from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit.store.protocol import Store
from stream_jobs.drift.goldsets import GoldSet, GoldSetError, GoldSetRegistry, GoldSetVersion
from stream_jobs.drift.pins import Pin, make_pin, pin_key

log = logging.getLogger("agentaudit.goldsets")

MAX_RECORD_BYTES = 900_000
"""Below Kafka's default 1 MB message limit, with room for the record's overhead."""
MAX_REFERENCE_RESULTS = 200_000
ModelPin = tuple[str, str, str]


class GoldSetRejected(UserError):
    """A gold set file or pin that does not validate (the reason's code is in `code`)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class GoldSetNotFound(UserError):
    """No such gold set, or no such version of it, on the gold sets topic."""


class NoReference(UserError):
    """The store holds no eval results to build a pin from."""


class PinNotFound(UserError):
    """No current pin for that tenant, gold set and metric on the pins topic."""


@dataclass(frozen=True)
class PinRecord:
    pin: Pin
    models: tuple[ModelPin, ...] = ()

    @property
    def key(self) -> str:
        return pin_key(self.pin.tenant_id, self.pin.gold_set_id, self.pin.metric)

    def encode(self) -> bytes:
        doc = {"pin": self.pin.to_state(), "models": [list(m) for m in self.models]}
        return _checked(orjson.dumps(doc), "pin")

    @classmethod
    def decode(cls, value: bytes) -> PinRecord:
        """Raises ValueError, KeyError or TypeError for a record this code cannot read."""
        doc = orjson.loads(value)
        models = tuple((str(a), str(r), str(s)) for a, r, s in doc.get("models", []))
        return cls(Pin.from_state(doc["pin"]), models)


def _checked(value: bytes, what: str) -> bytes:
    if len(value) > MAX_RECORD_BYTES:
        raise GoldSetRejected(
            f"the {what} record is {len(value):,} bytes, over the {MAX_RECORD_BYTES:,} a topic "
            "record may hold; split the gold set into smaller sets",
            "too_large",
        )
    return value


def encode_goldset(v: GoldSetVersion, source: str) -> bytes:
    return _checked(
        orjson.dumps(
            {
                "gold_set_id": v.gold_set_id,
                "version": v.version,
                "number": v.number,
                "case_ids": sorted(v.case_ids),
                "added_at": v.added_at.isoformat(),
                "source": source,
            }
        ),
        "gold set",
    )


# -- gold sets ------------------------------------------------------------------------------


async def read_goldsets(
    settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_S, **consumer_options: Any
) -> GoldSetRegistry:
    """Every registered version of every gold set (unreadable records are logged, skipped)."""
    values = await _read_latest(settings, settings.goldsets_topic, timeout, consumer_options)
    rows: list[tuple[str, int, list[Any]]] = []
    for key, value in values.items():
        try:
            d = orjson.loads(value)
            rows.append(
                (
                    str(d["gold_set_id"]),
                    int(d["number"]),
                    [str(d["version"]), int(d["number"]), list(d["case_ids"]), str(d["added_at"])],
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipped gold set record %r: %r", key, exc)
    state: dict[str, list[Any]] = {}
    for gold_set_id, _, row in sorted(rows, key=lambda r: (r[0], r[1])):
        state.setdefault(gold_set_id, []).append(row)
    return GoldSetRegistry.from_state(state)


async def add_goldset(
    settings: Settings,
    gold_set: GoldSet,
    *,
    source: str,
    now: datetime,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> tuple[GoldSetVersion, bool]:
    """Register a version; (entry, False) without publishing when the content is known."""
    registry = await read_goldsets(settings, timeout=timeout)
    entry, new = registry.add(gold_set, now)
    if new:
        record = encode_goldset(entry, source)
        await produce(
            settings,
            settings.goldsets_topic,
            [(f"{entry.gold_set_id}@{entry.version}", record)],
            timeout,
        )
    return entry, new


def resolve_version(
    registry: GoldSetRegistry, gold_set_id: str, version: str | None
) -> GoldSetVersion:
    """The latest version, or the one named by hash (`sha256:…`) or number (`2`)."""
    latest = registry.latest(gold_set_id)
    if latest is None:
        raise GoldSetNotFound(
            f"no gold set {gold_set_id!r} is registered; add it with `agentaudit goldsets add "
            f"FILE.jsonl --id {gold_set_id}` (see `agentaudit goldsets list`)"
        )
    if version is None:
        return latest
    for v, number, *_ in registry.to_state()[gold_set_id]:
        if version in (v, str(number)):
            found = registry.get(gold_set_id, v)
            if found is not None:
                return found
    raise GoldSetNotFound(
        f"gold set {gold_set_id!r} has no version {version!r}; its latest is #{latest.number} "
        f"{latest.version} (see `agentaudit goldsets list`)"
    )


# -- pins -----------------------------------------------------------------------------------


async def publish_pin(
    settings: Settings, record: PinRecord, *, timeout: float = DEFAULT_TIMEOUT_S
) -> None:
    await produce(settings, settings.pins_topic, [(record.key, record.encode())], timeout)


async def read_pins(
    settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_S, **consumer_options: Any
) -> dict[str, PinRecord]:
    """The current pin per `tenant|gold set|metric`, sorted by key."""
    values = await _read_latest(settings, settings.pins_topic, timeout, consumer_options)
    pins: dict[str, PinRecord] = {}
    for key in sorted(values):
        try:
            pins[key] = PinRecord.decode(values[key])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipped pin record %r: %r", key, exc)
    return pins


async def unpin(
    settings: Settings,
    tenant_id: str,
    gold_set_id: str,
    metric: str,
    *,
    dry_run: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> PinRecord:
    """Remove the current pin of (tenant, gold set, metric): a tombstone on the pins topic,
    which the stream jobs honour (that metric is no longer compared) and compaction turns
    into no record at all. Returns the pin removed; PinNotFound (naming the pins there
    are) when there is none. `dry_run` checks and returns without publishing."""
    key = pin_key(tenant_id, gold_set_id, metric)
    pins = await read_pins(settings, timeout=timeout)
    record = pins.get(key)
    if record is None:
        known = ", ".join(sorted(pins)) or "none"
        raise PinNotFound(
            f"no pin {key} on {settings.pins_topic} (pins: {known}); see `agentaudit goldsets pins`"
        )
    if not dry_run:
        await produce(settings, settings.pins_topic, [(key, None)], timeout)
    return record


_RESULTS_SQL = """
SELECT JSONExtractString(payload, 'payload', 'case_id') AS case_id,
       JSONExtractFloat(payload, 'payload', 'score') AS score,
       JSONExtractBool(payload, 'payload', 'passed') AS passed,
       agent_id
FROM agentaudit.events
WHERE tenant_id = {tenant:String} AND type = 'eval_result'
  AND agent_version = {agent_version:String}
  AND JSONExtractString(payload, 'payload', 'gold_set_id') = {gold_set:String}
  AND JSONExtractString(payload, 'payload', 'metric') = {metric:String}
ORDER BY occurred_at, chain_seq
LIMIT {limit:UInt64}
"""
_VERSIONS_SQL = """
SELECT agent_version, count() AS results FROM agentaudit.events
WHERE tenant_id = {tenant:String} AND type = 'eval_result'
  AND JSONExtractString(payload, 'payload', 'gold_set_id') = {gold_set:String}
  AND JSONExtractString(payload, 'payload', 'metric') = {metric:String}
GROUP BY agent_version ORDER BY agent_version
"""
_SERVED_SQL = """
SELECT agent_id, request_model, response_model, count() AS calls FROM agentaudit.events
WHERE tenant_id = {tenant:String} AND type = 'llm_call' AND agent_version = {agent_version:String}
  AND has({agents:Array(String)}, agent_id) AND response_model != ''
GROUP BY agent_id, request_model, response_model ORDER BY agent_id, request_model, calls DESC
"""


def build_pin(
    store: Store,
    gold_set: GoldSetVersion,
    *,
    tenant_id: str,
    metric: str,
    agent_version: str,
    model: str,
    now: datetime,
) -> tuple[PinRecord, list[str]]:
    """The pin of `agent_version` on `model` from the stored eval results, and notes for the
    operator (e.g. no LLM call reported being served `model`). Raises NoReference,
    GoldSetRejected (make_pin's checks: unknown case, bad score, coverage under 80 %)."""
    params = {
        "tenant": tenant_id,
        "agent_version": agent_version,
        "gold_set": gold_set.gold_set_id,
        "metric": metric,
    }
    rows = store.query(_RESULTS_SQL, {**params, "limit": MAX_REFERENCE_RESULTS + 1}).result_rows
    if not rows:
        others = store.query(_VERSIONS_SQL, params).result_rows
        known = ", ".join(f"{v} ({n})" for v, n in others) or "none"
        raise NoReference(
            f"no eval_result events of tenant {tenant_id!r} for gold set "
            f"{gold_set.gold_set_id!r}, metric {metric!r} and agent_version {agent_version!r} "
            f"in the store (agent versions with results: {known}); run the gold set against "
            "that version first"
        )
    if len(rows) > MAX_REFERENCE_RESULTS:
        raise GoldSetRejected(
            f"more than {MAX_REFERENCE_RESULTS:,} results to pin; the "
            "reference needs one run of the gold set",
            "too_many_results",
        )
    try:
        pin = make_pin(
            tenant_id,
            gold_set,
            metric,
            agent_version,
            model,
            ((str(c), float(s), bool(p)) for c, s, p, _ in rows),
            now,
        )
    except GoldSetError as exc:
        raise GoldSetRejected(str(exc), exc.code) from None
    agents = sorted({str(a) for *_, a in rows})
    served = store.query(_SERVED_SQL, {**params, "agents": agents}).result_rows
    models = tuple((str(a), str(r), model) for a, r, s, _ in served if s == model)
    notes = []
    if not models:
        seen = sorted({str(s) for *_, s, _ in served})
        notes.append(
            f"no LLM call of {', '.join(agents)} {agent_version} reported being served {model!r}"
            f" (served: {', '.join(seen) or 'none reported'}); ModelVersionChanged keeps "
            "comparing with the first model each agent is served"
        )
    return PinRecord(pin, models), notes


PIN_COLUMNS = (
    "tenant",
    "gold_set",
    "version",
    "metric",
    "agent_version",
    "model",
    "results",
    "pass_rate",
    "served_models",
    "pinned_at",
)


def describe_pin(record: PinRecord) -> dict[str, Any]:
    """One row for `goldsets pins` and the output of `goldsets pin`."""
    p = record.pin
    return {
        "tenant": p.tenant_id,
        "gold_set": p.gold_set_id,
        "version": p.gold_set_version,
        "metric": p.metric,
        "agent_version": p.agent_version,
        "model": p.model,
        "results": p.n,
        "pass_rate": round(p.pass_rate, 4),
        "served_models": "; ".join(f"{a}: {r} → {s}" for a, r, s in record.models),
        "pinned_at": p.pinned_at.isoformat(timespec="seconds"),
    }


def versions_rows(registry: GoldSetRegistry) -> list[Sequence[Any]]:
    """id, #, version, cases, added_at for every registered version."""
    rows: list[Sequence[Any]] = []
    for gold_set_id, versions in sorted(registry.to_state().items()):
        for version, number, case_ids, added_at in versions:
            rows.append([gold_set_id, number, version, len(case_ids), added_at])
    return rows
