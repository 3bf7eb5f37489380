"""The report's HTML: one self-contained page (inline CSS, inline SVG, no script, no link to
anything outside the file). A Content-Security-Policy forbids the browser to fetch anything,
so a mistake that adds an outside reference shows up as a blocked request, never a leak."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from agentaudit.report import svg
from agentaudit.report.data import ReportData
from agentaudit.report.svg import esc, short, stamp

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
MAX_TABLE_ROWS = 40

CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#e3e6ec;--bg:#f6f7f9;--card:#fff;--bad:#d62728;
  --warn:#f0a202;--ok:#2e9d4f}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
  color:var(--fg);background:var(--bg)}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:20px}
header .meta{color:#c3c9d4;font-size:13px}
main{max-width:960px;margin:0 auto;padding:18px 20px 40px}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:10px;
  margin:0 0 18px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.tile b{display:block;font-size:22px}
.tile span{color:var(--muted);font-size:12px}
.tile.bad b{color:var(--bad)}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 18px;
  margin:0 0 16px}
section h2{font-size:16px;margin:0 0 2px}
section p.what{color:var(--muted);margin:0 0 10px;font-size:13px}
svg.chart{display:block;font-size:11px}
svg .grid{stroke:var(--line);stroke-width:1}
svg .axis{stroke:#9aa3b2;stroke-width:1}
svg .ref{stroke:#1d2330;stroke-width:1.2;stroke-dasharray:4 3}
svg text{fill:var(--fg)}
svg .tick,svg .axis-title{fill:var(--muted)}
svg .ref-label{font-size:10px;fill:#1d2330}
svg .value{fill:var(--muted)}
svg .mark:hover{opacity:.75}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:6px 0 0 4px;font-size:12px;
  color:var(--muted)}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;
  vertical-align:-1px}
.nodata{margin:6px 0;padding:18px;border:1px dashed #c3c9d4;border-radius:6px;color:var(--muted);
  text-align:center}
table{border-collapse:collapse;width:100%;margin-top:10px;font-size:12.5px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600}
td.time{white-space:nowrap;font-variant-numeric:tabular-nums}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.sev-critical{color:var(--bad);font-weight:600}
td.sev-warning{color:#a86f00;font-weight:600}
details summary{cursor:pointer;color:var(--muted);margin-top:8px}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:10px}
code{font-size:12px}
"""


