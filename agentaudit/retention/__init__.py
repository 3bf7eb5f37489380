"""Retention and legal hold (issue 11 D).

- `policy`: per-tenant retention (days, or keep forever: the default) and legal holds on a
  tenant or one subject, changed at run time; each change is a system event in the tenant's
  trail (published first) and then a row of `agentaudit.retention_log`.
- `sweep`: enforcement. Per chain, it deletes a *prefix* (chain_seq <= H, H the size of an
  old enough signed checkpoint whose stored frontier reproduces its root, below every held
  subject's first row; nothing under a tenant hold), after publishing a `retention_applied`
  event that names every horizon.
- `evidence`: what `agentaudit verify` reads back from the trail to call such a prefix
  ``expired by policy`` (`agentaudit.trail.verdicts.Expiry`).
"""
