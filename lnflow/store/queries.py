"""Read-side queries. They return plain dataclasses, never rows."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select

from lnflow.store import status_read
from lnflow.store.engines import PlainDb, plain_connection
from lnflow.store.schema import stream_sessions
from lnflow.store.status_read import (
    DaemonStatus,
    Gap,
    Liveness,
    LndStatus,
    StatusReport,
    StreamStatus,
)

__all__ = [
    "DaemonStatus",
    "Gap",
    "Liveness",
    "LndStatus",
    "StatusReport",
    "StreamStatus",
    "liveness",
    "observed_ns",
    "status_report",
    "stream_gaps",
]


def stream_gaps(
    conn: Connection, since_ns: int, until_ns: int, node_id: int | None = None
) -> list[Gap]:
    """:func:`lnflow.store.status_read.stream_gaps` on a SQLAlchemy connection."""
    return status_read.stream_gaps(_driver(conn), since_ns, until_ns, node_id)


# the stream sessions of a node that overlap [since, until), in order
_s = stream_sessions.c
_SESSIONS_IN = (
    select(_s.started_ns, _s.ended_ns)
    .where(_s.node_id == bindparam("node"), _s.started_ns < bindparam("until"))
    .where(_s.ended_ns.is_(None) | (_s.ended_ns > bindparam("since")))
    .order_by(_s.started_ns)
)


def observed_ns(conn: Connection, node_id: int, since_ns: int, until_ns: int) -> int:
    """How much of [since_ns, until_ns) an HTLC stream of ``node_id`` was connected: the
    union of its stream sessions inside the window (a session still open counts up to
    ``until_ns``). Time before the first session and after the last one ended is not
    observed: failures then went unseen.
    """
    rows = conn.execute(_SESSIONS_IN, {"node": node_id, "since": since_ns, "until": until_ns}).all()
    total = 0
    reach = since_ns  # observed time is counted up to here
    for started, ended in rows:
        start = max(started, reach)
        end = min(until_ns if ended is None else ended, until_ns)
        if end > start:
            total += end - start
            reach = end
    return total


def liveness(conn: Connection, now_ns: int, node_id: int | None = None) -> Liveness:
    """:func:`lnflow.store.status_read.liveness` on a SQLAlchemy connection."""
    return status_read.liveness(_driver(conn), now_ns, node_id)


def status_report(conn: Connection, now_ns: int, node_id: int | None = None) -> StatusReport:
    """:func:`lnflow.store.status_read.status_report` on a SQLAlchemy connection."""
    return status_read.status_report(_driver(conn), now_ns, node_id)


def _driver(conn: Connection) -> PlainDb:
    return plain_connection(conn)
