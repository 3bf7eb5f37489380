DROP TABLE IF EXISTS agentaudit.record_sink_offsets;
