"""Opening a store read-only with the standard library alone (no SQLAlchemy).

``lnflowctl`` starts in well under a second because its quick commands
(``opportunities``) read the store through plain :mod:`sqlite3`; the rest of the
store package builds on SQLAlchemy and uses :func:`connect_readonly` and
:func:`check_revision` for the same checks, so both paths refuse the same stores
with the same one-line errors.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lnflow.errors import StoreError, StoreTooNewError

__all__ = [
    "SCHEMA_REVISIONS",
    "check_revision",
    "connect_readonly",
    "existing_store",
    "open_readonly",
]

# Every Alembic revision this code knows, oldest first (a test keeps it equal to
# migrations/versions). lnflowctl checks a store against it without importing Alembic.
SCHEMA_REVISIONS = tuple(f"{n:04d}" for n in range(1, 14))


def existing_store(path: Path) -> Path:
    """``path`` with ``~`` expanded; the one-line error when there is no store file."""
    path = path.expanduser()
    if not path.is_file():
        raise StoreError(f"no store at {path}: start lnflowd first or pass --db PATH")
    return path


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to the existing store at ``path``; never creates a file."""
    path = existing_store(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def check_revision(conn: sqlite3.Connection, path: Path) -> str | None:
    """Return the store's schema revision; raise if it is newer than this code or unreadable."""
    try:
        has_table = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='alembic_version'"
        ).fetchone()[0]
        row = None
        if has_table:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"{path} is not an lnflow store ({exc}): check --db") from exc
    current = str(row[0]) if row is not None and row[0] is not None else None
    if current is not None and current not in SCHEMA_REVISIONS:
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
