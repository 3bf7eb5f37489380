"""Upload the folder, datasources (optional), dashboards and alert rules to a Grafana.

Idempotent: every object is read first (by uid) and written only when missing (create) or
different from what would be written (update); a second push of the same files writes
nothing. "Different" compares only the fields this module sends (Grafana adds ids, versions
and timestamps of its own). Uses grafana-client's `GrafanaApi`; tested against a local HTTP
server that implements the endpoints it calls (tests/integration/test_dashboards_push.py),
never against a real Grafana (none can run here).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from dashboards import DASHBOARDS, alerts
from dashboards.render import datasources, to_json

Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class Change:
    """What a push did to one object."""

    kind: str  # folder, datasource, dashboard, alert-rule
    uid: str
    action: Action


def _missing(exc: GrafanaClientError) -> bool:
    return exc.status_code == 404


def _get(call: Any, *args: Any) -> dict[str, Any] | None:
    """The object, or None when Grafana answers 404; other errors reach the caller."""
    try:
        found: dict[str, Any] = call(*args)
        return found
    except GrafanaClientError as exc:
        if _missing(exc):
            return None
        raise


def _same(current: Any, wanted: Any) -> bool:
    """`wanted` is contained in `current` (dicts compared on wanted's keys, recursively)."""
    if isinstance(wanted, dict):
        return isinstance(current, dict) and all(
            k in current and _same(current[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(current, list)
            and len(current) == len(wanted)
            and all(_same(c, w) for c, w in zip(current, wanted, strict=True))
        )
    return bool(current == wanted)


def _upsert(
    kind: str,
    uid: str,
    current: Any,
    same: Callable[[Any], bool],
    create: Callable[[], object],
    update: Callable[[], object],
) -> Change:
    """Create `kind` `uid` when Grafana lacks it (`current` None), update it when `same(current)`
    says it differs from what is wanted, else leave it."""
    if current is None:
        create()
        return Change(kind, uid, "created")
    if not same(current):
        update()
        return Change(kind, uid, "updated")
    return Change(kind, uid, "unchanged")


def push_folder(api: GrafanaApi, uid: str, title: str) -> Change:
    """The folder dashboards and rules live in."""
    return _upsert(
        "folder",
        uid,
        _get(api.folder.get_folder, uid),
        lambda current: current.get("title") == title,
        lambda: api.folder.create_folder(title, uid=uid),
        lambda: api.folder.update_folder(uid, title=title, overwrite=True),
    )


def push_datasource(api: GrafanaApi, wanted: dict[str, Any]) -> Change:
    """One datasource, by uid (secure fields are sent on create and update, never compared)."""
    uid = wanted["uid"]
    visible = {k: v for k, v in wanted.items() if k != "secureJsonData"}
    return _upsert(
        "datasource",
        uid,
        _get(api.datasource.get_datasource_by_uid, uid),
        lambda current: _same(current, visible),
        lambda: api.datasource.create_datasource(wanted),
        lambda: api.datasource.update_datasource_by_uid(uid, wanted),
    )


def push_dashboard(api: GrafanaApi, model: dict[str, Any], folder_uid: str) -> Change:
    """One dashboard (`POST /api/dashboards/db` with overwrite) when missing or changed."""
    uid = model["uid"]
    current = _get(api.dashboard.get_dashboard, uid)
    if current is not None and (
        _same(current.get("dashboard"), model)
        and current.get("meta", {}).get("folderUid") == folder_uid
    ):
        return Change("dashboard", uid, "unchanged")
    api.dashboard.update_dashboard({"dashboard": model, "folderUid": folder_uid, "overwrite": True})
    return Change("dashboard", uid, "created" if current is None else "updated")


def push_rule(api: GrafanaApi, wanted: dict[str, Any]) -> Change:
    """One alert rule through the provisioning API, by uid."""
    uid = wanted["uid"]
    return _upsert(
        "alert-rule",
        uid,
        _get(api.alertingprovisioning.get_alertrule, uid),
        lambda current: _same(current, wanted),
        lambda: api.alertingprovisioning.create_alertrule(wanted),
        lambda: api.alertingprovisioning.update_alertrule(uid, wanted),
    )


def push(
    api: GrafanaApi,
    *,
    folder_uid: str = alerts.FOLDER_UID,
    folder_title: str = alerts.FOLDER_TITLE,
    datasource_overrides: dict[str, dict[str, Any]] | None = None,
    runbook_base_url: str = "",
) -> list[Change]:
    """Folder, then datasources (only those in `datasource_overrides`: uid → fields such as
    `jsonData`/`url` that replace the provisioning file's `$VAR` placeholders), dashboards
    and alert rules."""
    changes = [push_folder(api, folder_uid, folder_title)]
    for ds in _datasources(datasource_overrides or {}):
        changes.append(push_datasource(api, ds))
    for build in DASHBOARDS.values():
        model = json.loads(to_json(build()))
        changes.append(push_dashboard(api, model, folder_uid))
    for rule in alerts.api_models(folder_uid=folder_uid, runbook_base_url=runbook_base_url):
        changes.append(push_rule(api, rule))
    return changes


def _datasources(overrides: dict[str, dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for ds in datasources()["datasources"]:
        if ds["uid"] in overrides:
            merged = {**ds, **overrides[ds["uid"]]}
            if "jsonData" in overrides[ds["uid"]]:
                merged["jsonData"] = {**ds.get("jsonData", {}), **overrides[ds["uid"]]["jsonData"]}
            yield merged
