"""What the Prometheus endpoint needs from the store, as plain records.

Two kinds of reads, neither on a scrape (``lnflowd.metrics`` serves from memory):

* :func:`recording_totals`, once at start-up: the totals the per-batch counters
  continue from, so a restart does not look like a drop to zero. They are what the
  store still holds: raw events and attempts expire after their TTL, the failure
  rollups after ``rollups_days``; a restart after pruning therefore starts a counter
  lower than it stopped, which ``rate()`` and ``increase()`` treat as a counter reset.
* the periodic reads: :func:`forwards_after` (the ledger rows added since the last
  read, by id, so each read costs what was added), :func:`refresh_view` (latest
  snapshot, latest channel samples, stream state: small tables) and
  :func:`table_rows` (a count per table, run rarely).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select

from lnflow.analysis.model import AnalysisReport
from lnflow.domain import from_signed64
from lnflow.store.schema import (
    analysis_runs,
    channel_samples,
    channels,
    daemon_state,
    failure_rollups_hourly,
    forward_attempts,
    forwards,
    htlc_events,
    metadata,
    policy_changes,
    stream_sessions,
)
from lnflow.store.snapshots import latest_report

__all__ = [
    "ChannelView",
    "ForwardTotals",
    "RecordingTotals",
    "RefreshView",
    "forwards_after",
    "recording_totals",
    "refresh_view",
    "table_rows",
]


@dataclass(frozen=True, slots=True)
class RecordingTotals:
    """The store's totals for the counters the recording path increments."""

    #: (kind, event_type) -> events
    events: Mapping[tuple[int, int], int]
    #: Outcome number -> attempts (pending ones left out)
    attempts: Mapping[int, int]
    #: (outgoing channel, class) -> (failures, clusters, missed raw msat, missed dedup msat)
    failures: Mapping[tuple[int, int], tuple[int, int, int, int]]
    #: the newest stored event's timestamp (0: none)
    newest_event_ns: int


@dataclass(frozen=True, slots=True)
class ForwardTotals:
    """Ledger rows with ``id`` above a mark: per outgoing channel (forwards, fee msat)."""

    last_id: int
    by_channel: Mapping[int, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class ChannelView:
    chan_id: int
    peer_pubkey: str
    local_balance_sat: int
    remote_balance_sat: int
    active: bool


@dataclass(frozen=True, slots=True)
class RefreshView:
    """The small tables the gauges follow."""

    #: every channel the node ever had (open or closed): SCID -> peer pubkey
    peers: Mapping[int, str]
    #: the latest sample of each open channel
    channels: tuple[ChannelView, ...]
    report: AnalysisReport | None
    #: (run id, duration ms) of runs above the given id, oldest first
    new_runs: tuple[tuple[int, int], ...]
    stream_state: str | None
    sessions: int
    #: the policy engine's recorded changes by result (planned, applied, failed, ...);
    #: only a run in progress moves rows from planned to their result
    policy_changes: Mapping[str, int] = field(default_factory=dict)


def recording_totals(conn: Connection, node_id: int) -> RecordingTotals:
    e = htlc_events
    events = {
        (int(kind), int(etype)): int(n)
        for kind, etype, n in conn.execute(
            select(e.c.kind, e.c.event_type, func.count())
            .where(e.c.node_id == node_id)
            .group_by(e.c.kind, e.c.event_type)
        )
    }
    a = forward_attempts
    attempts = {
        int(outcome): int(n)
        for outcome, n in conn.execute(
            select(a.c.outcome, func.count())
            .where(a.c.node_id == node_id, a.c.outcome != 0)
            .group_by(a.c.outcome)
        )
    }
    r = failure_rollups_hourly
    failures = {
        (from_signed64(int(out)), int(cls)): (int(n), int(c), int(raw), int(dedup))
        for out, cls, n, c, raw, dedup in conn.execute(
            select(
                r.c.outgoing_channel_id,
                r.c.failure_class,
                func.sum(r.c.failures),
                func.sum(r.c.clusters),
                func.sum(r.c.missed_raw_msat),
                func.sum(r.c.missed_dedup_msat),
            )
            .where(r.c.node_id == node_id)
            .group_by(r.c.outgoing_channel_id, r.c.failure_class)
        )
    }
    newest = conn.scalar(
        select(e.c.timestamp_ns).where(e.c.node_id == node_id).order_by(e.c.id.desc()).limit(1)
    )
    return RecordingTotals(events, attempts, failures, int(newest or 0))


def forwards_after(conn: Connection, node_id: int, after_id: int) -> ForwardTotals:
    f = forwards
    rows = conn.execute(
        select(f.c.chan_id_out, func.count(), func.sum(f.c.fee_msat), func.max(f.c.id))
        .where(f.c.node_id == node_id, f.c.id > after_id)
        .group_by(f.c.chan_id_out)
    ).all()
    last = max((int(r[3]) for r in rows), default=after_id)
    return ForwardTotals(
        last, {from_signed64(int(out)): (int(n), int(fee)) for out, n, fee, _ in rows}
    )


def refresh_view(conn: Connection, node_id: int, runs_after: int) -> RefreshView:
    c = channels
    peers = {
        from_signed64(int(chan)): str(pub)
        for chan, pub in conn.execute(
            select(c.c.chan_id, c.c.remote_pubkey).where(c.c.node_id == node_id)
        )
    }
    s = channel_samples
    newest = (
        select(s.c.chan_id, func.max(s.c.ts_ns).label("ts"))
        .where(s.c.node_id == node_id)
        .group_by(s.c.chan_id)
        .subquery()
    )
    views = tuple(
        ChannelView(
            chan_id=from_signed64(int(chan)),
            peer_pubkey=peers.get(from_signed64(int(chan)), ""),
            local_balance_sat=int(local),
            remote_balance_sat=int(remote),
            active=bool(active),
        )
        for chan, local, remote, active in conn.execute(
            select(s.c.chan_id, s.c.local_balance_sat, s.c.remote_balance_sat, s.c.active)
            .join(newest, (newest.c.chan_id == s.c.chan_id) & (newest.c.ts == s.c.ts_ns))
            .join(c, (c.c.node_id == s.c.node_id) & (c.c.chan_id == s.c.chan_id))
            .where(s.c.node_id == node_id, c.c.closed_ns.is_(None))
            .order_by(s.c.chan_id)
        )
    )
    r = analysis_runs
    runs = tuple(
        (int(i), int(ms))
        for i, ms in conn.execute(
            select(r.c.id, r.c.duration_ms)
            .where(r.c.node_id == node_id, r.c.id > runs_after)
            .order_by(r.c.id)
        )
    )
    state = conn.scalar(
        select(daemon_state.c.stream_state)
        .where(daemon_state.c.node_id == node_id)
        .order_by(daemon_state.c.heartbeat_ns.desc())
        .limit(1)
    )
    sessions = conn.scalar(
        select(func.count())
        .select_from(stream_sessions)
        .where(stream_sessions.c.node_id == node_id)
    )
    p = policy_changes
    policy = {
        str(result): int(n)
        for result, n in conn.execute(
            select(p.c.result, func.count()).where(p.c.node_id == node_id).group_by(p.c.result)
        )
    }
    return RefreshView(
        peers=peers,
        channels=views,
        report=latest_report(conn, node_id),
        new_runs=runs,
        stream_state=None if state is None else str(state),
        sessions=int(sessions or 0),
        policy_changes=policy,
    )


def table_rows(conn: Connection) -> dict[str, int]:
    """Rows per table of the schema (a full count each: run it rarely)."""
    return {
        name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
        for name, table in sorted(metadata.tables.items())
    }
