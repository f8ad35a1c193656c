"""Retention: keeps the store bounded (DESIGN §6).

Every retained table has a TTL in days (0 = keep forever). :meth:`Pruner.prune_step`
deletes at most ``batch_rows`` expired rows of one table, oldest first, in one short
transaction, then hands back a bounded number of free pages to the file system
(``PRAGMA incremental_vacuum``), so the single writer thread is never held long: the
daemon runs one step per store call and event batches are written in between.

Raw rows (events, attempts, clusters) expire by when lnflow *recorded* them, not by
the node's timestamps: a node clock set in the past must not have fresh events deleted
at the next prune. Row ids only grow in recording order, so each prune first writes a
*recording mark* (:meth:`Pruner.mark`: now and the newest id of each raw table), and a
raw row expires once a mark at or after its id is older than the cutoff; rows are
therefore kept up to one prune interval longer than their TTL. Deleting a table's
newest rows lets SQLite hand their ids out again, so marks above the highest id left
are lowered to it. Marks go once they are older than every such TTL.

Boundary rule: a row expires when its time is strictly older than the cutoff
``now_ns − days × 86 400 s``; a row exactly at the cutoff is kept, one nanosecond older
is deleted. Hour columns compare whole hours: an hour expires once it ends at or before
the cutoff (``hour < cutoff_ns // NS_PER_HOUR``), so the hour holding the cutoff is kept;
day columns (UTC days) likewise, so the day holding the cutoff is kept. A week of the
weekly failure rollups expires once all its days did; the week holding the cutoff, whose
first days the daily rollups no longer hold, has the rows that counted those days summed
again from the days left (:attr:`Retained.summed_from`), so a week read whole is always
the sum of the days the store still has.

Optional size budget (``max_db_mb``): while the store's bytes in use exceed it, the
oldest raw rows are dropped before their TTL, in :data:`SIZE_BUDGET_ORDER`; rollups and
the forwards ledger never are. What counts as in use:

- SQLite: the pages in use (``page_count − freelist_count``) × ``page_size`` plus the
  WAL file (the WAL first truncated by a checkpoint when no reader holds it), read
  before each batch;
- PostgreSQL: a delete does not shrink a table's files (autovacuum makes the space
  reusable by later rows), so their size cannot say what a drop freed. The bytes in
  use are each of lnflow's tables' rows × the bytes one row takes, indexes included
  (:func:`lnflow.store.engines.postgresql.bytes_per_row`), measured once per prune run
  (its ``now_ns``); each batch dropped takes its rows' bytes off. The store's tables are
  shared by every node recording into it: the budget is the store's, and a daemon drops
  the store's oldest raw rows whichever node recorded them.

Retention horizon: deleting a node's attempts (either way) or its failure rollups
raises its ``retention_horizons`` row, in the same transaction, to the newest
``resolved_ns`` among the attempts deleted or the last nanosecond of the newest rollup
period deleted. A window starting after it holds every raw failure its rollups count,
and every rollup period it covers: the analysis then takes its failure counts from the
rollups (:mod:`lnflow.store.read.details`).

Time is always passed in; nothing here reads a clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    case,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)

from lnflow.domain import NS_PER_DAY, NS_PER_HOUR
from lnflow.store.db import BUSY_TIMEOUT_MS, dialect_insert, wal_bytes
from lnflow.store.latest_sample import refresh_deleted
from lnflow.store.rollups import DAYS_PER_WEEK, failure_weeks_of_days
from lnflow.store.sample_ratios import drop_expired_ratios
from lnflow.store.schema import (
    analysis_runs,
    channel_samples,
    failure_channel_6h,
    failure_channel_daily,
    failure_channel_hourly,
    failure_channel_weekly,
    failure_clusters,
    failure_rollups_hourly,
    forward_attempts,
    forward_channel_6h,
    forward_channel_daily,
    forward_channel_hourly,
    forward_rollups_hourly,
    htlc_events,
    metadata,
    nodes,
    opportunities,
    rebalance_moves,
    recording_marks,
    retention_horizons,
    run_gaps,
    stream_sessions,
)

if TYPE_CHECKING:
    from lnflow.settings import RetentionSettings

__all__ = [
    "RETAINED",
    "SIZE_BUDGET_ORDER",
    "Checkpoint",
    "PruneReport",
    "PruneStepResult",
    "Pruner",
    "Retained",
]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Retained:
    """One table under a TTL: rows whose ``column`` is older than the cutoff expire."""

    table: Table
    column: str
    #: nanoseconds per unit of ``column``: 1 for ``*_ns``, NS_PER_HOUR for ``hour``
    unit_ns: int
    #: the RetentionSettings key holding the TTL in days
    setting: str
    #: the primary key starts (node_id, column): scope by node so that index is used
    node_led: bool = False
    #: no index on ``column``: rows are inserted in time order, so look only at the
    #: ``limit`` lowest ids (a bounded scan) and delete those among them that expired
    id_ordered: bool = False
    #: expire by recording time: the recording_marks column holding this table's ids
    marked: str | None = None
    #: weeks summed from this daily table (listed before it here): the rows of the week
    #: holding the cutoff that counted an expired hour are summed again from the days left
    summed_from: Table | None = None


# Pruned in this order (referencing tables before the tables they point to). Adding a
# table is one line here (plus its key in RetentionSettings).
RETAINED: tuple[Retained, ...] = (
    # tables written in time order carry no time index (it would cost bytes per event)
    # ... and expire by recording time (their ids, via recording_marks)
    Retained(htlc_events, "timestamp_ns", 1, "events_days", id_ordered=True, marked="event_id"),
    Retained(
        forward_attempts, "first_seen_ns", 1, "attempts_days", id_ordered=True, marked="attempt_id"
    ),
    Retained(failure_clusters, "last_ns", 1, "attempts_days", id_ordered=True, marked="cluster_id"),
    Retained(channel_samples, "ts_ns", 1, "samples_days"),
    # ended_ns is NULL while a session is open, and NULL is never older than the cutoff.
    Retained(stream_sessions, "ended_ns", 1, "sessions_days"),
    Retained(failure_rollups_hourly, "hour", NS_PER_HOUR, "rollups_days", node_led=True),
    Retained(forward_rollups_hourly, "hour", NS_PER_HOUR, "rollups_days", node_led=True),
    Retained(failure_channel_hourly, "hour", NS_PER_HOUR, "rollups_days", node_led=True),
    Retained(forward_channel_hourly, "hour", NS_PER_HOUR, "rollups_days", node_led=True),
    Retained(failure_channel_6h, "block", 6 * NS_PER_HOUR, "rollups_days", node_led=True),
    Retained(forward_channel_6h, "block", 6 * NS_PER_HOUR, "rollups_days", node_led=True),
    Retained(failure_channel_daily, "day", NS_PER_DAY, "rollups_days", node_led=True),
    Retained(forward_channel_daily, "day", NS_PER_DAY, "rollups_days", node_led=True),
    Retained(
        failure_channel_weekly,
        "week",
        DAYS_PER_WEEK * NS_PER_DAY,
        "rollups_days",
        node_led=True,
        summed_from=failure_channel_daily,
    ),
    # A run's children carry its generated_ns, so they expire with it and go first: the
    # run row is deleted only once no child of an expired run is left.
    Retained(run_gaps, "generated_ns", 1, "runs_days"),
    Retained(opportunities, "generated_ns", 1, "runs_days"),
    Retained(rebalance_moves, "generated_ns", 1, "runs_days"),
    Retained(analysis_runs, "generated_ns", 1, "runs_days"),
    # the forwards ledger is kept forever: it is the source of truth for earned fees
)

# Raw rows the size budget may drop early, first to last, oldest rows first.
SIZE_BUDGET_ORDER: tuple[Retained, ...] = tuple(
    spec
    for name in ("htlc_events", "channel_samples", "forward_attempts", "failure_clusters")
    for spec in RETAINED
    if spec.table.name == name
)


Cause = Literal["ttl", "size"]

#: how long a checkpoint waits for readers to leave the WAL, in ms
CHECKPOINT_WAIT_MS = 200


@dataclass(frozen=True)
class Checkpoint:
    """What :meth:`Pruner.checkpoint` did: ``busy`` when a reader (or writer) kept the
    WAL from being truncated; sizes of the WAL file before and after."""

    busy: bool
    wal_bytes_before: int
    wal_bytes: int


@dataclass(frozen=True)
class PruneStepResult:
    """What one step did. ``table`` is None when it deleted nothing."""

    table: str | None = None
    deleted: int = 0
    cause: Cause | None = None
    #: newest time (ns) among the rows dropped for the size budget
    dropped_through_ns: int | None = None
    #: free pages handed back to the file system
    pages_freed: int = 0
    #: still over the size budget with no raw rows left to drop
    over_budget: bool = False

    @property
    def more(self) -> bool:
        """Whether another step may find work."""
        return self.deleted > 0 or self.pages_freed > 0


@dataclass
class PruneReport:
    """Steps added up: rows deleted per table, by cause."""

    expired: dict[str, int] = field(default_factory=dict)
    dropped_for_size: dict[str, int] = field(default_factory=dict)
    #: per table, newest time (ns) dropped for the size budget
    dropped_through_ns: dict[str, int] = field(default_factory=dict)
    pages_freed: int = 0
    steps: int = 0
    #: the last step found nothing left to do (False: max_batches reached first)
    complete: bool = False
    over_budget: bool = False

    @property
    def deleted(self) -> int:
        return sum(self.expired.values()) + sum(self.dropped_for_size.values())

    def add(self, step: PruneStepResult) -> None:
        self.steps += 1
        self.pages_freed += step.pages_freed
        self.over_budget = step.over_budget
        self.complete = not step.more
        if step.table is None:
            return
        counts = self.expired if step.cause == "ttl" else self.dropped_for_size
        counts[step.table] = counts.get(step.table, 0) + step.deleted
        if step.dropped_through_ns is not None:
            self.dropped_through_ns[step.table] = max(
                step.dropped_through_ns, self.dropped_through_ns.get(step.table, 0)
            )


class Pruner:
    """Deletes expired rows in bounded steps. Synchronous: run it on the store thread."""

    def __init__(
        self,
        engine: Engine,
        ttl_days: Mapping[str, int],
        *,
        max_db_mb: int = 0,
        vacuum_pages: int = 2048,
        tables: Sequence[Retained] = RETAINED,
        size_budget_order: Sequence[Retained] = SIZE_BUDGET_ORDER,
    ) -> None:
        missing = sorted({spec.setting for spec in tables} - set(ttl_days))
        if missing:
            raise ValueError(f"no TTL given for {', '.join(missing)}")
        if any(days < 0 for days in ttl_days.values()) or max_db_mb < 0 or vacuum_pages < 0:
            raise ValueError("TTLs, max_db_mb and vacuum_pages must be >= 0")
        self._engine = engine
        self._ttl_days = dict(ttl_days)
        self._tables = tuple(tables)
        self._size_budget_order = tuple(size_budget_order)
        self._budget_bytes = max_db_mb * MIB
        self._vacuum_pages = vacuum_pages
        self._sqlite = engine.dialect.name == "sqlite"
        # PostgreSQL's size budget: (the prune run's now_ns, per table (rows, bytes each))
        self._rows: tuple[int, dict[str, tuple[int, float]]] | None = None
        self._path = Path(engine.url.database) if self._sqlite and engine.url.database else None

    @classmethod
    def from_settings(cls, engine: Engine, settings: RetentionSettings) -> Pruner:
        ttl = {spec.setting: int(getattr(settings, spec.setting)) for spec in RETAINED}
        return cls(engine, ttl, max_db_mb=settings.max_db_mb)

    def cutoff(self, spec: Retained, now_ns: int) -> int | None:
        """Rows whose ``spec.column`` is below this expire (None: kept forever)."""
        days = self._ttl_days[spec.setting]
        if days == 0:
            return None
        return (now_ns - days * NS_PER_DAY) // spec.unit_ns

    def prune_step(self, now_ns: int, batch_rows: int) -> PruneStepResult:
        """Delete at most ``batch_rows`` rows of one table, then reclaim some free pages.

        Expired rows go first, table by table in :data:`RETAINED` order; when none are
        left and the store is over its size budget, the oldest raw rows.
        """
        if batch_rows < 1:
            raise ValueError("batch_rows must be >= 1")
        step = self._expire(now_ns, batch_rows) or self._shrink(now_ns, batch_rows)
        freed = self._reclaim()
        return PruneStepResult(
            table=step.table,
            deleted=step.deleted,
            cause=step.cause,
            dropped_through_ns=step.dropped_through_ns,
            pages_freed=freed,
            over_budget=step.over_budget,
        )

    def prune(self, now_ns: int, batch_rows: int, max_batches: int) -> PruneReport:
        """:meth:`mark`, then steps until nothing is left to do or ``max_batches`` steps
        were taken."""
        self.mark(now_ns)
        report = PruneReport()
        for _ in range(max_batches):
            step = self.prune_step(now_ns, batch_rows)
            report.add(step)
            if not step.more:
                break
        return report

    def mark(self, now_ns: int) -> bool:
        """Note that every raw row stored so far was recorded by ``now_ns`` (the daemon's
        clock); the first thing of each prune run. Returns whether a mark was written
        (not when nothing was recorded since the last one, nor for a clock that went back).
        """
        marked = [spec for spec in self._tables if spec.marked is not None]
        if not marked:
            return False
        m = recording_marks
        with self._engine.begin() as conn:
            self._expire_marks(conn, now_ns)
            ids = {
                spec.marked: conn.scalar(select(func.max(spec.table.c.id)))
                for spec in marked
                if spec.marked is not None
            }
            last = conn.execute(select(m).order_by(m.c.recorded_ns.desc()).limit(1)).first()
            if last is not None and (
                last.recorded_ns >= now_ns or all(getattr(last, k) == v for k, v in ids.items())
            ):
                return False
            if all(v is None for v in ids.values()):
                return False
            conn.execute(insert(m).values(recorded_ns=now_ns, **ids))
        return True

    def used_bytes(self) -> int:
        """The store's bytes in use, against the size budget: SQLite's pages in use plus
        the WAL file; on PostgreSQL, lnflow's rows (measured now, see the module's
        docstring)."""
        if not self._sqlite:
            return round(_rows_bytes(self._measure()))
        with self._engine.connect() as conn:
            return _used_bytes(conn) + self.wal_bytes()

    def wal_bytes(self) -> int:
        """Size of the WAL file (0 off SQLite or without one)."""
        return wal_bytes(self._path) if self._path is not None else 0

    def checkpoint(self) -> Checkpoint | None:
        """Copy the WAL into the store and truncate it to zero bytes, when no reader
        holds it; waits at most :data:`CHECKPOINT_WAIT_MS` for readers (the store thread
        must not stall). None off SQLite.
        """
        if self._path is None:
            return None
        before = self.wal_bytes()
        busy = True
        with self._engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            raw.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
            try:
                row = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                busy = bool(row[0])
            except sqlite3.OperationalError:  # a writer or reader held on past the wait
                pass
            finally:
                raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return Checkpoint(busy=busy, wal_bytes_before=before, wal_bytes=self.wal_bytes())

    # -- internals -------------------------------------------------------------------

    def _expire(self, now_ns: int, batch_rows: int) -> PruneStepResult | None:
        for spec in self._tables:
            cutoff = self.cutoff(spec, now_ns)
            if cutoff is None:
                continue
            with self._engine.begin() as conn:
                if spec.marked is not None:
                    deleted = _delete_recorded_before(conn, spec, batch_rows, cutoff)
                else:
                    deleted = _delete_oldest(conn, spec, batch_rows, cutoff)
                if not deleted and spec.summed_from is not None:
                    cutoff_day = (now_ns - self._ttl_days[spec.setting] * NS_PER_DAY) // NS_PER_DAY
                    deleted = _sum_week_again(conn, spec, batch_rows, cutoff_day)
            if deleted:
                return PruneStepResult(table=spec.table.name, deleted=deleted, cause="ttl")
        return None

    def _expire_marks(self, conn: Connection, now_ns: int) -> None:
        """Marks older than every raw table's cutoff are no longer needed."""
        cutoffs = [self.cutoff(spec, now_ns) for spec in self._tables if spec.marked]
        if not cutoffs or any(c is None for c in cutoffs):
            return  # a table kept forever: its marks stay (one row per prune run)
        oldest = min(c for c in cutoffs if c is not None)
        m = recording_marks
        # keep the newest mark before the cutoff: it still bounds the tables
        keep = conn.scalar(select(func.max(m.c.recorded_ns)).where(m.c.recorded_ns < oldest))
        if keep is not None:
            conn.execute(delete(m).where(m.c.recorded_ns < keep))

    def _shrink(self, now_ns: int, batch_rows: int) -> PruneStepResult:
        if not self._budget_bytes:
            return PruneStepResult()
        if not self._sqlite:
            return self._shrink_rows(now_ns, batch_rows)
        if self.wal_bytes() and self.used_bytes() > self._budget_bytes:
            self.checkpoint()  # the WAL counts: truncate it before dropping any row
        with self._engine.begin() as conn:
            if _used_bytes(conn) + self.wal_bytes() <= self._budget_bytes:
                return PruneStepResult()
            return _drop_oldest(conn, self._size_budget_order, batch_rows)

    def _shrink_rows(self, now_ns: int, batch_rows: int) -> PruneStepResult:
        """The size budget on PostgreSQL: the rows' bytes measured at the run's first
        step, each batch's taken off."""
        if self._rows is None or self._rows[0] != now_ns:
            self._rows = (now_ns, self._measure())
        per = self._rows[1]
        if _rows_bytes(per) <= self._budget_bytes:
            return PruneStepResult()
        with self._engine.begin() as conn:
            step = _drop_oldest(conn, self._size_budget_order, batch_rows)
        if step.table is not None:
            rows, each = per[step.table]
            per[step.table] = (max(rows - step.deleted, 0), each)
        return step

    def _measure(self) -> dict[str, tuple[int, float]]:
        from lnflow.store.engines.postgresql import bytes_per_row

        with self._engine.connect() as conn:
            return bytes_per_row(conn, metadata.sorted_tables)

    def _reclaim(self) -> int:
        """Hand back up to ``vacuum_pages`` free pages (SQLite, auto_vacuum=INCREMENTAL)."""
        if not self._sqlite or not self._vacuum_pages:
            return 0
        with self._engine.connect() as conn:
            before = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
            if not before:
                return 0
            # Python's sqlite3 steps a row-less PRAGMA once, which frees a single page;
            # executescript runs it to completion. No transaction is open here.
            conn.connection.driver_connection.executescript(  # type: ignore[union-attr]
                f"PRAGMA incremental_vacuum({int(self._vacuum_pages)})"
            )
            after = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
            return before - after


