"""Owning the embedded chDB store: open it, serve it on 127.0.0.1, publish where it is.

chDB lets one process open a data directory. The owner publishes
`data_dir/store.endpoint.json` ({url, token, pid}, mode 0600) while its HTTP server runs;
every other process reads that file and connects with clickhouse-connect like to a server.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import json
import os
import resource
import secrets
import signal
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from agentaudit.errors import StoreUnavailable
from agentaudit.files import write_atomic
from agentaudit.settings import Settings
from agentaudit.store.chdb_engine import ChdbEngine, EngineError
from agentaudit.store.chdb_http import OWNER_PID_HEADER, ChdbHttpServer
from agentaudit.store.client import INSERT_SETTINGS, Endpoint

ENDPOINT_FILE = "store.endpoint.json"
# clickhouse-connect sends this with every request when the server lets it be written
# (`driver/_backend/orchestration.py`); `date_time_input_format=best_effort`, which it sends
# too, is already chDB's default.
CLIENT_SETTINGS = {"cast_string_to_dynamic_use_inference": "1"}
SESSION_SETTINGS = INSERT_SETTINGS | CLIENT_SETTINGS


@dataclass(frozen=True)
class Published:
    """What the owner writes to the endpoint file."""

    url: str
    token: str
    pid: int

    def endpoint(self) -> Endpoint:
        """How clickhouse-connect reaches it: the token is the password; no compression on
        loopback."""
        host, _, port = self.url.removeprefix("http://").partition(":")
        return Endpoint(
            host,
            int(port),
            "default",
            self.token,
            None,
            secure=False,
            compress=False,
            direct=True,
            embedded=True,
        )


def endpoint_path(settings: Settings) -> Path:
    return settings.data_dir / ENDPOINT_FILE


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, but belongs to someone else
    return True


def _pings(url: str, pid: int) -> bool:
    """A direct GET /ping (http.client: no proxy from the environment gets in the way) answered
    by the store server of process `pid`.

    Without the pid, a file left by an owner that was SIGKILLed, whose pid another process
    took, named any server now on its port that answers `Ok.` (another store's owner): readers
    sent it this store's statements (refused: the token is not its own) and `agentaudit
    worker` refused to start ('already owned by another agentaudit process') until the file
    was deleted by hand.
    """
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        return (
            response.status == 200
            and response.read() == b"Ok.\n"
            and response.getheader(OWNER_PID_HEADER) == str(pid)
        )
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def read_live_endpoint(settings: Settings) -> Published | None:
    """The published endpoint if its process is alive and answers; None if absent or stale."""
    try:
        published = Published(**json.loads(endpoint_path(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not _pid_alive(published.pid) or not _pings(published.url, published.pid):
        return None
    return published


def directory_locked(store_dir: Path) -> bool:
    """True while some process has the chDB directory open (ClickHouse flocks `status`).

    Checked before opening because chDB reports a locked directory only as a generic
    BAD_ARGUMENTS error (code 36, the real cause goes to stderr).
    """
    try:
        fd = os.open(store_dir / "status", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our probe lock too
    return False


def _write_private(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`, readable by this user only (it holds a token)."""
    write_atomic(path, text.encode(), 0o600)


def lift_file_size_limit(store_dir: Path) -> None:
    """Make sure chDB's writes are never cut short by the file size limit (RLIMIT_FSIZE).

    Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, and chDB 4.4 does not
    raise it: the insert is reported done, its rows are read back while the process runs, and
    the next start detaches the part as broken (measured: 3,000 events stored and committed by
    the sink, 0 after a restart). So the soft limit is lifted to the hard one; a finite hard
    limit refuses the store; and SIGXFSZ gets its default action back, so that a limit set
    while the store is open ends the process before the insert is acknowledged (the sink then
    reads the batch again) instead of losing it silently.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY:
        raise StoreUnavailable(
            f"the file size limit of this process is {hard} bytes (ulimit -f): chDB would "
            f"report writes to {store_dir} done that the limit cut short, and lose them; "
            "start it with no file size limit (ulimit -f unlimited)"
        )
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)


class EmbeddedOwner:
    """Opens the chDB store of `settings`, serves it over HTTP and publishes the endpoint."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.published: Published | None = None
        self._engine: ChdbEngine | None = None
        self._server: ChdbHttpServer | None = None

    def open(self) -> Published:
        """Become the owner; StoreUnavailable if the directory is held by another process."""
        store_dir = self.settings.store_dir
        store_dir.mkdir(parents=True, exist_ok=True)
        if directory_locked(store_dir):
            raise StoreUnavailable(
                f"the embedded store {store_dir} is open in another process that publishes no "
                f"endpoint; stop that process (or wait for it) and retry"
            )
        lift_file_size_limit(store_dir)
        try:
            # The session starts with the settings every client sends (the insert settings,
            # and what clickhouse-connect sends with each request), so the engine need not
            # change and restore them around each call: 2 SET statements per call otherwise.
            self._engine = ChdbEngine(store_dir, session_settings=SESSION_SETTINGS)
        except EngineError as exc:
            raise StoreUnavailable(
                f"cannot open the embedded store {store_dir} ({exc.message}); chDB opens one data "
                "directory per process: close the other store first"
            ) from None
        try:
            self._server = ChdbHttpServer(self._engine, secrets.token_urlsafe(32))
            from agentaudit.auditors.http import AuditorRoute

            # Requests with an auditor's name and token: scoped, recorded (issue 11).
            self._server.auditors = AuditorRoute.for_endpoint(
                self.settings, self._engine, self._server.url, self._server.token
            )
            self._server.start()
            self.published = Published(self._server.url, self._server.token, os.getpid())
            _write_private(endpoint_path(self.settings), json.dumps(asdict(self.published)))
        except BaseException:
            self.close()
            raise
        return self.published

    def close(self) -> None:
        """Unpublish, stop serving, close chDB (releasing the directory). Idempotent."""
        if self.published is not None:
            path = endpoint_path(self.settings)
            with contextlib.suppress(OSError, ValueError):
                if json.loads(path.read_text()).get("token") == self.published.token:
                    path.unlink()
            self.published = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> Published:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
