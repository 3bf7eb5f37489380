"""When the kill switch is blind: staleness from the stream jobs' heartbeat, logged once per
change, fail-closed per tenant; heartbeat records are neither blocks nor invalid records.
Every clock is injected (`FakeClock`): no sleeps, no dependence on the date."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import timedelta

import pytest

from agentaudit_schemas.records import Heartbeat
from agentaudit_sdk import Blocked, Client, InMemoryTransport
from agentaudit_sdk.clock import utc_from_ns
from agentaudit_sdk.control_listener import ControlListener
from agentaudit_sdk.killswitch import KillSwitch

from .conftest import FakeClock
from .test_control import control

LOGGER = "agentaudit.producers"


@pytest.fixture
def clock() -> FakeClock:
    """`FakeClock` on a whole microsecond: a heartbeat's `at` keeps microseconds, so "at the
    limit" is exact."""
    fake = FakeClock()
    fake.ns -= fake.ns % 1000
    return fake


def beat(
    clock: FakeClock, seq: int = 0, *, ago_s: float = 0.0, interval_s: float = 5.0
) -> Heartbeat:
    at = utc_from_ns(clock.ns) - timedelta(seconds=ago_s)
    return Heartbeat.make("stream_jobs", at, seq, "jobs-host:42", interval_s)


def blind_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "kill switch" in r.getMessage()]


def test_staleness_is_none_before_any_heartbeat_then_seconds_since_the_beat(
    client: Client, clock: FakeClock
) -> None:
    assert client.control.staleness_s is None
    client.control.apply_heartbeat(beat(clock))
    assert client.control.staleness_s == 0.0
    clock.advance(7.25)
    assert client.control.staleness_s == pytest.approx(7.25)
    client.control.apply_heartbeat(beat(clock, 1))
    assert client.control.staleness_s == 0.0
    assert client.control.stats.staleness_s == 0.0


def test_an_old_beat_read_at_start_makes_the_view_old_and_an_older_one_is_ignored(
    client: Client, clock: FakeClock
) -> None:
    # The compacted topic's newest beat is an hour old: the jobs are down, the view is blind.
    client.control.apply_heartbeat(beat(clock, 9, ago_s=3600))
    assert client.control.staleness_s == pytest.approx(3600)
    client.control.apply_heartbeat(beat(clock, 3, ago_s=7200))  # a replay or a second worker
    assert client.control.staleness_s == pytest.approx(3600)


