-- Everything the sink could not accept, with the original bytes, the reason and where it came from.
-- `reason` is a short code (invalid_json = not a JSON object, schema_violation, oversized, unknown_type,
-- missing_tenant, invalid_tenant); `detail` is the human-readable validation message.
CREATE TABLE IF NOT EXISTS agentaudit.dead_letters
(
    received_at     DateTime64(6, 'UTC'),
    source_topic    LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    kafka_timestamp DateTime64(3, 'UTC'),
    kafka_key       String,
    reason          LowCardinality(String),
    detail          String,
    tenant_id       LowCardinality(String),
    event_id        String,
    original        String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_topic, kafka_partition, kafka_offset);
