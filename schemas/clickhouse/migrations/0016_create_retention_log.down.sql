DROP TABLE IF EXISTS agentaudit.retention_log;
