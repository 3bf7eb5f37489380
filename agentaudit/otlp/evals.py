"""`gen_ai.evaluation.result` log records (events) to `eval_result` event documents.

The record names its event in `event_name` (or, from older SDKs, the `event.name`
attribute). Fields: `gen_ai.evaluation.name` → `metric`; `gen_ai.evaluation.score.value` →
`score`; `gen_ai.evaluation.score.label` → `passed` when it is a pass or fail word (else the
`agentaudit.evaluation.passed` boolean attribute must say); the record's trace and span ids
(the evaluated operation's span) or, failing those, `gen_ai.response.id` tie it to the call;
`case_id` is the response id, else the evaluated span's id. `gold_set_id` is
`agentaudit.gold_set.id` or `otlp`; `evaluator` the instrumentation scope's name.
Any other record is a dead letter (`unknown_type`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from agentaudit.otlp import attrs as A
from agentaudit.otlp.genai import Origin, Unmapped, base_event
from agentaudit.otlp.ids import valid

EVAL_EVENT = "gen_ai.evaluation.result"
PASS_WORDS = frozenset({"pass", "passed", "true", "yes", "correct", "relevant", "good", "ok"})
FAIL_WORDS = frozenset({"fail", "failed", "false", "no", "incorrect", "irrelevant", "bad"})


def _passed(a: dict[str, Any]) -> bool | None:
    flag = a.get("agentaudit.evaluation.passed")
    if isinstance(flag, bool):
        return flag
    label = a.get("gen_ai.evaluation.score.label")
    if isinstance(label, str):
        word = label.strip().lower()
        if word in PASS_WORDS:
            return True
        if word in FAIL_WORDS:
            return False
    return None


def _ids(rec: LogRecord, a: dict[str, Any]) -> tuple[str, str] | None:
    """(trace id, span id) of the evaluated operation; derived from the response id when the
    record carries none (the conventions allow either)."""
    # All-zero ids mean "no trace context" (OTLP logs): read as absent, not as an id.
    if valid(rec.trace_id, 16) and valid(rec.span_id, 8):
        return rec.trace_id.hex(), rec.span_id.hex()
    response = a.get("gen_ai.response.id")
    if not response:
        return None
    digest = hashlib.sha256(f"gen_ai.response.id|{response}".encode()).hexdigest()
    return digest[:32], digest[32:48]


def eval_result(o: Origin, rec: LogRecord) -> dict[str, Any] | Unmapped:
    """One evaluation record as an `eval_result` document (not yet validated)."""
    a = A.to_dict(rec.attributes)
    name = rec.event_name or a.get("event.name")
    if name != EVAL_EVENT:
        return Unmapped(
            "unknown_type",
            f"log record {str(name or '(no event name)')[:80]!r} is not a {EVAL_EVENT} event",
        )
    metric = a.get("gen_ai.evaluation.name")
    if not metric:
        return Unmapped("schema_violation", "evaluation without gen_ai.evaluation.name")
    passed = _passed(a)
    if passed is None:
        return Unmapped(
            "schema_violation",
            "cannot tell whether the evaluation passed: "
            "gen_ai.evaluation.score.label is no pass/fail word and "
            "agentaudit.evaluation.passed is not set",
        )
    ids = _ids(rec, a)
    if ids is None:
        return Unmapped(
            "schema_violation", "evaluation with neither trace/span ids nor gen_ai.response.id"
        )
    score = a.get("gen_ai.evaluation.score.value")
    if score is None:
        score = 1.0 if passed else 0.0
    elif isinstance(score, bool) or not isinstance(score, int | float):
        return Unmapped(
            "schema_violation", f"gen_ai.evaluation.score.value {score!r} is not a number"
        )
    at = rec.time_unix_nano or rec.observed_time_unix_nano
    trace, span = ids
    # Several evaluations of one span differ by metric: each is its own event.
    doc = base_event(o, trace, span, "eval_result", at, f"eval_result|{metric}")
    doc["payload"] = {
        "gold_set_id": A.slug(str(a.get("agentaudit.gold_set.id") or "otlp"), "otlp"),
        "case_id": str(a.get("gen_ai.response.id") or span),
        "metric": A.slug(str(metric), "metric"),
        "score": float(score),
        "passed": passed,
        "evaluator": A.slug(o.sdk_name, "otlp"),
    }
    if o.deployment:
        doc["deployment"] = o.deployment
    if o.user_id is not None:
        doc["user_id"] = str(o.user_id)
    label = a.get("gen_ai.evaluation.score.label")
    if isinstance(label, str) and len(label) <= 256:
        doc["attributes"] = {"gen_ai.evaluation.score.label": label}
    return doc
