ALTER TABLE agentaudit.events RESET SETTING min_parts_to_merge_at_once;
ALTER TABLE agentaudit.spend_hourly RESET SETTING min_parts_to_merge_at_once;
