"""Auditors (issue 11 part A): tenant-scoped, read-only SQL whose every statement is recorded.

- `registry`: names, tenants and token hashes in `agentaudit.auditors` (append-only).
- `scope`: what auditors may read, the sqlguard policy, the analyzer check, the engine filters.
- `gate`: the one auditor path (judge, scope, run, record, answer) and the access-log events.
- `http`: the store's HTTP endpoint route for auditor credentials (embedded mode).
- `ddl`: server mode's users, row policies, profile, quota and grants, generated as data.
"""