def _table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    numeric: Sequence[str] = (),
    classes: dict[str, str] | None = None,
) -> str:
    """An HTML table; every cell escaped. `classes` maps a column to a cell-class prefix
    (the cell's value is appended, e.g. sev-critical)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows[:MAX_TABLE_ROWS]:
        cells = []
        for c, v in zip(columns, row, strict=True):
            klass = "num" if c in numeric else ""
            if c.startswith("at"):
                klass = "time"
            if classes and c in classes:
                klass = f"{classes[c]}{v}"
            cells.append(
                f'<td class="{esc(klass)}">{esc("" if v is None else v)}</td>'
                if klass
                else f"<td>{esc('' if v is None else v)}</td>"
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (
        (
            f'<p class="what">{len(rows) - MAX_TABLE_ROWS} more rows not shown: query the store '
            "with <code>agentaudit query</code>.</p>"
        )
        if len(rows) > MAX_TABLE_ROWS
        else ""
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def _section(sid: str, title: str, what: str, chart: str, extra: str = "") -> str:
    return (
        f'<section id="{sid}" class="report-chart"><h2>{esc(title)}</h2>'
        f'<p class="what">{esc(what)}</p>{chart}{extra}</section>'
    )


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"


def _tiles(d: ReportData) -> str:
    t = d.totals
    trips = sum(1 for b in d.breakers if b["to_state"] == "open")
    critical = sum(1 for a in d.alerts if a["severity"] == "critical")
    tiles = [
        (f"{t['events']:,}", "events stored", False),
        (_usd(t["spend_usd"]), f"spend ({t['llm_calls']:,} LLM calls)", False),
        (f"{len(d.alerts):,}", f"alerts ({critical} critical)", critical > 0),
        (f"{trips:,}", "breaker trips", trips > 0),
        (f"{len(d.blocks):,}", "blocks in force at the end", len(d.blocks) > 0),
        (f"{t['dead_letters']:,}", "dead letters", t["dead_letters"] > 0),
    ]
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile{" bad" if bad else ""}">'
            f"<b>{esc(v)}</b><span>{esc(label)}</span></div>"
            for v, label, bad in tiles
        )
        + "</div>"
    )


def _spend_sections(d: ReportData) -> list[str]:
    r = d.range
    by = "agent" if r.tenant else "tenant"
    over_time = svg.stacked_time_bars(
        r.since, r.until, r.step, d.spend_buckets, d.series, "$", "spend over time"
    )
    step_min = int(r.step.total_seconds() // 60)
    step = f"{step_min} min" if step_min < 60 else f"{step_min // 60} h"
    models = svg.hbars(
        [(m, usd, f"{_usd(usd)} · {n:,} calls") for m, usd, n in d.models], "$", "spend by model"
    )
    return [
        _section(
            "spend-over-time",
            "Spend over time",
            f"USD per {step} (event time, UTC), stacked by {by}; priced by the sink from the "
            "pricing table.",
            over_time,
        ),
        _section(
            "spend-by-model",
            "Spend by model",
            "USD per served model (the requested one when the provider named none), "
            f"top {len(d.models)}.",
            models,
        ),
    ]


def _burn_colour(used: float) -> str:
    return "#d62728" if used >= 1 else "#f0a202" if used >= 0.8 else "#59a14f"


def _budget_section(d: ReportData) -> str:
    what = (
        "Spend in the window that holds the report's end, as a share of the limit; dashed "
        "lines are the alert thresholds. Budgets from "
        + (d.budgets_note or "the budgets topic")
        + "."
    )
    if d.burns is None:
        return _section(
            "budget-burn",
            "Budget burn",
            what,
            svg.no_data(
                "the budgets are not known (" + d.budgets_note + "); pass --budgets FILE.yaml"
            ),
        )
    burns = d.burns
    items = [
        (f"{b.budget} · {b.scope}", b.used * 100, f"{b.used:.0%} of {_usd(b.limit)}") for b in burns
    ]
    thresholds = sorted({t for b in burns for t in b.thresholds})
    marks = [(t * 100, f"{t:.0%}") for t in thresholds]
    chart = svg.hbars(items, "%", "budget burn", marks, lambda i, _v: _burn_colour(burns[i].used))
    if not burns:
        chart = svg.no_data(
            "no windowed budget" + (f" for tenant {d.range.tenant}" if d.range.tenant else "")
        )
    rows = [
        (
            b.budget,
            b.scope,
            b.window,
            _usd(b.spent),
            _usd(b.limit),
            "hard (blocks at 100%)" if b.hard else "soft (alerts only)",
            f"{b.used:.0%}",
        )
        for b in burns
    ]
    table = (
        _table(
            ["budget", "scope", "window", "spent", "limit", "limit kind", "used"],
            rows,
            ["spent", "limit", "used"],
        )
        if burns
        else ""
    )
    return _section("budget-burn", "Budget burn", what, chart, table)


def _alert_section(d: ReportData) -> str:
    r = d.range
    points = [
        svg.Point(
            a["at"],
            a["kind"],
            a["severity"],
            f"{a['kind']} ({a['severity']}) {a['scope_key']} at {stamp(a['at'])}: {a['message']}",
        )
        for a in d.alerts
    ]
    keys = {
        s: c for s, c in svg.SEVERITY_COLOURS.items() if any(a["severity"] == s for a in d.alerts)
    }
    chart = svg.lanes(r.since, r.until, points, keys, "alert timeline")
    latest = sorted(d.alerts, key=lambda a: (a["at"], a["alert_id"]), reverse=True)
    rows = [
        (short(a["at"]), a["severity"], a["kind"], a["scope_key"], a["message"]) for a in latest
    ]
    table = (
        _table(
            ["at (UTC)", "severity", "kind", "scope", "message"], rows, classes={"severity": "sev-"}
        )
        if rows
        else ""
    )
    return _section(
        "alert-timeline",
        "Alert timeline",
        "One lane per alert kind; the table lists the newest first, and "
        "runbooks/<kind>.md says what to do. An alert is placed at the end of the "
        "window it judged (event time), or when it fired if that was earlier.",
        chart,
        f"<details open><summary>{len(rows)} alerts</summary>{table}</details>" if rows else "",
    )


STATE_COLOURS = {"open": "#d62728", "half_open": "#f0a202", "closed": "#59a14f"}


def _breaker_section(d: ReportData) -> str:
    r = d.range

    def scope(b: dict[str, Any]) -> str:
        return " · ".join(x for x in (b["tenant_id"], b["agent_id"], b["tool"]) if x)

    points = [
        svg.Point(
            b["at"],
            scope(b),
            b["to_state"],
            f"{scope(b)}: {b['from_state']} → {b['to_state']} ({b['signal']} "
            f"{b['observed']:.4g} / {b['threshold']:.4g}) at {stamp(b['at'])}",
        )
        for b in d.breakers
    ]
    keys = {s: c for s, c in STATE_COLOURS.items() if any(b["to_state"] == s for b in d.breakers)}
    chart = svg.lanes(r.since, r.until, points, keys, "breaker transitions")
    rows = [
        (
            short(b["at"]),
            scope(b),
            f"{b['from_state']} → {b['to_state']}",
            b["signal"],
            f"{b['observed']:.4g}",
            f"{b['threshold']:.4g}",
        )
        for b in d.breakers
    ]
    table = (
        _table(
            ["at (UTC)", "scope", "transition", "signal", "observed", "threshold"],
            rows,
            ["observed", "threshold"],
        )
        if rows
        else ""
    )
    blocks = ""
    if d.blocks:
        brows = [
            (
                b["scope_key"],
                b["reason"],
                "until unblocked" if b["block_until"] is None else stamp(b["block_until"]),
                stamp(b["last_issued"]),
            )
            for b in d.blocks
        ]
        blocks = "<h3>Blocks in force at the report's end</h3>" + _table(
            ["scope", "reason", "until", "since"], brows
        )
    return _section(
        "breaker-trips",
        "Circuit breakers",
        "Every breaker transition, one lane per scope (tenant · agent · tool); red = tripped open.",
        chart,
        table + blocks,
    )


P_FLOOR = 1e-12  # p-values below this are drawn at the chart's edge (-log10 = 12)


def _drift_section(d: ReportData) -> str:
    scored = [s for s in d.drift if s["p_value"] is not None]

    def label(s: dict[str, Any]) -> str:
        version = f"@{s['agent_version']}" if s["agent_version"] else ""
        # "behaviour:<agent>/tool_mix" names the agent again: keep what follows it
        what = (
            s["subject"].split("/", 1)[-1]
            if s["subject"].startswith("behaviour:")
            else s["subject"]
        )
        return f"{s['tenant_id']} · {s['agent_id'] or '-'}{version} · {what} {s['test']}"

    items = [
        (
            label(s),
            -math.log10(max(float(s["p_value"]), P_FLOOR)),
            f"p={float(s['p_value']):.2g}{' drifted' if s['drifted'] else ''}",
        )
        for s in scored
    ]
    chart = svg.hbars(
        items,
        "",
        "drift scores",
        [(2.0, "p = 0.01")],
        lambda i, _v: "#d62728" if scored[i]["drifted"] else "#4e79a7",
    )
    rows = [
        (
            s["tenant_id"],
            s["agent_id"],
            s["subject"],
            s["agent_version"],
            s["test"],
            f"{float(s['statistic']):.3g}",
            "" if s["p_value"] is None else f"{float(s['p_value']):.2g}",
            "yes" if s["drifted"] else "no",
            f"{s['reference_n']}/{s['current_n']}",
            stamp(s["window_end"]),
        )
        for s in d.drift
    ]
    table = (
        _table(
            [
                "tenant",
                "agent",
                "subject",
                "version",
                "test",
                "statistic",
                "p",
                "drifted",
                "ref/cur",
                "window end",
            ],
            rows,
            ["statistic", "p"],
        )
        if rows
        else ""
    )
    return _section(
        "drift-scores",
        "Drift scores",
        "The latest window of each drift test: −log10 p (longer = stronger evidence of "
        "drift; red = drifted, judged at α 0.01). PSI scores have no p and are in the "
        "table only.",
        chart,
        table,
    )


def _dead_letter_section(d: ReportData) -> str:
    items = [(reason, float(n), f"{n:,}") for reason, n, _ in d.dead_letters]
    chart = svg.hbars(items, "", "dead letters by reason", fill=lambda _i, _v: "#e15759")
    rows = [(reason, f"{n:,}", example) for reason, n, example in d.dead_letters]
    table = _table(["reason", "messages", "example"], rows, ["messages"]) if rows else ""
    return _section(
        "dead-letters",
        "Dead letters by reason",
        "Messages the sink could not accept (received time, UTC); the originals are in "
        "agentaudit.dead_letters.",
        chart,
        table,
    )


def render(d: ReportData) -> str:
    """The whole page for `d`."""
    r = d.range
    scope = f"tenant {r.tenant}" if r.tenant else "all tenants"
    title = f"agentaudit report · {scope} · {stamp(r.since)} – {stamp(r.until)}"
    sections = [
        *_spend_sections(d),
        _budget_section(d),
        _alert_section(d),
        _breaker_section(d),
        _drift_section(d),
        _dead_letter_section(d),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>agentaudit report · {esc(scope)}</h1><div class="meta">'
        f"{esc(stamp(r.since))} – {esc(stamp(r.until))} (all times UTC) · store {esc(d.store)} · "
        f"generated {esc(stamp(d.generated_at))}</div></header><main>"
        + _tiles(d)
        + "".join(sections)
        + "<footer>One self-contained file: no scripts, nothing fetched. Hover a mark for its "
        "figures. Made by <code>agentaudit report</code>.</footer></main></body></html>\n"
    )
