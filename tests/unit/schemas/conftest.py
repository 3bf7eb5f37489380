"""Shared fixtures for the contract tests."""

from __future__ import annotations

import pytest

from agentaudit_schemas.pricing import PricingTable, load_pricing


@pytest.fixture(scope="module")
def table() -> PricingTable:
    """The latest shipped pricing table (the process-wide cached instance)."""
    return load_pricing()
