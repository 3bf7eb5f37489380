"""The event sink: a `PartitionSink` (`agentaudit.sink.base`) over the events topic.

Loop: consume → `SinkProcessor.add` → flush on size or interval. Flush order is what makes
it exactly once: dead-letter topic, `dead_letters` insert, `events` insert, watermarks,
and only then the Kafka offset commit. On every assignment the positions come from the
store, not from Kafka's committed offsets, so a crash at any point replays into skips; and on
every assignment, and whenever offsets go backwards or out of range, the log is checked to
be the one the store's offsets came from (`agentaudit.sink.logguard`), so a replaced log
(topic recreated, broker that kept nothing) becomes a new log epoch instead of silent skips.
The machinery (consumer group, rebalance, consume loop, log epochs, DLQ, commit) is the
base's; what is the event sink's own is here: recovery of watermarks, anchors, chain heads
and recent ids (`agentaudit.sink.recovery`), `SinkProcessor.add`, and the two inserts.
Why not a faust agent: see README "Why the sink is not a faust agent".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from agentaudit.settings import Settings
from agentaudit.sink.base import PartitionSink, Start, run_sink
from agentaudit.sink.faults import CrashPlan
from agentaudit.sink.flushing import Fenced
from agentaudit.sink.processor import Batch, DlqRecord, SinkProcessor
from agentaudit.sink.recovery import Recovered, recover
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, INGEST_COLUMNS, INGEST_TABLE, Source
from agentaudit.sink.signing import CHECKPOINT_COLUMNS, CHECKPOINT_TABLE, Signed, TrailSigning
from agentaudit.sink.tail_accept import acceptances, held_line
from agentaudit.sink.tailread import STOP_WAIT_S, TailChecks
from agentaudit.sink.trees import ChainTrees, Tail, ended_chains
from agentaudit.store.protocol import Store
from agentaudit.store.retry import store_call
from agentaudit.subjects.seal import Sealer, content_sealer
from agentaudit.verify.run import public_keys
from agentaudit_schemas.pricing import current_pricing
from agentaudit_sdk.kafka_config import KafkaSetupError

log = logging.getLogger("agentaudit.sink")


class SinkWorker(PartitionSink[Batch]):
    """Consumes the events topic into the store until `stop()` (`abandoned`: see
    `agentaudit.sink.assignment.AssignedSink`)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        crash_plan: CrashPlan | None = None,
        on_flush: Callable[[Batch], None] | None = None,
        abandoned: Callable[[], bool] | None = None,
    ) -> None:
        self.crash = crash_plan or CrashPlan.from_env()
        super().__init__(
            settings,
            store,
            topics=[settings.events_topic],
            group_id=settings.consumer_group,
            log=log,
            fault=self.crash.hit,
            on_flush=on_flush,
            abandoned=abandoned,
        )
        sealer = content_sealer(settings)
        self.processor = SinkProcessor(
            current_pricing(settings.price_overrides or "", settings.data_dir),
            settings.dedup_window,
            max_clock_skew_s=settings.max_clock_skew_s,
            seal=sealer,
            digest_key=sealer.digest_key() if sealer is not None else b"",
            erased_by=sealer.erased_by if sealer is not None else None,
        )
        self.trees = ChainTrees()
        self.trail = TrailSigning.from_settings(settings)
        self.checkpoints_signed = 0
        self._unstored_checkpoints: list[Signed] = []
        self._anchor_only: list[Signed] = []
        """Signed (and anchored) on assignment, in a callback that cannot await the table's
        insert."""
        self._tail_logs: dict[int, tuple[int, int]] = {}
        """partition → (log epoch, event watermark) at assignment: what held tails are read to."""
        self._held_since = datetime.now(UTC)
        """When the first chain of `trees.unreadable` was held: acceptances are read from then."""
        self._acceptances_logged: set[str] = set()
        seal: object = self.processor.seal
        self._tails = TailChecks(settings, store, seal.keys if isinstance(seal, Sealer) else None)

    def _read_store(self, assigned: list[TopicPartition]) -> tuple[Recovered, ChainTrees]:
        parts, topic = [tp.partition for tp in assigned], self.settings.events_topic
        state = recover(self.store, topic, parts, self.settings.dedup_window)
        if self.trail is None:
            return state, ChainTrees()
        trees = self.trail.rebuild(self.store, topic, parts, state.heads)
        self._anchor_only = self.trail.unstored(self.store, trees)
        return state, trees

    def _restore(
        self, read: tuple[Recovered, ChainTrees], assigned: list[TopicPartition]
    ) -> dict[TopicPartition, Start]:
        state, trees = read
        self.trees.load(trees)
        if self.trail is not None:
            # Take the chains over with a checkpoint before storing anything: so a row found
            # after a handoff checkpoint with none after it was written by no sink.
            self._unstored_checkpoints += self.trail.sign(self.trees)
            # Anchored by a sink that died before its table insert (`TrailSigning.unstored`).
            self._unstored_checkpoints += self._anchor_only
        logs = state.logs
        self._tail_logs = {p: (lg.epoch, lg.event_watermark) for p, lg in logs.items()}
        self._tails.reset()
        self.processor.recover(
            {p: lg.event_watermark for p, lg in logs.items() if lg.event_watermark >= 0},
            {
                p: lg.dead_letter_watermark
                for p, lg in logs.items()
                if lg.dead_letter_watermark >= 0
            },
            state.heads,
            state.recent_ids,
            {p: lg.epoch for p, lg in logs.items()},
            state.recent_digests,
        )
        resume = self.processor.resume_offset
        return {
            tp: (resume(tp.partition), logs[tp.partition].anchor if tp.partition in logs else None)
            for tp in assigned
        }

    def _epoch(self, tp: TopicPartition) -> int:
        return self.processor.epochs.get(tp.partition, 0)

    def _begin_epoch(self, tp: TopicPartition) -> int:
        return self.processor.new_epoch(tp.partition)

    def _process(self, tp: TopicPartition, messages: Sequence[Any]) -> None:
        add, topic, partition = self.processor.add, tp.topic, tp.partition
        epoch = self.processor.epochs.get(partition, 0)
        for m in messages:
            add(Source(topic, partition, m.offset, m.timestamp, m.key, epoch, m.headers), m.value)

    def _pending(self) -> tuple[int, float] | None:
        batch = self.processor.batch
        return (batch.rows, batch.started) if batch.ranges else None

    def _pending_bytes(self) -> int:
        return self.processor.batch.size

    def _take(self) -> Batch | None:
        batch = self.processor.take()
        return batch if batch.ranges else None

    def _dead_letters_out(self, batch: Batch) -> list[DlqRecord]:
        return batch.dlq

    async def _write(self, batch: Batch) -> None:
        topic = self.settings.events_topic
        if batch.dead_letters:
            await self._insert(
                "agentaudit.dead_letters",
                DEAD_LETTER_COLUMNS,
                batch.dead_letters,
                batch.dedup_token(topic, "dead_letters"),
            )
        self.crash.hit("between_inserts")
        if batch.events:
            await self._insert(
                INGEST_TABLE, INGEST_COLUMNS, batch.events, batch.dedup_token(topic, "events")
            )

    def _stored(self, batch: Batch) -> None:
        self.processor.stored(batch)
        self.trees.extend(batch.leaves)

    async def _periodic(self, *, final: bool) -> None:
        trail = self.trail
        if trail is None:
            return
        signed, self._unstored_checkpoints = self._unstored_checkpoints, []
        released = False
        if self.trees.tails:
            # Waited for at a stop (up to STOP_WAIT_S), not at a revoke (a rebalance must be
            # quick): a tail still held is not handed off (`ChainSigner.sign`), its next owner
            # checks it.
            wait = STOP_WAIT_S if final and self._stopping.is_set() else 0.0
            released, prefixes = await self._check_tails(trail, wait)
            signed += prefixes
            if final:
                self._tails.reset()
        due = final or released or trail.due()
        if due and not final:
            # A tick signs what the store acknowledged. Rows of an insert in flight are
            # already dated (ingested_at: the insert's start), so a tick signed meanwhile
            # stated a time past rows it did not cover, and verify called them extra rows
            # until the next tick. Waiting for that insert keeps every row dated before a
            # tick inside it (no new insert starts: this is the consume loop).
            await self._settle()
        if due and self.consumer is not None and self.consumer.assignment():
            # A member the group dropped signs nothing: its trees may lag the new owner's.
            # Checked after the wait above: an insert slower than the check's age would
            # leave it stale.
            await self._ensure_member()
        if due:
            if not final:
                # Chains ended meanwhile (`agentaudit end-trail`) are not signed again.
                self.trees.ended |= await store_call(
                    log, ended_chains, self.store, self.trees, stop=self._stopping
                )
                if self.trees.unreadable:
                    await self._take_acceptances()
            signed += trail.sign(self.trees, handoff=final)
        if signed:
            first = signed[0]
            token = (
                f"checkpoints|{first.signed_at.isoformat()}|{first.tenant_id}/{first.partition}"
                f"|{len(signed)}"
            )
            await self._insert(CHECKPOINT_TABLE, CHECKPOINT_COLUMNS, [c.row for c in signed], token)
            self.checkpoints_signed += len(signed)

    async def _check_tails(self, trail: TrailSigning, wait_s: float) -> tuple[bool, list[Signed]]:
        """The held tails' check against Kafka (`agentaudit.sink.tailread`), beside consuming.
        Once done, a good chain is signable from
        now on (True: sign now); a bad one is unsigned, its checkpoint signed up to its last
        good row (returned for the table). Kafka unreachable: tried again an interval later."""
        assignments = self._assignments
        try:
            outcomes = await self._tails.poll(
                self.trees.tails,
                self.trees.anchored,
                self._tail_logs,
                assignments,
                set(self.trees.trees),
                wait_s,
            )
        except (KafkaError, KafkaSetupError, OSError, TimeoutError) as exc:
            self._tails.retry_at = time.monotonic() + trail.interval_s
            log.warning("unsigned tails not checked yet, Kafka did not answer (%r)", exc)
            return False, []
        except Exception:  # never a crash loop at every takeover: the tails stay held
            self._tails.retry_at = time.monotonic() + trail.interval_s
            log.exception("unsigned tails not checked (tried again in an interval)")
            return False, []
        if outcomes is None or self._assignments != assignments:
            return False, []
        prefixes: list[Signed] = []
        for out in outcomes:
            tail = self.trees.tails.pop(out.key, None)
            if out.bad is None:
                continue
            tenant, part = out.key
            self.trees.unsigned[out.key] = f"row {out.bad_seq}: {out.bad}"
            if out.unreadable and tail is not None:
                # Stated in a signed checkpoint (nothing new signed): what `agentaudit
                # accept-tail` reads, and what an acceptance must name to be acted on.
                held = Tail(out.tree, tail.head, tail.root)
                if not self.trees.unreadable:
                    self._held_since = trail.clock()
                self.trees.unreadable[out.key] = held
                prefixes.append(trail.sign_prefix(out.key, out.tree, (held_line(held, out.bad),)))
                log.error(
                    "chain %s/p%s will not be signed: its rows %d..%d cannot be checked against "
                    "Kafka (%s). Events stay stored unsigned until an operator vouches for "
                    "them: `agentaudit accept-tail --tenant %s --partition %s --through-seq %d "
                    "--reason ...`; runbooks/TrailUnsigned.md",
                    tenant,
                    part,
                    out.tree.size + 1,
                    tail.head,
                    out.bad,
                    tenant,
                    part,
                    tail.head,
                )
                continue
            if out.key not in self.trees.trees:  # every row of the chain gone
                log.critical(
                    "tenant %s, partition %s: %s. Run `agentaudit verify --tenant %s`; "
                    "runbooks/TrailUnsigned.md",
                    tenant,
                    part,
                    out.bad,
                    tenant,
                )
                continue
            prefixes.append(trail.sign_prefix(out.key, out.tree))
            log.critical(
                "chain %s/p%s: row %s of its unsigned tail is not what Kafka holds: %s. Signed "
                "up to row %d, never past it; its new events are stored unsigned. Run "
                "`agentaudit verify --tenant %s`; runbooks/TrailUnsigned.md",
                tenant,
                part,
                out.bad_seq,
                out.bad,
                out.tree.size,
                tenant,
            )
        rows = sum(out.checked for out in outcomes)
        log.info(
            "checked %d unsigned tail rows of %d chains against Kafka in %.3f s",
            rows,
            len(outcomes),
            time.perf_counter() - self._tails.started,
        )
        return any(out.bad is None for out in outcomes), prefixes

    async def _take_acceptances(self) -> None:
        """Chains held unreadable that an operator accepted (`agentaudit accept-tail`) are
        signable again from this tick on (`agentaudit.sink.tail_accept`)."""
        trees, settings = self.trees, self.settings
        found = await store_call(
            log,
            acceptances,
            self.store,
            public_keys(settings),
            settings.deployment,
            dict(trees.unreadable),
            self._held_since,
            self._acceptances_logged,
            stop=self._stopping,
        )
        for key, event_id in found.items():
            held = trees.unreadable.pop(key)
            trees.unsigned.pop(key, None)
            trees.accepted[key] = event_id
            log.warning(
                "chain %s/p%s: rows %d..%d accepted by an operator (event %s); signed again",
                *key,
                held.signed.size + 1,
                held.head,
                event_id,
            )

    def _lost(self, exc: Fenced) -> None:
        super()._lost(exc)
        self._tails.reset()
        self.trees.load(ChainTrees())  # the new owner signs these chains now

    def _offsets(self, batch: Batch) -> dict[TopicPartition, int]:
        topic = self.settings.events_topic
        return {TopicPartition(topic, p): last + 1 for p, (_, last) in batch.ranges.items()}

    def _dlq_unsent(self) -> None:
        self.processor.counters.dlq_unsent += 1


async def run_worker(
    settings: Settings,
    store: Store,
    stop: asyncio.Event | None = None,
    *,
    watch: Callable[[SinkWorker], None] | None = None,
) -> SinkWorker:
    """Run a SinkWorker until `stop` is set (or forever); used by the CLI and the demo.
    `watch` sees the worker before it starts (the worker's metrics set its `on_flush`)."""
    worker = SinkWorker(settings, store)
    if watch is not None:
        watch(worker)
    await run_sink(worker, stop, "events")
    return worker
