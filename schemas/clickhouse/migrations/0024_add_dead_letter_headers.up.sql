-- The Kafka headers of a dead letter's source record, in order (name, value; a null value is
-- ''), so that a dead letter can be replayed as it came: before, only its key and value were
-- kept. [] for rows stored before this migration.
ALTER TABLE agentaudit.dead_letters
    ADD COLUMN IF NOT EXISTS kafka_headers Array(Tuple(name String, value String)) DEFAULT [];
