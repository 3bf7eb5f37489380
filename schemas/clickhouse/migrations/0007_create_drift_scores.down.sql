DROP TABLE IF EXISTS agentaudit.drift_scores;