def _oldest(spec: Retained, limit: int, cutoff: int | None = None) -> Select[tuple[object, ...]]:
    """Primary keys (and time, as ``t``) of up to ``limit`` oldest matching rows."""
    table = spec.table
    col = table.c[spec.column]
    key = list(table.primary_key.columns)
    if spec.id_ordered:
        window = select(*key, col.label("t")).order_by(*key).limit(limit).subquery()
        picked = select(window)
        if cutoff is not None:
            picked = picked.where(window.c.t < cutoff)
        return picked.order_by(window.c.t)
    query = select(*key, col.label("t"))
    order: list[ColumnElement[object]] = [col]
    if spec.node_led:
        query = query.where(table.c.node_id.in_(select(nodes.c.id)))
        order = [table.c.node_id, col]
    if cutoff is not None:
        query = query.where(col < cutoff)
    return query.order_by(*order).limit(limit)


def _delete_recorded_before(conn: Connection, spec: Retained, limit: int, cutoff_ns: int) -> int:
    """Delete up to ``limit`` rows (lowest ids first) recorded before ``cutoff_ns``."""
    assert spec.marked is not None
    boundary = conn.scalar(
        select(func.max(recording_marks.c[spec.marked])).where(
            recording_marks.c.recorded_ns < cutoff_ns
        )
    )
    if boundary is None:
        return 0
    key = spec.table.c.id
    picked = select(key).where(key <= boundary).order_by(key).limit(limit)
    _raise_horizons(conn, spec, key, picked)
    deleted = int(conn.execute(delete(spec.table).where(key.in_(picked))).rowcount or 0)
    _clamp_marks(conn, spec)
    return deleted


