"""A retention sweep's clock against the trail's (`agentaudit.retention.clock`): the host's
time is used up to the witness plus the tolerance, and never beyond."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from agentaudit.retention.clock import checked_time

WITNESS = datetime(2026, 11, 6, 10, 0, tzinfo=UTC)
DAY = 86_400.0


def test_a_clock_within_the_tolerance_is_used_as_it_is() -> None:
    for host in (WITNESS - timedelta(days=400), WITNESS, WITNESS + timedelta(seconds=DAY)):
        assert checked_time(host, WITNESS, DAY).at == host
        assert checked_time(host, WITNESS, DAY).refused == ""


def test_a_clock_ahead_by_more_is_cut_back_to_the_witness_plus_the_tolerance(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = WITNESS + timedelta(days=400, seconds=7200)
    with caplog.at_level(logging.WARNING, logger="agentaudit.retention.clock"):
        got = checked_time(host, WITNESS, DAY)
    assert got.at == WITNESS + timedelta(days=1)
    assert "is 400 days 2 h ahead of the trail's newest events" in got.refused
    assert "--trust-clock" in got.refused
    assert caplog.records[0].getMessage() == f"retention: {got.refused}"
    # one microsecond past the bound is enough
    just = checked_time(WITNESS + timedelta(seconds=DAY, microseconds=1), WITNESS, DAY)
    assert just.at == WITNESS + timedelta(seconds=DAY) and just.refused


def test_an_empty_trail_has_no_witness_and_nothing_to_cut() -> None:
    host = WITNESS + timedelta(days=400)
    assert checked_time(host, None, DAY).at == host
