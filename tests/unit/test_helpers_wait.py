"""`tests.helpers_wait.poll_until`: the one polling wait of the test suite."""

from __future__ import annotations

import pytest

from tests.helpers_wait import poll_until, poll_value


async def test_returns_once_the_condition_holds_plain_or_async() -> None:
    calls = []

    def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await poll_until(third_time, 10, "three calls", interval=0)
    assert len(calls) == 3

    async def at_once() -> bool:
        return True

    await poll_until(at_once, 10, "an async condition")


async def test_fails_at_the_deadline_saying_what_and_the_detail() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0.01s waiting for nothing: seen 7"):
        await poll_until(lambda: False, 0.01, "nothing", interval=0.001, detail=lambda: "seen 7")


async def test_the_check_runs_each_round_and_its_error_comes_first() -> None:
    def dead() -> None:
        raise AssertionError("worker exited 1")

    with pytest.raises(AssertionError, match="worker exited 1"):
        await poll_until(lambda: False, 10, "never", check=dead)


def test_poll_value_returns_the_first_truthy_value() -> None:
    seen = iter([None, 0, "", "endpoint"])
    assert poll_value(lambda: next(seen), 10, "an endpoint", interval=0) == "endpoint"


def test_poll_value_fails_at_the_deadline_and_lets_the_check_raise_first() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0.01s waiting for nothing: seen 7"):
        poll_value(lambda: None, 0.01, "nothing", interval=0.001, detail=lambda: "seen 7")

    def dead() -> None:
        raise AssertionError("worker exited 1")

    with pytest.raises(AssertionError, match="worker exited 1"):
        poll_value(lambda: None, 10, "never", check=dead)
