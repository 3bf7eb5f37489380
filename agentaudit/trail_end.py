"""Ending a tenant's trail on purpose: a signed `end` checkpoint per chain (issue 10).

When a tenant is off-boarded its chains stop growing. Silence would look exactly like a
trail whose tail was cut off; an explicit end marker says "this chain ends here, at this
size", signed like every checkpoint and anchored outside the store. After it, a running sink
stops re-signing the chain; rows that still arrive for it are stored (nothing is lost) and
the verifier reports them as extra rows after the end.

The end checkpoint is signed over the tree rebuilt from the store and checked against the
chain's anchored checkpoints first (`agentaudit.sink.trees.rebuild`), and the rows after the
newest of them against their Kafka records (`agentaudit.sink.tailread`): a chain that does not
verify is not ended, so an end marker never blesses a tampered store.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from agentaudit.anchors import DirectoryAnchor
from agentaudit.errors import UserError
from agentaudit.keyring import KeyRing
from agentaudit.settings import Settings
from agentaudit.sink.recovery import recover
from agentaudit.sink.signing import CHECKPOINT_COLUMNS, CHECKPOINT_TABLE, ChainSigner
from agentaudit.sink.tailread import check_tails
from agentaudit.sink.trees import ChainKey, Tail, rebuild
from agentaudit.store.protocol import Store
from agentaudit.subjects.keystore import SubjectKeyStore
from agentaudit_sdk.clock import UtcNow, utc_now
from agentaudit_sdk.kafka_config import KafkaSetupError


@dataclass(frozen=True)
class Ended:
    chain: ChainKey
    size: int


def _check_tails(
    settings: Settings,
    store: Store,
    tails: dict[ChainKey, Tail],
    anchored: dict[ChainKey, int],
    tenant_id: str,
) -> None:
    """Rows after a chain's newest anchored checkpoint (a running sink's since its last tick,
    or a crashed one's) are checked against Kafka as a sink taking over does
    (`agentaudit.sink.tailread`): an end never covers a row that is not what Kafka holds."""
    parts = sorted({p for _, p in tails})
    logs = recover(store, settings.events_topic, parts, 0).logs
    keys = SubjectKeyStore.from_settings(settings) if settings.content_encryption else None
    try:
        outcomes = asyncio.run(
            check_tails(
                settings,
                store,
                tails,
                anchored,
                {p: (lg.epoch, lg.event_watermark) for p, lg in logs.items()},
                keys,
            )
        )
    except (KafkaError, KafkaSetupError, OSError, TimeoutError) as exc:
        raise UserError(
            f"not ended: the rows after the last checkpoint must be checked against Kafka "
            f"first, and Kafka did not answer ({exc!r}); try again, or wait for the sink's "
            "next checkpoint"
        ) from None
    if bad := sorted((o.key[1], o.bad_seq, o.bad) for o in outcomes if o.bad is not None):
        detail = "; ".join(f"p{p}: row {seq}: {why}" for p, seq, why in bad)
        raise UserError(f"not ended: {detail}. Run `agentaudit verify --tenant {tenant_id}`")


def end_tenant(
    settings: Settings, store: Store, tenant_id: str, clock: UtcNow = utc_now
) -> list[Ended]:
    """Sign an end checkpoint for every chain of `tenant_id`; UserError if one cannot be."""
    ring = KeyRing.load(settings.key_dir)
    anchor = DirectoryAnchor(settings.checkpoints_dir)
    rows = store.query(
        "SELECT kafka_partition, max(chain_seq) FROM agentaudit.events "
        "WHERE tenant_id = {t:String} AND kafka_topic = {topic:String} GROUP BY kafka_partition",
        {"t": tenant_id, "topic": settings.events_topic},
    ).result_rows
    heads = {(tenant_id, int(p)): (int(seq), "") for p, seq in rows}
    if not heads:
        raise UserError(f"tenant {tenant_id!r} has no rows in the trail: nothing to end")
    trees = rebuild(
        store,
        settings.events_topic,
        sorted({p for _, p in heads}),
        heads,
        anchor,
        ring.verifiers,
        settings.deployment,
    )
    trees.trees = {k: t for k, t in trees.trees.items() if k in heads}
    if bad := {k: why for k, why in trees.unsigned.items() if k in heads}:
        detail = "; ".join(f"p{p}: {why}" for (_, p), why in sorted(bad.items()))
        raise UserError(f"not ended: {detail}. Run `agentaudit verify --tenant {tenant_id}`")
    if tails := {k: t for k, t in trees.tails.items() if k in heads}:
        _check_tails(settings, store, tails, trees.anchored, tenant_id)
    trees.tails.clear()
    already = trees.ended & heads.keys()
    trees.ended -= already  # ending again re-states the end at the current size
    signed = ChainSigner(ring.signer, settings.deployment).sign(
        trees, clock(), end=frozenset(heads)
    )
    anchor.append((c.tenant_id, c.partition, c.note, c.signed_at) for c in signed)
    store.insert(
        CHECKPOINT_TABLE,
        [list(col) for col in zip(*(c.row for c in signed), strict=True)],
        CHECKPOINT_COLUMNS,
    )
    return [Ended((c.tenant_id, c.partition), c.row[3]) for c in signed]
