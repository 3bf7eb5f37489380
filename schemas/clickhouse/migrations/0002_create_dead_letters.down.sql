DROP TABLE IF EXISTS agentaudit.dead_letters;
