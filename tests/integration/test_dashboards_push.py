"""`agentaudit dashboards push` against a local HTTP server implementing the Grafana HTTP API
endpoints grafana-client calls (folders, datasources by uid, dashboards by uid and
/api/dashboards/db, provisioning alert rules), recording every request. No real Grafana runs
here: this proves what push sends and that a second push writes nothing, not that a real
Grafana accepts it (README "On-call")."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from agentaudit.cli.dashboards import app
from dashboards import DASHBOARDS, alerts
from stream_jobs.alert_kinds import ALERT_KINDS, PIPELINE_ALERTS

pytestmark = pytest.mark.integration
TOKEN = "glsa_test"


class FakeGrafana(ThreadingHTTPServer):
    """Objects by uid, and every (method, path) it was asked."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str]] = []
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, dict[str, Any]] = {}

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]


class _Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else {}

    def _handle(self) -> None:
        s, method, path = self.server, self.command, self.path.split("?")[0]
        s.requests.append((method, path))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply(401, {"message": "Unauthorized"})
        parts = path.strip("/").split("/")
        store, key, body = self._route(parts)
        if store is None:
            return self._reply(404, {"message": f"no route {method} {path}"})
        if method == "GET":
            found = store.get(key or "")
            return self._reply(200, found) if found else self._reply(404, {"message": "not found"})
        body = self._body()
        if parts[:2] == ["dashboards", "db"]:
            dash = dict(body["dashboard"])
            old = s.dashboards.get(dash["uid"])
            dash["id"] = 1 + len(s.dashboards)
            dash["version"] = 1 + (old["dashboard"]["version"] if old else 0)
            s.dashboards[dash["uid"]] = {
                "dashboard": dash,
                "meta": {"folderUid": body["folderUid"]},
            }
            return self._reply(200, {"status": "success", "uid": dash["uid"]})
        uid = key or body.get("uid", "")
        if method == "POST" and uid in store:
            return self._reply(409, {"message": "exists"})
        store[uid] = {**store.get(uid, {}), **body, "uid": uid, "id": 7}
        return self._reply(200 if method == "PUT" else 201, store[uid])

    def _route(self, parts: list[str]) -> tuple[dict[str, Any] | None, str | None, None]:
        s = self.server
        if parts[:2] == ["api", "folders"]:
            return s.folders, (parts[2] if len(parts) > 2 else None), None
        if parts[:3] == ["api", "datasources", "uid"]:
            return s.datasources, parts[3], None
        if parts == ["api", "datasources"]:
            return s.datasources, None, None
        if parts[:3] == ["api", "dashboards", "uid"]:
            return s.dashboards, parts[3], None
        if parts == ["api", "dashboards", "db"]:
            del parts[0]
            return s.dashboards, None, None
        if parts[:4] == ["api", "v1", "provisioning", "alert-rules"]:
            return s.rules, (parts[4] if len(parts) > 4 else None), None
        return None, None, None

    do_GET = do_POST = do_PUT = _handle


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    server = FakeGrafana()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


def _push(grafana: FakeGrafana, *extra: str) -> Any:
    url = f"http://127.0.0.1:{grafana.server_address[1]}"
    return CliRunner().invoke(app, ["push", "--url", url, "--token", TOKEN, *extra])


def test_push_creates_everything_then_a_second_push_writes_nothing(grafana: FakeGrafana) -> None:
    first = _push(grafana, "--prometheus-url", "http://prom:9090", "--clickhouse-host", "ch")
    assert first.exit_code == 0, first.output
    n_rules = len(ALERT_KINDS) + len(PIPELINE_ALERTS)
    assert set(grafana.folders) == {alerts.FOLDER_UID}
    assert set(grafana.datasources) == {alerts.CLICKHOUSE_UID, alerts.PROMETHEUS_UID}
    assert grafana.datasources[alerts.CLICKHOUSE_UID]["jsonData"]["host"] == "ch"
    assert len(grafana.dashboards) == len(DASHBOARDS) and len(grafana.rules) == n_rules
    assert all(r["folderUID"] == alerts.FOLDER_UID for r in grafana.rules.values())
    posts = [p for m, p in grafana.writes() if m == "POST"]
    assert len(posts) == 1 + 2 + len(DASHBOARDS) + n_rules

    grafana.requests.clear()
    second = _push(grafana, "--prometheus-url", "http://prom:9090", "--clickhouse-host", "ch")
    assert second.exit_code == 0, second.output
    assert grafana.writes() == [], "a second push must change nothing"
    assert f"0 changed, {1 + 2 + len(DASHBOARDS) + n_rules} unchanged" in second.output

    # A changed dashboard and a changed rule are updated, nothing is created.
    some = next(iter(grafana.dashboards.values()))["dashboard"]
    some["title"] = "edited by hand"
    grafana.rules[f"agentaudit-{next(iter(ALERT_KINDS))}"]["for"] = "9m"
    grafana.requests.clear()
    assert _push(grafana).exit_code == 0
    assert sorted(grafana.writes()) == sorted(
        [
            ("POST", "/api/dashboards/db"),  # /db is Grafana's create-or-overwrite
            ("PUT", f"/api/v1/provisioning/alert-rules/agentaudit-{next(iter(ALERT_KINDS))}"),
        ]
    )


def test_push_reports_grafana_refusing_as_one_line(grafana: FakeGrafana) -> None:
    url = f"http://127.0.0.1:{grafana.server_address[1]}"
    result = CliRunner().invoke(app, ["push", "--url", url, "--token", "wrong"])
    assert result.exit_code == 1 and "401 Unauthorized" in str(result.exception)
    assert grafana.writes() == []
