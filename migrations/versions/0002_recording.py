"""attempts, clusters, forwards ledger, channels, samples, hourly rollups

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("chan_id", sa.BigInteger(), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("capacity_sat", sa.BigInteger(), nullable=False),
        sa.Column("local_balance_sat", sa.BigInteger(), nullable=False),
        sa.Column("remote_balance_sat", sa.BigInteger(), nullable=False),
        sa.Column("local_reserve_sat", sa.BigInteger(), nullable=False),
        sa.Column("remote_reserve_sat", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("uptime_s", sa.BigInteger(), nullable=False),
        sa.Column("lifetime_s", sa.BigInteger(), nullable=False),
        sa.Column("fee_base_msat", sa.BigInteger(), nullable=True),
        sa.Column("fee_rate_ppm", sa.BigInteger(), nullable=True),
        sa.Column("time_lock_delta", sa.Integer(), nullable=True),
        sa.Column("min_htlc_msat", sa.BigInteger(), nullable=True),
        sa.Column("max_htlc_msat", sa.BigInteger(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=True),
        sa.Column("peer_fee_base_msat", sa.BigInteger(), nullable=True),
        sa.Column("peer_fee_rate_ppm", sa.BigInteger(), nullable=True),
        sa.Column("peer_time_lock_delta", sa.Integer(), nullable=True),
        sa.Column("peer_min_htlc_msat", sa.BigInteger(), nullable=True),
        sa.Column("peer_max_htlc_msat", sa.BigInteger(), nullable=True),
        sa.Column("peer_disabled", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_channel_samples_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_samples")),
    )
    with op.batch_alter_table("channel_samples", schema=None) as batch_op:
        batch_op.create_index(
            "ix_channel_samples_chan_ts", ["node_id", "chan_id", "ts_ns"], unique=False
        )
        batch_op.create_index("ix_channel_samples_ts", ["ts_ns"], unique=False)

    op.create_table(
        "channels",
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("chan_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("remote_pubkey", sa.String(length=66), nullable=False),
        sa.Column("channel_point", sa.Text(), nullable=False),
        sa.Column("capacity_sat", sa.BigInteger(), nullable=False),
        sa.Column("peer_alias", sa.Text(), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("first_seen_ns", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ns", sa.BigInteger(), nullable=False),
        sa.Column("closed_ns", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name=op.f("fk_channels_node_id_nodes")),
        sa.PrimaryKeyConstraint("node_id", "chan_id", name=op.f("pk_channels")),
    )
    op.create_table(
        "failure_clusters",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("outgoing_channel_id", sa.BigInteger(), nullable=False),
        sa.Column("first_ns", sa.BigInteger(), nullable=False),
        sa.Column("last_ns", sa.BigInteger(), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("missed_fee_msat", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_failure_clusters_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failure_clusters")),
    )
    op.create_table(
        "failure_rollups_hourly",
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("hour", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("outgoing_channel_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("incoming_channel_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("failure_class", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("clusters", sa.Integer(), nullable=False),
        sa.Column("missed_raw_msat", sa.BigInteger(), nullable=False),
        sa.Column("missed_dedup_msat", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_failure_rollups_hourly_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint(
            "node_id",
            "hour",
            "outgoing_channel_id",
            "incoming_channel_id",
            "failure_class",
            name=op.f("pk_failure_rollups_hourly"),
        ),
    )
    op.create_table(
        "forward_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("incoming_channel_id", sa.BigInteger(), nullable=False),
        sa.Column("incoming_htlc_id", sa.BigInteger(), nullable=False),
        sa.Column("outgoing_channel_id", sa.BigInteger(), nullable=False),
        sa.Column("outgoing_htlc_id", sa.BigInteger(), nullable=False),
        sa.Column("first_seen_ns", sa.BigInteger(), nullable=False),
        sa.Column("resolved_ns", sa.BigInteger(), nullable=True),
        sa.Column("incoming_amt_msat", sa.BigInteger(), nullable=True),
        sa.Column("outgoing_amt_msat", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("failure_class", sa.SmallInteger(), nullable=True),
        sa.Column("wire_failure", sa.Integer(), nullable=True),
        sa.Column("failure_detail", sa.Integer(), nullable=True),
        sa.Column("missed_fee_msat", sa.BigInteger(), nullable=False),
        sa.Column("final_settled", sa.Boolean(), nullable=True),
        sa.Column("cluster_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_forward_attempts_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forward_attempts")),
        sa.UniqueConstraint(
            "node_id", "incoming_channel_id", "incoming_htlc_id", name="uq_forward_attempts_key"
        ),
    )
    with op.batch_alter_table("forward_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_forward_attempts_out_seen", ["outgoing_channel_id", "first_seen_ns"], unique=False
        )
        batch_op.create_index(
            "ix_forward_attempts_local",
            [
                "outgoing_channel_id",
                "failure_class",
                "resolved_ns",
                "outgoing_amt_msat",
                "missed_fee_msat",
                "node_id",
                "outcome",
            ],
            unique=False,
            sqlite_where=sa.text("outcome = 2"),  # lnflow.attempts.Outcome.FAILED_LOCAL
            postgresql_where=sa.text("outcome = 2"),
        )

    op.create_table(
        "forward_rollups_hourly",
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("hour", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("chan_id_in", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("chan_id_out", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("forwards", sa.Integer(), nullable=False),
        sa.Column("amt_out_msat", sa.BigInteger(), nullable=False),
        sa.Column("fee_msat", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_forward_rollups_hourly_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint(
            "node_id", "hour", "chan_id_in", "chan_id_out", name=op.f("pk_forward_rollups_hourly")
        ),
    )
    op.create_table(
        "forwards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("timestamp_ns", sa.BigInteger(), nullable=False),
        sa.Column("chan_id_in", sa.BigInteger(), nullable=False),
        sa.Column("chan_id_out", sa.BigInteger(), nullable=False),
        sa.Column("amt_in_msat", sa.BigInteger(), nullable=False),
        sa.Column("amt_out_msat", sa.BigInteger(), nullable=False),
        sa.Column("fee_msat", sa.BigInteger(), nullable=False),
        sa.Column("incoming_htlc_id", sa.BigInteger(), nullable=True),
        sa.Column("outgoing_htlc_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name=op.f("fk_forwards_node_id_nodes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forwards")),
        sa.UniqueConstraint("node_id", "timestamp_ns", name="uq_forwards_key"),
    )
    with op.batch_alter_table("forwards", schema=None) as batch_op:
        batch_op.create_index("ix_forwards_in_time", ["chan_id_in", "timestamp_ns"], unique=False)
        batch_op.create_index("ix_forwards_out_time", ["chan_id_out", "timestamp_ns"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("forwards", schema=None) as batch_op:
        batch_op.drop_index("ix_forwards_out_time")
        batch_op.drop_index("ix_forwards_in_time")

    op.drop_table("forwards")
    op.drop_table("forward_rollups_hourly")
    with op.batch_alter_table("forward_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_forward_attempts_local")
        batch_op.drop_index("ix_forward_attempts_out_seen")

    op.drop_table("forward_attempts")
    op.drop_table("failure_rollups_hourly")
    op.drop_table("failure_clusters")
    op.drop_table("channels")
    with op.batch_alter_table("channel_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_channel_samples_ts")
        batch_op.drop_index("ix_channel_samples_chan_ts")

    op.drop_table("channel_samples")
