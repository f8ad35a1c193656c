"""Opening the store: engine, Alembic migrations, the dialects' inserts.

SQLite (a file path) is the embedded default; PostgreSQL (a URL) is opened by
:mod:`lnflow.store.engines.postgresql`. Engine-specific parts (SQLite's pragmas,
the conflict-ignoring insert, bulk statements) sit behind the functions here and
in :mod:`lnflow.store.engines`, so the rest of the store stays portable SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.sql.dml import Insert

from lnflow.errors import StoreError
from lnflow.store.engines import DbUrl, StoreLocation, positional_dialect

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PgInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

    from lnflow.store.engines.postgresql import ArrayInsert
from lnflow.store.readonly import (
    SCHEMA_REVISIONS,
    check_revision,
    connect_readonly,
    existing_store,
    permission_denied,
)

__all__ = [
    "BUSY_TIMEOUT_MS",
    "WAL_SIZE_LIMIT",
    "BulkStatement",
    "dialect_insert",
    "insert_ignoring_duplicates",
    "make_private_dir",
    "migrations_dir",
    "open_engine",
    "open_readonly_engine",
    "sqlite_connection",
    "upgrade_in_child",
    "upsert_adding",
    "wal_bytes",
    "wal_path",
]


def migrations_dir() -> Path:
    """The Alembic script folder: inside the wheel, or the repository's top level."""
    packaged = Path(str(resources.files("lnflow"))) / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "migrations"


BUSY_TIMEOUT_MS = 5000

#: bytes a WAL file keeps after a checkpoint restarted it (SQLite's journal_size_limit)
WAL_SIZE_LIMIT = 16 * 1024 * 1024


def _bind_cheaply() -> None:
    """Give ``None`` and ``bool`` parameters an adapter of their own (hot path).

    The sqlite3 driver binds int, float and str as they are. Any other value, NULL
    included, first goes through its adapter protocol: a registry lookup, then two
    attribute lookups, one of which raises and clears an AttributeError. That took
    ~0.3 µs per value; an event row binds 5 to 9 NULLs or bools, so it was ~2 µs of
    every stored event. Found in the registry, a value costs one C call instead.
    What is bound does not change: NULL for None (``{}.get(None)`` is None), 1 and 0
    for True and False, as the driver binds a bool (an int) without an adapter.
    """
    as_null = cast("Callable[[None], None]", {}.get)  # a C call returning None
    sqlite3.register_adapter(type(None), as_null)
    sqlite3.register_adapter(bool, int)


_bind_cheaply()


def wal_path(path: Path) -> Path:
    """The WAL file beside the store at ``path``."""
    return path.with_name(path.name + "-wal")


def wal_bytes(path: Path) -> int:
    """Size of the store's WAL file (0 when there is none)."""
    try:
        return wal_path(path).stat().st_size
    except OSError:
        return 0


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    if isinstance(dbapi_conn, sqlite3.Connection):
        cur = dbapi_conn.cursor()
        # Only takes effect on a new, empty file: lets retention reclaim space in small
        # steps (PRAGMA incremental_vacuum) instead of a long full VACUUM.
        cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cur.execute("PRAGMA journal_mode=WAL")
        # A WAL that grew behind a long reader is cut back to this size once it restarts
        # (retention's checkpoints truncate it to zero when no reader holds it).
        cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.close()


def open_engine(
    path: StoreLocation, *, migrate: bool = True, migrate_in_child: bool = False
) -> Engine:
    """Open (creating if needed, mode 0600) the store at ``path`` for writing; a
    :class:`~lnflow.store.engines.DbUrl` opens an existing PostgreSQL database.

    Applies every pending migration when ``migrate`` (in a short-lived child process
    with ``migrate_in_child``: the daemon's); refuses a store whose schema is newer
    than this code.
    """
    if isinstance(path, DbUrl):
        from lnflow.store.engines import postgresql

        engine = postgresql.open_engine(path)
        return _migrated(engine, path, migrate=migrate, migrate_in_child=migrate_in_child)
    path = path.expanduser()
    try:
        make_private_dir(path.parent)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except PermissionError as exc:
        raise permission_denied(path) from exc
    except OSError as exc:
        raise StoreError(
            f"cannot create the store at {path} ({exc.strerror}): pass --db with a writable path"
        ) from exc
    refuse_foreign(path)
    # One connection kept between uses, the others closed when given back: the store
    # thread's batches reuse the kept one, and a connection the analysis, the metrics
    # or a job opened beside it does not keep its page cache (up to 2 MB) and
    # prepared statements for the daemon's lifetime (bench/README.md: memory). At most
    # 15 at once, as before.
    engine = create_engine(f"sqlite:///{path}", pool_size=1, max_overflow=14)
    event.listen(engine, "connect", _on_connect)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        reason = getattr(exc, "orig", None) or exc
        raise StoreError(f"cannot open the store at {path} ({reason}): check --db") from exc
    return _migrated(engine, path, migrate=migrate, migrate_in_child=migrate_in_child)


