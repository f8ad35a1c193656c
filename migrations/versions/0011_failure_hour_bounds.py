"""the first and last failure of each per-channel failure hour

failure_channel_hourly gains first_ns and last_ns: the LINK_FAIL times of the hour's
earliest and latest local failure on that channel. An analysis window that ends inside
an hour (at "now", as the daemon's snapshots do) then reads that hour's rows as they
are when every failure in them lies inside the window, instead of summing the raw
attempts.

Upgrading fills both from the attempts where they still hold every failure the row
counts; any other row gets the hour's own bounds, which never pass for a part of the
hour, so such an hour is still summed from raw rows. Downgrading drops the columns.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_NS_PER_HOUR = 3600 * 1_000_000_000
_FAILED_LOCAL = 2
_CLASSES = ("liquidity", "max_htlc", "fee", "availability", "policy", "other")


def upgrade() -> None:
    for name in ("first_ns", "last_ns"):
        op.add_column(
            "failure_channel_hourly",
            sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"),
        )
    op.execute(
        f"UPDATE failure_channel_hourly SET first_ns = hour * {_NS_PER_HOUR},"
        f" last_ns = hour * {_NS_PER_HOUR} + {_NS_PER_HOUR - 1}"
    )
    counted = " + ".join(f"h.{label}_failures" for label in _CLASSES)
    op.execute(
        "UPDATE failure_channel_hourly AS h SET first_ns = t.first_ns, last_ns = t.last_ns"
        " FROM ("
        "  SELECT a.node_id AS node_id, r.chan_id AS out,"
        f"  a.resolved_ns / {_NS_PER_HOUR} AS hour, count(*) AS failures,"
        "   min(a.resolved_ns) AS first_ns, max(a.resolved_ns) AS last_ns"
        "  FROM forward_attempts a JOIN channel_refs r ON r.id = a.outgoing_chan_ref"
        f"  WHERE a.outcome = {_FAILED_LOCAL}"
        "  GROUP BY a.node_id, r.chan_id, hour"
        " ) AS t"
        " WHERE h.node_id = t.node_id AND h.hour = t.hour AND h.outgoing_channel_id = t.out"
        f" AND t.failures = {counted}"
    )


def downgrade() -> None:
    for name in ("last_ns", "first_ns"):
        op.execute(f"ALTER TABLE failure_channel_hourly DROP COLUMN {name}")
