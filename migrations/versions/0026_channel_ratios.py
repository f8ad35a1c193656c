"""each channel's lowest local ratio per hour and per UTC day

``channel_ratio_hourly`` (node_id, chan_id, hour, lowest) and ``channel_ratio_daily``
(node_id, chan_id, day, lowest): the smallest local / (local + remote) of the channel's
samples of that period with a balance, hour = ts_ns // one hour, day = ts_ns // one day
in ns. A window reads the lowest ratio of the whole days and hours it holds here and
the samples only in its partial first and last hour (:mod:`lnflow.store.read.channels`);
they are written with the samples (:meth:`lnflow.store.writer.StoreWriter.
record_channel_samples`). Filled here from the samples there are, with the quotient the
analysis computes from them.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

_NS_PER_HOUR = 3_600 * 1_000_000_000


def upgrade() -> None:
    real = "DOUBLE PRECISION" if op.get_context().dialect.name == "postgresql" else "REAL"
    for table, period, ns in (
        ("channel_ratio_hourly", "hour", _NS_PER_HOUR),
        ("channel_ratio_daily", "day", 24 * _NS_PER_HOUR),
    ):
        op.create_table(
            table,
            sa.Column("node_id", sa.SmallInteger(), autoincrement=False, nullable=False),
            sa.Column("chan_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column(period, sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("lowest", sa.Float(), nullable=False),
            sa.ForeignKeyConstraint(
                ["node_id"], ["nodes.id"], name=op.f(f"fk_{table}_node_id_nodes")
            ),
            sa.PrimaryKeyConstraint("node_id", "chan_id", period, name=op.f(f"pk_{table}")),
            sqlite_with_rowid=False,
        )
        op.execute(
            f"INSERT INTO {table} (node_id, chan_id, {period}, lowest) "
            f"SELECT node_id, chan_id, ts_ns / {ns}, "
            f"min(CAST(local_balance_sat AS {real}) / (local_balance_sat + remote_balance_sat)) "
            "FROM channel_samples WHERE local_balance_sat + remote_balance_sat > 0 "
            f"GROUP BY node_id, chan_id, ts_ns / {ns}"
        )


def downgrade() -> None:
    op.drop_table("channel_ratio_daily")
    op.drop_table("channel_ratio_hourly")
