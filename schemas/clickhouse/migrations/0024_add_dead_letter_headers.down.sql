ALTER TABLE agentaudit.dead_letters DROP COLUMN IF EXISTS kafka_headers;
