"""The runtime's app layer: batched topics are declared on the app, per app, and only an app
whose consumer batches (`make_app`) accepts them."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from agentaudit.settings import Settings
from stream_jobs.runtime import AuditApp, FastTransport, make_app, source_topic


def _settings(tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, partitions=2)


def test_batched_topics_are_declared_per_app(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    app, other = make_app(settings, app_id="a"), make_app(settings, app_id="b")
    assert isinstance(app, AuditApp) and app.commit_guard is None
    source_topic(app, "events", batched=True)
    source_topic(app, "more", batched=True)
    source_topic(app, "plain")
    assert app.batched_topics == {"events", "more"}
    assert other.batched_topics == frozenset() == AuditApp.batched_topics  # nothing shared
    assert isinstance(app.transport, FastTransport)


def test_batched_topic_needs_an_app_that_batches(tmp_path: Path) -> None:
    stock = faust.App("stock", broker="kafka://127.0.0.1:1", web_enabled=False, datadir=tmp_path)
    source_topic(stock, "plain")  # per record: any app
    with pytest.raises(TypeError, match="make_app"):
        source_topic(stock, "events", batched=True)