# The tables whose deleted rows raise a node's retention horizon: the raw local failures
# (their resolved_ns) and the failure rollups (the last nanosecond of a period).
_HORIZON_TABLES = frozenset(
    t.name
    for t in (
        forward_attempts,
        failure_rollups_hourly,
        failure_channel_hourly,
        failure_channel_6h,
        failure_channel_daily,
        failure_channel_weekly,  # its weeks' days went first: a safeguard
    )
)


def _raise_horizons(conn: Connection, spec: Retained, target: Any, picked: Any) -> None:
    """Before ``picked`` rows of ``spec``'s table are deleted: raise each of their nodes'
    ``retention_horizons`` to the newest time they hold (schema: 0023). In the delete's
    transaction, so the horizon and the rows it stands for change together."""
    table = spec.table
    if table.name not in _HORIZON_TABLES:
        return
    raw = table is forward_attempts
    when = table.c.resolved_ns if raw else table.c[spec.column]
    found = conn.execute(
        select(table.c.node_id, func.max(when)).where(target.in_(picked)).group_by(table.c.node_id)
    ).all()
    rows = [
        {
            "node_id": node_id,
            "deleted_through_ns": int(newest) if raw else (int(newest) + 1) * spec.unit_ns - 1,
        }
        for node_id, newest in found
        if newest is not None
    ]
    if not rows:
        return
    h = retention_horizons
    stmt = dialect_insert(conn.engine, h)
    ex = stmt.excluded
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["node_id"],
            set_={
                "deleted_through_ns": case(
                    (ex.deleted_through_ns > h.c.deleted_through_ns, ex.deleted_through_ns),
                    else_=h.c.deleted_through_ns,
                )
            },
        ),
        rows,
    )


