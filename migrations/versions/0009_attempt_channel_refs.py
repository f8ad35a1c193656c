"""channel refs for forward_attempts: ~10 bytes per recorded event

forward_attempts named its two channels by their 8-byte SCIDs in the row, the incoming
one in the unique key index and the outgoing one in both partial local-failure indexes.
Like htlc_events since 0004, the attempts now keep the channel_refs number (1-2 bytes;
0 stays 0: no outgoing channel yet).

Upgrading first numbers every SCID the attempts name that has no ref yet (attempts may
outlive the events that named their channels), then rewrites forward_attempts once in
id order, so ids and their order are kept, and builds the indexes again. Downgrading
puts the SCIDs back; the refs stay (0008 has the table, numbers are never reused).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lnflow.store.engines import ddl

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TAIL = (
    "first_seen_ns, resolved_ns, incoming_amt_msat, outgoing_amt_msat, outcome,"
    " failure_class, wire_failure, failure_detail, missed_fee_msat, final_settled, cluster_id"
)
_TAIL_OF_A = ", ".join("a." + c.strip() for c in _TAIL.split(","))

# the partial indexes on local failures (outcome 2), after the outgoing channel column
_LOCAL = ("failure_class", "resolved_ns", "outgoing_amt_msat", "missed_fee_msat", "node_id")
_LOCAL_AMOUNT = ("failure_class", "outgoing_amt_msat", "resolved_ns", "node_id")


def _attempts_table(name: str, chan: str, chan_type: sa.types.TypeEngine[int]) -> None:
    """forward_attempts as ``name`` with ``incoming_<chan>``/``outgoing_<chan>`` columns."""
    op.create_table(
        name,
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("node_id", sa.SmallInteger, nullable=False),
        sa.Column(f"incoming_{chan}", chan_type, nullable=False),
        sa.Column("incoming_htlc_id", sa.BigInteger, nullable=False),
        sa.Column(f"outgoing_{chan}", chan_type, nullable=False),
        sa.Column("outgoing_htlc_id", sa.BigInteger, nullable=False),
        sa.Column("first_seen_ns", sa.BigInteger, nullable=False),
        sa.Column("resolved_ns", sa.BigInteger),
        sa.Column("incoming_amt_msat", sa.BigInteger),
        sa.Column("outgoing_amt_msat", sa.BigInteger),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("failure_class", sa.SmallInteger),
        sa.Column("wire_failure", sa.Integer),
        sa.Column("failure_detail", sa.Integer),
        sa.Column("missed_fee_msat", sa.BigInteger, nullable=False),
        sa.Column("final_settled", sa.Boolean),
        sa.Column("cluster_id", sa.Integer),
        sa.PrimaryKeyConstraint("id", name="pk_forward_attempts"),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name="fk_forward_attempts_node_id_nodes"
        ),
        sa.UniqueConstraint(
            "node_id", f"incoming_{chan}", "incoming_htlc_id", name="uq_forward_attempts_key"
        ),
    )


def _swap(copy_sql: str, chan: str, chan_type: sa.types.TypeEngine[int]) -> None:
    ddl.before_table_copy("forward_attempts", ("pk_forward_attempts", "uq_forward_attempts_key"))
    _attempts_table("forward_attempts_new", chan, chan_type)
    op.execute(copy_sql)
    op.drop_table("forward_attempts")  # and its indexes
    op.rename_table("forward_attempts_new", "forward_attempts")
    ddl.after_table_copy("forward_attempts")
    local = sa.text("outcome = 2")
    for name, columns in (
        ("ix_forward_attempts_local", _LOCAL),
        ("ix_forward_attempts_local_amount", _LOCAL_AMOUNT),
    ):
        op.create_index(
            name,
            "forward_attempts",
            [f"outgoing_{chan}", *columns, "outcome"],
            unique=False,
            sqlite_where=local,
            postgresql_where=local,
        )


def upgrade() -> None:
    op.execute(
        "INSERT INTO channel_refs (node_id, chan_id)"
        " SELECT node_id, chan FROM ("
        "  SELECT node_id, incoming_channel_id AS chan FROM forward_attempts"
        "  UNION SELECT node_id, outgoing_channel_id FROM forward_attempts"
        " ) AS named WHERE chan != 0 AND NOT EXISTS ("
        "  SELECT 1 FROM channel_refs r WHERE r.node_id = named.node_id AND r.chan_id = chan"
        " ) ORDER BY node_id, chan"
    )
    _swap(
        "INSERT INTO forward_attempts_new (id, node_id, incoming_chan_ref, incoming_htlc_id,"
        f" outgoing_chan_ref, outgoing_htlc_id, {_TAIL})"
        " SELECT a.id, a.node_id, coalesce(ri.id, 0), a.incoming_htlc_id, coalesce(ro.id, 0),"
        f" a.outgoing_htlc_id, {_TAIL_OF_A}"
        " FROM forward_attempts a"
        " LEFT JOIN channel_refs ri"
        "  ON ri.node_id = a.node_id AND ri.chan_id = a.incoming_channel_id"
        " LEFT JOIN channel_refs ro"
        "  ON ro.node_id = a.node_id AND ro.chan_id = a.outgoing_channel_id"
        " ORDER BY a.id",
        "chan_ref",
        sa.Integer(),
    )


def downgrade() -> None:
    _swap(
        "INSERT INTO forward_attempts_new (id, node_id, incoming_channel_id, incoming_htlc_id,"
        f" outgoing_channel_id, outgoing_htlc_id, {_TAIL})"
        " SELECT a.id, a.node_id, coalesce(ri.chan_id, 0), a.incoming_htlc_id,"
        f" coalesce(ro.chan_id, 0), a.outgoing_htlc_id, {_TAIL_OF_A}"
        " FROM forward_attempts a"
        " LEFT JOIN channel_refs ri ON ri.id = a.incoming_chan_ref"
        " LEFT JOIN channel_refs ro ON ro.id = a.outgoing_chan_ref"
        " ORDER BY a.id",
        "channel_id",
        sa.BigInteger(),
    )
