"""The demo's budgets: sized so the simulated fleet crosses them while the demo runs.

umbrella's spend burst exhausts its hard daily budget (it is then blocked: the SDK refuses
its work until the day ends); acme crosses the 50/80/100 % alerts of a soft budget; each
hooli user has a small daily budget; initech's token-flooding agent hits a per-request
ceiling in the SDK. No global budget: the stream jobs do not evaluate one yet (README,
Budgets).
"""

from __future__ import annotations

from agentaudit_schemas.budgets import Budget, BudgetScope, WindowKind

DEMO_BUDGETS: list[Budget] = [
    Budget(
        name="umbrella-daily",
        scope=BudgetScope.TENANT,
        tenant_id="umbrella",
        window=WindowKind.DAY,
        limit_usd=15.0,
    ),
    Budget(
        name="acme-daily",
        scope=BudgetScope.TENANT,
        tenant_id="acme",
        window=WindowKind.DAY,
        limit_usd=2.0,
        hard_limit=False,
    ),
    Budget(
        name="hooli-per-user",
        scope=BudgetScope.USER,
        tenant_id="hooli",
        user_id="*",
        window=WindowKind.DAY,
        limit_usd=0.25,
        hard_limit=False,
    ),
    Budget(
        name="initech-per-call", scope=BudgetScope.REQUEST, tenant_id="initech", max_tokens=100_000
    ),
]