def _clamp_marks(conn: Connection, spec: Retained) -> None:
    """Lower marks above the table's highest id to it. Deleting the newest rows lets
    SQLite hand their ids out again (a new row gets max(id) + 1); a mark above that
    would cover rows recorded after it."""
    if spec.marked is None:
        return
    m = recording_marks.c[spec.marked]
    newest = select(func.coalesce(func.max(spec.table.c.id), 0)).scalar_subquery()
    conn.execute(update(recording_marks).where(m > newest).values({m: newest}))


def _delete_oldest(conn: Connection, spec: Retained, limit: int, cutoff: int | None) -> int:
    table = spec.table
    key = list(table.primary_key.columns)
    oldest = _oldest(spec, limit, cutoff).subquery()
    picked = select(*(oldest.c[c.name] for c in key))
    target = key[0] if len(key) == 1 else tuple_(*key)
    _raise_horizons(conn, spec, target, picked)
    result = conn.execute(delete(table).where(target.in_(picked)))
    _clamp_marks(conn, spec)
    if table is channel_samples:
        # a channel's kept latest sample may be gone, and SQLite may hand its id out again
        refresh_deleted(conn)
        # the lowest ratios of the periods before the oldest sample's are read no more
        drop_expired_ratios(conn)
    return int(result.rowcount or 0)


