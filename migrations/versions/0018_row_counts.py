"""row counts kept where the rows are written (``lnflowctl status`` without a scan)

``row_counts``: rows of htlc_events by kind, forward_attempts by outcome and of the
forwards ledger, filled here from the rows already stored. Triggers count the attempts'
inserts, outcome changes and deletes, the ledger's inserts and deletes and the events'
deletes in the writing transaction; the ingest adds each batch's new events itself
(lnflow.store.ingest), one statement per kind instead of a trigger per row.

On PostgreSQL the triggers are statement-level PL/pgSQL functions over the statement's
transition tables: a batch of attempts adds one row_counts upsert per outcome, not one
per attempt.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lnflow.store.engines import ddl

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def _add(table: str, value: str, n: int) -> str:
    return (
        f"INSERT INTO row_counts (table_name, value, n) VALUES ('{table}', {value}, {n})"
        " ON CONFLICT (table_name, value) DO UPDATE SET n = n + excluded.n;"
    )


_TRIGGERS = {
    "row_counts_event_deleted": (
        f"AFTER DELETE ON htlc_events BEGIN {_add('htlc_events', 'OLD.kind', -1)} END"
    ),
    "row_counts_attempt_inserted": (
        f"AFTER INSERT ON forward_attempts BEGIN {_add('forward_attempts', 'NEW.outcome', 1)} END"
    ),
    "row_counts_attempt_changed": (
        "AFTER UPDATE OF outcome ON forward_attempts WHEN OLD.outcome IS NOT NEW.outcome"
        f" BEGIN {_add('forward_attempts', 'OLD.outcome', -1)}"
        f" {_add('forward_attempts', 'NEW.outcome', 1)} END"
    ),
    "row_counts_attempt_deleted": (
        f"AFTER DELETE ON forward_attempts BEGIN {_add('forward_attempts', 'OLD.outcome', -1)} END"
    ),
    "row_counts_forward_inserted": (
        f"AFTER INSERT ON forwards BEGIN {_add('forwards', '0', 1)} END"
    ),
    "row_counts_forward_deleted": (
        f"AFTER DELETE ON forwards BEGIN {_add('forwards', '0', -1)} END"
    ),
}


def _pg_add(table: str, rows: str) -> str:
    """PL/pgSQL: add ``rows`` (``value, n`` pairs) to ``table``'s counts."""
    return (
        f"INSERT INTO row_counts (table_name, value, n) SELECT '{table}', value, sum(n)"
        f" FROM ({rows}) AS d GROUP BY value HAVING sum(n) <> 0"
        " ON CONFLICT (table_name, value) DO UPDATE SET n = row_counts.n + excluded.n;"
    )


# name: (event, table, REFERENCING clause, body)
_PG_TRIGGERS = {
    "row_counts_event_deleted": (
        "DELETE",
        "htlc_events",
        "OLD TABLE AS old_rows",
        _pg_add("htlc_events", "SELECT kind AS value, -1 AS n FROM old_rows"),
    ),
    "row_counts_attempt_inserted": (
        "INSERT",
        "forward_attempts",
        "NEW TABLE AS new_rows",
        _pg_add("forward_attempts", "SELECT outcome AS value, 1 AS n FROM new_rows"),
    ),
    # a column list (UPDATE OF outcome) cannot have transition tables: the body compares
    "row_counts_attempt_changed": (
        "UPDATE",
        "forward_attempts",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        _pg_add(
            "forward_attempts",
            "SELECT o.outcome AS value, -1 AS n FROM old_rows o JOIN new_rows w ON w.id = o.id"
            " WHERE o.outcome IS DISTINCT FROM w.outcome"
            " UNION ALL SELECT w.outcome, 1 FROM old_rows o JOIN new_rows w ON w.id = o.id"
            " WHERE o.outcome IS DISTINCT FROM w.outcome",
        ),
    ),
    "row_counts_attempt_deleted": (
        "DELETE",
        "forward_attempts",
        "OLD TABLE AS old_rows",
        _pg_add("forward_attempts", "SELECT outcome AS value, -1 AS n FROM old_rows"),
    ),
    "row_counts_forward_inserted": (
        "INSERT",
        "forwards",
        "NEW TABLE AS new_rows",
        _pg_add("forwards", "SELECT 0 AS value, 1 AS n FROM new_rows"),
    ),
    "row_counts_forward_deleted": (
        "DELETE",
        "forwards",
        "OLD TABLE AS old_rows",
        _pg_add("forwards", "SELECT 0 AS value, -1 AS n FROM old_rows"),
    ),
}


def _create_triggers() -> None:
    if ddl.dialect() != "postgresql":
        for name, body in _TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        return
    for name, (event, table, referencing, body) in _PG_TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN {body} RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {referencing}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )


def _drop_triggers() -> None:
    if ddl.dialect() != "postgresql":
        for name in _TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
        return
    for name, (_event, table, _referencing, _body) in _PG_TRIGGERS.items():
        op.execute(f"DROP TRIGGER {name} ON {table}")
        op.execute(f"DROP FUNCTION {name}()")


def upgrade() -> None:
    op.create_table(
        "row_counts",
        sa.Column("table_name", sa.String(), nullable=False),
        sa.Column("value", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("table_name", "value"),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO row_counts (table_name, value, n)"
        " SELECT 'htlc_events', kind, count(*) FROM htlc_events GROUP BY kind"
        " UNION ALL SELECT 'forward_attempts', outcome, count(*) FROM forward_attempts"
        " GROUP BY outcome"
        " UNION ALL SELECT 'forwards', 0, count(*) FROM forwards"
    )
    _create_triggers()


def downgrade() -> None:
    _drop_triggers()
    op.drop_table("row_counts")
