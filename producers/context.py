"""The bound context (tenant, user, agent, session, run, trace) carried in a contextvar.

A contextvar, not a thread-local, so the binding follows asyncio tasks as well as threads.
The bound value is immutable: `emit` captures a reference and the background thread reads
it later without a copy or a lock. Nested bindings merge into a new value and restore the
previous one on exit.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

BINDABLE_FIELDS = (
    "tenant_id",
    "user_id",
    "agent_id",
    "agent_version",
    "deployment",
    "variant",
    "session_id",
    "run_id",
)
"""Envelope fields a `bind()` may set; `attributes` is bound separately and merged key by key."""


class AsyncFromSync:
    """`async with` support for a context manager whose enter/exit never block."""

    async def __aenter__(self) -> Self:
        return self.__enter__()  # type: ignore[attr-defined,no-any-return]

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, exc, tb)  # type: ignore[attr-defined]


class RunState:
    """Mutable per-run counter shared by everything emitted inside one `client.run(...)`."""

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps = 0


@dataclass(frozen=True, slots=True)
class Bound:
    """One immutable snapshot of the bound context."""

    fields: Mapping[str, Any] = field(default_factory=dict)
    trace_id: str | None = None
    span_id: str | None = None
    run: RunState | None = None

    def with_fields(self, fields: Mapping[str, Any]) -> Bound:
        """A copy with `fields` merged in: `None` leaves a field as bound, attributes merge by
        key."""
        merged = dict(self.fields)
        for key, value in fields.items():
            if value is None:
                continue
            if key == "attributes":
                merged["attributes"] = {**merged.get("attributes", {}), **value}
            else:
                merged[key] = value
        return Bound(merged, self.trace_id, self.span_id, self.run)

    def child_span(self, span_id: str, trace_id: str, run: RunState | None = None) -> Bound:
        """A copy whose current span is `span_id` (events inside become its children)."""
        return Bound(self.fields, trace_id, span_id, run if run is not None else self.run)


EMPTY = Bound()
CURRENT: ContextVar[Bound] = ContextVar("agentaudit_bound", default=EMPTY)


def new_trace_id() -> str:
    """Random 128-bit W3C trace id, 32 lower-case hex; all-zero is invalid there, so skip it."""
    value = 0
    while not value:
        value = random.getrandbits(128)
    return f"{value:032x}"


def new_span_id() -> str:
    """Random 64-bit span id, 16 lower-case hex, never all zero."""
    value = 0
    while not value:
        value = random.getrandbits(64)
    return f"{value:016x}"


def restore(token: Token[Bound], previous: Bound) -> None:
    """Undo a `CURRENT.set`. Falls back to a plain set when the token belongs to another
    context (a scope entered in one task and exited in another), rather than raising."""
    try:
        CURRENT.reset(token)
    except ValueError:
        CURRENT.set(previous)


class Binding(AsyncFromSync):
    """What `client.bind(...)` returns: binds on enter, restores on exit; `with` or `async with`."""

    __slots__ = ("_fields", "_previous", "_token")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._fields = fields
        self._previous: Bound = EMPTY
        self._token: Token[Bound] | None = None

    def __enter__(self) -> Self:
        self._previous = CURRENT.get()
        self._token = CURRENT.set(self._previous.with_fields(self._fields))
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            restore(self._token, self._previous)
            self._token = None
