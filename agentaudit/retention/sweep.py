"""Retention enforcement: cut a prefix of each chain, never arbitrary rows.

Per chain (tenant, partition) of a tenant with a retention of D days and no tenant hold, the
horizon H is the largest size of a checkpoint that (1) is in the anchor directory and verifies
with the deployment's public keys, (2) was signed at least D days before now (the host's
clock, checked against the trail's: `agentaudit.retention.clock`), (3) has a stored frontier
that reproduces its root (the tree, and so verification, resumes there), (4) is below the
chain's last row (the chain's head and the sink's recovery stay in the store), (5) below the
first row of every held subject in the chain and (6) below the first row that occurred less
than D days ago by the agents' clocks (less the clock tolerance). Before cutting, the stored leaf
hashes of the rows to go must reproduce H's signed root (a prefix that does not verify is
evidence: it is never deleted). Then a `retention_applied` event naming every horizon of the
tenant is published (acknowledged, or nothing is deleted), one `retention_log` row per cut
chain is written, and the rows with chain_seq <= H are deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from agentaudit.anchors import DirectoryAnchor
from agentaudit.keyring import KeyRing
from agentaudit.retention.clock import SweepTime, sweep_time
from agentaudit.retention.evidence import sign_claim
from agentaudit.retention.policy import Policy, Publish, log_rows, policies
from agentaudit.settings import Settings
from agentaudit.store.protocol import Store
from agentaudit.store.protocol import column_text as _text
from agentaudit.system_events import publish, system_event
from agentaudit.trail.checkpoint import CheckpointError, open_checkpoint, origin_for
from agentaudit.trail.merkle import CompactTree
from agentaudit.trail.note import NoteError
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.verdicts import in_use
from agentaudit_sdk.clock import UtcNow, utc_now

log = logging.getLogger(__name__)

_CHAINS_SQL = """
SELECT kafka_partition, min(chain_seq), max(chain_seq) FROM agentaudit.events
WHERE tenant_id = {t:String} GROUP BY kafka_partition ORDER BY kafka_partition"""
_FLOOR_SQL = """
SELECT min(chain_seq) FROM agentaudit.events
WHERE tenant_id = {t:String} AND kafka_partition = {p:UInt32}
  AND has({subjects:Array(String)}, user_id)"""
_YOUNG_SQL = """
SELECT min(chain_seq) FROM agentaudit.events
WHERE tenant_id = {t:String} AND kafka_partition = {p:UInt32} AND chain_seq > {lo:UInt64}
  AND toUnixTimestamp64Micro(occurred_at) > {bound:Int64}"""
_CHECKPOINTS_SQL = """
SELECT tree_size, note, frontier FROM agentaudit.checkpoints
WHERE tenant_id = {t:String} AND kafka_partition = {p:UInt32}
  AND tree_size >= {lo:UInt64} AND tree_size < {hi:UInt64}
ORDER BY tree_size DESC"""
_LEAVES_SQL = """
SELECT chain_seq, leaf_hash FROM agentaudit.events
WHERE tenant_id = {t:String} AND kafka_partition = {p:UInt32}
  AND chain_seq > {lo:UInt64} AND chain_seq <= {hi:UInt64}
ORDER BY chain_seq"""
_LAST_CUTS_SQL = """
SELECT tenant_id, kafka_partition, max(horizon), argMax(days, horizon),
       argMax(changed_at, horizon)
FROM agentaudit.retention_log
WHERE kind = 'applied' AND ({t:String} = '' OR tenant_id = {t:String})
GROUP BY tenant_id, kafka_partition ORDER BY tenant_id, kafka_partition"""
_DELETE_SQL = """
ALTER TABLE agentaudit.events DELETE
WHERE tenant_id = {t:String} AND kafka_partition = {p:UInt32} AND chain_seq <= {h:UInt64}
SETTINGS mutations_sync = 2"""


@dataclass(frozen=True)
class Cut:
    """A chain's horizon after a sweep: rows chain_seq <= ``horizon`` gone."""

    tenant_id: str
    partition: int
    horizon: int
    previous: int
    days: int
    floor: int | None = None


