DROP VIEW IF EXISTS agentaudit.events_ingest_mv;
DROP TABLE IF EXISTS agentaudit.events_ingest;
