"""Kafka over TLS and SASL, for real, through the one client factory (producers/kafka_config).

What runs for real here: mutual TLS (our CA, a server certificate for 127.0.0.1, a client
certificate) in front of the local broker, carrying the SDK's `KafkaTransport`, the sink
(`SinkWorker`: consumer group, DLQ producer), `ensure_topics` (admin client) and a faust app of
the stream-jobs runtime; a wrong CA and a missing client certificate; and SASL SCRAM-SHA-256
and SCRAM-SHA-512 logins refused by a broker with authentication on.

Not here, and why: TLS terminated by Tansu itself (0.6's CLI cannot turn it on, see
`kafka_tls`); a SCRAM login that succeeds (Tansu 0.6 creates users only over an
authenticated connection, and its in-memory store is empty at start, so no user can ever
exist); PLAIN (Tansu 0.6 does not offer it: "NoSharedMechanism"). The options those build
are unit-tested (tests/unit/producers/test_kafka_config.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import LocalBroker, ensure_topics, free_port
from agentaudit.errors import BrokerUnreachable
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit_sdk import Client
from agentaudit_sdk.kafka import KafkaTransport
from agentaudit_sdk.kafka_config import KafkaConnection, KafkaSetupError, producer, start
from stream_jobs.runtime import make_app, running, source_topic
from tests.conftest import isolated_settings
from tests.factories import event_dict
from tests.integration.helpers import assert_chains_valid, scalar, sink_until
from tests.integration.kafka_tls import CertFiles, TlsProxy, make_certs

pytestmark = pytest.mark.integration

QUICK = {"broker_session_timeout": 2.0, "broker_heartbeat_interval": 0.5}
EVENTS = 40


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"), key_password=b"client-key-pass")


@pytest.fixture(scope="module")
def tls_bootstrap(certs: CertFiles) -> Iterator[str]:
    """The local broker reachable only through mutual TLS: it advertises the proxy."""
    proxy_port = free_port()
    with LocalBroker(advertised_port=proxy_port) as broker:
        proxy = TlsProxy(certs, proxy_port, broker.port, require_client_cert=True)
        proxy.start()
        try:
            yield f"127.0.0.1:{proxy_port}"
        finally:
            proxy.stop()


def tls_settings(bootstrap: str, certs: CertFiles, base: Path, **changes: Any) -> Settings:
    fields: dict[str, Any] = {
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": certs.ca,
        "kafka_ssl_certfile": certs.client_cert,
        "kafka_ssl_keyfile": certs.client_key,
        "kafka_ssl_key_password": "client-key-pass",
        **changes,
    }
    return isolated_settings(bootstrap, base, **fields)


async def test_sdk_sink_and_faust_over_mutual_tls(
    tls_bootstrap: str, certs: CertFiles, tmp_path: Path
) -> None:
    settings = tls_settings(tls_bootstrap, certs, tmp_path)
    assert await ensure_topics(settings)  # the admin client, over TLS

    # The SDK, configured from the environment as an agent would be (AGENTAUDIT_KAFKA_*).
    env = settings.to_env()
    transport = KafkaTransport(KafkaConnection.from_env(env), settings.events_topic)
    client = Client(transport, agent_id="tls-bot", kill_switch=False)
    payload = event_dict(kind="tool_call")["payload"]
    try:
        for i in range(EVENTS):
            client.emit("tool_call", {**payload, "action": f"step-{i}"}, tenant_id="tls-tenant")
        assert client.flush(30, delivered=True), (client.stats, client.recent_errors)
    finally:
        client.shutdown(10)

    with open_store(settings, own=True) as store:
        migrate(store)
        await sink_until(
            settings, store, lambda w: w.processor.counters.accepted >= EVENTS, timeout=30
        )
        assert (
            scalar(store, "SELECT count() FROM agentaudit.events WHERE tenant_id = 'tls-tenant'")
            == EVENTS
        )
        assert assert_chains_valid(store) >= 1

    # A faust app of the stream-jobs runtime reads the same events over TLS.
    app = make_app(settings, app_id=f"tls-{tmp_path.name[-8:]}", **QUICK)
    seen: list[bytes] = []
    arrived = asyncio.Event()

    @app.agent(source_topic(app, settings.events_topic))
    async def count(stream: Any) -> None:
        async for value in stream:
            seen.append(value)
            if len(seen) >= EVENTS:
                arrived.set()

    async with running(app, timeout=30):
        await asyncio.wait_for(arrived.wait(), 20)
    assert len(seen) == EVENTS


async def test_wrong_ca_is_named_not_a_hang(
    tls_bootstrap: str, certs: CertFiles, tmp_path: Path
) -> None:
    settings = tls_settings(tls_bootstrap, certs, tmp_path, kafka_ssl_cafile=certs.other_ca)
    started = time.monotonic()
    with pytest.raises(
        BrokerUnreachable, match=r"TLS handshake .* failed: CERTIFICATE_VERIFY_FAILED"
    ):
        await ensure_topics(settings, timeout=10)
    assert time.monotonic() - started < 10

    # the SDK's transport says the same in its error (the client logs it and spools)
    transport = KafkaTransport(
        settings.kafka_connection(), settings.events_topic, connect_timeout_s=10
    )
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        await transport.start()
    await transport.close()


async def test_missing_client_certificate_is_named(
    tls_bootstrap: str, certs: CertFiles, tmp_path: Path
) -> None:
    settings = tls_settings(
        tls_bootstrap,
        certs,
        tmp_path,
        kafka_ssl_certfile=None,
        kafka_ssl_keyfile=None,
        kafka_ssl_key_password=None,
    )
    connection = settings.kafka_connection()
    with pytest.raises(
        KafkaSetupError, match=r"TLS handshake .* failed: .*requires a client certificate"
    ) as err:
        await start(producer(connection), connection, 10)
    assert err.value.kind == "tls"


@pytest.fixture(scope="module")
def sasl_bootstrap() -> Iterator[str]:
    with LocalBroker(authentication=True) as broker:
        yield broker.bootstrap


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_refused_login_is_an_auth_error(
    sasl_bootstrap: str, tmp_path: Path, mechanism: str
) -> None:
    settings = isolated_settings(
        sasl_bootstrap,
        tmp_path,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="alice",
        kafka_sasl_password="not-the-password",
    )
    with pytest.raises(
        BrokerUnreachable, match=f"SASL_PLAINTEXT {mechanism} as 'alice'.* refused the credentials"
    ) as err:
        await ensure_topics(settings, timeout=10)
    assert "not-the-password" not in str(err.value)
