"""Read-side queries. They return plain dataclasses, never rows."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from lnflow.analysis.model import Gap
from lnflow.attempts import Outcome
from lnflow.domain import EventKind
from lnflow.store.schema import (
    channels,
    daemon_state,
    forward_attempts,
    forwards,
    htlc_events,
    nodes,
    stream_sessions,
)

__all__ = [
    "DaemonStatus",
    "Gap",
    "Liveness",
    "StatusReport",
    "StreamStatus",
    "liveness",
    "observed_ns",
    "status_report",
    "stream_gaps",
]

# The daemon counts as alive while its heartbeat is younger than this many intervals.
_HEARTBEAT_GRACE = 3


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    running: bool
    pid: int | None
    started_ns: int | None
    heartbeat_ns: int | None
    stopped_ns: int | None
    lnd_state: str | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class LndStatus:
    alias: str | None
    version: str | None
    network: str | None
    pubkey: str | None


@dataclass(frozen=True, slots=True)
class StreamStatus:
    connected: bool
    state: str | None
    connected_since_ns: int | None
    sessions: int
    gaps: tuple[Gap, ...]


@dataclass(frozen=True, slots=True)
class StatusReport:
    daemon: DaemonStatus
    lnd: LndStatus
    stream: StreamStatus
    htlc_events: dict[str, int]  # by EventKind label, every kind present
    attempts: dict[str, int]  # by Outcome label, every outcome present
    forwards: int
    channels: int
    open_channels: int


def stream_gaps(conn: Connection, since_ns: int, until_ns: int) -> list[Gap]:
    """Gaps between consecutive stream sessions overlapping [since_ns, until_ns].

    A gap starts when a session ends and lasts until the next one starts; after
    the last session it is open (``to_ns`` None) unless that session is live.
    """
    rows = conn.execute(
        select(stream_sessions.c.started_ns, stream_sessions.c.ended_ns).order_by(
            stream_sessions.c.started_ns
        )
    ).all()
    gaps: list[Gap] = []
    for (_, ended), (next_start, _) in itertools.pairwise(rows):
        if ended is not None and next_start > ended:
            gaps.append(Gap(ended, next_start))
    if rows and rows[-1].ended_ns is not None:
        gaps.append(Gap(rows[-1].ended_ns, None))
    return [g for g in gaps if g.from_ns <= until_ns and (g.to_ns is None or g.to_ns >= since_ns)]


def observed_ns(conn: Connection, node_id: int, since_ns: int, until_ns: int) -> int:
    """How much of [since_ns, until_ns) an HTLC stream of ``node_id`` was connected: the
    union of its stream sessions inside the window (a session still open counts up to
    ``until_ns``). Time before the first session and after the last one ended is not
    observed: failures then went unseen.
    """
    s = stream_sessions
    rows = conn.execute(
        select(s.c.started_ns, s.c.ended_ns)
        .where(s.c.node_id == node_id, s.c.started_ns < until_ns)
        .where((s.c.ended_ns.is_(None)) | (s.c.ended_ns > since_ns))
        .order_by(s.c.started_ns)
    ).all()
    total = 0
    reach = since_ns  # observed time is counted up to here
    for started, ended in rows:
        start = max(started, reach)
        end = min(until_ns if ended is None else ended, until_ns)
        if end > start:
            total += end - start
            reach = end
    return total


@dataclass(frozen=True, slots=True)
class Liveness:
    daemon: DaemonStatus
    lnd: LndStatus
    stream: StreamStatus


def liveness(conn: Connection, now_ns: int) -> Liveness:
    """Daemon, node and stream state: small tables only, cheap enough to poll."""
    state = conn.execute(
        select(daemon_state, nodes.c.pubkey)
        .select_from(daemon_state.outerjoin(nodes, daemon_state.c.node_id == nodes.c.id))
        .order_by(daemon_state.c.heartbeat_ns.desc())
        .limit(1)
    ).first()
    running = False
    if state is not None and state.stopped_ns is None:
        grace_ns = (_HEARTBEAT_GRACE * state.heartbeat_interval_s + 2) * 1_000_000_000
        running = now_ns - state.heartbeat_ns <= grace_ns
    daemon = DaemonStatus(
        running=running,
        pid=state.pid if state else None,
        started_ns=state.started_ns if state else None,
        heartbeat_ns=state.heartbeat_ns if state else None,
        stopped_ns=state.stopped_ns if state else None,
        lnd_state=state.lnd_state if state else None,
        last_error=state.last_error if state else None,
    )
    lnd = LndStatus(
        alias=state.lnd_alias if state else None,
        version=state.lnd_version if state else None,
        network=state.lnd_network if state else None,
        pubkey=state.pubkey if state else None,
    )
    sessions = conn.scalar(select(func.count()).select_from(stream_sessions)) or 0
    open_since = conn.scalar(
        select(func.max(stream_sessions.c.started_ns)).where(stream_sessions.c.ended_ns.is_(None))
    )
    connected = running and state is not None and state.stream_state == "connected"
    stream = StreamStatus(
        connected=connected,
        state=state.stream_state if state else None,
        connected_since_ns=open_since if connected else None,
        sessions=int(sessions),
        gaps=tuple(stream_gaps(conn, 0, now_ns)),
    )
    return Liveness(daemon=daemon, lnd=lnd, stream=stream)


def status_report(conn: Connection, now_ns: int) -> StatusReport:
    """:func:`liveness` plus row counts (which scan the event table: not for polling)."""
    live = liveness(conn, now_ns)
    counts = {kind.label: 0 for kind in EventKind if kind is not EventKind.UNKNOWN}
    for kind, n in conn.execute(
        select(htlc_events.c.kind, func.count()).group_by(htlc_events.c.kind)
    ):
        try:
            label = EventKind(kind).label
        except ValueError:
            label = EventKind.UNKNOWN.label
        counts[label] = counts.get(label, 0) + int(n)
    attempts = {outcome.label: 0 for outcome in Outcome}
    for outcome, n in conn.execute(
        select(forward_attempts.c.outcome, func.count()).group_by(forward_attempts.c.outcome)
    ):
        attempts[Outcome(outcome).label] += int(n)
    n_forwards = conn.scalar(select(func.count()).select_from(forwards)) or 0
    n_channels, n_open = conn.execute(
        select(func.count(), func.count().filter(channels.c.closed_ns.is_(None)))
    ).one()
    return StatusReport(
        daemon=live.daemon,
        lnd=live.lnd,
        stream=live.stream,
        htlc_events=counts,
        attempts=attempts,
        forwards=int(n_forwards),
        channels=int(n_channels),
        open_channels=int(n_open or 0),
    )