def test_stale_is_counted_and_logged_once_and_recovery_once(
    client: Client, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    blind = client.control.blind
    client.control.apply_heartbeat(beat(clock))  # interval 5 s: stale past 15 s
    clock.advance(15.0)
    assert not blind.observe() and blind_lines(caplog) == []
    clock.advance(0.5)
    for _ in range(5):  # the watchdog looks every second: one line, one count
        assert blind.observe()
        clock.advance(1.0)
    lines = blind_lines(caplog)
    assert len(lines) == 1 and "kill switch blind" in lines[0] and "jobs-host:42" in lines[0]
    assert "every tenant fails open" in lines[0]
    stats = client.control.stats
    assert (stats.stale, stats.stale_episodes) == (True, 1)
    client.control.apply_heartbeat(beat(clock, 1))  # a beat arrives: recovered at once
    for _ in range(3):
        assert not blind.observe()
    lines = blind_lines(caplog)
    assert len(lines) == 2 and "sees again" in lines[1]
    assert blind.counters.recovered == 1 and not client.control.stats.stale


def test_no_heartbeat_at_all_goes_stale_counting_from_the_start(
    make_client: Callable[..., Client], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    client = make_client(InMemoryTransport(), clock=clock, stale_after_s=2.0)
    clock.advance(2.0)
    assert not client.control.blind.observe()
    clock.advance(0.1)
    assert client.control.blind.observe()
    (line,) = blind_lines(caplog)
    assert "no stream_jobs heartbeat in the 2.1s since the client started" in line
    assert client.control.staleness_s is None  # still "never", not a number


def test_stale_threshold_follows_the_jobs_announced_interval(
    client: Client, clock: FakeClock
) -> None:
    client.control.apply_heartbeat(beat(clock, interval_s=1.0))
    clock.advance(3.1)
    assert client.control.blind.observe()


def test_fail_closed_refuses_past_its_limit_and_passes_again_after_a_beat(
    make_client: Callable[..., Client], clock: FakeClock
) -> None:
    client = make_client(InMemoryTransport(), clock=clock, fail_closed_after_s=30.0)
    client.control.apply_heartbeat(beat(clock))
    clock.advance(30.0)
    client.check()  # exactly at the limit: still fresh enough
    with client.tool_call("search", "q", {}):
        pass
    clock.advance(0.001)
    with pytest.raises(Blocked) as err:
        client.check(tool="search")
    e = err.value
    assert (e.reason, e.scope, e.stop_reason) == (
        "kill_switch_blind",
        "tenant=acme",
        "policy_denied",
    )
    assert e.runbook == "runbooks/StreamJobsSilent.md" and e.until is None
    assert "30.0s old" in e.message and "fails closed past 30s" in e.message
    assert "while the kill switch is blind" in str(e)
    with pytest.raises(Blocked), client.run(goal="x"):
        pytest.fail("the body must not run")
    stats = client.control.stats
    assert (stats.blind_refused, stats.refused, stats.stale, stats.stale_episodes) == (
        2,
        0,
        True,
        1,
    )
    client.control.apply_heartbeat(beat(clock, 1))
    client.check()


def test_fail_closed_before_any_heartbeat_counts_from_the_client_start(
    make_client: Callable[..., Client], clock: FakeClock
) -> None:
    client = make_client(InMemoryTransport(), clock=clock, fail_closed_after_s=10.0)
    clock.advance(10.0)
    client.check()  # the listener had 10 s to read the topic
    clock.advance(0.5)
    with pytest.raises(Blocked, match="no heartbeat yet"):
        client.check()


def test_fail_closed_is_per_tenant(make_client: Callable[..., Client], clock: FakeClock) -> None:
    client = make_client(
        InMemoryTransport(), clock=clock, fail_closed_after_s={"acme": 20.0, "bank": 60.0}
    )
    client.control.apply_heartbeat(beat(clock))
    clock.advance(45.0)
    with pytest.raises(Blocked, match="fails closed past 20s"):
        client.check()
    with client.bind(tenant_id="bank"):
        client.check()  # 45 s < 60 s
    with client.bind(tenant_id="open-co"):
        client.check()  # did not choose fail-closed: fails open however old the view
    clock.advance(20.0)
    with client.bind(tenant_id="bank"), pytest.raises(Blocked, match="fails closed past 60s"):
        client.check()
    with pytest.raises(Blocked):
        client.control.check("bank")  # the switch's own check, tenant given explicitly
    client.control.check("open-co")


def test_fail_closed_is_off_with_the_kill_switch_off(
    make_client: Callable[..., Client], clock: FakeClock
) -> None:
    client = make_client(
        InMemoryTransport(), clock=clock, kill_switch=False, fail_closed_after_s=1.0
    )
    clock.advance(3600)
    client.check()
    assert not client.control.fail_closed


@pytest.mark.parametrize("bad", [0, -1.0, {"acme": 0.0}])
def test_fail_closed_limits_must_be_positive(bad: object, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        KillSwitch(clock=clock, fail_closed_after_s=bad)  # type: ignore[arg-type]


def test_heartbeat_records_are_neither_blocks_nor_invalid(clock: FakeClock) -> None:
    switch = KillSwitch(clock=clock)
    listener = ControlListener("127.0.0.1:1", switch, control_topic="c", budgets_topic="b")
    hb = beat(clock)

    async def feed() -> None:
        await listener._record("c", hb.key.encode(), hb.model_dump_json().encode())
        await listener._record("c", hb.key.encode(), None)  # a heartbeat tombstone: ignored
        await listener._record("c", b"heartbeat/stream_jobs", b'{"record": "heartbeat"}')
        block = control("acme")
        await listener._record("c", block.scope.key.encode(), block.model_dump_json().encode())

    asyncio.run(feed())
    assert switch.state.heartbeat() == hb
    assert switch.counters.invalid == 1  # only the broken heartbeat
    assert switch.counters.records == 3
    assert [m.scope.key for m in switch.state.active_blocks(utc_from_ns(clock.ns))] == [
        "tenant=acme"
    ]
    assert switch.state.get(hb.key) is None  # no scope state under the heartbeat key
    assert switch.stats.blocked_scopes == 1


def test_a_beat_dated_ahead_of_the_client_does_not_keep_the_view_fresh(
    make_client: Callable[..., Client], clock: FakeClock
) -> None:
    """Before, a beat dated an hour ahead (a jobs host whose clock is ahead, or any producer's
    record) made the staleness 0 for that hour, and every later beat, dated earlier, was
    ignored: with the jobs gone, a fail-closed tenant ran on unrefused. A beat now counts as
    sent when it was read if it claims a later time."""
    client = make_client(InMemoryTransport(), clock=clock, fail_closed_after_s=30.0)
    client.control.apply_heartbeat(beat(clock, 1, ago_s=-3600))
    assert client.control.staleness_s == 0.0
    clock.advance(20.0)
    client.control.apply_heartbeat(beat(clock, 2))  # a worker on time: it counts
    assert client.control.staleness_s == 0.0
    clock.advance(30.001)  # then the jobs are gone
    with pytest.raises(Blocked) as err:
        client.check()
    assert err.value.reason == "kill_switch_blind"
    assert client.control.staleness_s == pytest.approx(30.001)
    client.control.apply_heartbeat(beat(clock, 3, ago_s=-3600))
    client.control.apply(control("other"))  # another record: no beat, no fresher view
    clock.advance(30.001)
    with pytest.raises(Blocked):
        client.check()


def test_a_beat_of_newer_jobs_with_a_field_this_sdk_does_not_know_keeps_the_view_fresh(
    clock: FakeClock,
) -> None:
    """Before, the SDK read heartbeats strictly: every beat of stream jobs one version ahead
    (one more field) was an invalid record, the view went stale with the jobs alive, and a
    tenant that fails closed had all its work refused (`kill_switch_blind`)."""
    switch = KillSwitch(clock=clock, fail_closed_after_s=30.0)
    listener = ControlListener("127.0.0.1:1", switch, control_topic="c", budgets_topic="b")
    clock.advance(31.0)  # no beat yet: past the limit, counted from the start
    with pytest.raises(Blocked):
        switch.check("acme")
    hb = beat(clock)
    newer = {**json.loads(hb.model_dump_json()), "region": "eu-1", "build": {"sha": "abc"}}
    asyncio.run(listener._record("c", hb.key.encode(), json.dumps(newer).encode()))
    assert switch.counters.invalid == 0 and switch.state.heartbeat() == hb
    switch.check("acme")  # fresh again
