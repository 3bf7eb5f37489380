"""Migrations up, idempotent, down and tamper detection, on the real engine."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentaudit.settings import Settings
from agentaudit.store import ClickHouseStore, open_store
from agentaudit.store.migrations import (
    MigrationError,
    default_directory,
    discover,
    migrate,
    rollback,
    status,
)

pytestmark = pytest.mark.integration
AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    with open_store(Settings(data_dir=tmp_path / "data")) as s:
        yield s


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    """A private copy of the first two shipped migrations plus one with several statements
    (later shipped migrations are left out so these tests do not change with each one)."""
    target = tmp_path / "migrations"
    shutil.copytree(
        Path(str(default_directory())),
        target,
        ignore=lambda _d, names: [n for n in names if not n.startswith(("0001_", "0002_"))],
    )
    (target / "0003_create_scratch.up.sql").write_text(
        "-- two statements in one file\n"
        "CREATE TABLE IF NOT EXISTS agentaudit.scratch (a UInt8) ENGINE = MergeTree ORDER BY a;\n"
        "-- a comment; with a semicolon\n"
        "INSERT INTO agentaudit.scratch VALUES (1), (2);\n"
    )
    (target / "0003_create_scratch.down.sql").write_text(
        "DROP TABLE IF EXISTS agentaudit.scratch;\n"
    )
    return target


def tables(store: ClickHouseStore) -> set[str]:
    rows = store.query("SELECT name FROM system.tables WHERE database = 'agentaudit'").result_rows
    return {r[0] for r in rows}


def test_shipped_migrations_are_paired_and_ordered() -> None:
    names = [m.name for m in discover()]
    assert names == sorted(names) and names[:2] == [
        "0001_create_events",
        "0002_create_dead_letters",
    ]


def test_up_is_idempotent_and_recorded(store: ClickHouseStore, migrations_dir: Path) -> None:
    applied = migrate(store, directory=migrations_dir, clock=lambda: AT)
    assert applied == ["0001_create_events", "0002_create_dead_letters", "0003_create_scratch"]
    assert {"events", "dead_letters", "scratch", "schema_migrations"} <= tables(store)
    assert store.command("SELECT sum(a) FROM agentaudit.scratch") == 3
    assert migrate(store, directory=migrations_dir) == []
    rows = store.query(
        "SELECT version, name, length(checksum), applied_at FROM agentaudit.schema_migrations "
        "ORDER BY version"
    ).result_rows
    assert rows == [
        (1, "0001_create_events", 64, AT),
        (2, "0002_create_dead_letters", 64, AT),
        (3, "0003_create_scratch", 64, AT),
    ]
    assert [s.state for s in status(store, directory=migrations_dir)] == ["applied"] * 3


def test_target_then_rollback(store: ClickHouseStore, migrations_dir: Path) -> None:
    assert migrate(store, target=1, directory=migrations_dir) == ["0001_create_events"]
    assert [s.state for s in status(store, directory=migrations_dir)] == [
        "applied",
        "pending",
        "pending",
    ]
    migrate(store, directory=migrations_dir)
    assert rollback(store, steps=2, directory=migrations_dir) == [
        "0003_create_scratch",
        "0002_create_dead_letters",
    ]
    assert "scratch" not in tables(store) and "dead_letters" not in tables(store)
    assert [s.state for s in status(store, directory=migrations_dir)] == [
        "applied",
        "pending",
        "pending",
    ]
    with pytest.raises(MigrationError, match="use rollback"):
        migrate(store, target=0, directory=migrations_dir)
    assert migrate(store, directory=migrations_dir) == [
        "0002_create_dead_letters",
        "0003_create_scratch",
    ]


def test_edited_migration_is_refused(store: ClickHouseStore, migrations_dir: Path) -> None:
    migrate(store, directory=migrations_dir)
    up = migrations_dir / "0003_create_scratch.up.sql"
    up.write_text(up.read_text() + "-- edited after it ran\n")
    with pytest.raises(MigrationError, match="0003_create_scratch was edited"):
        migrate(store, directory=migrations_dir)
    assert status(store, directory=migrations_dir)[2].state == "changed"


def test_unknown_applied_migration_is_refused(store: ClickHouseStore, migrations_dir: Path) -> None:
    migrate(store, directory=migrations_dir)
    for f in migrations_dir.glob("0003_*"):
        f.unlink()
    with pytest.raises(MigrationError, match="upgrade agentaudit"):
        migrate(store, directory=migrations_dir)


def test_unpaired_migration_is_refused(migrations_dir: Path) -> None:
    (migrations_dir / "0003_create_scratch.down.sql").unlink()
    with pytest.raises(MigrationError, match="needs both"):
        discover(migrations_dir)
