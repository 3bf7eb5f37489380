DROP TABLE IF EXISTS agentaudit.heartbeats;
