"""Running `agentaudit verify` as a user does and reading its verdict lines (issue 10 tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentaudit.settings import Settings
from agentaudit.trail.verdicts import (
    DERIVED,
    EXTRA,
    INCONSISTENT,
    MISSING,
    NOT_FOUND,
    PENDING,
    REORDERED,
    ROW_HASH,
    SIGNATURE,
    VALID,
)
from tests.conftest import settings_env

KNOWN = (
    VALID,
    SIGNATURE,
    INCONSISTENT,
    NOT_FOUND,
    ROW_HASH,
    MISSING,
    EXTRA,
    REORDERED,
    DERIVED,
    PENDING,
)


@dataclass(frozen=True)
class Verdict:
    """One verdict line: `text<TAB>verdict[ (detail)]`."""

    text: str
    verdict: str

    def names(self, origin: str) -> bool:
        return origin in self.text.split()

    def is_(self, verdict: str) -> bool:
        return self.verdict.startswith(verdict)

    @property
    def failing(self) -> bool:
        return not (self.is_(VALID) or self.is_(PENDING))

    def rows(self) -> tuple[int, int] | None:
        """The first and last seq of a row-range line."""
        if not self.text.startswith("Rows "):
            return None
        m = re.search(r"\s(\d+)-(\d+)(\s|$)", self.text)
        return (int(m[1]), int(m[2])) if m else None

    def covers(self, seq: int) -> bool:
        """The line's row range holds `seq` and, if it names seqs, names `seq`."""
        span = self.rows()
        if span is None or not span[0] <= seq <= span[1]:
            return False
        named = re.search(r"seq ([^)]*)", self.verdict)
        if named is None:
            return True
        for a, b in re.findall(r"(\d+)(?:[-–](\d+))?", named[1].split("…")[0]):
            if int(a) <= seq <= int(b or a):
                return True
        return "…" in named[1]  # more seqs than it names


@dataclass(frozen=True)
class Verified:
    code: int
    lines: list[Verdict]
    output: str

    def of(self, origin: str) -> list[Verdict]:
        return [v for v in self.lines if v.names(origin)]

    def failing(self, origin: str) -> list[Verdict]:
        return [v for v in self.of(origin) if v.failing]

    def __str__(self) -> str:
        return f"exit {self.code}\n{self.output}"


_LINE = re.compile(
    r"(?P<text>(?:Checkpoint|Rows) .*?)\t(?P<verdict>(?:"
    + "|".join(map(re.escape, KNOWN))
    + r")(?:[: (].*)?)"
)


def parse_line(line: str) -> Verdict | None:
    """A verdict line, or None for any other output (the summary, progress). The verdict
    follows a tab (what scripts split on)."""
    m = _LINE.fullmatch(line.rstrip())
    if m is None:
        assert not line.startswith(("Checkpoint ", "Rows ")), f"unknown verdict: {line!r}"
        return None
    return Verdict(m["text"], m["verdict"])


def run_verify(settings: Settings, *args: str) -> Verified:
    """`agentaudit verify` on the settings' store and anchor directory, as a user runs it."""
    env = {**settings_env(settings), "COLUMNS": "200"}
    return run_lines([sys.executable, "-m", "agentaudit.cli.main", "verify", *args], env)


def run_lines(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Verified:
    """Run a verifier (the CLI, or an export bundle's own `verify.py`) and read its lines."""
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    lines = [v for v in map(parse_line, done.stdout.splitlines()) if v is not None]
    return Verified(done.returncode, lines, done.stdout + done.stderr)


def assert_caught(
    result: Verified,
    origin: str,
    expected: list[tuple[str, int | None]],
    allowed: set[str],
    valid: Sequence[str] = (),
) -> None:
    """Exit 1; for each (verdict, seq) a failing line of chain `origin` with that verdict
    (covering `seq` if given); every failing line of it one of `allowed`; the chains `valid`
    reported and valid."""
    assert result.code == 1, str(result)
    failing = result.failing(origin)
    for verdict, seq in expected:
        assert any(v.is_(verdict) and (seq is None or v.covers(seq)) for v in failing), (
            f"no {verdict!r} line of {origin}{'' if seq is None else f' covering seq {seq}'}\n"
            f"{result}"
        )
    stray = [v for v in failing if not any(v.is_(a) for a in allowed)]
    assert not stray, f"unexpected verdicts for {origin}: {stray}\n{result}"
    for other in valid:
        assert result.of(other), f"{other} not reported\n{result}"
        assert not result.failing(other), f"{other} reported\n{result}"
