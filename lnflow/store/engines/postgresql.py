"""PostgreSQL behind the store: connecting through psycopg 3, the one-line errors a
connection ends in, the schema check, bulk writes.

The password is never part of what lnflow prints: errors name the URL through
:class:`~lnflow.store.engines.DbUrl`, which masks it, and the server's own message is
cut to its first line with the secret removed. libpq reads a password left out of the
URL from ``PGPASSWORD`` or ``PGPASSFILE`` (``~/.pgpass``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.engine import Dialect

from lnflow.errors import StoreError
from lnflow.store.engines import DbUrl, PlainDb
from lnflow.store.readonly import judge_revision
from lnflow.store.schema import with_postgresql_where

# the partial indexes' WHERE on this engine (lnflow.store.schema)
with_postgresql_where()

__all__ = [
    "EXTRA_HINT",
    "ArrayInsert",
    "PlainReader",
    "bytes_per_row",
    "check_revision",
    "connect_error",
    "open_engine",
    "open_plain_writer",
    "positional",
    "reason_of",
    "store_bytes",
]

EXTRA_HINT = "pip install 'lnflow[postgresql]'"

#: seconds a connection attempt waits for the server before the store is called unreachable
CONNECT_TIMEOUT_S = 10
#: a connection to a server gone silent (network lost, host down: no reset) fails in
#: about 20 s instead of hanging a write, the heartbeat and the node's lock for hours
LIVENESS_ARGS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,  # ms of unacknowledged data
}


def _require_driver() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise StoreError(
            f"a PostgreSQL store needs the psycopg driver, which is not installed: {EXTRA_HINT}"
        ) from exc


def _first_line(exc: BaseException, url: DbUrl) -> str:
    """The server's or driver's reason, one line, the password cut out."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    line = reason[0] if reason else type(exc).__name__
    from sqlalchemy.engine import make_url

    password = make_url(url.secret).password
    if password:
        line = line.replace(str(password), "***")
    return line


def reason_of(exc: BaseException, url: DbUrl) -> str:
    """The server's or driver's reason for ``exc``, one line, the password cut out."""
    return _first_line(exc, url)


def connect_error(exc: BaseException, url: DbUrl) -> StoreError:
    """The one-line :class:`StoreError` naming the fix for a failed connection."""
    reason = _first_line(exc, url)
    low = reason.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        return StoreError(
            f"the PostgreSQL server refused the password for {url} ({reason}): set it in"
            " PGPASSFILE (~/.pgpass) or PGPASSWORD, or check the role's password"
        )
    if "does not exist" in low and "database" in low:
        return StoreError(
            f"the database of {url} does not exist ({reason}): create it (createdb -O ROLE DB)"
            " or fix --db"
        )
    if "role" in low and "does not exist" in low:
        return StoreError(f"the role of {url} does not exist ({reason}): create it or fix --db")
    if "permission denied" in low:
        return StoreError(
            f"permission denied on {url} ({reason}): grant the role its privileges"
            " (docs/postgresql.md shows the roles)"
        )
    if (
        any(
            s in low
            for s in (
                "connection refused",
                "could not connect",
                "timeout",
                "timed out",
                "translate",
            )
        )
        or "connection to server" in low
    ):
        return StoreError(
            f"cannot reach the PostgreSQL server of {url} ({reason}): start it, or fix the"
            " host and port in --db"
        )
    return StoreError(f"cannot use the store {url} ({reason}): check --db")


def _numeric_loader() -> type:
    from psycopg.types.numeric import NumericLoader

    class IntegralNumericLoader(NumericLoader):
        """``numeric`` as SQLite gives the same figure: an int when whole (sum() of a
        bigint column is numeric on PostgreSQL, an integer on SQLite), else a float."""

        def load(self, data: Any) -> Any:
            value = super().load(data)
            if value.is_finite() and value == value.to_integral_value():
                return int(value)
            return float(value)

    return IntegralNumericLoader


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    # money is integers inside lnflow: sums of msat columns must come back as ints
    dbapi_conn.adapters.register_loader("numeric", _numeric_loader())


