"""Numbered, paired schema migrations (`NNNN_verb_object.up.sql` / `.down.sql`).

Applied migrations are recorded in `agentaudit.schema_migrations` with the SHA-256 of their
up file, so editing a migration after it ran is caught instead of silently diverging.
A file may hold several statements, each ending with `;` at the end of a line; `--` comment
lines are dropped. Write statements that can be re-run (`IF [NOT] EXISTS`): a failure half
way through a file leaves the earlier statements applied and the migration unrecorded.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from datetime import datetime
from importlib.resources.abc import Traversable
from pathlib import Path

from agentaudit.errors import UserError
from agentaudit.store.protocol import Store
from agentaudit_sdk.clock import UtcNow, utc_now

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")
_BOOTSTRAP = (
    "CREATE DATABASE IF NOT EXISTS agentaudit",
    (
        "CREATE TABLE IF NOT EXISTS agentaudit.schema_migrations (version UInt32, name String, "
        "checksum String, applied_at DateTime64(6, 'UTC')) ENGINE = MergeTree ORDER BY version"
    ),
)
_COLUMNS = ("version", "name", "checksum", "applied_at")


class MigrationError(UserError):
    """The migrations on disk and those recorded in the store disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # e.g. 0001_create_events
    up: str
    down: str
    checksum: str  # sha256 of the up file


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    state: str  # applied | pending | changed (file edited after it ran) | unknown (not on disk)
    applied_at: datetime | None

    def __str__(self) -> str:
        when = f"  {self.applied_at:%Y-%m-%d %H:%M:%S} UTC" if self.applied_at else ""
        return f"{self.name}  {self.state}{when}"


def default_directory() -> Traversable | Path:
    """The packaged migrations (`schemas/clickhouse/migrations`)."""
    try:
        return importlib.resources.files("agentaudit_schemas") / "clickhouse" / "migrations"
    except NotADirectoryError:
        # An editable install made while `schemas` had no __init__.py imports it as a namespace
        # package, which importlib.resources cannot read; its plain path still works.
        import agentaudit_schemas

        return (
            Path(next(p for p in agentaudit_schemas.__path__ if Path(p).is_dir()))
            / "clickhouse"
            / "migrations"
        )


def discover(directory: Traversable | Path | None = None) -> list[Migration]:
    """The migrations in `directory` (default: the packaged ones), in version order."""
    files: dict[int, dict[str, Traversable | Path]] = {}
    names: dict[int, str] = {}
    for entry in (directory or default_directory()).iterdir():
        match = _FILE_RE.match(entry.name)
        if not match:
            continue
        version, name = int(match.group(1)), f"{match.group(1)}_{match.group(2)}"
        if names.setdefault(version, name) != name:
            raise MigrationError(
                f"two migrations are numbered {version}: {names[version]} and {name}; renumber one"
            )
        files.setdefault(version, {})[match.group(3)] = entry
    found = []
    for version in sorted(files):
        pair = files[version]
        if set(pair) != {"up", "down"}:
            raise MigrationError(
                f"migration {names[version]} needs both .up.sql and .down.sql files"
            )
        up = pair["up"].read_bytes()
        found.append(
            Migration(
                version,
                names[version],
                up.decode(),
                pair["down"].read_text(),
                hashlib.sha256(up).hexdigest(),
            )
        )
    return found


def statements(sql: str) -> list[str]:
    """Split a migration file into statements: `--` lines dropped, `;` at line end separates."""
    kept = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";[ \t]*$", kept, flags=re.MULTILINE) if s.strip()]


def _applied(store: Store) -> dict[int, tuple[str, str, datetime]]:
    for sql in _BOOTSTRAP:
        store.command(sql)
    rows = store.query(
        f"SELECT {', '.join(_COLUMNS)} FROM agentaudit.schema_migrations ORDER BY version"
    )
    return {int(v): (str(n), str(c), at) for v, n, c, at in rows.result_rows}


def _checked(
    store: Store, directory: Traversable | Path | None
) -> tuple[list[Migration], dict[int, tuple[str, str, datetime]]]:
    known = discover(directory)
    done = _applied(store)
    by_version = {m.version: m for m in known}
    for version, (name, checksum, _) in done.items():
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"the store has migration {name}, which this agentaudit does not ship; "
                "upgrade agentaudit"
            )
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {name} was edited after it was applied (checksum differs); restore the "
                "original file and put the change in a new migration"
            )
    return known, done


def migrate(
    store: Store,
    target: int | None = None,
    *,
    directory: Traversable | Path | None = None,
    clock: UtcNow = utc_now,
) -> list[str]:
    """Apply pending migrations up to `target` (default: all); returns the names applied."""
    known, done = _checked(store, directory)
    if target is not None and done and target < max(done):
        raise MigrationError(
            f"the store is at migration {max(done)}, past target {target}; use rollback"
        )
    applied = []
    for migration in known:
        if migration.version in done or (target is not None and migration.version > target):
            continue
        for sql in statements(migration.up):
            store.command(sql)
        at = clock()
        store.insert(
            "agentaudit.schema_migrations",
            [[migration.version], [migration.name], [migration.checksum], [at]],
            _COLUMNS,
        )
        applied.append(migration.name)
    return applied


def rollback(
    store: Store, steps: int = 1, *, directory: Traversable | Path | None = None
) -> list[str]:
    """Undo the `steps` most recent migrations with their .down.sql; returns the names undone."""
    known, done = _checked(store, directory)
    by_version = {m.version: m for m in known}
    undone = []
    for version in sorted(done, reverse=True)[:steps]:
        migration = by_version[version]
        for sql in statements(migration.down):
            store.command(sql)
        # Lightweight DELETE: synchronous by default, and the same SQL on chDB and a server.
        store.command(
            "DELETE FROM agentaudit.schema_migrations WHERE version = {v:UInt32}", {"v": version}
        )
        undone.append(migration.name)
    return undone


def status(store: Store, *, directory: Traversable | Path | None = None) -> list[MigrationStatus]:
    """Every migration on disk or in the store, with its state, in version order."""
    known = {m.version: m for m in discover(directory)}
    done = _applied(store)
    result = []
    for version in sorted(set(known) | set(done)):
        migration, row = known.get(version), done.get(version)
        if row is None:
            state = "pending"
        elif migration is None:
            state = "unknown"
        else:
            state = "applied" if migration.checksum == row[1] else "changed"
        name = migration.name if migration else row[0] if row else str(version)
        result.append(MigrationStatus(version, name, state, row[2] if row else None))
    return result
