-- The identity of a dead letter the record sink lands from the DLQ topic (`land=dead_letters`:
-- OTLP ingest, alert delivery), so that a copy a writer's retry put on the topic again (the
-- OTLP exporter re-sending a request the receiver answered 503) is stored once
-- (`agentaudit.sink.pipeline_records.identity`). The record sink reads the most recent ones
-- back on start, as it does record ids. '' for every other dead letter (the sinks' own, told
-- apart by their source offset) and for rows stored before this migration.
ALTER TABLE agentaudit.dead_letters
    ADD COLUMN IF NOT EXISTS dead_letter_id String DEFAULT '';