def open_engine(url: DbUrl, *, readonly: bool = False) -> Engine:
    """An engine on ``url`` after one successful connection (else a one-line error)."""
    _require_driver()
    from sqlalchemy import exc as sa_exc

    args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, **LIVENESS_ARGS}
    if readonly:
        # lnflowctl: a read-only role is enough, and nothing it runs can write
        args["options"] = "-c default_transaction_read_only=on"
    engine = create_engine(url.secret, connect_args=args, pool_pre_ping=True)
    event.listen(engine, "connect", _on_connect)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (sa_exc.DBAPIError, OSError) as exc:
        engine.dispose()
        raise connect_error(exc, url) from None
    return engine


def check_revision(conn: Connection, url: DbUrl, *, allow_empty: bool = False) -> str | None:
    """:func:`lnflow.store.readonly.check_revision` for a PostgreSQL database (its
    current schema, ``search_path``'s first)."""
    tables = {
        str(name)
        for (name,) in conn.execute(
            text("SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = current_schema()")
        )
    }
    current = None
    if "alembic_version" in tables:
        current = conn.scalar(text("SELECT version_num FROM alembic_version"))
    return judge_revision(
        tables, False, str(current) if current else None, url, allow_empty=allow_empty
    )


_POSITIONAL: dict[int, Dialect] = {}


def positional(dialect: Dialect) -> Dialect:
    """``dialect`` (psycopg's) with positional (``%s``) parameters, one per engine's
    dialect, for statements compiled once (bulk writes, the read side's hot reads)."""
    twin = _POSITIONAL.get(id(dialect))
    if twin is None:
        from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

        twin = PGDialect_psycopg(paramstyle="format")  # type: ignore[no-untyped-call]
        twin.server_version_info = dialect.server_version_info
        _POSITIONAL[id(dialect)] = twin
    return twin


class ArrayInsert:
    """An ``INSERT ... VALUES (%s, ...) [ON CONFLICT ...]`` compiled for
    :func:`positional`, run for a whole batch as one statement: ``INSERT ... SELECT *
    FROM unnest(%s::T[], ...)``, each column's values as one array (of the type its
    placeholder is cast to, else of its column's). A ``RETURNING`` SQLAlchemy added for
    the primary key is dropped.

    What stays as with one INSERT per row, in the rows' order: the ids handed out, the
    rows an ``ON CONFLICT DO NOTHING`` skips (a duplicate inside the batch too: the
    first one is stored) and the count of rows changed. What differs: the statement
    triggers fire once, and an ``ON CONFLICT DO UPDATE`` refuses to change one row twice,
    so such a batch must not repeat a conflict key.

    Integer and boolean columns travel as array literals built here (``{1,2,NULL}``):
    psycopg's array dumper quotes element by element in Python, several times the cost
    of the insert itself at thousands of rows. Other columns (text) go through psycopg.
    """

    __slots__ = ("_integral", "sql")

    def __init__(self, sql: str, integral: list[bool]) -> None:
        self.sql = sql
        self._integral = integral

    @classmethod
    def of(cls, sql: str, types: Sequence[str]) -> ArrayInsert | None:
        """``sql`` as one statement per batch, ``types`` its columns' (None when ``sql``
        has not the shape of one row's INSERT)."""
        found = _VALUES.findall(sql)
        if len(found) != 1:
            return None
        placeholders = found[0].split(", ")
        if len(placeholders) != len(types):
            return None
        arrays, integral = [], []
        for placeholder, column_type in zip(placeholders, types, strict=True):
            match = _PLACEHOLDER.fullmatch(placeholder)
            if match is None:
                return None
            element = match.group(1) or column_type
            arrays.append(f"%s::{element}[]")
            integral.append(element in _INTEGRAL)
        sql = sql.replace(f"VALUES ({found[0]})", f"SELECT * FROM unnest({', '.join(arrays)})")
        return cls(_RETURNING.sub("", sql), integral)

    def execute(
        self, conn: Connection, columns: Sequence[Sequence[Any]], tail: Sequence[Any]
    ) -> int:
        """Insert the rows whose values ``columns`` holds column by column (in the
        placeholders' order), ``tail`` the statement's other parameters; returns how
        many rows were changed."""
        params = [
            _literal(values) if integral else list(values)
            for values, integral in zip(columns, self._integral, strict=True)
        ]
        return int(conn.exec_driver_sql(self.sql, (*params, *tail)).rowcount or 0)


