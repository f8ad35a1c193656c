"""row counts kept where the rows are written (``lnflowctl status`` without a scan)

``row_counts``: rows of htlc_events by kind, forward_attempts by outcome and of the
forwards ledger, filled here from the rows already stored. Triggers count the attempts'
inserts, outcome changes and deletes, the ledger's inserts and deletes and the events'
deletes in the writing transaction; the ingest adds each batch's new events itself
(lnflow.store.ingest), one statement per kind instead of a trigger per row.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

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
    for name, body in _TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")
    op.drop_table("row_counts")
