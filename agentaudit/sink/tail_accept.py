"""An operator's acceptance of a chain's tail that Kafka can no longer confirm.

A sink that takes a partition over from an owner that died checks each chain's unsigned
tail against the Kafka records (`agentaudit.sink.tailcheck`). When Kafka no longer holds them
(retention, a replaced log) the verdict is *unreadable*: the rows may well be genuine, but
nothing can confirm them, so the chain is not signed and its new events are stored unsigned.
Only a person can vouch for such rows, and that must be an explicit, recorded decision:

1. The sink states what it holds: a checkpoint of the chain at its newest anchored size
   (nothing new is signed) with the line ``unreadable-tail <last seq> <root hex>``: the rows
   after it up to ``<last seq>``, whose Merkle root is ``<root hex>``, are held unreadable.
   Signed and anchored, so the command below reads the sink's verdict, not the store's word.
2. ``agentaudit accept-tail`` refuses unless the chain's newest anchored checkpoint says so
   (a chain refused as *forged* has no such line: that is evidence, not something to vouch
   for), ``--through-seq`` is that last seq, and a reason is given. It then publishes a
   signed ``tail_accepted`` event (who: ``user_id``; when; chain, rows, root, the verdict it
   overrides, why) into the tenant's own trail, where `agentaudit system-log` shows it.
3. The sink holding the chain looks for such events at each tick while it holds a chain
   unreadable; one that is genuine (the deployment's signature) and names exactly the rows and
   root it holds makes the chain signable again: the next checkpoint carries the line
   ``accepted <event id>`` and every one after it is an ordinary tick's. Done by the running
   sink, not at a takeover: a new owner would hold the tail again (its rows since its own
   takeover included) and Kafka could still not confirm it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from agentaudit.anchors import DirectoryAnchor
from agentaudit.errors import UserError
from agentaudit.keyring import KeyRing
from agentaudit.settings import Settings
from agentaudit.sink.trees import ChainKey, Tail, anchored
from agentaudit.store.protocol import Store
from agentaudit.trail.checkpoint import Checkpoint
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.system_log import system_log

log = logging.getLogger("agentaudit.sink")

HELD = "unreadable-tail"
"""The first word of a checkpoint line stating the chain's tail held unreadable."""
ACCEPTED = "accepted"
"""The first word of the line of the checkpoint signed on an operator's acceptance."""
EVENT_TYPE = "tail_accepted"


def held_line(tail: Tail, why: str) -> str:
    """The checkpoint line stating `tail` held unreadable, and `why` (module docstring)."""
    return f"{HELD} {tail.head} {tail.root.hex()} {' '.join(why.split())}".rstrip()


@dataclass(frozen=True)
class Held:
    """What a chain's newest anchored checkpoint says the sink holds unreadable."""

    signed: int
    """The checkpoint's size: the rows after it are held."""
    head: int
    root: str
    why: str


def held_by(cp: Checkpoint) -> Held | None:
    """The tail `cp` states held unreadable, or None (no such line, or malformed)."""
    for line in cp.extensions:
        word, _, rest = line.partition(" ")
        parts = [*rest.split(" ", 2), ""]
        if word == HELD and parts[0].isdigit() and len(parts[1]) == 64:
            return Held(cp.size, int(parts[0]), parts[1], parts[2])
    return None


def acceptance_payload(
    settings: Settings,
    tenant: str,
    partition: int,
    through_seq: int,
    reason: str,
) -> dict[str, object]:
    """The `tail_accepted` payload for the chain (unsigned), or `UserError` why it is refused:
    not held unreadable by the sink's newest checkpoint, another last row, no reason."""
    if not reason.strip():
        raise UserError("a --reason is required: why the rows can be vouched for")
    ring = KeyRing.load(settings.key_dir)
    key = (tenant, partition)
    cp = anchored(
        DirectoryAnchor(settings.checkpoints_dir), ring.verifiers, settings.deployment, key
    )
    held = None if cp is None else held_by(cp)
    if cp is None or held is None:
        raise UserError(
            f"chain {tenant}/p{partition} is not held as unreadable (its newest checkpoint "
            "outside the store does not say so): nothing to accept. A chain refused as "
            "forged is evidence, not accepted by this command: runbooks/TrailUnsigned.md"
        )
    if through_seq != held.head:
        raise UserError(
            f"chain {tenant}/p{partition}: the held tail is rows {held.signed + 1}..{held.head}; "
            f"--through-seq {through_seq} is not its last row"
        )
    return {
        "partition": partition,
        "from_seq": held.signed + 1,
        "through_seq": held.head,
        "root": held.root,
        "verdict": f"unreadable: {held.why or 'not checked against Kafka'}"[:2_048],
        "reason": reason.strip(),
    }


def accept_tail(
    settings: Settings,
    tenant: str,
    partition: int,
    through_seq: int,
    reason: str,
    by: str,
) -> str:
    """Record an operator's acceptance (a signed `tail_accepted` event, published and
    acknowledged) of the chain's held tail; its event id. `UserError` when refused."""
    from agentaudit.system_events import publish, signed_event

    payload = acceptance_payload(settings, tenant, partition, through_seq, reason)
    event = signed_event(settings, EVENT_TYPE, tenant, payload, user_id=by)
    publish(settings, [event])
    return str(event["event_id"])


SINCE_SLACK = timedelta(hours=1)
"""How far before a tail was held an acceptance of it may be dated (the operator's clock)."""


def acceptances(
    store: Store,
    keys: PublicKeys,
    deployment: str,
    held: dict[ChainKey, Tail],
    since: datetime,
    seen: set[str] | None = None,
) -> dict[ChainKey, str]:
    """The chains of `held` a genuine `tail_accepted` event accepts exactly (its rows and
    root are the held tail's) → the event id. Read from `since` (when the tails were held)
    less `SINCE_SLACK`: a range of the store's key, not the tenant's whole history at every
    tick. Others are logged once (`seen`: the event ids logged), not acted on."""
    out: dict[ChainKey, str] = {}
    seen = set() if seen is None else seen
    for tenant in sorted({t for t, _ in held}):
        for entry in system_log(
            store, keys, deployment, (EVENT_TYPE,), tenant, since - SINCE_SLACK
        ):
            p = entry.payload
            key = (tenant, p.get("partition"))
            tail = held.get(key)  # type: ignore[arg-type]
            if tail is None or key in out or not isinstance(p.get("through_seq"), int):
                continue
            if p["through_seq"] <= tail.signed.size:
                continue  # an earlier acceptance, signed since
            want = (tail.signed.size + 1, tail.head, tail.root.hex())
            got = (p.get("from_seq"), p.get("through_seq"), p.get("root"))
            if not entry.genuine or got != want:
                if entry.event_id in seen:
                    continue
                seen.add(entry.event_id)
                log.error(
                    "chain %s/p%s: tail acceptance %s not acted on (%s; held: rows %d..%d, "
                    "root %s)",
                    *key,
                    entry.event_id,
                    entry.status if not entry.genuine else f"it names rows {got}",
                    *want,
                )
                continue
            out[key] = entry.event_id  # type: ignore[index]
    return out
