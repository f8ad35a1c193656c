"""channel refs for failure_clusters: ~1.5 bytes per recorded event

A demand cluster named its outgoing channel by the 8-byte SCID, a sixth of its row;
like the events (0004) and the attempts (0009) it now keeps the channel_refs number.

Upgrading numbers the SCIDs only clusters name, then rewrites failure_clusters once in
id order; downgrading puts the SCIDs back (the refs stay).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lnflow.store.engines import ddl

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TAIL = "first_ns, last_ns, members, missed_fee_msat"
_TAIL_OF_C = ", ".join("c." + col.strip() for col in _TAIL.split(","))


def _swap(copy_sql: str, chan: str, chan_type: sa.types.TypeEngine[int]) -> None:
    """failure_clusters rewritten by ``copy_sql`` with an ``outgoing_<chan>`` column."""
    ddl.before_table_copy("failure_clusters", ("pk_failure_clusters",))
    op.create_table(
        "failure_clusters_new",
        sa.Column("id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("node_id", sa.SmallInteger, nullable=False),
        sa.Column(f"outgoing_{chan}", chan_type, nullable=False),
        sa.Column("first_ns", sa.BigInteger, nullable=False),
        sa.Column("last_ns", sa.BigInteger, nullable=False),
        sa.Column("members", sa.Integer, nullable=False),
        sa.Column("missed_fee_msat", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name="fk_failure_clusters_node_id_nodes"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_failure_clusters"),
    )
    op.execute(copy_sql)
    op.drop_table("failure_clusters")
    op.rename_table("failure_clusters_new", "failure_clusters")
    ddl.after_table_copy("failure_clusters")


def upgrade() -> None:
    op.execute(
        "INSERT INTO channel_refs (node_id, chan_id)"
        " SELECT DISTINCT node_id, outgoing_channel_id FROM failure_clusters c"
        " WHERE outgoing_channel_id != 0 AND NOT EXISTS ("
        "  SELECT 1 FROM channel_refs r"
        "  WHERE r.node_id = c.node_id AND r.chan_id = c.outgoing_channel_id"
        " ) ORDER BY node_id, outgoing_channel_id"
    )
    _swap(
        f"INSERT INTO failure_clusters_new (id, node_id, outgoing_chan_ref, {_TAIL})"
        f" SELECT c.id, c.node_id, coalesce(r.id, 0), {_TAIL_OF_C}"
        " FROM failure_clusters c"
        " LEFT JOIN channel_refs r"
        "  ON r.node_id = c.node_id AND r.chan_id = c.outgoing_channel_id"
        " ORDER BY c.id",
        "chan_ref",
        sa.Integer(),
    )


def downgrade() -> None:
    _swap(
        f"INSERT INTO failure_clusters_new (id, node_id, outgoing_channel_id, {_TAIL})"
        f" SELECT c.id, c.node_id, coalesce(r.chan_id, 0), {_TAIL_OF_C}"
        " FROM failure_clusters c"
        " LEFT JOIN channel_refs r ON r.id = c.outgoing_chan_ref"
        " ORDER BY c.id",
        "channel_id",
        sa.BigInteger(),
    )