@dataclass(frozen=True)
class Kept:
    """What a sweep left in place and why: a chain (rows chain_seq <= ``horizon`` already
    gone), or with ``partition`` None a whole tenant."""

    tenant_id: str
    partition: int | None
    horizon: int
    reason: str


@dataclass(frozen=True)
class LastCut:
    """A chain's newest horizon in `agentaudit.retention_log`."""

    tenant_id: str
    partition: int
    horizon: int
    days: int
    at: datetime


@dataclass
class SweepReport:
    """One sweep: the chains cut, what it kept and why, and (when the host clock ran ahead
    of the trail) why it cut as of an earlier time (`agentaudit.retention.clock`)."""

    cuts: list[Cut] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    clock_refused: str = ""


def last_cuts(store: Store, tenant: str = "") -> dict[tuple[str, int], LastCut]:
    """Every chain's newest cut (or ``tenant``'s chains'), by (tenant, partition): the
    highest horizon, since a cut only grows (rows deleted do not come back). Before, the
    newest by `changed_at` (the sweeping host's clock): a sweep with a clock behind the last
    one left its deeper cut out, from `retention show` and from the next sweep's restatement."""
    rows = store.query(_LAST_CUTS_SQL, {"t": tenant}).result_rows
    return {
        (str(t), int(p)): LastCut(str(t), int(p), int(h), int(d), at) for t, p, h, d, at in rows
    }


def sweep(
    settings: Settings,
    store: Store,
    keys: PublicKeys,
    *,
    tenant: str = "",
    now: UtcNow = utc_now,
    publish_: Publish = publish,
    trust_clock: bool = False,
) -> list[Cut]:
    """Apply every tenant's retention (or ``tenant``'s) once; the chains cut."""
    return sweep_report(
        settings, store, keys, tenant=tenant, now=now, publish_=publish_, trust_clock=trust_clock
    ).cuts


def sweep_report(
    settings: Settings,
    store: Store,
    keys: PublicKeys,
    *,
    tenant: str = "",
    now: UtcNow = utc_now,
    publish_: Publish = publish,
    stopping: Callable[[], bool] = lambda: False,
    trust_clock: bool = False,
) -> SweepReport:
    """`sweep`, also saying what was kept and why. ``stopping()`` is asked before each tenant:
    once true, no further tenant is swept (a worker shutting down). The host clock (`now`) is
    checked against the trail's own (`sweep_time`) unless ``trust_clock``."""
    anchor = DirectoryAnchor(settings.checkpoints_dir)
    report = SweepReport()
    found = policies(store, tenant)
    when: SweepTime | None = None  # asked once, and only when a tenant has something to cut
    if tenant and tenant not in found:
        report.kept.append(Kept(tenant, None, 0, "no retention policy: kept forever"))
    for _, pol in sorted(found.items()):
        if stopping():
            break
        if pol.tenant_hold:
            report.kept.append(Kept(pol.tenant_id, None, 0, "legal hold on the tenant"))
        elif pol.days is None:
            report.kept.append(Kept(pol.tenant_id, None, 0, "retention: forever"))
        else:
            if when is None:
                tolerance = None if trust_clock else settings.retention_clock_tolerance_s
                when = sweep_time(store, now(), tolerance)
                report.clock_refused = when.refused
            _sweep_tenant(settings, store, keys, anchor, pol, when.at, publish_, report)
    return report


