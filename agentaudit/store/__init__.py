"""The ClickHouse store: one `Store` for a server and for embedded chDB alike.

`open_store(settings)` is the only way in. Server mode connects to
`AGENTAUDIT_CLICKHOUSE_URL`. Embedded mode connects to the process that owns the chDB
directory (the worker or the demo) through the endpoint it publishes, or, when nobody owns
it, becomes the owner for the duration of the context, so other processes can reach it too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from agentaudit.errors import StoreUnavailable
from agentaudit.settings import Settings
from agentaudit.store.client import ClickHouseStore, Endpoint
from agentaudit.store.embedded import EmbeddedOwner, Published, directory_locked, read_live_endpoint
from agentaudit.store.protocol import QueryResult, Store

__all__ = ["ClickHouseStore", "QueryResult", "Store", "open_store", "store_exists"]

# A process that has just locked the directory publishes its endpoint a moment later.
_OWNER_STARTUP_S = 5.0
_POLL_S = 0.05


@contextmanager
def open_store(
    settings: Settings, *, own: bool = False, attach: bool = False, timeout: float = 300
) -> Iterator[ClickHouseStore]:
    """A connected `Store` (a `ClickHouseStore`) for the context's duration; `timeout`: how long
    a call waits for an answer (whole seconds) before it raises StoreUnavailable.

    `own=True` is for the one process meant to own the embedded store (the worker, the demo):
    it raises StoreUnavailable, naming the owner's pid, instead of connecting to an owner.
    `attach=True` is the opposite, for helpers of an owner (sink processes): it connects to
    the running owner and raises StoreUnavailable when there is none, never owning the store.
    """
    if not settings.embedded:
        assert settings.clickhouse_url is not None
        endpoint = Endpoint.from_url(settings.clickhouse_url)
        with _closing(ClickHouseStore(endpoint, timeout=timeout)) as store:
            yield store
        return
    if attach:
        live = read_live_endpoint(settings)
        if live is None:
            raise StoreUnavailable(f"no process serves the embedded store {settings.store_dir}")
        with _closing(
            ClickHouseStore(live.endpoint(), connect_timeout=3, timeout=timeout)
        ) as store:
            yield store
        return
    owner = EmbeddedOwner(settings)
    published = _find_or_become_owner(settings, owner, own)
    try:
        with _closing(
            ClickHouseStore(published.endpoint(), connect_timeout=3, timeout=timeout)
        ) as store:
            yield store
    finally:
        owner.close()  # no-op when another process owns the store


def _find_or_become_owner(settings: Settings, owner: EmbeddedOwner, own: bool) -> Published:
    deadline = time.monotonic() + _OWNER_STARTUP_S
    while True:
        live = read_live_endpoint(settings)
        if live is not None:
            if own:
                who = (
                    "this process"
                    if live.pid == os.getpid()
                    else f"another agentaudit process (pid {live.pid})"
                )
                raise StoreUnavailable(
                    f"the embedded store {settings.store_dir} is already owned by {who}; "
                    "stop it first, or run this command without owning the store"
                )
            return live
        try:
            return owner.open()
        except StoreUnavailable:
            # Locked by a process that may be about to publish its endpoint: look again.
            if time.monotonic() >= deadline or not directory_locked(settings.store_dir):
                raise
        time.sleep(_POLL_S)


@contextmanager
def _closing(store: ClickHouseStore) -> Iterator[ClickHouseStore]:
    try:
        yield store
    finally:
        store.close()


def store_exists(settings: Settings) -> bool:
    """Whether `agentaudit migrate` (or the demo) has created the store's tables.

    Embedded mode looks at chDB's metadata files without opening the store, so it neither
    creates an empty store nor needs the directory lock; server mode asks the server.
    """
    if settings.embedded:
        return (settings.store_dir / "metadata" / "agentaudit" / "schema_migrations.sql").exists()
    with open_store(settings) as store:
        rows = store.query(
            "SELECT count() FROM system.tables "
            "WHERE database = 'agentaudit' AND name = 'schema_migrations'"
        ).result_rows
    return bool(rows and rows[0][0])
