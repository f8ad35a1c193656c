"""Recording a batch of HTLC events: raw rows, attempts, clusters and rollups at once.

Runs on the store thread. One transaction per batch, so the raw events and
everything derived from them are committed together or not at all. Only
events the store did not have yet reach the sans-I/O cores
(:class:`~lnflow.attempts.AttemptTracker`, :class:`~lnflow.clusters.ClusterAssigner`),
so replays after a reconnect can never count a failure twice.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)

from lnflow.attempts import Attempt, AttemptTracker, LiveAttempt
from lnflow.clusters import ClusterAssigner, ClusterUpdate
from lnflow.domain import (
    FailureClass,
    HtlcEvent,
    Outcome,
    from_signed64,
    to_signed64,
    wrap_signed64,
)
from lnflow.store.db import (
    BulkStatement,
    dialect_insert,
    insert_ignoring_duplicates,
    upsert_adding,
)
from lnflow.store.engines import lock_cluster_numbering
from lnflow.store.rollups import (
    ChannelRollupUpserts,
    FailureChannelBatch,
    failure_channel_upsert,
)
from lnflow.store.schema import (
    channel_refs,
    failure_channel_6h,
    failure_channel_daily,
    failure_channel_hourly,
    failure_channel_weekly,
    failure_clusters,
    failure_rollups_hourly,
    forward_attempts,
    htlc_events,
    row_counts,
)
from lnflow.store.writer import NS_PER_HOUR

__all__ = ["BatchObserver", "IngestResult", "Ingestor"]

_DECIDED = (int(Outcome.SETTLED), int(Outcome.FAILED_LOCAL), int(Outcome.FAILED_DOWNSTREAM))
assert tuple(range(_DECIDED[0], _DECIDED[-1] + 1)) == _DECIDED
_FAILED_LOCAL = Outcome.FAILED_LOCAL


@dataclass(frozen=True, slots=True)
class IngestResult:
    new_events: int
    attempts_changed: int
    local_failures: int
    #: new events per (kind, event_type)
    events_by_type: Mapping[tuple[int, int], int] = field(default_factory=dict)
    #: the failure rollup rows this batch added: (hour, outgoing channel, incoming
    #: channel, class) -> [failures, clusters, missed raw msat, missed dedup msat]
    failure_rollup: Mapping[tuple[int, int, int, int], Sequence[int]] = field(default_factory=dict)
    #: the newest event timestamp of the batch, replays included (0: none)
    newest_event_ns: int = 0


#: called on the store thread after each committed batch with its result and write seconds
BatchObserver = Callable[[IngestResult, float], None]
_KIND_TYPE = attrgetter("kind", "event_type")
_TIMESTAMP = attrgetter("timestamp_ns")


class Ingestor:
    """Owns the pairing and clustering state of one node's recording."""

    def __init__(
        self,
        engine: Engine,
        node_id: int,
        *,
        attempt_timeout_ns: int,
        attempt_linger_ns: int,
        dedup_window_ns: int,
        cluster_max_span_ns: int | None,
    ) -> None:
        self._engine = engine
        self._node_id = node_id
        self.tracker = AttemptTracker(attempt_timeout_ns, attempt_linger_ns)
        self.observer: BatchObserver | None = None
        with engine.connect() as conn:
            last_cluster = conn.scalar(select(func.max(failure_clusters.c.id))) or 0
            self.clusters = ClusterAssigner(
                dedup_window_ns, first_id=last_cluster + 1, max_span_ns=cluster_max_span_ns
            )
            _reopen_clusters(conn, node_id, self.clusters, dedup_window_ns)
        self._insert_events = BulkStatement(
            engine, insert_ignoring_duplicates(engine, htlc_events), _EVENT_COLUMNS
        )
        # SCID -> channel_refs.id of this node; None: (re)load before the next batch
        self._refs: dict[int, int] | None = None
        self._upsert_attempt = BulkStatement(engine, self._attempt_upsert(engine), _ATTEMPT_COLUMNS)
        self._upsert_cluster = BulkStatement(engine, self._cluster_upsert(engine), _CLUSTER_COLUMNS)
        self._add_failure_rollup = BulkStatement(
            engine,
            upsert_adding(
                engine,
                failure_rollups_hourly,
                ("failures", "clusters", "missed_raw_msat", "missed_dedup_msat"),
            ),
            _ROLLUP_COLUMNS,
        )
        self._add_row_counts = BulkStatement(
            engine,
            upsert_adding(engine, row_counts, ("n",)),
            ("node_id", "table_name", "value", "n"),
        )
        self._add_per_channel = ChannelRollupUpserts(
            engine,
            failure_channel_upsert,
            (
                failure_channel_hourly,
                failure_channel_6h,
                failure_channel_daily,
                failure_channel_weekly,
            ),
        )

    # -- statements --------------------------------------------------------------------

    @staticmethod
    def _attempt_upsert(engine: Engine) -> Any:
        """Merge a newer snapshot into a stored attempt; the first decided outcome wins."""
        t = forward_attempts
        stmt = dialect_insert(engine, t)
        ex = stmt.excluded
        # SETTLED, FAILED_LOCAL, FAILED_DOWNSTREAM (a range: IN cannot be used with executemany)
        # a rejection stands too, unless a late FORWARD proved the HTLC left us
        decided = or_(
            t.c.outcome.between(_DECIDED[0], _DECIDED[-1]),
            and_(
                t.c.outcome == literal_column(str(int(Outcome.REJECTED_LOCAL))),
                ex.outcome != literal_column(str(int(Outcome.FAILED_DOWNSTREAM))),
            ),
        )

        def keep_if_decided(col: str) -> Any:
            return case((decided, t.c[col]), else_=ex[col])

        return stmt.on_conflict_do_update(
            index_elements=["node_id", "incoming_chan_ref", "incoming_htlc_id"],
            set_={
                "outcome": keep_if_decided("outcome"),
                "resolved_ns": keep_if_decided("resolved_ns"),
                "missed_fee_msat": keep_if_decided("missed_fee_msat"),
                "first_seen_ns": case(
                    (ex.first_seen_ns < t.c.first_seen_ns, ex.first_seen_ns),
                    else_=t.c.first_seen_ns,
                ),
                "outgoing_chan_ref": case(
                    (t.c.outgoing_chan_ref == 0, ex.outgoing_chan_ref),
                    else_=t.c.outgoing_chan_ref,
                ),
                "outgoing_htlc_id": case(
                    (t.c.outgoing_chan_ref == 0, ex.outgoing_htlc_id),
                    else_=t.c.outgoing_htlc_id,
                ),
                **{
                    col: func.coalesce(t.c[col], ex[col])
                    for col in (
                        "incoming_amt_msat",
                        "outgoing_amt_msat",
                        "failure_class",
                        "wire_failure",
                        "failure_detail",
                        "final_settled",
                        "cluster_id",
                    )
                },
            },
        )

    @staticmethod
    def _cluster_upsert(engine: Engine) -> Any:
        t = failure_clusters
        stmt = dialect_insert(engine, t)
        ex = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "last_ns": case((ex.last_ns > t.c.last_ns, ex.last_ns), else_=t.c.last_ns),
                "members": ex.members,
                "missed_fee_msat": ex.missed_fee_msat,
            },
            where=t.c.node_id == ex.node_id,  # never another node's cluster
        )

    # -- recording ---------------------------------------------------------------------

    def expire_stale_attempts(self, now_ns: int) -> int:
        """At start: attempts left pending by a previous run can no longer be paired."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(forward_attempts)
                .where(forward_attempts.c.node_id == self._node_id)
                .where(forward_attempts.c.outcome == int(Outcome.PENDING))
                .values(outcome=int(Outcome.UNRESOLVED), resolved_ns=now_ns)
            )
            return int(result.rowcount or 0)

    def ingest(
        self, session_id: int | None, events: Sequence[HtlcEvent], now_ns: int
    ) -> IngestResult:
        """Store a batch and everything derived from it, in one transaction.

        An empty batch (``session_id`` may then be None) only expires attempts.
        When the transaction fails, the pairing and clustering state is put back as
        it was, so a retry of the same batch stores what a first success would have.
        """
        started = time.perf_counter()
        self.tracker.savepoint()
        clusters = copy.deepcopy(self.clusters)  # small: the channels failing lately
        try:
            result = self._ingest(session_id, events, now_ns)
        except BaseException:
            self._refs = None  # refs added by the failed transaction were rolled back
            self.tracker.rollback()
            self.clusters = clusters
            raise
        if self.observer is not None:
            self.observer(result, time.perf_counter() - started)
        return result

    def _ingest(
        self, session_id: int | None, events: Sequence[HtlcEvent], now_ns: int
    ) -> IngestResult:
        node_id = self._node_id
        with self._engine.begin() as conn:
            _fit_page_cache(conn, len(events))
            new_events = self._store_events(conn, session_id, events)
            events_by_type = Counter(map(_KIND_TYPE, new_events))
            if events_by_type:
                self._count_events(conn, events_by_type)
            # cluster ids are the store's: past any another node's daemon stored since
            # (numbered one writer at a time until this batch commits; the events above,
            # most of a batch's writing, go in while another node's batch holds it)
            lock_cluster_numbering(conn)
            stored = conn.scalar(select(func.max(failure_clusters.c.id))) or 0
            self.clusters.skip_to(stored + 1)
            live: dict[tuple[int, int], LiveAttempt] = {}  # fed attempts, snapshot once below
            cluster_of: dict[tuple[int, int], int] = {}
            clusters: dict[int, dict[str, Any]] = {}
            rollup: dict[tuple[int, int, int, int], list[int]] = {}
            per_channel = FailureChannelBatch()
            feed = self.tracker.feed_live

            def count_local_failure(att: Attempt, ts_ns: int) -> None:
                missed = att.missed_fee_msat or 0  # unknown: nothing to add
                update_ = self.clusters.assign(
                    att.outgoing_channel_id,
                    att.incoming_channel_id,
                    att.outgoing_amt_msat or 0,
                    missed,
                    ts_ns,
                )
                cluster_of[att.key] = update_.cluster_id
                self._note_cluster(clusters, update_, att, ts_ns)
                cls = int(att.failure_class or 0)
                key = (ts_ns // NS_PER_HOUR, att.outgoing_channel_id, att.incoming_channel_id, cls)
                acc = rollup.setdefault(key, [0, 0, 0, 0])
                acc[0] += 1
                acc[1] += 1 if update_.is_new else 0
                acc[2] += missed
                acc[3] += update_.missed_delta_msat
                per_channel.add(
                    ts_ns,
                    att.outgoing_channel_id,
                    att.incoming_channel_id,
                    cls,
                    missed,
                    update_.is_new,
                    update_.missed_delta_msat,
                    att.outgoing_amt_msat is None,
                )

            for ev in new_events:
                track = feed(ev)
                if track is None:
                    continue
                live[track.key] = track
                # a local failure counts once, when an event decides it
                if self.tracker.decided and track.outcome() is _FAILED_LOCAL:
                    count_local_failure(track.snapshot(), ev.timestamp_ns)
            # each attempt as the batch's events left it, in the order they came; an
            # attempt expire() gives up keeps its place, with expire()'s snapshot (no
            # track changes between the two but by expire(): the tracks are read below)
            changed: dict[tuple[int, int], LiveAttempt | Attempt] = dict(live)
            malformed = []
            for att in self.tracker.expire(now_ns):
                changed[att.key] = att
                if att.outcome is _FAILED_LOCAL:  # a malformed onion
                    malformed.append(att)
            # A lone FINAL whose other events came before a daemon restart: the store
            # has its outcome already (and keeps it), so it is no new failure.
            for att in self._undecided(conn, malformed):
                count_local_failure(att, att.resolved_ns or att.first_seen_ns)
            self.clusters.expire()  # by event time: never the wall clock (DESIGN §4)
            # every channel an attempt or cluster names (a cluster's is its attempts')
            ref = self._chan_refs(conn, changed.values()) if changed else {}
            # one row per key below: an upsert of a batch may change a row only once
            if changed:
                self._upsert_attempt.execute(
                    conn,
                    [
                        _live_row(node_id, a, ref, cluster_of.get(k))
                        if type(a) is _LIVE
                        else _attempt_row(node_id, a, ref, cluster_of.get(k))  # type: ignore[arg-type]
                        for k, a in changed.items()
                    ],
                )
            if clusters:
                for row in clusters.values():
                    row["outgoing_chan_ref"] = ref[row.pop("outgoing_channel_id")]
                self._upsert_cluster.execute_mappings(conn, list(clusters.values()))
            if rollup:
                self._add_failure_rollup.execute(
                    conn,
                    [
                        (
                            node_id,
                            hour,
                            to_signed64(out),
                            to_signed64(inc),
                            cls,
                            n,
                            c,
                            raw,
                            dedup,
                        )
                        for (hour, out, inc, cls), (n, c, raw, dedup) in rollup.items()
                    ],
                )
                self._add_per_channel.write(conn, per_channel.rows(node_id))
            return IngestResult(
                new_events=len(new_events),
                attempts_changed=len(changed),
                local_failures=len(cluster_of),
                events_by_type=events_by_type,
                failure_rollup=rollup,
                newest_event_ns=max(map(_TIMESTAMP, events), default=0),
            )

    def _count_events(self, conn: Connection, by_type: Counter[tuple[int, int]]) -> None:
        """Add the batch's new events to ``row_counts`` (their deletes count by trigger)."""
        by_kind: Counter[int] = Counter()
        for (kind, _), n in by_type.items():
            by_kind[int(kind)] += n
        self._add_row_counts.execute(
            conn, [(self._node_id, "htlc_events", k, n) for k, n in by_kind.items()]
        )

    def _undecided(self, conn: Connection, attempts: list[Attempt]) -> list[Attempt]:
        """The attempts the store holds no decided outcome for (few: malformed onions)."""
        if not attempts:
            return []
        ref = self._chan_refs(conn, attempts)
        t = forward_attempts
        decided: set[tuple[int, int]] = set()
        for first in range(0, len(attempts), 200):  # well below SQLite's expression depth
            # Each term names the whole key, node first: SQLite then seeks each one on
            # the key index (MULTI-INDEX OR). With the node named once outside the OR
            # it walked the node's every attempt once there were three or more: ~1 s a
            # batch on a store of 2 M attempts (bench/README.md).
            keys = [
                and_(
                    t.c.node_id == self._node_id,
                    t.c.incoming_chan_ref == ref[a.incoming_channel_id],
                    t.c.incoming_htlc_id == _s64(a.incoming_htlc_id),
                )
                for a in attempts[first : first + 200]
            ]
            decided.update(
                (chan_ref, htlc)
                for chan_ref, htlc, outcome in conn.execute(
                    select(t.c.incoming_chan_ref, t.c.incoming_htlc_id, t.c.outcome).where(
                        or_(*keys)
                    )
                )
                if outcome in _DECIDED or outcome == int(Outcome.REJECTED_LOCAL)
            )
        return [
            a
            for a in attempts
            if (ref[a.incoming_channel_id], _s64(a.incoming_htlc_id)) not in decided
        ]

    def _store_events(
        self, conn: Connection, session_id: int | None, events: Sequence[HtlcEvent]
    ) -> list[HtlcEvent]:
        """Insert the batch, skipping replays; returns the events that were new."""
        if not events or session_id is None:
            return []
        node = self._node_id
        ref = self._chan_refs(conn, events)
        rows = [
            (
                node,
                session_id,
                ev.timestamp_ns,
                int(ev.kind),
                ev.event_type,
                ref[ev.incoming_channel_id],
                _s64(ev.incoming_htlc_id),
                ref[ev.outgoing_channel_id],
                _s64(ev.outgoing_htlc_id),
                ev.incoming_amt_msat,
                ev.outgoing_amt_msat,
                ev.incoming_timelock,
                ev.outgoing_timelock,
                ev.wire_failure,
                ev.failure_detail,
                ev.failure_string,
                ev.settled,
                ev.offchain,
            )
            for ev in events
        ]
        newest_before = conn.scalar(select(func.max(htlc_events.c.id))) or 0
        if self._insert_events.execute(conn, rows) == len(rows):
            return list(events)
        # Some were replays: the new ones are the rows this batch added (ids above the
        # previous maximum; ids only grow).
        key_cols = (
            htlc_events.c.timestamp_ns,
            htlc_events.c.kind,
            htlc_events.c.incoming_chan_ref,
            htlc_events.c.incoming_htlc_id,
            htlc_events.c.outgoing_chan_ref,
            htlc_events.c.outgoing_htlc_id,
        )
        # with the timestamp, so two own payments' first-hop failures (same circuit key,
        # both stored) are both new, and of a replay inside the batch only the stored one
        # (another node's daemon may insert at the same time: only this node's rows)
        inserted = Counter(
            map(
                tuple,
                conn.execute(
                    select(*key_cols).where(
                        htlc_events.c.id > newest_before, htlc_events.c.node_id == node
                    )
                ),
            )
        )
        fresh = []
        for ev, row in zip(events, rows, strict=True):
            key = (row[2], row[3], *row[5:9])  # time, kind and the four circuit ids
            if inserted[key] > 0:
                inserted[key] -= 1  # a duplicate inside the batch counts once
                fresh.append(ev)
        return fresh

    def _chan_refs(self, conn: Connection, named: Collection[_NamesChannels]) -> dict[int, int]:
        """SCID -> channel_refs.id for every channel ``named`` (new ones are added)."""
        refs = self._refs
        if refs is None:
            t = channel_refs
            refs = {0: 0}  # lnd's "no channel on this side" stays 0
            refs.update(
                (from_signed64(chan), ref)
                for ref, chan in conn.execute(
                    select(t.c.id, t.c.chan_id).where(t.c.node_id == self._node_id)
                )
            )
            self._refs = refs
        missing = {x.incoming_channel_id for x in named if x.incoming_channel_id not in refs}
        missing.update(x.outgoing_channel_id for x in named if x.outgoing_channel_id not in refs)
        for chan in sorted(missing):
            key = conn.execute(
                insert(channel_refs).values(node_id=self._node_id, chan_id=_s64(chan))
            ).inserted_primary_key
            assert key is not None
            refs[chan] = int(key[0])
        return refs

    def _note_cluster(
        self, clusters: dict[int, dict[str, Any]], u: ClusterUpdate, att: Attempt, ts_ns: int
    ) -> None:
        row = clusters.get(u.cluster_id)
        if row is None:
            clusters[u.cluster_id] = {
                "id": u.cluster_id,
                "node_id": self._node_id,
                "outgoing_channel_id": att.outgoing_channel_id,  # its ref when written
                "first_ns": ts_ns,
                "last_ns": ts_ns,
                "members": u.members,
                "missed_fee_msat": u.missed_fee_msat,
            }
        else:
            row["first_ns"] = min(row["first_ns"], ts_ns)
            row["last_ns"] = max(row["last_ns"], ts_ns)
            row["members"] = u.members
            row["missed_fee_msat"] = u.missed_fee_msat


