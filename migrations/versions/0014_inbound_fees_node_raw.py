"""our inbound fee per channel sample, and the raw missed fees of a run's node totals

channel_samples gains inbound_fee_base_msat and inbound_fee_rate_ppm: our inbound fee
on the channel (lnd >= 0.18, RoutingPolicy fields 9 and 10; usually negative, a
discount), None where no policy was known. The analysis needs it to tell whether a
FEE_INSUFFICIENT failure was short on our outbound fee or on the incoming channel's
inbound fee. Samples recorded before have None: no inbound fee known.

analysis_runs gains node_missed_raw_msat beside node_missed_msat (deduplicated). Runs
saved before carry node_missed_msat there too: the raw sum was not kept, and it is at
least the deduplicated one. Downgrading drops the columns.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_SAMPLE_COLUMNS = ("inbound_fee_base_msat", "inbound_fee_rate_ppm")


def upgrade() -> None:
    for name in _SAMPLE_COLUMNS:
        op.add_column("channel_samples", sa.Column(name, sa.BigInteger(), nullable=True))
    op.add_column(
        "analysis_runs",
        sa.Column("node_missed_raw_msat", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute("UPDATE analysis_runs SET node_missed_raw_msat = node_missed_msat")


def downgrade() -> None:
    op.execute("ALTER TABLE analysis_runs DROP COLUMN node_missed_raw_msat")
    for name in reversed(_SAMPLE_COLUMNS):
        op.execute(f"ALTER TABLE channel_samples DROP COLUMN {name}")
