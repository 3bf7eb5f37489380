"""`ControlState` (the SDK's kill-switch state) and the pure per-request ceiling."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from agentaudit_schemas.budgets import Budget, BudgetScope, WindowKind
from agentaudit_schemas.pricing import load_pricing
from agentaudit_schemas.records import (
    ControlAction,
    ControlMessage,
    ControlReason,
    Scope,
    record_id,
)
from agentaudit_sdk.control import ControlState, InvalidRecord
from agentaudit_sdk.request_budget import estimate_request

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def control(
    tenant: str = "acme",
    *,
    action: ControlAction = ControlAction.BLOCK,
    reason: ControlReason = ControlReason.BUDGET_EXHAUSTED,
    until: datetime | None = None,
    issued_at: datetime = NOW,
    **scope: Any,
) -> ControlMessage:
    s = Scope(tenant_id=tenant, **scope)
    return ControlMessage(
        control_id=record_id("test", s.key, action, issued_at),
        scope=s,
        action=action,
        reason=reason,
        message=f"{reason.value} on {s.key}",
        runbook="runbooks/BudgetExhausted.md",
        issued_at=issued_at,
        issued_by="test",
        until=until,
    )


def unblock(tenant: str = "acme", **scope: Any) -> ControlMessage:
    return control(tenant, action=ControlAction.UNBLOCK, reason=ControlReason.WINDOW_RESET, **scope)


def request_budget(name: str = "per-call", tenant: str = "acme", **limits: Any) -> Budget:
    return Budget(name=name, scope=BudgetScope.REQUEST, tenant_id=tenant, **limits)


def test_empty_state_blocks_nothing() -> None:
    state = ControlState()
    assert not state.any_blocks
    assert state.blocked("acme", "u", "bot", "tool", NOW) is None


def test_latest_message_per_key_wins() -> None:
    state = ControlState()
    state.apply(control())
    assert state.blocked("acme", None, None, None, NOW) is not None
    state.apply(unblock())
    assert state.blocked("acme", None, None, None, NOW) is None
    assert state.get("tenant=acme") is not None  # the unblock is the scope's state now
    state.apply(control(reason=ControlReason.MANUAL))
    hit = state.blocked("acme", None, None, None, NOW)
    assert hit is not None and hit.reason is ControlReason.MANUAL


def test_tombstone_removes_the_scope_state() -> None:
    state = ControlState()
    state.apply_control_record(b"tenant=acme", control().model_dump_json().encode())
    assert state.blocked("acme", None, None, None, NOW) is not None
    state.apply_control_record(b"tenant=acme", None)
    assert state.blocked("acme", None, None, None, NOW) is None
    assert state.get("tenant=acme") is None and not state.any_blocks
    state.apply_control_record(b"tenant=other", b"")  # tombstone for an unknown key: no-op
    assert not state.any_blocks


def test_record_key_is_the_state_key() -> None:
    state = ControlState()
    state.apply_control_record(b"k1", control().model_dump_json().encode())
    state.apply_control_record(b"tenant=acme", None)  # another key: k1 still blocks
    assert state.blocked("acme", None, None, None, NOW) is not None
    state.apply_control_record(b"k1", None)
    assert state.blocked("acme", None, None, None, NOW) is None


def test_block_with_until_in_the_past_is_inactive() -> None:
    state = ControlState()
    state.apply(control(until=NOW))
    assert state.blocked("acme", None, None, None, NOW) is None  # until is exclusive
    assert state.blocked("acme", None, None, None, NOW - timedelta(microseconds=1)) is not None
    assert state.active_blocks(NOW) == []


def test_naive_until_is_refused_by_the_contract() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        control(until=datetime(2026, 1, 1, 13, 0))


@pytest.mark.parametrize(
    ("scope", "work", "blocked"),
    [
        ({"tenant": "*"}, ("acme", None, "bot", None), True),
        ({"tenant": "*"}, ("globex", "u1", "x", "t"), True),
        ({"tenant": "acme"}, ("acme", None, "bot", "search"), True),
        ({"tenant": "acme"}, ("globex", None, "bot", None), False),
        ({"tenant": "acme", "agent_id": "bot"}, ("acme", None, "bot", None), True),
        ({"tenant": "acme", "agent_id": "bot"}, ("acme", None, "other", None), False),
        (
            {"tenant": "acme", "agent_id": "bot", "tool": "search"},
            ("acme", None, "bot", "search"),
            True,
        ),
        (
            {"tenant": "acme", "agent_id": "bot", "tool": "search"},
            ("acme", None, "bot", None),
            False,
        ),
        (
            {"tenant": "acme", "agent_id": "bot", "tool": "search"},
            ("acme", None, "bot", "crm"),
            False,
        ),
        ({"tenant": "acme", "user_id": "u1"}, ("acme", "u1", "bot", None), True),
        ({"tenant": "acme", "user_id": "u1"}, ("acme", "u2", "bot", None), False),
        ({"tenant": "acme", "user_id": "u1"}, ("acme", None, "bot", None), False),
        ({"tenant": "*", "tool": "search"}, ("acme", None, "bot", "search"), True),
        ({"tenant": "*"}, (None, None, "bot", None), True),  # no tenant bound: only global covers
        ({"tenant": "acme"}, (None, None, "bot", None), False),
    ],
)
def test_scope_matching(scope: dict[str, Any], work: tuple[Any, ...], blocked: bool) -> None:
    state = ControlState()
    state.apply(control(scope.pop("tenant"), **scope))
    tenant, user, agent, tool = work
    assert (state.blocked(tenant, user, agent, tool, NOW) is not None) is blocked


def test_the_block_that_lifts_last_is_reported() -> None:
    state = ControlState()
    state.apply(control(until=NOW + timedelta(hours=1)))
    state.apply(control(agent_id="bot", until=NOW + timedelta(hours=5)))
    state.apply(control("*", until=NOW + timedelta(hours=2)))
    hit = state.blocked("acme", None, "bot", None, NOW)
    assert hit is not None and hit.scope.key == "tenant=acme/agent=bot"
    state.apply(control("*", reason=ControlReason.BREAKER_OPEN))  # no until: lifts last
    hit = state.blocked("acme", None, "bot", None, NOW)
    assert hit is not None and hit.scope.key == "tenant=*"
    # once the open-ended block is gone and time passes the others, nothing is left
    state.apply(unblock("*"))
    assert state.blocked("acme", None, "bot", None, NOW + timedelta(hours=5)) is None


def test_unblocking_one_tenant_leaves_the_others() -> None:
    state = ControlState()
    for tenant in ("acme", "globex", "initech"):
        state.apply(control(tenant))
    state.apply(unblock("globex"))
    assert [m.scope.tenant_id for m in state.active_blocks(NOW)] == ["acme", "initech"]
    assert state.blocked("globex", None, None, None, NOW) is None
    assert state.may_block("acme") and not state.may_block("globex")
    state.apply(control("*", agent_id="bot"))
    assert state.may_block("globex") and state.may_block(None)


def test_invalid_records_raise_invalid_record_and_change_nothing() -> None:
    state = ControlState()
    version = state.version
    with pytest.raises(InvalidRecord):
        state.apply_control_record(b"tenant=acme", b'{"record": "control"}')
    with pytest.raises(InvalidRecord):
        state.apply_budget_record(b"x", b"not json")
    assert state.version == version and not state.any_blocks


def test_request_budgets_per_tenant_and_user() -> None:
    state = ControlState()
    state.apply_budget(request_budget("b-all", max_tokens=1000))
    state.apply_budget(request_budget("a-u1", max_tokens=500, user_id="u1"))
    state.apply_budget(request_budget("other", tenant="globex", max_tokens=10))
    state.apply_budget(
        Budget(
            name="daily",
            scope=BudgetScope.TENANT,
            tenant_id="acme",
            window=WindowKind.DAY,
            limit_usd=5.0,
        )
    )
    assert [b.name for b in state.request_budgets("acme")] == ["b-all"]
    assert [b.name for b in state.request_budgets("acme", "u1")] == ["a-u1", "b-all"]
    assert [b.name for b in state.request_budgets("globex")] == ["other"]
    assert state.request_budgets("initech") == []
    # a budget that changes scope under the same name stops applying; removal works by name
    state.apply_budget(
        Budget(
            name="b-all",
            scope=BudgetScope.TENANT,
            tenant_id="acme",
            window=WindowKind.DAY,
            limit_usd=5.0,
        )
    )
    assert [b.name for b in state.request_budgets("acme", "u1")] == ["a-u1"]
    state.apply_budget_record(b"a-u1", b"")
    assert state.request_budgets("acme", "u1") == []
    wire = request_budget("wire", max_cost_usd=0.5).model_dump_json().encode()
    state.apply_budget_record(b"wire", wire)
    assert [b.name for b in state.request_budgets("acme")] == ["wire"]


def test_wait_for_and_subscribe_see_changes_without_polling() -> None:
    state = ControlState()
    seen: list[int] = []
    unsubscribe = state.subscribe(lambda: seen.append(state.version))
    writer = threading.Thread(target=state.apply, args=(control(),))
    writer.start()
    assert state.wait_for(lambda: state.blocked("acme", None, None, None, NOW) is not None, 10)
    writer.join()
    unsubscribe()
    state.apply(unblock())
    assert seen == [1]
    assert not state.wait_for(lambda: state.any_blocks and False, 0)


def test_a_failing_subscriber_does_not_stop_updates() -> None:
    state = ControlState()
    state.subscribe(lambda: 1 / 0)
    state.apply(control())
    assert state.blocked("acme", None, None, None, NOW) is not None


# -- the per-request ceiling -----------------------------------------------------------------

PRICING = load_pricing()


def test_estimate_prices_prompt_plus_max_output_like_the_pipeline() -> None:
    from agentaudit_schemas.payloads import Usage

    est = estimate_request(
        PRICING, "openai", "gpt-5-mini", input_tokens=10_000, max_output_tokens=2_000
    )
    assert est.tokens == 12_000
    expected = PRICING.cost("openai", "gpt-5-mini", Usage(input_tokens=10_000, output_tokens=2_000))
    assert est.cost_usd == expected.usd and est.pricing_version == PRICING.version
    cached = estimate_request(
        PRICING,
        "openai",
        "gpt-5-mini",
        input_tokens=10_000,
        max_output_tokens=2_000,
        cached_input_tokens=8_000,
    )
    assert cached.cost_usd is not None and cached.cost_usd < est.cost_usd


def test_estimate_of_an_unpriced_model_has_no_cost() -> None:
    est = estimate_request(
        PRICING, "openai", "no-such-model", input_tokens=10, max_output_tokens=10
    )
    assert est.cost_usd is None and est.tokens == 20


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_tokens": -1, "max_output_tokens": 1},
        {
            "input_tokens": 10,
            "max_output_tokens": 1,
            "cached_input_tokens": 8,
            "cache_write_tokens": 3,
        },
    ],
)
def test_estimate_rejects_impossible_counts(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        estimate_request(PRICING, "openai", "gpt-5", **kwargs)


def _record(msg: ControlMessage) -> tuple[bytes, bytes]:
    return msg.scope.key.encode(), msg.model_dump_json().encode()


def test_a_user_id_that_spells_another_scope_has_its_own_key() -> None:
    """Before, user "u/agent=bot" and (user "u", agent "bot") had one key: the window reset
    of the first's budget block (an unblock) lifted an operator's block of the second."""
    state = ControlState()
    state.apply_control_record(*_record(control(user_id="u", agent_id="bot")))
    state.apply_control_record(*_record(unblock(user_id="u/agent=bot")))
    assert state.blocked("acme", "u", "bot", None, NOW) is not None
    keys = {
        Scope(tenant_id="acme", **scope).key
        for scope in (
            {"user_id": "u", "agent_id": "bot"},
            {"user_id": "u/agent=bot"},
            {"user_id": "u", "tool": "t"},
            {"user_id": "u/tool=t"},
            {"user_id": "%u/agent%3Dbot"},  # what the escaped one reads as
            {"user_id": "%"},
            {"user_id": "%25"},
        )
    }
    assert len(keys) == 7
    # every other id keeps its key (records already on the topic still match)
    assert Scope(tenant_id="acme", user_id="dXNlcjE=", agent_id="a/b").key == (
        "tenant=acme/user=dXNlcjE=/agent=a/b"
    )


def test_a_tombstone_of_a_key_never_set_lifts_nothing_even_if_it_is_not_utf8() -> None:
    """Before, keys were decoded with "replace": b"...\\xfe" and b"...\\xff" both read as
    "...\\ufffd", so another producer's tombstone of a key never set lifted a block."""
    state = ControlState()
    block = control()
    state.apply_control_record(b"tenant=acme\xff", block.model_dump_json().encode())
    state.apply_control_record(b"tenant=acme\xfe", None)
    assert state.blocked("acme", None, None, None, NOW) is not None
    state.apply_control_record(b"tenant=acme\xff", None)  # its own key's tombstone does
    assert state.blocked("acme", None, None, None, NOW) is None


