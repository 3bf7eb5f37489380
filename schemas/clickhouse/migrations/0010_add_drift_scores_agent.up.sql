-- The agent a drift score belongs to: behaviour drift is per agent, and eval drift per agent
-- too (two agents of one tenant may share a version number). '' = not per agent, and on the
-- rows stored before this migration (their behaviour subject still names the agent).
ALTER TABLE agentaudit.drift_scores
    ADD COLUMN IF NOT EXISTS agent_id LowCardinality(String) DEFAULT '' AFTER tenant_id;
