"""per-channel failure rollups per week of 7 UTC days, backfilled from the daily ones

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04

failure_channel_weekly holds the same sums as failure_channel_daily per week
(week = day / 7, counted from the epoch as the days are: 7 whole days each), so a
720-hour window sums its whole weeks there and only the days around them from the
daily rows. Filled from the daily rows (a week is exactly the sum of its days): the
counters add up, first_hour / last_hour are the smallest and largest, and the incoming
channel summary is merged as the ingest merges it (lnflow.store.rollups): the smallest
incoming_lo, the largest incoming_hi, and incoming_many when a day had it or the days'
ids together were at least 3 distinct ones (each day without incoming_many had exactly
{incoming_lo, incoming_hi}: 3 or more distinct of those, or one strictly between the
week's smallest and largest).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_CLASSES = ("liquidity", "max_htlc", "fee", "availability", "policy", "other")


def upgrade() -> None:
    columns: list[sa.Column[object]] = [
        sa.Column("outgoing_channel_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("clusters", sa.Integer(), nullable=False),
        sa.Column("missed_dedup_msat", sa.BigInteger(), nullable=False),
    ]
    for label in _CLASSES:
        columns.append(sa.Column(f"{label}_failures", sa.Integer(), nullable=False))
        columns.append(sa.Column(f"{label}_missed_msat", sa.BigInteger(), nullable=False))
    columns += [
        sa.Column("incoming_lo", sa.BigInteger(), nullable=False),
        sa.Column("incoming_hi", sa.BigInteger(), nullable=False),
        sa.Column("incoming_many", sa.Boolean(), nullable=False),
        sa.Column("first_hour", sa.Integer(), nullable=False),
        sa.Column("last_hour", sa.Integer(), nullable=False),
    ]
    op.create_table(
        "failure_channel_weekly",
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("week", sa.Integer(), autoincrement=False, nullable=False),
        *columns,
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_failure_channel_weekly_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint(
            "node_id", "week", "outgoing_channel_id", name=op.f("pk_failure_channel_weekly")
        ),
        sqlite_with_rowid=False,
    )
    counters = ["clusters", "missed_dedup_msat"]
    counters += [f"{label}_{what}" for label in _CLASSES for what in ("failures", "missed_msat")]
    many = (
        "max(CASE WHEN incoming_many THEN 1 ELSE 0 END) = 1"
        " OR count(DISTINCT incoming_lo) >= 3 OR count(DISTINCT incoming_hi) >= 3"
        " OR (max(incoming_lo) > min(incoming_lo) AND max(incoming_lo) < max(incoming_hi))"
        " OR (min(incoming_hi) > min(incoming_lo) AND min(incoming_hi) < max(incoming_hi))"
    )
    op.execute(
        "INSERT INTO failure_channel_weekly (node_id, week, outgoing_channel_id, "
        f"{', '.join(counters)}, incoming_lo, incoming_hi, incoming_many, first_hour, "
        "last_hour) "
        "SELECT node_id, day / 7, outgoing_channel_id, "
        f"{', '.join(f'sum({c})' for c in counters)}, min(incoming_lo), max(incoming_hi), "
        f"CASE WHEN {many} THEN {_true()} ELSE {_false()} END, min(first_hour), "
        "max(last_hour) "
        "FROM failure_channel_daily GROUP BY node_id, day / 7, outgoing_channel_id"
    )


def _true() -> str:
    return "true" if op.get_context().dialect.name == "postgresql" else "1"


def _false() -> str:
    return "false" if op.get_context().dialect.name == "postgresql" else "0"


def downgrade() -> None:
    op.drop_table("failure_channel_weekly")
