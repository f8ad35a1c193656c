"""Where the store lives, and the engine-specific code behind one small interface.

A store is a SQLite file (a path: the embedded default) or a PostgreSQL database (a
SQLAlchemy URL, ``postgresql+psycopg://user@host/db``). Code that differs between the
two lives in one module per engine, not in branches through the store:

- :mod:`lnflow.store.engines.sqlite`: opening the file (pragmas, WAL, the read-only
  connection), the conflict-ignoring and adding inserts, bulk writes;
- :mod:`lnflow.store.engines.postgresql`: the same for a server, with the errors a
  connection can end in (bad URL, refused password, server down, driver missing);
- :mod:`lnflow.store.engines.ddl`: the schema changes the Alembic revisions spell
  differently.

This module imports neither SQLAlchemy nor a driver: ``lnflowctl status`` on a SQLite
store starts without them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lnflow.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import Dialect

__all__ = [
    "DbUrl",
    "PlainCursor",
    "PlainDb",
    "PlainWriter",
    "PlainWriterStore",
    "StoreLocation",
    "has_table",
    "is_url",
    "location",
    "lock_cluster_numbering",
    "lock_run_numbering",
    "open_plain_writer",
    "plain_connection",
    "positional_dialect",
    "store_bytes",
]

# scheme://...: anything else is a file path (a path may contain ':' but not '://')
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

#: the drivers lnflow supports for a URL, and the extra each is installed with
_DRIVERS = {"postgresql+psycopg": "postgresql"}


def is_url(db: str) -> bool:
    """Whether ``--db``/``[store] db`` names a database server rather than a file."""
    return bool(_URL.match(db))


class DbUrl:
    """A database server's URL. ``str()`` masks the password: an f-string of it in a
    log line, ``status`` or an error can never show the secret; :attr:`secret` is the
    URL to connect with."""

    __slots__ = ("_masked", "dialect", "secret")

    def __init__(self, text: str) -> None:
        scheme = text.split("://", 1)[0].lower()
        if scheme in ("postgresql", "postgres"):
            # the psycopg 3 driver is the one lnflow ships an extra for
            text = "postgresql+psycopg://" + text.split("://", 1)[1]
            scheme = "postgresql+psycopg"
        if scheme not in _DRIVERS:
            raise StoreError(
                f"--db: unsupported database URL scheme {scheme!r}: use a file path"
                " (SQLite) or postgresql+psycopg://USER@HOST/DB"
            )
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(text)  # a port that is no number raises here too
        except (ArgumentError, ValueError):
            raise StoreError(
                "--db: malformed database URL: expected postgresql+psycopg://USER@HOST[:PORT]/DB"
                " (the password from PGPASSFILE, PGPASSWORD or the URL)"
            ) from None  # the exception would show the URL, password and all
        if not url.database:
            raise StoreError(
                f"--db: the URL {url.render_as_string(hide_password=True)} names no database:"
                " append /DBNAME"
            )
        self.secret = text
        self.dialect = url.get_backend_name()
        self._masked = url.render_as_string(hide_password=True)

    def __str__(self) -> str:
        return self._masked

    def __repr__(self) -> str:
        return f"DbUrl({self._masked!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DbUrl) and other.secret == self.secret

    def __hash__(self) -> int:
        return hash(self.secret)


StoreLocation = Path | DbUrl


def location(db: str, default: Path) -> StoreLocation:
    """The store ``db`` names: a :class:`DbUrl` for a URL, else a file path
    (``~`` expanded; ``default`` when empty)."""
    if not db:
        return default
    if is_url(db):
        return DbUrl(db)
    return Path(db).expanduser()


def positional_dialect(dialect: Dialect) -> Dialect:
    """``dialect``, or its twin with positional parameters: statements compiled once
    and run with ``exec_driver_sql`` take their values as a tuple (SQLite's ``?``;
    psycopg's ``%s`` instead of its default named style)."""
    if dialect.name == "postgresql":
        from lnflow.store.engines.postgresql import positional

        return positional(dialect)
    return dialect


class PlainCursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class PlainDb(Protocol):
    """What the plain readers (lnflow.store.status_read) ask of a connection: sqlite3's
    ``execute(sql, params)`` with ``?`` placeholders. A :class:`sqlite3.Connection` is
    one; on PostgreSQL, :class:`lnflow.store.engines.postgresql.PlainReader`."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> PlainCursor: ...


class PlainStore(PlainDb, Protocol):
    """A plain reader's own connection, which it closes."""

    def close(self) -> None: ...


class PlainWriter(PlainDb, Protocol):
    """A plain connection that writes (the policy engine's history): its writes are
    made durable by :meth:`commit`."""

    def commit(self) -> None: ...


class PlainWriterStore(PlainWriter, Protocol):
    """A plain writer's own connection, which it closes (uncommitted writes are lost)."""

    def close(self) -> None: ...


#: seconds the policy engine's writes on a SQLite store wait for the daemon's writer
HISTORY_BUSY_TIMEOUT_S = 30


def open_plain_writer(engine: Engine) -> PlainWriterStore:
    """A plain connection that writes into the store ``engine`` opened (migrated), for
    the policy engine's history, a few rows an hour beside the store's own writer.

    SQLite: a :mod:`sqlite3` connection of its own on the file, waiting up to
    :data:`HISTORY_BUSY_TIMEOUT_S` for the writer's lock; PostgreSQL: a connection of
    ``engine``'s pool (back to it, rolled back, on close). The caller closes it."""
    if engine.dialect.name == "postgresql":
        from lnflow.store.engines.postgresql import open_plain_writer as open_pg

        return open_pg(engine)
    import sqlite3

    db = sqlite3.connect(engine.url.database or "", timeout=HISTORY_BUSY_TIMEOUT_S)
    db.execute("PRAGMA foreign_keys = ON")
    return db


def open_plain_store(where: StoreLocation) -> PlainStore:
    """A read-only plain connection to the store at ``where`` (its schema checked): a
    SQLite file through :mod:`sqlite3`, a PostgreSQL database through psycopg."""
    if isinstance(where, DbUrl):
        from lnflow.store.engines.postgresql import open_plain

        return open_plain(where)
    from lnflow.store.readonly import open_readonly

    return open_readonly(where)


def plain_connection(conn: Connection) -> PlainDb:
    """The driver connection under a SQLAlchemy one (same transaction), spoken to like
    :mod:`sqlite3` by the plain readers."""
    raw = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        from lnflow.store.engines.postgresql import PlainReader

        return PlainReader(raw)
    import sqlite3

    assert isinstance(raw, sqlite3.Connection)
    return raw


def has_table(db: PlainDb, name: str) -> bool:
    """Whether the store has table ``name`` (a store migrated by an older lnflow may
    lack a newer table)."""
    import sqlite3

    if isinstance(db, sqlite3.Connection):
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        sql = (
            "SELECT 1 FROM pg_catalog.pg_tables"
            " WHERE schemaname = current_schema() AND tablename = ?"
        )
    return db.execute(sql, (name,)).fetchone() is not None


def column_names(db: PlainDb, table: str) -> set[str]:
    """The columns of ``table`` (empty when the store has no such table)."""
    import sqlite3

    if isinstance(db, sqlite3.Connection):
        sql = "SELECT name FROM pragma_table_info(?)"
    else:
        sql = (
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?"
        )
    return {str(name) for (name,) in db.execute(sql, (table,))}


def store_bytes(engine: Engine) -> int:
    """What the store takes on disk (the metric, the "store near its budget" alert): the
    SQLite file and its WAL, or lnflow's tables in the PostgreSQL database
    (``pg_total_relation_size``: other applications' tables are not the store's)."""
    if engine.dialect.name == "postgresql":
        from lnflow.store.engines.postgresql import store_bytes as table_bytes

        return table_bytes(engine)
    from lnflow.store.db import wal_path

    db = Path(engine.url.database or "")
    total = 0
    for path in (db, wal_path(db)):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def lock_run_numbering(db: PlainDb) -> None:
    """Hold off other writers' policy run numbering until ``db``'s transaction ends.

    A policy run's id is the store's highest plus one: on PostgreSQL the daemons of
    several nodes (and ``lnflowd policy`` by hand) may number a run at once, and two
    runs sharing an id would roll back together. SQLite: the first insert of the run
    takes the file's write lock, nothing more to do."""
    import sqlite3

    if not isinstance(db, sqlite3.Connection):
        from lnflow.store.engines.postgresql import lock_run_numbering as lock

        lock(db)


def lock_cluster_numbering(conn: Connection) -> None:
    """Hold off other writers' cluster numbering until ``conn``'s transaction ends.

    On PostgreSQL daemons of different nodes write at once: a transaction-level advisory
    lock makes reading the highest cluster id and inserting past it one step. A SQLite
    store has one writer (the daemon's file lock): nothing to do."""
    if conn.dialect.name == "postgresql":
        from lnflow.store.engines.postgresql import lock_cluster_numbering as lock

        lock(conn)
