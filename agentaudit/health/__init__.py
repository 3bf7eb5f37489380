"""Pipeline health: status, metrics and liveness of the jobs (issue 12)."""