#: SQLite's page cache a batch needs, KiB per event of the batch. A batch writes pages
#: all over the replay key and the failed-amount indexes: 2 000 events of the
#: simulator's traffic dirtied ~850 pages (3.4 MB) on a store of 600 000 events. Past
#: the default cache (2 000 KiB) SQLite wrote dirty pages to the WAL before the commit
#: and wrote them again at the commit, then read them back: 700 000 events took 1.48 M
#: write and 0.44 M read calls with the default cache, 0.82 M and 0.14 M with this one,
#: and 2.0 µs less CPU per event (bench/README.md: "a batch's pages in the cache").
CACHE_KIB_PER_EVENT = 3
_DEFAULT_CACHE_KIB = 2_000  # SQLite's default cache_size, -2000


def _fit_page_cache(conn: Connection, events: int) -> None:
    """Grow the connection's page cache (SQLite) to hold a batch of ``events``' pages.

    Only a connection that wrote a batch gets the larger cache, as large as the largest
    batch it wrote: the pool keeps one connection, which the store thread's batches
    take, and closes the others when given back, so a connection the analysis or a job
    opened beside it keeps SQLite's default. Never shrinks (the next batch reuses it).
    """
    if conn.dialect.name != "sqlite":
        return
    want = CACHE_KIB_PER_EVENT * events
    if want > conn.info.get("lnflow_cache_kib", _DEFAULT_CACHE_KIB):
        conn.exec_driver_sql(f"PRAGMA cache_size=-{want}")
        conn.info["lnflow_cache_kib"] = want


