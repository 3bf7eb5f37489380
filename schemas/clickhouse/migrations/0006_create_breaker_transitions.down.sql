DROP TABLE IF EXISTS agentaudit.breaker_transitions;
