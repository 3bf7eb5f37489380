"""The subject key store: wrapped keys under one KEK, destroyed for good, outages loud."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agentaudit import files
from agentaudit.errors import UserError
from agentaudit.subjects.keystore import KeyStoreUnavailable, SubjectKeyStore, subject_dir


def store(tmp_path: Path) -> SubjectKeyStore:
    return SubjectKeyStore(tmp_path / "subjects", tmp_path / "kek")


def test_keys_are_wrapped_private_and_reloaded_by_kid(tmp_path: Path) -> None:
    keys = store(tmp_path)
    made = keys.create("acme", "u-1")
    assert stat.S_IMODE((tmp_path / "kek").stat().st_mode) == 0o600
    wrapped = tmp_path / "subjects" / "acme" / subject_dir("u-1") / f"{made.kid}.key"
    assert stat.S_IMODE(wrapped.stat().st_mode) == 0o600
    again = SubjectKeyStore(tmp_path / "subjects", tmp_path / "kek").get("acme", "u-1", made.kid)
    assert again is not None
    nonce = b"\0" * 12
    assert again.aead.decrypt(nonce, made.aead.encrypt(nonce, b"x", None), None) == b"x"
    assert keys.current("acme", "u-1").kid == made.kid
    assert keys.kids("acme", "u-1") == [made.kid]
    assert "key" not in repr(made).replace("kid", "")  # the key bytes never show


def test_subjects_with_any_printable_id_get_their_own_directory(tmp_path: Path) -> None:
    keys = store(tmp_path)
    kids = {s: keys.create("acme", s).kid for s in ("../x", "a/b", "u-1", None)}
    for s, kid in kids.items():
        assert keys.kids("acme", s) == [kid]
    assert sorted(p.name for p in (tmp_path / "subjects" / "acme").iterdir()) == sorted(
        subject_dir(s) for s in kids
    )


def test_destroy_removes_every_key_of_the_subject_only(tmp_path: Path) -> None:
    keys = store(tmp_path)
    first, second = keys.create("acme", "u-1"), keys.create("acme", "u-1")
    other = keys.create("acme", "u-2")
    assert keys.destroy("acme", "u-1") == sorted([first.kid, second.kid])
    assert keys.get("acme", "u-1", first.kid) is None and keys.kids("acme", "u-1") == []
    assert keys.get("acme", "u-2", other.kid) is not None
    assert keys.destroy("acme", "u-1") == []  # idempotent
    left = sorted(
        p.relative_to(tmp_path / "subjects") for p in (tmp_path / "subjects").rglob("*.key")
    )
    assert left == [Path("acme", subject_dir("u-2"), f"{other.kid}.key")]  # the rest untouched
    assert keys.current("acme", "u-1").kid not in (first.kid, second.kid)  # a new key after


def test_a_key_file_moved_to_another_subject_does_not_open(tmp_path: Path) -> None:
    keys = store(tmp_path)
    made = keys.create("acme", "u-1")
    keys.create("acme", "u-2")
    src = tmp_path / "subjects" / "acme" / subject_dir("u-1") / f"{made.kid}.key"
    os.replace(src, tmp_path / "subjects" / "acme" / subject_dir("u-2") / src.name)
    with pytest.raises(KeyStoreUnavailable, match="does not open"):
        keys.get("acme", "u-2", made.kid)


def test_a_missing_kek_beside_wrapped_keys_is_an_outage_never_a_new_kek(tmp_path: Path) -> None:
    store(tmp_path).create("acme", "u-1")
    (tmp_path / "kek").unlink()
    with pytest.raises(KeyStoreUnavailable, match="missing"):
        store(tmp_path).check()
    assert not (tmp_path / "kek").exists()


def test_a_kek_readable_by_others_or_a_wrong_kek_is_refused(tmp_path: Path) -> None:
    made = store(tmp_path).create("acme", "u-1")
    (tmp_path / "kek").chmod(0o644)
    with pytest.raises(KeyStoreUnavailable, match="readable by others"):
        store(tmp_path).check()
    (tmp_path / "kek").unlink()
    (tmp_path / "kek").write_bytes(os.urandom(32))
    (tmp_path / "kek").chmod(0o600)
    with pytest.raises(KeyStoreUnavailable, match="does not open"):
        store(tmp_path).get("acme", "u-1", made.kid)


def test_an_unwritable_key_directory_is_an_outage(tmp_path: Path) -> None:
    keys = store(tmp_path)
    keys.check()
    (tmp_path / "subjects").write_bytes(b"not a directory")
    with pytest.raises(KeyStoreUnavailable, match="unavailable"):
        keys.create("acme", "u-1")


def test_a_second_store_finds_the_kek_and_keeps_it(tmp_path: Path) -> None:
    a, b = store(tmp_path), store(tmp_path)
    a.check()
    made = a.create("acme", "u-1")
    b.check()
    assert b.get("acme", "u-1", made.kid) is not None


def test_erase_publishes_first_and_destroys_after_never_before(tmp_path: Path) -> None:
    from agentaudit.errors import BrokerUnreachable
    from agentaudit.settings import Settings
    from agentaudit.subjects.erasure import erase_subject

    settings = Settings(subject_key_dir=tmp_path / "subjects", subject_kek_file=tmp_path / "kek")
    keys = SubjectKeyStore.from_settings(settings)
    kid = keys.create("acme", "u-1").kid
    sent: list[dict] = []

    def refused(_s: Settings, _events: object) -> None:
        raise BrokerUnreachable("no broker")

    with pytest.raises(BrokerUnreachable):
        erase_subject(settings, "acme", "u-1", "request 7", "dpo", send=refused)
    assert keys.kids("acme", "u-1") == [kid]  # not recorded: nothing destroyed

    def recorded(_s: Settings, events: list[dict]) -> None:
        assert keys.kids("acme", "u-1") == [kid]  # the keys still exist while it is published
        sent.extend(events)

    done = erase_subject(settings, "acme", "u-1", "request 7", "dpo", send=recorded)
    assert done.destroyed == [kid] and keys.kids("acme", "u-1") == []
    (event,) = sent
    assert event["type"] == "subject_erased" and event["user_id"] == "dpo"
    signed = dict(event["payload"])
    assert signed.pop("signature")  # the deployment's: anyone can publish an unsigned one
    assert signed == {"subject": "u-1", "reason": "request 7", "key_ids": [kid]}


def test_a_new_subjects_directories_are_durable_before_its_key_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A key file fsynced in a directory whose own entry is not durable is lost with it at a
    # power loss, and with it the content already sealed under the key.
    synced: list[Path] = []
    real = files.fsync_dir

    def recording(path: Path) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(files, "fsync_dir", recording)
    keys = store(tmp_path)
    keys.create("acme", "u-1")  # a new tenant and subject: three new directories
    subjects = tmp_path / "subjects"
    where = subjects / "acme" / subject_dir("u-1")
    assert {tmp_path, subjects, subjects / "acme", where} <= set(synced)
    synced.clear()
    keys.create("acme", "u-2")  # a new subject of a known tenant
    assert {subjects / "acme", subjects / "acme" / subject_dir("u-2")} <= set(synced)
    assert subjects not in synced  # nothing new there


class Killed(BaseException):
    """The process ends here."""


def test_a_destroy_killed_half_way_is_finished_by_the_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the keys renamed aside stayed there for good: the rerun found no subject
    directory, destroyed nothing and said so, while the keys still opened the content."""
    keys = store(tmp_path)
    made = keys.create("acme", "u-1")
    other = keys.create("acme", "u-2")
    real_unlink = Path.unlink

    def dies(self: Path, missing_ok: bool = False) -> None:
        raise Killed

    monkeypatch.setattr(Path, "unlink", dies)
    with pytest.raises(Killed):
        keys.destroy("acme", "u-1")
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert keys.destroy("acme", "u-1") == [made.kid]  # the rerun finishes the job
    left = sorted(p.stem for p in (tmp_path / "subjects").rglob("*.key"))
    assert left == [other.kid]  # and touches no other subject
    assert keys.destroy("acme", "u-1") == []


def test_the_kept_subject_paths_follow_the_subject_the_tenant_and_the_directory(
    tmp_path: Path,
) -> None:
    """The store keeps the last subject's paths (`_paths`, the sealer's new-subject cost): a
    kept answer must never serve another subject, tenant or `keys_dir`, nor skip the tenant
    check."""
    keys = store(tmp_path)
    made = {(t, s): keys.create(t, s).kid for t in ("acme", "beta") for s in ("u-1", "u-2", None)}
    for (tenant, subject), kid in made.items():  # alternating: each call another subject
        assert keys.kids(tenant, subject) == [kid]
        assert keys.erased_through(tenant, subject) is None
    keys.mark_erased("beta", "u-2", "2026-11-21T09:00:00.000000Z")
    assert keys.erased_through("acme", "u-2") is None
    assert keys.erased_through("beta", "u-2") == "2026-11-21T09:00:00.000000Z"
    keys.keys_dir = tmp_path / "elsewhere"  # another directory: nothing there
    assert keys.kids("beta", "u-2") == []
    assert keys.erased_through("beta", "u-2") is None
    with pytest.raises(UserError, match="not a tenant id"):
        keys.kids("../beta", "u-2")
