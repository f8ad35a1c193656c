"""the fee policy engine's history: policy_changes

One row per channel and run of the policy engine (lnflow.policy): when, which run,
the channel, the matched sections and the strategy, every policy field before and
after (after NULL: left as it was), the analysis run the decision read, the reason,
the result (planned, applied, failed, rolled_back, reverted) and lnd's error. A
rollback or revert is a row of its own naming the change it undoes (undoes_id).
The what-if estimate and the measured effects (evaluate_hours before and after an
applied change) fill their columns later; NULL until then. Downgrading drops the table.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_FIELDS = (
    ("base_fee_msat", sa.BigInteger),
    ("fee_ppm", sa.BigInteger),
    ("min_htlc_msat", sa.BigInteger),
    ("max_htlc_msat", sa.BigInteger),
    ("time_lock_delta", sa.Integer),
    ("inbound_base_fee_msat", sa.BigInteger),
    ("inbound_fee_ppm", sa.BigInteger),
    ("disabled", sa.Boolean),
)


def upgrade() -> None:
    op.create_table(
        "policy_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("chan_id", sa.BigInteger(), nullable=False),
        sa.Column("section", sa.Text(), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        *(sa.Column(f"before_{name}", type_(), nullable=True) for name, type_ in _FIELDS),
        *(sa.Column(f"after_{name}", type_(), nullable=True) for name, type_ in _FIELDS),
        sa.Column("snapshot_run_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("applied_ns", sa.BigInteger(), nullable=True),
        sa.Column("undoes_id", sa.Integer(), nullable=True),
        sa.Column("whatif_before_msat", sa.BigInteger(), nullable=True),
        sa.Column("whatif_after_msat", sa.BigInteger(), nullable=True),
        sa.Column("evaluated_ns", sa.BigInteger(), nullable=True),
        sa.Column("effect_hours", sa.Float(), nullable=True),
        sa.Column("forwards_before", sa.Integer(), nullable=True),
        sa.Column("forwards_after", sa.Integer(), nullable=True),
        sa.Column("fees_out_before_msat", sa.BigInteger(), nullable=True),
        sa.Column("fees_out_after_msat", sa.BigInteger(), nullable=True),
        sa.Column("fees_in_before_msat", sa.BigInteger(), nullable=True),
        sa.Column("fees_in_after_msat", sa.BigInteger(), nullable=True),
        sa.Column("failures_before", sa.Integer(), nullable=True),
        sa.Column("failures_after", sa.Integer(), nullable=True),
        sa.Column("missed_before_msat", sa.BigInteger(), nullable=True),
        sa.Column("missed_after_msat", sa.BigInteger(), nullable=True),
        sa.Column("verdict", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_policy_changes_node_id_nodes"),
        sa.PrimaryKeyConstraint("id", name="pk_policy_changes"),
    )
    op.create_index(
        "ix_policy_changes_node_id", "policy_changes", ["node_id", "chan_id", "created_ns"]
    )
    op.create_index("ix_policy_changes_run_id", "policy_changes", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_policy_changes_run_id", table_name="policy_changes")
    op.drop_index("ix_policy_changes_node_id", table_name="policy_changes")
    op.drop_table("policy_changes")
