"""per-channel rollups of failures and forwards per 6-hour block, backfilled

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25

failure_channel_6h and forward_channel_6h hold the same sums as the hourly and daily
per-channel rollups of 0005, per block of 6 clock hours (block = hour / 6, 4 a UTC day),
so a day-long window reads a few blocks and at most 2 × 5 hours per channel instead of
23 hours. They are filled from the hourly rollups (which survive raw pruning), exactly
as 0005 filled the daily ones.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_CLASSES = ("liquidity", "max_htlc", "fee", "availability", "policy", "other")


def _class_number(label: str) -> str:
    """SQL condition on failure_class for a class column."""
    if label == "other":
        return "failure_class NOT IN (1, 2, 3, 4, 5)"
    return f"failure_class = {_CLASSES.index(label) + 1}"


def _create(name: str, key: str, columns: list[sa.Column[object]]) -> None:
    op.create_table(
        name,
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("block", sa.Integer(), autoincrement=False, nullable=False),
        *columns,
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name=op.f(f"fk_{name}_node_id_nodes")),
        sa.PrimaryKeyConstraint("node_id", "block", key, name=op.f(f"pk_{name}")),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    failure_columns: list[sa.Column[object]] = [
        sa.Column("outgoing_channel_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("clusters", sa.Integer(), nullable=False),
        sa.Column("missed_dedup_msat", sa.BigInteger(), nullable=False),
    ]
    for label in _CLASSES:
        failure_columns.append(sa.Column(f"{label}_failures", sa.Integer(), nullable=False))
        failure_columns.append(sa.Column(f"{label}_missed_msat", sa.BigInteger(), nullable=False))
    failure_columns += [
        sa.Column("incoming_lo", sa.BigInteger(), nullable=False),
        sa.Column("incoming_hi", sa.BigInteger(), nullable=False),
        sa.Column("incoming_many", sa.Boolean(), nullable=False),
        sa.Column("first_hour", sa.Integer(), nullable=False),
        sa.Column("last_hour", sa.Integer(), nullable=False),
    ]
    _create("failure_channel_6h", "outgoing_channel_id", failure_columns)
    _create(
        "forward_channel_6h",
        "chan_id",
        [
            sa.Column("chan_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("forwards_out", sa.Integer(), nullable=False),
            sa.Column("fee_out_msat", sa.BigInteger(), nullable=False),
            sa.Column("forwards_in", sa.Integer(), nullable=False),
            sa.Column("fee_in_msat", sa.BigInteger(), nullable=False),
        ],
    )
    sums = ", ".join(
        f"sum(CASE WHEN {_class_number(label)} THEN failures ELSE 0 END), "
        f"sum(CASE WHEN {_class_number(label)} THEN missed_raw_msat ELSE 0 END)"
        for label in _CLASSES
    )
    names = ", ".join(f"{label}_failures, {label}_missed_msat" for label in _CLASSES)
    op.execute(
        "INSERT INTO failure_channel_6h (node_id, block, outgoing_channel_id, clusters, "
        f"missed_dedup_msat, {names}, incoming_lo, incoming_hi, incoming_many, first_hour, "
        "last_hour) "
        "SELECT node_id, block, outgoing_channel_id, sum(clusters), "
        f"sum(missed_dedup_msat), {sums}, min(incoming_channel_id), "
        "max(incoming_channel_id), count(DISTINCT incoming_channel_id) >= 3, min(hour), "
        "max(hour) "
        "FROM (SELECT *, hour / 6 AS block FROM failure_rollups_hourly) AS r "
        "GROUP BY node_id, block, outgoing_channel_id"
    )
    op.execute(
        "INSERT INTO forward_channel_6h (node_id, block, chan_id, forwards_out, fee_out_msat, "
        "forwards_in, fee_in_msat) "
        "SELECT node_id, block, chan_id, sum(n_out), sum(f_out), sum(n_in), sum(f_in) "
        "FROM (SELECT node_id, hour / 6 AS block, chan_id_out AS chan_id, "
        "forwards AS n_out, fee_msat AS f_out, 0 AS n_in, 0 AS f_in "
        "FROM forward_rollups_hourly UNION ALL "
        "SELECT node_id, hour / 6 AS block, chan_id_in, 0, 0, forwards, fee_msat "
        "FROM forward_rollups_hourly) AS r "
        "GROUP BY node_id, block, chan_id"
    )


def downgrade() -> None:
    op.drop_table("forward_channel_6h")
    op.drop_table("failure_channel_6h")
