"""Gold-set files, versions and pins."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stream_jobs.drift import (
    GoldSetError,
    GoldSetRegistry,
    PinRegistry,
    load_goldset,
    make_pin,
    parse_goldset,
)

AT = datetime(2026, 11, 2, tzinfo=UTC)
TEXT = """# refunds gold set
{"case_id": "r-1", "input": "refund order 1", "expected": "ok"}

{"case_id": "r-2", "input": "refund order 2", "tags": ["edge"]}
{"case_id": "r-3", "input": "refund order 3"}
"""


def test_parse_keeps_cases_and_versions_by_content_not_order() -> None:
    g = parse_goldset("refunds", TEXT)
    assert g.case_ids == {"r-1", "r-2", "r-3"}
    assert g.cases["r-2"]["tags"] == ["edge"]
    assert g.version.startswith("sha256:") and len(g.version) == 23
    lines = [ln for ln in TEXT.splitlines() if ln.startswith("{")]
    assert parse_goldset("refunds", "\n".join(reversed(lines))).version == g.version
    edited = TEXT.replace('"expected": "ok"', '"expected": "refused"')
    assert parse_goldset("refunds", edited).version != g.version


@pytest.mark.parametrize(
    ("text", "code", "line"),
    [
        ('{"case_id": "a"}\n{"case_id": "b"', "bad_json", 2),
        ('{"case_id": "a"}\n["b"]', "not_object", 2),
        ('{"input": "x"}', "bad_case_id", 1),
        ('{"case_id": "has space"}', "bad_case_id", 1),
        ('{"case_id": "a"}\n{"case_id": "a"}', "duplicate_case", 2),
        ("# only a comment\n\n", "empty", None),
        (b'{"case_id": "\xff"}', "not_utf8", None),
    ],
)
def test_invalid_files_name_the_problem_and_the_line(
    text: str | bytes, code: str, line: int | None
) -> None:
    with pytest.raises(GoldSetError) as exc:
        parse_goldset("refunds", text)
    assert exc.value.code == code and exc.value.line == line
    if line is not None:
        assert str(exc.value).startswith(f"line {line}:")


def test_bad_gold_set_id() -> None:
    with pytest.raises(GoldSetError) as exc:
        parse_goldset("no spaces allowed", TEXT)
    assert exc.value.code == "bad_id"


def test_load_from_file_uses_the_file_name_as_id(tmp_path: Path) -> None:
    path = tmp_path / "refunds-v1.jsonl"
    path.write_text(TEXT)
    assert load_goldset(path).gold_set_id == "refunds-v1"
    assert load_goldset(path, "other").gold_set_id == "other"


def test_registry_numbers_versions_and_ignores_repeats() -> None:
    reg = GoldSetRegistry()
    v1, new1 = reg.add(parse_goldset("refunds", TEXT), AT)
    again, new_again = reg.add(parse_goldset("refunds", TEXT), AT)
    v2, new2 = reg.add(parse_goldset("refunds", TEXT + '{"case_id": "r-4"}\n'), AT)
    assert (new1, new_again, new2) == (True, False, True)
    assert (v1.number, again.number, v2.number) == (1, 1, 2)
    assert reg.latest("refunds") == v2 and reg.get("refunds", v1.version) == v1
    restored = GoldSetRegistry.from_state(json.loads(json.dumps(reg.to_state())))
    assert restored.latest("refunds") == v2


def test_pin_validates_results_and_replaces_the_current_pin() -> None:
    reg = GoldSetRegistry()
    version, _ = reg.add(parse_goldset("refunds", TEXT), AT)
    results = [("r-1", 0.9, True), ("r-2", 0.4, False), ("r-3", 0.8, True)]
    pin = make_pin("acme", version, "accuracy", "1.0.0", "model-a", results, AT)
    assert pin.n == 3 and pin.passed == 2 and pin.pass_rate == pytest.approx(2 / 3)
    for bad, code in (
        (results + [("zz", 0.5, True)], "unknown_case"),
        ([("r-1", float("nan"), True)] + results, "bad_score"),
        (results[:2], "incomplete_reference"),
    ):
        with pytest.raises(GoldSetError) as exc:
            make_pin("acme", version, "accuracy", "1.0.0", "model-a", bad, AT)
        assert exc.value.code == code
    pins = PinRegistry()
    assert pins.pin(pin) is None
    newer = make_pin("acme", version, "accuracy", "1.1.0", "model-b", results, AT.replace(day=3))
    assert pins.pin(newer) == pin
    assert pins.current("acme", "refunds", "accuracy") == newer and pins.history == [pin]
    assert pins.current("other", "refunds", "accuracy") is None
    restored = PinRegistry.from_state(json.loads(json.dumps(pins.to_state())))
    assert restored.current("acme", "refunds", "accuracy") == newer
    assert restored.for_tenant("acme") == [newer]
