ALTER TABLE agentaudit.record_sink_offsets
    DROP COLUMN IF EXISTS log_epoch;
ALTER TABLE agentaudit.drift_scores
    DROP COLUMN IF EXISTS log_epoch;
ALTER TABLE agentaudit.breaker_transitions
    DROP COLUMN IF EXISTS log_epoch;
ALTER TABLE agentaudit.control
    DROP COLUMN IF EXISTS log_epoch;
ALTER TABLE agentaudit.alerts
    DROP COLUMN IF EXISTS log_epoch;
