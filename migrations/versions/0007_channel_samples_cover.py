"""channel samples: the state the analysis reads, in the (node, channel, time) index

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25

ix_channel_samples_chan_state replaces ix_channel_samples_chan_ts (its prefix): the same
(node_id, chan_id, ts_ns) order, then the row id (ties in time in insertion order) and
the balances and our fee policy. The lowest local ratio of a window and our fee history
are then read from the index alone, one channel's samples side by side, instead of one
table row per sample (a channel's rows lie one sampling round, ~1 row per channel,
apart). Samples are one row per channel and sampling interval, so the index costs
nothing per HTLC event.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_STATE = [
    "node_id",
    "chan_id",
    "ts_ns",
    "id",
    "local_balance_sat",
    "remote_balance_sat",
    "fee_base_msat",
    "fee_rate_ppm",
]


def upgrade() -> None:
    with op.batch_alter_table("channel_samples", schema=None) as batch_op:
        batch_op.create_index("ix_channel_samples_chan_state", _STATE, unique=False)
        batch_op.drop_index("ix_channel_samples_chan_ts")


def downgrade() -> None:
    with op.batch_alter_table("channel_samples", schema=None) as batch_op:
        batch_op.create_index(
            "ix_channel_samples_chan_ts", ["node_id", "chan_id", "ts_ns"], unique=False
        )
        batch_op.drop_index("ix_channel_samples_chan_state")
