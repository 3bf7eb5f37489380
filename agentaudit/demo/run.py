"""`agentaudit demo`: the whole pipeline on one machine, started and checked by one command."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.prompt import Confirm

from agentaudit.broker import LocalBroker, ensure_topics
from agentaudit.demo.budgets import DEMO_BUDGETS
from agentaudit.demo.fleet import Fleet
from agentaudit.demo.history import backfill, describe
from agentaudit.demo.malformed import MALFORMED
from agentaudit.demo.summary import print_summary, write_report
from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit.sink.worker import SinkWorker
from agentaudit.store.protocol import Store
from agentaudit_sdk import kafka_config

DRAIN_TIMEOUT_S = 60.0


def _existing_trail(store: Store) -> int:
    """Events in the store's trail (0 when there is no trail yet)."""
    tables = store.query(
        "SELECT count() FROM system.tables WHERE database = 'agentaudit' AND name = 'events'"
    ).result_rows[0][0]
    if not tables:
        return 0
    return int(store.query("SELECT count() FROM agentaudit.events").result_rows[0][0])


def _confirm_reset(store: Store, settings: Settings, reset: bool, console: Console) -> None:
    """The demo starts from an empty trail; never drop someone's trail without being told to."""
    events = _existing_trail(store)
    if not events or reset:
        return
    where = str(settings.store_dir) if settings.embedded else "the ClickHouse server"
    interactive = sys.stdin.isatty() and console.is_terminal
    if interactive and Confirm.ask(
        f"{where} holds a trail of {events} events; the demo starts from an empty trail. Drop it?",
        console=console,
        default=False,
    ):
        return
    raise UserError(
        f"{where} holds a trail of {events} events and the demo starts from an empty one: pass "
        "--reset to drop it, or set AGENTAUDIT_DATA_DIR to another directory"
    )


DEMO_CHECKPOINT_INTERVAL_S = 5.0


def _demo_signing(settings: Settings, console: Console) -> Settings:
    """The demo signs its trail: a key is created on first use (where `agentaudit keys`
    keeps it), and checkpoints are signed every few seconds so the run shows several."""
    from agentaudit.keyring import KeyMissing, KeyRing, init_keys

    if settings.checkpoint_interval_s <= 0:
        return settings
    try:
        KeyRing.load(settings.key_dir)
    except KeyMissing:
        ring = init_keys(settings.key_dir)
        console.print(
            f"signing key {ring.current.fingerprint} created in {settings.key_dir} "
            "(`agentaudit keys public` shows it)"
        )
    interval = min(settings.checkpoint_interval_s, DEMO_CHECKPOINT_INTERVAL_S)
    return settings.model_copy(update={"checkpoint_interval_s": interval})


def _set_aside_checkpoints(settings: Settings, console: Console) -> None:
    """A dropped trail's anchored checkpoints would make every new chain look rolled back:
    the demo moves them aside (never deletes them), and only from its default directory."""
    anchors = settings.checkpoints_dir
    if not anchors.exists() or not any(anchors.iterdir()):
        return
    if settings.checkpoint_dir is not None:
        raise UserError(
            f"{anchors} (AGENTAUDIT_CHECKPOINT_DIR) holds checkpoints of an earlier trail; "
            "the demo starts a new one: point AGENTAUDIT_CHECKPOINT_DIR at an empty directory"
        )
    aside = anchors.with_name(f"{anchors.name}-before-{time.strftime('%Y%m%dT%H%M%S')}")
    anchors.rename(aside)
    console.print(f"the earlier trail's checkpoints moved to {aside}")


def _verify(settings: Settings, store: Store, console: Console) -> None:
    """The demo ends as an auditor would: `agentaudit verify` over the whole trail."""
    from agentaudit.trail.verdicts import VALID, summary
    from agentaudit.verify.run import public_keys, verify_store

    with console.status("agentaudit verify: every chain against its signed checkpoints…"):
        reports = verify_store(settings, store, public_keys(settings))
    for line in (ln for rep in reports for ln in rep.lines if ln.verdict != VALID):
        console.print(line.render(), highlight=False, soft_wrap=True, markup=False)
    text, ok = summary(reports)
    console.print(f"agentaudit verify: {text} ({len(reports)} chains)", highlight=False)
    if not ok:
        raise UserError("the demo's own trail does not verify (lines above): please report this")


def run_demo(
    settings: Settings,
    *,
    duration: float,
    tenants: int,
    rate: float,
    seed: int,
    console: Console,
    reset: bool = False,
) -> None:
    """Start a local broker, own the store, sink a simulated fleet's events, print a summary.

    An existing trail is dropped only with `reset` (or when the user confirms at a terminal).
    """
    from agentaudit.store import open_store
    from agentaudit.store.migrations import migrate
    from agentaudit_sdk.clock import utc_now

    settings = _demo_signing(settings, console)
    with LocalBroker(log_path=None) as local:
        settings = settings.model_copy(update={"kafka_bootstrap": local.bootstrap})
        console.print(f"local broker on {local.bootstrap}; store at {settings.store_dir}")
        with open_store(settings, own=True) as store:
            # The demo's broker is in memory and starts at offset 0; an earlier trail's
            # offsets would mark the new events as already stored. Start from an empty trail.
            _confirm_reset(store, settings, reset, console)
            _set_aside_checkpoints(settings, console)
            store.command("DROP DATABASE IF EXISTS agentaudit SYNC")
            migrate(store)
            console.print("fresh trail: schema migrated")
            signed = asyncio.run(_demo(settings, store, duration, tenants, rate, seed, console))
            print_summary(store, console)
            console.print(
                f"checkpoints: {signed} signed (every {settings.checkpoint_interval_s:g} s "
                f"per chain), anchored in {settings.checkpoints_dir}"
            )
            if settings.checkpoint_interval_s > 0:
                _verify(settings, store, console)
            report = write_report(settings, store, utc_now())
    console.print(
        f"\nreport: {report}  (charts and tables; open it in a browser, works offline)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"The store stays in {settings.store_dir}. Try:\n"
        "  agentaudit report --tenant umbrella --out umbrella.html  # one tenant's report\n"
        "  agentaudit trail --tenant acme --flagged "
        "# actions without a decision, an approval, or after a DENY",
        highlight=False,
        soft_wrap=True,
    )


