"""The access log as read back: every `auditor_query` entry, each marked genuine or forged.

The gate (`agentaudit.auditors.gate`) signs every entry it writes with the deployment's
checkpoint key (`agentaudit.trail.system_signature`, purpose ``access-log``); anyone who can
produce to the events topic can write an `auditor_query` event too, which the
`agentaudit.auditor_queries` view (plain SQL) shows like the gate's own. `access_log` checks
each entry (`agentaudit.trail.system_log`) and lists them all, the forged ones flagged.
"""

from __future__ import annotations

from agentaudit.store.protocol import Store
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.system_log import SystemEntry, system_log


def access_log(
    store: Store, keys: PublicKeys, deployment: str, tenant: str = ""
) -> list[SystemEntry]:
    """Every `auditor_query` entry of ``tenant`` (all tenants if empty), oldest first per
    tenant, each with its status."""
    return system_log(store, keys, deployment, ("auditor_query",), tenant)
