"""Render the dashboards, alert rules and provisioning files to the committed file tree.

`render()` returns every file as text keyed by its path under `dashboards/`; `write` puts them
on disk, `differences` says which committed files differ (`agentaudit dashboards build
--check`). Output is deterministic (sorted keys, fixed ids): re-rendering reproduces the
committed bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import DASHBOARDS, alerts
from dashboards.query import PLUGIN_ID

ROOT = Path(__file__).resolve().parent
JSON_DIR = "json"
RULES_FILE = "provisioning/alerting/agentaudit-rules.yaml"
RULES_API_FILE = "alerting/agentaudit-rules.api.json"
DATASOURCES_FILE = "provisioning/datasources/agentaudit.yaml"
DASHBOARDS_PROVIDER_FILE = "provisioning/dashboards/agentaudit.yaml"


def to_json(value: Any) -> str:
    """Stable JSON text of a foundation-sdk object (or plain data)."""
    return json.dumps(value, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)


def datasources() -> dict[str, Any]:
    """Datasource provisioning: the ClickHouse plugin and Prometheus, with the uids the alert
    rules name; addresses come from the environment Grafana runs in (`$VAR` expansion)."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "agentaudit ClickHouse",
                "uid": alerts.CLICKHOUSE_UID,
                "type": PLUGIN_ID,
                "access": "proxy",
                "orgId": 1,
                "jsonData": {
                    "host": "${AGENTAUDIT_CLICKHOUSE_HOST}",
                    "port": "${AGENTAUDIT_CLICKHOUSE_PORT}",
                    "protocol": "http",
                    "username": "${AGENTAUDIT_CLICKHOUSE_USER}",
                    "defaultDatabase": "agentaudit",
                },
                "secureJsonData": {"password": "${AGENTAUDIT_CLICKHOUSE_PASSWORD}"},
            },
            {
                "name": "agentaudit Prometheus",
                "uid": alerts.PROMETHEUS_UID,
                "type": "prometheus",
                "access": "proxy",
                "orgId": 1,
                "url": "${AGENTAUDIT_PROMETHEUS_URL}",
            },
        ],
    }


def dashboard_provider() -> dict[str, Any]:
    """Dashboard provisioning: load dashboards/json/ into the agentaudit folder."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "agentaudit",
                "orgId": 1,
                "folder": alerts.FOLDER_TITLE,
                "folderUid": alerts.FOLDER_UID,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {
                    "path": "${AGENTAUDIT_DASHBOARDS_DIR}",
                    "foldersFromFilesStructure": False,
                },
            }
        ],
    }


def render(runbook_base_url: str = "") -> dict[str, str]:
    """Every generated file: path under dashboards/ → text."""
    files = {f"{JSON_DIR}/{stem}.json": to_json(build()) for stem, build in DASHBOARDS.items()}
    files[RULES_FILE] = _yaml(alerts.provisioning_file(runbook_base_url=runbook_base_url))
    files[RULES_API_FILE] = to_json(alerts.api_models(runbook_base_url=runbook_base_url))
    files[DATASOURCES_FILE] = _yaml(datasources())
    files[DASHBOARDS_PROVIDER_FILE] = _yaml(dashboard_provider())
    return files


def write(out: Path, files: dict[str, str]) -> list[Path]:
    """Write `files` under `out`; returns the paths written."""
    written = []
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def differences(out: Path, files: dict[str, str]) -> list[str]:
    """Paths under `out` whose content is not `files`' (missing, changed), and stray JSON
    dashboards that no function renders."""
    changed = [
        rel
        for rel, text in files.items()
        if not (out / rel).is_file() or (out / rel).read_text(encoding="utf-8") != text
    ]
    stray = [
        f"{JSON_DIR}/{p.name}"
        for p in sorted((out / JSON_DIR).glob("*.json"))
        if f"{JSON_DIR}/{p.name}" not in files
    ]
    return changed + stray
