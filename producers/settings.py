"""The SDK's settings: what a producer needs to reach the broker, from `AGENTAUDIT_*`.

The server's `agentaudit.settings.Settings` extends this class (same variables, same
defaults), so `Client.from_settings` takes either; the SDK itself never imports the server.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentaudit_sdk.kafka_config import KafkaConnection, SaslMechanism, SecurityProtocol

EVENTS_TOPIC = "agentaudit.events.v1"
CONTROL_TOPIC = "agentaudit.control.v1"
BUDGETS_TOPIC = "agentaudit.budgets.v1"


class SdkSettings(BaseSettings):
    """The producer's settings; build it once at the edge and pass it down."""

    model_config = SettingsConfigDict(env_prefix="AGENTAUDIT_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    data_dir: Path = Field(
        default=Path("./.agentaudit"),
        description="Holds the embedded chDB store, the SDK spool and local runtime files.",
    )
    events_topic: str = EVENTS_TOPIC
    control_topic: str = Field(
        default=CONTROL_TOPIC, description="Compacted: block/unblock per scope."
    )
    budgets_topic: str = Field(
        default=BUDGETS_TOPIC, description="Compacted: budget definitions by name."
    )

    # -- kafka: how every Kafka client connects (producers/kafka_config.py,
    # README "Managed Kafka: TLS and SASL"); `kafka_connection()` builds the one object from them --
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols)."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = Field(default=None, description="Never logged.")
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="CA bundle (PEM) for the brokers' certificates; unset = system CAs.",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate (mutual TLS)."
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="Client certificate's key.")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="Never logged.")
    kafka_ssl_check_hostname: bool = True
    kafka_client_id: str | None = Field(
        default=None, description="Overrides every component's Kafka client id."
    )

    def kafka_connection(self) -> KafkaConnection:
        """The connection every producer, consumer and admin client is built from."""
        return KafkaConnection(
            bootstrap=self.kafka_bootstrap,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username,
            password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_key_password=self.kafka_ssl_key_password,
            ssl_check_hostname=self.kafka_ssl_check_hostname,
            client_id=self.kafka_client_id,
        )

    @property
    def spool_dir(self) -> Path:
        """Where the SDK spools events while the broker is unreachable."""
        return self.data_dir / "spool"
