"""drop indexes nothing reads any more: ~18 bytes per recorded event

ix_forward_attempts_out_seen served the lookup of a demand cluster's earlier members,
which now walks ix_forward_attempts_local (resolved_ns); ix_forwards_out_time and
ix_forwards_in_time served per-channel ledger reads that the per-channel rollups
(0005) answer. Each cost an index entry per attempt or per settled forward.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_DROPPED = (
    ("ix_forward_attempts_out_seen", "forward_attempts", ["outgoing_channel_id", "first_seen_ns"]),
    ("ix_forwards_out_time", "forwards", ["chan_id_out", "timestamp_ns"]),
    ("ix_forwards_in_time", "forwards", ["chan_id_in", "timestamp_ns"]),
)


def upgrade() -> None:
    for name, table, _columns in _DROPPED:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for name, table, columns in _DROPPED:
        op.create_index(name, table, columns, unique=False)
