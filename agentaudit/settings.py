"""Settings for every agentaudit deployable, read once from `AGENTAUDIT_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

# The SDK's part (broker, TLS/SASL, its topics) lives in the SDK; re-exported here.
from agentaudit_sdk.kafka_config import KafkaConnection
from agentaudit_sdk.settings import BUDGETS_TOPIC, CONTROL_TOPIC, EVENTS_TOPIC, SdkSettings

DLQ_TOPIC = "agentaudit.dlq.v1"
ALERTS_TOPIC = "agentaudit.alerts.v1"
GOLDSETS_TOPIC = "agentaudit.goldsets.v1"
PINS_TOPIC = "agentaudit.pins.v1"

__all__ = [
    "ALERTS_TOPIC",
    "BUDGETS_TOPIC",
    "CONTROL_TOPIC",
    "DLQ_TOPIC",
    "EVENTS_TOPIC",
    "GOLDSETS_TOPIC",
    "PINS_TOPIC",
    "KafkaConnection",
    "Settings",
]


class Settings(SdkSettings):
    """One frozen settings object; build it once at the edge and pass it down.

    The SDK's own settings (broker, TLS/SASL, topics it reads and writes, data dir) are
    inherited from `agentaudit_sdk.settings.SdkSettings`: the same `AGENTAUDIT_*` variables.
    """

    model_config = SettingsConfigDict(env_prefix="AGENTAUDIT_", frozen=True, extra="ignore")

    clickhouse_url: str | None = Field(
        default=None,
        description="ClickHouse server URL (http[s]://user:password@host:port/). Unset = "
        "embedded chDB.",
    )
    dlq_topic: str = DLQ_TOPIC
    alerts_topic: str = ALERTS_TOPIC
    goldsets_topic: str = Field(
        default=GOLDSETS_TOPIC, description="Compacted: registered gold sets by id@version."
    )
    pins_topic: str = Field(
        default=PINS_TOPIC, description="Compacted: pinned reference distributions for drift."
    )
    partitions: int = Field(default=6, ge=1, le=1024, description="Partitions for created topics.")
    consumer_group: str = "agentaudit-sink"
    sink_batch_size: int = Field(default=20_000, ge=1, description="Rows per insert, at most.")
    sink_batch_bytes: int = Field(
        default=64 << 20,
        ge=1,
        description="Message bytes a batch is flushed at (it may hold one fetch more): bounds "
        "the sink's memory when messages are large.",
    )
    sink_flush_interval_ms: int = Field(
        default=400,
        ge=1,
        description="Longest a row waits to be inserted. Each insert costs the embedded store "
        "~30-45 ms of CPU whatever its size: at low rates this sets most of the CPU per event.",
    )
    sink_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Sink processes the worker runs (they share the partitions); up to one per "
        "core.",
    )
    stream_jobs: bool = Field(
        default=True,
        description="Run the faust stream jobs (spend, budgets, breakers) in the worker.",
    )
    jobs_app_id: str | None = Field(
        default=None,
        description="The stream jobs' faust app id: their consumer group and the prefix of "
        "their tables' changelog topics. Unset = `agentaudit` for the default events topic, "
        "`agentaudit-<events topic>` for any other (see `jobs_group`).",
    )
    max_clock_skew_s: float = Field(
        default=900.0,
        ge=0,
        description="How far an event's occurred_at may be after its Kafka record's timestamp; "
        "later events are dead letters (occurred_at_in_future). Past dates are backfill, accepted.",
    )
    deployment: str = Field(
        default="localhost",
        description="Names this installation in checkpoint origins: "
        "<deployment>/agentaudit/<tenant>/p<partition> "
        "(a schema-less URL, need not be reachable).",
    )
    key_dir: Path = Field(
        default_factory=lambda: Path.home() / ".config" / "agentaudit" / "keys",
        description="The checkpoint signing key (0600) and the public-key history; outside the "
        "data dir.",
    )
    checkpoint_dir: Path | None = Field(
        default=None,
        description="Append-only directory the signed checkpoints are written to (besides the "
        "store); "
        "default <data_dir>/checkpoints. Point it somewhere the store's owner cannot rewrite.",
    )
    checkpoint_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="Every chain's checkpoint is signed this often, also when unchanged; 0 = "
        "unsigned trail.",
    )
    content_encryption: bool = Field(
        default=True,
        description="The sink encrypts personal content (prompts, responses, error messages, "
        "attribute values) per subject before it is chained and stored (README, Erasure).",
    )
    subject_key_cache: int = Field(
        default=20_000,
        ge=1,
        description="Subjects whose current data key a sink process keeps in memory (~3.5 KiB "
        "each); the least recently used is dropped and read from disk again when needed.",
    )
    subject_key_dir: Path | None = Field(
        default=None,
        description="Per-subject data keys, wrapped by the key-encryption key; default "
        "<key_dir>/subjects.",
    )
    subject_kek_file: Path | None = Field(
        default=None,
        description="The key-encryption key (0600) wrapping the subject keys; default "
        "<key_dir>/subject-kek.",
    )
    retention_sweep_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="The worker applies every tenant's retention this often (README, Retention "
        "and legal hold); 0 = never (run `agentaudit retention apply` instead).",
    )
    retention_clock_tolerance_s: float = Field(
        default=86_400.0,
        ge=0,
        description="How far the host clock may run ahead of the trail's newest events (their "
        "median occurred_at) before a retention sweep stops trusting it and cuts as of the "
        "trail's time plus this instead (README, Retention and legal hold).",
    )
    dedup_window: int = Field(
        default=200_000,
        ge=0,
        description="Recent event_ids per worker remembered to drop re-sent events (SDK retries).",
    )
    # alert delivery, agentaudit/notify: the routing file the worker delivers with
    alert_routes: Path | None = Field(
        default=None,
        description="Routing file (YAML) for alert delivery; set, the worker also delivers the "
        "alerts topic to its receivers (README, Alert delivery). Unset = no delivery in the "
        "worker.",
    )
    # -- health: `agentaudit status`, the worker's /metrics, query's warning --
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="The worker serves Prometheus /metrics here; 0 = off.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address /metrics binds to.")
    metrics_refresh_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the worker re-reads lag and store figures for /metrics.",
    )
    health_max_lag: int = Field(
        default=10_000,
        ge=0,
        description="Consumer lag (messages, any partition) above which status is degraded.",
    )
    health_max_insert_age_s: float = Field(
        default=120.0,
        gt=0,
        description="With lag on the events topic, no insert for this long means the writer is "
        "down.",
    )
    health_max_dead_letter_ratio: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of dead letters among the last 5 minutes' rows above which status is "
        "degraded.",
    )
    health_max_heartbeat_age_s: float = Field(
        default=60.0, gt=0, description="Stream-jobs heartbeat older than this: degraded."
    )
    health_max_checkpoint_age_s: float = Field(
        default=300.0,
        gt=0,
        description="A chain whose newest checkpoint is older than this: degraded.",
    )
    # -- the kill switch knowing it is blind: the stream jobs' heartbeat on the control topic --
    jobs_heartbeat_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="The stream jobs publish a heartbeat (key heartbeat/stream_jobs) this often.",
    )
    # -- prices: the price-override file (schemas/pricing, README Prices) --
    price_overrides: Path | None = Field(
        default=None,
        description="Price-override file (YAML: aliases, per-tenant rates); its digest joins "
        "every row's pricing version. Unset = base prices only.",
    )
    # -- otlp: the OTLP/HTTP receiver (agentaudit/otlp, README OpenTelemetry) --
    otlp_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="The worker also serves OTLP/HTTP (/v1/traces, /v1/logs) here; 0 = off.",
    )
    otlp_host: str = Field(default="127.0.0.1", description="Address the OTLP receiver binds to.")
    otlp_keys_file: Path | None = Field(
        default=None,
        description="API keys of the OTLP receiver (SHA-256 → tenant); default "
        "<key_dir>/otlp-keys.json.",
    )
    otlp_max_body_bytes: int = Field(
        default=16 << 20,
        ge=1024,
        description="Largest OTLP request body, compressed or not (413 above).",
    )
    otlp_send_timeout_s: float = Field(
        default=4.0,
        gt=0,
        description="How long a request waits for the broker's next acknowledgement before "
        "answering 503; well under exporters' own 10 s, so that they still retry.",
    )
    otlp_max_inflight: int = Field(
        default=64,
        ge=1,
        description="Requests handled at once; more are answered 429 (retry later).",
    )
    otlp_read_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a client may take to send its OTLP request body (408 after).",
    )
    otlp_max_inflight_bytes: int = Field(
        default=64 << 20,
        ge=1024,
        description="Bytes OTLP requests may hold at once (bodies being read, then body and "
        "records until acknowledged; ~18x a body at peak): more are answered 429 (retry later).",
    )
    otlp_idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="An OTLP connection idle this long, or still sending its request's headers "
        "after it, is closed.",
    )
    otlp_max_connections: int = Field(
        default=512,
        ge=1,
        description="OTLP connections held at once (at most half the open-file limit); past it "
        "the oldest not in a request is closed, or the new one answered 503 when all are.",
    )

    def to_env(self) -> dict[str, str]:
        """`AGENTAUDIT_*` variables that rebuild these settings in a child process (secrets
        in the clear: the child needs them)."""
        return {
            f"AGENTAUDIT_{name.upper()}": (
                value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            )
            for name, value in self.model_dump().items()
            if value is not None
        }

    @property
    def jobs_group(self) -> str:
        """The stream jobs' faust app id, which is also their consumer group and the prefix of
        their changelog topics (`<id>-spend-changelog`, ...). Their state describes the events
        topic's partitions and offsets, so it is named after that topic: with one fixed id,
        a second pipeline on the same Kafka (another events topic) joined the first one's
        group and restored its tables: the other pipeline's spend states (totals, offsets)
        came back as this one's, seeded the delivery fence, and every message at or below
        those offsets was taken for a replay (spend skipped the new events; re-sent copies
        were not counted as duplicates). The default topic keeps its id (`agentaudit`)."""
        if self.jobs_app_id:
            return self.jobs_app_id
        if self.events_topic == EVENTS_TOPIC:
            return "agentaudit"
        return f"agentaudit-{self.events_topic}"

    @property
    def store_dir(self) -> Path:
        """The chDB data directory (embedded mode)."""
        return self.data_dir / "chdb"

    @property
    def checkpoints_dir(self) -> Path:
        """Where signed checkpoints are appended outside the store."""
        return self.checkpoint_dir or self.data_dir / "checkpoints"

    @property
    def subject_keys_dir(self) -> Path:
        """Where the wrapped per-subject data keys live (README, Erasure)."""
        return self.subject_key_dir or self.key_dir / "subjects"

    @property
    def subject_kek_path(self) -> Path:
        """The key-encryption key that wraps every subject key."""
        return self.subject_kek_file or self.key_dir / "subject-kek"

    @property
    def embedded(self) -> bool:
        return self.clickhouse_url is None
