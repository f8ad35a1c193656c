"""row counts kept per node (several nodes in one store: `lnflowctl --node X status`)

``row_counts`` gains ``node_id`` in its key; its rows are counted again per node from the
rows stored (the store-wide counts of 0018 cannot be split), and the triggers of 0018
count each row for its own node. Downgrading sums the nodes' counts back.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def _add(table: str, value: str, n: int, node: str | None) -> str:
    if node is None:  # 0018
        return (
            f"INSERT INTO row_counts (table_name, value, n) VALUES ('{table}', {value}, {n})"
            " ON CONFLICT (table_name, value) DO UPDATE SET n = n + excluded.n;"
        )
    return (
        "INSERT INTO row_counts (node_id, table_name, value, n)"
        f" VALUES ({node}.node_id, '{table}', {value}, {n})"
        " ON CONFLICT (node_id, table_name, value) DO UPDATE SET n = n + excluded.n;"
    )


def _triggers(by_node: bool) -> dict[str, str]:
    old, new = ("OLD", "NEW") if by_node else (None, None)
    return {
        "row_counts_event_deleted": (
            f"AFTER DELETE ON htlc_events BEGIN {_add('htlc_events', 'OLD.kind', -1, old)} END"
        ),
        "row_counts_attempt_inserted": (
            "AFTER INSERT ON forward_attempts BEGIN"
            f" {_add('forward_attempts', 'NEW.outcome', 1, new)} END"
        ),
        "row_counts_attempt_changed": (
            "AFTER UPDATE OF outcome ON forward_attempts WHEN OLD.outcome IS NOT NEW.outcome"
            f" BEGIN {_add('forward_attempts', 'OLD.outcome', -1, old)}"
            f" {_add('forward_attempts', 'NEW.outcome', 1, new)} END"
        ),
        "row_counts_attempt_deleted": (
            "AFTER DELETE ON forward_attempts BEGIN"
            f" {_add('forward_attempts', 'OLD.outcome', -1, old)} END"
        ),
        "row_counts_forward_inserted": (
            f"AFTER INSERT ON forwards BEGIN {_add('forwards', '0', 1, new)} END"
        ),
        "row_counts_forward_deleted": (
            f"AFTER DELETE ON forwards BEGIN {_add('forwards', '0', -1, old)} END"
        ),
    }


def _swap(by_node: bool, fill: str) -> None:
    """Replace ``row_counts`` (and its triggers) by the layout ``by_node`` or not, filled
    by ``fill`` (a SELECT of its columns)."""
    for name in _triggers(not by_node):
        op.execute(f"DROP TRIGGER {name}")
    key = ["node_id", "table_name", "value"] if by_node else ["table_name", "value"]
    op.create_table(
        "row_counts_next",
        *([sa.Column("node_id", sa.SmallInteger(), nullable=False)] if by_node else []),
        sa.Column("table_name", sa.String(), nullable=False),
        sa.Column("value", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*key, name="pk_row_counts"),
        sqlite_with_rowid=False,
    )
    op.execute(f"INSERT INTO row_counts_next ({', '.join([*key, 'n'])}) {fill}")
    op.drop_table("row_counts")
    op.rename_table("row_counts_next", "row_counts")
    for name, body in _triggers(by_node).items():
        op.execute(f"CREATE TRIGGER {name} {body}")


def upgrade() -> None:
    _swap(
        True,
        "SELECT node_id, 'htlc_events', kind, count(*) FROM htlc_events GROUP BY node_id, kind"
        " UNION ALL SELECT node_id, 'forward_attempts', outcome, count(*) FROM forward_attempts"
        " GROUP BY node_id, outcome"
        " UNION ALL SELECT node_id, 'forwards', 0, count(*) FROM forwards GROUP BY node_id",
    )


def downgrade() -> None:
    _swap(False, "SELECT table_name, value, sum(n) FROM row_counts GROUP BY table_name, value")
