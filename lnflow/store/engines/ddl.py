"""Schema changes the two engines spell differently, for the Alembic revisions.

A revision calls these instead of branching on the dialect itself; SQLite's side is
what the revisions did before PostgreSQL was supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from alembic import op

__all__ = ["after_table_copy", "before_table_copy", "dialect", "table_rewrite"]


def dialect() -> str:
    """The dialect the running migration writes to (``sqlite`` or ``postgresql``)."""
    return str(op.get_bind().dialect.name)


def before_table_copy(table: str, constraints: Sequence[str]) -> None:
    """Free ``constraints``' names on ``table`` before a ``<table>_new`` copy takes them.

    SQLite scopes constraint names to their table; PostgreSQL names the index behind a
    primary key or unique constraint in the schema, so the new table's could not be
    created while the old table still holds them.
    """
    if dialect() != "postgresql":
        return
    for name in constraints:
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {name} TO {name}_old")


def after_table_copy(table: str, column: str = "id") -> None:
    """Move ``table``'s id sequence past the ids a copy inserted explicitly.

    SQLite picks max(rowid) + 1 by itself; a PostgreSQL sequence does not see rows
    written with their id given.
    """
    if dialect() != "postgresql":
        return
    op.execute(
        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
        f" coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
        f" WHERE pg_get_serial_sequence('{table}', '{column}') IS NOT NULL"
    )


def table_rewrite() -> Literal["always", "auto"]:
    """``batch_alter_table``'s ``recreate`` for a constraint change: SQLite cannot drop
    or add a table constraint in place, so the table is copied ("always"); PostgreSQL
    alters it in place ("auto": no copy, its id sequence untouched)."""
    return "always" if dialect() == "sqlite" else "auto"
