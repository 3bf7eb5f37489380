DROP VIEW IF EXISTS agentaudit.auditor_queries;
DROP TABLE IF EXISTS agentaudit.auditors;
