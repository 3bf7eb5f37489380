"""The price-override file: aliases (Azure deployments), per-tenant negotiated rates, its digest
in the pricing version, the archive verify reloads it from, and loud failures on typos."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing import (
    PriceSource,
    PricingError,
    current_pricing,
    pricing_for_version,
)
from agentaudit_schemas.pricing.overrides import digest_of, parse_overrides
from agentaudit_schemas.pricing.source import archive_dir

AT = datetime(2026, 11, 20, tzinfo=UTC)
U = Usage(input_tokens=10_000, output_tokens=1_000, cached_input_tokens=4_000)
FILE = """\
version: acme-2026-12
overrides:
  - provider: azure.ai.openai
    model: prod-gpt5-eu
    price_as: {provider: openai, model: gpt-5}
  - tenant: acme
    provider: openai
    model: gpt-5-mini
    rates: {input: 0.20, cached_input: 0.02, output: 1.60}
    note: contract 2026-07
"""


@pytest.fixture()
def prices() -> PriceSource:
    return PriceSource(parse_overrides(FILE))


def test_a_deployment_name_is_priced_as_its_model(prices: PriceSource) -> None:
    as_model = prices.total("openai", "gpt-5", U, at=AT)
    assert prices.total("azure.ai.openai", "prod-gpt5-eu", U, at=AT) == as_model
    assert as_model == (6_000 * D("1.25") + 4_000 * D("0.125") + 1_000 * D(10)) / 10**6
    assert PriceSource().total("azure.ai.openai", "prod-gpt5-eu", U, at=AT) is None  # without


def test_a_tenants_negotiated_rates_apply_to_that_tenant_only(prices: PriceSource) -> None:
    rate = (6_000 * D("0.20") + 4_000 * D("0.02") + 1_000 * D("1.60")) / 10**6
    assert prices.total("openai", "gpt-5-mini-2025-08-07", U, at=AT, tenant="acme") == rate
    list_price = (6_000 * D("0.25") + 4_000 * D("0.025") + 1_000 * D(2)) / 10**6
    assert prices.total("openai", "gpt-5-mini", U, at=AT, tenant="globex") == list_price
    assert prices.total("openai", "gpt-5-mini", U, at=AT) == list_price


def test_the_files_digest_is_part_of_the_version_and_reloads_from_the_archive(
    tmp_path: Path,
) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(FILE)
    current = current_pricing(path, tmp_path)
    assert current.version.endswith(f"+ovr-{digest_of(FILE)}")
    again = pricing_for_version(current.version, tmp_path)
    assert again.total("openai", "gpt-5-mini", U, at=AT, tenant="acme") == current.total(
        "openai", "gpt-5-mini", U, at=AT, tenant="acme"
    )
    changed = FILE.replace("0.20", "0.21")
    assert digest_of(changed) != digest_of(FILE)
    with pytest.raises(LookupError, match="is not in"):  # another data dir: file not kept
        pricing_for_version(current.version, tmp_path / "elsewhere")
    altered = tmp_path / "altered"
    archive_dir(altered).mkdir(parents=True)
    (archive_dir(altered) / f"{digest_of(FILE)}.yaml").write_text(changed)
    with pytest.raises(LookupError, match="altered"):
        pricing_for_version(current.version, altered)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("overrides:\n  - {provider: openai, model: x}\n", "exactly one of"),
        ("overrides:\n  - {provider: openai, model: x, rates: {input: 1}}\n", "missing 'output'"),
        (
            "overrides:\n  - {provider: openai, model: x, rates: {input: 1, output: 2}, "
            "tennant: a}\n",
            "takes only",
        ),
        (
            "overrides:\n  - {provider: a, model: x, price_as: {provider: openai, model: "
            "nope-9}}\n",
            "not a priced model",
        ),
    ],
)
def test_a_malformed_file_fails_at_load(text: str, message: str) -> None:
    with pytest.raises(PricingError, match=message):
        PriceSource(parse_overrides(text))