def test_a_key_in_two_partitions_keeps_the_later_record_whatever_the_read_order() -> None:
    """Before, the partition read last won: a block on partition 1 read after the later
    unblock on partition 0 (another client's partitioner, or partitions added) held on."""
    block, lift = _record(control()), _record(unblock())
    for order in ([(block, (1, 1000)), (lift, (0, 2000))], [(lift, (0, 2000)), (block, (1, 1000))]):
        state = ControlState()
        for (key, value), placed in order:
            state.apply_control_record(key, value, placed)
        assert state.blocked("acme", None, None, None, NOW) is None, order
    state = ControlState()  # within one partition the offset order holds, times aside
    state.apply_control_record(*lift, (0, 2000))
    state.apply_control_record(*block, (0, 1000))
    assert state.blocked("acme", None, None, None, NOW) is not None
    state.apply_control_record(block[0], None, (1, 500))  # older tombstone elsewhere: no
    assert state.blocked("acme", None, None, None, NOW) is not None
    with pytest.raises(InvalidRecord):  # invalid: skipped, its time not taken
        state.apply_control_record(b"tenant=acme", b"junk", (1, 9000))
    state.apply_control_record(*lift, (0, 3000))
    assert state.blocked("acme", None, None, None, NOW) is None


def test_a_budget_keyed_by_another_name_is_skipped_as_the_jobs_skip_it() -> None:
    """Before, the SDK enforced it under its key, though `budgets rm NAME` tombstones NAME
    (and `budgets list` could not name it for removal) and the jobs skip it."""
    state = ControlState()
    budget = request_budget("per-call", max_tokens=1_000).model_dump_json().encode()
    with pytest.raises(InvalidRecord):
        state.apply_budget_record(b"other", budget)
    assert not state.request_budgets("acme")
    state.apply_budget_record(b"per-call", budget)
    assert [b.name for b in state.request_budgets("acme")] == ["per-call"]


def test_a_block_from_a_newer_pipeline_with_more_fields_is_still_a_block() -> None:
    """Before, a field this SDK does not know made the whole block invalid: skipped, so the
    agents not yet upgraded ran on under a newer pipeline's blocks."""
    doc = json.loads(control(agent_id="bot").model_dump_json())
    doc["priority"] = "high"
    doc["scope"]["model"] = "gpt-5"  # a narrower scope part we cannot honour: block more
    state = ControlState()
    state.apply_control_record(b"tenant=acme/agent=bot", json.dumps(doc).encode())
    held = state.blocked("acme", None, "bot", None, NOW)
    assert held is not None and held.scope == Scope(tenant_id="acme", agent_id="bot")
    doc["action"] = "throttle"  # what it cannot interpret stays invalid
    with pytest.raises(InvalidRecord):
        state.apply_control_record(b"tenant=acme/agent=bot", json.dumps(doc).encode())
    with pytest.raises(InvalidRecord):
        state.apply_control_record(b"tenant=acme/agent=bot", b'["not", "an", "object"]')
