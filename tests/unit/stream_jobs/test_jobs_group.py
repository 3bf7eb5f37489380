"""Two pipelines on one Kafka (two events topics) never share the stream jobs' state.

The jobs' faust app id (their consumer group, and the prefix of every table's changelog
topic) was the fixed `agentaudit`. A second pipeline's jobs joined the first one's group and
restored its tables: the other pipeline's spend states, with its offsets, seeded the delivery
fence, so the new events were skipped as replays and re-sent copies were not counted as
duplicates (the real broker case: tests/integration/test_stream_jobs_two_pipelines.py).
"""

from __future__ import annotations

from pathlib import Path

from agentaudit.health.lag import pipeline_groups
from agentaudit.settings import EVENTS_TOPIC, Settings
from stream_jobs.app import TABLES, StreamJobsApp


def _settings(tmp_path: Path, **changes: object) -> Settings:
    return Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, partitions=1, **changes)  # type: ignore[arg-type]


def _names(app: StreamJobsApp) -> set[str]:
    """The group and the changelog topics this app's jobs read their state back from."""
    tables = {app.tables[name].changelog_topic.get_topic_name() for name in TABLES}
    return {app.app.conf.id} | tables


def test_each_events_topic_has_its_own_jobs_group_and_changelogs(tmp_path: Path) -> None:
    prod = StreamJobsApp(_settings(tmp_path / "a", events_topic="prod.events"))
    staging = StreamJobsApp(_settings(tmp_path / "b", events_topic="staging.events"))
    assert not _names(prod) & _names(staging)  # before: both `agentaudit`, every table shared
    assert prod.app.conf.id == "agentaudit-prod.events"
    assert "agentaudit-prod.events-spend-changelog" in _names(prod)
    # what `status` and /metrics read the jobs' lag of
    assert pipeline_groups(prod.settings)[prod.app.conf.id] == ["prod.events"]


def test_the_default_topic_keeps_its_group_and_an_explicit_id_wins(tmp_path: Path) -> None:
    default = _settings(tmp_path)
    assert default.events_topic == EVENTS_TOPIC
    assert StreamJobsApp(default).app.conf.id == "agentaudit"  # existing deployments' state
    pinned = _settings(tmp_path, events_topic="prod.events", jobs_app_id="agentaudit")
    assert StreamJobsApp(pinned).app.conf.id == "agentaudit"
    # a child process (`agentaudit jobs` under the worker) is given the same id
    assert pinned.to_env()["AGENTAUDIT_JOBS_APP_ID"] == "agentaudit"
