"""One alert to one receiver: attempts until it is acknowledged (2xx) or refused for good.

Pure of Kafka: `Deliverer.deliver` takes a decoded `Alert` and answers `Delivered`,
`DeadLettered` or `Expired`, or raises `Stopped` when `stop` is set while it waits to retry
(nothing is committed then; the alert is posted again by whoever reads it next, with the
same key). Transient failures (5xx, 408, 429, no connection, a timeout) are retried until
the alert is older than the routing file's `max_alert_age_s`, the age past which no alert is
delivered: a younger alert is never dropped because a receiver was down. The HTTP client,
the sleeper and the clock are injected, so the retry schedule is tested without a network.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from agentaudit.notify import metrics
from agentaudit.notify.backoff import (
    BackoffPolicy,
    Sleeper,
    is_permanent,
    is_success,
    retry_after,
    sleep_unless_stopped,
)
from agentaudit.notify.payloads import request_body
from agentaudit.notify.redact import Redactor, display_url
from agentaudit.notify.routes import ReceiverConfig, Routes
from agentaudit_schemas.records import Alert
from agentaudit_sdk.clock import UtcNow, utc_now

log = logging.getLogger("agentaudit.notify")

DETAIL_BYTES = 300
"""What is kept of a refusing receiver's answer body (it says why; it may be long)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, as far as delivery cares."""

    status: int
    retry_after: str | None = None
    body: str = ""


class TransportError(Exception):
    """No HTTP answer: refused, reset, timed out, DNS. Always transient."""


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        """POST `body`; an `Answer` for any HTTP status, `TransportError` for no answer."""
        ...


class HttpTransport:
    """aiohttp, one session per receiver; no redirects followed (see `is_permanent`)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                # The status line is the answer. Before, the body was read first: a receiver
                # that sent its 2xx (or 4xx) head and no body within the timeout was "no
                # answer", so a taken alert was posted again at every retry, and a permanent
                # refusal was retried for ever instead of dead-lettered.
                retry = resp.headers.get("Retry-After")
                if is_success(resp.status):
                    return Answer(resp.status, retry)
                return Answer(resp.status, retry, await _detail(resp))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _detail(resp: aiohttp.ClientResponse) -> str:
    """What the refusal's body says (its first DETAIL_BYTES), or "" if it does not come
    within what is left of the timeout: the status stands either way."""
    try:
        return (await resp.content.read(DETAIL_BYTES)).decode("utf-8", "replace")
    except (aiohttp.ClientError, TimeoutError, OSError):
        return ""


@dataclass(frozen=True, slots=True)
class Delivered:
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLettered:
    reason: str
    """`http_<status>`, or `unencodable` (no request body could be built; nothing was
    posted): the counter's label and the dead-letter record's `refusal`."""
    detail: str
    """Redacted: the receiver's answer, cut to DETAIL_BYTES."""
    attempts: int


@dataclass(frozen=True, slots=True)
class Expired:
    """Still refused (transiently) when the alert passed the routing file's
    `max_alert_age_s`: not delivered, as an alert that old is not when first read."""

    attempts: int


class Stopped(Exception):
    """`stop` was set while an alert waited to be retried; it was not delivered."""


class Deliverer:
    """Posts alerts to one receiver with retries, back-off and jitter."""

    def __init__(
        self,
        receiver: ReceiverConfig,
        routes: Routes,
        transport: Transport,
        *,
        sleeper: Sleeper = sleep_unless_stopped,
        rng: random.Random | None = None,
        clock: UtcNow = utc_now,
    ) -> None:
        self.receiver = receiver
        self.clock = clock
        self.name = receiver.name
        self.url = receiver.resolved_url()
        secret_headers = {k: v.get_secret_value() for k, v in receiver.headers.items()}
        self.redact = Redactor(self.url, list(secret_headers.values()))
        self.where = display_url(self.url)
        self.headers = {"Content-Type": "application/json", **secret_headers}
        self.runbook_base = routes.runbook_base_url
        self.routes = routes
        self.transport = transport
        self.sleeper = sleeper
        self.backoff = BackoffPolicy(routes.backoff, rng)

    async def deliver(
        self, alert: Alert, stop: asyncio.Event
    ) -> Delivered | DeadLettered | Expired:
        """Post until 2xx (`Delivered`), a permanent refusal (`DeadLettered`) or, still
        failing, the alert's age passes `max_alert_age_s` (`Expired`); `Stopped` if `stop` is
        set while waiting to retry."""
        # The alert id is the idempotency key: a receiver that keeps it drops our resend
        # after a crash between its 2xx and our offset commit.
        headers = {**self.headers, "Idempotency-Key": alert.alert_id}
        attempt = 0
        while True:
            try:
                # per attempt: Alertmanager's endsAt counts from the post (`alertmanager_body`)
                body = request_body(alert, self.receiver, self.runbook_base, self.clock())
            except Exception as exc:  # noqa: BLE001 - this alert's dead letter, not a crash loop
                # A valid alert no JSON body can carry (a detail past 64 bits): raised, it
                # would fail the loop, and every restart would meet it again.
                why = f"{type(exc).__name__}: {exc}"[:DETAIL_BYTES]
                return DeadLettered("unencodable", why, attempt)
            attempt += 1
            after: float | None = None
            try:
                answer = await self.transport.post(self.url, body, headers, self.receiver.timeout_s)
            except TransportError as exc:
                why = self.redact(str(exc))
            else:
                if is_success(answer.status):
                    return Delivered(attempt)
                if is_permanent(answer.status):
                    return DeadLettered(f"http_{answer.status}", self.redact(answer.body), attempt)
                why, after = f"HTTP {answer.status}", retry_after(answer.retry_after)
            if self.routes.expired(alert, self.clock()):
                # Before, an alert was retried for ever, also past the age at which the alerts
                # behind it are passed over: a receiver failing on this one alert (5xx for its
                # payload, a dead route) held every later alert of every tenant for good.
                log.warning(
                    "receiver %s (%s): alert %s is older than max_alert_age_s after %d "
                    "attempts (%s); not delivered (expired)",
                    self.name,
                    self.where,
                    alert.alert_id,
                    attempt,
                    why,
                )
                return Expired(attempt)
            metrics.count(self.name, "retried")
            delay = self.backoff.delay(attempt - 1, after)
            # WARNING once, then every 10th: a receiver down for an hour must not flood the log.
            level = logging.WARNING if attempt == 1 or attempt % 10 == 0 else logging.DEBUG
            log.log(
                level,
                "receiver %s (%s): alert %s attempt %d failed (%s); retrying in %.2fs",
                self.name,
                self.where,
                alert.alert_id,
                attempt,
                why,
                delay,
            )
            if await self.sleeper(delay, stop):
                raise Stopped(alert.alert_id)
