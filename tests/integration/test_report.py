"""`agentaudit report` on a store the demo populated, opened in headless Chromium: every
chart has data, and no request leaves the file (a counting proxy stands in for the network,
and a page that does fetch proves the proxy would see it)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agentaudit.broker import free_port
from agentaudit.control_plane import publish_budgets
from agentaudit.demo.budgets import DEMO_BUDGETS
from agentaudit.report import build_report
from agentaudit.settings import Settings
from agentaudit.store import open_store

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
SECTIONS = [
    "spend-over-time",
    "spend-by-model",
    "budget-burn",
    "alert-timeline",
    "breaker-trips",
    "drift-scores",
    "dead-letters",
]


class _Recorder(socketserver.StreamRequestHandler):
    """A proxy that forwards nothing: it records each request line and answers 502."""

    def handle(self) -> None:
        line = self.rfile.readline(4096).decode("latin-1").strip()
        if line:
            self.server.seen.append(line)  # type: ignore[attr-defined]
        self.wfile.write(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", free_port()), _Recorder)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _page_requests(seen: list[str]) -> list[str]:
    """Requests other than Chromium's own background services (network time, accounts),
    which it sends whatever the page; fonts.googleapis.com would be the page's."""

    def host(line: str) -> str:
        target = line.split(" ")[1] if " " in line else line
        return target.split("://")[-1].split("/")[0].split(":")[0]

    return [
        ln
        for ln in seen
        if host(ln) == "fonts.googleapis.com"
        or not host(ln).endswith((".google.com", ".googleapis.com"))
    ]


def _chromium(
    page: Path, proxy: str, profile: Path, *what: str
) -> subprocess.CompletedProcess[str]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    # Every request, loopback included, goes to the recording proxy; nothing else resolves.
    args = [
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--proxy-server={proxy}",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--enable-logging=stderr",
        "--v=0",
        *what,
        page.as_uri(),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class _Outside(HTMLParser):
    """Attributes that would make a browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {
                "src",
                "href",
                "srcset",
                "poster",
                "action",
                "data",
                "xlink:href",
                "background",
            }:
                self.refs.append(f"{tag} {name}={value}")


def _sections(dom: str) -> dict[str, str]:
    return dict(
        re.findall(r'<section id="([a-z-]+)" class="report-chart">(.*?)</section>', dom, re.DOTALL)
    )


def test_report_of_the_demo_store_renders_offline_with_data_in_every_chart(
    demo_data_dir: Path,
    settings: Settings,
    proxy: tuple[str, list[str]],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # The budgets as on-call has them: on the budgets topic, which `report` reads.
    asyncio.run(publish_budgets(settings, DEMO_BUDGETS))
    env = {**os.environ, **settings.model_copy(update={"data_dir": demo_data_dir}).to_env()}
    out = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", "report", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(out) in done.stdout.replace("\n", "")
    html = out.read_text()

    outside = _Outside()
    outside.feed(html)
    assert outside.refs == []
    assert "url(" not in html and "@import" not in html and "<script" not in html
    assert re.findall(r"https?://[^\s\"'<]*", html) == ["http://www.w3.org/2000/svg"] * html.count(
        "<svg"
    )

    url, seen = proxy
    dom = _chromium(out, url, tmp_path / "profile", "--dump-dom")
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Refused to" in ln]
    assert console == [] and _page_requests(seen) == [], (console, seen)
    sections = _sections(dom.stdout)
    assert list(sections) == SECTIONS
    for sid, body in sections.items():
        assert "<svg" in body and 'class="mark"' in body, sid
        assert "nodata" not in body and "No data" not in body, sid
    for name in ("umbrella-daily", "acme-daily", "hooli-per-user"):
        assert name in sections["budget-burn"]
    for reason in ("invalid_json", "schema_violation", "oversized"):
        assert reason in sections["dead-letters"]
    assert (
        "research-agent" in sections["breaker-trips"] and "EvalDrift" in sections["alert-timeline"]
    )

    shot = tmp_path / "report.png"
    _chromium(out, url, tmp_path / "profile", "--window-size=1000,4200", f"--screenshot={shot}")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    assert int.from_bytes(png[16:20], "big") >= 1000  # IHDR width
    cache = getattr(request.config, "cache", None)  # None under `-p no:cacheprovider`
    if cache is not None:  # kept among the run's outputs, for a person to look at
        shutil.copyfile(shot, cache.mkdir("report") / "report.png")
    assert _page_requests(seen) == [], seen

    # The proxy is not blind: a page that does fetch is seen.
    leaky = tmp_path / "leaky.html"
    leaky.write_text('<!DOCTYPE html><img src="http://report-probe.invalid/x.png">')
    _chromium(leaky, url, tmp_path / "profile2", "--dump-dom")
    assert any("report-probe.invalid" in line for line in _page_requests(seen)), seen


def test_report_is_deterministic_and_filters_by_tenant(demo_data_dir: Path) -> None:
    with open_store(Settings(data_dir=demo_data_dir)) as store:
        last = store.query("SELECT max(occurred_at) FROM agentaudit.events").result_rows[0][0]
        now = (
            last.replace(tzinfo=UTC) + timedelta(minutes=1)
            if last.tzinfo is None
            else last + timedelta(minutes=1)
        )
        kwargs = {"now": now, "store_name": "demo", "budgets": DEMO_BUDGETS}
        first = build_report(store, **kwargs)  # type: ignore[arg-type]
        assert build_report(store, **kwargs) == first  # type: ignore[arg-type]
        umbrella = build_report(store, tenant="umbrella", **kwargs)  # type: ignore[arg-type]
        empty = build_report(
            store, since=now - timedelta(days=30), until=now - timedelta(days=29), **kwargs
        )  # type: ignore[arg-type]
    assert (
        "tenant umbrella" in umbrella and "globex" not in umbrella and "acme-daily" not in umbrella
    )
    # umbrella's backfilled history fires SpendAnomaly in every demo run (whether its live
    # burst also trips a breaker depends on timing).
    assert "umbrella-daily" in umbrella and "SpendAnomaly" in umbrella
    assert 'class="mark"' not in empty.split("budget-burn")[0]  # a month ago: nothing to draw
    assert empty.count("No data: nothing in this time range") >= 5
    assert isinstance(now, datetime)
