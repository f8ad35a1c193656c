"""baseline: nodes, stream sessions, HTLC events, daemon state

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("pubkey", sa.String(66), nullable=False),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("network", sa.String(16), nullable=False),
        sa.Column("first_seen_ns", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
        sa.UniqueConstraint("pubkey", name="uq_nodes_pubkey"),
    )
    op.create_table(
        "stream_sessions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("node_id", sa.SmallInteger, nullable=False),
        sa.Column("started_ns", sa.BigInteger, nullable=False),
        sa.Column("subscribed_ns", sa.BigInteger),
        sa.Column("ended_ns", sa.BigInteger),
        sa.Column("end_reason", sa.Text),
        sa.Column("lnd_version", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stream_sessions"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_stream_sessions_node_id_nodes"),
    )
    op.create_index("ix_stream_sessions_node_started", "stream_sessions", ["node_id", "started_ns"])
    op.create_table(
        "htlc_events",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("node_id", sa.SmallInteger, nullable=False),
        sa.Column("session_id", sa.Integer, nullable=False),
        sa.Column("timestamp_ns", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("event_type", sa.Integer, nullable=False),
        sa.Column("incoming_channel_id", sa.BigInteger, nullable=False),
        sa.Column("incoming_htlc_id", sa.BigInteger, nullable=False),
        sa.Column("outgoing_channel_id", sa.BigInteger, nullable=False),
        sa.Column("outgoing_htlc_id", sa.BigInteger, nullable=False),
        sa.Column("incoming_amt_msat", sa.BigInteger),
        sa.Column("outgoing_amt_msat", sa.BigInteger),
        sa.Column("incoming_timelock", sa.Integer),
        sa.Column("outgoing_timelock", sa.Integer),
        sa.Column("wire_failure", sa.Integer),
        sa.Column("failure_detail", sa.Integer),
        sa.Column("failure_string", sa.Text),
        sa.Column("settled", sa.Boolean),
        sa.Column("offchain", sa.Boolean),
        sa.PrimaryKeyConstraint("id", name="pk_htlc_events"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_htlc_events_node_id_nodes"),
        sa.UniqueConstraint(
            "node_id",
            "kind",
            "incoming_channel_id",
            "incoming_htlc_id",
            "outgoing_channel_id",
            "outgoing_htlc_id",
            name="uq_htlc_events_key",
        ),
    )
    op.create_table(
        "daemon_state",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_ns", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_ns", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_interval_s", sa.Integer, nullable=False),
        sa.Column("stopped_ns", sa.BigInteger),
        sa.Column("node_id", sa.SmallInteger),
        sa.Column("lnd_alias", sa.Text),
        sa.Column("lnd_version", sa.Text),
        sa.Column("lnd_network", sa.String(16)),
        sa.Column("lnd_state", sa.String(32), nullable=False),
        sa.Column("stream_state", sa.String(32), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_daemon_state"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_daemon_state_node_id_nodes"),
    )


def downgrade() -> None:
    op.drop_table("daemon_state")
    op.drop_table("htlc_events")
    op.drop_index("ix_stream_sessions_node_started", table_name="stream_sessions")
    op.drop_table("stream_sessions")
    op.drop_table("nodes")