def _migrated(
    engine: Engine, path: StoreLocation, *, migrate: bool, migrate_in_child: bool
) -> Engine:
    if migrate:
        try:
            (upgrade_in_child if migrate_in_child else upgrade)(engine, path)
        except BaseException:
            engine.dispose()
            raise
    return engine


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) as 0700 whatever the umask; an existing
    directory keeps its mode (the operator chose it)."""
    missing = []
    for p in (path, *path.parents):
        if p.is_dir():
            break
        missing.append(p)
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            p.mkdir(mode=0o700)
            os.chmod(p, 0o700)  # mkdir's mode is masked by the umask


def refuse_foreign(path: Path) -> None:
    """Refuse, before anything writes to it, a file at ``path`` that is not an lnflow
    store (another application's database, a non-SQLite file); an empty file passes.

    Checked on a read-only connection without lnflow's pragmas: opening the store for
    writing switches it to WAL, which would already change someone else's file.
    """
    if not os.access(path, os.R_OK | os.W_OK):
        raise permission_denied(path)
    if path.stat().st_size == 0:
        return
    try:
        conn = connect_readonly(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store at {path} ({exc}): check --db") from exc
    try:
        check_revision(conn, path, allow_empty=True)
    finally:
        conn.close()


def open_readonly_engine(path: StoreLocation) -> Engine:
    """Open an existing store read-only (lnflowctl); never creates or migrates."""
    if isinstance(path, DbUrl):
        from lnflow.store.engines import postgresql

        engine = postgresql.open_engine(path, readonly=True)
        try:
            check_schema(engine, path)
        except BaseException:
            engine.dispose()
            raise
        return engine
    path = existing_store(path)
    engine = create_engine("sqlite://", creator=lambda: connect_readonly(path))
    check_schema(engine, path)
    return engine


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def check_schema(engine: Engine, path: StoreLocation, *, allow_empty: bool = False) -> str | None:
    """Return the store's revision; raise if it is not an lnflow store, newer than this
    code, or unreadable (``allow_empty``: None for a database without tables yet)."""
    if isinstance(path, DbUrl):
        from lnflow.store.engines import postgresql

        try:
            with engine.connect() as pg:
                return postgresql.check_revision(pg, path, allow_empty=allow_empty)
        except Exception as exc:
            if isinstance(exc, StoreError):
                raise
            raise postgresql.connect_error(exc, path) from None
    try:
        conn = engine.connect()
    except Exception as exc:
        reason = getattr(exc, "orig", None) or exc
        raise StoreError(f"{path} is not an lnflow store ({reason}): check --db") from exc
    with conn:
        return check_revision(sqlite_connection(conn), path, allow_empty=allow_empty)


def sqlite_connection(conn: Connection) -> sqlite3.Connection:
    """The :mod:`sqlite3` connection under a SQLAlchemy one (same transaction)."""
    raw = conn.connection.driver_connection
    if not isinstance(raw, sqlite3.Connection):
        raise StoreError(f"expected a SQLite store, got {type(raw).__name__}")
    return raw


def upgrade(engine: Engine, path: StoreLocation, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` in one transaction.

    A store already at the newest revision does not load Alembic at all (it would
    stay in the daemon's memory for nothing).
    """
    current = check_schema(engine, path, allow_empty=True)
    if revision == "head" and current == SCHEMA_REVISIONS[-1]:
        return
    from alembic import command

    _migrate(engine, path, current, lambda cfg: command.upgrade(cfg, revision))


def _migrate(engine: Engine, path: StoreLocation, current: str | None, run: Any) -> None:
    """Run Alembic ``run(cfg)`` in one transaction that covers its DDL too.

    pysqlite commits before (and does not begin a transaction for) CREATE, DROP and
    ALTER, so a migration failing halfway would leave half a schema. Here the driver's
    own transaction handling is off and BEGIN is emitted explicitly: SQLite rolls the
    whole upgrade back on any error, and the file keeps its previous revision.
    """
    from sqlalchemy import exc as sa_exc

    at = f"revision {current}" if current else "empty"
    if engine.dialect.name != "sqlite":
        # PostgreSQL's DDL is transactional: one transaction covers the whole upgrade
        from lnflow.store.engines.postgresql import lock_migrations

        cfg = _alembic_config(engine)
        try:
            with engine.begin() as conn:
                lock_migrations(conn)  # Alembic then reads the revision another one left
                cfg.attributes["connection"] = conn
                run(cfg)
        except sa_exc.DBAPIError as exc:
            raise StoreError(
                f"cannot migrate the store {path} ({str(exc.orig).splitlines()[0]}): nothing"
                f" was changed, the store is still {at}; the role needs CREATE on the"
                " database (docs/postgresql.md)"
            ) from None
        return
    from sqlalchemy.pool import NullPool

    ddl = create_engine(engine.url, poolclass=NullPool)

    @event.listens_for(ddl, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        _on_connect(dbapi_conn, record)
        dbapi_conn.isolation_level = None

    @event.listens_for(ddl, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    cfg = _alembic_config(engine)
    try:
        with ddl.begin() as conn:
            cfg.attributes["connection"] = conn
            run(cfg)
    except (sa_exc.DBAPIError, sqlite3.Error) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise StoreError(
            f"cannot migrate the store at {path} ({reason}): nothing was changed, the store "
            f"is still {at}; free disk space or restore it from a backup"
        ) from exc
    finally:
        ddl.dispose()


def upgrade_in_child(engine: Engine, path: StoreLocation) -> None:
    """:func:`upgrade` to the newest revision in a child process (``python -m
    lnflow.store.db PATH``; a URL goes on its stdin, never on a command line).

    Alembic, Mako and the migration scripts cost the process that loads them ~9 MB
    that Python does not give back; a long-running process keeps them out this way.
    """
    if check_schema(engine, path, allow_empty=True) == SCHEMA_REVISIONS[-1]:
        return
    import subprocess

    url = path.secret if isinstance(path, DbUrl) else None
    out = subprocess.run(
        [sys.executable, "-m", "lnflow.store.db", "-" if url else str(path)],
        input=url or "",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if out.returncode == _MIGRATE_FAILED:
        raise StoreError(out.stderr.strip() or f"cannot migrate the store at {path}")
    if out.returncode != 0:  # a bug: its traceback
        sys.stderr.write(out.stderr)
        raise StoreError(f"migrating the store at {path} failed (status {out.returncode})")


_MIGRATE_FAILED = 3


def _migrate_main(argv: Sequence[str]) -> int:
    """Child of :func:`upgrade_in_child`: migrate the store at ``argv[0]`` (``-``: the
    URL read from stdin)."""
    try:
        where: StoreLocation = DbUrl(sys.stdin.read().strip()) if argv[0] == "-" else Path(argv[0])
        open_engine(where).dispose()
    except StoreError as exc:
        print(exc, file=sys.stderr)
        return _MIGRATE_FAILED
    return 0


def downgrade(engine: Engine, revision: str) -> None:
    """Revert migrations down to ``revision`` (tests, operators rolling back)."""
    from alembic import command

    where = path_of(engine)
    current = check_schema(engine, where, allow_empty=True)
    _migrate(engine, where, current, lambda cfg: command.downgrade(cfg, revision))


def path_of(engine: Engine) -> StoreLocation:
    """The file of a SQLite engine, the URL of any other."""
    if engine.dialect.name != "sqlite":
        return DbUrl(engine.url.render_as_string(hide_password=False))
    return Path(engine.url.database or "")


def dialect_insert(engine: Engine, table: Table) -> SqliteInsert | PgInsert:
    """The dialect's own INSERT (it has ON CONFLICT); the one place that picks a dialect.

    Imported here, not at module level: the PostgreSQL dialect pulls in asyncpg and
    asyncio, which lnflowctl's start-up does not need.
    """
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def upsert_adding(engine: Engine, table: Table, counters: Sequence[str]) -> Insert:
    """An INSERT that, on a primary-key clash, adds ``counters`` to the existing row.

    Used for rollups: each batch contributes increments, never totals.
    """
    stmt = dialect_insert(engine, table)
    key = [c.name for c in table.primary_key.columns]
    return stmt.on_conflict_do_update(
        index_elements=key,
        set_={name: table.c[name] + stmt.excluded[name] for name in counters},
    )


class BulkStatement:
    """An INSERT compiled once for many positional rows (the hot path).

    SQLAlchemy's per-row parameter processing costs more than SQLite's insert
    itself at tens of thousands of rows per second; rows here are plain tuples in
    ``columns`` order, handed to the driver as they are (so values must already
    be what the driver takes: ints, str, bool, None).

    SQLite runs the statement once per row (executemany). PostgreSQL gets the whole
    batch in one statement, each column as an array
    (:class:`lnflow.store.engines.postgresql.ArrayInsert`): one round trip, and the
    statement-level triggers fire once. Its rows must then be distinct in the
    conflict key when the statement updates on conflict (an upsert may change a row
    once per statement); rows an ``ON CONFLICT DO NOTHING`` skips, duplicates inside
    the batch included, are skipped as one by one.
    """

    def __init__(self, engine: Engine, stmt: Insert, columns: Sequence[str]) -> None:
        dialect = positional_dialect(engine.dialect)
        compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
        order = compiled.positiontup
        if order is None:
            raise StoreError(f"{engine.dialect.name}: positional parameters needed for bulk writes")
        index = {name: i for i, name in enumerate(columns)}
        self.sql = str(compiled)
        self.columns = tuple(columns)
        self._picks = [index.get(name) for name in order]
        self._constants = [compiled.params.get(name) for name in order]
        self._identity = self._picks == list(range(len(columns)))
        # The columns in order, then only constants (an upsert's CASE values): a row
        # then takes one tuple concatenation instead of a pick per parameter.
        n = len(columns)
        tail = self._picks[n:]
        self._suffix: tuple[Any, ...] | None = None
        if not self._identity and self._picks[:n] == list(range(n)) and tail == [None] * len(tail):
            self._suffix = tuple(self._constants[n:])
        self._arrays: ArrayInsert | None = None
        if engine.dialect.name == "postgresql":
            from lnflow.store.engines.postgresql import ArrayInsert

            table = stmt.table
            placed = [self.columns[i] for i in self._picks[:n] if i is not None]
            if len(placed) == n and len(set(placed)) == n and tail == [None] * len(tail):
                types = [table.c[name].type.compile(dialect=dialect) for name in placed]
                self._arrays = ArrayInsert.of(self.sql, types)
                self._placed = [index[name] for name in placed]
                self._tail = tuple(self._constants[n:])  # the constants after the columns

    def execute(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> int:
        """Write every row; returns how many rows were changed."""
        if not rows:
            return 0
        if self._arrays is not None:
            by_column = list(zip(*rows, strict=True))
            return self._arrays.execute(conn, [by_column[i] for i in self._placed], self._tail)
        if self._suffix is not None:
            suffix = self._suffix
            rows = [tuple(row) + suffix for row in rows]
        elif not self._identity:
            picks, constants = self._picks, self._constants
            rows = [
                tuple(row[i] if i is not None else c for i, c in zip(picks, constants, strict=True))
                for row in rows
            ]
        result = conn.exec_driver_sql(self.sql, list(rows))
        return int(result.rowcount or 0)

    def execute_mappings(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """:meth:`execute` for rows given as column name -> value."""
        columns = self.columns
        return self.execute(conn, [tuple(row[c] for c in columns) for row in rows])


def insert_ignoring_duplicates(engine: Engine, table: Table) -> Insert:
    """An INSERT that skips rows violating a unique key, in this engine's dialect."""
    return dialect_insert(engine, table).on_conflict_do_nothing()


if __name__ == "__main__":
    sys.exit(_migrate_main(sys.argv[1:]))
