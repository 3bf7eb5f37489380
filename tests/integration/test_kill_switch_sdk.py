"""The SDK's kill switch against the real broker: control records in, refusals out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agentaudit.bench.killswitch_measure import propagation_samples
from agentaudit.broker import LocalBroker, ensure_topics, free_port
from agentaudit.settings import Settings
from agentaudit_schemas.records import ControlReason
from agentaudit_sdk import Blocked, Client, RequestBudgetExceeded
from tests.unit.producers.test_control import control, request_budget, unblock

pytestmark = pytest.mark.integration

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WAIT_S = 20.0  # upper bound for one record to reach the SDK; a pass takes well under a second


def topics_of(settings: Settings) -> tuple[str, str]:
    return f"{settings.events_topic}.control", f"{settings.events_topic}.budgets"


async def create_topics(settings: Settings, partitions: int = 3) -> None:
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        compacted = {"cleanup.policy": "compact"}
        await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=compacted) for name in topics_of(settings)]
        )
    finally:
        await admin.close()


async def publish(settings: Settings, topic: str, records: list[tuple[str, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


def make_client(settings: Settings) -> Client:
    control_topic, budgets_topic = topics_of(settings)
    return Client.from_settings(
        settings,
        tenant_id="acme",
        agent_id="support-bot",
        control_topic=control_topic,
        budgets_topic=budgets_topic,
        reconnect_backoff=(0.05, 0.5),
    )


@pytest.fixture
def ks_settings(settings: Settings) -> Iterator[Settings]:
    asyncio.run(create_topics(settings))
    yield settings


def test_block_refuses_and_unblock_restores(ks_settings: Settings) -> None:
    control_topic, budgets_topic = topics_of(ks_settings)
    client = make_client(ks_settings)
    try:
        assert client.control.wait_ready(WAIT_S), client.control.stats
        with client.tool_call("crm", "lookup", {}):
            pass
        block = control("acme", agent_id="support-bot", reason=ControlReason.BREAKER_OPEN)
        asyncio.run(
            publish(
                ks_settings, control_topic, [(block.scope.key, block.model_dump_json().encode())]
            )
        )
        assert client.control.wait_for(
            lambda: client.control.blocked("acme", None, "support-bot") is not None, WAIT_S
        )
        with pytest.raises(Blocked) as refused, client.tool_call("crm", "lookup", {}):
            raise AssertionError("the body must not run")
        assert refused.value.reason == "breaker_open" and refused.value.scope == block.scope.key

        lift = unblock("acme", agent_id="support-bot")
        asyncio.run(
            publish(ks_settings, control_topic, [(lift.scope.key, lift.model_dump_json().encode())])
        )
        assert client.control.wait_for(
            lambda: client.control.blocked("acme", None, "support-bot") is None, WAIT_S
        )
        with client.tool_call("crm", "lookup", {}):
            pass

        budget = request_budget("per-call", max_tokens=1_000)
        asyncio.run(
            publish(ks_settings, budgets_topic, [(budget.name, budget.model_dump_json().encode())])
        )
        assert client.control.wait_for(
            lambda: bool(client.control.state.request_budgets("acme")), WAIT_S
        )
        with pytest.raises(RequestBudgetExceeded):
            client.check_request("openai", "gpt-5", input_tokens=900, max_output_tokens=200)
        asyncio.run(publish(ks_settings, budgets_topic, [(budget.name, None)]))  # tombstone
        assert client.control.wait_for(
            lambda: not client.control.state.request_budgets("acme"), WAIT_S
        )
        assert (
            client.check_request("openai", "gpt-5", input_tokens=900, max_output_tokens=200) is None
        )

        stats = client.control.stats
        assert stats.connected and stats.records == 4 and stats.invalid == 0 and stats.refused == 1
    finally:
        client.shutdown(10)
    assert not client.control.stats.listening


def test_a_block_already_on_the_topic_is_enforced_once_ready(ks_settings: Settings) -> None:
    control_topic, _ = topics_of(ks_settings)
    old = control("acme", reason=ControlReason.BUDGET_EXHAUSTED)
    garbage = b'{"not": "a control message"}'
    other = control("globex")
    asyncio.run(
        publish(
            ks_settings,
            control_topic,
            [
                ("tenant=initech", control("initech").model_dump_json().encode()),
                ("tenant=initech", None),  # tombstoned later: not blocked
                ("junk", garbage),
                (other.scope.key, other.model_dump_json().encode()),
                (old.scope.key, old.model_dump_json().encode()),
            ],
        )
    )
    client = make_client(ks_settings)
    try:
        assert client.control.wait_ready(WAIT_S), client.control.stats
        with pytest.raises(Blocked) as refused:
            client.check()  # no waiting for a change: the state was loaded before ready
        assert refused.value.reason == "budget_exhausted"
        with client.bind(tenant_id="initech"):
            client.check()
        assert client.control.stats.invalid == 1  # skipped and counted, the listener went on
    finally:
        client.shutdown(10)


def test_listener_survives_a_broker_that_is_down_at_start(settings: Settings) -> None:
    port = free_port()
    settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
    control_topic, _ = topics_of(settings)
    client = make_client(settings)
    try:
        assert client.control.wait_for(lambda: client.control.counters.errors >= 1, WAIT_S)
        assert not client.control.ready.is_set()
        client.error("agent", "Boom")  # emitting still works (spooled)
        with client.tool_call("crm", "lookup", {}):  # fail open until the state is known
            pass
        assert client.flush(WAIT_S) and client.stats.spooled == 2
        with LocalBroker(port=port):
            asyncio.run(create_topics(settings))
            block = control("acme")
            asyncio.run(
                publish(
                    settings, control_topic, [(block.scope.key, block.model_dump_json().encode())]
                )
            )
            assert client.control.wait_ready(WAIT_S), client.control.stats
            assert client.control.wait_for(
                lambda: client.control.blocked("acme") is not None, WAIT_S
            )
            with pytest.raises(Blocked):
                client.check()
            assert client.flush(WAIT_S, delivered=True) and client.stats.sent == 2
            assert client.shutdown(10)  # before the broker goes: it lingers on open connections
    finally:
        client.shutdown(5)


def test_propagation_measurement_runs(broker: LocalBroker) -> None:
    samples = asyncio.run(propagation_samples(broker.bootstrap, 3))
    assert len(samples.block_ms) == len(samples.unblock_ms) == 3
    assert all(0 < ms < WAIT_S * 1000 for ms in samples.block_ms + samples.unblock_ms)


def test_a_control_record_in_a_codec_the_sdk_lacks_is_named_not_a_lost_broker(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The bare SDK reads gzip only (cramjam is an extra): an operator's lz4-compressed block
    is logged as an ERROR naming the extra, not as a lost broker, and counted as an error."""
    import aiokafka.codec

    asyncio.run(create_topics(settings))
    control_topic, _ = topics_of(settings)
    block = control("acme")

    async def publish_lz4() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, compression_type="lz4"
        )
        await producer.start()
        try:
            value = block.model_dump_json().encode()
            await producer.send_and_wait(control_topic, value, key=block.scope.key.encode())
        finally:
            await producer.stop()

    asyncio.run(publish_lz4())
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)  # the SDK installed without extras
    client = make_client(settings)
    try:
        assert client.control.wait_for(lambda: client.control.counters.errors >= 1, WAIT_S)
        assert "UnsupportedCodecError" in client.control.counters.last_error
        named = [r for r in caplog.records if "agentaudit-sdk[lz4" in r.getMessage()]
        assert named and named[0].levelname == "ERROR"
        assert not any("listener lost" in r.getMessage() for r in caplog.records)
    finally:
        client.shutdown(5)


