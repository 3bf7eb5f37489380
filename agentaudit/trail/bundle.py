"""An auditor's export bundle: its layout, and verifying it (``python3 verify.py``).

Pure and shippable: the standard library, ``cryptography`` and this package. ``agentaudit
export`` copies this package into the bundle next to a two-line ``verify.py``, and
``agentaudit verify --export DIR`` calls :func:`verify_bundle` from the installed package: the
auditor and the operator run the very same code.

Layout (``FORMAT``)::

    OUT/verify.py                      runs trail.bundle.main
    OUT/trail/*.py                     this package, copied
    OUT/public-keys.json               the deployment's public-key history (trail.pubkeys)
    OUT/manifest.json                  {"format", "deployment", "tenant", "from", "to",
                                        "exported_at", "chains": [chain, ...]}
      chain = {"tenant_id", "partition", "origin", "rows", "checkpoints", "sources",
               "start_size", "start_frontier": [hex, ...], "start_prev_hash"}
    OUT/chains/<tenant>/p<partition>/rows.jsonl         one row per line, chain_seq order
    OUT/chains/<tenant>/p<partition>/checkpoints.jsonl  {"note", "sources", "frontier"}

A row line: ``chain_seq``, ``event_id``, ``ingested_at`` (RFC 3339) and ``ingested_at_us`` (unix
µs), ``payload`` (the canonical JSON bytes, as a JSON string: exact), ``cost_usd`` (the fixed
nine-decimal string), ``priced``, ``pricing_version``, ``prev_hash``, ``row_hash``,
``leaf_hash``, and ``derived`` (the store's typed columns, for reading; the leaf commits to the
payload, cost, priced and pricing version, and the payload determines the typed columns).

The rows of a chain start after ``start_size`` leaves whose compact tree is ``start_frontier``
(untrusted: it counts only if, extended by the rows, it reproduces a signed root). Checkpoints
keep the sources they were found in, so ``not found`` is reported here as well.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

from .audit import ChainAudit
from .pubkeys import PublicKeys, PublicKeysError
from .verdicts import ChainReport, Found, Row, summary

FORMAT = "agentaudit-export/v1"
MANIFEST = "manifest.json"
PUBLIC_KEYS = "public-keys.json"


class BundleError(ValueError):
    """The bundle is malformed or incomplete."""


def chain_dir(tenant: str, partition: int) -> str:
    """The chain's directory inside the bundle (relative)."""
    return f"chains/{tenant}/p{partition}"


def _rows(path: Path) -> Iterator[Row]:
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            try:
                d = json.loads(line)
                yield (
                    int(d["chain_seq"]),
                    d["payload"].encode("utf-8"),
                    Decimal(d["cost_usd"]),
                    bool(d["priced"]),
                    str(d["pricing_version"]),
                    str(d["prev_hash"]),
                    str(d["row_hash"]),
                    str(d["leaf_hash"]),
                    int(d["ingested_at_us"]) / 1e6,
                    True,
                    "",
                )
            # ArithmeticError: decimal's InvalidOperation ("abc" as a cost) and a time past
            # any float are no ValueError; they escaped as a traceback.
            except (ValueError, ArithmeticError, KeyError, TypeError, AttributeError) as e:
                raise BundleError(f"{path}:{n}: not a row: {e!r}") from None


def _found(path: Path) -> list[Found]:
    out = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            d = json.loads(line)
            fr = d.get("frontier")
            frontier = None if fr is None else tuple(bytes.fromhex(h) for h in fr)
            out.append(Found(str(d["note"]), frozenset(d["sources"]), frontier))
        except (ValueError, KeyError, TypeError) as e:
            raise BundleError(f"{path}:{n}: not a checkpoint line: {e}") from None
    return out


def verify_bundle(
    root: Path, progress: Callable[[int], None] | None = None, keys: PublicKeys | None = None
) -> list[ChainReport]:
    """Verify every chain of the bundle in ``root`` against ``keys`` (an auditor's own copy of
    the public keys), or else the bundle's own ``public-keys.json``: whoever made the bundle
    could have replaced that one with a key of theirs and re-signed everything."""
    try:
        manifest = json.loads((root / MANIFEST).read_bytes())
        if keys is None:
            keys = PublicKeys.parse((root / PUBLIC_KEYS).read_bytes())
    except (OSError, ValueError, PublicKeysError) as e:
        raise BundleError(f"{root}: not an export bundle: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{root / MANIFEST}: format is not {FORMAT!r}")
    reports = []
    for c in manifest.get("chains", []):
        try:
            audit = ChainAudit(
                c["origin"],
                c["tenant_id"],
                int(c["partition"]),
                keys,
                _found(root / c["checkpoints"]),
                sources=frozenset(c["sources"]),
                start_size=int(c["start_size"]),
                start_frontier=[bytes.fromhex(h) for h in c["start_frontier"]],
                start_prev_hash=c["start_prev_hash"],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{root / MANIFEST}: bad chain entry: {e}") from None
        reports.append(audit.run(_rows(root / c["rows"]), progress))
    return reports


def print_reports(reports: list[ChainReport], out: Callable[[str], None] = print) -> bool:
    """Print every line and the summary; whether everything is valid."""
    for rep in reports:
        for line in rep.lines:
            out(line.render())
    text, ok = summary(reports)
    out(text)
    return ok


def main(argv: list[str] | None = None) -> int:
    """``verify.py [--keys PUBLIC_KEYS_FILE] [BUNDLE_DIR]``: exit 0 all valid, 1 something
    invalid, 2 unreadable. ``--keys``: the auditor's own copy of the deployment's public keys
    (``agentaudit keys public``), used instead of the bundle's."""
    args = list(sys.argv[1:] if argv is None else argv)
    keys = None
    try:
        if args[:1] == ["--keys"]:
            if len(args) < 2:
                raise BundleError("--keys needs a public-key file")
            keys = PublicKeys.parse(Path(args[1]).read_bytes())
            args = args[2:]
        root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
        reports = verify_bundle(root, keys=keys)
    except (OSError, PublicKeysError) as e:
        print(f"error: public keys: {e}", file=sys.stderr)
        return 2
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if print_reports(reports) else 1