def _literal(values: Sequence[Any]) -> str:
    """An integer or boolean array's literal (a bool as 1 or 0, which PostgreSQL's
    boolean input takes)."""
    text_ = int.__repr__
    if None in values:
        return "{" + ",".join(["NULL" if v is None else text_(v) for v in values]) + "}"
    return "{" + ",".join(map(text_, values)) + "}"


_VALUES = re.compile(r"VALUES \(([^()]*)\)")
_PLACEHOLDER = re.compile(r"%s(?:::([A-Z][A-Z ]*))?")
_RETURNING = re.compile(r" RETURNING [\w.]+$")
_INTEGRAL = frozenset({"SMALLINT", "INTEGER", "BIGINT", "BOOLEAN"})


_PLAIN_SQL: dict[str, str] = {}  # a plain reader's SQL, in psycopg's placeholders


class PlainReader:
    """A psycopg connection spoken to like :mod:`sqlite3` by the plain readers
    (:mod:`lnflow.store.status_read`): their ``?`` placeholders become psycopg's ``%s``
    (their SQL has no ``?`` or ``%`` inside string literals)."""

    __slots__ = ("_close", "_raw")

    def __init__(self, raw: Any, close: Any = None) -> None:
        self._raw = raw
        self._close = close

    def close(self) -> None:
        """Close what :func:`open_plain` opened (nothing for a borrowed connection)."""
        if self._close is not None:
            self._close()
            self._close = None

    def commit(self) -> None:
        self._raw.commit()

    def store_bytes(self) -> int:
        """What lnflow's tables take on the server's disk (:func:`store_bytes`)."""
        row = self.execute(_STORE_BYTES.replace("%s", "?"), (_table_names(),)).fetchone()
        return int(row[0])

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        text_ = _PLAIN_SQL.get(sql)
        if text_ is None:
            text_ = _PLAIN_SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
        return self._raw.execute(text_, tuple(parameters))


def open_plain(url: DbUrl) -> PlainReader:
    """A read-only connection to the lnflow store at ``url`` (its schema checked), for
    the plain readers (``lnflowctl status``); the caller closes it."""
    from lnflow.store.db import open_readonly_engine

    engine = open_readonly_engine(url)
    raw = engine.raw_connection()

    def close() -> None:
        raw.close()
        engine.dispose()

    return PlainReader(raw.driver_connection, close)


def open_plain_writer(engine: Engine) -> PlainReader:
    """A connection of ``engine``'s pool for the plain writers (the policy engine's
    history), committed by its :meth:`~PlainReader.commit`; closing it hands it back to
    the pool, which rolls back what was not committed."""
    raw = engine.raw_connection()
    return PlainReader(raw.driver_connection, raw.close)


#: the first key of lnflow's advisory locks on nodes (two-int form: the node's id second)
NODE_LOCKS = 0x6C6E666C  # "lnfl"
#: the first key of lnflow's store-wide advisory locks, and their second keys
STORE_LOCKS = NODE_LOCKS + 1
CLUSTER_NUMBERING = 0
MIGRATIONS = 1
POLICY_RUN_NUMBERING = 2