def _sweep_tenant(
    settings: Settings,
    store: Store,
    keys: PublicKeys,
    anchor: DirectoryAnchor,
    pol: Policy,
    at: datetime,
    publish_: Publish,
    report: SweepReport,
) -> None:
    t, days = pol.tenant_id, pol.days
    assert days is not None
    cutoff = (at - timedelta(days=days)).timestamp()
    # Checkpoint times are the signing host's clock: one that ran behind while it signed made
    # new rows look old enough. Rows are cut only if the agents' clocks agree (`_first_young`).
    young_bound = (
        at - timedelta(days=days) + timedelta(seconds=settings.retention_clock_tolerance_s)
    )
    prior = {p: (c.horizon, c.days) for (_, p), c in last_cuts(store, t).items()}
    planned: list[Cut] = []
    for part, first, last in store.query(_CHAINS_SQL, {"t": t}).result_rows:
        part, h0 = int(part), int(first) - 1
        floor = None
        if pol.held_subjects:
            f = store.query(
                _FLOOR_SQL, {"t": t, "p": part, "subjects": pol.held_subjects}
            ).result_rows
            floor = int(f[0][0]) if f and f[0][0] else None
        young = _first_young(store, t, part, h0, young_bound)
        hi = min(int(last), floor or int(last), young or int(last))
        too_young = f"#{young} occurred less than {days} days ago by the agents' clocks"
        if young == h0 + 1:  # the first row left: no checkpoint can be below it
            h, why = h0, too_young
        else:
            h, why = _horizon(settings, store, keys, anchor, t, part, h0, hi, cutoff, days)
            if young is not None and young < int(last):
                why += f" ({too_young})"
        if h > h0:
            planned.append(Cut(t, part, h, h0, days, floor))
            continue
        if floor is not None and floor < int(last):
            why += f" (held subjects' first row is #{floor})"
        report.kept.append(Kept(t, part, h0, why))
        if part in prior and prior[part][0] > 0:  # restated: the newest event lists all
            planned.append(Cut(t, part, prior[part][0], prior[part][0], prior[part][1], floor))
    new = [c for c in planned if c.horizon > c.previous]
    if not new:
        return
    payload = {
        "days": days,
        "held_subjects": pol.held_subjects,
        "partitions": [c.partition for c in planned],
        "horizons": [c.horizon for c in planned],
        "horizon_days": [c.days for c in planned],
        "floors": [c.floor or 0 for c in planned],
    }
    # Signed: anyone who can produce to the events topic could publish such a claim.
    payload["signature"] = sign_claim(
        KeyRing.load(settings.key_dir).signer, settings.deployment, t, at, payload
    )
    if _policy_moved(store, pol, report):
        return
    event = system_event("retention_applied", t, payload, user_id="retention", now=lambda: at)
    publish_(settings, [event])  # recorded first: nothing is deleted unrecorded
    if _policy_moved(store, pol, report):  # placed while the event was being published
        return
    # The table too, before the deletes: a sweep killed after a delete and before its row left
    # rows gone that `retention_log` never named (and that no later sweep restated: `prior`
    # comes from it). Killed before a delete instead, the row names a cut not made yet; the
    # next sweep finds those rows still there and cuts them again (a delete is idempotent).
    log_rows(
        store,
        [
            {
                "changed_at": at,
                "tenant_id": t,
                "kind": "applied",
                "days": c.days,
                "kafka_partition": c.partition,
                "horizon": c.horizon,
                "actor": "retention",
                "reason": f"retention {c.days} days",
                "event_id": event["event_id"],
            }
            for c in new
        ],
    )
    for c in new:
        store.command(_DELETE_SQL, {"t": t, "p": c.partition, "h": c.horizon})
    report.cuts += new


def _first_young(store: Store, t: str, p: int, h0: int, bound: datetime) -> int | None:
    """The chain's first row after ``h0`` whose `occurred_at` is after ``bound`` (None: none):
    no cut may reach it. Before, a signer whose clock ran 40 days behind made rows stored that
    day look 40 days old, and a 30-day retention deleted them at the next sweep."""
    micros = int(bound.timestamp() * 1_000_000)
    row = store.query(_YOUNG_SQL, {"t": t, "p": p, "lo": h0, "bound": micros}).result_rows
    return int(row[0][0]) if row and row[0][0] else None


