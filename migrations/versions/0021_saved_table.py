"""the latest snapshot's opportunities table, rendered when it is written

``analysis_runs.table_format`` and ``table_text``: the body of ``lnflowctl
opportunities`` (:func:`lnflow.cli.render.opportunities_body`) as lnflowd rendered it
when it saved the run, and the renderer it came from (:mod:`lnflow.cli.saved_table`).
Only a node's latest run keeps it (``ix_analysis_runs_table`` finds it); every older
run, and every run from before, has NULLs and is rendered from its rows.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("analysis_runs") as batch:
        batch.add_column(sa.Column("table_format", sa.Text(), nullable=True))
        batch.add_column(sa.Column("table_text", sa.Text(), nullable=True))
    has_table = sa.text("table_text IS NOT NULL")
    op.create_index(
        "ix_analysis_runs_table",
        "analysis_runs",
        ["node_id"],
        sqlite_where=has_table,
        postgresql_where=has_table,
    )


def downgrade() -> None:
    op.drop_index("ix_analysis_runs_table", table_name="analysis_runs")
    with op.batch_alter_table("analysis_runs") as batch:
        batch.drop_column("table_text")
        batch.drop_column("table_format")
