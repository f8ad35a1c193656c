"""Status read over a plain DB-API connection (sqlite3; psycopg on PostgreSQL): no SQLAlchemy.

``lnflowctl status`` runs on every operator's glance at the node: it reads a few small
tables and the row counts kept per node as rows are written (``row_counts``, migrations
0018 and 0019), through the standard library alone, so its time is flat in the store's
size.
:mod:`lnflow.store.queries` hands SQLAlchemy connections' driver connections to the
same readers, so there is one reading code path.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, NamedTuple

from lnflow.errors import ConfigError
from lnflow.kinds import EventKind, Gap, Outcome
from lnflow.store.engines import PlainDb, column_names, has_table

__all__ = [
    "DaemonStatus",
    "Delivery",
    "Gap",
    "Liveness",
    "LndStatus",
    "NodeRow",
    "StatusReport",
    "StreamStatus",
    "last_deliveries",
    "list_nodes",
    "liveness",
    "pick_node",
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


class NodeRow(NamedTuple):
    """A node the store records (``nodes``): the alias is lnd's GetInfo alias, hostile text."""

    id: int
    pubkey: str
    alias: str
    network: str


class Liveness(NamedTuple):
    daemon: DaemonStatus
    lnd: LndStatus
    stream: StreamStatus


def list_nodes(db: PlainDb) -> list[NodeRow]:
    """The nodes the store records, in the order they were first seen."""
    return [
        NodeRow(int(i), str(p), str(a or ""), str(n or ""))
        for i, p, a, n in db.execute("SELECT id, pubkey, alias, network FROM nodes ORDER BY id")
    ]


def _named(nodes: list[NodeRow]) -> str:
    return ", ".join(f"{n.alias or '(no alias)'} ({n.pubkey})" for n in nodes)


def pick_node(db: PlainDb, wanted: str | None, store: object) -> NodeRow | None:
    """The node ``--node`` names (an alias or a pubkey), or the only one when none is
    named; None when the store records no node yet. :class:`~lnflow.errors.ConfigError`
    when several match, or none is named and the store holds several, or none matches."""
    nodes = list_nodes(db)
    if wanted is None:
        if len(nodes) > 1:
            raise ConfigError(
                f"the store {store} records {len(nodes)} nodes: pass --node with an alias "
                f"or a pubkey of {_named(nodes)}"
            )
        return nodes[0] if nodes else None
    key = wanted.strip()
    found = [n for n in nodes if n.pubkey.lower() == key.lower()] or [
        n for n in nodes if n.alias == key
    ]
    if len(found) > 1:
        raise ConfigError(
            f"--node '{wanted}' names {len(found)} nodes of the store {store}: "
            f"pass the pubkey of one of {_named(found)}"
        )
    if not found:
        raise ConfigError(
            f"--node '{wanted}' is no node of the store {store}: `lnflowctl nodes` lists "
            "the nodes it records (give an alias or a pubkey)"
        )
    return found[0]


def stream_gaps(db: PlainDb, since_ns: int, until_ns: int, node_id: int | None = None) -> list[Gap]:
    """Gaps between consecutive stream sessions of ``node_id`` (None: of every node, a
    store of one node) overlapping [since_ns, until_ns].

    A gap starts when a session ends and lasts until the next one starts; after
    the last session it is open (``to_ns`` None) unless that session is live.
    """
    if node_id is None:
        rows = db.execute(
            "SELECT started_ns, ended_ns FROM stream_sessions ORDER BY started_ns"
        ).fetchall()
    else:
        rows = db.execute(
            "SELECT started_ns, ended_ns FROM stream_sessions WHERE node_id = ?"
            " ORDER BY started_ns",
            (node_id,),
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
)
_NEWEST = " ORDER BY d.heartbeat_ns DESC LIMIT 1"
# a node's daemon: the row naming it, or in a store of one node one that does not know
# its node yet (lnd not reached since the daemon started)
_OF_NODE = " WHERE d.node_id = ? OR (d.node_id IS NULL AND (SELECT count(*) FROM nodes) <= 1)"


def _daemon_row(db: PlainDb, columns: str, node_id: int | None) -> Any:
    sql = columns + (_NEWEST if node_id is None else _OF_NODE + _NEWEST)
    return db.execute(sql, () if node_id is None else (node_id,)).fetchone()


