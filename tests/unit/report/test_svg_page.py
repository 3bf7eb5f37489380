"""The report's chart and page building, pure: ticks and scales, escaping of user text,
empty data said in words, and the same data giving the same bytes."""

from __future__ import annotations

import itertools
import math
import re
from datetime import UTC, datetime, timedelta

import pytest

from agentaudit.report import svg
from agentaudit.report.burn import Burn
from agentaudit.report.data import Range, ReportData
from agentaudit.report.page import render

T0 = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
EVIL = '<script>alert("x")</script>&"\''


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(0, 12), (0, 51.2), (0, 1), (0, 0.003), (0, 100), (0, 7), (3, 3), (0, 1e7), (-5, 5)],
)
def test_ticks_are_round_evenly_spaced_and_cover_the_range(lo: float, hi: float) -> None:
    ticks = svg.nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi, ticks  # the data never leaves the axis
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1 and 2 <= len(ticks) <= 8, ticks
    step = steps.pop()
    assert f"{step / 10 ** math.floor(math.log10(step)):g}" in {"1", "2", "2.5", "5"}, ticks


def test_scale_maps_domain_ends_to_range_ends() -> None:
    y = svg.Scale(0, 40, 240, 14)
    assert (y(0), y(40), y(20)) == (240, 14, 127)
    assert svg.Scale(5, 5, 10, 20)(5) == 10  # a flat domain does not divide by zero


def test_time_ticks_are_round_utc_instants_within_the_range() -> None:
    start, end = T0 + timedelta(minutes=7), T0 + timedelta(hours=4, minutes=20)
    ticks = svg.time_ticks(start, end)
    assert 2 <= len(ticks) <= 8 and all(start <= t <= end for t in ticks)
    assert all(t.minute == 0 and t.second == 0 for t in ticks)  # 4 h: hourly ticks
    assert (
        svg.time_label(T0, end - start) == "12-07 00:00"
        and svg.time_label(ticks[1], end - start) == "02:00"
    )


def test_every_text_is_escaped_in_charts_and_tables() -> None:
    page = render(_data(name=EVIL))
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;&#x27;" in page
    for chart in (
        svg.hbars([(EVIL, 1.0, EVIL)]),
        svg.legend([EVIL], ["#000"]),
        svg.lanes(T0, T0 + timedelta(hours=1), [svg.Point(T0, EVIL, "k", EVIL)], {EVIL: "#000"}),
        svg.no_data(EVIL),
    ):
        assert "<script" not in chart and "&lt;script&gt;" in chart


def test_empty_data_says_no_data_instead_of_drawing_an_empty_chart() -> None:
    end = T0 + timedelta(hours=1)
    for chart in (
        svg.hbars([]),
        svg.lanes(T0, end, [], {}),
        svg.stacked_time_bars(T0, end, timedelta(minutes=5), {}, []),
        svg.lanes(T0, end, [svg.Point(end + timedelta(1), "a", "k", "")], {}),
    ):
        assert chart.startswith('<p class="nodata">No data') and "<svg" not in chart
    page = render(
        ReportData(
            range=Range(T0, end),
            store="s",
            generated_at=end,
            burns=[],
            totals={"events": 0, "spend_usd": 0.0, "tenants": 0, "llm_calls": 0, "dead_letters": 0},
        )
    )
    sections = re.findall(r'<section id="([a-z-]+)".*?</section>', page, re.DOTALL)
    assert len(sections) == 7
    assert page.count('class="nodata"') == 7 and 'class="mark"' not in page


def test_marks_are_placed_on_the_scale() -> None:
    chart = svg.stacked_time_bars(
        T0,
        T0 + timedelta(hours=1),
        timedelta(minutes=30),
        {T0: {"a": 1.0, "b": 3.0}, T0 + timedelta(minutes=30): {"a": 2.0}},
        ["a", "b"],
        "$",
    )
    rects = re.findall(
        r'<rect class="mark" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', chart
    )
    assert len(rects) == 3
    # y axis 0..4 over pixels 240..14: $1 is 56.5 px high, the stack of $4 reaches the top
    (x0, _, _, h_a), (_, y_b, _, h_b), (x1, _, _, _) = [tuple(map(float, r)) for r in rects]
    assert (h_a, y_b, x0) == (56.5, 14.0, 64.0) and abs(h_a + h_b - 226) < 0.2
    assert x1 == 64 + (880 - 12 - 64) / 2
    assert ">$4<" in chart and ">$0<" in chart and "time (UTC)" in chart


def test_same_data_renders_the_same_bytes() -> None:
    assert render(_data()) == render(_data())


def _data(name: str = "acme") -> ReportData:
    end = T0 + timedelta(hours=4)
    d = ReportData(
        range=Range(T0, end),
        store="/tmp/store",
        generated_at=end,
        totals={"events": 10, "spend_usd": 3.5, "tenants": 1, "llm_calls": 4, "dead_letters": 1},
    )
    d.series = [name]
    d.spend_buckets = {T0 + timedelta(hours=1): {name: 3.5}}
    d.models = [(name, 3.5, 4)]
    d.burns = [Burn(name, f"tenant {name}", "day:2026-12-07", 3.5, 2.0, True, (0.5, 1.0))]
    at = T0 + timedelta(hours=2)
    d.alerts = [
        {
            "alert_id": name,
            "kind": name,
            "severity": "critical",
            "tenant_id": name,
            "scope_key": name,
            "at": at,
            "fired_at": at,
            "message": name,
            "runbook": name,
        }
    ]
    d.breakers = [
        {
            "at": at,
            "tenant_id": name,
            "agent_id": name,
            "tool": "",
            "from_state": "closed",
            "to_state": "open",
            "signal": name,
            "observed": 9.0,
            "threshold": 8.0,
        }
    ]
    d.drift = [
        {
            "tenant_id": name,
            "agent_id": name,
            "subject": f"behaviour:{name}/x",
            "agent_version": name,
            "model": "",
            "test": "ks",
            "statistic": 0.4,
            "p_value": 1e-6,
            "reference_n": 9,
            "current_n": 9,
            "drifted": True,
            "window_start": at,
            "window_end": at,
        }
    ]
    d.dead_letters = [(name, 1, name)]
    d.blocks = [
        {
            "scope_key": name,
            "action": "block",
            "reason": name,
            "block_until": None,
            "last_issued": at,
        }
    ]
    return d
