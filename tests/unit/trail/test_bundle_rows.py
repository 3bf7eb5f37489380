"""A bundle row whose cost is no decimal or whose time is past any float is reported as an
unreadable bundle (exit 2), not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentaudit.trail import bundle
from tests.unit.trail.chains import PART, TENANT
from tests.unit.trail.test_bundle_keys import _bundle


@pytest.mark.parametrize(
    ("field", "value"), [("cost_usd", "abc"), ("ingested_at_us", 10**400)], ids=["cost", "time"]
)
def test_an_unreadable_row_is_a_bundle_error(tmp_path: Path, field: str, value: object) -> None:
    root = tmp_path / "bundle"
    _bundle(root)
    rows = root / bundle.chain_dir(TENANT, PART) / "rows.jsonl"
    lines = rows.read_text().splitlines()
    row = json.loads(lines[1])
    row[field] = value
    rows.write_text("\n".join([lines[0], json.dumps(row), *lines[2:]]) + "\n")
    with pytest.raises(bundle.BundleError, match=r"rows\.jsonl:2: not a row"):
        bundle.verify_bundle(root)
    assert bundle.main([str(root)]) == 2
