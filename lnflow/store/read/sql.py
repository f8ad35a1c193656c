"""SQL pieces the read side's statements share.

- Reads of ``forward_attempts`` name the outcome as a literal, so SQLite can prove the
  WHERE clause of the partial indexes (``ix_forward_attempts_local`` and friends).
- ``node_id`` conditions on ``forward_attempts`` are written :func:`unindexed`: without
  table statistics SQLite prefers the unique (node_id, ...) index over
  ``ix_forward_attempts_local`` and would read every attempt of the node instead of the
  time range.
- The attempts name channels by their ``channel_refs`` number (:func:`ref_of`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, literal_column, select
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from lnflow.attempts import Outcome
from lnflow.store.schema import channel_refs, retention_horizons

__all__ = [
    "FAILED_LOCAL",
    "REJECTED_LOCAL",
    "number",
    "ref_of",
    "starts_after_horizon",
    "unindexed",
]


def number(value: int) -> ColumnElement[Any]:
    """An integer written into the statement (not bound): the planner sees its value."""
    return literal_column(str(int(value)))


FAILED_LOCAL = number(Outcome.FAILED_LOCAL)
REJECTED_LOCAL = number(Outcome.REJECTED_LOCAL)


def unindexed(col: ColumnElement[int]) -> ColumnElement[int]:
    """``+col``: the same value, which SQLite's planner will not look up in an index."""
    return UnaryExpression(col, operator=operators.custom_op("+"), type_=col.type)


def ref_of(chan: ColumnElement[int]) -> ColumnElement[int]:
    """The ref of SCID ``chan`` of the node (NULL when the node has none: no attempt names it)."""
    return (
        select(channel_refs.c.id)
        .where(channel_refs.c.node_id == bindparam("node"))
        .where(channel_refs.c.chan_id == chan)
        .scalar_subquery()
    )


# the node's retention horizon (schema: 0023)
_HORIZON = select(retention_horizons.c.deleted_through_ns).where(
    retention_horizons.c.node_id == bindparam("node")
)


def starts_after_horizon(conn: Connection, node_id: int, since_ns: int) -> bool:
    """Whether a window from ``since_ns`` starts after the node's retention horizon: every
    raw failure in it is kept and every failure rollup period it covers too, so a count
    of its failures from the rollups equals the raw rows' (a failure's rollup hour is
    its ``resolved_ns``'s)."""
    horizon = conn.scalar(_HORIZON, {"node": node_id})
    return horizon is None or since_ns > horizon
