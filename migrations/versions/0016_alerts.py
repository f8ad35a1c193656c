"""built-in alerts: the alerts fired, their deliveries, and what the daemon serves

``alerts``: one row per alert (a condition starting or ending, or a policy change);
``alert_deliveries``: one row per alert and target, the outcome of its last try.
``daemon_state.metrics_listen``: the address lnflowd serves /metrics on (None: off);
``daemon_state.alert_targets``: the names of the configured alert targets (JSON list).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("daemon_state") as batch:
        batch.add_column(sa.Column("metrics_listen", sa.Text(), nullable=True))
        batch.add_column(sa.Column("alert_targets", sa.Text(), nullable=True))
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("fired_ns", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("phase", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_alerts_node_id_nodes"),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_fired_ns", "alerts", ["fired_ns"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.SmallInteger(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("done_ns", sa.BigInteger(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.SmallInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name="fk_alert_deliveries_node_id_nodes"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
    )
    op.create_index("ix_alert_deliveries_alert_id", "alert_deliveries", ["alert_id"])
    op.create_index("ix_alert_deliveries_target", "alert_deliveries", ["target", "id"])


def downgrade() -> None:
    op.drop_table("alert_deliveries")
    op.drop_table("alerts")
    with op.batch_alter_table("daemon_state") as batch:
        batch.drop_column("alert_targets")
        batch.drop_column("metrics_listen")
