"""The SDK without its extras: no cramjam (Kafka codecs) and no genai-prices (price data).

An explicitly configured codec whose package is missing fails at once, naming the extra;
`"auto"` compresses with gzip. A request cost ceiling without the price data refuses the calls
it covers (`CostCeilingUnenforceable`), never lets them through unchecked; token ceilings work
as usual. The installed-wheel side of this is tests/sdk_dist/test_sdk_wheel.py.
"""

from __future__ import annotations

import importlib.util
import pickle
from importlib.metadata import PackageNotFoundError
from typing import Any

import pytest

from agentaudit_schemas.pricing import PricesUnavailable, genai
from agentaudit_sdk import CostCeilingUnenforceable, KillSwitch, RequestBudgetExceeded
from agentaudit_sdk import killswitch as killswitch_module
from agentaudit_sdk.kafka import CodecUnavailable, KafkaTransport, resolve_compression

from .test_control import request_budget


@pytest.fixture
def no_cramjam(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "cramjam" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.usefixtures("no_cramjam")
@pytest.mark.parametrize("codec", ["lz4", "zstd", "snappy"])
def test_a_cramjam_codec_without_cramjam_names_its_extra(codec: str) -> None:
    with pytest.raises(CodecUnavailable, match=rf"pip install 'agentaudit-sdk\[{codec}\]'"):
        KafkaTransport("127.0.0.1:9092", "t", compression=codec)


@pytest.mark.usefixtures("no_cramjam")
def test_auto_compresses_with_gzip_without_cramjam() -> None:
    assert resolve_compression("auto") == "gzip"
    assert resolve_compression("gzip") == "gzip" and resolve_compression(None) is None


def test_auto_is_lz4_with_cramjam() -> None:
    assert importlib.util.find_spec("cramjam") is not None  # the server's environment
    assert resolve_compression("auto") == "lz4" == resolve_compression("lz4")


def test_without_genai_prices_the_pricing_says_which_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(genai, "_dist_version", missing)
    genai.genai_prices_version.cache_clear()
    try:
        with pytest.raises(PricesUnavailable, match=r"agentaudit-sdk\[prices\]"):
            genai.GenaiSource()
    finally:
        genai.genai_prices_version.cache_clear()


@pytest.fixture
def priceless(monkeypatch: pytest.MonkeyPatch) -> KillSwitch:
    """A kill switch in an SDK installed without the `prices` extra."""

    def current_pricing() -> Any:
        raise PricesUnavailable()

    monkeypatch.setattr(killswitch_module, "current_pricing", current_pricing)
    return KillSwitch()


def check(switch: KillSwitch, input_tokens: int = 1_000, max_output_tokens: int = 100) -> Any:
    return switch.check_request(
        "acme",
        None,
        "openai",
        "gpt-5-mini",
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
    )


def test_a_cost_ceiling_without_prices_refuses_and_names_the_extra(priceless: KillSwitch) -> None:
    priceless.apply_budget(request_budget("cap", max_cost_usd=5.0))
    with pytest.raises(CostCeilingUnenforceable) as refused:
        check(priceless)  # far below $5: refused because it cannot be priced
    exc = refused.value
    assert isinstance(exc, RequestBudgetExceeded)  # handled wherever a refusal is
    assert (exc.budget, exc.limit_kind, exc.estimate) == ("cap", "max_cost_usd", None)
    assert "pip install 'agentaudit-sdk[prices]'" in str(exc)
    assert exc.code == "cost_ceiling_unenforceable"
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is CostCeilingUnenforceable and str(again) == str(exc)
    assert priceless.stats.request_refused == 1 and priceless.stats.unpriced == 0


def test_token_ceilings_hold_without_prices(priceless: KillSwitch) -> None:
    priceless.apply_budget(request_budget("tokens", max_tokens=500))
    estimate = check(priceless, input_tokens=100, max_output_tokens=100)
    assert estimate.tokens == 200 and estimate.cost_usd is None
    with pytest.raises(RequestBudgetExceeded) as refused:
        check(priceless, input_tokens=400, max_output_tokens=200)
    assert type(refused.value) is RequestBudgetExceeded
    assert refused.value.limit_kind == "max_tokens"
    # a token violation is reported as such even when a cost ceiling applies too
    priceless.apply_budget(request_budget("z-cap", max_cost_usd=5.0))
    with pytest.raises(RequestBudgetExceeded) as refused:
        check(priceless, input_tokens=400, max_output_tokens=200)
    assert type(refused.value) is RequestBudgetExceeded
