"""recording marks (retention by recording time) and each run's observed time

``recording_marks``: one row per prune run, "every raw row up to these ids was stored
by recorded_ns". Retention then expires events, attempts and clusters by when lnflow
recorded them, not by the node's timestamps (a node clock set in the past would
otherwise have them deleted at the next prune). Upgrading seeds one mark per hour of
the rows already stored, from their own times (as they were pruned before).

``analysis_runs.observed_ns``: how much of the run's window the HTLC stream was
connected; NULL for runs from before.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_H = 3600 * 1_000_000_000


def upgrade() -> None:
    with op.batch_alter_table("analysis_runs") as batch:
        batch.add_column(sa.Column("observed_ns", sa.BigInteger(), nullable=True))
    op.create_table(
        "recording_marks",
        sa.Column("recorded_ns", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("attempt_id", sa.Integer(), nullable=True),
        sa.Column("cluster_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("recorded_ns"),
    )
    op.execute(
        "INSERT INTO recording_marks (recorded_ns, event_id, attempt_id, cluster_id)"
        " SELECT h, max(e), max(a), max(c) FROM ("
        f" SELECT (timestamp_ns / {_H} + 1) * {_H} - 1 AS h, max(id) AS e,"
        " CAST(NULL AS INTEGER) AS a, CAST(NULL AS INTEGER) AS c FROM htlc_events GROUP BY 1"
        f" UNION ALL SELECT (first_seen_ns / {_H} + 1) * {_H} - 1, NULL, max(id), NULL"
        " FROM forward_attempts GROUP BY 1"
        f" UNION ALL SELECT (last_ns / {_H} + 1) * {_H} - 1, NULL, NULL, max(id)"
        " FROM failure_clusters GROUP BY 1"
        ") AS marks GROUP BY h"
    )


def downgrade() -> None:
    op.drop_table("recording_marks")
    with op.batch_alter_table("analysis_runs") as batch:
        batch.drop_column("observed_ns")
