"""The signing key on disk: modes, atomic writes, init/rotate/load, tampering, key-ID lookup."""

from __future__ import annotations

import base64
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentaudit import files
from agentaudit import keyring as kr
from agentaudit.errors import UserError
from agentaudit.trail.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from agentaudit.trail.note import InvalidSignatureError, Signer, UnverifiedNoteError

T0 = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
T1 = T0 + timedelta(days=90)
ORIGIN = "audit.example/agentaudit/acme/p2"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "keys"


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that hides nothing: modes must come from the code, not the environment."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_init_writes_a_0600_key_in_a_0700_dir(key_dir: Path, open_umask: None) -> None:
    ring = kr.init_keys(key_dir, clock=lambda: T0)
    assert _mode(key_dir) == 0o700
    assert _mode(key_dir / kr.PRIVATE_KEY_FILE) == 0o600
    assert _mode(key_dir / kr.PUBLIC_KEYS_FILE) == 0o644
    assert sorted(p.name for p in key_dir.iterdir()) == [".lock", "public-keys.json", "signing-key"]
    assert ring.current.created_at == T0 and ring.current.retired_at is None
    assert ring.signer.public_key == ring.current.public_key
    loaded = kr.KeyRing.load(key_dir)
    assert loaded.signer == ring.signer and loaded.public == ring.public


def test_an_existing_open_dir_is_closed_to_0700(key_dir: Path) -> None:
    key_dir.mkdir(parents=True, mode=0o755)
    os.chmod(key_dir, 0o755)
    kr.init_keys(key_dir, clock=lambda: T0)
    assert _mode(key_dir) == 0o700


