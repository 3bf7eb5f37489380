"""StateSizeGuard: which table values fit one changelog message (the integration case, a
drift state over the producer's limit, is in tests/integration/test_stream_jobs_state_size.py,
behind `faults`)."""

from __future__ import annotations

import logging

import pytest

from stream_jobs.state_size import WRITE_OVERHEAD, StateSizeGuard


def test_values_over_the_limit_are_refused_and_logged_once_until_one_fits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = StateSizeGuard(WRITE_OVERHEAD + 100)
    assert guard.fits("drift", "acme", b"x" * 100)
    assert not guard.fits("drift", "acme", b"x" * 101)
    assert not guard.fits("drift", "acme", b"x" * 500)
    assert not guard.fits("breakers", "acme", {"runs": "y" * 100})  # a JSON table's dict
    assert guard.fits("drift", "acme", b"{}")
    assert not guard.fits("drift", "acme", b"x" * 101)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [e.split(" is ")[0] for e in errors] == [
        "stream jobs: the drift state of 'acme'",
        "stream jobs: the breakers state of 'acme'",
        "stream jobs: the drift state of 'acme'",
    ]
    assert guard.skipped == 4