def liveness(db: PlainDb, now_ns: int, node_id: int | None = None) -> Liveness:
    """Daemon, node and stream state of ``node_id`` (None: the daemon that ran last, a
    store of one node): small tables only, cheap enough to poll."""
    state = _daemon_row(db, _STATE, node_id)
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
        + ("" if node_id is None else " WHERE node_id = ?"),
        () if node_id is None else (node_id,),
    ).fetchone()
    connected = running and stream_state == "connected"
    stream = StreamStatus(
        connected=connected,
        state=stream_state,
        connected_since_ns=open_since if connected else None,
        sessions=int(sessions or 0),
        gaps=tuple(stream_gaps(db, 0, now_ns, node_id)),
    )
    return Liveness(daemon=daemon, lnd=lnd, stream=stream)


# A store from before 0018 (lnflowd not started since the upgrade): counted row by row.
_SCANNED_COUNTS = (
    "SELECT 'htlc_events', kind, count(*) FROM htlc_events GROUP BY kind"
    " UNION ALL SELECT 'forward_attempts', outcome, count(*) FROM forward_attempts"
    " GROUP BY outcome UNION ALL SELECT 'forwards', 0, count(*) FROM forwards"
)


# One node of several in a store not upgraded to 0019 (its ``row_counts`` are the
# store's): the node's rows are counted through the indexes that lead with node_id.
_NODE_COUNTS = (
    "SELECT 'htlc_events', kind, count(*) FROM htlc_events WHERE node_id = ? GROUP BY kind"
    " UNION ALL SELECT 'forward_attempts', outcome, count(*) FROM forward_attempts"
    " WHERE node_id = ? GROUP BY outcome"
    " UNION ALL SELECT 'forwards', 0, count(*) FROM forwards WHERE node_id = ?"
)


def _counts_sql(db: PlainDb, node_id: int | None) -> tuple[str, tuple[int, ...]]:
    columns = column_names(db, "row_counts")
    kept = "SELECT table_name, value, n FROM row_counts"
    if "node_id" in columns:  # 0019: kept per node
        return (kept, ()) if node_id is None else (kept + " WHERE node_id = ?", (node_id,))
    if not columns:
        return _SCANNED_COUNTS, ()
    if node_id is not None and db.execute("SELECT count(*) FROM nodes").fetchone()[0] > 1:
        return _NODE_COUNTS, (node_id, node_id, node_id)
    return kept, ()


def status_report(db: PlainDb, now_ns: int, node_id: int | None = None) -> StatusReport:
    """:func:`liveness` plus row counts of ``node_id`` (None: the store's), read from
    ``row_counts`` (kept per node as rows are written): a few rows whatever the store
    holds."""
    live = liveness(db, now_ns, node_id)
    counts = {kind.label: 0 for kind in EventKind if kind is not EventKind.UNKNOWN}
    attempts = {outcome.label: 0 for outcome in Outcome}
    n_forwards = 0
    for table, value, n in db.execute(*_counts_sql(db, node_id)):
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
        + ("" if node_id is None else " WHERE node_id = ?"),
        () if node_id is None else (node_id,),
    ).fetchone()
    listen, targets = _alerting(db, node_id)
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


def last_deliveries(db: PlainDb, node_id: int | None = None) -> dict[str, Delivery]:
    """Each alert target's latest delivery (of ``node_id``'s alerts if given), by name."""
    of_node = "" if node_id is None else " WHERE node_id = ?"
    rows = db.execute(
        "SELECT target, done_ns, ok, attempts, error FROM alert_deliveries"
        f" WHERE id IN (SELECT max(id) FROM alert_deliveries{of_node} GROUP BY target)"
        " ORDER BY target",
        () if node_id is None else (node_id,),
    )
    return {
        target: Delivery(target, done_ns, bool(ok), attempts, error)
        for target, done_ns, ok, attempts, error in rows
    }


def _alerting(db: PlainDb, node_id: int | None) -> tuple[str | None, dict[str, Delivery | None]]:
    """Where /metrics is served and the alert targets' last deliveries (migration 0016;
    a store before it has neither)."""
    if not has_table(db, "alert_deliveries"):
        return None, {}
    state = _daemon_row(
        db, "SELECT d.metrics_listen, d.alert_targets FROM daemon_state AS d", node_id
    )
    targets: dict[str, Delivery | None] = {}
    if state is not None and state[1]:
        try:
            names = json.loads(state[1])
        except ValueError:
            names = []
        targets = {str(n): None for n in names if isinstance(n, str)}
    targets.update(last_deliveries(db, node_id))
    return (state[0] if state is not None else None), dict(sorted(targets.items()))