def _policy_moved(store: Store, pol: Policy, report: SweepReport) -> bool:
    """Whether the tenant's policy changed since the sweep read it (a legal hold placed while
    it ran, say): then nothing of the tenant is cut now, the next sweep plans afresh. Before,
    the policy read at the sweep's start held for the whole sweep, so a hold placed meanwhile
    did not stop the deletes. Asked again after the event's publish, just before deleting."""
    now = policies(store, pol.tenant_id).get(pol.tenant_id)
    if now is not None and now.changed_at == pol.changed_at:
        return False
    log.warning("retention: %s's policy changed during the sweep; not cut", pol.tenant_id)
    report.kept.append(Kept(pol.tenant_id, None, 0, "policy changed during the sweep: not cut"))
    return True


def _horizon(
    settings: Settings,
    store: Store,
    keys: PublicKeys,
    anchor: DirectoryAnchor,
    t: str,
    p: int,
    h0: int,
    below: int,
    cutoff: float,
    days: int,
) -> tuple[int, str]:
    """The chain's new horizon, or ``h0`` and why nothing may be cut: see the module docstring."""
    origin = origin_for(settings.deployment, t, p)
    anchored = set(anchor.notes(t, p))
    params = {"t": t, "p": p, "lo": h0, "hi": below}
    rows = store.query(_CHECKPOINTS_SQL, params).result_rows
    verifiers = keys.verifiers(origin)
    start: CompactTree | None = CompactTree() if h0 == 0 else None
    best: tuple[int, bytes] | None = None
    young: float | None = None  # the oldest verifying checkpoint's time, when all are too young
    for size, note, frontier in rows:
        note, size = _text(note), int(size)
        if note not in anchored:
            continue
        try:
            cp, opened = open_checkpoint(note, verifiers, origin)
            tree = CompactTree(size, [bytes.fromhex(_text(h)) for h in frontier])
        except (NoteError, CheckpointError, ValueError):
            continue
        stamps = [x[5:] for x in cp.extensions if x.startswith("time ")]
        times = [int(x) for x in stamps if x.isdigit()]
        key = keys.key_for(origin, opened.verified[0].key_id)
        # What verify rejects is no horizon: one time line, signed while its key was in use.
        if (
            tree.root() != cp.root_hash
            or len(stamps) != 1
            or len(times) != 1
            or key is None
            or not in_use(key, times[0])
        ):
            continue
        if size == h0:
            start = tree
            continue
        if best is None and times[0] <= cutoff:
            best = (size, cp.root_hash)
        elif best is None:
            young = times[0] if young is None else min(young, times[0])
    if start is None:
        return h0, f"no stored frontier reproduces the signed root at #{h0} (run agentaudit verify)"
    if best is None and young is not None:
        signed = datetime.fromtimestamp(young, UTC).isoformat(timespec="seconds")
        return h0, f"no checkpoint below #{below} signed {days} days ago yet (oldest: {signed})"
    if best is None:
        return h0, f"no anchored checkpoint that verifies between #{h0 + 1} and #{below - 1}"
    size, root = best
    leaves = store.query(_LEAVES_SQL, {**params, "hi": size}).result_rows
    seqs = [int(s) for s, _ in leaves]
    if seqs != list(range(h0 + 1, size + 1)) or any(
        not _text(lh).strip("\x00") for _, lh in leaves
    ):
        log.error(
            "retention: %s/p%s rows %s-%s are not all there with leaf hashes; not cut",
            t,
            p,
            h0 + 1,
            size,
        )
        return (
            h0,
            f"rows #{h0 + 1}-#{size} are not all stored with leaf hashes (run agentaudit verify)",
        )
    start.extend([bytes.fromhex(_text(lh)) for _, lh in leaves])
    if start.root() != root:
        log.error(
            "retention: %s/p%s rows %s-%s do not reproduce the signed root at %s; not cut "
            "(run agentaudit verify)",
            t,
            p,
            h0 + 1,
            size,
            size,
        )
        return (
            h0,
            f"rows #{h0 + 1}-#{size} do not reproduce the signed root (run agentaudit verify)",
        )
    return size, ""
