"""Expand a panel's SQL the way Grafana and the ClickHouse plugin do, so tests can run it.

Two stages, in the plugin's order:

1. Frontend, `CHDatasource.applyTemplateVariables` (src/data/CHDatasource.ts in
   grafana/clickhouse-datasource): `$__conditionalAll(cond, $var)` becomes `1=1` when the
   variable is All (`$__all`) or empty, else `cond` (`applyConditionalAll`, which scans from the
   last occurrence and splits arguments with `getMacroArgs`); then the template service replaces
   `$var` / `${var}` with the plugin's `format`: a multi-value (array) as `'a','b'`, a single
   value as it is (no quotes).
2. Backend, `macros.Interpolate` (pkg/macros/macros.go): `$__timeFilter(c)` →
   `c >= toDateTime(from) AND c <= toDateTime(to)` (unix seconds), `$__timeFilter_ms(c)` with
   `fromUnixTimestamp64Milli(ms)`, `$__fromTime` / `$__toTime` → `toDateTime(s)`,
   `$__fromTime_ms` / `$__toTime_ms` → `fromUnixTimestamp64Milli(ms)`, `$__timeInterval(c)` →
   `toStartOfInterval(toDateTime(c), INTERVAL n second)`, `$__interval_s` → n (both at least
   1 s). Unknown macros are left as they are (the tests then fail on the leftover `$__`).

Only what the dashboards use is implemented; comments and quoted strings are not scanned
specially (the plugin skips macros inside them: keep macros out of both).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

ALL = "$__all"
"""The value Grafana gives a variable whose 'All' option is selected (without a custom all
value)."""


@dataclass(frozen=True)
class QueryContext:
    """What Grafana knows when it runs a query: the time range, the interval, the variables."""

    time_from: datetime
    time_to: datetime
    interval: timedelta = timedelta(minutes=1)
    variables: Mapping[str, str | Sequence[str]] = field(default_factory=dict)


def expand(sql: str, ctx: QueryContext) -> str:
    """`sql` as the ClickHouse server receives it from the plugin."""
    sql = apply_conditional_all(sql, ctx.variables)
    sql = replace_variables(sql, ctx.variables)
    return interpolate(sql, ctx)


# -- frontend ----------------------------------------------------------------------------------

_CONDITIONAL_ALL = "$__conditionalAll("
_VAR_IN_ARG = re.compile(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _macro_args(sql: str, open_paren: int) -> list[str]:
    """The plugin's `getMacroArgs`: arguments split at top-level commas, up to the closing paren."""
    args: list[str] = []
    depth, start = 0, open_paren + 1
    for i in range(open_paren, len(sql)):
        ch = sql[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 1:
            args.append(sql[start:i])
            start = i + 1
        if depth == 0:
            args.append(sql[start:i])
            return args
    return []


def _as_js_string(value: str | Sequence[str]) -> str:
    """`value.toString()` in JavaScript: an array joins with commas."""
    return value if isinstance(value, str) else ",".join(value)


def apply_conditional_all(sql: str, variables: Mapping[str, str | Sequence[str]]) -> str:
    """The plugin's `applyConditionalAll`."""
    index = sql.rfind(_CONDITIONAL_ALL)
    while index != -1:
        params = _macro_args(sql, index + len(_CONDITIONAL_ALL) - 1)
        if len(params) != 2:
            return sql
        phrase = params[0]
        match = _VAR_IN_ARG.search(params[1].strip())
        if match:
            value = variables.get(match.group(0))
            if value is not None and _as_js_string(value) in ("", ALL):
                phrase = "1=1"
        sql = sql.replace(f"{_CONDITIONAL_ALL}{params[0]},{params[1]})", phrase, 1)
        index = sql.rfind(_CONDITIONAL_ALL)
    return sql


def replace_variables(sql: str, variables: Mapping[str, str | Sequence[str]]) -> str:
    """Grafana's template service with the plugin's `format`: arrays as `'a','b'`."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            return match.group(0)  # macros ($__timeFilter) and unknown names stay
        value = variables[name]
        return value if isinstance(value, str) else "'" + "','".join(value) + "'"

    return _VARIABLE.sub(one, sql)


# -- backend -----------------------------------------------------------------------------------


def _seconds(t: datetime) -> str:
    return f"toDateTime({int(t.timestamp())})"


def _millis(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(t.timestamp() * 1000)})"


def _interval_s(ctx: QueryContext) -> int:
    return int(max(ctx.interval.total_seconds(), 1))


def _one_arg(fn: Callable[[str, QueryContext], str]) -> Callable[[list[str], QueryContext], str]:
    def wrapped(args: list[str], ctx: QueryContext) -> str:
        if len(args) != 1:
            raise ValueError(f"expected 1 argument(s), received {len(args)}")
        return fn(args[0], ctx)

    return wrapped


MACROS: dict[str, Callable[[list[str], QueryContext], str]] = {
    "timeFilter": _one_arg(
        lambda c, x: f"{c} >= {_seconds(x.time_from)} AND {c} <= {_seconds(x.time_to)}"
    ),
    "timeFilter_ms": _one_arg(
        lambda c, x: f"{c} >= {_millis(x.time_from)} AND {c} <= {_millis(x.time_to)}"
    ),
    "fromTime": lambda a, x: _seconds(x.time_from),
    "toTime": lambda a, x: _seconds(x.time_to),
    "fromTime_ms": lambda a, x: _millis(x.time_from),
    "toTime_ms": lambda a, x: _millis(x.time_to),
    "timeInterval": _one_arg(
        lambda c, x: f"toStartOfInterval(toDateTime({c}), INTERVAL {_interval_s(x)} second)"
    ),
    "interval_s": lambda a, x: str(_interval_s(x)),
}
_MACRO = re.compile(r"\$__(\w+)")


def _closing_paren(sql: str, open_paren: int) -> int:
    depth = 0
    for i in range(open_paren, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses after position {open_paren}")


def interpolate(sql: str, ctx: QueryContext) -> str:
    """The plugin's backend `macros.Interpolate`, for the macros in `MACROS`."""
    out: list[str] = []
    pos = 0
    for match in _MACRO.finditer(sql):
        if match.start() < pos:
            continue  # inside the arguments of a macro already expanded
        name = match.group(1)
        if name not in MACROS:
            continue
        end, args = match.end(), []
        if end < len(sql) and sql[end] == "(":
            args = [a.strip() for a in _macro_args(sql, end)]
            end = _closing_paren(sql, end) + 1
        out.append(sql[pos : match.start()])
        out.append(MACROS[name](args, ctx))
        pos = end
    out.append(sql[pos:])
    return "".join(out)
