"""A simulated multi-tenant agent fleet that drives the real SDK with realistic traffic and faults.

Every tenant runs a few agents; each simulated run calls LLMs across providers (with prompt
caching) and takes actions through `client.action` (a policy decision — some DENY, some
REQUIRE_APPROVAL and then an approval — and, when allowed, the tool's execution; some fail),
and finishes with a stop reason. Agents misbehave on purpose: one loops on the same tool
call, one floods tokens, one tenant bursts its spend, and acme's billing-agent breaks the
action rules in its first runs (`ROGUE`: each flag of the action trail, `INJECTIONS_PER_FLAG`
times, recorded in `FleetStats.injected` so a test can find every one).

Like a real agent, the fleet asks the SDK before each call (`client.check`,
`client.check_request`): once the stream jobs block a scope (budget exhausted, breaker open)
or a call is over a request ceiling, the SDK refuses and the run ends with that stop reason.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from agentaudit_sdk import AgentAuditError, Client

TENANT_NAMES = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
]

MODELS: list[tuple[str, str, str]] = [
    # provider, request model, model actually served
    ("openai", "gpt-5-mini", "gpt-5-mini-2025-08-07"),
    ("openai", "gpt-4.1", "gpt-4.1-2025-04-14"),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ("anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001"),
    ("google", "gemini-2.5-flash", "gemini-2.5-flash"),
    ("mistral", "mistral-small", "mistral-small-2506"),
]
TOOLS = [
    ("web_search", "read"),
    ("crm_lookup", "read"),
    ("send_email", "external"),
    ("update_ticket", "write"),
    ("run_sql", "read"),
    ("refund_payment", "write"),
]
AGENTS = ["support-bot", "research-agent", "code-assistant", "billing-agent"]
LOOPING = ("globex", "research-agent")
FLOODING = ("initech", "code-assistant")
BURSTING_TENANT = "umbrella"
POLICY_HASH = hashlib.sha256(b"policy-bundle-2026-11").hexdigest()
ROGUE = ("acme", "billing-agent")
"""Its first runs each take one action that breaks a rule of the action trail, on purpose:
executes with no policy decision, writes although approval was required and never given, and
executes although the decision was DENY (README, "The action trail")."""
ROGUE_CASES = ("no_decision", "write_without_approval", "executed_after_deny")
INJECTIONS_PER_FLAG = 3


def tenant_names(n: int) -> list[str]:
    return [TENANT_NAMES[i] if i < len(TENANT_NAMES) else f"tenant-{i + 1}" for i in range(n)]


@dataclass
class FleetStats:
    runs: int = 0
    events: int = 0
    by_fault: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    """Runs the SDK stopped, by reason (budget_exhausted, breaker_open, request budget)."""
    injected: dict[str, str] = field(default_factory=dict)
    """Action id → the action-trail flag the rogue agent broke there on purpose."""


class Fleet:
    """Emits one simulated agent run per `run_once` call through `client`."""

    def __init__(self, client: Client, tenants: int, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.tenants = tenant_names(tenants)
        self.stats = FleetStats()

    def run_once(self, progress: float) -> int:
        """One run of a random agent; `progress` (0..1) places the spend burst mid-demo."""
        rng = self.rng
        tenant = rng.choice(self.tenants)
        agent = rng.choice(AGENTS)
        before = self.stats.events
        with self.client.bind(
            tenant_id=tenant,
            agent_id=agent,
            agent_version=f"1.{AGENTS.index(agent)}.0",
            user_id=f"user-{rng.randint(1, 40)}",
            variant=rng.choice(["a", "b"]),
            session_id=f"s-{rng.getrandbits(40):x}",
        ):
            try:
                with self.client.run(
                    goal=f"{agent} task {rng.randint(1, 10_000)}", max_steps=40
                ) as run:
                    self._count(1)
                    if (tenant, agent) == LOOPING:
                        self._loop(run)
                    else:
                        self._rogue_action(tenant, agent)
                        self._normal_run(tenant, agent, run, progress)
            except AgentAuditError as refused:  # the kill switch or a request ceiling
                reason = getattr(refused, "reason", None) or type(refused).__name__
                self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1
            finally:
                self._count(1)  # run_finished
        self.stats.runs += 1
        return self.stats.events - before

    def _count(self, n: int, fault: str | None = None) -> None:
        self.stats.events += n
        if fault:
            self.stats.by_fault[fault] = self.stats.by_fault.get(fault, 0) + n

    def _normal_run(self, tenant: str, agent: str, run: Any, progress: float) -> None:
        rng = self.rng
        for _ in range(rng.randint(1, 4)):
            fault = None
            if (tenant, agent) == FLOODING:
                fault = "token_flood"
            elif tenant == BURSTING_TENANT and 0.4 <= progress <= 0.6:
                fault = "spend_burst"
            self._llm_call(fault)
            if rng.random() < 0.7:
                self._action(rng.choice(TOOLS))
        if rng.random() < 0.1:
            self.client.eval_result(
                "support-gold-v3",
                f"case-{rng.randint(1, 200)}",
                "faithfulness",
                round(rng.betavariate(8, 2), 4),
                rng.random() < 0.85,
                "llm-judge",
            )
            self._count(1)
        if rng.random() < 0.03:
            self.client.guardrail_triggered(
                "prompt_injection", "block", round(rng.uniform(0.7, 1.0), 3)
            )
            self._count(1)

    def _llm_call(self, fault: str | None) -> None:
        rng = self.rng
        provider, model, served = rng.choice(MODELS)
        if fault == "spend_burst":
            provider, model, served = "anthropic", "claude-opus-4-1", "claude-opus-4-1-20250805"
        prompt = (
            rng.randint(800, 12_000) if fault != "spend_burst" else rng.randint(80_000, 150_000)
        )
        # The flooding agent asks for huge outputs; initech's request ceiling refuses the largest.
        max_output = rng.choice([64_000, 128_000]) if fault == "token_flood" else 4_000
        self.client.check()
        self.client.check_request(
            provider, model, input_tokens=prompt, max_output_tokens=max_output
        )
        cached = int(prompt * rng.choice([0.0, 0.5, 0.8])) if provider != "mistral" else 0
        cache_write = (
            int((prompt - cached) * 0.3) if provider == "anthropic" and rng.random() < 0.3 else 0
        )
        output = (
            rng.randint(60_000, max_output) if fault == "token_flood" else rng.randint(50, 1_500)
        )
        reasoning = int(output * 0.4) if model.startswith(("gpt-5", "gemini-2.5")) else 0
        failed = rng.random() < 0.02
        self.client.emit(
            "llm_call",
            {
                "provider": provider,
                "request_model": model,
                "response_model": served,
                "usage": {
                    "input_tokens": prompt,
                    "output_tokens": output,
                    "cached_input_tokens": cached,
                    "cache_write_tokens": cache_write,
                    "reasoning_tokens": reasoning,
                },
                "latency_ms": round(rng.lognormvariate(6.5, 0.5), 1),
                "ttft_ms": round(rng.lognormvariate(5.5, 0.4), 1),
                "finish_reason": "error"
                if failed
                else ("length" if fault == "token_flood" else "stop"),
                "status": "error" if failed else "ok",
                **({"error_type": "rate_limited"} if failed else {}),
            },
        )
        self._count(1, fault)

    def _action(
        self,
        tool: tuple[str, str],
        args: Any = None,
        broken: str | None = None,
        decision: str | None = None,
    ) -> None:
        """One action through `client.action`: the policy decides; REQUIRE_APPROVAL asks a human;
        the tool runs only when allowed — unless `broken` names the rule to break on purpose."""
        rng = self.rng
        name, side_effect = tool
        args = {"request": rng.getrandbits(64)} if args is None else args
        with self.client.action(
            name,
            f"{name}.invoke",
            args,
            resource=f"{name}/{rng.randint(1, 500)}",
            side_effect=side_effect,
        ) as act:
            run_it = self._govern(act, broken, decision)
            if run_it:
                with act.execute() as call:  # the kill switch may refuse it here
                    if rng.random() < 0.08:
                        call.fail(rng.choice(["timeout", "http_500", "permission_denied"]))
                self._count(1)
        if broken is not None:
            self.stats.injected[act.action_id] = broken

    def _govern(self, act: Any, broken: str | None, decision: str | None) -> bool:
        """Record the decision (and approval) for `act`; True when the tool should run."""
        rng = self.rng
        if broken == "no_decision":
            return True
        if broken == "executed_after_deny":
            decision = "DENY"
        elif broken == "write_without_approval":
            decision = "REQUIRE_APPROVAL"
        elif decision is None:
            decision = rng.choices(["ALLOW", "DENY", "REQUIRE_APPROVAL"], weights=[80, 8, 12])[0]
        act.decide(
            "tools-policy",
            decision,
            POLICY_HASH,
            reason=None if decision == "ALLOW" else "outside the agent's mandate",
        )
        self._count(1)
        if decision != "REQUIRE_APPROVAL":
            return decision == "ALLOW" or broken == "executed_after_deny"
        act.request_approval(f"apr-{rng.getrandbits(32):x}", rng.choice(["medium", "high"]))
        self._count(1)
        if broken == "write_without_approval":
            return True  # runs without waiting for the answer, which never comes
        outcome = rng.choices(["approved", "rejected", "expired"], weights=[75, 20, 5])[0]
        act.approval_decided(
            f"approver-{rng.randint(1, 5)}", outcome, round(rng.lognormvariate(10, 1), 1)
        )
        self._count(1)
        return outcome == "approved"

    def _rogue_action(self, tenant: str, agent: str) -> None:
        """ROGUE's first runs: one rule-breaking action each, the cases in turn."""
        done = len(self.stats.injected)
        if (tenant, agent) != ROGUE or done >= len(ROGUE_CASES) * INJECTIONS_PER_FLAG:
            return
        broken = ROGUE_CASES[done % len(ROGUE_CASES)]
        self._action(("refund_payment", "write"), broken=broken)
        self.stats.by_fault[broken] = self.stats.by_fault.get(broken, 0) + 1

    def _loop(self, run: Any) -> None:
        """The stuck agent: the same search with the same arguments, over and over."""
        same = {"q": "latest news on the same thing"}  # the same args_hash every time
        for _ in range(25):
            self._action(("web_search", "read"), args=same, decision="ALLOW")
            self.stats.by_fault["tool_loop"] = self.stats.by_fault.get("tool_loop", 0) + 1
        run.stop_reason = "max_steps"
