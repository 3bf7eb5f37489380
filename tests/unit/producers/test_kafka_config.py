"""The Kafka client factory: options per security protocol and SASL mechanism, settings and
environment, faust's credentials, error classification; secrets never shown."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import SaslAuthenticationFailed
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from agentaudit.settings import Settings
from agentaudit_sdk.kafka import KafkaTransport
from agentaudit_sdk.kafka_config import (
    KafkaConnection,
    admin,
    client_options,
    consumer,
    explain,
    producer,
)
from stream_jobs.runtime.app import faust_broker_settings
from tests.integration.kafka_tls import CertFiles, make_certs

SECRET = "pa55-w0rd-never-shown"
KEY_SECRET = "key-pa55-never-shown"
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("certs"), key_password=KEY_SECRET.encode())


def sasl(
    protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512", **more: Any
) -> KafkaConnection:
    return KafkaConnection(
        bootstrap="b-1:9096,b-2:9096",
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        username="svc",
        password=SECRET,
        **more,
    )


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert KafkaConnection(bootstrap="h:1").aiokafka_options() == {
        "bootstrap_servers": "h:1",
        "security_protocol": "PLAINTEXT",
    }


def test_ssl_verifies_the_broker_with_the_ca_and_presents_the_client_certificate(
    certs: CertFiles,
) -> None:
    conn = KafkaConnection(
        bootstrap="h:1",
        security_protocol="SSL",
        ssl_cafile=certs.ca,
        ssl_certfile=certs.client_cert,
        ssl_keyfile=certs.client_key,
        ssl_key_password=KEY_SECRET,
    )
    options = conn.aiokafka_options()
    context = options.pop("ssl_context")
    assert options == {"bootstrap_servers": "h:1", "security_protocol": "SSL"}
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "agentaudit-test-ca"),),)
    ]


def test_ssl_without_a_ca_file_trusts_the_system_store_and_may_skip_hostnames() -> None:
    context = KafkaConnection(security_protocol="SSL", ssl_check_hostname=False).ssl_context()
    assert context is not None and context.verify_mode is ssl.CERT_REQUIRED
    assert not context.check_hostname


def test_an_encrypted_key_without_its_password_is_an_error_not_a_prompt(certs: CertFiles) -> None:
    conn = KafkaConnection(
        security_protocol="SSL", ssl_certfile=certs.client_cert, ssl_keyfile=certs.client_key
    )
    with pytest.raises(ValueError, match="AGENTAUDIT_KAFKA_SSL_KEY_PASSWORD"):
        conn.ssl_context()


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_options_per_protocol_and_mechanism(protocol: str, mechanism: str) -> None:
    options = sasl(protocol, mechanism).aiokafka_options()
    context = options.pop("ssl_context", None)
    assert (context is not None) == (protocol == "SASL_SSL")
    assert options == {
        "bootstrap_servers": "b-1:9096,b-2:9096",
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc",
        "sasl_plain_password": SECRET,
    }


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "username": "u"},
            "AGENTAUDIT_KAFKA_SASL_PASSWORD",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "username": "u", "password": "p"},
            "AGENTAUDIT_KAFKA_SASL_MECHANISM",
        ),
        ({"username": "u", "password": "p", "sasl_mechanism": "PLAIN"}, "use SASL_SSL"),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "username": "u",
                "password": "p",
                "ssl_cafile": "/ca.pem",
            },
            "use SSL",
        ),
        ({"ssl_cafile": "/ca.pem"}, "use SSL"),
        ({"security_protocol": "SSL", "ssl_keyfile": "/k.pem"}, "needs its certificate"),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "GSSAPI",
                "username": "u",
                "password": "p",
            },
            "sasl_mechanism",
        ),
        ({"security_protocol": "TLS"}, "security_protocol"),
    ],
)
def test_settings_a_protocol_would_ignore_are_refused(
    fields: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        KafkaConnection(**fields)


async def test_secrets_are_never_in_repr_str_descriptions_or_logs(
    caplog: pytest.LogCaptureFixture, certs: CertFiles
) -> None:
    conn = sasl(
        ssl_cafile=certs.ca,
        ssl_certfile=certs.client_cert,
        ssl_keyfile=certs.client_key,
        ssl_key_password=KEY_SECRET,
    )
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="svc",
        kafka_sasl_password=SECRET,
    )
    faust_creds = faust_broker_settings(conn)["broker_credentials"]
    with caplog.at_level(logging.DEBUG):
        p, c, a = producer(conn), consumer(conn), admin(conn)
        await p.stop()
        await c.stop()
        await a.close()
    shown = [
        repr(conn),
        str(conn),
        conn.describe(),
        repr(settings),
        str(settings),
        repr(settings.kafka_connection()),
        repr(faust_creds),
        caplog.text,
    ]
    for text in shown:
        assert SECRET not in text and KEY_SECRET not in text, text
    assert "svc" in conn.describe() and "SCRAM-SHA-512" in conn.describe()


def test_settings_environment_and_child_processes_agree(
    monkeypatch: pytest.MonkeyPatch, certs: CertFiles
) -> None:
    env = {
        "AGENTAUDIT_KAFKA_BOOTSTRAP": "pkc-1.example:9092",
        "AGENTAUDIT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "AGENTAUDIT_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "AGENTAUDIT_KAFKA_SASL_USERNAME": "svc",
        "AGENTAUDIT_KAFKA_SASL_PASSWORD": SECRET,
        "AGENTAUDIT_KAFKA_SSL_CAFILE": str(certs.ca),
        "AGENTAUDIT_KAFKA_SSL_CHECK_HOSTNAME": "false",
        "AGENTAUDIT_KAFKA_CLIENT_ID": "fleet-7",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from_settings = Settings().kafka_connection()
    assert from_settings == KafkaConnection.from_env(env)  # the SDK reads the same names
    assert from_settings.ssl_check_hostname is False and from_settings.client_id == "fleet-7"
    # a child process (sink processes, the jobs process) rebuilds the same connection,
    # secrets included (SecretStr's str() would hand it "**********")
    child = Settings().to_env()
    assert child["AGENTAUDIT_KAFKA_SASL_PASSWORD"] == SECRET
    monkeypatch.setattr("os.environ", child)
    assert Settings().kafka_connection() == from_settings


def test_the_connection_decides_where_and_how_a_configured_client_id_wins() -> None:
    conn = KafkaConnection(bootstrap="h:1", client_id="fleet-7")
    merged = client_options(
        conn,
        {
            "bootstrap_servers": "elsewhere:1",
            "security_protocol": "SSL",
            "client_id": "agentaudit-sdk",
            "acks": "all",
        },
    )
    assert merged == {
        "bootstrap_servers": "h:1",
        "security_protocol": "PLAINTEXT",
        "client_id": "fleet-7",
        "acks": "all",
    }
    assert (
        client_options(KafkaConnection(), {"client_id": "agentaudit-sdk"})["client_id"]
        == "agentaudit-sdk"
    )


async def test_built_clients_carry_the_options() -> None:
    conn = sasl("SASL_PLAINTEXT", "SCRAM-SHA-256")
    built, other = consumer(conn, "t", group_id="g"), admin(conn)
    # aiokafka 0.14 keeps the options only in its private client (pinned version)
    assert built._client._sasl_mechanism == "SCRAM-SHA-256"  # noqa: SLF001 - aiokafka's
    assert built._client._security_protocol == "SASL_PLAINTEXT"  # noqa: SLF001 - aiokafka's
    assert other._client._sasl_plain_username == "svc"  # noqa: SLF001 - aiokafka's
    await built.stop()
    await other.close()


def test_the_sdk_transport_takes_a_connection_or_a_bootstrap_string() -> None:
    conn = sasl()
    transport = KafkaTransport(conn, "events")
    assert transport.connection is conn and transport.bootstrap == "b-1:9096,b-2:9096"
    assert KafkaTransport("h:1", "events").connection == KafkaConnection(bootstrap="h:1")


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_gets_the_same_connection(protocol: str, mechanism: str) -> None:
    conn = sasl(protocol, mechanism)
    settings = faust_broker_settings(conn)
    assert settings["broker"] == ["kafka://b-1:9096", "kafka://b-2:9096"]
    faust_options = credentials_to_aiokafka_auth(settings["broker_credentials"])
    ours = conn.aiokafka_options()
    for key in (
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
    ):
        assert faust_options[key] == ours[key], key
    assert (faust_options["ssl_context"] is not None) == (protocol == "SASL_SSL")


def test_faust_over_tls_and_plaintext(certs: CertFiles) -> None:
    tls = faust_broker_settings(KafkaConnection(security_protocol="SSL", ssl_cafile=certs.ca))
    options = credentials_to_aiokafka_auth(tls["broker_credentials"])
    assert options["security_protocol"] == "SSL" and isinstance(
        options["ssl_context"], ssl.SSLContext
    )
    assert faust_broker_settings(KafkaConnection(bootstrap="h:1")) == {"broker": ["kafka://h:1"]}


async def test_refused_credentials_are_an_auth_error_without_the_password() -> None:
    conn = sasl("SASL_PLAINTEXT", "SCRAM-SHA-256")
    # aiokafka 0.14 reads a SCRAM server-final message carrying "e=" as KeyError('v')
    for raised in (KeyError("v"), SaslAuthenticationFailed("bad")):
        err = await explain(conn, raised)
        assert err.kind == "auth" and "refused the credentials" in str(err)
        assert SECRET not in str(err)


async def test_nothing_listening_is_unreachable(tmp_path: Path) -> None:
    err = await explain(
        KafkaConnection(bootstrap="127.0.0.1:1", security_protocol="SSL"), TimeoutError()
    )
    assert err.kind == "unreachable" and "no answer in time" in str(err)
