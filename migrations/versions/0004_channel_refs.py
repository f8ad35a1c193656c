"""channel refs: htlc_events names channels by a small number instead of the SCID

A SCID (block << 40 | tx << 16 | output) always takes 8 bytes in SQLite; the event
table names two per row and its key index two more, about a third of each event's
bytes on disk. ``channel_refs`` numbers the SCIDs per node and the events keep the
number (1-2 bytes; 0 stays 0, lnd's "no channel on this side").

Upgrading rewrites htlc_events once (in id order, so ids and their order are kept);
downgrading puts the SCIDs back.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lnflow.store.engines import ddl

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# the columns both layouts share, in table order around the two channel columns
_HEAD = "id, node_id, session_id, timestamp_ns, kind, event_type"
_TAIL = (
    "incoming_amt_msat, outgoing_amt_msat, incoming_timelock, outgoing_timelock, "
    "wire_failure, failure_detail, failure_string, settled, offchain"
)


def _events_table(name: str, chan: str, chan_type: sa.types.TypeEngine[int]) -> None:
    """htlc_events as ``name`` with ``incoming_<chan>``/``outgoing_<chan>`` columns."""
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
        sa.Column("failure_string", sa.Text),
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


def _swap(copy_sql: str, chan: str, chan_type: sa.types.TypeEngine[int]) -> None:
    ddl.before_table_copy("htlc_events", ("pk_htlc_events", "uq_htlc_events_key"))
    _events_table("htlc_events_new", chan, chan_type)
    op.execute(copy_sql)
    op.drop_table("htlc_events")
    op.rename_table("htlc_events_new", "htlc_events")
    ddl.after_table_copy("htlc_events")


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
    op.execute(
        "INSERT INTO channel_refs (node_id, chan_id)"
        " SELECT node_id, chan FROM ("
        "  SELECT node_id, incoming_channel_id AS chan FROM htlc_events"
        "  UNION SELECT node_id, outgoing_channel_id FROM htlc_events"
        " ) AS c WHERE chan != 0 ORDER BY node_id, chan"
    )
    _swap(
        f"INSERT INTO htlc_events_new ({_HEAD}, incoming_chan_ref, incoming_htlc_id,"
        f" outgoing_chan_ref, outgoing_htlc_id, {_TAIL})"
        f" SELECT {', '.join('e.' + c for c in _HEAD.split(', '))},"
        " coalesce(ri.id, 0), e.incoming_htlc_id, coalesce(ro.id, 0), e.outgoing_htlc_id,"
        f" {', '.join('e.' + c for c in _TAIL.split(', '))}"
        " FROM htlc_events e"
        " LEFT JOIN channel_refs ri"
        "  ON ri.node_id = e.node_id AND ri.chan_id = e.incoming_channel_id"
        " LEFT JOIN channel_refs ro"
        "  ON ro.node_id = e.node_id AND ro.chan_id = e.outgoing_channel_id"
        " ORDER BY e.id",
        "chan_ref",
        sa.Integer(),
    )


def downgrade() -> None:
    _swap(
        f"INSERT INTO htlc_events_new ({_HEAD}, incoming_channel_id, incoming_htlc_id,"
        f" outgoing_channel_id, outgoing_htlc_id, {_TAIL})"
        f" SELECT {', '.join('e.' + c for c in _HEAD.split(', '))},"
        " coalesce(ri.chan_id, 0), e.incoming_htlc_id, coalesce(ro.chan_id, 0),"
        f" e.outgoing_htlc_id, {', '.join('e.' + c for c in _TAIL.split(', '))}"
        " FROM htlc_events e"
        " LEFT JOIN channel_refs ri ON ri.id = e.incoming_chan_ref"
        " LEFT JOIN channel_refs ro ON ro.id = e.outgoing_chan_ref"
        " ORDER BY e.id",
        "channel_id",
        sa.BigInteger(),
    )
    op.drop_table("channel_refs")
