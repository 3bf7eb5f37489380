"""Inline SVG charts for the report: scales, ticks, escaping and three chart shapes.

Hand-written rather than a charting library: the report must work offline in one file, and
the one small pure-Python candidate (pygal) links its tooltip script from a CDN by default
and is not a dependency here. Every chart is a pure function of its data (no ids from
counters or clocks), so the same data renders the same bytes.

Every piece of text that reaches the markup goes through `esc`: tenant, agent and model
names are user input, and inside inline SVG an unescaped `<script>` would run. Every data
mark carries `class="mark"` and a `<title>` (the browser shows it on hover, no script).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

WIDTH = 880
PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
]
SEVERITY_COLOURS = {"critical": "#d62728", "warning": "#f0a202", "info": "#4e79a7"}
OTHER = "other"


def esc(text: object) -> str:
    """Text for HTML or SVG markup: `<`, `>`, `&` and both quotes escaped."""
    return escape(str(text), quote=True)


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


# -- scales and ticks -----------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 × 10^k apart) from at or below `lo` to at or above
    `hi`. A flat or empty range gets a range of 1 above `lo`."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"ticks of a non-finite range {lo}..{hi}")
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, max_ticks - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = [round(first, 12)]
    while ticks[-1] < hi - step * 1e-9 or len(ticks) < 2:
        ticks.append(round(first + step * len(ticks), 12))
    return ticks


def format_number(value: float, unit: str = "") -> str:
    """Short axis labels: 0.05, 1.5, 12, 1.2k, 3.4M; `unit` "$" prefixes a dollar sign."""
    a = abs(value)
    if a >= 1e6:
        text = f"{value / 1e6:.3g}M"
    elif a >= 1e4:
        text = f"{value / 1e3:.3g}k"
    elif a >= 100 or value == int(value):
        text = f"{value:,.0f}"
    else:
        text = f"{value:.3g}"
    return f"${text}" if unit == "$" else f"{text}{unit}"


@dataclass(frozen=True)
class Scale:
    """A linear map from a domain [d0, d1] to pixels [r0, r1]."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        if self.d1 == self.d0:
            return self.r0
        return self.r0 + (value - self.d0) * (self.r1 - self.r0) / (self.d1 - self.d0)


_TIME_STEPS = (
    [timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30)]
    + [timedelta(hours=h) for h in (1, 2, 3, 6, 12)]
    + [timedelta(days=d) for d in (1, 2, 7, 14, 30)]
)


def time_ticks(start: datetime, end: datetime, max_ticks: int = 8) -> list[datetime]:
    """UTC instants on round boundaries (whole minutes, hours, days from midnight) within
    [start, end], at most `max_ticks`."""
    span = (end - start).total_seconds()
    step = next((s for s in _TIME_STEPS if span / s.total_seconds() <= max_ticks), _TIME_STEPS[-1])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    n = math.ceil((start - epoch) / step)
    ticks = []
    tick = epoch + n * step
    while tick <= end:
        ticks.append(tick)
        tick += step
    return ticks


def time_label(at: datetime, span: timedelta) -> str:
    """An axis label in UTC: the time of day for spans up to two days, else the date."""
    at = at.astimezone(UTC)
    if span <= timedelta(days=2):
        return at.strftime("%H:%M") if at.hour or at.minute else at.strftime("%m-%d 00:00")
    return at.strftime("%Y-%m-%d")


