ALTER TABLE agentaudit.dead_letters DROP COLUMN IF EXISTS dead_letter_id;
