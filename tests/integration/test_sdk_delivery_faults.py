"""The SDK's delivery path against the real broker under faults: a record the producer refuses
must not stall everything behind it, and what `flush`/`stats` say agrees with the topic."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from agentaudit.settings import Settings
from tests.conftest import settings_env

pytestmark = pytest.mark.integration


async def _read_topic(settings: Settings) -> list[bytes]:
    """Every value on the events topic, up to its end offsets when called."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        assert settings.events_topic in await consumer.topics()  # also loads its metadata
        partitions = consumer.partitions_for_topic(settings.events_topic) or set()
        tps = [TopicPartition(settings.events_topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        values: list[bytes] = []
        async with asyncio.timeout(30):
            for tp, end in ends.items():
                while await consumer.position(tp) < end:
                    got = await consumer.getmany(tp, timeout_ms=1000)
                    values += [m.value for batch in got.values() for m in batch]
        return values
    finally:
        await consumer.stop()


def numbers(values: list[bytes]) -> set[int]:
    """The event numbers (the error messages) among `values`."""
    return {int(orjson.loads(value)["payload"]["message"]) for value in values}


def _run_agent(settings: Settings, script: str) -> subprocess.CompletedProcess[str]:
    """`script` as an agent process of its own, on this test's broker (its output kept)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_refused_record_is_counted_and_does_not_stall_the_rest(settings: Settings) -> None:
    """aiokafka refuses a record over `max_request_size` (a broker refuses one over the
    topic's `max.message.bytes` the same way, MESSAGE_TOO_LARGE): retrying it can never
    succeed. Before, the whole batch was spooled and replayed forever: every later event
    queued behind it and nothing was delivered again."""
    from agentaudit_sdk import Client
    from agentaudit_sdk.kafka import KafkaTransport

    transport = KafkaTransport(
        settings.kafka_bootstrap, settings.events_topic, max_request_size=2048
    )
    client = Client(transport, tenant_id="acme", agent_id="bot", kill_switch=False, batch_size=4)
    try:
        client.error("checkout", "timeout", message="small 0")
        client.error("checkout", "timeout", message="big " + "z" * 2000)  # ~2.6 KB on the wire
        for i in range(1, 10):
            client.error("checkout", "timeout", message=f"small {i}")
        assert client.flush(30, delivered=True), f"delivery stalled: {client.stats}"
        stats = client.stats
        assert (stats.sent, stats.dropped_refused, stats.spool_depth) == (10, 1, 0), stats
        assert "max_request_size" in str(client.recent_errors[-1])
        values = asyncio.run(_read_topic(settings))
    finally:
        client.shutdown(5)
    messages = sorted(orjson.loads(v)["payload"]["message"] for v in values)
    assert messages == sorted(f"small {i}" for i in range(10))


def test_a_send_failing_before_the_sender_ran_is_a_transport_failure(settings: Settings) -> None:
    """Right after a reconnect (topic metadata already known) `send()` can fail before
    aiokafka's sender task first ran; aborting the producer then awaited that cancelled task
    and its CancelledError escaped `send_batch`, ending the client's background thread (seen
    with a refused record). A wrongly typed key stands for any such synchronous failure."""
    from agentaudit_sdk.kafka import KafkaTransport
    from agentaudit_sdk.transport import TransportUnavailable

    async def scenario() -> None:
        transport = KafkaTransport(settings.kafka_bootstrap, settings.events_topic)
        try:
            await transport.start()
            await transport.send_batch([(b"acme", b"{}")])
            await transport.start()  # a reconnect: a fresh producer, its sender not yet run
            with pytest.raises(TransportUnavailable, match="bytes-like"):
                await transport.send_batch([("acme", b"{}")])  # type: ignore[list-item]
            await transport.start()
            await transport.send_batch([(b"acme", b"{}")])  # and it recovers
        finally:
            await transport.close()

    asyncio.run(scenario())


# The agent: the broker unreachable, it spools; after each flush it says how many events
# are on disk, and keeps emitting until it is killed (SIGKILL) in the middle of that.
AGENT = """
import sys
from agentaudit_sdk import Client
from agentaudit_sdk.settings import SdkSettings

client = Client.from_settings(SdkSettings(), tenant_id="acme", agent_id="bot", kill_switch=False,
                              batch_size=20, reconnect_backoff=(0.05, 0.2))
i = 0
while True:
    client.error("c", "E", message=str(i))
    i += 1
    if i % 100 == 0:
        assert client.flush(30)
        print(i, flush=True)
"""


def test_kill_9_while_spooling_loses_nothing_flushed_and_replays_once(settings: Settings) -> None:
    """Everything a flush reported as spooled survives kill -9 (the lock dies with the
    process), is replayed by the next start exactly once, and a start after that replays
    nothing."""
    import os
    import signal

    from agentaudit.broker import free_port
    from agentaudit_sdk import Client

    env = {**settings_env(settings), "AGENTAUDIT_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert agent.stdout is not None
        flushed = 0
        while flushed < 1000:  # blocks on the child's next line; it dies on a failed flush
            line = agent.stdout.readline()
            assert line, f"the agent exited with {agent.wait()}"
            flushed = int(line)
    finally:
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()

    options = {"tenant_id": "acme", "agent_id": "bot", "kill_switch": False}
    restarted = Client.from_settings(settings, **options)
    try:
        assert restarted.flush(60, delivered=True), restarted.stats
        replayed = restarted.stats.replayed
    finally:
        assert restarted.shutdown(10)
    values = asyncio.run(_read_topic(settings))
    numbers = [int(orjson.loads(v)["payload"]["message"]) for v in values]
    assert len(numbers) == len(set(numbers)) == replayed  # each once
    assert set(range(flushed)) <= set(numbers)  # and everything flushed before the kill
    again = Client.from_settings(settings, **options)
    try:
        assert again.flush(10, delivered=True) and again.stats.replayed == 0
    finally:
        again.shutdown(10)


def test_a_hanging_broker_flush_shutdown_and_stats_agree_with_the_topic(tmp_path: Path) -> None:
    """The broker stops answering (SIGSTOP: connections are accepted, nothing is answered)
    mid-stream: `flush` returns once the stuck batch is spooled, `shutdown` keeps it in the
    disk spool, `sent` counts only records that are on the topic, and the next start delivers
    the rest (a batch the broker took without answering may arrive twice: the sink drops
    the copy by event_id)."""
    import os
    import signal

    from agentaudit.broker import LocalBroker, ensure_topics
    from agentaudit_sdk import Client
    from agentaudit_sdk.kafka import KafkaTransport
    from agentaudit_sdk.spool import Spool
    from tests.conftest import isolated_settings
    from tests.integration.procs import children_of, cmdline

    def client(settings: Settings) -> Client:
        transport = KafkaTransport(
            settings.kafka_bootstrap,
            settings.events_topic,
            send_timeout_s=1,
            request_timeout_ms=3000,
            connect_timeout_s=2,
            close_timeout_s=1,  # an aborted producer waits that long for its in-flight request
        )
        spool = Spool(tmp_path / "spool")
        return Client(
            transport,
            tenant_id="acme",
            agent_id="bot",
            kill_switch=False,
            spool=spool,
            batch_size=10,
            connect_timeout_s=2,
            reconnect_backoff=(0.05, 0.2),
        )

    def emit(audit: Client, numbers: range) -> None:
        for i in numbers:
            audit.error("c", "E", message=str(i))

    with LocalBroker() as broker:
        settings = isolated_settings(broker.bootstrap, tmp_path, partitions=1)
        asyncio.run(ensure_topics(settings))
        (pid,) = [p for p in children_of(os.getpid()) if str(broker.port) in cmdline(p)]
        first = client(settings)
        emit(first, range(30))
        assert first.flush(30, delivered=True)
        os.kill(pid, signal.SIGSTOP)
        try:
            emit(first, range(30, 60))
            assert first.flush(30), first.stats  # returns: the stuck batch went to the spool
            assert not first.flush(0.5, delivered=True)
            stats = first.stats
            assert first.shutdown(5), "the disk spool keeps what the broker did not take"
        finally:
            os.kill(pid, signal.SIGCONT)
        on_topic = numbers(asyncio.run(_read_topic(settings)))
        assert stats.sent == 30 and set(range(30)) <= on_topic <= set(range(60))
        assert stats.spool_depth == stats.spooled == 30  # all of the rest, nothing dropped
        second = client(settings)
        try:
            assert second.flush(30, delivered=True), second.stats
        finally:
            second.shutdown(5)
        values = asyncio.run(_read_topic(settings))
    assert numbers(values) == set(range(60))


# A pre-fork server's pattern (gunicorn --preload, multiprocessing's fork): the client is
# made in the parent, the worker processes are forked from it and emit.
FORKING_AGENT = """
import os, sys
from agentaudit_sdk import Client
from agentaudit_sdk.settings import SdkSettings

client = Client.from_settings(SdkSettings(), tenant_id="acme", agent_id="bot", kill_switch=False)
client.error("c", "E", message="1")
assert client.flush(30, delivered=True)
pid = os.fork()
if pid == 0:
    for i in range(100, 110):
        client.error("c", "E", message=str(i))
    ok = client.flush(30, delivered=True) and client.shutdown(10)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
client.error("c", "E", message="2")
assert client.shutdown(10)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_delivers_through_its_own_client(settings: Settings) -> None:
    """After fork the child had the client but not its background thread: its events
    queued for ever (neither sent nor counted as lost), flush and shutdown timed out, and
    its exit waited for the atexit shutdown. Now the child restarts the thread with its own
    producer and its own spool slot (the parent's stays the parent's)."""

    done = _run_agent(settings, FORKING_AGENT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert numbers(asyncio.run(_read_topic(settings))) == {1, 2, *range(100, 110)}
    assert sorted(p.name for p in settings.spool_dir.iterdir()) == ["slot-00", "slot-01"]


# multiprocessing's fork children end with os._exit after their target returns: no atexit.
MULTIPROCESSING_AGENT = """
import multiprocessing, sys
from agentaudit_sdk import Client
from agentaudit_sdk.settings import SdkSettings

client = Client.from_settings(SdkSettings(), tenant_id="acme", agent_id="bot", kill_switch=False)
client.error("c", "E", message="1")
assert client.flush(30, delivered=True)  # connected: no fork while aiokafka is being imported

def work(first):
    for i in range(first, first + 10):
        client.error("c", "E", message=str(i))  # and return: no flush, no shutdown

if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=work, args=(first,)) for first in (100, 200)]
    for child in children:
        child.start()
    pool = ctx.Pool(1)
    pool.map(work, [300])
    pool.close()
    pool.join()
    for child in children:
        child.join(60)
    assert client.shutdown(10)
    sys.exit(max(child.exitcode for child in children))
"""


def test_multiprocessing_children_deliver_what_they_emitted(settings: Settings) -> None:
    """A multiprocessing child (Process, Pool worker; fork) got its own background thread
    at fork but exits through os._exit, where atexit never runs: every event it emitted
    after its last flush stayed in memory and was lost without a count (measured: 0 of 20
    from two Process children, 0 of 40 from a Pool closed and joined). Its client now shuts
    down on threading's exit hook, which that path and a normal exit both run."""

    done = _run_agent(settings, MULTIPROCESSING_AGENT)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {1, *range(100, 110), *range(200, 210), *range(300, 310)}
    assert numbers(asyncio.run(_read_topic(settings))) == expected


# The background thread is held inside its first `import aiokafka` (the gate), released, and
# the agent forks at once: the import is still under way in the parent when fork is called.
FORK_DURING_IMPORT_AGENT = """
import os, sys, threading
from agentaudit_sdk import Client
from agentaudit_sdk.settings import SdkSettings

inside, release = threading.Event(), threading.Event()

class Gate:
    def find_spec(self, name, path=None, target=None):
        if name == "aiokafka.producer":
            inside.set()
            release.wait(30)
        return None

sys.meta_path.insert(0, Gate())
client = Client.from_settings(SdkSettings(), tenant_id="acme", agent_id="bot", kill_switch=False)
assert inside.wait(30)
release.set()
pid = os.fork()
if pid == 0:
    for i in range(100, 110):
        client.error("c", "E", message=str(i))
    os._exit(0 if client.flush(15, delivered=True) and client.shutdown(10) else 3)
_, status = os.waitpid(pid, 0)
client.error("c", "E", message="1")
assert client.shutdown(10)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_while_aiokafka_is_being_imported_still_delivers(
    settings: Settings,
) -> None:
    """The client imports aiokafka on its background thread at its first connect; a fork
    landing in that import (gunicorn --preload forks right after start-up) left the child a
    half-initialised module for good: every connect failed ('partially initialized module
    aiokafka'), its events only reached its spool. Found by the SDK probe (a Pool forked
    right after the client was made). A before-fork hook now waits for that import."""

    done = _run_agent(settings, FORK_DURING_IMPORT_AGENT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert numbers(asyncio.run(_read_topic(settings))) == {1, *range(100, 110)}


SIGTERMED_AGENT = """
import os, signal, time
from agentaudit_sdk import Client
from agentaudit_sdk.settings import SdkSettings

client = Client.from_settings(SdkSettings(), tenant_id="acme", agent_id="bot", kill_switch=False)
client.error("c", "E", message="1")
assert client.flush(30, delivered=True)
for i in range(100, 150):
    client.error("c", "E", message=str(i))
os.kill(os.getpid(), signal.SIGTERM)  # what a container stop or Pool.terminate sends
time.sleep(60)
"""


def test_sigterm_delivers_what_was_queued_and_still_ends_the_process(settings: Settings) -> None:
    """SIGTERM's default disposition ends Python without atexit: the events queued in the
    linger window (here all 50) vanished uncounted. The SDK now shuts its clients down
    first, then lets SIGTERM end the process as before (exit by signal 15)."""
    import signal

    done = _run_agent(settings, SIGTERMED_AGENT)
    assert done.returncode == -signal.SIGTERM, done.stderr[-3000:]
    assert numbers(asyncio.run(_read_topic(settings))) == {1, *range(100, 150)}


def test_a_forked_childs_stats_count_only_its_own_events(settings: Settings) -> None:
    """The child inherited the parent's counters: its `stats.sent` counted every event the
    parent had sent before the fork (here 5 + its own 10 = 15), so its stats disagreed with
    what it delivered (found by the SDK probe comparing stats with the topic)."""

    script = FORKING_AGENT.replace(
        'client.error("c", "E", message="1")',
        'for i in range(1, 6):\n    client.error("c", "E", message=str(i))',
    ).replace(
        "os._exit(0 if ok else 3)",
        "s = client.stats\n    os._exit(0 if ok and (s.sent, s.enqueued) == (10, 10) else 3)",
    )
    done = _run_agent(settings, script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert numbers(asyncio.run(_read_topic(settings))) == {*range(1, 6), *range(100, 110), 2}
    # the parent's producer, copied into the child, is not reported there as left unclosed
    assert "Unclosed AIOKafkaProducer" not in done.stderr, done.stderr[-3000:]
