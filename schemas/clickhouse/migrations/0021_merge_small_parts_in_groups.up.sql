-- Issue 14: the sink inserts a part every flush (400 ms by default), and the default merge
-- selector merges such small parts five at a time, so each row is rewritten many times over.
-- Merging at least 20 parts at once cut the embedded store's CPU per 800-row insert, paced at
-- 2.5 inserts/s on a table already holding 200k rows, from 149-176 ms to 88-95 ms (CPU time,
-- merges included; 10 parts: 109-128 ms); at 8,000-row inserts it changes nothing (44 µs per
-- row either way). Tables then hold up to ~20 more small parts per partition, which reads do
-- not notice at these sizes. Both tables every flush writes to: the trail and its rollup.
-- The setting exists since ClickHouse 24.11.
ALTER TABLE agentaudit.events MODIFY SETTING min_parts_to_merge_at_once = 20;
ALTER TABLE agentaudit.spend_hourly MODIFY SETTING min_parts_to_merge_at_once = 20;
