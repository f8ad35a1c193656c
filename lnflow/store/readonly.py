"""Opening a store read-only with the standard library alone (no SQLAlchemy).

``lnflowctl`` starts in well under a second because its quick commands
(``opportunities``) read the store through plain :mod:`sqlite3`; the rest of the
store package builds on SQLAlchemy and uses :func:`connect_readonly` and
:func:`check_revision` for the same checks, so both paths refuse the same stores
with the same one-line errors.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from lnflow.errors import StoreError, StoreTooNewError

__all__ = [
    "SCHEMA_REVISIONS",
    "check_revision",
    "connect_readonly",
    "existing_store",
    "judge_revision",
    "open_readonly",
    "permission_denied",
]

# Every Alembic revision this code knows, oldest first (a test keeps it equal to
# migrations/versions). lnflowctl checks a store against it without importing Alembic.
SCHEMA_REVISIONS = tuple(f"{n:04d}" for n in range(1, 27))


# Tables every lnflow store has had since its first revision: with ``alembic_version``
# they tell an lnflow store from another application's database (which may use Alembic
# too).
_CORE_TABLES = frozenset({"alembic_version", "nodes", "htlc_events", "stream_sessions"})


def _owner(path: Path) -> str:
    """The user owning ``path``, or its nearest ancestor this user can see."""
    import pwd

    for p in (path, *path.parents):
        try:
            uid = p.stat().st_uid
        except OSError:
            continue
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return f"uid {uid}"
    return "another user"


def permission_denied(path: Path) -> StoreError:
    """The one-line error for a store this user may not read (or not write)."""
    owner = _owner(path)
    return StoreError(
        f"cannot open the store {path}: permission denied — the store belongs to user "
        f"{owner} (try sudo -u {owner})"
    )


def existing_store(path: Path) -> Path:
    """``path`` with ``~`` expanded; the one-line error when there is no store file."""
    path = path.expanduser()
    try:
        found = path.is_file()
    except PermissionError:  # a directory on the way that this user may not enter
        raise permission_denied(path) from None
    if not found:
        raise StoreError(f"no store at {path}: start lnflowd first or pass --db PATH")
    if not os.access(path, os.R_OK):
        raise permission_denied(path)
    return path


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to the existing store at ``path``; never creates a file."""
    path = existing_store(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def _printable(name: str) -> str:
    """A table name of someone else's file, safe to print on one terminal line."""
    return "".join(c if c.isprintable() else "?" for c in name[:40])


def _not_lnflow(path: object, why: str) -> StoreError:
    return StoreError(
        f"{path} is not an lnflow store ({why}): check --db; lnflow leaves such a file unchanged"
    )


def check_revision(
    conn: sqlite3.Connection, path: Path, *, allow_empty: bool = False
) -> str | None:
    """Return the store's schema revision; raise if it is not an lnflow store, newer
    than this code, or unreadable.

    An empty database (no tables, as lnflowd creates it) is None with ``allow_empty``
    (lnflowd then migrates it) and refused otherwise. Any other database without
    lnflow's tables and an lnflow revision is someone else's: refused, never changed.
    """
    try:
        tables = {
            str(name)
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        marks = (
            conn.execute("PRAGMA application_id").fetchone()[0]
            or conn.execute("PRAGMA user_version").fetchone()[0]
        )
        row = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and not os.access(path, os.R_OK):
            raise permission_denied(path) from exc
        if "not a database" in str(exc):
            raise _not_lnflow(path, "not an SQLite database") from exc
        if "disk I/O error" in str(exc) or "disk is full" in str(exc):
            # reading a WAL store writes its -shm index: a full disk fails here first
            raise StoreError(
                f"cannot open the store at {path} ({exc}): free space on its disk, or check --db"
            ) from exc
        raise StoreError(f"{path} is not a readable lnflow store ({exc}): check --db") from exc
    current = str(row[0]) if row is not None and row[0] is not None else None
    return judge_revision(tables, bool(marks), current, path, allow_empty=allow_empty)


def judge_revision(
    tables: set[str],
    marks: bool,
    current: str | None,
    path: object,
    *,
    allow_empty: bool = False,
) -> str | None:
    """:func:`check_revision`'s verdict on a database's ``tables``, its application
    marks (SQLite's application_id/user_version) and its Alembic revision; ``path``
    names it in errors (a file, or a URL that prints its password masked). Shared by
    both engines."""
    if current is None and not marks and tables <= {"alembic_version"}:
        if allow_empty:
            return None
        raise _not_lnflow(path, "an empty database; lnflowd creates and fills the store")
    if current is None or not tables >= _CORE_TABLES:
        others = sorted(_printable(t) for t in tables if not t.startswith("sqlite_"))
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        what = "another application's " + (
            "SQLite database" if isinstance(path, Path) else "database"
        )
        raise _not_lnflow(path, f"{what} with tables {shown}" if others else what)
    if current not in SCHEMA_REVISIONS:
        raise StoreTooNewError(
            f"the store {path} has schema revision {current}, newer than this lnflow: "
            "upgrade lnflow (or point --db at another store)"
        )
    return current


def open_readonly(path: Path) -> sqlite3.Connection:
    """:func:`connect_readonly` and :func:`check_revision` in one; the caller closes it."""
    conn = connect_readonly(path)
    try:
        check_revision(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn
