"""The corpus through the sink's pure decoder, in process: the verdict of every case, fast.

The end-to-end run (`test_corpus_end_to_end.py`) proves the same verdicts land in the
store; this one names a wrong verdict or an exception directly, in milliseconds.
"""

from __future__ import annotations

import time

import pytest

from agentaudit.sink.decode import Accepted, decode
from tests.faults.corpus import STORED, Case, cases

SKEW_MS = 900_000
"""The sink's default allowed clock skew (AGENTAUDIT_MAX_CLOCK_SKEW_S = 900)."""


def verdict(case: Case) -> str:
    record_ms = case.timestamp_ms if case.timestamp_ms is not None else time.time() * 1000
    try:
        result = decode(case.value, record_ms + SKEW_MS)
    except Exception as exc:  # noqa: BLE001 - an exception out of decode is the finding
        return f"raised {type(exc).__name__}: {str(exc)[:120]}"
    return STORED if isinstance(result, Accepted) else str(result.reason)


@pytest.mark.parametrize("case", cases(), ids=lambda c: f"{c.group}-{c.name}")
def test_decoder_verdict(case: Case) -> None:
    got = verdict(case)
    assert got in case.expect, (
        f"{case.group}/{case.name}: got {got}, expected one of {sorted(case.expect)}"
    )