def stamp(at: datetime) -> str:
    """A full UTC timestamp for tooltips and tables."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short(at: datetime) -> str:
    """A compact UTC timestamp for table cells (the column header says UTC)."""
    return at.astimezone(UTC).strftime("%m-%d %H:%M:%S")


def _ts(at: datetime) -> float:
    return at.timestamp()


# -- shared pieces --------------------------------------------------------------------------


def no_data(reason: str) -> str:
    """What a chart shows when there is nothing to draw: said in words, not an empty axis."""
    return f'<p class="nodata">No data: {esc(reason)}</p>'


def _svg(height: int, body: list[str], label: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{esc(text)}</text>'


def legend(names: Sequence[str], colours: Sequence[str]) -> str:
    """An HTML legend (wraps by itself, unlike SVG text)."""
    items = "".join(
        f'<span class="key"><i style="background:{c}"></i>{esc(n)}</span>'
        for n, c in zip(names, colours, strict=True)
    )
    return f'<div class="legend">{items}</div>'


def _y_axis(ticks: list[float], y: Scale, left: float, right: float, unit: str) -> list[str]:
    out = []
    for t in ticks:
        py = y(t)
        out.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}"/>')
        out.append(_text(left - 6, py + 4, format_number(t, unit), "end", "tick"))
    return out


def _time_axis(start: datetime, end: datetime, x: Scale, y0: float) -> list[str]:
    span = end - start
    out = [f'<line class="axis" x1="{x.r0}" x2="{x.r1}" y1="{y0}" y2="{y0}"/>']
    for t in time_ticks(start, end):
        px = x(_ts(t))
        out.append(f'<line class="axis" x1="{px:.1f}" x2="{px:.1f}" y1="{y0}" y2="{y0 + 4}"/>')
        out.append(_text(px, y0 + 17, time_label(t, span), "middle", "tick"))
    out.append(_text(x.r1, y0 + 32, "time (UTC)", "end", "axis-title"))
    return out


# -- charts ---------------------------------------------------------------------------------


def stacked_time_bars(
    start: datetime,
    end: datetime,
    step: timedelta,
    buckets: dict[datetime, dict[str, float]],
    series: Sequence[str],
    unit: str = "",
    title: str = "",
) -> str:
    """Vertical bars per time bucket `[t, t + step)`, stacked by series (in `series` order,
    which also picks the colours), over the whole range [start, end]."""
    if not any(v > 0 for b in buckets.values() for v in b.values()):
        return no_data("nothing in this time range")
    height, top, bottom, left, right = 280, 14, 240, 64, WIDTH - 12
    totals = [sum(b.values()) for b in buckets.values()]
    ticks = nice_ticks(0, max(totals))
    y = Scale(0, ticks[-1], bottom, top)
    x = Scale(_ts(start), _ts(end), left, right)
    body = _y_axis(ticks, y, left, right, unit)
    width = max(1.0, x(_ts(start) + step.total_seconds()) - x(_ts(start)) - 1)
    for t in sorted(buckets):
        base = 0.0
        for i, name in enumerate(series):
            value = buckets[t].get(name, 0.0)
            if value <= 0:
                continue
            y_top, y_bottom = y(base + value), y(base)
            tip = f"{name}: {format_number(value, unit)} in {stamp(t)} + {_span_text(step)}"
            body.append(
                f'<rect class="mark" x="{x(_ts(t)):.1f}" y="{y_top:.1f}" width="{width:.1f}" '
                f'height="{max(0.5, y_bottom - y_top):.1f}" fill="{colour(i)}">'
                f"<title>{esc(tip)}</title></rect>"
            )
            base += value
    body += _time_axis(start, end, x, bottom)
    return _svg(height, body, title) + legend(series, [colour(i) for i in range(len(series))])


def hbars(
    items: Sequence[tuple[str, float, str]],
    unit: str = "",
    title: str = "",
    marks: Sequence[tuple[float, str]] = (),
    fill: Callable[[int, float], str] | None = None,
) -> str:
    """Horizontal bars, one per (label, value, note), in the given order; `marks` are
    vertical reference lines (value, label), e.g. a budget's thresholds; `fill` picks a bar's
    colour from (index, value)."""
    if not items:
        return no_data("nothing in this time range")
    row, top, left, right = 26, 12, 280, WIDTH - 150
    height = top + row * len(items) + 30
    bottom = top + row * len(items)
    hi = max([v for _, v, _ in items] + [m for m, _ in marks])
    ticks = nice_ticks(0, hi if hi > 0 else 1)
    x = Scale(0, ticks[-1], left, right)
    body = []
    for t in ticks:
        px = x(t)
        body.append(f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{bottom}"/>')
        body.append(_text(px, bottom + 16, format_number(t, unit), "middle", "tick"))
    for i, (label, value, note) in enumerate(items):
        py = top + i * row
        body.append(_text(left - 8, py + row / 2 + 4, _clip(label, 46), "end", "label"))
        w = max(1.0, x(value) - left) if value > 0 else 0.0
        c = fill(i, value) if fill else colour(0)
        tip = f"{label}: {format_number(value, unit)}" + (f" ({note})" if note else "")
        body.append(
            f'<rect class="mark" x="{left}" y="{py + 4}" width="{w:.1f}" height="{row - 8}" '
            f'fill="{c}"><title>{esc(tip)}</title></rect>'
        )
        body.append(
            _text(
                left + w + 6, py + row / 2 + 4, note or format_number(value, unit), "start", "value"
            )
        )
    for value, label in marks:
        px = x(value)
        body.append(f'<line class="ref" x1="{px:.1f}" x2="{px:.1f}" y1="{top - 4}" y2="{bottom}"/>')
        body.append(_text(px, top - 0.5, label, "middle", "ref-label"))
    return _svg(height, body, title)


@dataclass(frozen=True)
class Point:
    """One mark on a timeline: when, its lane, its colour key and its tooltip."""

    at: datetime
    lane: str
    key: str
    tip: str


def lanes(
    start: datetime,
    end: datetime,
    points: Sequence[Point],
    keys: dict[str, str],
    title: str = "",
) -> str:
    """A timeline: one horizontal lane per distinct `Point.lane` (in first-seen order), a dot
    per point coloured by `keys[point.key]`. Points outside [start, end] are not drawn."""
    shown = [p for p in points if start <= p.at <= end]
    if not shown:
        return no_data("nothing in this time range")
    names = list(dict.fromkeys(p.lane for p in shown))
    row, top, left, right = 24, 8, 280, WIDTH - 16
    bottom = top + row * len(names)
    x = Scale(_ts(start), _ts(end), left, right)
    body = []
    for i, name in enumerate(names):
        py = top + i * row + row / 2
        body.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}"/>')
        body.append(_text(left - 8, py + 4, _clip(name, 46), "end", "label"))
    for p in shown:
        py = top + names.index(p.lane) * row + row / 2
        body.append(
            f'<circle class="mark" cx="{x(_ts(p.at)):.1f}" cy="{py:.1f}" r="5" '
            f'fill="{keys.get(p.key, PALETTE[-1])}"><title>{esc(p.tip)}</title></circle>'
        )
    body += _time_axis(start, end, x, bottom)
    return _svg(bottom + 40, body, title) + legend(list(keys), list(keys.values()))


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _span_text(step: timedelta) -> str:
    minutes = int(step.total_seconds() // 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h"
