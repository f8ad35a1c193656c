"""Status read with plain :mod:`sqlite3` (no SQLAlchemy import).

``lnflowctl status`` runs on every operator's glance at the node: it reads a few small
tables and the row counts kept as rows are written (``row_counts``, migration 0018),
through the standard library alone, so its time is flat in the store's size.
:mod:`lnflow.store.queries` hands SQLAlchemy connections' driver connections to the
same readers, so there is one reading code path.
"""

from __future__ import annotations

import itertools
import json
from typing import NamedTuple

from lnflow.kinds import EventKind, Gap, Outcome
from lnflow.store.engines import PlainDb, has_table

__all__ = [
    "DaemonStatus",
    "Delivery",
    "Gap",
    "Liveness",
    "LndStatus",
    "StatusReport",
    "StreamStatus",
    "last_deliveries",
    "liveness",
    "status_report",
    "stream_gaps",
]

# The daemon counts as alive while its heartbeat is younger than this many intervals.
_HEARTBEAT_GRACE = 3


class DaemonStatus(NamedTuple):
    running: bool
    pid: int | None
    started_ns: int | None
    heartbeat_ns: int | None
    stopped_ns: int | None
    lnd_state: str | None
    last_error: str | None


class LndStatus(NamedTuple):
    alias: str | None
    version: str | None
    network: str | None
    pubkey: str | None


class StreamStatus(NamedTuple):
    connected: bool
    state: str | None
    connected_since_ns: int | None
    sessions: int
    gaps: tuple[Gap, ...]


class Delivery(NamedTuple):
    """An alert's delivery to one target: its last try (``alert_deliveries``)."""

    target: str
    done_ns: int
    ok: bool
    attempts: int
    error: str | None


class StatusReport(NamedTuple):
    daemon: DaemonStatus
    lnd: LndStatus
    stream: StreamStatus
    htlc_events: dict[str, int]  # by EventKind label, every kind present
    attempts: dict[str, int]  # by Outcome label, every outcome present
    forwards: int
    channels: int
    open_channels: int
    metrics_listen: str | None  # where lnflowd serves /metrics; None: off
    # each alert target: the configured ones (lnflowd's last start) and any that has a
    # delivery recorded, with its latest delivery (None: none yet)
    alert_targets: dict[str, Delivery | None]


class Liveness(NamedTuple):
    daemon: DaemonStatus
    lnd: LndStatus
    stream: StreamStatus


def stream_gaps(db: PlainDb, since_ns: int, until_ns: int) -> list[Gap]:
    """Gaps between consecutive stream sessions overlapping [since_ns, until_ns].

    A gap starts when a session ends and lasts until the next one starts; after
    the last session it is open (``to_ns`` None) unless that session is live.
    """
    rows = db.execute(
        "SELECT started_ns, ended_ns FROM stream_sessions ORDER BY started_ns"
    ).fetchall()
    gaps: list[Gap] = []
    for (_, ended), (next_start, _) in itertools.pairwise(rows):
        if ended is not None and next_start > ended:
            gaps.append(Gap(ended, next_start))
    if rows and rows[-1][1] is not None:
        gaps.append(Gap(rows[-1][1], None))
    return [g for g in gaps if g.from_ns <= until_ns and (g.to_ns is None or g.to_ns >= since_ns)]


_STATE = (
    "SELECT d.pid, d.started_ns, d.heartbeat_ns, d.heartbeat_interval_s, d.stopped_ns,"
    " d.lnd_state, d.last_error, d.lnd_alias, d.lnd_version, d.lnd_network, d.stream_state,"
    " n.pubkey FROM daemon_state AS d LEFT OUTER JOIN nodes AS n ON d.node_id = n.id"
    " ORDER BY d.heartbeat_ns DESC LIMIT 1"
)


