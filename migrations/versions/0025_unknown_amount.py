"""the failures with no amount counted in the per-channel failure rollups

``unknown_amount`` on ``failure_channel_hourly``, ``_6h``, ``_daily`` and ``_weekly``:
of a period's local failures of the channel, those lnd gave no outgoing amount for,
counted where the failure itself is counted. The analysis' "unknown amount" per
outgoing channel of a window starting after the node's retention horizon is then summed
from the rollups like the other failure figures (lnflow.store.read.failures).

Filled here from the attempts there are (the partial index of 0013), each in the rollup
rows of its ``resolved_ns``'s hour and outgoing channel (0 for none), as the recorder
counts it. Periods whose attempts retention deleted keep a short count: they end at or
before the node's retention horizon (0023 started it at the node's newest failure, and
each delete raises it), and no window read from the rollups reaches them.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

_NS_PER_HOUR = 3_600 * 1_000_000_000
_FAILED_LOCAL = 2

# (table, period column, hours per period)
_TABLES = (
    ("failure_channel_hourly", "hour", 1),
    ("failure_channel_6h", "block", 6),
    ("failure_channel_daily", "day", 24),
    ("failure_channel_weekly", "week", 7 * 24),
)

# per node, hour and outgoing channel (its SCID, 0 for none): the local failures with no
# amount, read from ix_forward_attempts_unknown_amount
_UNKNOWN = sa.text(
    "SELECT a.node_id, a.resolved_ns, coalesce(r.chan_id, 0) AS chan_id"
    " FROM forward_attempts AS a LEFT JOIN channel_refs AS r ON r.id = a.outgoing_chan_ref"
    f" WHERE a.outcome = {_FAILED_LOCAL} AND a.outgoing_amt_msat IS NULL"
)


def upgrade() -> None:
    for table, _, _ in _TABLES:
        op.add_column(
            table, sa.Column("unknown_amount", sa.Integer(), nullable=False, server_default="0")
        )
    conn = op.get_bind()
    hours: Counter[tuple[int, int, int]] = Counter()
    for node_id, resolved_ns, chan_id in conn.execute(_UNKNOWN):
        if resolved_ns is not None:
            hours[(int(node_id), int(resolved_ns) // _NS_PER_HOUR, int(chan_id))] += 1
    for table, period, span in _TABLES:
        periods: Counter[tuple[int, int, int]] = Counter()
        for (node_id, hour, chan_id), n in hours.items():
            periods[(node_id, hour // span, chan_id)] += n
        if not periods:
            continue
        conn.execute(
            sa.text(
                f"UPDATE {table} SET unknown_amount = :n WHERE node_id = :node"
                f" AND {period} = :period AND outgoing_channel_id = :out"
            ),
            [
                {"node": node, "period": p, "out": out, "n": n}
                for (node, p, out), n in sorted(periods.items())
            ],
        )


def downgrade() -> None:
    for table, _, _ in _TABLES:
        op.execute(f"ALTER TABLE {table} DROP COLUMN unknown_amount")
