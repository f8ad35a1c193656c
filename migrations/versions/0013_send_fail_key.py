"""own payments' first-hop failures: one row each; node totals of unknown amounts

lnd zeroes the incoming side of a SEND event, and a payment that fails at our first
hop never gets an outgoing htlc id: every such link fail has the key (0, 0, chan, 0),
so the replay key kept the first and dropped all later ones. The replay key now
leaves SEND link fails out (a partial unique index instead of the table's unique
constraint) and they get their own key, (node, outgoing channel, timestamp_ns).

Upgrading rebuilds htlc_events once (SQLite cannot drop a table constraint in
place); ids and rows are kept. Downgrading keeps the first SEND link fail of each
old key, as the old schema did, and restores the constraint.

The analysis' node totals gain what has no missed fee to add up: local failures lnd
gave no amount for (analysis_runs.node_unknown_amount) and HTLCs an interceptor
rejected (node_rejected), each read from a small partial index of forward_attempts.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lnflow.store.engines import ddl

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_KEY = (
    "node_id",
    "kind",
    "incoming_chan_ref",
    "incoming_htlc_id",
    "outgoing_chan_ref",
    "outgoing_htlc_id",
)
_SEND_LINK_FAIL = "event_type = 1 AND kind = 4"
_ATTEMPT_INDEXES = (
    (
        "ix_forward_attempts_unknown_amount",
        "outcome = 2 AND outgoing_amt_msat IS NULL",
        ["resolved_ns", "outgoing_chan_ref", "node_id"],
    ),
    ("ix_forward_attempts_rejected", "outcome = 5", ["resolved_ns", "node_id"]),
)
_RUN_COLUMNS = ("node_unknown_amount", "node_rejected")


def upgrade() -> None:
    with op.batch_alter_table("htlc_events", recreate=ddl.table_rewrite()) as batch:
        batch.drop_constraint("uq_htlc_events_key", type_="unique")
    op.create_index(
        "uq_htlc_events_key",
        "htlc_events",
        list(_KEY),
        unique=True,
        sqlite_where=sa.text(f"NOT ({_SEND_LINK_FAIL})"),
        postgresql_where=sa.text(f"NOT ({_SEND_LINK_FAIL})"),
    )
    op.create_index(
        "uq_htlc_events_send_fail_key",
        "htlc_events",
        ["node_id", "outgoing_chan_ref", "timestamp_ns"],
        unique=True,
        sqlite_where=sa.text(_SEND_LINK_FAIL),
        postgresql_where=sa.text(_SEND_LINK_FAIL),
    )
    for name, where, cols in _ATTEMPT_INDEXES:
        op.create_index(
            name,
            "forward_attempts",
            cols,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )
    for name in _RUN_COLUMNS:
        op.add_column(
            "analysis_runs", sa.Column(name, sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("analysis_runs") as batch:
        for name in _RUN_COLUMNS:
            batch.drop_column(name)
    for name, _, _ in _ATTEMPT_INDEXES:
        op.drop_index(name, "forward_attempts")
    op.drop_index("uq_htlc_events_send_fail_key", "htlc_events")
    op.drop_index("uq_htlc_events_key", "htlc_events")
    key = ", ".join(_KEY)
    op.execute(
        f"DELETE FROM htlc_events WHERE {_SEND_LINK_FAIL} AND id NOT IN"
        f" (SELECT min(id) FROM htlc_events WHERE {_SEND_LINK_FAIL} GROUP BY {key})"
    )
    with op.batch_alter_table("htlc_events", recreate=ddl.table_rewrite()) as batch:
        batch.create_unique_constraint("uq_htlc_events_key", list(_KEY))
