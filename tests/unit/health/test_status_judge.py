"""`agentaudit status`'s and `query`'s judgement, pure: figures + settings + an injected `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentaudit.health.figures import Checkpoints, DeadLetterRate, Heartbeat, Inserts, StoreFigures
from agentaudit.health.flushes import figures_of, from_report, to_report
from agentaudit.health.lag import Lag
from agentaudit.health.metrics import WorkerMetrics
from agentaudit.health.status import Observed, judge, to_json, to_text
from agentaudit.health.warn import judge_staleness
from agentaudit.settings import Settings
from agentaudit.sink.processor import Batch
from agentaudit.sink.rows import Source, dead_letter_row

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = Settings(consumer_group="sink", events_topic="ev")
JOBS = S.jobs_group  # the stream jobs' group (their faust app id): "agentaudit-ev"


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def lag(n: int, group: str = "sink", partition: int = 0) -> Lag:
    return Lag(group, "ev", partition, 100, 100 - n, n)


def healthy(**changes: object) -> Observed:
    figures = StoreFigures(
        Inserts(ago(2), 1000, 500),
        [DeadLetterRate("invalid_json", 1, 3)],
        Heartbeat(True, ago(5)),
        Checkpoints(4, ("acme", 1), ago(30)),
    )
    seen = Observed(NOW, "pid 1 serves the store", [lag(0), lag(3, JOBS)], None, figures)
    for k, v in changes.items():
        setattr(seen, k, v)
    return seen


def states(seen: Observed, settings: Settings = S) -> dict[str, str]:
    return {c.name: c.state.value for c in judge(settings, seen).checks}


def test_healthy_is_exit_0_and_every_check_ok() -> None:
    report = judge(S, healthy())
    assert report.exit_code == 0 and set(states(healthy()).values()) == {"ok"}
    assert to_json(report)["status"] == "healthy" and "HEALTHY (exit 0)" in to_text(report)[0]


def test_lag_above_the_threshold_is_degraded() -> None:
    seen = healthy(lags=[lag(11, JOBS)])
    assert judge(S.model_copy(update={"health_max_lag": 10}), seen).exit_code == 1
    assert judge(S.model_copy(update={"health_max_lag": 11}), seen).exit_code == 0


def test_writer_down_no_owner_or_no_recent_insert_while_events_wait() -> None:
    assert states(healthy(owner=None, lags=[lag(5)]))["writer"] == "degraded"
    assert states(healthy(owner=None, lags=[lag(0)]))["writer"] == "ok"  # idle, nothing waits
    old = healthy(lags=[lag(5)])
    assert old.figures is not None
    old.figures = StoreFigures(Inserts(ago(121), 1000, 0))
    assert states(old)["writer"] == "degraded"
    old.figures = StoreFigures(Inserts(ago(119), 1000, 0))
    assert states(old)["writer"] == "ok"


def test_one_stuck_partition_is_degraded_while_the_others_flow() -> None:
    # Partition 0 stored 2 s ago (the newest insert overall); partition 3's events wait and
    # nothing from it was stored for 10 min: before, 'writer ok' and exit 0.
    seen = healthy(lags=[lag(0), lag(40, partition=3)])
    seen.figures = StoreFigures(Inserts(ago(2), 1000, 500, {0: ago(2), 3: ago(600)}))
    writer = next(c for c in judge(S, seen).checks if c.name == "writer")
    assert writer.state.value == "degraded" and "partition 3 stuck: 40 events wait" in writer.detail
    assert judge(S, seen).exit_code == 1
    assert "partition 3 stuck" in (judge_staleness(S, seen) or "")
    seen.figures = StoreFigures(Inserts(ago(2), 1000, 500, {0: ago(2)}))  # never stored from 3
    assert "last insert from it never" in judge_staleness(S, seen) or ""
    # moving (stored within the limit), idle (nothing waits), or another group's lag: ok
    seen.figures = StoreFigures(Inserts(ago(2), 1000, 500, {0: ago(2), 3: ago(119)}))
    assert states(seen)["writer"] == "ok"
    seen.figures = StoreFigures(Inserts(ago(2), 1000, 500, {0: ago(2), 3: ago(600)}))
    seen.lags = [lag(0), lag(0, partition=3), lag(40, JOBS, partition=3)]
    assert states(seen)["writer"] == "ok"


def test_the_jobs_group_is_not_judged_when_no_jobs_run() -> None:
    """Jobs off here and their group never committed: its lag is the whole topic, not a
    falling-behind (before: degraded, and ConsumerLag, past 10,000 events for ever)."""
    never = Lag(JOBS, "ev", 0, 20_000, None, 20_000)
    off = S.model_copy(update={"stream_jobs": False})
    assert states(healthy(lags=[lag(0), never]), off)["lag"] == "ok"
    assert states(healthy(lags=[lag(0), never]))["lag"] == "degraded"  # jobs on: behind
    apart = Lag(JOBS, "ev", 0, 20_000, 5, 19_995)  # run apart (`agentaudit jobs`)
    assert states(healthy(lags=[lag(0), apart]), off)["lag"] == "degraded"
    metrics = WorkerMetrics(off)
    metrics.lags = [lag(0), never]
    assert (
        metrics.registry.get_sample_value(
            "agentaudit_consumer_lag", {"group": JOBS, "topic": "ev", "partition": "0"}
        )
        is None
    )
    assert (
        metrics.registry.get_sample_value(
            "agentaudit_consumer_lag", {"group": "sink", "topic": "ev", "partition": "0"}
        )
        == 0
    )


def test_dead_letter_share_of_the_last_five_minutes() -> None:
    seen = healthy()
    seen.figures = StoreFigures(
        Inserts(ago(1), 100, 94), [DeadLetterRate("schema_violation", 6, 6)]
    )
    assert states(seen)["dead letters"] == "degraded"  # 6 of 100 rows > 5 %
    seen.figures = StoreFigures(
        Inserts(ago(1), 100, 95), [DeadLetterRate("schema_violation", 5, 6)]
    )
    assert states(seen)["dead letters"] == "ok"


def test_heartbeat_unknown_without_table_stale_or_never() -> None:
    def with_beat(beat: Heartbeat, settings: Settings = S) -> str:
        seen = healthy()
        seen.figures = StoreFigures(Inserts(ago(1), 1, 1), heartbeat=beat)
        return states(seen, settings)["heartbeat"]

    assert with_beat(Heartbeat(False)) == "unknown"
    assert with_beat(Heartbeat(True, None)) == "degraded"
    assert with_beat(Heartbeat(True, ago(61))) == "degraded"
    assert with_beat(Heartbeat(True, ago(59))) == "ok"
    assert with_beat(Heartbeat(True, None), S.model_copy(update={"stream_jobs": False})) == "ok"
    # jobs run apart from the worker (`agentaudit jobs`, AGENTAUDIT_STREAM_JOBS=false) and
    # stopped beating: before, 'ok' (exit 0) while the StreamJobsSilent rule fired
    apart = S.model_copy(update={"stream_jobs": False})
    assert with_beat(Heartbeat(True, ago(94)), apart) == "degraded"
    assert with_beat(Heartbeat(True, ago(59)), apart) == "ok"


def test_checkpoints_stale_or_never_signed() -> None:
    def with_cp(cp: Checkpoints | None) -> str:
        seen = healthy()
        seen.figures = StoreFigures(Inserts(ago(1), 1, 1), checkpoints=cp)
        return states(seen)["checkpoints"]

    assert with_cp(Checkpoints(3, ("a", 0), ago(301))) == "degraded"
    assert with_cp(Checkpoints(3, ("a", 0), ago(299))) == "ok"
    assert with_cp(Checkpoints(3, ("a", 0), None)) == "degraded"
    assert with_cp(None) == "ok"  # unsigned trail


def test_broker_and_store_errors_are_the_cli_exit_codes() -> None:
    assert judge(S, healthy(lags=None, broker_error="down")).exit_code == 3
    assert judge(S, healthy(figures=None, store_error="gone")).exit_code == 4
    assert (
        judge(S, healthy(lags=None, broker_error="x", figures=None, store_error="y")).exit_code == 3
    )


def test_query_warning_says_down_behind_or_cannot_tell() -> None:
    assert judge_staleness(S, healthy()) is None
    down = judge_staleness(S, healthy(owner=None, lags=[lag(5)]))
    assert down is not None and "writer is down" in down and "\n" not in down
    behind = judge_staleness(S.model_copy(update={"health_max_lag": 2}), healthy())
    assert behind is not None and "behind" in behind and f"{JOBS} lags 3" in behind
    unknown = judge_staleness(S, healthy(lags=None, broker_error="Kafka at x did not answer"))
    assert unknown is not None and "cannot tell" in unknown


def test_flush_figures_count_events_and_dead_letters_by_reason_and_cross_the_pipe() -> None:
    batch = Batch(events=[("e",)] * 7)
    src = Source("ev", 0, 1, 0, b"k", 0)
    batch.dead_letters = [dead_letter_row(src, r, "", b"", NOW, "", "") for r in ("a", "b", "a")]
    figures = figures_of(batch, {"insert": 0.5})
    assert (figures.events, figures.dead_letters, figures.stages) == (
        7,
        {"a": 2, "b": 1},
        {"insert": 0.5},
    )
    assert from_report(to_report(figures)) == figures
    assert from_report({"ready": True}) is None
