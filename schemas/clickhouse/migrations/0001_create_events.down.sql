DROP TABLE IF EXISTS agentaudit.events;