class NodeLock:
    """A session advisory lock on one node, held by a connection of its own for the
    daemon's lifetime: a second daemon of the node cannot take it, daemons of other
    nodes take theirs. The server drops it with the connection (crash, kill, network
    loss included)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    @classmethod
    def try_take(cls, engine: Engine, node_id: int) -> NodeLock | None:
        """The node's lock, or None while another session holds it."""
        raw = engine.raw_connection()
        try:
            conn: Any = raw.driver_connection
            conn.autocommit = True  # no transaction (and snapshot) held open for days
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (NODE_LOCKS, node_id)
            ).fetchone()
        except BaseException:
            raw.invalidate()
            raise
        if not row[0]:
            raw.close()
            return None
        return cls(raw)

    def held(self) -> bool:
        """Whether the session holding the lock is still there: a server restart, a
        terminated backend or a lost network drop the session, and the lock with it."""
        raw = self._raw
        if raw is None:
            return False
        try:
            raw.driver_connection.execute("SELECT 1").fetchone()
        except Exception:  # any failure: the session is gone
            return False
        return True

    def release(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.invalidate()  # closing the session drops the lock; never back to the pool


def lock_cluster_numbering(conn: Connection) -> None:
    """Serialise cluster numbering between daemons of different nodes until ``conn``'s
    transaction ends: each reads the store's highest cluster id and inserts past it."""
    _xact_lock(conn, CLUSTER_NUMBERING)


def lock_migrations(conn: Connection) -> None:
    """One migration at a time until ``conn``'s transaction ends: daemons started together
    on an empty database migrate it once (the second finds it migrated)."""
    _xact_lock(conn, MIGRATIONS)


def lock_run_numbering(db: PlainDb) -> None:
    """Serialise the numbering of policy runs until ``db``'s transaction ends: each
    writer reads the highest run id and inserts the next."""
    db.execute("SELECT pg_advisory_xact_lock(?, ?)", (STORE_LOCKS, POLICY_RUN_NUMBERING))


def _xact_lock(conn: Connection, key: int) -> None:
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:space, :key)"), {"space": STORE_LOCKS, "key": key}
    )


def _table_names() -> list[str]:
    from lnflow.store.schema import metadata

    return sorted(metadata.tables)


# lnflow's tables of the current schema (search_path's first), indexes and TOAST included
_STORE_BYTES = (
    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_catalog.pg_class AS c"
    " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
    " WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname = ANY(%s)"
)


def store_bytes(engine: Engine) -> int:
    """What lnflow's tables take on the server's disk: their ``pg_total_relation_size``
    (rows, dead rows and free space, indexes, TOAST), not the database's, which may hold
    other applications' tables."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(_STORE_BYTES, (_table_names(),)).scalar_one())


#: rows whose size is read to estimate a table's bytes per row (its newest, by key)
SAMPLE_ROWS = 1000
#: bytes a heap row takes beside its ``pg_column_size`` (which counts its header): its
#: line pointer
ROW_OVERHEAD_BYTES = 4


def bytes_per_row(conn: Connection, tables: Sequence[Table]) -> dict[str, tuple[int, float]]:
    """Per table: (rows, the bytes one of its rows takes, indexes and TOAST included).

    What the size budget counts on PostgreSQL (:mod:`lnflow.store.retention`): a delete
    does not shrink a table's files, its space is reused by later rows, so the files'
    size cannot tell what a drop freed. A row's share is its data (``pg_column_size`` of
    the :data:`SAMPLE_ROWS` newest rows, plus :data:`ROW_OVERHEAD_BYTES`) scaled by the
    table's total size over its heap's (the indexes' and TOAST's share), and never more
    than the table's size over its rows. ``count(*)`` reads each table once."""
    out: dict[str, tuple[int, float]] = {}
    for table in tables:
        name = conn.dialect.identifier_preparer.format_table(table)
        rows = int(conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())
        if not rows:
            out[table.name] = (0, 0.0)
            continue
        order = ", ".join(
            f"{conn.dialect.identifier_preparer.quote(c.name)} DESC" for c in table.primary_key
        )
        width = float(
            conn.execute(
                text(
                    f"SELECT avg(pg_column_size(s.*)) FROM (SELECT * FROM {name}"
                    f" ORDER BY {order} LIMIT {SAMPLE_ROWS}) AS s"
                )
            ).scalar_one()
        )
        heap, total = conn.execute(
            text(
                "SELECT pg_relation_size(CAST(:t AS regclass)),"
                " pg_total_relation_size(CAST(:t AS regclass))"
            ),
            {"t": name},
        ).one()
        share = (width + ROW_OVERHEAD_BYTES) * (int(total) / int(heap) if heap else 1.0)
        out[table.name] = (rows, min(share, int(total) / rows))
    return out
