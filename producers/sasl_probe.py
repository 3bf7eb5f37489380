"""Which SASL mechanisms a Kafka broker offers, asked with SaslHandshake requests of our own.

aiokafka logs a mechanism the broker does not offer and then raises only "Unable to
bootstrap" (a Kafka broker answers the handshake with its list and an error; Tansu closes
the connection without an answer, logging `NoSharedMechanism`). `offered_mechanisms` asks
the broker directly so that `kafka_config.explain` can name the cause. No credentials are
ever sent: a handshake only names a mechanism.

The request is encoded here (a dozen bytes: SaslHandshake v1 under request header v1, the
wire format since Kafka 1.0) rather than with aiokafka's protocol classes, whose API changed
between the aiokafka versions the SDK accepts.
"""

from __future__ import annotations

import asyncio
import ssl
import struct

SASL_HANDSHAKE = 17  # Kafka API key
UNSUPPORTED_SASL_MECHANISM = 33  # Kafka error code
_VERSION = 1
_CLIENT_ID = b"agentaudit-sasl-probe"
_MAX_RESPONSE = 64 * 1024  # a longer "answer" is not Kafka speaking (e.g. an HTTP server)

# What a broker may offer besides what we asked for: asked one by one when the broker gives
# no list (closes the connection instead), so a broker offering only these is named too.
KNOWN_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">h", len(data)) + data


def handshake_request(mechanism: str, correlation_id: int = 1) -> bytes:
    """One size-prefixed SaslHandshake v1 request naming `mechanism`."""
    body = (
        struct.pack(">hhi", SASL_HANDSHAKE, _VERSION, correlation_id)
        + _string(_CLIENT_ID.decode())
        + _string(mechanism)
    )
    return struct.pack(">i", len(body)) + body


def parse_handshake_response(payload: bytes) -> tuple[int, list[str]]:
    """(error code, enabled mechanisms) of a SaslHandshake response without its size prefix;
    ValueError when it is not one."""
    try:
        _correlation_id, error_code, count = struct.unpack_from(">ihi", payload, 0)
        offset = 10
        mechanisms = []
        for _ in range(max(count, 0)):
            (length,) = struct.unpack_from(">h", payload, offset)
            offset += 2
            if length < 0 or offset + length > len(payload):
                raise ValueError("truncated mechanism name")
            mechanisms.append(payload[offset : offset + length].decode())
            offset += length
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a SaslHandshake response: {exc}") from None
    return error_code, [m for m in mechanisms if m]


async def _ask(
    host: str, port: int, context: ssl.SSLContext | None, mechanism: str
) -> tuple[int, list[str]] | None:
    """The broker's answer to one handshake, or None when it hangs up without one."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=host if context else None
    )
    try:
        writer.write(handshake_request(mechanism))
        await writer.drain()
        try:
            (size,) = struct.unpack(">i", await reader.readexactly(4))
        except asyncio.IncompleteReadError:
            return None
        if not 0 < size <= _MAX_RESPONSE:
            raise ValueError(f"response size {size}")
        return parse_handshake_response(await reader.readexactly(size))
    finally:
        # abort, not close: a probe owes the broker no TLS close_notify, and a close that
        # waits for one could outlast the caller's loop (an unclosed transport)
        writer.transport.abort()


async def offered_mechanisms(
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    mechanism: str,
    timeout_s: float = 3.0,
) -> list[str] | None:
    """The SASL mechanisms the broker at host:port offers, as far as a handshake naming
    `mechanism` (then, if the broker hangs up without a list, one naming each of
    `KNOWN_MECHANISMS`) tells; None when it cannot be told (no answer in time, nothing
    listening, TLS refused, not Kafka). `context`: TLS for SSL listeners, None for plaintext."""
    try:
        async with asyncio.timeout(timeout_s):
            answer = await _ask(host, port, context, mechanism)
            if answer is not None:
                error_code, enabled = answer
                if error_code == 0:  # ours is accepted (Tansu lists only the one asked for)
                    return enabled if mechanism in enabled else [mechanism, *enabled]
                # Kafka: every enabled mechanism, with this error when ours is not one
                return enabled if error_code == UNSUPPORTED_SASL_MECHANISM else None
            # Hung up (Tansu): ours is refused; each other one the broker accepts is offered.
            others = [m for m in KNOWN_MECHANISMS if m != mechanism]
            answers = await asyncio.gather(
                *(_ask(host, port, context, m) for m in others), return_exceptions=True
            )
            offered = [
                m
                for m, a in zip(others, answers, strict=True)
                if isinstance(a, tuple) and a[0] == 0
            ]
            return offered or None
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
        return None