def _reopen_clusters(
    conn: Connection, node_id: int, clusters: ClusterAssigner, window_ns: int
) -> int:
    """Reload the clusters a previous run left open, so a restart splits no demand.

    The clusters' clock is the newest local failure recorded (the per-channel hourly
    rollups hold each hour's latest); a channel's open cluster is its newest one, open
    when it had a failure within the window before that clock. Its members give back the
    incoming channels and outgoing amounts the membership test compares. Returns how many
    were reopened.
    """
    h = failure_channel_hourly
    newest_hour = conn.scalar(select(func.max(h.c.hour)).where(h.c.node_id == node_id))
    if newest_hour is None:
        return 0
    latest = conn.scalar(
        select(func.max(h.c.last_ns)).where(h.c.node_id == node_id, h.c.hour == newest_hour)
    )
    if latest is None:
        return 0
    clusters.advance(int(latest))
    cutoff = int(latest) - window_ns
    recent = conn.scalars(
        select(h.c.outgoing_channel_id)
        .distinct()
        .where(h.c.node_id == node_id)
        .where(h.c.hour >= cutoff // NS_PER_HOUR)
        .where(h.c.last_ns >= cutoff)
    ).all()
    a, c, r = forward_attempts, failure_clusters, channel_refs
    # (a ref belongs to one node; the outcome as a literal lets SQLite use the partial
    # index ix_forward_attempts_local, whose WHERE is outcome = 2)
    local = a.c.outcome == literal_column(str(int(_FAILED_LOCAL)))
    classes = a.c.failure_class.in_([literal_column(str(int(cls))) for cls in FailureClass])
    reopened = 0
    for signed_out in recent:
        ref = conn.scalar(select(r.c.id).where(r.c.node_id == node_id, r.c.chan_id == signed_out))
        if ref is None:
            continue
        # the newest cluster with a member at or after the cutoff (ix_forward_attempts_local)
        newest = conn.scalar(
            select(func.max(a.c.cluster_id)).where(
                a.c.outgoing_chan_ref == ref, classes, a.c.resolved_ns >= cutoff, local
            )
        )
        if newest is None:
            continue
        row = conn.execute(
            select(c.c.first_ns, c.c.last_ns, c.c.members, c.c.missed_fee_msat).where(
                c.c.id == newest, c.c.node_id == node_id
            )
        ).first()
        replaced = conn.scalar(
            select(c.c.id).where(c.c.id > newest, c.c.outgoing_chan_ref == ref).limit(1)
        )
        if row is None or replaced is not None or row.last_ns < cutoff:
            continue
        members = conn.execute(
            select(func.coalesce(r.c.chan_id, 0), func.coalesce(a.c.outgoing_amt_msat, 0))
            .select_from(a.outerjoin(r, r.c.id == a.c.incoming_chan_ref))
            .where(a.c.outgoing_chan_ref == ref, classes, local)
            .where(a.c.resolved_ns.between(row.first_ns, row.last_ns))
            .where(a.c.cluster_id == newest)
        ).all()
        clusters.restore(
            from_signed64(signed_out),
            int(newest),
            first_ns=int(row.first_ns),
            last_ns=int(row.last_ns),
            members=int(row.members),
            missed_fee_msat=int(row.missed_fee_msat),
            incoming_channel_ids=(from_signed64(inc) for inc, _ in members),
            amounts_msat=(int(amount) for _, amount in members),
        )
        reopened += 1
    return reopened


_EVENT_COLUMNS = (
    "node_id",
    "session_id",
    "timestamp_ns",
    "kind",
    "event_type",
    "incoming_chan_ref",
    "incoming_htlc_id",
    "outgoing_chan_ref",
    "outgoing_htlc_id",
    "incoming_amt_msat",
    "outgoing_amt_msat",
    "incoming_timelock",
    "outgoing_timelock",
    "wire_failure",
    "failure_detail",
    "failure_string",
    "settled",
    "offchain",
)

_CLUSTER_COLUMNS = (
    "id",
    "node_id",
    "outgoing_chan_ref",
    "first_ns",
    "last_ns",
    "members",
    "missed_fee_msat",
)

_ROLLUP_COLUMNS = (
    "node_id",
    "hour",
    "outgoing_channel_id",
    "incoming_channel_id",
    "failure_class",
    "failures",
    "clusters",
    "missed_raw_msat",
    "missed_dedup_msat",
)

_ATTEMPT_COLUMNS = (
    "node_id",
    "incoming_chan_ref",
    "incoming_htlc_id",
    "outgoing_chan_ref",
    "outgoing_htlc_id",
    "first_seen_ns",
    "resolved_ns",
    "incoming_amt_msat",
    "outgoing_amt_msat",
    "outcome",
    "failure_class",
    "wire_failure",
    "failure_detail",
    "missed_fee_msat",
    "final_settled",
    "cluster_id",
)

_s64 = wrap_signed64  # ids come from uint64s: no range check


_LIVE = LiveAttempt


class _NamesChannels(Protocol):
    """An event, an attempt or a live attempt: what names channels."""

    @property
    def incoming_channel_id(self) -> int: ...
    @property
    def outgoing_channel_id(self) -> int: ...


def _live_row(
    node_id: int, t: LiveAttempt, ref: dict[int, int], cluster_id: int | None
) -> tuple[Any, ...]:
    """:func:`_attempt_row` of ``t.snapshot()``, without building the snapshot."""
    outcome = t.outcome()
    cls = t.failure_class
    missed = t.missed_fee(outcome)
    key = t.key
    return (
        node_id,
        ref[key[0]],
        _s64(key[1]),
        ref[t.outgoing_channel_id],
        _s64(t.outgoing_htlc_id),
        t.first_seen_ns,
        t.resolved_ns,
        t.incoming_amt_msat,
        t.outgoing_amt_msat,
        int(outcome),
        int(cls) if cls is not None else None,
        t.wire_failure,
        t.failure_detail,
        missed or 0,  # unknown: the attempt's amounts are NULL
        t.final_settled,
        cluster_id,
    )


def _attempt_row(
    node_id: int, a: Attempt, ref: dict[int, int], cluster_id: int | None
) -> tuple[Any, ...]:
    return (
        node_id,
        ref[a.incoming_channel_id],
        _s64(a.incoming_htlc_id),
        ref[a.outgoing_channel_id],
        _s64(a.outgoing_htlc_id),
        a.first_seen_ns,
        a.resolved_ns,
        a.incoming_amt_msat,
        a.outgoing_amt_msat,
        int(a.outcome),
        int(a.failure_class) if a.failure_class is not None else None,
        a.wire_failure,
        a.failure_detail,
        a.missed_fee_msat or 0,  # unknown: the attempt's amounts are NULL
        a.final_settled,
        cluster_id,
    )
