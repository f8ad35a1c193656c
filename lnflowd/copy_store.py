"""``lnflowd copy-store --from PATH --to URL``: move a SQLite store into PostgreSQL.

The upgrade path from the embedded store: the target database is migrated to the
newest revision first (the real Alembic revisions), then every table is copied in
foreign-key order, in batches streamed from the SQLite file into PostgreSQL's ``COPY``
(no table is held in memory), ids as they are. The whole copy is one transaction on
the target: a failure leaves it migrated and empty, and the same command can run
again. Afterwards each id sequence starts past the copied ids, and ``row_counts``
holds the source's counts (the triggers of revision 0018 count the copied rows too;
their counts are replaced, not added to).

Refused, in one line: a source that is not at this lnflowd's revision (start lnflowd
on it once: it migrates the store on start), a source a running lnflowd records into
(its lock is held here for the copy, so none starts meanwhile), and a target that
already holds rows.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lnflow.errors import LnflowError, StoreError
from lnflow.store.engines import DbUrl, is_url
from lnflow.text import printable

__all__ = ["copy_main", "copy_store"]

#: rows read from SQLite and written to PostgreSQL per batch
BATCH_ROWS = 10_000

#: tables copied by hand after the rest (the counts of the source, not the triggers')
_COUNTS = "row_counts"
_SKIPPED = frozenset({"alembic_version"})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lnflowd copy-store",
        description="Copy a SQLite store into an empty PostgreSQL database"
        " (docs/postgresql.md: Moving a SQLite store to PostgreSQL).",
    )
    p.add_argument("--from", dest="source", required=True, type=Path, help="the SQLite store")
    p.add_argument(
        "--to",
        dest="target",
        required=True,
        help="postgresql+psycopg://USER@HOST[:PORT]/DB (an empty database, or one only migrated)",
    )
    p.add_argument(
        "--batch-rows", type=int, default=BATCH_ROWS, help=f"rows per batch (default {BATCH_ROWS})"
    )
    return p


def copy_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if not is_url(args.target):
            raise StoreError(
                f"--to: {printable(args.target)} is no database URL: give"
                " postgresql+psycopg://USER@HOST[:PORT]/DB"
            )
        if args.batch_rows < 1:
            raise StoreError("--batch-rows: give a number of rows of 1 or more")
        copy_store(args.source, DbUrl(args.target), batch_rows=args.batch_rows)
    except LnflowError as exc:
        print(f"lnflowd copy-store: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


def copy_store(
    source: Path,
    target: DbUrl,
    *,
    batch_rows: int = BATCH_ROWS,
    say: Callable[[str], None] = print,
) -> dict[str, int]:
    """Copy the SQLite store at ``source`` into the PostgreSQL database ``target``;
    the rows copied per table."""
    from lnflow.store.readonly import SCHEMA_REVISIONS, check_revision, connect_readonly

    from .storeguard import StoreLock

    head = SCHEMA_REVISIONS[-1]
    lock = StoreLock(source.expanduser())
    src: sqlite3.Connection | None = None
    try:
        src = connect_readonly(source)  # no file: the one-line error
        try:
            lock.acquire()  # a running lnflowd on the source
        except StoreError as exc:
            held, sep, _ = str(exc).partition(": stop it first")
            if not sep:
                raise
            raise StoreError(
                f"{held}: stop it first, then copy (a copy reads a store no daemon writes)"
            ) from None
        revision = check_revision(src, source)
        if revision != head:
            raise StoreError(
                f"the store at {source} is at revision {revision}, this lnflowd copies"
                f" revision {head}: start lnflowd --db {source} once (it migrates the store"
                " on start), stop it, then copy"
            )
        return _copy(src, source, target, batch_rows, say)
    finally:
        if src is not None:
            src.close()
        lock.release()


def _copy(
    src: sqlite3.Connection,
    source: Path,
    target: DbUrl,
    batch_rows: int,
    say: Callable[[str], None],
) -> dict[str, int]:
    from sqlalchemy import MetaData
    from sqlalchemy import exc as sa_exc

    from lnflow.store.db import open_engine
    from lnflow.store.engines.postgresql import connect_error, reason_of

    started = time.monotonic()
    engine = open_engine(target)  # connects, refuses a foreign database, migrates to head
    import psycopg  # after open_engine: a missing driver is its one-line error

    say(f"target {target} is at the newest revision")
    copied: dict[str, int] = {}
    try:
        meta = MetaData()
        with engine.connect() as conn:
            meta.reflect(conn)
        tables = [t.name for t in meta.sorted_tables if t.name not in _SKIPPED]
        with engine.begin() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            for name in tables:
                if raw.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone() is not None:
                    raise StoreError(
                        f"the target {target} already holds rows (table {name}): copy into"
                        " an empty database (createdb), nothing was written"
                    )
            for name in [t for t in tables if t != _COUNTS]:
                columns = [c.name for c in meta.tables[name].columns]
                copied[name] = _copy_table(src, raw, name, columns, batch_rows)
                say(f"{name}: {copied[name]} rows")
            if _COUNTS in meta.tables:
                # the triggers counted the rows copied above: the source's counts instead
                raw.execute(f'DELETE FROM "{_COUNTS}"')
                columns = [c.name for c in meta.tables[_COUNTS].columns]
                copied[_COUNTS] = _copy_table(src, raw, _COUNTS, columns, batch_rows)
                say(f"{_COUNTS}: {copied[_COUNTS]} rows")
            _move_sequences(raw)
        _vacuum(engine, tables, target, say)
    except (sa_exc.OperationalError, psycopg.OperationalError) as exc:
        raise connect_error(exc, target) from None  # the server gone, a refused role
    except (sa_exc.DBAPIError, psycopg.Error) as exc:
        raise StoreError(
            f"cannot copy into {target} ({reason_of(exc, target)}): nothing was written,"
            " the copy is one transaction; fix the cause and run the same command again"
        ) from None
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot read the store at {source} ({exc}): nothing was written to {target}"
        ) from None
    finally:
        engine.dispose()
    total = sum(copied.values())
    say(
        f"copied {total} rows in {len(copied)} tables from {source} into {target}"
        f" in {time.monotonic() - started:.1f} s"
    )
    return copied


def _vacuum(engine: Any, tables: list[str], target: DbUrl, say: Callable[[str], None]) -> None:
    """VACUUM (ANALYZE) the copied tables: rows that no vacuum has visited yet make the
    analysis read every table page behind its indexes (bench/pg: the 720 h window 11.6x
    SQLite's time on a copy only ANALYZEd, 1.4x once vacuumed). Autovacuum would get to
    them in time; the first analysis after the move should not wait for it. The copy is
    committed already: a failure here says so and what to run, and is no error."""
    import psycopg
    from sqlalchemy import exc as sa_exc

    from lnflow.store.engines.postgresql import reason_of

    started = time.monotonic()
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            raw = conn.connection.driver_connection
            for name in tables:
                raw.execute(f'VACUUM (ANALYZE) "{name}"')
    except (sa_exc.DBAPIError, psycopg.Error) as exc:
        say(
            f"the copy is complete, but VACUUM (ANALYZE) failed ({reason_of(exc, target)}):"
            " run `vacuumdb --analyze` on the database as its owner before the first analysis"
        )
        return
    say(f"vacuumed and analyzed in {time.monotonic() - started:.1f} s")


def _copy_table(
    src: sqlite3.Connection, raw: Any, name: str, columns: list[str], batch_rows: int
) -> int:
    """Stream ``name``'s rows from SQLite into PostgreSQL's COPY, ``batch_rows`` at a time."""
    have = {str(r[1]) for r in src.execute(f'PRAGMA table_info("{name}")')}
    if not have:
        raise StoreError(f"the source has no table {name}: is it at the newest revision?")
    missing = set(columns) - have
    extra = have - set(columns)
    if missing or extra:
        raise StoreError(
            f"table {name} differs between the stores (source only: {sorted(extra)},"
            f" target only: {sorted(missing)}): both must be at the same revision"
        )
    names = ", ".join(f'"{c}"' for c in columns)
    cursor = src.execute(f'SELECT {names} FROM "{name}"')
    n = 0
    with raw.cursor() as cur, cur.copy(f'COPY "{name}" ({names}) FROM STDIN') as copy:
        while rows := cursor.fetchmany(batch_rows):
            for row in rows:
                copy.write_row(row)
            n += len(rows)
    return n


def _move_sequences(raw: Any) -> None:
    """Every id sequence past the ids copied (see lnflow.store.engines.ddl.after_table_copy)."""
    serials = raw.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema()"
        " AND (column_default LIKE 'nextval(%' OR is_identity = 'YES')"
    ).fetchall()
    for table, column in serials:
        raw.execute(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'),"
            f' coalesce((SELECT max("{column}") FROM "{table}"), 0) + 1, false)'
        )
