"""Instructions per event of the sink process's `SinkProcessor.add`, counted by valgrind.

The A/B unit for code changes on a shared, noisy machine. CPU time here swings by a third
between identical runs (`sink_stages add` at one commit, two runs minutes apart: 111 and
172 µs per event), so a regression of a few µs cannot be told from the load; the number of
instructions executed does not depend on it. `count(tree, n)` runs `SinkProcessor.add` (content
sealing on, as deployed) over the first `n` of the same 3,000 SDK events
(`agentaudit.bench.sink_stages.sdk_events`) in a child Python run by
`valgrind --tool=cachegrind --cache-sim=no`, with `PYTHONHASHSEED=0`; per event is
(count(3,000) − count(10)) / 2,990, so start-up and imports cancel out. ~1 minute per tree on
a quiet machine.

Two runs of the same tree differ by ~0.1 % (temporary names, the collector's timing), ~700
instructions per event; `SinkProcessor.add` executes ~660k per event, and the changes worth an
A/B move thousands. Instructions are not time (cache misses and mispredicted branches cost
cycles uncounted): use them to compare two trees of the same code, CPU time for absolute
figures. Nor is valgrind's CPU the machine's: it lacks the SHA extensions, so OpenSSL's SHA-256
runs its portable code, 27.3k instructions for 700 bytes where the real CPU takes ~1.4 µs
(measured here): a change that adds a hash looks ~10x dearer than it is. A module that a tree
lacks is imported from this checkout's install instead.

`python -m agentaudit.bench.instructions [TREE ...]` prints instructions per event of each source
tree (a checkout or a `git worktree add --detach DIR COMMIT`; default: this one). A tree is run
with its own `agentaudit` and SDK (`TREE` and `TREE/sdk` first on `PYTHONPATH`) and this
virtualenv's packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

EVENTS = 3_000
"""Events generated in every run (the same ones); `n` of them go through `add`."""
FEW = 10

_CHILD = """
import sys, tempfile
from pathlib import Path
from agentaudit.bench.sink_stages import START, sdk_events
from agentaudit.sink.processor import SinkProcessor
from agentaudit.subjects.keystore import SubjectKeyStore
from agentaudit.subjects.seal import Sealer
from agentaudit_schemas.pricing import load_pricing
n, total = int(sys.argv[1]), int(sys.argv[2])
events = sdk_events(total)[:n]
keys = Path(tempfile.mkdtemp(prefix="agentaudit-instructions-"))
sealer = Sealer(SubjectKeyStore(keys / "subjects", keys / "kek"))
processor = SinkProcessor(load_pricing(), dedup_capacity=100_000, clock=lambda: START, seal=sealer)
for source, value in events:
    processor.add(source, value)
assert len(processor.take().events) == n, "every event must be accepted"
"""

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def count(tree: Path, n: int, total: int = EVENTS) -> int:
    """Instructions executed by a child Python that makes `total` SDK events and sends the
    first `n` through `add`, `tree`'s code (raises if valgrind is missing or the child fails)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed (Debian: apt-get install valgrind)")
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "sdk")]),
    }
    done = subprocess.run(
        [
            valgrind,
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-c",
            _CHILD,
            str(n),
            str(total),
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"the counted run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_event(tree: Path, total: int = EVENTS) -> float:
    """Instructions per event of `SinkProcessor.add` in `tree` (start-up cancelled out)."""
    return (count(tree, total, total) - count(tree, FEW, total)) / (total - FEW)


def main() -> None:
    trees = [Path(arg).resolve() for arg in sys.argv[1:]] or [Path(__file__).parents[2]]
    for tree in trees:
        print(f"{per_event(tree):12,.0f} instructions per event  {tree}")


if __name__ == "__main__":
    main()
