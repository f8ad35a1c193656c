"""per node, how far retention may have deleted local failures and failure rollups

``retention_horizons``: one row per node, the newest time at or before which retention
may have deleted one of its local failures (an attempt's ``resolved_ns``) or a failure
rollup period (its last nanosecond); raised by both of retention's delete paths in the
delete's transaction. A window starting after it counts its failures of a class from the
rollups exactly as from the raw rows (lnflow.store.read.details).

A store being upgraded cannot say what retention deleted before (it deleted by
recording order, not by time). Every failure a deleted row held was counted in the
rollups no earlier than its ``resolved_ns``, and its rollup rows are kept or were pruned
oldest first; so each node starts at the newest failure either source still knows: its
newest attempt's ``resolved_ns`` and the end of its newest failure rollup period. Older
windows count the raw rows until retention deletes past that. A node with neither has
nothing a window could count twice or miss: no row.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

_NS_PER_HOUR = 3_600 * 1_000_000_000

# per node, the newest time each source knows a failure at or before
_NEWEST = (
    "SELECT node_id, max(resolved_ns) FROM forward_attempts GROUP BY node_id",
    "SELECT node_id, max(last_ns) FROM failure_channel_hourly GROUP BY node_id",
    f"SELECT node_id, (max(last_hour) + 1) * {_NS_PER_HOUR} - 1 FROM failure_channel_6h"
    " GROUP BY node_id",
    f"SELECT node_id, (max(last_hour) + 1) * {_NS_PER_HOUR} - 1 FROM failure_channel_daily"
    " GROUP BY node_id",
    f"SELECT node_id, (max(hour) + 1) * {_NS_PER_HOUR} - 1 FROM failure_rollups_hourly"
    " GROUP BY node_id",
)


def upgrade() -> None:
    table = op.create_table(
        "retention_horizons",
        sa.Column(
            "node_id",
            sa.SmallInteger(),
            sa.ForeignKey("nodes.id"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("deleted_through_ns", sa.BigInteger(), nullable=False),
    )
    conn = op.get_bind()
    newest: dict[int, int] = {}
    for query in _NEWEST:
        for node_id, value in conn.execute(sa.text(query)).all():
            if value is not None:
                newest[int(node_id)] = max(int(value), newest.get(int(node_id), int(value)))
    if newest:
        op.bulk_insert(
            table,
            [{"node_id": k, "deleted_through_ns": v} for k, v in sorted(newest.items())],
        )


def downgrade() -> None:
    op.drop_table("retention_horizons")
