"""The SaslHandshake probe (producers/sasl_probe.py): its bytes are Kafka's (checked against
aiokafka's protocol classes), and a broker that answers the Kafka way (error 33 with its
list: Apache Kafka does, the local Tansu hangs up instead, see
tests/integration/test_kafka_sasl.py) is read right. The Kafka-style answer comes from a
socket server speaking those bytes, since no Apache Kafka broker runs here."""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka.protocol.admin import SaslHandShakeRequest_v1, SaslHandShakeResponse_v1

from agentaudit.broker import free_port
from agentaudit_sdk.kafka_config import KafkaConnection, mechanism_problem
from agentaudit_sdk.sasl_probe import (
    handshake_request,
    offered_mechanisms,
    parse_handshake_response,
)


def test_request_and_response_bytes_are_kafkas() -> None:
    ours = handshake_request("PLAIN", correlation_id=7)
    struct_ = SaslHandShakeRequest_v1("PLAIN")
    body = (
        struct_.build_request_header(correlation_id=7, client_id="agentaudit-sasl-probe").encode()
        + struct_.encode()
    )
    assert ours == struct.pack(">i", len(body)) + body

    answer = SaslHandShakeResponse_v1(33, ["SCRAM-SHA-512", "OAUTHBEARER"]).encode()
    assert parse_handshake_response(struct.pack(">i", 7) + answer) == (
        33,
        ["SCRAM-SHA-512", "OAUTHBEARER"],
    )
    with pytest.raises(ValueError, match="not a SaslHandshake response"):
        parse_handshake_response(b"HTTP/1.1")


Reply = Callable[[str], bytes]
Serve = Callable[[Reply], Awaitable[int]]


@pytest.fixture
async def server() -> AsyncIterator[Serve]:
    """serve(reply): a server answering each handshake with reply(asked mechanism); its port."""
    servers: list[asyncio.Server] = []

    async def serve(reply: Reply) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            buffer = io.BytesIO(await reader.readexactly(size))
            buffer.seek(8)  # api key, version, correlation id
            (length,) = struct.unpack(">h", buffer.read(2))
            buffer.read(length)  # client id
            (length,) = struct.unpack(">h", buffer.read(2))
            payload = struct.pack(">i", 1) + reply(buffer.read(length).decode())
            writer.write(struct.pack(">i", len(payload)) + payload)
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    yield serve
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def kafka_answer(enabled: list[str]) -> Reply:
    def reply(asked: str) -> bytes:
        error = 0 if asked in enabled else 33
        return bytes(SaslHandShakeResponse_v1(error, enabled).encode())

    return reply


def _connection(port: int, mechanism: str) -> KafkaConnection:
    return KafkaConnection(
        bootstrap=f"127.0.0.1:{port}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        username="u",
        password="p",
    )


async def test_a_kafka_style_answer_gives_the_list(
    server: Serve,
) -> None:
    port = await server(kafka_answer(["SCRAM-SHA-512", "GSSAPI"]))
    assert await offered_mechanisms("127.0.0.1", port, None, "PLAIN") == ["SCRAM-SHA-512", "GSSAPI"]
    assert await offered_mechanisms("127.0.0.1", port, None, "SCRAM-SHA-512") == [
        "SCRAM-SHA-512",
        "GSSAPI",
    ]
    assert await mechanism_problem(_connection(port, "SCRAM-SHA-256")) == (
        f"Kafka at 127.0.0.1:{port} (SASL_PLAINTEXT SCRAM-SHA-256 as 'u'): the broker does not "
        "offer the SASL mechanism SCRAM-SHA-256; it offers SCRAM-SHA-512, GSSAPI; set "
        "AGENTAUDIT_KAFKA_SASL_MECHANISM to SCRAM-SHA-512"
    )


async def test_only_mechanisms_we_cannot_use_are_named_with_the_ones_we_can(
    server: Serve,
) -> None:
    port = await server(kafka_answer(["AWS_MSK_IAM"]))
    message = await mechanism_problem(_connection(port, "PLAIN"))
    assert message is not None and message.endswith(
        "it offers AWS_MSK_IAM (AGENTAUDIT_KAFKA_SASL_MECHANISM takes PLAIN, SCRAM-SHA-256, "
        "SCRAM-SHA-512)"
    )


async def test_no_kafka_answer_tells_nothing(
    server: Serve,
) -> None:
    port = await server(lambda _asked: b"\x00")  # too short to be a handshake response
    assert await offered_mechanisms("127.0.0.1", port, None, "PLAIN") is None
    nothing_there = free_port()
    assert await offered_mechanisms("127.0.0.1", nothing_there, None, "PLAIN") is None
