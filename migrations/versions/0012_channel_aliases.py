"""the other ids of a channel: alias SCIDs and a zero-conf channel's confirmed SCID

channel_aliases maps every id lnd may name one of our channels by, other than the
chan_id ListChannels reports, to that chan_id, so failures named by an alias and
forwards or policies under the confirmed SCID count for the one channel. The sampler
fills it from ListChannels; upgrading starts it empty (the next sample fills it) and
downgrading drops it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_aliases",
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("scid", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("chan_id", sa.BigInteger(), nullable=False),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_channel_aliases_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("node_id", "scid", name=op.f("pk_channel_aliases")),
    )


def downgrade() -> None:
    op.drop_table("channel_aliases")
