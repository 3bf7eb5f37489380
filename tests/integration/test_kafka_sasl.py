"""SASL SCRAM over TLS (SASL_SSL, what managed Kafka uses), for real, through the one client
factory (producers/kafka_config): the local broker with `--authentication` behind a TLS
endpoint (`kafka_tls.TlsProxy`, server certificate only, as MSK, Aiven, Redpanda Cloud do).

Each kind of client we build (the SDK's `KafkaTransport` producer configured from
`AGENTAUDIT_KAFKA_*`, the admin client of `ensure_topics`, a consumer in a group as the sink
makes it, and the sink itself) completes the TLS handshake, runs the SCRAM-SHA-256 or -512
exchange with the broker, and a refused login is named as refused credentials, not as a TLS
fault nor as "unreachable", with no password in the message. With SASL_SSL a TLS fault (a
wrong CA) is named as TLS, not as credentials, and a mechanism the broker does not offer
(PLAIN) is named with the ones it offers, not as aiokafka's "Unable to bootstrap".

Not here, because Tansu 0.6 (the only broker on this machine) cannot do it, measured part by
part: a login that SUCCEEDS. Its `user create` sends the credential, but the only storage
compiled into this build ("dynostore": memory://, s3://) drops it
(`upsert_user_scram_credential` returns Ok and stores nothing; `user_scram_credential` always
answers None: tansu-storage/src/dynostore.rs at v0.6.0), even on s3:// storage that keeps
topics across a restart; postgres:// storage, which does store users, is not compiled in
(`Storage(FeatureNotEnabled { feature: "postgres", ... })` against a running PostgreSQL 15).
PLAIN: Tansu's SASL library is built without it. Measured with SaslHandshake v0 and v1
requests: Tansu answers one naming SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER with error 0
and only that mechanism as its list; one naming PLAIN (or anything unknown) it answers by
closing the connection (logging `NoSharedMechanism`), which aiokafka logs and reports only as
"Unable to bootstrap". Apache Kafka answers error 33 with its whole list instead
(tests/unit/producers/test_sasl_probe.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import LocalBroker, ensure_topics, free_port
from agentaudit.errors import BrokerUnreachable
from agentaudit.settings import Settings
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit_sdk.kafka import KafkaTransport
from agentaudit_sdk.kafka_config import KafkaConnection, KafkaSetupError, consumer, start
from agentaudit_sdk.transport import TransportUnavailable
from tests.conftest import isolated_settings
from tests.integration.kafka_tls import CertFiles, TlsProxy, make_certs

pytestmark = pytest.mark.integration

PASSWORD = "wrong-horse-battery"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def sasl_ssl_bootstrap(certs: CertFiles) -> Iterator[str]:
    """The local broker with authentication on, reachable only through TLS (it advertises
    the TLS endpoint, so the partition leader's connection is TLS too)."""
    proxy_port = free_port()
    with LocalBroker(advertised_port=proxy_port, authentication=True) as broker:
        proxy = TlsProxy(certs, proxy_port, broker.port, require_client_cert=False)
        proxy.start()
        try:
            yield f"127.0.0.1:{proxy_port}"
        finally:
            proxy.stop()


def sasl_ssl_settings(
    bootstrap: str, certs: CertFiles, base: Path, mechanism: str, **changes: Any
) -> Settings:
    fields: dict[str, Any] = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_ssl_cafile": certs.ca,
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": "agent",
        "kafka_sasl_password": PASSWORD,
        **changes,
    }
    return isolated_settings(bootstrap, base, **fields)


def refused(mechanism: str) -> str:
    return rf"\(SASL_SSL {mechanism} as 'agent'\) refused the credentials"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_over_tls_is_refused_as_credentials_by_every_client_kind(
    sasl_ssl_bootstrap: str, certs: CertFiles, tmp_path: Path, mechanism: str
) -> None:
    settings = sasl_ssl_settings(sasl_ssl_bootstrap, certs, tmp_path, mechanism)
    connection = settings.kafka_connection()

    # the admin client (the CLI's and the worker's `ensure_topics`)
    with pytest.raises(BrokerUnreachable, match=refused(mechanism)) as admin_err:
        await ensure_topics(settings, timeout=10)

    # the SDK's producer, configured from the environment as an agent would be
    transport = KafkaTransport(
        KafkaConnection.from_env(settings.to_env()), settings.events_topic, connect_timeout_s=10
    )
    try:
        with pytest.raises(TransportUnavailable, match=refused(mechanism)) as sdk_err:
            await transport.start()
    finally:
        await transport.close()

    # a consumer in a group, as the sink and the stream jobs make theirs
    group_consumer = consumer(
        connection,
        settings.events_topic,
        group_id=settings.consumer_group,
        auto_offset_reset="none",
    )
    with pytest.raises(KafkaSetupError, match=refused(mechanism)) as consumer_err:
        await start(group_consumer, connection, 10)
    assert consumer_err.value.kind == "auth"

    for err in (admin_err, sdk_err, consumer_err):
        assert PASSWORD not in str(err.value)


async def test_sink_stops_with_the_refused_login(
    sasl_ssl_bootstrap: str, certs: CertFiles, tmp_path: Path
) -> None:
    settings = sasl_ssl_settings(sasl_ssl_bootstrap, certs, tmp_path, "SCRAM-SHA-512")
    with open_store(settings, own=True) as store:
        with pytest.raises(KafkaSetupError, match=refused("SCRAM-SHA-512")) as err:
            await SinkWorker(settings, store).run()
    assert err.value.kind == "auth"


async def test_a_mechanism_the_broker_does_not_offer_is_named_with_the_offered_ones(
    sasl_ssl_bootstrap: str, certs: CertFiles, tmp_path: Path
) -> None:
    # aiokafka only logs it (Tansu hangs up on the handshake) and raises "Unable to bootstrap"
    settings = sasl_ssl_settings(sasl_ssl_bootstrap, certs, tmp_path, "PLAIN")
    transport = KafkaTransport(
        KafkaConnection.from_env(settings.to_env()), settings.events_topic, connect_timeout_s=10
    )
    try:
        with pytest.raises(TransportUnavailable) as err:
            await transport.start()
    finally:
        await transport.close()
    message = str(err.value)
    assert (
        "(SASL_SSL PLAIN as 'agent'): the broker does not offer the SASL mechanism PLAIN; "
        "it offers SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER; set "
        "AGENTAUDIT_KAFKA_SASL_MECHANISM to SCRAM-SHA-256 or SCRAM-SHA-512"
    ) in message
    assert "bootstrap" not in message and PASSWORD not in message
    assert isinstance(err.value.__cause__, KafkaSetupError) and err.value.__cause__.kind == "auth"


async def test_wrong_ca_under_sasl_ssl_is_a_tls_fault_not_credentials(
    sasl_ssl_bootstrap: str, certs: CertFiles, tmp_path: Path
) -> None:
    settings = sasl_ssl_settings(
        sasl_ssl_bootstrap, certs, tmp_path, "SCRAM-SHA-256", kafka_ssl_cafile=certs.other_ca
    )
    connection = settings.kafka_connection()
    group_consumer = consumer(connection, settings.events_topic, group_id=settings.consumer_group)
    with pytest.raises(
        KafkaSetupError, match=r"TLS handshake .* failed: CERTIFICATE_VERIFY_FAILED"
    ):
        await start(group_consumer, connection, 10)