def liveness(db: PlainDb, now_ns: int) -> Liveness:
    """Daemon, node and stream state: small tables only, cheap enough to poll."""
    state = db.execute(_STATE).fetchone()
    if state is None:
        state = (None,) * 12
    (pid, started, heartbeat, interval, stopped, lnd_state, last_error) = state[:7]
    alias, version, network, stream_state, pubkey = state[7:]
    running = False
    if heartbeat is not None and stopped is None:
        grace_ns = (_HEARTBEAT_GRACE * interval + 2) * 1_000_000_000
        running = now_ns - heartbeat <= grace_ns
    daemon = DaemonStatus(
        running=running,
        pid=pid,
        started_ns=started,
        heartbeat_ns=heartbeat,
        stopped_ns=stopped,
        lnd_state=lnd_state,
        last_error=last_error,
    )
    lnd = LndStatus(alias=alias, version=version, network=network, pubkey=pubkey)
    sessions, open_since = db.execute(
        "SELECT count(*), max(started_ns) FILTER (WHERE ended_ns IS NULL) FROM stream_sessions"
    ).fetchone()
    connected = running and stream_state == "connected"
    stream = StreamStatus(
        connected=connected,
        state=stream_state,
        connected_since_ns=open_since if connected else None,
        sessions=int(sessions or 0),
        gaps=tuple(stream_gaps(db, 0, now_ns)),
    )
    return Liveness(daemon=daemon, lnd=lnd, stream=stream)


# A store from before 0018 (lnflowd not started since the upgrade): counted row by row.
_SCANNED_COUNTS = (
    "SELECT 'htlc_events', kind, count(*) FROM htlc_events GROUP BY kind"
    " UNION ALL SELECT 'forward_attempts', outcome, count(*) FROM forward_attempts"
    " GROUP BY outcome UNION ALL SELECT 'forwards', 0, count(*) FROM forwards"
)


def _counts_sql(db: PlainDb) -> str:
    kept = has_table(db, "row_counts")
    return "SELECT table_name, value, n FROM row_counts" if kept else _SCANNED_COUNTS


def status_report(db: PlainDb, now_ns: int) -> StatusReport:
    """:func:`liveness` plus row counts, read from ``row_counts`` (kept as rows are
    written): a few rows whatever the store holds."""
    live = liveness(db, now_ns)
    counts = {kind.label: 0 for kind in EventKind if kind is not EventKind.UNKNOWN}
    attempts = {outcome.label: 0 for outcome in Outcome}
    n_forwards = 0
    for table, value, n in db.execute(_counts_sql(db)):
        if not n:
            continue
        if table == "htlc_events":
            try:
                label = EventKind(value).label
            except ValueError:
                label = EventKind.UNKNOWN.label
            counts[label] = counts.get(label, 0) + int(n)
        elif table == "forward_attempts":
            attempts[Outcome(value).label] += int(n)
        elif table == "forwards":
            n_forwards += int(n)
    n_channels, n_open = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE closed_ns IS NULL) FROM channels"
    ).fetchone()
    listen, targets = _alerting(db)
    return StatusReport(
        daemon=live.daemon,
        lnd=live.lnd,
        stream=live.stream,
        htlc_events=counts,
        attempts=attempts,
        forwards=n_forwards,
        channels=int(n_channels),
        open_channels=int(n_open or 0),
        metrics_listen=listen,
        alert_targets=targets,
    )


def last_deliveries(db: PlainDb) -> dict[str, Delivery]:
    """Each alert target's latest delivery, by target name."""
    rows = db.execute(
        "SELECT target, done_ns, ok, attempts, error FROM alert_deliveries"
        " WHERE id IN (SELECT max(id) FROM alert_deliveries GROUP BY target) ORDER BY target"
    )
    return {
        target: Delivery(target, done_ns, bool(ok), attempts, error)
        for target, done_ns, ok, attempts, error in rows
    }


def _alerting(db: PlainDb) -> tuple[str | None, dict[str, Delivery | None]]:
    """Where /metrics is served and the alert targets' last deliveries (migration 0016;
    a store before it has neither)."""
    if not has_table(db, "alert_deliveries"):
        return None, {}
    state = db.execute(
        "SELECT metrics_listen, alert_targets FROM daemon_state ORDER BY heartbeat_ns DESC LIMIT 1"
    ).fetchone()
    targets: dict[str, Delivery | None] = {}
    if state is not None and state[1]:
        try:
            names = json.loads(state[1])
        except ValueError:
            names = []
        targets = {str(n): None for n in names if isinstance(n, str)}
    targets.update(last_deliveries(db))
    return (state[0] if state is not None else None), dict(sorted(targets.items()))
