-- The record sink's counterpart of 0011: the log epoch of a record's source partition (alerts
-- and control topics). 0 for the log the partition had when the record sink first read it,
-- +1 each time the sink found that log replaced (topic deleted and recreated, or a broker
-- that keeps nothing restarted). Offsets restart in a new log, so the record sink's per-table
-- watermarks and its resume positions (record_sink_offsets) are per (topic, partition,
-- log_epoch). dead_letters has the column since 0011. Rows stored before this migration are 0.
ALTER TABLE agentaudit.alerts
    ADD COLUMN IF NOT EXISTS log_epoch UInt32 DEFAULT 0 AFTER kafka_offset;
ALTER TABLE agentaudit.control
    ADD COLUMN IF NOT EXISTS log_epoch UInt32 DEFAULT 0 AFTER kafka_offset;
ALTER TABLE agentaudit.breaker_transitions
    ADD COLUMN IF NOT EXISTS log_epoch UInt32 DEFAULT 0 AFTER kafka_offset;
ALTER TABLE agentaudit.drift_scores
    ADD COLUMN IF NOT EXISTS log_epoch UInt32 DEFAULT 0 AFTER kafka_offset;
ALTER TABLE agentaudit.record_sink_offsets
    ADD COLUMN IF NOT EXISTS log_epoch UInt32 DEFAULT 0 AFTER kafka_offset;
