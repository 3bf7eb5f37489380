"""The SDK alone: build its wheel from sdk/ (through the symlinks), install it with its
dependencies into a fresh virtualenv, import it and send an event through an in-memory
transport (tests/sdk_dist/smoke.py). ~30-60 s, mostly pip."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_sdk_wheel_installs_alone_and_emits(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(dist),
            str(ROOT / "sdk"),
        ],
        check=True,
        timeout=180,
    )
    (wheel,) = dist.glob("agentaudit_sdk-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=180)
    installed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], check=True, capture_output=True, text=True
    ).stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert not names & {"agentaudit", "chdb", "faust-streaming", "numpy", "scipy"}, names
    # run from tmp_path so the checkout's folders are not on sys.path
    out = subprocess.run(
        [python, str(ROOT / "tests" / "sdk_dist" / "smoke.py")],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    ).stdout
    verdict = json.loads(out.strip().splitlines()[-1])
    assert verdict["type"] == "tool_call" and verdict["tenant"] == "acme"
    assert verdict["sdk"] == {"name": "agentaudit-python", "version": verdict["version"]}
    assert verdict["server_modules"] == []
    # the price table (genai_prices) loads on the first ceiling check, not at import
    assert not verdict["genai_prices_at_import"] and not verdict["genai_prices_before_ceiling"]
    assert verdict["genai_prices_after_ceiling"] and verdict["ceiling_refused"]
