"""A scripted transport and a recording sleeper: delivery tested without network or clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from agentaudit.notify.deliver import Answer, TransportError


class ScriptedTransport:
    """Answers each post with the next item of `script` (an Answer, or an exception to raise);
    the last item repeats. Records every request."""

    def __init__(self, script: Iterable[Answer | Exception]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, bytes, dict[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        self.requests.append((url, body, headers))
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item


class RecordingSleeper:
    """Records requested delays; never waits. `stop_after`: sets stop at that many sleeps."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.delays: list[float] = []
        self.stop_after = stop_after

    async def __call__(self, seconds: float, stop: asyncio.Event) -> bool:
        self.delays.append(seconds)
        if self.stop_after is not None and len(self.delays) >= self.stop_after:
            stop.set()
        return stop.is_set()


def refused(msg: str = "connection refused") -> TransportError:
    return TransportError(msg)
