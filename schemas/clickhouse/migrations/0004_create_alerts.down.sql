DROP TABLE IF EXISTS agentaudit.alerts;
