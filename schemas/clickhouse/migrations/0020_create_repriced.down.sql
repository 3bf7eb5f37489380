DROP TABLE IF EXISTS agentaudit.repriced;
