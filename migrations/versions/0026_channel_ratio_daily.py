"""each channel's lowest local ratio per UTC day

``channel_ratio_daily`` (node_id, chan_id, day, lowest): the smallest local / (local +
remote) of the channel's samples of that day with a balance, day = ts_ns // one day in
ns. A window holding whole days reads their lowest ratio here and only the samples
around them (:mod:`lnflow.store.read.channels`); the samples are written with it
(:meth:`lnflow.store.writer.StoreWriter.record_channel_samples`). Filled here from the
samples there are, with the quotient the analysis computes from them.

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

_NS_PER_DAY = 86_400 * 1_000_000_000


def upgrade() -> None:
    op.create_table(
        "channel_ratio_daily",
        sa.Column("node_id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("chan_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("day", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("lowest", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_channel_ratio_daily_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("node_id", "chan_id", "day", name=op.f("pk_channel_ratio_daily")),
        sqlite_with_rowid=False,
    )
    real = "DOUBLE PRECISION" if op.get_context().dialect.name == "postgresql" else "REAL"
    day = f"ts_ns / {_NS_PER_DAY}"
    op.execute(
        "INSERT INTO channel_ratio_daily (node_id, chan_id, day, lowest) "
        f"SELECT node_id, chan_id, {day}, "
        f"min(CAST(local_balance_sat AS {real}) / (local_balance_sat + remote_balance_sat)) "
        "FROM channel_samples WHERE local_balance_sat + remote_balance_sat > 0 "
        f"GROUP BY node_id, chan_id, {day}"
    )


def downgrade() -> None:
    op.drop_table("channel_ratio_daily")
