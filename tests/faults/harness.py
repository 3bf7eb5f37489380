"""The fault suite's harness: real `agentaudit worker` processes, the store read through
them, orphan detection, and the checks every scenario ends with.

Nothing here sleeps to hide a race: `wait_until` polls another process's progress with a
deadline and fails with what it saw; the only unconditional waits are the seeded kill
moments and the load generator's pacing, which are the experiment, not synchronisation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from agentaudit.errors import BadQuery, StoreUnavailable
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.embedded import read_live_endpoint
from tests.integration.helpers import assert_chains_valid
from tests.integration.procs import alive, children_of, cmdline

T = TypeVar("T")
POLL_S = 0.2
"""Between two looks at another process's progress (a store query over loopback HTTP)."""


class WorkerDied(AssertionError):
    """The worker exited while the scenario needed it running."""


@dataclass
class WorkerProcess:
    """One `agentaudit worker` process; its output goes to a file (a pipe nobody reads would
    fill up and block it)."""

    settings: Settings
    log_path: Path
    sink_processes: int = 1
    stream_jobs: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> WorkerProcess:
        env = {
            **os.environ,
            **self.settings.to_env(),
            **self.extra_env,
            "AGENTAUDIT_SINK_PROCESSES": str(self.sink_processes),
        }
        args = [sys.executable, "-m", "agentaudit.cli.main", "worker"]
        if not self.stream_jobs:
            args.append("--no-stream-jobs")
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== worker start {time.strftime('%H:%M:%S')} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.alive():
            assert self.proc is not None
            raise WorkerDied(f"worker exited with {self.proc.returncode}:\n{self.output_tail()}")

    def children(self) -> set[int]:
        return children_of(self.pid) if self.alive() else set()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 60.0) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if it had to be killed, seconds it took)."""
        assert self.proc is not None
        began = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        return code, time.monotonic() - began

    def ensure_stopped(self) -> None:
        if self.alive():
            self.terminate(30)


def wait_until(
    probe: Callable[[], T | None],
    ok: Callable[[T], bool],
    timeout: float,
    what: str,
    worker: WorkerProcess | None = None,
) -> T:
    """Poll `probe()` until `ok(value)`; fail after `timeout` s (or when `worker` dies) saying
    what was last seen. `probe` may return None for "cannot tell yet" (store not served)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        value = probe()
        if value is not None:
            last = value
            if ok(value):
                return value
        if worker is not None:
            worker.check_alive()
        if time.monotonic() > deadline:
            tail = f"\nworker output:\n{worker.output_tail()}" if worker else ""
            raise AssertionError(f"{what}: not reached in {timeout:.0f}s, last seen {last!r}{tail}")
        time.sleep(POLL_S)  # polling another process's progress; nothing to await


def query(
    settings: Settings, sql: str, params: dict[str, Any] | None = None
) -> list[tuple[Any, ...]] | None:
    """Rows through the running worker's store endpoint; None while it is not served (starting,
    killed, migrations not applied yet)."""
    if read_live_endpoint(settings) is None:
        return None
    try:
        with open_store(settings, attach=True) as store:
            return [tuple(r) for r in store.query(sql, params).result_rows]
    except (StoreUnavailable, ClickHouseError, OSError):
        return None
    except BadQuery as exc:
        if "UNKNOWN_TABLE" in str(exc) or "UNKNOWN_DATABASE" in str(exc):
            return None  # served before its migrations ran (the first creates the database)
        raise


def counts(settings: Settings) -> tuple[int, int] | None:
    """(rows in events, rows in dead_letters) of this test's events topic."""
    rows = query(
        settings,
        "SELECT (SELECT count() FROM agentaudit.events WHERE kafka_topic = {t:String}), "
        "(SELECT count() FROM agentaudit.dead_letters WHERE source_topic = {t:String})",
        {"t": settings.events_topic},
    )
    return (int(rows[0][0]), int(rows[0][1])) if rows else None


def wait_served(worker: WorkerProcess, timeout: float = 90) -> float:
    """Until this worker serves the store with its migrations applied; seconds since start."""
    s = worker.settings

    def probe() -> int | None:
        live = read_live_endpoint(s)
        return live.pid if live is not None and counts(s) is not None else None

    wait_until(probe, lambda pid: pid == worker.pid, timeout, "worker serves the store", worker)
    return time.monotonic() - worker.started_at


# -- processes -------------------------------------------------------------------------------


def sink_children_of_group(consumer_group: str) -> set[int]:
    """Live `agentaudit.sink.child` processes of this test's consumer group (other engineers'
    tests run on the same machine; their sink processes are not ours to judge)."""
    mark = f"AGENTAUDIT_CONSUMER_GROUP={consumer_group}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if "agentaudit.sink.child" not in cmdline(int(entry)):
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in environ and alive(int(entry)):
            found.add(int(entry))
    return found


def reap_orphans(pids: set[int], grace: float) -> set[int]:
    """Wait up to `grace` s for `pids` (children of a SIGKILLed worker) to exit; SIGKILL and
    return those that did not, so the scenario can go on and report them."""
    deadline = time.monotonic() + grace
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(POLL_S)  # polling other processes' exit
    left = {p for p in pids if alive(p)}
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


# -- the end state every scenario checks -----------------------------------------------------


def verify_trail(
    settings: Settings, expected_events: int, expected_dead: int | None = None
) -> dict[str, int]:
    """Through the running worker: `count() = uniqExact(event_id) = expected_events`, each
    dead letter once, every chain verifies, and within each (tenant, partition) chain order
    is Kafka offset order. Returns the figures."""
    t = {"t": settings.events_topic}
    with open_store(settings, attach=True) as store:
        row = store.query(
            "SELECT count(), uniqExact(event_id), uniqExact(tenant_id) FROM agentaudit.events "
            "WHERE kafka_topic = {t:String}",
            t,
        ).result_rows[0]
        dl = store.query(
            "SELECT count(), uniqExact(kafka_partition, kafka_offset) FROM agentaudit.dead_letters "
            "WHERE source_topic = {t:String}",
            t,
        ).result_rows[0]
        # Order: chain_seq and kafka_offset must sort the same way in every (tenant, partition).
        disorder = store.query(
            """
            SELECT count() FROM (
                SELECT groupArray(kafka_offset) AS offs FROM (
                    SELECT tenant_id, kafka_partition, kafka_offset FROM agentaudit.events
                    WHERE kafka_topic = {t:String} ORDER BY tenant_id, kafka_partition, chain_seq)
                GROUP BY tenant_id, kafka_partition)
            WHERE NOT arrayAll((x, i) -> i = 1 OR x > offs[i - 1], offs, arrayEnumerate(offs))""",
            t,
        ).result_rows[0][0]
        count, unique, tenants = (int(v) for v in row)
        assert (count, unique) == (expected_events, expected_events), (
            f"count()={count} uniqExact(event_id)={unique}, expected {expected_events} "
            "unique events"
        )
        if expected_dead is not None:
            assert tuple(int(v) for v in dl) == (expected_dead, expected_dead), (
                f"dead letters (rows, unique offsets) = {dl}, expected {expected_dead}"
            )
        assert disorder == 0, f"{disorder} (tenant, partition) chains out of Kafka offset order"
        checked = assert_chains_valid(store)
    return {"stored": count, "dead_letters": int(dl[0]), "tenants": tenants, "chain_rows": checked}
