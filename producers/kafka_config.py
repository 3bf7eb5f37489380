"""One Kafka connection, from settings, for every producer, consumer and admin client.

`KafkaConnection` holds where Kafka is and how to reach it: the security protocol
(PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), the SASL mechanism (PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512) with username and password, and TLS files (CA, client certificate and key).
`producer()`, `consumer()` and `admin()` build aiokafka clients from it; `start()` starts one
and turns a failure into a `KafkaSetupError` that says what is wrong (a certificate the CA
does not vouch for, a SASL mechanism the broker does not offer, credentials the broker
refused, nothing listening) instead of aiokafka's "Unable to bootstrap", whose cause only goes
to its log.

Secrets are `SecretStr`: never in `repr`, `str` or logs; they leave the object only in the
options handed to aiokafka. `KafkaConnection.from_env()` reads the same `AGENTAUDIT_KAFKA_*`
variables as the server's settings, so an agent's SDK is configured like the worker.
aiokafka is imported when a client is built, never at import time (keeps `import agentaudit_sdk`
cheap); this module needs nothing of the server.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from agentaudit_sdk.sasl_probe import offered_mechanisms

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

ENV_PREFIX = "AGENTAUDIT_KAFKA_"
# environment variable (after the prefix) -> field; the server's Settings use the same names
_ENV_FIELDS = {
    "BOOTSTRAP": "bootstrap",
    "SECURITY_PROTOCOL": "security_protocol",
    "SASL_MECHANISM": "sasl_mechanism",
    "SASL_USERNAME": "username",
    "SASL_PASSWORD": "password",
    "SSL_CAFILE": "ssl_cafile",
    "SSL_CERTFILE": "ssl_certfile",
    "SSL_KEYFILE": "ssl_keyfile",
    "SSL_KEY_PASSWORD": "ssl_key_password",
    "SSL_CHECK_HOSTNAME": "ssl_check_hostname",
    "CLIENT_ID": "client_id",
}


class KafkaSetupError(Exception):
    """A Kafka client could not start; `kind` says why: "tls" (handshake refused: CA,
    hostname, client certificate), "auth" (SASL refused), or "unreachable"."""

    def __init__(self, kind: Literal["tls", "auth", "unreachable"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


class KafkaConnection(BaseModel):
    """Where Kafka is and how to authenticate; see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: SecretStr | None = None
    ssl_cafile: Path | None = None
    """PEM bundle of the CAs that sign the brokers' certificates; unset = the system's."""
    ssl_certfile: Path | None = None
    """Client certificate (PEM) for mutual TLS; may hold the key too."""
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    client_id: str | None = None
    """Overrides the client id each component picks (quotas, broker-side logs)."""

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConnection:
        # A setting that the protocol would silently ignore is a misconfiguration: say so.
        if self.uses_sasl:
            missing = [
                env
                for env, value in (
                    ("SASL_MECHANISM", self.sasl_mechanism),
                    ("SASL_USERNAME", self.username),
                    ("SASL_PASSWORD", self.password),
                )
                if not value
            ]
            if missing:
                names = ", ".join(ENV_PREFIX + m for m in missing)
                raise ValueError(f"{self.security_protocol} needs {names}")
        elif self.sasl_mechanism or self.username or self.password:
            raise ValueError(
                f"SASL settings given but the security protocol is {self.security_protocol}; "
                "use SASL_SSL (or SASL_PLAINTEXT)"
            )
        tls_files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile, self.ssl_key_password)
        if not self.uses_tls and any(tls_files):
            raise ValueError(
                f"TLS settings given but the security protocol is {self.security_protocol}; "
                "use SSL (or SASL_SSL)"
            )
        if (self.ssl_keyfile or self.ssl_key_password) and not self.ssl_certfile:
            raise ValueError("a client key needs its certificate (ssl_certfile)")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> KafkaConnection:
        """From `AGENTAUDIT_KAFKA_*` variables (the names the server's settings use)."""
        env = os.environ if environ is None else environ
        fields: dict[str, Any] = {
            field: env[ENV_PREFIX + name]
            for name, field in _ENV_FIELDS.items()
            if env.get(ENV_PREFIX + name)
        }
        return cls(**{**fields, **overrides})

    def describe(self) -> str:
        """Who connects where and how, for messages: never a secret."""
        how: str = self.security_protocol
        if self.uses_sasl:
            how += f" {self.sasl_mechanism} as {self.username!r}"
        return f"Kafka at {self.bootstrap} ({how})"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for SSL/SASL_SSL (None otherwise): the CA file (else the system's
        CAs), the client certificate when given, hostname checking unless turned off."""
        if not self.uses_tls:
            return None
        # What aiokafka's create_ssl_context does (the system's CAs when no CA file is set),
        # except that an encrypted key without its password is an error here: OpenSSL would
        # otherwise prompt for it on the terminal, which hangs a worker.
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        if self.ssl_certfile:
            password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else ""
            try:
                context.load_cert_chain(
                    self.ssl_certfile, self.ssl_keyfile or None, password=password
                )
            except ssl.SSLError as exc:
                raise ValueError(
                    f"cannot load the client certificate {self.ssl_certfile} / key "
                    f"{self.ssl_keyfile or '(in the certificate file)'}: {exc.reason or exc} "
                    f"(an encrypted key needs {ENV_PREFIX}SSL_KEY_PASSWORD)"
                ) from None
        context.check_hostname = self.ssl_check_hostname
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client takes for this connection."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.password is not None  # the validator guarantees it
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password.get_secret_value(),
            )
        if self.client_id:
            options["client_id"] = self.client_id
        return options


def as_connection(target: str | KafkaConnection) -> KafkaConnection:
    """A bootstrap string is a PLAINTEXT connection (the local broker, old call sites)."""
    return target if isinstance(target, KafkaConnection) else KafkaConnection(bootstrap=target)


def client_options(connection: KafkaConnection, options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` with the connection's: where and how to connect always come from the
    connection (a caller cannot drop TLS by accident); a configured client id wins."""
    return {**options, **connection.aiokafka_options()}


