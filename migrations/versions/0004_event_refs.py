"""event refs: htlc_events names channels and failure strings by a small number

A SCID (block << 40 | tx << 16 | output) always takes 8 bytes in SQLite; the event
table named two per row and its key index two more, about a third of each event's
bytes on disk. ``channel_refs`` numbers the SCIDs per node and the events keep the
number (1-2 bytes; 0 stays 0, lnd's "no channel on this side"). lnd's link failure
strings come from a short fixed list ("insufficient bandwidth to route htlc"):
``failure_strings`` holds each once and the events its number.

Upgrading rewrites htlc_events once (in id order, so ids and their order are kept);
downgrading puts the SCIDs and strings back.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _events_table(name: str, *, refs: bool) -> None:
    """htlc_events as ``name``: with refs (0004) or with SCIDs and strings (0003)."""
    chan, chan_type = ("chan_ref", sa.Integer()) if refs else ("channel_id", sa.BigInteger())
    failure_string = (
        sa.Column("failure_string_ref", sa.Integer)
        if refs
        else sa.Column("failure_string", sa.Text)
    )
    op.create_table(
        name,
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("node_id", sa.SmallInteger, nullable=False),
        sa.Column("session_id", sa.Integer, nullable=False),
        sa.Column("timestamp_ns", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("event_type", sa.Integer, nullable=False),
        sa.Column(f"incoming_{chan}", chan_type, nullable=False),
        sa.Column("incoming_htlc_id", sa.BigInteger, nullable=False),
        sa.Column(f"outgoing_{chan}", chan_type, nullable=False),
        sa.Column("outgoing_htlc_id", sa.BigInteger, nullable=False),
        sa.Column("incoming_amt_msat", sa.BigInteger),
        sa.Column("outgoing_amt_msat", sa.BigInteger),
        sa.Column("incoming_timelock", sa.Integer),
        sa.Column("outgoing_timelock", sa.Integer),
        sa.Column("wire_failure", sa.Integer),
        sa.Column("failure_detail", sa.Integer),
        failure_string,
        sa.Column("settled", sa.Boolean),
        sa.Column("offchain", sa.Boolean),
        sa.PrimaryKeyConstraint("id", name="pk_htlc_events"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_htlc_events_node_id_nodes"),
        sa.UniqueConstraint(
            "node_id",
            "kind",
            f"incoming_{chan}",
            "incoming_htlc_id",
            f"outgoing_{chan}",
            "outgoing_htlc_id",
            name="uq_htlc_events_key",
        ),
    )


# the columns both layouts share
_SAME = (
    "id, node_id, session_id, timestamp_ns, kind, event_type, incoming_htlc_id,"
    " outgoing_htlc_id, incoming_amt_msat, outgoing_amt_msat, incoming_timelock,"
    " outgoing_timelock, wire_failure, failure_detail, settled, offchain"
)
_SAME_E = ", ".join("e." + c.strip() for c in _SAME.split(","))


def _swap(refs: bool, columns: str, values: str, joins: str) -> None:
    _events_table("htlc_events_new", refs=refs)
    op.execute(
        f"INSERT INTO htlc_events_new ({_SAME}, {columns}) SELECT {_SAME_E}, {values}"
        f" FROM htlc_events e {joins} ORDER BY e.id"
    )
    op.drop_table("htlc_events")
    op.rename_table("htlc_events_new", "htlc_events")


def upgrade() -> None:
    op.create_table(
        "channel_refs",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("node_id", sa.SmallInteger, nullable=False),
        sa.Column("chan_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_channel_refs"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_channel_refs_node_id_nodes"),
        sa.UniqueConstraint("node_id", "chan_id", name="uq_channel_refs_key"),
    )
    op.create_table(
        "failure_strings",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_failure_strings"),
        sa.UniqueConstraint("text", name="uq_failure_strings_text"),
    )
    op.execute(
        "INSERT INTO channel_refs (node_id, chan_id)"
        " SELECT node_id, chan FROM ("
        "  SELECT node_id, incoming_channel_id AS chan FROM htlc_events"
        "  UNION SELECT node_id, outgoing_channel_id FROM htlc_events"
        " ) WHERE chan != 0 ORDER BY node_id, chan"
    )
    op.execute(
        "INSERT INTO failure_strings (text) SELECT DISTINCT failure_string FROM htlc_events"
        " WHERE failure_string IS NOT NULL ORDER BY failure_string"
    )
    _swap(
        True,
        "incoming_chan_ref, outgoing_chan_ref, failure_string_ref",
        "coalesce(ri.id, 0), coalesce(ro.id, 0), fs.id",
        "LEFT JOIN channel_refs ri"
        " ON ri.node_id = e.node_id AND ri.chan_id = e.incoming_channel_id"
        " LEFT JOIN channel_refs ro"
        " ON ro.node_id = e.node_id AND ro.chan_id = e.outgoing_channel_id"
        " LEFT JOIN failure_strings fs ON fs.text = e.failure_string",
    )


def downgrade() -> None:
    _swap(
        False,
        "incoming_channel_id, outgoing_channel_id, failure_string",
        "coalesce(ri.chan_id, 0), coalesce(ro.chan_id, 0), fs.text",
        "LEFT JOIN channel_refs ri ON ri.id = e.incoming_chan_ref"
        " LEFT JOIN channel_refs ro ON ro.id = e.outgoing_chan_ref"
        " LEFT JOIN failure_strings fs ON fs.id = e.failure_string_ref",
    )
    op.drop_table("failure_strings")
    op.drop_table("channel_refs")
