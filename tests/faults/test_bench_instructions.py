"""The instruction count that `agentaudit.bench.instructions` compares trees by hardly moves
between runs of the same code over the same events (where CPU time moves by a third here), and
more events execute more. Under valgrind a run takes ~30 s of CPU: full matrix only
(`./run faults`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentaudit.bench.instructions import count
from tests.faults.conftest import FULL

pytestmark = pytest.mark.skipif(not FULL, reason="~2 min under valgrind: ./run faults")

TREE = Path(__file__).parents[2]


def test_counts_repeat_within_a_thousandth_and_grow_with_the_events() -> None:
    few = [count(TREE, 10, 200) for _ in range(2)]
    # Not bit-exact (temporary names, the collector's timing): 0.1 % apart measured, ~700
    # instructions per event of the A/B's difference, where code changes move thousands.
    assert abs(few[0] - few[1]) < few[0] / 200, few
    assert (count(TREE, 200, 200) - few[0]) / 190 > 50_000  # add: ~0.66M per event here


def test_a_run_that_fails_raises_with_its_error() -> None:
    with pytest.raises(RuntimeError, match="every event must be accepted"):
        count(TREE, 20, 10)  # asks for more events than it makes: the child's assert fails
