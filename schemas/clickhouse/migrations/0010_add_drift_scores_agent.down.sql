ALTER TABLE agentaudit.drift_scores DROP COLUMN IF EXISTS agent_id;
