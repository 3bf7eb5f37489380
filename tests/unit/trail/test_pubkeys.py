"""The public-key history file: strict parsing, history rules, key-ID lookup, bundle-safe
imports."""

from __future__ import annotations

import ast
import base64
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentaudit.trail import pubkeys as pk
from agentaudit.trail.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from agentaudit.trail.note import Signer

T0 = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
T1 = T0 + timedelta(days=30)
ORIGIN = "audit.example/agentaudit/acme/p0"


def _signer(n: int) -> Signer:
    return Signer("agentaudit", bytes([n]) * 32)


def _history() -> pk.PublicKeys:
    return pk.PublicKeys.first(_signer(1).public_key, T0).rotated(_signer(2).public_key, T1)


def test_round_trip_and_history_shape() -> None:
    keys = _history()
    text = keys.dumps()
    assert pk.PublicKeys.parse(text) == keys and pk.PublicKeys.parse(text).dumps() == text
    old, new = keys.keys
    assert (old.created_at, old.retired_at, new.created_at, new.retired_at) == (T0, T1, T1, None)
    assert keys.current == new
    doc = json.loads(text)
    assert doc["keys"][0]["created_at"] == "2031-05-06T07:08:09.123456Z"
    assert doc["keys"][0]["public_key"] == base64.b64encode(_signer(1).public_key).decode()


def test_fingerprint_is_sha256_prefix_of_the_raw_key() -> None:
    import hashlib

    raw = _signer(1).public_key
    assert pk.fingerprint(raw) == hashlib.sha256(raw).hexdigest()[:16]


def test_key_for_maps_each_signature_back_to_its_key() -> None:
    keys = _history()
    cp = Checkpoint(ORIGIN, 3, b"\x11" * 32, ("time 1",))
    for n, expected in ((1, keys.keys[0]), (2, keys.keys[1])):
        note = sign_checkpoint(cp, [_signer(n).renamed(ORIGIN)])
        _, opened = open_checkpoint(note, keys.verifiers(ORIGIN), ORIGIN)
        (sig,) = opened.verified
        assert keys.key_for(ORIGIN, sig.key_id) == expected
    assert keys.key_for(ORIGIN, 0xDEADBEEF) is None
    # The key ID binds the origin: the same key under another chain's origin has another ID.
    other = "audit.example/agentaudit/acme/p1"
    assert keys.keys[0].key_id(other) != keys.keys[0].key_id(ORIGIN)
    assert keys.key_for(other, keys.keys[0].key_id(ORIGIN)) is None


def test_in_use_at_and_describe() -> None:
    old, new = _history().keys
    assert old.in_use_at(T0) and not old.in_use_at(T1) and new.in_use_at(T1)
    assert not old.in_use_at(T0 - timedelta(microseconds=1))
    assert old.describe() == (
        f"key {old.fingerprint} (created 2031-05-06T07:08:09.123456Z, "
        "retired 2031-06-05T07:08:09.123456Z)"
    )
    assert new.describe().endswith(", current)")


OTHER_KEY = base64.b64encode(_signer(9).public_key).decode()


def _edited(edit) -> str:  # type: ignore[no-untyped-def]
    doc = json.loads(_history().dumps())
    edit(doc)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[]", "not a public-key file"),
        (_edited(lambda d: d.update(format="v0")), "not a public-key file"),
        (_edited(lambda d: d.update(algorithm="rsa")), "algorithm"),
        (_edited(lambda d: d.update(keys=[])), "non-empty"),
        (_edited(lambda d: d["keys"][0].pop("retired_at")), "exactly the fields"),
        (_edited(lambda d: d["keys"][0].update(extra=1)), "exactly the fields"),
        (_edited(lambda d: d["keys"][0].update(public_key="AAAA")), "32 bytes"),
        (_edited(lambda d: d["keys"][0].update(public_key=5)), "32 bytes"),
        # a key swapped for another: its fingerprint gives it away
        (_edited(lambda d: d["keys"][0].update(public_key=OTHER_KEY)), "altered"),
        (_edited(lambda d: d["keys"][0].update(fingerprint="0" * 16)), "altered"),
        (_edited(lambda d: d["keys"][0].update(created_at="yesterday")), "RFC 3339"),
        (_edited(lambda d: d["keys"][0].update(created_at="2031-05-06T07:08:09")), "RFC 3339"),
        (
            _edited(lambda d: d["keys"][1].update(retired_at="2031-07-01T00:00:00Z")),
            "must not be retired",
        ),
        (_edited(lambda d: d["keys"][0].update(retired_at=None)), "retired when key #1"),
        (_edited(lambda d: d["keys"].reverse()), "retired"),
        (_edited(lambda d: d["keys"].append(d["keys"][0])), "listed twice"),
    ],
)
def test_garbled_or_edited_files_are_rejected_with_a_reason(
    text: str | bytes, message: str
) -> None:
    with pytest.raises(pk.PublicKeysError, match=message):
        pk.PublicKeys.parse(text)


def test_rotating_before_the_current_key_was_created_is_refused() -> None:
    keys = pk.PublicKeys.first(_signer(1).public_key, T1)
    with pytest.raises(pk.PublicKeysError, match="retired before it was created"):
        keys.rotated(_signer(2).public_key, T0)


def test_imports_only_stdlib_cryptography_and_its_own_package() -> None:
    """It ships in the auditor's export bundle, which has nothing of ours but the trail core."""
    source = Path(pk.__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside agentaudit/trail, which is bundled whole
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top == "cryptography", name
