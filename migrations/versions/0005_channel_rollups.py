"""per-channel hourly and daily rollups of failures and forwards, backfilled; failed
amounts in amount order

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

The new rollups are filled from the existing hourly ones (which survive raw pruning), so
an upgraded store answers long windows from them at once. Classes 1-5 have their own
columns; any other class number counts as other (as the analysis reads it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_CLASSES = ("liquidity", "max_htlc", "fee", "availability", "policy", "other")


def _class_number(label: str) -> str:
    """SQL condition on failure_class for a class column."""
    if label == "other":
        return "failure_class NOT IN (1, 2, 3, 4, 5)"
    return f"failure_class = {_CLASSES.index(label) + 1}"


def _failure_columns() -> list[sa.Column[object]]:
    cols: list[sa.Column[object]] = [
        sa.Column("outgoing_channel_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("clusters", sa.Integer(), nullable=False),
        sa.Column("missed_dedup_msat", sa.BigInteger(), nullable=False),
    ]
    for label in _CLASSES:
        cols.append(sa.Column(f"{label}_failures", sa.Integer(), nullable=False))
        cols.append(sa.Column(f"{label}_missed_msat", sa.BigInteger(), nullable=False))
    cols += [
        sa.Column("incoming_lo", sa.BigInteger(), nullable=False),
        sa.Column("incoming_hi", sa.BigInteger(), nullable=False),
        sa.Column("incoming_many", sa.Boolean(), nullable=False),
    ]
    return cols


def _forward_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("chan_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("forwards_out", sa.Integer(), nullable=False),
        sa.Column("fee_out_msat", sa.BigInteger(), nullable=False),
        sa.Column("forwards_in", sa.Integer(), nullable=False),
        sa.Column("fee_in_msat", sa.BigInteger(), nullable=False),
    ]


def _create(name: str, period: str, columns: list[sa.Column[object]], key: str) -> None:
    op.create_table(
        name,
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column(period, sa.Integer(), autoincrement=False, nullable=False),
        *columns,
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name=op.f(f"fk_{name}_node_id_nodes")),
        sa.PrimaryKeyConstraint("node_id", period, key, name=op.f(f"pk_{name}")),
        sqlite_with_rowid=False,
    )


def _backfill_failures(table: str, period: str, extra: str) -> None:
    sums = ", ".join(
        f"sum(CASE WHEN {_class_number(label)} THEN failures ELSE 0 END), "
        f"sum(CASE WHEN {_class_number(label)} THEN missed_raw_msat ELSE 0 END)"
        for label in _CLASSES
    )
    names = ", ".join(f"{label}_failures, {label}_missed_msat" for label in _CLASSES)
    extra_names = ", first_hour, last_hour" if extra else ""
    op.execute(
        f"INSERT INTO {table} (node_id, {period}, outgoing_channel_id, clusters, "
        f"missed_dedup_msat, {names}, incoming_lo, incoming_hi, incoming_many{extra_names}) "
        f"SELECT node_id, {period}, outgoing_channel_id, sum(clusters), "
        f"sum(missed_dedup_msat), {sums}, min(incoming_channel_id), "
        f"max(incoming_channel_id), count(DISTINCT incoming_channel_id) >= 3{extra} "
        f"FROM (SELECT *, hour / 24 AS day FROM failure_rollups_hourly) AS r "
        f"GROUP BY node_id, {period}, outgoing_channel_id"
    )


def _backfill_forwards(table: str, period: str) -> None:
    op.execute(
        f"INSERT INTO {table} (node_id, {period}, chan_id, forwards_out, fee_out_msat, "
        "forwards_in, fee_in_msat) "
        f"SELECT node_id, {period}, chan_id, sum(n_out), sum(f_out), sum(n_in), sum(f_in) "
        "FROM (SELECT node_id, hour, hour / 24 AS day, chan_id_out AS chan_id, "
        "forwards AS n_out, fee_msat AS f_out, 0 AS n_in, 0 AS f_in "
        "FROM forward_rollups_hourly UNION ALL "
        "SELECT node_id, hour, hour / 24 AS day, chan_id_in, 0, 0, forwards, fee_msat "
        "FROM forward_rollups_hourly) AS r "
        f"GROUP BY node_id, {period}, chan_id"
    )


def upgrade() -> None:
    _create("failure_channel_hourly", "hour", _failure_columns(), "outgoing_channel_id")
    daily = [
        *_failure_columns(),
        sa.Column("first_hour", sa.Integer(), nullable=False),
        sa.Column("last_hour", sa.Integer(), nullable=False),
    ]
    _create("failure_channel_daily", "day", daily, "outgoing_channel_id")
    _create("forward_channel_hourly", "hour", _forward_columns(), "chan_id")
    _create("forward_channel_daily", "day", _forward_columns(), "chan_id")
    _backfill_failures("failure_channel_hourly", "hour", "")
    _backfill_failures("failure_channel_daily", "day", ", min(hour), max(hour)")
    _backfill_forwards("forward_channel_hourly", "hour")
    _backfill_forwards("forward_channel_daily", "day")
    with op.batch_alter_table("forward_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_forward_attempts_local_amount",
            [
                "outgoing_channel_id",
                "failure_class",
                "outgoing_amt_msat",
                "resolved_ns",
                "node_id",
                "outcome",
            ],
            unique=False,
            sqlite_where=sa.text("outcome = 2"),
            postgresql_where=sa.text("outcome = 2"),
        )


def downgrade() -> None:
    with op.batch_alter_table("forward_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_forward_attempts_local_amount")
    for name in (
        "forward_channel_daily",
        "forward_channel_hourly",
        "failure_channel_daily",
        "failure_channel_hourly",
    ):
        op.drop_table(name)
