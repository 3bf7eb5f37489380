DROP VIEW IF EXISTS agentaudit.spend_hourly_mv;
DROP TABLE IF EXISTS agentaudit.spend_hourly;
