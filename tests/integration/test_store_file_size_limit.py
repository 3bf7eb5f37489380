"""The embedded store under a file size limit (RLIMIT_FSIZE): no insert acknowledged and lost.

chDB 4.4 reports an insert done when the operating system cut its part file short at the
limit (Python ignores SIGXFSZ; the write fails with EFBIG and chDB does not raise): the rows
are read back while the process runs and are gone after a restart, the part detached as
broken. The sink had committed them: 3,000 events stored and committed, 0 after the restart.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentaudit.settings import Settings
from agentaudit.store import open_store
from tests.integration.helpers import scalar

pytestmark = pytest.mark.integration

ROWS = 5_000
LIMIT = 64 * 1024
"""Bytes: far below one insert's part file (~500 kB of random strings)."""

_OWNER = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path
    from agentaudit.settings import Settings
    from agentaudit.store import open_store
    with open_store(Settings(data_dir=Path(sys.argv[1])), own=True) as store:
        store.command("CREATE TABLE default.t (n UInt64, s String) ENGINE = MergeTree ORDER BY n")
        store.command("INSERT INTO default.t SELECT number, randomString(100) FROM numbers({ROWS})")
        print(store.query("SELECT count() FROM default.t").result_rows[0][0])
    """
)


def _owner(data_dir: Path, soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    return subprocess.run(
        [sys.executable, "-c", _OWNER, str(data_dir)],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_low_soft_limit_is_lifted_and_what_was_acknowledged_survives_a_restart(
    tmp_path: Path,
) -> None:
    done = _owner(tmp_path, LIMIT, resource.RLIM_INFINITY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(ROWS)]  # acknowledged and read back, as before the fix
    with open_store(Settings(data_dir=tmp_path), own=True) as store:
        assert scalar(store, "SELECT count() FROM default.t") == ROWS  # 0 before: part broken


def test_a_finite_hard_limit_refuses_the_store(tmp_path: Path) -> None:
    done = _owner(tmp_path, LIMIT, LIMIT)
    assert done.returncode != 0
    assert "file size limit" in done.stderr and "ulimit -f unlimited" in done.stderr
