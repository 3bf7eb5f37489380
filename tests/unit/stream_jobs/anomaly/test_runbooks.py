"""Every anomaly and drift alert kind has a runbook with the four sections and SQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentaudit_schemas.records import Alert
from stream_jobs.anomaly import ANOMALY_KINDS
from stream_jobs.drift import DRIFT_KINDS

ROOT = Path(__file__).resolve().parents[4]
SECTIONS = ["Meaning", "Impact", "Diagnosis", "Mitigation"]


@pytest.mark.parametrize("kind", ANOMALY_KINDS + DRIFT_KINDS)
def test_runbook_exists_with_sections_and_queries(kind: str) -> None:
    path = ROOT / Alert.runbook_for(kind)
    text = path.read_text()
    assert re.findall(r"^## (.+)$", text, flags=re.MULTILINE) == SECTIONS
    diagnosis = text.split("## Diagnosis", 1)[1].split("## Mitigation", 1)[0]
    queries = re.findall(r"```sql\n(.*?)```", diagnosis, flags=re.DOTALL)
    assert queries, f"{path.name}: Diagnosis has no ```sql block"
    for sql in queries:
        assert "agentaudit." in sql, f"{path.name}: query without a qualified table"
        assert not re.search(r"<[a-z_]+>|\{[a-z_]+\}", sql), f"{path.name}: placeholder in {sql!r}"


def test_alert_kinds_are_unique_and_valid_alert_kinds() -> None:
    kinds = ANOMALY_KINDS + DRIFT_KINDS
    assert len(set(kinds)) == len(kinds) == 11
    for kind in kinds:
        assert re.match(r"^[A-Z][A-Za-z0-9]{2,63}$", kind)
