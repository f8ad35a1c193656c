"""each channel's latest sample kept on its row

``channels.latest_sample_id`` and ``latest_sample_ns``: the channel's sample with the
highest ``ts_ns`` (then id), set where samples are written and deleted
(:mod:`lnflow.store.latest_sample`). The analysis reads a channel's state from it when
the window ends at or after it, without looking the sample up in
``ix_channel_samples_chan_state``. Filled here from the samples there are.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_LATEST = (
    "(SELECT s.{column} FROM channel_samples AS s"
    " WHERE s.node_id = channels.node_id AND s.chan_id = channels.chan_id"
    " ORDER BY s.ts_ns DESC, s.id DESC LIMIT 1)"
)


def upgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("latest_sample_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("latest_sample_ns", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE channels SET latest_sample_id = "
        + _LATEST.format(column="id")
        + ", latest_sample_ns = "
        + _LATEST.format(column="ts_ns")
    )


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("latest_sample_ns")
        batch.drop_column("latest_sample_id")
