"""The process-wide client: `get_client()` works before anything is configured.

`get_client()` always returns the same proxy. It forwards to a `NoOpClient` until
`configure()` installs a real client, so a module can call `get_client()` at import time
and start emitting for real once the application configures the pipeline (the
OpenTelemetry ProxyTracer pattern).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentaudit_sdk.api import BaseClient, NoOpClient
from agentaudit_sdk.stats import ClientStats

if TYPE_CHECKING:
    from pydantic import BaseModel

    from agentaudit_sdk.settings import SdkSettings


class ProxyClient(BaseClient):
    """Forwards the primitives to the installed client; the helpers are inherited, so they
    measure and bind here and only emitting is delegated."""

    def __init__(self) -> None:
        self.delegate: BaseClient = NoOpClient()

    def emit(self, type: str, payload: Mapping[str, Any], **envelope: Any) -> None:
        self.delegate.emit(type, payload, **envelope)

    def emit_event(self, event: BaseModel) -> None:
        self.delegate.emit_event(event)

    def check(self, tool: str | None = None) -> None:
        self.delegate.check(tool)

    def check_request(
        self,
        provider: str,
        model: str,
        *,
        input_tokens: int,
        max_output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> Any:
        return self.delegate.check_request(
            provider,
            model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
        )

    def flush(self, timeout: float | None = None, *, delivered: bool = False) -> bool:
        return self.delegate.flush(timeout, delivered=delivered)

    def shutdown(self, timeout: float | None = None) -> bool:
        return self.delegate.shutdown(timeout)

    async def aflush(self, timeout: float | None = None, *, delivered: bool = False) -> bool:
        return await self.delegate.aflush(timeout, delivered=delivered)

    async def ashutdown(self, timeout: float | None = None) -> bool:
        return await self.delegate.ashutdown(timeout)

    @property
    def stats(self) -> ClientStats:
        return self.delegate.stats

    @property
    def recent_errors(self) -> list[Exception]:
        return self.delegate.recent_errors


_PROXY = ProxyClient()


def get_client() -> BaseClient:
    """The process-wide client: a no-op until `configure()` installs a real one."""
    return _PROXY


def configure(
    client: BaseClient | None = None, *, settings: SdkSettings | None = None, **options: Any
) -> BaseClient:
    """Install `client`, or build one with
    `Client.from_settings(settings or SdkSettings(), **options)`.

    Returns the installed client. A previously installed client is not shut down here (it may
    still be in use); it flushes at exit. `configure(NoOpClient())` turns emitting off again.
    """
    if client is None:
        from agentaudit_sdk.client import Client
        from agentaudit_sdk.settings import SdkSettings

        client = Client.from_settings(settings or SdkSettings(), **options)
    elif settings is not None or options:
        raise TypeError("pass either a client or settings/options, not both")
    _PROXY.delegate = client
    return client


def reset() -> None:
    """Back to the no-op default (for tests)."""
    _PROXY.delegate = NoOpClient()
