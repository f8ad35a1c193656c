"""analysis snapshots: runs, gaps, opportunities, rebalance moves

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "opportunities",
        sa.Column("run_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rank", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generated_ns", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("peer_pubkey", sa.String(length=66), nullable=False),
        sa.Column("peer_alias", sa.Text(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("clusters", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("failure_rate", sa.Float(), nullable=False),
        sa.Column("missed_msat", sa.BigInteger(), nullable=False),
        sa.Column("missed_raw_msat", sa.BigInteger(), nullable=False),
        sa.Column("potential_monthly_msat", sa.BigInteger(), nullable=False),
        sa.Column("urgency_score", sa.SmallInteger(), nullable=False),
        sa.Column("confidence", sa.String(length=16), nullable=False),
        sa.Column("recommended_action", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("estimated", sa.Boolean(), nullable=False),
        sa.Column("capacity_sat", sa.BigInteger(), nullable=False),
        sa.Column("local_balance_sat", sa.BigInteger(), nullable=False),
        sa.Column("outbound_fee_ppm", sa.BigInteger(), nullable=True),
        sa.Column("suggested_fee_ppm", sa.BigInteger(), nullable=True),
        sa.Column("suggested_amount_sat", sa.BigInteger(), nullable=True),
        sa.Column("suggested_max_htlc_msat", sa.BigInteger(), nullable=True),
        sa.Column("liquidity_failures", sa.Integer(), nullable=True),
        sa.Column("liquidity_missed_msat", sa.BigInteger(), nullable=True),
        sa.Column("max_htlc_failures", sa.Integer(), nullable=True),
        sa.Column("max_htlc_missed_msat", sa.BigInteger(), nullable=True),
        sa.Column("fee_failures", sa.Integer(), nullable=True),
        sa.Column("fee_missed_msat", sa.BigInteger(), nullable=True),
        sa.Column("availability_failures", sa.Integer(), nullable=True),
        sa.Column("availability_missed_msat", sa.BigInteger(), nullable=True),
        sa.Column("policy_failures", sa.Integer(), nullable=True),
        sa.Column("policy_missed_msat", sa.BigInteger(), nullable=True),
        sa.Column("other_failures", sa.Integer(), nullable=True),
        sa.Column("other_missed_msat", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "rank", name=op.f("pk_opportunities")),
    )
    with op.batch_alter_table("opportunities", schema=None) as batch_op:
        batch_op.create_index(
            "ix_opportunities_channel_run", ["channel_id", "run_id"], unique=False
        )
        batch_op.create_index("ix_opportunities_generated_ns", ["generated_ns"], unique=False)

    op.create_table(
        "rebalance_moves",
        sa.Column("run_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("position", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("generated_ns", sa.BigInteger(), nullable=False),
        sa.Column("target_channel_id", sa.BigInteger(), nullable=False),
        sa.Column("source_channel_ids", sa.Text(), nullable=False),
        sa.Column("amount_sat", sa.BigInteger(), nullable=False),
        sa.Column("max_cost_ppm", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "position", name=op.f("pk_rebalance_moves")),
    )
    with op.batch_alter_table("rebalance_moves", schema=None) as batch_op:
        batch_op.create_index("ix_rebalance_moves_generated_ns", ["generated_ns"], unique=False)

    op.create_table(
        "run_gaps",
        sa.Column("run_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("position", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("generated_ns", sa.BigInteger(), nullable=False),
        sa.Column("from_ns", sa.BigInteger(), nullable=False),
        sa.Column("to_ns", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "position", name=op.f("pk_run_gaps")),
    )
    with op.batch_alter_table("run_gaps", schema=None) as batch_op:
        batch_op.create_index("ix_run_gaps_generated_ns", ["generated_ns"], unique=False)

    op.create_table(
        "analysis_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("generated_ns", sa.BigInteger(), nullable=False),
        sa.Column("since_ns", sa.BigInteger(), nullable=False),
        sa.Column("until_ns", sa.BigInteger(), nullable=False),
        sa.Column("hours", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("opportunities", sa.Integer(), nullable=False),
        sa.Column("node_failures", sa.Integer(), nullable=False),
        sa.Column("node_missed_msat", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_analysis_runs_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_runs")),
    )
    with op.batch_alter_table("analysis_runs", schema=None) as batch_op:
        batch_op.create_index("ix_analysis_runs_generated_ns", ["generated_ns"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("analysis_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_analysis_runs_generated_ns")

    op.drop_table("analysis_runs")
    with op.batch_alter_table("run_gaps", schema=None) as batch_op:
        batch_op.drop_index("ix_run_gaps_generated_ns")

    op.drop_table("run_gaps")
    with op.batch_alter_table("rebalance_moves", schema=None) as batch_op:
        batch_op.drop_index("ix_rebalance_moves_generated_ns")

    op.drop_table("rebalance_moves")
    with op.batch_alter_table("opportunities", schema=None) as batch_op:
        batch_op.drop_index("ix_opportunities_generated_ns")
        batch_op.drop_index("ix_opportunities_channel_run")

    op.drop_table("opportunities")