def test_the_private_key_is_never_readable_by_others_even_briefly(
    key_dir: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private file is created 0600 and never opened up (someone who opened it while it
    was readable would keep reading it); every rename moves a 0600 file."""
    seen: list[tuple[str, int]] = []
    names: dict[int, str] = {}
    real_mkstemp, real_fchmod, real_replace = tempfile.mkstemp, os.fchmod, os.replace

    def mkstemp(*args, **kwargs):  # type: ignore[no-untyped-def]
        fd, name = real_mkstemp(*args, **kwargs)
        names[fd] = Path(name).name
        seen.append(("created " + names[fd], stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd, name

    def fchmod(fd: int, mode: int) -> None:
        seen.append((f"chmod {names.get(fd, fd)}", mode))
        real_fchmod(fd, mode)

    def replace(src, dst):  # type: ignore[no-untyped-def]
        seen.append((f"{Path(src).name} -> {Path(dst).name}", stat.S_IMODE(os.stat(src).st_mode)))
        return real_replace(src, dst)

    monkeypatch.setattr(
        files.tempfile, "mkstemp", mkstemp
    )  # the keys are written by agentaudit.files
    monkeypatch.setattr(kr.os, "fchmod", fchmod)
    monkeypatch.setattr(kr.os, "replace", replace)
    kr.init_keys(key_dir, clock=lambda: T0)
    kr.rotate_keys(key_dir, clock=lambda: T1)
    assert [m for w, m in seen if w.startswith("created")] == [0o600] * 4, seen
    private = [(w, m) for w, m in seen if "signing-key" in w]
    assert len(private) == 8 and all(m == 0o600 for _, m in private), seen


def test_init_refuses_when_a_key_exists(key_dir: Path) -> None:
    ring = kr.init_keys(key_dir, clock=lambda: T0)
    before = {p.name: p.read_bytes() for p in key_dir.iterdir()}
    with pytest.raises(kr.KeyExists, match="agentaudit keys rotate") as info:
        kr.init_keys(key_dir, clock=lambda: T1)
    assert isinstance(info.value, UserError) and info.value.exit_code != 0
    assert {p.name: p.read_bytes() for p in key_dir.iterdir()} == before
    assert kr.KeyRing.load(key_dir).signer == ring.signer


def test_load_without_a_key_names_the_dir_and_init(key_dir: Path) -> None:
    with pytest.raises(kr.KeyMissing, match="agentaudit keys init") as info:
        kr.KeyRing.load(key_dir)
    assert str(key_dir) in str(info.value) and isinstance(info.value, UserError)
    with pytest.raises(kr.KeyMissing, match="agentaudit keys init"):
        kr.rotate_keys(key_dir)


def test_rotate_keeps_old_public_keys_and_old_checkpoints_verify(key_dir: Path) -> None:
    first = kr.init_keys(key_dir, clock=lambda: T0)
    cp = Checkpoint(ORIGIN, 7, b"\x22" * 32, ("time 1967000000",))
    old_note = sign_checkpoint(cp, [first.signer.renamed(ORIGIN)])

    second = kr.rotate_keys(key_dir, clock=lambda: T1)
    new_note = sign_checkpoint(cp, [second.signer.renamed(ORIGIN)])
    ring = kr.KeyRing.load(key_dir)
    assert ring.signer == second.signer != first.signer
    old, new = ring.public_keys
    assert (old.public_key, old.created_at, old.retired_at) == (first.signer.public_key, T0, T1)
    assert (new.public_key, new.created_at, new.retired_at) == (second.signer.public_key, T1, None)
    assert ring.current == new

    for note, key in ((old_note, old), (new_note, new)):
        _, opened = open_checkpoint(note, ring.verifiers(ORIGIN), ORIGIN)
        (sig,) = opened.verified
        assert ring.key_for(ORIGIN, sig.key_id) == key
    # Verifiers are per origin: the same note cannot pass as another chain's.
    with pytest.raises(UnverifiedNoteError):
        open_checkpoint(old_note, ring.verifiers("audit.example/agentaudit/acme/p3"))
    # An edited checkpoint fails against the retired key too.
    with pytest.raises(InvalidSignatureError):
        open_checkpoint(old_note.replace("\n7\n", "\n8\n"), ring.verifiers(ORIGIN))


def test_rotate_deletes_the_old_private_key(key_dir: Path) -> None:
    first = kr.init_keys(key_dir, clock=lambda: T0)
    kr.rotate_keys(key_dir, clock=lambda: T1)
    seed_forms = _secret_forms(first.signer)
    for path in key_dir.iterdir():
        data = path.read_bytes()
        assert not any(s in data for s in seed_forms), path
    assert sorted(p.name for p in key_dir.iterdir()) == [".lock", "public-keys.json", "signing-key"]


def _secret_forms(signer: Signer) -> list[bytes]:
    skey = signer.skey()
    return [
        signer.seed,
        signer.seed.hex().encode(),
        base64.b64encode(signer.seed),
        skey.encode(),
        skey.split("+", 4)[4].encode(),
    ]
    # PRIVATE+KEY+<name>+<hash>+<base64>: the base64 may hold '+' itself (rsplit made a
    # one-letter "secret" that any file contains: the test failed 1 run in 25)


def test_rotate_twice_and_a_clock_going_backwards_is_refused(key_dir: Path) -> None:
    kr.init_keys(key_dir, clock=lambda: T0)
    kr.rotate_keys(key_dir, clock=lambda: T1)
    ring = kr.rotate_keys(key_dir, clock=lambda: T1 + timedelta(seconds=1))
    assert [k.retired_at for k in ring.public_keys] == [T1, T1 + timedelta(seconds=1), None]
    before = (key_dir / kr.PUBLIC_KEYS_FILE).read_bytes()
    with pytest.raises(UserError, match="clock"):
        kr.rotate_keys(key_dir, clock=lambda: T0)
    assert (key_dir / kr.PUBLIC_KEYS_FILE).read_bytes() == before
    assert kr.KeyRing.load(key_dir).signer == ring.signer


def test_rotate_works_when_the_private_key_was_lost(key_dir: Path) -> None:
    kr.init_keys(key_dir, clock=lambda: T0)
    (key_dir / kr.PRIVATE_KEY_FILE).unlink()
    with pytest.raises(kr.KeyMissing, match="agentaudit keys rotate"):
        kr.KeyRing.load(key_dir)
    ring = kr.rotate_keys(key_dir, clock=lambda: T1)
    assert kr.KeyRing.load(key_dir).signer == ring.signer and len(ring.public_keys) == 2


def test_a_rotation_cut_short_after_publishing_still_loads_the_new_key(
    key_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kr.init_keys(key_dir, clock=lambda: T0)
    real_replace = os.replace

    def crash_on_the_last_rename(src, dst):  # type: ignore[no-untyped-def]
        if Path(src).name == kr.PENDING_KEY_FILE:
            raise OSError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(kr.os, "replace", crash_on_the_last_rename)
    with pytest.raises(OSError, match="power cut"):
        kr.rotate_keys(key_dir, clock=lambda: T1)
    monkeypatch.undo()
    ring = kr.KeyRing.load(key_dir)  # public-keys.json has the new key; the pending file holds it
    assert ring.signer.public_key == ring.current.public_key and ring.current.created_at == T1
    ring = kr.rotate_keys(key_dir, clock=lambda: T1 + timedelta(days=1))  # and rotation goes on
    assert kr.KeyRing.load(key_dir).signer == ring.signer and len(ring.public_keys) == 3


def test_garbled_private_key_is_a_clear_error_that_does_not_echo_it(key_dir: Path) -> None:
    ring = kr.init_keys(key_dir, clock=lambda: T0)
    path = key_dir / kr.PRIVATE_KEY_FILE
    skey = ring.signer.skey()
    path.write_text(skey[:-6] + "AAAAA=\n")  # edited seed: the key ID no longer matches
    with pytest.raises(kr.KeyFileError, match="not a signing key") as info:
        kr.KeyRing.load(key_dir)
    assert skey[20:40] not in str(info.value)
    path.write_bytes(b"\xff\x00garbage")
    with pytest.raises(kr.KeyFileError, match="not a signing key"):
        kr.KeyRing.load(key_dir)


def test_a_private_key_that_is_not_the_published_one_is_refused(key_dir: Path) -> None:
    kr.init_keys(key_dir, clock=lambda: T0)
    (key_dir / kr.PRIVATE_KEY_FILE).write_text(Signer.generate("agentaudit").skey() + "\n")
    with pytest.raises(kr.KeyFileError, match="not the private key of the current public key"):
        kr.KeyRing.load(key_dir)


def test_a_tampered_public_key_file_is_a_clear_error(key_dir: Path) -> None:
    kr.init_keys(key_dir, clock=lambda: T0)
    path = key_dir / kr.PUBLIC_KEYS_FILE
    text = path.read_text()
    doc = json.loads(text)
    doc["keys"][0]["public_key"] = base64.b64encode(Signer.generate("x").public_key).decode()
    path.write_text(json.dumps(doc))  # the published key swapped for another
    with pytest.raises(kr.KeyFileError, match=f"{path}.*altered"):
        kr.KeyRing.load(key_dir)
    path.write_text(text[:-20])
    with pytest.raises(kr.KeyFileError, match="not JSON"):
        kr.load_public_keys(path)
    with pytest.raises(kr.KeyFileError, match="not JSON"):
        kr.rotate_keys(key_dir, clock=lambda: T1)  # no rotation over a history it cannot read


def test_a_private_key_readable_by_others_is_refused(key_dir: Path) -> None:
    kr.init_keys(key_dir, clock=lambda: T0)
    os.chmod(key_dir / kr.PRIVATE_KEY_FILE, 0o640)
    with pytest.raises(kr.KeyFileError, match="chmod 600"):
        kr.KeyRing.load(key_dir)


def test_a_private_key_without_its_public_file_is_refused(key_dir: Path) -> None:
    kr.init_keys(key_dir, clock=lambda: T0)
    (key_dir / kr.PUBLIC_KEYS_FILE).unlink()
    with pytest.raises(kr.KeyFileError, match="restore the public-key file"):
        kr.KeyRing.load(key_dir)
    with pytest.raises(kr.KeyExists):
        kr.init_keys(key_dir)  # never overwrite a private key


def test_repr_does_not_show_the_private_key(key_dir: Path) -> None:
    ring = kr.init_keys(key_dir, clock=lambda: T0)
    text = repr(ring) + str(ring) + repr(ring.signer)
    assert not any(s.decode("latin-1") in text for s in _secret_forms(ring.signer))
    assert ring.current.fingerprint in repr(ring)