def producer(connection: KafkaConnection, **options: Any) -> AIOKafkaProducer:
    """An (unstarted) aiokafka producer for `connection`; `options` are aiokafka's."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(**client_options(connection, options))


def consumer(connection: KafkaConnection, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An (unstarted) aiokafka consumer for `connection`; `options` are aiokafka's. Fetched
    records whose header keys are not UTF-8 are read, not fatal (`header_keys`)."""
    from aiokafka import AIOKafkaConsumer

    from agentaudit_sdk import header_keys

    header_keys.install()
    return AIOKafkaConsumer(*topics, **client_options(connection, options))


def admin(connection: KafkaConnection, **options: Any) -> AIOKafkaAdminClient:
    """An (unstarted) aiokafka admin client for `connection`; `options` are aiokafka's."""
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(**client_options(connection, options))


async def start(client: Any, connection: KafkaConnection, timeout_s: float) -> None:
    """`await client.start()` within `timeout_s`; on failure the client is closed and a
    `KafkaSetupError` names the cause (`explain`)."""
    try:
        async with asyncio.timeout(timeout_s):
            await client.start()
    except asyncio.CancelledError:
        await _close(client)
        raise
    except Exception as exc:
        await _close(client)
        raise await explain(connection, exc) from exc


async def explain(connection: KafkaConnection, exc: BaseException) -> KafkaSetupError:
    """Why a client for `connection` failed with `exc`. aiokafka raises refused SASL
    credentials itself but only logs a refused TLS handshake or SASL mechanism, so those
    causes are found by handshakes of our own with the first bootstrap address."""
    from aiokafka.errors import (
        IllegalSaslStateError,
        KafkaConnectionError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    sasl_errors = (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError)
    if connection.uses_sasl and isinstance(
        exc, (KafkaConnectionError, TimeoutError, UnsupportedSaslMechanismError)
    ):
        # aiokafka logs a mechanism the broker does not offer and raises "Unable to bootstrap"
        unoffered = await mechanism_problem(connection)
        if unoffered:
            return KafkaSetupError("auth", unoffered)
    # A SCRAM server-final message carrying an error ("e=…") instead of a verifier ("v=…")
    # surfaces from aiokafka 0.14 as KeyError('v'): the broker rejected user or password.
    if isinstance(exc, sasl_errors) or (connection.uses_sasl and isinstance(exc, KeyError)):
        detail = "" if isinstance(exc, KeyError) else f": {exc}"
        return KafkaSetupError(
            "auth",
            f"{connection.describe()} refused the credentials{detail}; check "
            f"{ENV_PREFIX}SASL_MECHANISM, {ENV_PREFIX}SASL_USERNAME and {ENV_PREFIX}SASL_PASSWORD",
        )
    if connection.uses_tls:
        problem = await tls_problem(connection)
        if problem:
            return KafkaSetupError(
                "tls",
                f"TLS handshake with {connection.describe()} failed: {problem}; check "
                f"{ENV_PREFIX}SSL_CAFILE (the CA that signed the broker's certificate), "
                f"{ENV_PREFIX}SSL_CERTFILE/{ENV_PREFIX}SSL_KEYFILE if the broker requires a "
                "client certificate, and that the bootstrap host matches the certificate",
            )
    reason = "no answer in time" if isinstance(exc, TimeoutError) else repr(exc)
    return KafkaSetupError("unreachable", f"cannot connect to {connection.describe()}: {reason}")


async def mechanism_problem(connection: KafkaConnection, timeout_s: float = 3.0) -> str | None:
    """A message naming the configured SASL mechanism and the ones the first bootstrap
    address offers when ours is not among them, else None (offered, or not found out)."""
    if not connection.uses_sasl or connection.sasl_mechanism is None:
        return None
    host, port = _first_address(connection)
    ours = connection.sasl_mechanism
    offered = await offered_mechanisms(host, port, connection.ssl_context(), ours, timeout_s)
    if offered is None or ours in offered:
        return None
    supported = [m for m in offered if m in get_args(SaslMechanism)]
    return (
        f"{connection.describe()}: the broker does not offer the SASL mechanism {ours}; it "
        f"offers {', '.join(offered) or 'none'}"
        + (
            f"; set {ENV_PREFIX}SASL_MECHANISM to {' or '.join(supported)}"
            if supported
            else f" ({ENV_PREFIX}SASL_MECHANISM takes {', '.join(get_args(SaslMechanism))})"
        )
    )


def _first_address(connection: KafkaConnection) -> tuple[str, int]:
    host, _, port = connection.bootstrap.split(",")[0].strip().rpartition(":")
    return host.strip("[]"), int(port)


async def tls_problem(connection: KafkaConnection, timeout_s: float = 3.0) -> str | None:
    """The TLS error a handshake with the first bootstrap address gives, or None (no TLS
    problem seen: handshake done, or the address does not answer at all)."""
    context = connection.ssl_context()
    if context is None:
        return None
    host, port = _first_address(connection)
    # blocking sockets in a thread: asyncio's SSL transport reports a TLS alert received
    # after the handshake as a plain end of stream, losing the reason
    with_cert = connection.ssl_certfile is not None
    return await asyncio.to_thread(_handshake, host, port, context, timeout_s, with_cert)


def _handshake(
    host: str, port: int, context: ssl.SSLContext, timeout_s: float, with_cert: bool
) -> str | None:
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            # With TLS 1.3 a server that wants a client certificate rejects a missing one
            # only after the client's side of the handshake is done: wait for its alert.
            tls.settimeout(0.3)
            if tls.recv(1) == b"":
                # A Kafka broker is silent until asked; one that hangs up at once without
                # an alert (some TLS stacks send none) refused the client's certificate.
                return "the broker closed the connection right after the handshake " + (
                    "(is the client certificate signed by a CA the broker trusts?)"
                    if with_cert
                    else "(it probably requires a client certificate)"
                )
    except ssl.SSLError as exc:
        return str(exc.reason or exc)
    except (OSError, ValueError):
        pass  # a timeout (silent: no TLS problem) or nothing listening (not a TLS matter)
    return None


async def _close(client: Any) -> None:
    """Stop a client that failed to start; its own error matters, not a failing close."""
    stop = getattr(client, "stop", None) or client.close
    try:
        async with asyncio.timeout(5.0):
            await stop()
    except Exception:  # noqa: BLE001, S110 - the start failure is what the caller reports
        pass


def cancelled_ourselves() -> bool:
    """Whether a CancelledError caught now is this task's own cancellation (to re-raise), not
    one aiokafka re-raised from a task of its own that it cancelled (0.14 does, from a fetch
    task's or the sender's await)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def stop_consumer(consumer: AIOKafkaConsumer, timeout_s: float | None = None) -> None:
    """`consumer.stop()`, finished also when aiokafka (0.14) cuts it short or it hangs.

    With the broker gone, a fetch task backs off in a sleep; `stop()` cancels it and awaits it
    without suppressing its CancelledError, which then ends `stop()` before the client is
    closed: its connections and metadata task are left running, and the error escapes as if
    the caller were being cancelled (a faust consumer thread died of it). Then, or when the
    stop takes longer than `timeout_s` (None: no limit), the client is closed (within
    `timeout_s` again, else TimeoutError). The caller's own cancellation is still raised."""
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.stop()
    except (asyncio.CancelledError, TimeoutError):
        if cancelled_ourselves():
            raise
        async with asyncio.timeout(timeout_s):
            await consumer._client.close()  # noqa: SLF001 - the step stop() skipped (pinned aiokafka)