def test_a_block_on_a_log_replaced_by_a_broker_restart_is_not_skipped(settings: Settings) -> None:
    """The local broker keeps nothing across a restart: the control log starts again at 0.
    Before, the SDK resumed at the offset it had reached on the old log (10) and silently
    skipped the new log's records below it, among them a block (at offset 5)."""
    with LocalBroker() as own:
        local = settings.model_copy(update={"kafka_bootstrap": own.bootstrap})
        control_topic, _ = topics_of(local)

        def fill(tenants: list[str]) -> None:
            asyncio.run(create_topics(local, partitions=1))
            blocks = [control(t) for t in tenants]
            records = [(b.scope.key, b.model_dump_json().encode()) for b in blocks]
            asyncio.run(publish(local, control_topic, records))

        fill([f"old-{i}" for i in range(10)])
        client = make_client(local)
        try:
            assert client.control.wait_for(
                lambda: client.control.blocked("old-9") is not None, WAIT_S
            ), client.control.stats
            own.stop()
            own.start()
            fill([f"new-{i}" for i in range(5)] + ["acme"] + [f"new-{i}" for i in range(5, 13)])
            assert client.control.wait_for(
                lambda: client.control.blocked("new-12") is not None, WAIT_S
            ), client.control.stats
            assert client.control.wait_for(
                lambda: client.control.blocked("acme") is not None, WAIT_S
            ), "the block at offset 5 of the new log was skipped"
            with pytest.raises(Blocked):
                client.check()
            # what the new log never mentions keeps its last known state (still blocked)
            assert client.control.blocked("old-0") is not None
        finally:
            client.shutdown(10)


def test_a_key_written_to_two_partitions_ends_in_its_latest_state(settings: Settings) -> None:
    """Another client's partitioner (librdkafka's default) or partitions added put one scope
    key in two partitions; compaction keeps both records. Before, a fresh SDK took the record
    of the partition it read last: one of these two scopes stayed blocked after its unblock."""
    asyncio.run(create_topics(settings, partitions=2))
    control_topic, _ = topics_of(settings)
    k1, k2 = control("t1"), control("t2")
    order = [  # (partition, message), in the order written
        (1, k1),
        (0, k2),
        (0, unblock("t1")),
        (1, unblock("t2")),
    ]

    async def write() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for i, (partition, msg) in enumerate(order):
                value = msg.model_dump_json().encode()
                key = msg.scope.key.encode()
                at = T0_MS + 1000 * i  # pinned: a tie in ms would leave it to the read order
                await producer.send_and_wait(
                    control_topic, value, key=key, partition=partition, timestamp_ms=at
                )
        finally:
            await producer.stop()

    asyncio.run(write())
    client = make_client(settings)
    try:
        assert client.control.wait_ready(WAIT_S), client.control.stats
        assert client.control.stats.records == 4
        assert client.control.blocked("t1") is None and client.control.blocked("t2") is None
    finally:
        client.shutdown(10)
