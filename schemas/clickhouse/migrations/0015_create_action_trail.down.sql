DROP VIEW IF EXISTS agentaudit.action_trail;
