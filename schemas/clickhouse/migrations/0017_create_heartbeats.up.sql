-- Liveness of the pipeline's jobs (issue 12 H4): the stream jobs publish a heartbeat on the
-- control topic (key `heartbeat/stream_jobs`) from their processing loop; the record sink
-- lands each one here. Not a control row (a heartbeat blocks nothing) and in no hash chain
-- (not an agent's event). `heartbeat_id` is deterministic (source, worker, seq, at) so a
-- re-published heartbeat is stored once, like every record; the Kafka source columns make the
-- record sink exactly once (its watermarks and log anchors, migrations 0009 and 0012).
-- The TTL only bounds growth: staleness needs the newest row, not history. (Rows dated more
-- than 7 days back are dropped as they are inserted: tests must date heartbeats near now.)
CREATE TABLE IF NOT EXISTS agentaudit.heartbeats
(
    heartbeat_id    String,
    source          LowCardinality(String),
    at              DateTime64(3, 'UTC'),
    seq             UInt64,
    worker          String,
    interval_s      Float64,
    record          String CODEC(ZSTD(3)),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    log_epoch       UInt32 DEFAULT 0,
    ingested_at     DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(at)
ORDER BY (source, at, worker)
TTL toDateTime(at) + INTERVAL 7 DAY
SETTINGS ttl_only_drop_parts = 1;
