"""`agentaudit keys init | rotate | public` run as a user runs them (a subprocess per command)."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agentaudit.keyring import PRIVATE_KEY_FILE, PUBLIC_KEYS_FILE
from agentaudit.trail.note import Signer
from agentaudit.trail.pubkeys import PublicKeys

pytestmark = pytest.mark.integration


def keys(*args: str, key_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AGENTAUDIT_KEY_DIR": str(key_dir),
        "AGENTAUDIT_LOG_LEVEL": "DEBUG",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def secret_forms(key_file: Path) -> list[str]:
    """Every way the private key could show up in text: the file, the seed in b64 and hex."""
    skey = key_file.read_text().strip()
    seed = Signer.parse(skey).seed
    # PRIVATE+KEY+<name>+<hash>+<base64 key>: the base64 may itself hold "+" (and end with one:
    # splitting at the last "+" then gave "" about 1 run in 64, and the check below failed)
    return [
        skey,
        skey.split("+", 4)[4],
        base64.b64encode(seed).decode(),
        seed.hex(),
        seed.hex().upper(),
        repr(seed)[2:-1],
    ]


def test_init_public_rotate_and_no_private_key_in_any_output(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    outputs: list[str] = []
    secrets: list[str] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = keys(*args, key_dir=key_dir)
        outputs.append(result.stdout + result.stderr)
        return result

    missing = run("public")
    assert missing.returncode != 0 and "agentaudit keys init" in missing.stderr
    assert "Traceback" not in missing.stderr

    init = run("init")
    assert init.returncode == 0, init.stderr
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((key_dir / PRIVATE_KEY_FILE).stat().st_mode) == 0o600
    secrets += secret_forms(key_dir / PRIVATE_KEY_FILE)
    first = PublicKeys.parse((key_dir / PUBLIC_KEYS_FILE).read_text())
    assert first.current.fingerprint in init.stdout

    again = run("init")
    assert again.returncode != 0 and "agentaudit keys rotate" in again.stderr
    assert "Traceback" not in again.stderr
    assert PublicKeys.parse((key_dir / PUBLIC_KEYS_FILE).read_text()) == first

    table = run("public")
    assert table.returncode == 0, table.stderr
    assert first.current.fingerprint in table.stdout and "current" in table.stdout

    rotate = run("rotate")
    assert rotate.returncode == 0, rotate.stderr
    secrets += secret_forms(key_dir / PRIVATE_KEY_FILE)
    history = PublicKeys.parse((key_dir / PUBLIC_KEYS_FILE).read_text())
    old, new = history.keys
    assert old.public_key == first.current.public_key and old.retired_at == new.created_at
    assert f"key {new.fingerprint} is current; {old.fingerprint} retired" in rotate.stdout

    as_json = run("public", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert PublicKeys.parse(as_json.stdout) == history
    assert json.loads(as_json.stdout)["keys"][1]["retired_at"] is None

    out = tmp_path / "auditor" / "public-keys.json"
    out.parent.mkdir()
    written = run("public", "--out", str(out))
    assert written.returncode == 0, written.stderr
    assert PublicKeys.parse(out.read_text()) == history

    table = run("public")
    assert old.fingerprint in table.stdout and new.fingerprint in table.stdout
    assert "2 keys" in table.stdout

    other = tmp_path / "other"  # --key-dir overrides AGENTAUDIT_KEY_DIR
    assert run("init", "--key-dir", str(other)).returncode == 0
    secrets += secret_forms(other / PRIVATE_KEY_FILE)

    assert len(outputs) == 9 and all(s for s in secrets)
    for text in outputs:
        for secret in secrets:
            assert secret not in text
