"""Spend and budgets (issue #3): pure logic, no faust.

- `windows`: calendar windows (hour/day/month) in a timezone, as UTC instants;
- `ledger`: `SpendTracker`, spend per tenant/user/agent/model per window, replay-safe;
- `budgets`: `BudgetEvaluator` (soft thresholds, hard limits, resets, run-time changes),
  `check_request` (per-request ceilings, for the SDK);
- `global_spend`: partial sums per source partition and their combination (global budgets);
- `job`: `SpendJob` (per worker) and `GlobalBudgetJob` (one aggregator), what faust calls.
"""
