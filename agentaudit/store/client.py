"""`ClickHouseStore`: the `Store` protocol on clickhouse-connect, for a server or embedded chDB.

Errors are classified by ClickHouse error code only (the message text is for people):
mistakes in the SQL or the data become `BadQuery`, anything that retrying or fixing the
connection settings can cure becomes `StoreUnavailable`, and the rest propagate unchanged.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver import options
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
)
from clickhouse_connect.driver.httputil import default_pool_manager
from clickhouse_connect.driver.transform import NativeTransform

from agentaudit.errors import BadQuery, StoreUnavailable
from agentaudit.store.column_types import ColumnTypes
from agentaudit.store.protocol import QueryResult

T = TypeVar("T")

# Caused by the statement or its data: syntax, unknown names, types, bad values or parameters.
USER_ERROR_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        10,  # NOT_FOUND_COLUMN_IN_BLOCK
        16,  # NO_SUCH_COLUMN_IN_TABLE
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        36,  # BAD_ARGUMENTS
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        42,  # NUMBER_OF_ARGUMENTS_DOESNT_MATCH
        43,  # ILLEGAL_TYPE_OF_ARGUMENT
        44,  # ILLEGAL_COLUMN
        46,  # UNKNOWN_FUNCTION
        47,  # UNKNOWN_IDENTIFIER
        53,  # TYPE_MISMATCH
        60,  # UNKNOWN_TABLE
        62,  # SYNTAX_ERROR
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        81,  # UNKNOWN_DATABASE
        115,  # UNKNOWN_SETTING
        117,  # INCORRECT_DATA
        164,  # READONLY
        179,  # MULTIPLE_EXPRESSIONS_FOR_ALIAS
        184,  # ILLEGAL_AGGREGATION
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        215,  # NOT_AN_AGGREGATE
        352,  # AMBIGUOUS_COLUMN_NAME
        386,  # NO_COMMON_TYPE
        407,  # DECIMAL_OVERFLOW
        456,  # UNKNOWN_QUERY_PARAMETER
        457,  # BAD_QUERY_PARAMETER
        497,  # ACCESS_DENIED
    }
)

# The store is down, overloaded or refuses our credentials: retry later or fix the URL.
UNAVAILABLE_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        194,  # REQUIRED_PASSWORD
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        # NOT_ENOUGH_SPACE: a full disk (chDB and a server alike: "Cannot reserve 1.00 MiB").
        # Freeing space is the fix, not a restart: as an engine error it stopped the sink
        # (exit 6), which then stayed down after the space was freed.
        243,
        252,  # TOO_MANY_PARTS
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        516,  # AUTHENTICATION_FAILED
    }
)


# Settings of every insert. `max_partitions_per_insert_block` (default 100) refuses, with
# error 252, a block that touches more partitions: the trail's tables are partitioned by month,
# so one tenant backfilling a few years in one batch hits it. Splitting such a batch by month
# would break the sink's exactly-once rule (it stores contiguous offset ranges, in order), so
# the limit is lifted on purpose: the contract bounds `occurred_at` to 2000..2199 (2,400
# months), and our tables' partition keys are fixed by the migrations.
INSERT_SETTINGS: dict[str, str] = {"max_partitions_per_insert_block": "0"}


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach ClickHouse over HTTP."""

    host: str
    port: int
    username: str
    password: str
    database: str | None
    secure: bool
    compress: bool = True
    direct: bool = False  # loopback: ignore HTTP(S)_PROXY from the environment
    embedded: bool = False
    """The embedded chDB store's server: it ignores `insert_deduplication_token`."""

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """Parse `http[s]://user:password@host:port/database` (user, password, database
        optional)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The URL as given, but never its password (this message reaches terminals and logs).
            shown = url.replace(parts.password, "***") if parts.password else url
            raise StoreUnavailable(
                f"invalid ClickHouse URL {shown!r}: set AGENTAUDIT_CLICKHOUSE_URL to "
                "http[s]://user:password@host:port/database"
            )
        secure = parts.scheme == "https"
        return cls(
            host=parts.hostname,
            port=parts.port or (8443 if secure else 8123),
            username=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.strip("/")) or None,
            secure=secure,
        )

    def describe(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}"


class _InStoreCall(threading.local):
    depth = 0


_in_store_call = _InStoreCall()


class _TransportNoise(logging.Filter):
    """Drop the HTTP libraries' log records about a failed request while a store call runs.

    clickhouse-connect logs the whole urllib3 traceback ("Unexpected Http Driver Exception")
    and urllib3 a "Retrying ..." line before the call raises; the call's error reaches the
    caller as StoreUnavailable with the cause, so these ~60 lines only bury it (CLI output,
    and the worker's log on every retry). Records of other urllib3 users are kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return _in_store_call.depth == 0


for _name in ("clickhouse_connect.driver._backend.http_sync", "urllib3.connectionpool"):
    logging.getLogger(_name).addFilter(_TransportNoise())


def _skip_unloaded_dataframe_libraries() -> None:
    """Tell clickhouse-connect that pandas and numpy are absent when this process has not
    imported them, so that asking whether insert data is a DataFrame does not import them.

    `InsertContext.data` asks `isinstance(data, options.pd.DataFrame)` (and `options.np.ndarray`)
    on every insert, and `options` resolves `pd`/`np` on first use by importing the library:
    ~0.6 s of CPU on every sink process start for a question whose answer is no (an object
    cannot be a DataFrame while pandas is not imported). None is the library's own value for
    "not installed", which its Python paths support. The cost: clickhouse-connect's DataFrame
    and NumPy methods (query_df, insert_df, query_np) then fail as if pandas were absent in
    such a process; the store never uses them, and a process that imported pandas before the
    store keeps them.
    """
    if "pandas" not in sys.modules:
        options.pd = None
        options.pd_time_test = None
    if "numpy" not in sys.modules:
        options.np = None


_skip_unloaded_dataframe_libraries()


def _transport_cause(exc: BaseException) -> str | None:
    """The operating system's reason for a failed connection ("Connection refused"), if any.

    Only the errno text: urllib3's own messages name the URL, which is not ours to print.
    """
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        if isinstance(found, TimeoutError) or type(found).__name__.endswith("TimeoutError"):
            return "timed out"
        if isinstance(found, OSError) and found.errno is not None:
            return (found.strerror or os.strerror(found.errno)).lower()
        found = found.__cause__ or found.__context__
    return None


def _message(exc: Exception) -> str:
    """The server's own sentence from a clickhouse-connect error, on one line (display only)."""
    text = " ".join(str(exc).split())
    _, found, rest = text.partition("DB::Exception: ")
    text = rest if found else text
    # The parser lists every token it could have accepted: noise on a terminal, dropped.
    text = text.split(". Expected one of:")[0].split(" Expected one of:")[0]
    # clickhouse-connect appends its own output format to the statement it sends.
    return text.replace(" FORMAT Native", "").rstrip(". ")


def classify(exc: Exception, where: str) -> Exception:
    """Map a clickhouse-connect error to the agentaudit error to raise (by code, never text)."""
    code = getattr(exc, "code", None)
    if code in USER_ERROR_CODES:
        return BadQuery(
            f"ClickHouse rejected the statement (code {code}): {_message(exc)}; fix it and retry"
        )
    if code in UNAVAILABLE_CODES:
        return StoreUnavailable(
            f"ClickHouse at {where} refused the request (code {code}): {_message(exc)}; "
            "check AGENTAUDIT_CLICKHOUSE_URL or retry when the store is healthy"
        )
    if isinstance(exc, OperationalError) and code is None:  # transport: refused, reset, timeout
        return StoreUnavailable(
            f"cannot reach ClickHouse at {where} ({_transport_cause(exc) or _message(exc)}); "
            "start it (or the agentaudit worker that owns the embedded store), or fix "
            "AGENTAUDIT_CLICKHOUSE_URL, and retry"
        )
    if isinstance(exc, (ProgrammingError, DataError)) and code is None:
        # Refused before sending: an unknown column, a value that does not fit its type.
        return BadQuery(f"invalid statement or data: {_message(exc)}; fix it and retry")
    return exc


def refused_statement(exc: Exception) -> BadQuery | None:
    """BadQuery for any ClickHouse error a statement ran into that `classify` left as it was
    (a code of neither list: throwIf's 395, a division by zero, ...), for callers whose
    statement is the user's own (`agentaudit query`); None for anything else."""
    code = getattr(exc, "code", None)
    if not isinstance(exc, DatabaseError) or not isinstance(code, int):
        return None
    return BadQuery(f"ClickHouse could not run the statement (code {code}): {_message(exc)}")


def _check_uuids(
    names: Sequence[str], types: Sequence[Any], columns: Sequence[Sequence[Any]]
) -> None:
    """Refuse UUID columns clickhouse-connect would mangle: it picks the encoder from the first
    value and writes all zeros, silently, for a type it does not know (e.g. `uuid_utils.UUID`)."""
    for name, ch_type, values in zip(names, types, columns, strict=True):
        if ch_type.base_type == "UUID":
            kinds = {type(v) for v in values if v is not None}
            if not (kinds <= {uuid.UUID} or kinds <= {str}):
                found = ", ".join(sorted(f"{k.__module__}.{k.__name__}" for k in kinds))
                raise BadQuery(
                    f"column {name}: UUID values must be all uuid.UUID or all str, got {found}; "
                    "convert them with str()"
                )


class ClickHouseStore:
    """`Store` over clickhouse-connect's HTTP client (thread-safe: no HTTP session is used)."""

    def __init__(
        self, endpoint: Endpoint, *, connect_timeout: float = 10, timeout: float = 300
    ) -> None:
        self._where = endpoint.describe()
        # chDB ignores the token; sending it only cost a SET and its restore per insert.
        # Exactly once never relied on it: the sink recovers its positions from the store.
        self._dedup_tokens = not endpoint.embedded
        self._types = ColumnTypes()
        with self._errors():
            self._client = clickhouse_connect.get_client(
                host=endpoint.host,
                port=endpoint.port,
                username=endpoint.username,
                password=endpoint.password,
                database=endpoint.database,
                secure=endpoint.secure,
                compress=endpoint.compress,
                # Sessions serialise a client's queries server-side and make concurrent calls
                # from worker threads fail; agentaudit keeps no session state.
                autogenerate_session_id=False,
                # A pool passed in is used as is; otherwise the client would route through
                # HTTP_PROXY when set, which cannot reach our 127.0.0.1 endpoint.
                pool_mgr=default_pool_manager() if endpoint.direct else None,
                connect_timeout=connect_timeout,
                send_receive_timeout=timeout,
                show_clickhouse_errors="scrub",  # keeps passwords and URLs out of messages
                tz_mode="schema",  # DateTime64(6, 'UTC') columns come back timezone-aware
            )

    @classmethod
    def from_url(cls, url: str) -> ClickHouseStore:
        return cls(Endpoint.from_url(url))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        _in_store_call.depth += 1
        try:
            yield
        except DatabaseError as exc:
            mapped = classify(exc, self._where)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            _in_store_call.depth -= 1

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._errors():
            return fn(*args, **kwargs)

    def query(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        *,
        column_formats: dict[str, str] | None = None,
    ) -> QueryResult:
        """Run a SELECT-like statement; `{name:Type}` placeholders bound server-side.

        String columns come back as `str`, and clickhouse-connect turns invalid UTF-8 into
        a hex string; pass `column_formats={"payload": "bytes"}` to get such a column as bytes.
        """

        def run() -> Any:
            formats: Any = column_formats
            result = self._client.query(sql, parameters=parameters, column_formats=formats)
            # Read the whole answer here: clickhouse-connect reads past its first block lazily,
            # and an error sent mid-stream (a result limit, a row the query failed on; the
            # embedded store streams large results as a server does) then escaped this call's
            # classification, raised wherever the rows were first read.
            _ = result.result_columns
            return result

        # clickhouse-connect's QueryResult has the protocol's members as read-only properties.
        return cast(QueryResult, self._call(run))

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run DDL or a statement with a small result (a scalar, a row, or a summary)."""
        try:
            return self._call(self._client.command, sql, parameters=parameters)
        finally:
            self._types.statement_ran(sql)

    def insert(
        self,
        table: str,
        columns: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        *,
        dedup_token: str | None = None,
    ) -> None:
        """Insert column-oriented data as one INSERT; `dedup_token` lets a server drop a retry.

        Column types are asked once per table and column list (`ColumnTypes`), not per insert.
        """
        token = dedup_token if dedup_token and self._dedup_tokens else None
        settings = INSERT_SETTINGS | ({"insert_deduplication_token": token} if token else {})
        names = list(column_names)
        try:
            with self._errors():
                types = self._types.get(table, names, self._describe)
                context = self._client.create_insert_context(
                    table,
                    names,
                    data=columns,
                    column_oriented=True,
                    settings=settings,
                    column_types=types,
                )
                _check_uuids(context.column_names, context.column_types, columns)
                self._client.data_insert(context)
        except Exception:
            self._types.forget(table)  # it may have been altered: ask its types again
            raise

    def encode(
        self, table: str, columns: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> bytes:
        """The Native data `insert` would send for these columns (benchmarks time it alone)."""
        names = list(column_names)
        with self._errors():
            types = self._types.get(table, names, self._describe)
            context = self._client.create_insert_context(
                table, names, data=columns, column_oriented=True, column_types=types
            )
        native = b"".join(NativeTransform.build_insert(context))
        _, found, data = native.partition(b"FORMAT Native\n")
        return data if found else native

    def _describe(self, table: str, names: list[str]) -> list[Any]:
        """The ClickHouse types of `names` in `table`, as clickhouse-connect finds them."""
        context = self._client.create_insert_context(table, names, settings=INSERT_SETTINGS)
        return list(context.column_types)

    def ping(self) -> bool:
        return bool(self._client.ping())

    def close(self) -> None:
        self._client.close()
