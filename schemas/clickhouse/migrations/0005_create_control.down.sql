DROP TABLE IF EXISTS agentaudit.control;