async def _produce_malformed(settings: Settings) -> int:
    producer = kafka_config.producer(settings.kafka_connection(), max_request_size=2 << 20)
    await producer.start()
    try:
        for key, value, _reason in MALFORMED:
            await producer.send_and_wait(settings.events_topic, value, key=key)
    finally:
        await producer.stop()
    return len(MALFORMED)


async def _demo(
    settings: Settings,
    store: Store,
    duration: float,
    tenants: int,
    rate: float,
    seed: int,
    console: Console,
) -> int:
    """Run the fleet through the pipeline; returns the number of checkpoints signed."""
    from agentaudit.control_plane import publish_budgets
    from agentaudit.sink.pipeline_records.sink import RecordSink
    from agentaudit_sdk import Client
    from stream_jobs.app import StreamJobsApp
    from stream_jobs.runtime import running

    await ensure_topics(settings)
    await publish_budgets(settings, DEMO_BUDGETS)
    worker = SinkWorker(settings, store)
    records = RecordSink(settings, store)
    jobs = StreamJobsApp(settings)
    sinks = [asyncio.create_task(worker.run()), asyncio.create_task(records.run())]
    client = Client.from_settings(settings, agent_version="1.0.0", deployment="demo")
    fleet = Fleet(client, tenants, seed)
    try:
        with console.status("starting the sink and the stream jobs…"):
            async with running(jobs.app, timeout=90):
                await asyncio.wait_for(worker.ready.wait(), 30)
                await asyncio.wait_for(jobs.budgets_seen.wait(), 30)
                await asyncio.to_thread(client.control.wait_ready, 15)
                console.print(f"budgets published: {', '.join(b.name for b in DEMO_BUDGETS)}")
                malformed = await _produce_malformed(settings)
                with console.status("backfilling the fleet's past (anomaly and drift scenarios)…"):
                    past = await backfill(settings, store, jobs, tenants, seed)
                console.print(f"history: {past} past events produced ({describe(tenants)})")
                await _drive(fleet, duration, rate, console)
                if not await client.aflush(30, delivered=True):
                    raise UserError(
                        "the SDK could not deliver the fleet's events within 30s; is the "
                        "broker healthy?"
                    )
                expected = client.stats.sent + malformed + past
                await _drain(worker, expected, console)
                await _wait(
                    lambda: jobs.jobs.counters.handled >= expected,
                    "the stream jobs to see every event",
                )
                await _wait(
                    lambda: (
                        records.processor.counters.handled >= jobs.jobs.counters.records
                        and not records.processor.batch.ranges
                    ),
                    "the record sink to store every alert",
                )
        console.print(
            f"fleet: {fleet.stats.runs} runs, {fleet.stats.events} events emitted "
            f"(faults: {fleet.stats.by_fault}; runs the SDK stopped: "
            f"{fleet.stats.refused or 'none'}); "
            f"SDK: {client.stats}"
        )
    finally:
        await client.ashutdown(10)
        worker.stop()
        records.stop()
        await asyncio.gather(*sinks)
    return worker.checkpoints_signed


async def _wait(condition: Callable[[], bool], what: str) -> None:
    """Poll an in-process counter the pipeline updates, up to the drain timeout."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise UserError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _drive(fleet: Fleet, duration: float, rate: float, console: Console) -> None:
    """Run the fleet at about `rate` events/s for `duration` seconds, with a progress bar."""
    started = time.monotonic()
    columns = (
        TextColumn("fleet"),
        BarColumn(),
        TextColumn("{task.fields[events]} events"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("fleet", total=duration, events=0)
        while (elapsed := time.monotonic() - started) < duration:
            fleet.run_once(elapsed / duration)
            ahead = fleet.stats.events / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing to the target rate, not waiting for a result
            else:
                await asyncio.sleep(0)  # let the sink run between runs
            progress.update(
                task, completed=min(duration, time.monotonic() - started), events=fleet.stats.events
            )


async def _drain(worker: SinkWorker, expected: int, console: Console) -> None:
    """Wait until the sink has stored (or dead-lettered) every message produced."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    flushed = asyncio.Event()
    worker.on_flush = lambda _batch: flushed.set()
    while True:
        c = worker.processor.counters
        if (
            c.accepted + c.dead_lettered + c.duplicates + c.already_stored >= expected
            and not worker.processor.batch.ranges
        ):
            return
        if time.monotonic() > deadline:
            raise UserError(
                f"the sink stored {c.accepted + c.dead_lettered} of {expected} messages in time"
            )
        flushed.clear()
        try:
            await asyncio.wait_for(flushed.wait(), 1.0)
        except TimeoutError:
            continue
