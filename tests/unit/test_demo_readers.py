"""`tests/conftest.py`'s `DEMO_READERS` names exactly the test files that use the demo's store."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import DEMO_READERS

ROOT = Path(__file__).resolve().parents[2]


def test_demo_readers_are_the_files_that_use_the_demo_fixtures() -> None:
    # A reader missing from the list still passes, but runs the ~40 s demo again in its own
    # test process; a file listed that no longer reads it ties up one process for nothing.
    uses = re.compile(r"\bdemo_(run|data_dir)\b")
    readers = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob("test_*.py")
        if path.name != Path(__file__).name and uses.search(path.read_text())
    }
    assert readers == DEMO_READERS