def _sum_week_again(conn: Connection, spec: Retained, limit: int, cutoff_day: int) -> int:
    """Up to ``limit`` rows of the week holding ``cutoff_day`` that counted an hour
    before it (the daily rows of those days have expired: every table before this one
    is pruned) replaced by the sum of their days left; returns how many were replaced.

    One week of each node: the weeks before it have expired. A row's ``first_hour`` says
    whether it counted an expired day, so a row summed again (or written since from the
    days left) is not touched by the next prune.
    """
    table, daily = spec.table, spec.summed_from
    assert daily is not None
    week = cutoff_day // DAYS_PER_WEEK
    key = list(table.primary_key.columns)
    stale = (
        select(*key)
        .where(table.c.node_id.in_(select(nodes.c.id)))
        .where(table.c.week == week, table.c.first_hour < cutoff_day * 24)
        .limit(limit)
        .subquery()
    )
    picked = select(*(stale.c[c.name] for c in key))
    replaced = int(conn.execute(delete(table).where(tuple_(*key).in_(picked))).rowcount or 0)
    if not replaced:
        return 0
    # the week's channels without a row now: those just deleted
    d, w = daily.c, table.c
    stored = select(w.week).where(
        w.node_id == d.node_id, w.week == week, w.outgoing_channel_id == d.outgoing_channel_id
    )
    left = failure_weeks_of_days(daily, table).where(
        d.node_id.in_(select(nodes.c.id)),
        d.day.between(week * DAYS_PER_WEEK, week * DAYS_PER_WEEK + DAYS_PER_WEEK - 1),
        ~stored.exists(),
    )
    conn.execute(insert(table).from_select([c.name for c in table.columns], left))
    return replaced


def _drop_oldest(conn: Connection, order: Sequence[Retained], batch_rows: int) -> PruneStepResult:
    """One batch of the oldest raw rows of the first table in ``order`` that has any."""
    for spec in order:
        newest = conn.scalar(select(func.max(_oldest(spec, batch_rows).subquery().c.t)))
        if newest is None:
            continue
        deleted = _delete_oldest(conn, spec, batch_rows, None)
        return PruneStepResult(
            table=spec.table.name,
            deleted=deleted,
            cause="size",
            dropped_through_ns=int(newest) * spec.unit_ns,
        )
    return PruneStepResult(over_budget=True)


def _rows_bytes(per_table: Mapping[str, tuple[int, float]]) -> float:
    return sum(rows * each for rows, each in per_table.values())


def _used_bytes(conn: Connection) -> int:
    pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    free = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
    size = int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
    return (pages - free) * size
