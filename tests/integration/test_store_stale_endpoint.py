"""An endpoint file left by a dead owner is stale even when its pid and its port live again.

A SIGKILLed owner leaves `store.endpoint.json`; its pid may go to another process and its port
to another store's owner, which answers `/ping` like any owner. The reader must not take that
server for the owner of this store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentaudit.store.embedded import EmbeddedOwner, endpoint_path, read_live_endpoint
from tests.conftest import isolated_settings

pytestmark = pytest.mark.integration


def test_a_dead_owners_file_naming_a_live_pid_and_another_owners_port_is_stale(
    tmp_path: Path,
) -> None:
    other = isolated_settings("127.0.0.1:9", tmp_path / "other")
    ours = isolated_settings("127.0.0.1:9", tmp_path / "ours")
    ours.data_dir.mkdir(parents=True)
    # A process that took the dead owner's pid (any process: it answers kill(pid, 0)).
    pid_reused = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with EmbeddedOwner(other) as published:  # took the dead owner's port
            stale = {"url": published.url, "token": "the-dead-owners-token", "pid": pid_reused.pid}
            endpoint_path(ours).write_text(json.dumps(stale))
            assert read_live_endpoint(other) == published  # a live owner is still found
            assert read_live_endpoint(ours) is None  # before: the other store's server
            assert published.pid == os.getpid()
    finally:
        pid_reused.kill()
        pid_reused.wait()
