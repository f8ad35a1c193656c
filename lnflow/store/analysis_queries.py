"""Building the analysis input (:class:`lnflow.analysis.model.AnalysisInput`) from the store.

The window is exact: :func:`window_for` gives ``[until_ns − hours h, until_ns)`` and every
figure describes what happened in that half-open range, so a window is always ``hours``
long and the monthly extrapolation (× 720 / hours) scales what was really seen.

Where the figures come from:

- whole UTC days inside the window are read from the daily per-channel rollups
  (``failure_channel_daily``, ``forward_channel_daily``), the whole 6-hour blocks around
  them from the 6-hourly ones (``*_channel_6h``), the whole clock hours around those from
  the hourly ones (``*_channel_hourly``), so any window reads at most 2 × 3 blocks and
  2 × 5 hours plus one row per channel and day, summed in SQL (one row per channel
  comes back);
- the partial hour at each end (none when a boundary falls on a full hour) is read from
  raw rows, on the same timestamp basis the rollups are filled on: a local failure
  counts at its LINK_FAIL time (``forward_attempts.resolved_ns``), a demand cluster at
  its first member (``failure_clusters.first_ns``), the growth of a cluster's missed fee
  (the deduplicated figure) when the member that raised it failed, and a settled forward
  at its ledger time (``forwards.timestamp_ns``);
- the inbound baseline ``[since_ns − baseline_days, since_ns)`` is split the same way.

Precision and boundaries:

- ``first_failure_ns``/``last_failure_ns`` are exact for failures in a partial hour; for
  a whole hour they are its first and its last nanosecond (rollups have no finer time;
  a day's rollup row keeps its first and last hour with a failure);
- ``incoming_channels`` is exact up to :data:`~lnflow.analysis.model.INCOMING_CAP` (3):
  the rollups keep the smallest and the largest incoming channel of each period and
  whether it had 3 or more (see :mod:`lnflow.store.schema`);
- channel samples count when ``ts_ns <= until_ns`` (a sample taken at ``until_ns`` is
  the state at the end of the window); raw failures (:class:`StoreFailureDetails`) when
  ``since_ns <= resolved_ns < until_ns``, like the failure counts;
- a cluster's deduplicated missed fee in a partial hour is how far the hour's members
  raised the cluster's largest fee above its members before the hour (time order, which
  is the order the daemon records them in);
- a rollup row with a class number this code does not know counts as ``other``.

Reads only; nothing here writes or reads a clock.
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import add
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    Float,
    FromClause,
    ScalarSelect,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import (
    INCOMING_CAP,
    AnalysisInput,
    AnalysisReport,
    AnalysisSettings,
    ChannelFailures,
    ChannelState,
    ClassStats,
    FeePoint,
    Gap,
    InboundBaseline,
)
from lnflow.analysis.opportunities import analyze, deciding_class
from lnflow.attempts import Outcome
from lnflow.domain import from_signed64, to_signed64
from lnflow.store.channel_ids import AliasedFailureDetails, alias_map, fold_counts, fold_failures
from lnflow.store.queries import stream_gaps
from lnflow.store.rollups import BLOCK_HOURS, CLASS_COLUMNS, HOURS_PER_DAY
from lnflow.store.schema import (
    channel_refs,
    channel_samples,
    channels,
    daemon_state,
    failure_channel_6h,
    failure_channel_daily,
    failure_channel_hourly,
    failure_clusters,
    forward_attempts,
    forward_channel_6h,
    forward_channel_daily,
    forward_channel_hourly,
    forwards,
    nodes,
)
from lnflow.store.writer import NS_PER_HOUR

__all__ = [
    "RANK_IN_SQL_FROM_AMOUNTS",
    "RANK_IN_SQL_FROM_HOURS",
    "StoreFailureDetails",
    "analyze_window",
    "collector_paused",
    "failure_class_of",
    "load_analysis_input",
    "node_id_of",
    "window_for",
]

_FAILED_LOCAL = int(Outcome.FAILED_LOCAL)

# Local failures of a partial hour are selected by resolved_ns (their LINK_FAIL time, the
# time the rollups count them at) on ix_forward_attempts_local: one exact index range per
# outgoing channel failing in that hour (those with a rollup row for it: every failure of
# the hour has one) and class (a local failure always has one of the six classes,
# lnflow.analysis.classify.classify). Looking up a demand cluster's members before the
# range uses the same index: resolved_ns from the cluster's first failure minus this
# slack up to the range start. A member's resolved_ns is its LINK_FAIL time and the
# cluster's first_ns the earliest of those, so the slack only guards against a final
# event dated before its LINK_FAIL (lnd does not send one) pulling resolved_ns earlier;
# it also bounds each read.
_RESOLVE_SLACK_NS = NS_PER_HOUR


def _unindexed(col: ColumnElement[int]) -> ColumnElement[int]:
    """``+col``: the same value, which SQLite's planner will not look up in an index.

    For the node_id condition of the ``forward_attempts`` reads: without table statistics
    SQLite prefers the unique (node_id, ...) index over ix_forward_attempts_local, and
    would then read every attempt of the node instead of the time range.
    """
    return UnaryExpression(col, operator=operators.custom_op("+"), type_=col.type)


def window_for(until_ns: int, hours: int) -> tuple[int, int]:
    """``(since_ns, until_ns)`` of exactly the last ``hours`` hours before ``until_ns``.

    ``since_ns = until_ns − hours × NS_PER_HOUR``; the window is ``[since_ns, until_ns)``.
    At 10:20 a 2-hour window runs from 08:20 to 10:20.
    """
    if hours < 1:
        raise ValueError("hours must be >= 1")
    return until_ns - hours * NS_PER_HOUR, until_ns


_Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class _Span:
    """``[lo, hi)`` as whole UTC days, whole 6-hour blocks outside them, whole clock hours
    outside those, and partial hours.

    Days, blocks and hours are read from the daily, 6-hourly and hourly rollups, the
    partial rest from raw rows. Ranges are inclusive (``first..last``); an empty one has
    first > last.
    """

    days: _Range
    blocks: tuple[_Range, _Range]  # before and after the days
    hours: tuple[_Range, _Range]  # before and after the blocks
    parts: tuple[_Range, ...]  # partial ranges [lo, hi), each inside one clock hour

    @property
    def has_rollups(self) -> bool:
        return any(first <= last for first, last in (self.days, *self.blocks, *self.hours))


_NONE = (1, 0)


def _whole(first: int, end: int, size: int) -> tuple[_Range, _Range, _Range]:
    """Units ``first .. end − 1`` as (before, whole groups of ``size`` units, after).

    The groups are numbered unit // size; the ranges before and after are in units.
    """
    first_group = -(-first // size)
    end_group = end // size
    if first_group >= end_group:  # no whole group
        return (first, end - 1), _NONE, _NONE
    return (
        (first, first_group * size - 1),
        (first_group, end_group - 1),
        (end_group * size, end - 1),
    )


def _span(lo: int, hi: int) -> _Span:
    if lo >= hi:
        return _Span(_NONE, (_NONE, _NONE), (_NONE, _NONE), ())
    first = -(-lo // NS_PER_HOUR)  # the first hour starting at or after lo
    end = hi // NS_PER_HOUR  # the hour hi falls in (not whole unless hi is its start)
    if first > end:  # lo and hi inside one clock hour
        return _Span(_NONE, (_NONE, _NONE), (_NONE, _NONE), ((lo, hi),))
    parts = []
    if lo < first * NS_PER_HOUR:
        parts.append((lo, first * NS_PER_HOUR))
    if end * NS_PER_HOUR < hi:
        parts.append((end * NS_PER_HOUR, hi))
    hours_before, blocks, hours_after = _whole(first, end, BLOCK_HOURS)
    if blocks == _NONE:
        return _Span(_NONE, (_NONE, _NONE), (hours_before, _NONE), tuple(parts))
    blocks_before, days, blocks_after = _whole(
        blocks[0], blocks[1] + 1, HOURS_PER_DAY // BLOCK_HOURS
    )
    return _Span(days, (blocks_before, blocks_after), (hours_before, hours_after), tuple(parts))


def node_id_of(conn: Connection) -> int | None:
    """The node this store records: the daemon's, else the only ``nodes`` row, else None."""
    recorded = conn.scalar(
        select(daemon_state.c.node_id)
        .where(daemon_state.c.node_id.is_not(None))
        .order_by(daemon_state.c.heartbeat_ns.desc())
        .limit(1)
    )
    if recorded is not None:
        return int(recorded)
    ids = conn.scalars(select(nodes.c.id).limit(2)).all()
    return int(ids[0]) if len(ids) == 1 else None


def failure_class_of(number: int) -> FailureClass:
    """The class a stored ``failure_class`` number stands for (unknown numbers: other)."""
    try:
        return FailureClass(number)
    except ValueError:
        return FailureClass.OTHER


# The attempts name channels by their channel_refs number: the ref of SCID ``chan`` of
# the node (NULL when the node has none: no attempt names it).
def _ref_of(chan: ColumnElement[int]) -> ColumnElement[int]:
    r = channel_refs
    return (
        select(r.c.id)
        .where(r.c.node_id == bindparam("node"))
        .where(r.c.chan_id == chan)
        .scalar_subquery()
    )


# A channel's local failures of one class resolved in [since, until) with a known amount,
# read from the partial covering index ix_forward_attempts_local alone (no ORDER BY: the
# analysis sorts the values itself). The outcome is written as a literal so SQLite can
# prove the index's WHERE clause; node_id is the index's last column, checked unindexed.
_DETAIL = (
    select(forward_attempts.c.missed_fee_msat, forward_attempts.c.outgoing_amt_msat)
    .where(forward_attempts.c.outgoing_chan_ref == _ref_of(bindparam("out")))
    .where(forward_attempts.c.failure_class == bindparam("cls"))
    .where(forward_attempts.c.resolved_ns >= bindparam("since"))
    .where(forward_attempts.c.resolved_ns < bindparam("until"))
    .where(forward_attempts.c.outcome == literal_column(str(_FAILED_LOCAL)))
    .where(forward_attempts.c.outgoing_amt_msat.is_not(None))
    .where(_unindexed(forward_attempts.c.node_id) == bindparam("node"))
)


# The same for several channels at once (the channels an analysis will ask about), each
# attempt with the SCID of its ref
_out_ref = channel_refs.alias("out_ref")
_of_channels = (
    _out_ref.c.node_id == bindparam("node"),
    _out_ref.c.chan_id.in_(bindparam("outs", expanding=True)),
    forward_attempts.c.outgoing_chan_ref == _out_ref.c.id,
    forward_attempts.c.failure_class == bindparam("cls"),
    forward_attempts.c.resolved_ns >= bindparam("since"),
    forward_attempts.c.resolved_ns < bindparam("until"),
    forward_attempts.c.outcome == literal_column(str(_FAILED_LOCAL)),
    forward_attempts.c.outgoing_amt_msat.is_not(None),
    _unindexed(forward_attempts.c.node_id) == bindparam("node"),
)
_DETAIL_MANY = select(
    _out_ref.c.chan_id,
    forward_attempts.c.missed_fee_msat,
    forward_attempts.c.outgoing_amt_msat,
).where(*_of_channels)
# (each channel's amounts as one text, "a,b,c": tens of thousands of values come back
# as one row per channel, parsed in C by json.loads, instead of a driver tuple each)
_AMOUNTS_MANY = (
    select(
        _out_ref.c.chan_id,
        func.aggregate_strings(cast(forward_attempts.c.outgoing_amt_msat, String), ","),
    )
    .where(*_of_channels)
    .group_by(_out_ref.c.chan_id)
)
_COUNT_MANY = (
    select(_out_ref.c.chan_id, func.count()).where(*_of_channels).group_by(_out_ref.c.chan_id)
)

# Nearest ranks of long windows, on ix_forward_attempts_local_amount: the count of the
# amounts (on ix_forward_attempts_local), then the k-th smallest by walking the amount
# index from whichever end is nearer.
_RANK_COUNT = _DETAIL.with_only_columns(func.count())
# (the time bounds are written unindexed, so the planner walks the index that gives the
# amount order rather than sort the window's amounts)
_ranked = (
    select(forward_attempts.c.outgoing_amt_msat)
    .where(forward_attempts.c.outgoing_chan_ref == _ref_of(bindparam("out")))
    .where(forward_attempts.c.failure_class == bindparam("cls"))
    .where(forward_attempts.c.outgoing_amt_msat.is_not(None))
    .where(_unindexed(forward_attempts.c.resolved_ns) >= bindparam("since"))
    .where(_unindexed(forward_attempts.c.resolved_ns) < bindparam("until"))
    .where(forward_attempts.c.outcome == literal_column(str(_FAILED_LOCAL)))
    .where(_unindexed(forward_attempts.c.node_id) == bindparam("node"))
    .limit(1)
    .offset(bindparam("skip"))
)
_RANK_ASC = _ranked.order_by(forward_attempts.c.outgoing_amt_msat)
_RANK_DESC = _ranked.order_by(forward_attempts.c.outgoing_amt_msat.desc())
# Shorter windows rank a channel's amounts of a class in SQL too when there are more than
# this many: reading them would hold them all in memory at once (a busy hour may hold a
# million failures).
RANK_IN_SQL_FROM_AMOUNTS = 20_000
# From this window length on, amounts are ranked in SQL rather than read and sorted here.
# Both are exact. Reading costs per amount in the window; ranking walks up to half the
# channel's retained amounts of the class, in window or not, but in SQLite's C at a
# fraction of the cost per row: with attempts kept 30 days (the default) it pays from
# about a week.
RANK_IN_SQL_FROM_HOURS = 7 * 24


_Query = Select[Any] | CompoundSelect[Any]
# SQL text per statement and dialect: (text, parameter names in order, constant values)
_COMPILED: dict[tuple[int, str], tuple[_Query, str, tuple[str, ...], dict[str, Any]]] = {}


def _rows(conn: Connection, stmt: _Query, params: Mapping[str, Any]) -> Sequence[Any]:
    """All rows of a statement as the driver's tuples, compiled once per dialect.

    The analysis runs a few statements over tens of thousands of rows and some hundreds
    of small ones: executing the construct and building SQLAlchemy rows cost more than
    the queries themselves. The statement still runs through the connection (its events
    fire); only the fetch bypasses the result object. An expanding (IN list) parameter
    takes a list, spelled out for drivers with ``?`` placeholders (SQLite's); other
    drivers get the construct executed as usual.
    """
    key = (id(stmt), conn.dialect.name)
    compiled = _COMPILED.get(key)
    if compiled is None or compiled[0] is not stmt:
        done = stmt.compile(dialect=conn.dialect)
        constants = {k: v for k, v in done.params.items() if v is not None}  # e.g. LIMIT 1
        compiled = _COMPILED[key] = (stmt, str(done), tuple(done.positiontup or ()), constants)
    _, sql, names, constants = compiled
    values: list[Any] = []
    for name in names:
        value = params[name] if name in params else constants[name]
        if isinstance(value, (list, tuple)):
            if conn.dialect.paramstyle != "qmark" or not value:
                return conn.execute(stmt, dict(params)).all()
            sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * len(value)), 1)
            values.extend(value)
        else:
            # a value SQLAlchemy renders at execution (aggregate_strings' separator)
            sql = sql.replace(f"__[POSTCOMPILE_{name}]", "?", 1)
            values.append(value)
    result = conn.exec_driver_sql(sql, tuple(values))
    try:
        return result.cursor.fetchall() if result.cursor is not None else result.all()
    finally:
        result.close()


def _nearest_rank_of(n: int, p: int) -> int:
    """The 1-based nearest rank of ``p`` percent among ``n`` values."""
    return max(1, -(-p * n // 100))


def _ranks_of(ordered: Sequence[int], percents: Sequence[int]) -> tuple[int, ...]:
    """The nearest ranks of ``percents`` among sorted values (none when there are none)."""
    if not ordered:
        return ()
    return tuple(ordered[_nearest_rank_of(len(ordered), p) - 1] for p in percents)


def _sample_of(
    s: FromClause, node: ColumnElement[int], chan: ColumnElement[int]
) -> ColumnElement[bool]:
    return and_(s.c.node_id == node, s.c.chan_id == chan)


def _has_policy(s: FromClause) -> ColumnElement[bool]:
    return and_(s.c.fee_base_msat.is_not(None), s.c.fee_rate_ppm.is_not(None))


# Our fee policy from the time :meth:`StoreFailureDetails.fee_history` starts at: the last
# sample with a policy at or before it (the policy then in force; else the first after
# it), then only the samples whose policy differs from the sample before (lag() over the
# channel's samples from that point, from ix_channel_samples_chan_state alone).
def _policy_start(chan: ColumnElement[int]) -> ScalarSelect[int]:
    """The time of the channel's last sample with a policy at or before ``start``."""
    s = channel_samples.alias("before")
    return (
        select(s.c.ts_ns)
        .where(_sample_of(s, bindparam("node"), chan))
        .where(s.c.ts_ns <= bindparam("start"))
        .where(_has_policy(s))
        .order_by(s.c.ts_ns.desc(), s.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


_fee_start = _policy_start(bindparam("chan"))
_in_order = (channel_samples.c.ts_ns, channel_samples.c.id)
_fee_points = (
    select(
        channel_samples.c.id,
        channel_samples.c.ts_ns,
        channel_samples.c.fee_base_msat,
        channel_samples.c.fee_rate_ppm,
        func.lag(channel_samples.c.fee_base_msat).over(order_by=_in_order).label("prev_base"),
        func.lag(channel_samples.c.fee_rate_ppm).over(order_by=_in_order).label("prev_ppm"),
    )
    .where(_sample_of(channel_samples, bindparam("node"), bindparam("chan")))
    .where(channel_samples.c.ts_ns >= func.coalesce(_fee_start, bindparam("start")))
    .where(channel_samples.c.ts_ns <= bindparam("until"))
    .where(_has_policy(channel_samples))
    .subquery("points")
)
_FEE_HISTORY = (
    select(_fee_points.c.ts_ns, _fee_points.c.fee_base_msat, _fee_points.c.fee_rate_ppm)
    .where(
        _fee_points.c.prev_ppm.is_(None)  # the first point
        | (_fee_points.c.prev_ppm != _fee_points.c.fee_rate_ppm)
        | (_fee_points.c.prev_base != _fee_points.c.fee_base_msat)
    )
    .order_by(_fee_points.c.ts_ns, _fee_points.c.id)
)
# The same for several channels at once (the channels a fee class dominates): each
# channel's start (one seek per channel, as above), then every sample with a policy from
# there, in order, from the index alone; the changes are picked out in Python
# (:func:`_policy_changes`). A window function over all of them sorts: slower than one
# statement per channel, while this reads ~300 index entries per channel of a day.
_starts = (
    select(
        channels.c.chan_id,
        func.coalesce(_policy_start(channels.c.chan_id), bindparam("start")).label("from_ns"),
    )
    .where(channels.c.node_id == bindparam("node"))
    .where(channels.c.chan_id.in_(bindparam("chans", expanding=True)))
    .cte("starts")
)
_FEE_SAMPLES_MANY = (
    select(
        _starts.c.chan_id,
        channel_samples.c.ts_ns,
        channel_samples.c.fee_base_msat,
        channel_samples.c.fee_rate_ppm,
    )
    .select_from(_starts)
    .outerjoin(
        channel_samples,
        and_(
            _sample_of(channel_samples, bindparam("node"), _starts.c.chan_id),
            channel_samples.c.ts_ns >= _starts.c.from_ns,
            channel_samples.c.ts_ns <= bindparam("until"),
            _has_policy(channel_samples),
        ),
    )
    .order_by(_starts.c.chan_id, channel_samples.c.ts_ns, channel_samples.c.id)
)


@dataclass(eq=False)
class StoreFailureDetails:
    """:class:`~lnflow.analysis.model.FailureDetails` read lazily from the store.

    The failures are those the counts describe: ``since_ns <= resolved_ns < until_ns``,
    read from the partial covering index ``ix_forward_attempts_local``; the fee history
    runs from ``fee_history_from_ns`` (``since_ns`` when None; :func:`load_analysis_input`
    passes ``since − gossip_grace_h``) to ``until_ns``. Each method runs one query the
    first time it is asked for a channel, and remembers the answer; for a channel in
    ``likely`` (the channels a class dominates, from :func:`load_analysis_input`) the first
    question reads the class for all of them in one statement (the fee history too: of
    all of the fee channels at once). Amount percentiles are
    nearest ranks, exact either way: windows shorter than :data:`RANK_IN_SQL_FROM_HOURS`
    read and sort the amounts, longer ones and channels with more than
    :data:`RANK_IN_SQL_FROM_AMOUNTS` amounts of the class count them and walk
    ``ix_forward_attempts_local_amount`` to each rank. It uses ``conn``, so the caller
    keeps that connection open until the analysis has finished with the input.
    """

    conn: Connection
    node_id: int
    since_ns: int
    until_ns: int
    fee_history_from_ns: int | None = None
    # channels whose amounts of a class will likely be asked for: the first such question
    # reads them all in one statement
    likely: Mapping[FailureClass, frozenset[int]] = field(default_factory=dict)
    # the window's failure figures (load_analysis_input's): a channel's failures of a class
    # bound its amounts (each failure has at most one), so a short window's channel with
    # no more than RANK_IN_SQL_FROM_AMOUNTS failures of it has its amounts read uncounted
    window_failures: Mapping[int, ChannelFailures] = field(default_factory=dict, repr=False)
    _amounts: dict[tuple[int, FailureClass], tuple[int, ...]] = field(
        default_factory=dict, repr=False
    )
    _offers: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict, repr=False)
    _counts: dict[tuple[int, FailureClass], int] = field(default_factory=dict, repr=False)
    _fees: dict[int, tuple[FeePoint, ...]] = field(default_factory=dict, repr=False)
    _fees_batched: bool = field(default=False, repr=False)  # likely[FEE]'s histories read

    def _local_failures(self, chan_id: int, cls: FailureClass) -> list[tuple[int, int]]:
        """(missed fee, outgoing amount) of the channel's local failures of this class."""
        rows = self._run(
            _DETAIL,
            {
                "out": to_signed64(chan_id),
                "cls": int(cls),
                "since": self.since_ns,
                "until": self.until_ns,
                "node": self.node_id,
            },
        )
        return [(int(fee), int(amount)) for fee, amount in rows]

    def _run(self, stmt: Select[Any], params: dict[str, int]) -> Sequence[Any]:
        """Rows of a statement (hundreds of channels' details: see :func:`_rows`)."""
        return _rows(self.conn, stmt, params)

    def amounts_msat(self, chan_id: int, cls: FailureClass) -> Sequence[int]:
        """The outgoing amounts themselves, sorted."""
        key = (chan_id, cls)
        if key not in self._amounts:
            batch = self.likely.get(cls, frozenset())
            if chan_id in batch:
                self._read_amounts(cls, batch)
            if key not in self._amounts:
                self._amounts[key] = tuple(sorted(a for _, a in self._local_failures(chan_id, cls)))
        return self._amounts[key]

    def _count(self, chan_id: int, cls: FailureClass, params: dict[str, int]) -> int:
        """How many amounts the channel's failures of the class have in the window."""
        batch = self.likely.get(cls, frozenset())
        if chan_id not in batch:
            return int(self._run(_RANK_COUNT, params)[0][0])
        if (chan_id, cls) not in self._counts:
            rows = _rows(
                self.conn,
                _COUNT_MANY,
                {
                    "outs": sorted(to_signed64(chan) for chan in batch),
                    "cls": int(cls),
                    "since": self.since_ns,
                    "until": self.until_ns,
                    "node": self.node_id,
                },
            )
            counts = {from_signed64(out): int(n) for out, n in rows}
            self._counts |= {(chan, cls): counts.get(chan, 0) for chan in batch}
        return self._counts[(chan_id, cls)]

    def _may_be_many(self, chan_id: int, cls: FailureClass, unknown: bool) -> bool:
        """Whether the channel may have more than RANK_IN_SQL_FROM_AMOUNTS amounts of the
        class in the window: its count once counted, else its failures; ``unknown`` when
        neither is known."""
        n = self._counts.get((chan_id, cls))
        if n is None:
            if not self.window_failures:
                return unknown
            failures = self.window_failures.get(chan_id)
            stats = failures.by_class.get(cls) if failures is not None else None
            n = stats.failures if stats is not None else 0
        return n > RANK_IN_SQL_FROM_AMOUNTS

    def _read_amounts(self, cls: FailureClass, chan_ids: frozenset[int]) -> None:
        """Amounts (and fee offers) of the class's failures of all these channels."""
        params = {
            "outs": sorted(to_signed64(chan) for chan in chan_ids),
            "cls": int(cls),
            "since": self.since_ns,
            "until": self.until_ns,
            "node": self.node_id,
        }
        if cls is FailureClass.FEE:
            found: dict[int, list[tuple[int, int]]] = {to_signed64(c): [] for c in chan_ids}
            for out, fee, amount in _rows(self.conn, _DETAIL_MANY, params):
                found[out].append((fee, amount))
            for out, failures in found.items():
                chan = from_signed64(out)
                self._amounts[(chan, cls)] = tuple(sorted(amount for _, amount in failures))
                self._offers[chan] = tuple(failures)
            return
        # channels counted with many amounts are ranked in SQL (amount_percentiles)
        skip = {
            c
            for c in chan_ids
            if (c, cls) in self._amounts or self._may_be_many(c, cls, unknown=False)
        }
        amounts: dict[int, list[int]] = {to_signed64(c): [] for c in chan_ids - skip}
        if not amounts:
            return
        params["outs"] = sorted(amounts)
        for out, text in _rows(self.conn, _AMOUNTS_MANY, params):
            amounts[out] = json.loads(f"[{text}]")
        for out, values in amounts.items():
            values.sort()
            self._amounts[(from_signed64(out), cls)] = tuple(values)

    def amount_percentiles(
        self, chan_id: int, cls: FailureClass, percents: Sequence[int]
    ) -> Sequence[int]:
        key = (chan_id, cls)
        short = self.until_ns - self.since_ns < RANK_IN_SQL_FROM_HOURS * NS_PER_HOUR
        if short and key in self._amounts:
            return _ranks_of(self._amounts[key], percents)
        if short and not self._may_be_many(chan_id, cls, unknown=True):
            return _ranks_of(self.amounts_msat(chan_id, cls), percents)
        params = {
            "out": to_signed64(chan_id),
            "cls": int(cls),
            "since": self.since_ns,
            "until": self.until_ns,
            "node": self.node_id,
        }
        n = self._count(chan_id, cls, params)
        if short and n <= RANK_IN_SQL_FROM_AMOUNTS:
            return _ranks_of(self.amounts_msat(chan_id, cls), percents)
        result = []
        for p in percents if n else ():
            k = _nearest_rank_of(n, p)
            if k <= n - k + 1:
                ((value,),) = self._run(_RANK_ASC, params | {"skip": k - 1})
            else:
                ((value,),) = self._run(_RANK_DESC, params | {"skip": n - k})
            result.append(int(value))
        return tuple(result)

    def fee_offers(self, chan_id: int) -> Sequence[tuple[int, int]]:
        if chan_id not in self._offers:
            batch = self.likely.get(FailureClass.FEE, frozenset())
            if chan_id in batch:
                self._read_amounts(FailureClass.FEE, batch)
            else:
                self._offers[chan_id] = tuple(self._local_failures(chan_id, FailureClass.FEE))
        return self._offers[chan_id]

    def fee_history(self, chan_id: int) -> Sequence[FeePoint]:
        if chan_id not in self._fees:
            start = self.since_ns if self.fee_history_from_ns is None else self.fee_history_from_ns
            params = {"node": self.node_id, "start": start, "until": self.until_ns}
            batch = self.likely.get(FailureClass.FEE, frozenset())
            if chan_id in batch and not self._fees_batched:
                self._fees_batched = True
                self._read_fee_histories(batch - self._fees.keys(), params)
            if chan_id not in self._fees:
                rows = self._run(_FEE_HISTORY, params | {"chan": to_signed64(chan_id)})
                self._fees[chan_id] = tuple(FeePoint(int(t), int(b), int(p)) for t, b, p in rows)
        return self._fees[chan_id]

    def _read_fee_histories(self, chan_ids: Iterable[int], params: dict[str, int]) -> None:
        """Our fee history of all these channels (those in ``channels``) in one statement."""
        rows = _rows(
            self.conn,
            _FEE_SAMPLES_MANY,
            params | {"chans": sorted(to_signed64(chan) for chan in chan_ids)},
        )
        # rows in channel, then sample order; one with no sample (None) for a channel that
        # has none: keep each channel's first sample and those whose policy differs from
        # the sample before
        points: list[FeePoint] = []
        last_chan = last_policy = None
        for chan, ts_ns, base, ppm in rows:
            if chan != last_chan:
                if last_chan is not None:
                    self._fees[from_signed64(last_chan)] = tuple(points)
                points, last_chan, last_policy = [], chan, None
            if ts_ns is not None and (base, ppm) != last_policy:
                points.append(FeePoint(int(ts_ns), int(base), int(ppm)))
                last_policy = (base, ppm)
        if last_chan is not None:
            self._fees[from_signed64(last_chan)] = tuple(points)


class _CollectorPause:
    """Holds off Python's cyclic garbage collector while any analysis runs (process-wide)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def enter(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def leave(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._was_enabled:
                gc.enable()


_COLLECTOR_PAUSE = _CollectorPause()


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the block runs (one analysis).

    An analysis allocates tens of thousands of short-lived tuples and records (the rows
    it reads, the per-channel figures) and creates no reference cycles, yet each time
    the collector's allocation thresholds fill up it walks young objects, and now and
    then the whole heap (generation 2): a run took 110–146 ms instead of a steady
    ~115 on the reference machine. Reference counting frees everything as before; the
    collector resumes its thresholds when the outermost pause ends (it stays off if it
    was off). The switch is process-wide: another thread's allocations are not
    collected during a run either, which only defers their collection.
    """
    _COLLECTOR_PAUSE.enter()
    try:
        yield
    finally:
        _COLLECTOR_PAUSE.leave()


def analyze_window(
    conn: Connection,
    node_id: int,
    *,
    until_ns: int,
    hours: int,
    settings: AnalysisSettings,
    generated_ns: int | None = None,
) -> AnalysisReport:
    """The analysis of the window of :func:`window_for`, read through ``conn``.

    :func:`load_analysis_input` then :func:`~lnflow.analysis.opportunities.analyze`
    (``generated_ns`` defaults to ``until_ns``) with the collector paused
    (:func:`collector_paused`): what lnflowd, lnflowctl and the facades run.
    """
    with collector_paused():
        inp = load_analysis_input(conn, node_id, until_ns=until_ns, hours=hours, settings=settings)
        return analyze(inp, settings, until_ns if generated_ns is None else generated_ns)


def load_analysis_input(
    conn: Connection, node_id: int, *, until_ns: int, hours: int, settings: AnalysisSettings
) -> AnalysisInput:
    """Everything the analysis needs for the window of :func:`window_for`.

    ``details`` reads through ``conn``: keep it open while the analysis runs.
    """
    since_ns, until_ns = window_for(until_ns, hours)
    window = _span(since_ns, until_ns)
    baseline = _span(since_ns - settings.baseline_days * 24 * NS_PER_HOUR, since_ns)
    window_ledger = _ledger(conn, node_id, window.parts)
    window_totals = _forward_totals(conn, node_id, window)
    by_id, node_failures, node_missed = _failures(conn, node_id, window)
    aliases = alias_map(conn, node_id)  # a channel's other ids count for it (channel_ids)
    failures = fold_failures(by_id, aliases)
    unknown_amount, node_rejected = _unknown_and_rejected(conn, node_id, since_ns, until_ns)
    history_from_ns = since_ns - settings.gossip_grace_h * NS_PER_HOUR
    channel_states = _channels(conn, node_id, since_ns, until_ns, settings.inbound_ratio)
    return AnalysisInput(
        since_ns=since_ns,
        until_ns=until_ns,
        hours=hours,
        channels=channel_states,
        failures=failures,
        successes=fold_counts(_successes(window_totals, window_ledger), aliases),
        inbound=_inbound(conn, node_id, window_totals, window_ledger, baseline),
        details=AliasedFailureDetails.over(
            StoreFailureDetails(
                conn,
                node_id,
                since_ns,
                until_ns,
                history_from_ns,
                likely=_likely(failures, channel_states, settings),
                window_failures=by_id,
            ),
            by_id,
            aliases,
        ),
        gaps=tuple(Gap(g.from_ns, g.to_ns) for g in stream_gaps(conn, since_ns, until_ns)),
        node_failures=node_failures,
        node_missed_msat=node_missed,
        unknown_amount=unknown_amount,
        node_rejected=node_rejected,
    )


def _likely(
    failures: Mapping[int, ChannelFailures],
    channels: Mapping[int, ChannelState],
    settings: AnalysisSettings,
) -> dict[FailureClass, frozenset[int]]:
    """Channels by the class that decides their recommendation: whose details (amounts,
    fee offers, fee history) the analysis will ask for.

    Only our channels with enough failures and missed fees to be reported (DESIGN §5)
    whose dominant class reaches 50 % (:func:`~lnflow.analysis.opportunities.deciding_class`:
    for any other, the recommendation asks nothing); any other channel's details are still
    read, one channel at a time, if asked for.
    """
    by_class: dict[FailureClass, set[int]] = {}
    min_missed_msat = settings.min_missed_sats * 1000
    for chan, f in failures.items():
        if (
            chan not in channels
            or f.failures < settings.min_failure_count
            or f.missed_dedup_msat < min_missed_msat
        ):
            continue
        cls = deciding_class(f)
        if cls is not None:
            by_class.setdefault(cls, set()).add(chan)
    return {cls: frozenset(chans) for cls, chans in by_class.items()}


# --------------------------------------------------------------------------- channels

# Every channel open now or closed at/after since, with its latest sample at or before
# until and its first sample in [since, until] (for the uptime ratio): one statement for
# all channels, each sample found by a correlated lookup on ix_channel_samples_chan_state
# (whose entries end with the row id, so "ts_ns DESC, id DESC LIMIT 1" is one seek).
_latest = channel_samples.alias("latest")
_first = channel_samples.alias("first")
_latest_id = (
    select(channel_samples.c.id)
    .where(_sample_of(channel_samples, channels.c.node_id, channels.c.chan_id))
    .where(channel_samples.c.ts_ns <= bindparam("until"))
    .order_by(channel_samples.c.ts_ns.desc(), channel_samples.c.id.desc())
    .limit(1)
    .correlate(channels)
    .scalar_subquery()
)
_first_id = (
    select(channel_samples.c.id)
    .where(_sample_of(channel_samples, channels.c.node_id, channels.c.chan_id))
    .where(channel_samples.c.ts_ns >= bindparam("since"))
    .where(channel_samples.c.ts_ns <= bindparam("until"))
    .order_by(channel_samples.c.ts_ns, channel_samples.c.id)
    .limit(1)
    .correlate(channels)
    .scalar_subquery()
)
_CHANNELS = (
    select(
        channels.c.chan_id,
        channels.c.remote_pubkey,
        channels.c.peer_alias,
        channels.c.closed_ns,
        _latest.c.capacity_sat,
        _latest.c.local_balance_sat,
        _latest.c.remote_balance_sat,
        _latest.c.local_reserve_sat,
        _latest.c.remote_reserve_sat,
        _latest.c.active,
        _latest.c.fee_base_msat,
        _latest.c.fee_rate_ppm,
        _latest.c.max_htlc_msat,
        _latest.c.uptime_s,
        _latest.c.lifetime_s,
        _first.c.id.label("first_id"),
        _first.c.uptime_s.label("first_uptime_s"),
        _first.c.lifetime_s.label("first_lifetime_s"),
    )
    .select_from(
        channels.join(_latest, _latest.c.id == _latest_id).outerjoin(
            _first, _first.c.id == _first_id
        )
    )
    .where(channels.c.node_id == bindparam("node"))
    .where(channels.c.closed_ns.is_(None) | (channels.c.closed_ns >= bindparam("since")))
    .order_by(channels.c.chan_id)
)

# The lowest local ratio among the window's samples of the given channels (REAL division:
# the same IEEE quotient as Python's int / int for balances below 2^53), read from
# ix_channel_samples_chan_state alone.
_ratio = cast(channel_samples.c.local_balance_sat, Float) / (
    channel_samples.c.local_balance_sat + channel_samples.c.remote_balance_sat
)
_MIN_LOCAL_RATIO = (
    select(channel_samples.c.chan_id, func.min(_ratio))
    .where(channel_samples.c.node_id == bindparam("node"))
    .where(channel_samples.c.chan_id.in_(bindparam("chans", expanding=True)))
    .where(channel_samples.c.ts_ns >= bindparam("since"))
    .where(channel_samples.c.ts_ns <= bindparam("until"))
    .where(channel_samples.c.local_balance_sat + channel_samples.c.remote_balance_sat > 0)
    .group_by(channel_samples.c.chan_id)
)


def _channels(
    conn: Connection, node_id: int, since_ns: int, until_ns: int, inbound_ratio: float
) -> dict[int, ChannelState]:
    """Channels open now or closed at/after ``since_ns`` that have a sample by ``until_ns``.

    ``min_local_ratio`` is read only for channels whose latest sample is in the window
    with a local ratio of at least ``inbound_ratio``: the lowest ratio of any other
    channel is below it (or it has no sample in the window), and it stays None.
    """
    params = {"node": node_id, "since": since_ns, "until": until_ns}
    rows = _rows(conn, _CHANNELS, params)  # tuples in the order _CHANNELS selects
    full = [
        row[0]
        for row in rows
        if row[15] is not None  # first_id: the latest sample is in the window
        and row[5] + row[6] > 0
        and row[5] / (row[5] + row[6]) >= inbound_ratio
    ]
    lowest: dict[int, float] = {}
    if full:
        lowest = {
            chan: float(ratio)
            for chan, ratio in _rows(conn, _MIN_LOCAL_RATIO, params | {"chans": full})
        }
    result: dict[int, ChannelState] = {}
    for (
        signed_id,
        pubkey,
        alias,
        closed_ns,
        capacity,
        local,
        remote,
        local_reserve,
        remote_reserve,
        active,
        fee_base,
        fee_ppm,
        max_htlc,
        uptime_s,
        lifetime_s,
        first_id,
        first_uptime_s,
        first_lifetime_s,
    ) in rows:
        uptime_ratio = None
        if first_id is not None:  # the latest sample is in the window too
            lifetime = lifetime_s - first_lifetime_s
            if lifetime > 0:
                uptime = (uptime_s - first_uptime_s) / lifetime
                uptime_ratio = min(1.0, max(0.0, uptime))
        chan_id = from_signed64(signed_id)
        result[chan_id] = ChannelState(
            chan_id=chan_id,
            peer_pubkey=pubkey,
            peer_alias=alias,
            capacity_sat=capacity,
            local_balance_sat=local,
            remote_balance_sat=remote,
            local_reserve_sat=local_reserve,
            remote_reserve_sat=remote_reserve,
            active=bool(active),
            closed=closed_ns is not None and closed_ns <= until_ns,
            fee_base_msat=fee_base,
            fee_rate_ppm=fee_ppm,
            max_htlc_msat=max_htlc,
            min_local_ratio=lowest.get(signed_id),
            uptime_ratio=uptime_ratio,
        )
    return result


# --------------------------------------------------------------------------- failures


def _failures(
    conn: Connection, node_id: int, window: _Span
) -> tuple[dict[int, ChannelFailures], int, int]:
    """Per outgoing channel (foreign ones included), plus node failures and dedup missed."""
    acc: dict[int, _FailureSums] = {}  # by signed outgoing channel id
    if window.has_rollups:
        _add_rollup_failures(conn, node_id, window, acc)
    for lo, hi in window.parts:
        # a channel whose failures of the hour all fall in [lo, hi): its hourly row;
        # any other channel failing in that hour: its raw rows
        params = {"node": node_id, "hour": lo // NS_PER_HOUR, "lo": lo, "hi": hi}
        _add_failure_rows(_rows(conn, _HOUR_FAILURES, params), acc)
        _add_raw_failures(conn, params, acc)
    result = {
        from_signed64(out): sums.channel_failures(from_signed64(out))
        for out, sums in sorted(acc.items())
    }
    node_failures = sum(f.failures for f in result.values())
    node_missed = sum(f.missed_dedup_msat for f in result.values())
    return result, node_failures, node_missed


# Local failures lnd gave no amount for (mailbox add failures, dust exposure, malformed
# onions, incoming-side link fails: missed fee unknown) and HTLCs an interceptor rejected,
# resolved in [lo, hi): few rows, each set on its own small partial index (0013).
_fa = forward_attempts
_UNKNOWN_AMOUNT = (
    select(func.coalesce(channel_refs.c.chan_id, 0), func.count())
    .select_from(_fa.outerjoin(channel_refs, channel_refs.c.id == _fa.c.outgoing_chan_ref))
    .where(_fa.c.outcome == literal_column(str(_FAILED_LOCAL)))
    .where(_fa.c.outgoing_amt_msat.is_(None))
    .where(_fa.c.resolved_ns >= bindparam("lo"), _fa.c.resolved_ns < bindparam("hi"))
    .where(_unindexed(_fa.c.node_id) == bindparam("node"))
    .group_by(_fa.c.outgoing_chan_ref)
)
_REJECTED = (
    select(func.count())
    .select_from(_fa)
    .where(_fa.c.outcome == literal_column(str(int(Outcome.REJECTED_LOCAL))))
    .where(_fa.c.resolved_ns >= bindparam("lo"), _fa.c.resolved_ns < bindparam("hi"))
    .where(_unindexed(_fa.c.node_id) == bindparam("node"))
)


def _unknown_and_rejected(
    conn: Connection, node_id: int, lo: int, hi: int
) -> tuple[dict[int, int], int]:
    """Failures with an unknown amount by outgoing channel (0: none), and rejections."""
    params = {"node": node_id, "lo": lo, "hi": hi}
    unknown = {from_signed64(chan): int(n) for chan, n in conn.execute(_UNKNOWN_AMOUNT, params)}
    return unknown, int(conn.scalar(_REJECTED, params) or 0)


_CLASSES = tuple(FailureClass)


@dataclass
class _FailureSums:
    first_ns: int
    last_ns: int
    failures: int = 0
    clusters: int = 0
    raw_msat: int = 0
    dedup_msat: int = 0
    # failures and raw missed msat of each class, in _CLASSES order (2 entries a class)
    per_class: list[int] = field(default_factory=lambda: [0] * (2 * len(_CLASSES)))
    # the incoming channels known one by one, and whether there were INCOMING_CAP or more
    incoming: set[int] = field(default_factory=set)
    incoming_many: bool = False

    @classmethod
    def of(
        cls, acc: dict[int, _FailureSums], out: int, first_ns: int, last_ns: int
    ) -> _FailureSums:
        """``acc``'s sums for channel ``out``, created or widened to cover the given times."""
        sums = acc.get(out)
        if sums is None:
            sums = acc[out] = cls(first_ns=first_ns, last_ns=last_ns)
        else:
            sums.first_ns = min(sums.first_ns, first_ns)
            sums.last_ns = max(sums.last_ns, last_ns)
        return sums

    def add_failures(self, cls: FailureClass, n: int, raw: int) -> None:
        self.failures += n
        self.raw_msat += raw
        i = 2 * (cls - 1)
        self.per_class[i] += n
        self.per_class[i + 1] += raw

    def channel_failures(self, chan_id: int) -> ChannelFailures:
        incoming = INCOMING_CAP if self.incoming_many else min(len(self.incoming), INCOMING_CAP)
        return ChannelFailures(
            chan_id=chan_id,
            failures=self.failures,
            clusters=self.clusters,
            missed_raw_msat=self.raw_msat,
            missed_dedup_msat=self.dedup_msat,
            incoming_channels=incoming,
            first_failure_ns=self.first_ns,
            last_failure_ns=self.last_ns,
            by_class={
                cls: ClassStats(n, raw)
                for cls, n, raw in zip(
                    _CLASSES, self.per_class[::2], self.per_class[1::2], strict=True
                )
                if n or raw
            },
        )


def _failure_source(
    table: Table, period: str, first: str, last: str, *hours: ColumnElement[int]
) -> Select[Any]:
    """A per-channel failure rollup's rows in one range of periods, in one shape."""
    t = table.c
    if not hours:
        hours = (t.hour, t.hour)
    return (
        select(
            t.outgoing_channel_id.label("out"),
            t.clusters,
            t.missed_dedup_msat,
            *(t[col] for pair in CLASS_COLUMNS for col in pair),
            t.incoming_lo,
            t.incoming_hi,
            t.incoming_many,
            hours[0].label("first_hour"),
            hours[1].label("last_hour"),
        )
        .where(t.node_id == bindparam("node"))
        .where(t[period].between(bindparam(first), bindparam(last)))
    )


_fd, _f6, _fh = failure_channel_daily, failure_channel_6h, failure_channel_hourly
_failure_rows = union_all(
    _failure_source(_fd, "day", "d0", "d1", _fd.c.first_hour, _fd.c.last_hour),
    _failure_source(_f6, "block", "c0", "c1", _f6.c.first_hour, _f6.c.last_hour),
    _failure_source(_f6, "block", "e0", "e1", _f6.c.first_hour, _f6.c.last_hour),
    _failure_source(_fh, "hour", "a0", "a1"),
    _failure_source(_fh, "hour", "b0", "b1"),
).subquery("rows")
_w = _failure_rows.c
# Per outgoing channel over the span's days and whole hours: the sums, the first and last
# hour, and what tells how many incoming channels there were, up to 3 (see
# _incoming_many).
_ns_per_hour: ColumnElement[int] = literal_column(str(NS_PER_HOUR))
_ROLLUP_FAILURES = select(
    _w.out,
    func.sum(_w.clusters),
    func.sum(_w.missed_dedup_msat),
    *(func.sum(_w[col]) for pair in CLASS_COLUMNS for col in pair),
    func.min(_w.first_hour) * _ns_per_hour,  # the first failure, to the hour
    (func.max(_w.last_hour) + 1) * _ns_per_hour - 1,  # the last failure, to the hour
    func.min(_w.incoming_lo),
    func.max(_w.incoming_hi),
    func.max(case((_w.incoming_many, 1), else_=0)),
    func.count(_w.incoming_lo.distinct()),
    func.count(_w.incoming_hi.distinct()),
    func.max(_w.incoming_lo),
    func.min(_w.incoming_hi),
).group_by(_w.out)


def _incoming_many(
    lo: int, hi: int, many: int, n_lo: int, n_hi: int, max_lo: int, min_hi: int
) -> bool:
    """Whether some periods together had at least 3 distinct incoming channels.

    Each period without ``incoming_many`` had exactly the ids {lo_i, hi_i}. Their union
    has a third id besides the smallest ``lo`` and the largest ``hi`` iff 3 or more
    distinct lo_i or hi_i exist, or the largest lo_i or the smallest hi_i lies strictly
    between them (otherwise every lo_i and hi_i is one of the two).
    """
    return bool(many) or n_lo >= 3 or n_hi >= 3 or lo < max_lo < hi or lo < min_hi < hi


def _range_params(node_id: int, span: _Span) -> dict[str, int]:
    """The parameters of a statement over the span's days, blocks and whole hours."""
    (d0, d1), ((c0, c1), (e0, e1)), ((a0, a1), (b0, b1)) = span.days, span.blocks, span.hours
    return {
        "node": node_id,
        "d0": d0,
        "d1": d1,
        "c0": c0,
        "c1": c1,
        "e0": e0,
        "e1": e1,
        "a0": a0,
        "a1": a1,
        "b0": b0,
        "b1": b1,
    }


# The rows of the hour of [lo, hi) whose failures all fall in [lo, hi), in the shape of
# _ROLLUP_FAILURES, with their failures' exact times: what the raw rows would count.
_hour_inside = and_(_fh.c.first_ns >= bindparam("lo"), _fh.c.last_ns < bindparam("hi"))
_HOUR_FAILURES = select(
    _fh.c.outgoing_channel_id,
    _fh.c.clusters,
    _fh.c.missed_dedup_msat,
    *(_fh.c[col] for pair in CLASS_COLUMNS for col in pair),
    _fh.c.first_ns,
    _fh.c.last_ns,
    _fh.c.incoming_lo,
    _fh.c.incoming_hi,
    case((_fh.c.incoming_many, 1), else_=0),
    # one row's incoming summary as _incoming_many reads a group's: one distinct lo and
    # one distinct hi, the largest lo and the smallest hi its own
    literal_column("1"),
    literal_column("1"),
    _fh.c.incoming_lo,
    _fh.c.incoming_hi,
).where(_fh.c.node_id == bindparam("node"), _fh.c.hour == bindparam("hour"), _hour_inside)


def _add_rollup_failures(
    conn: Connection, node_id: int, window: _Span, acc: dict[int, _FailureSums]
) -> None:
    """The window's whole days and hours, from the per-channel failure rollups."""
    _add_failure_rows(_rows(conn, _ROLLUP_FAILURES, _range_params(node_id, window)), acc)


def _add_failure_rows(rows: Sequence[Any], acc: dict[int, _FailureSums]) -> None:
    """Rows of _ROLLUP_FAILURES' shape added to ``acc``."""
    # SQLite's sums of integer columns are ints already: no int() per value (~1 k rows
    # of 12 class columns for a day)
    end = 3 + 2 * len(_CLASSES)
    for row in rows:
        out, clusters, dedup = row[0], row[1], row[2]
        counts = row[3:end]
        first_ns, last_ns, lo, hi, *incoming = row[end:]
        sums = _FailureSums.of(acc, out, first_ns, last_ns)
        sums.per_class = list(map(add, sums.per_class, counts))
        sums.failures += sum(counts[0::2])
        sums.raw_msat += sum(counts[1::2])
        sums.clusters += clusters
        sums.dedup_msat += dedup
        if _incoming_many(lo, hi, *incoming):
            sums.incoming_many = True
        else:
            sums.incoming.update((lo, hi))


_a, _c = forward_attempts, failure_clusters
_a_out, _a_in = channel_refs.alias("a_out"), channel_refs.alias("a_in")


def _raw_failures_of(cls: FailureClass, failures_col: str, *columns: Any) -> Select[Any]:
    """The hour's local failures of one class in [lo, hi), with the given columns.

    See _RESOLVE_SLACK_NS: one index range per outgoing channel whose rollup row of the
    hour counts failures of the class (every failure of the hour is counted there; the
    ``other`` column also counts class numbers this code does not know, so it may ask
    for a range that holds none), unless all of the row's failures fall in [lo, hi)
    (_HOUR_FAILURES reads those channels). ``columns`` may name the outgoing channel's SCID
    (``_fh.c.outgoing_channel_id``), the attempt (``_a``), its incoming channel
    (``_a_in``) and its cluster (``_c``).
    """
    number: ColumnElement[int] = literal_column(str(int(cls)))
    return (
        select(*columns)
        .select_from(
            _fh.join(
                _a_out,
                and_(
                    _a_out.c.node_id == _fh.c.node_id,
                    _a_out.c.chan_id == _fh.c.outgoing_channel_id,
                ),
            )
            .join(
                _a,
                and_(
                    _a.c.outgoing_chan_ref == _a_out.c.id,
                    _a.c.failure_class == number,
                    _a.c.resolved_ns >= bindparam("lo"),
                    _a.c.resolved_ns < bindparam("hi"),
                ),
            )
            .outerjoin(_a_in, _a_in.c.id == _a.c.incoming_chan_ref)
            .outerjoin(_c, _c.c.id == _a.c.cluster_id)
        )
        .where(_fh.c.node_id == bindparam("node"))
        .where(_fh.c.hour == bindparam("hour"))
        .where(_fh.c[failures_col] > 0)
        .where(~_hour_inside)  # those are read from the hourly rows (_HOUR_FAILURES)
        .where(_unindexed(_a.c.node_id) == bindparam("node"))
        .where(_a.c.outcome == literal_column(str(_FAILED_LOCAL)))
    )


_RAW_CLASSES = tuple(zip(FailureClass, (col for col, _ in CLASS_COLUMNS), strict=True))
# a failure recorded without a cluster (the recorder assigns every local failure one)
_no_cluster = or_(_a.c.cluster_id.is_(None), _c.c.first_ns.is_(None))
# Per (outgoing, incoming, class): failures, raw missed msat, the first and last
# resolved_ns, and the failures and raw missed msat of those without a cluster. One row
# per channel pair and class, however many failures the range holds.
_RAW_FAILURES = union_all(
    *(
        _raw_failures_of(
            cls,
            failures_col,
            _fh.c.outgoing_channel_id,
            func.coalesce(_a_in.c.chan_id, 0),
            literal_column(str(int(cls))),
            func.count(),
            func.sum(_a.c.missed_fee_msat),
            func.min(_a.c.resolved_ns),
            func.max(_a.c.resolved_ns),
            func.sum(case((_no_cluster, 1), else_=0)),
            func.sum(case((_no_cluster, _a.c.missed_fee_msat), else_=0)),
        ).group_by(_fh.c.outgoing_channel_id, _a_in.c.chan_id)
        for cls, failures_col in _RAW_CLASSES
    )
)
# Each cluster with a member in the range: its channel, first failure and largest missed
# fee in the range (over all classes)
_raw_members = union_all(
    *(
        _raw_failures_of(
            cls,
            failures_col,
            _fh.c.outgoing_channel_id.label("out"),
            _a_out.c.id.label("out_ref"),
            _a.c.cluster_id.label("cluster_id"),
            _c.c.first_ns.label("first_ns"),
            _a.c.missed_fee_msat.label("fee"),
        ).where(~_no_cluster)
        for cls, failures_col in _RAW_CLASSES
    )
).subquery("members")
_m = _raw_members.c
# the largest missed fee among a cluster's members resolved before lo
_cluster_max_before = func.coalesce(
    select(func.max(_a.c.missed_fee_msat))
    .where(_a.c.outgoing_chan_ref == _m.out_ref)
    .where(_a.c.failure_class.in_([literal_column(str(int(c))) for c in FailureClass]))
    # members resolved at or after the cluster's first failure: see _RESOLVE_SLACK_NS
    .where(_a.c.resolved_ns >= _m.first_ns - literal_column(str(_RESOLVE_SLACK_NS)))
    .where(_a.c.resolved_ns < bindparam("lo"))
    .where(_a.c.cluster_id == _m.cluster_id)
    .where(_unindexed(_a.c.node_id) == bindparam("node"))
    .where(_a.c.outcome == literal_column(str(_FAILED_LOCAL)))
    .scalar_subquery(),
    0,
)
# Per cluster: its channel, first failure, largest missed fee in the range (none below
# 0) and, for a cluster opened before the range, its largest fee before lo (looked up
# once per cluster, as the group is output)
_raw_clusters = (
    select(
        _m.out,
        _m.first_ns,
        case((func.max(_m.fee) > 0, func.max(_m.fee)), else_=0).label("top"),
        case((_m.first_ns >= bindparam("lo"), 0), else_=_cluster_max_before).label("before"),
    )
    .group_by(_m.out, _m.out_ref, _m.cluster_id, _m.first_ns)
    .subquery("grown")
)
_g = _raw_clusters.c
_opened_in_range = _g.first_ns >= bindparam("lo")
# Per outgoing channel: the clusters opened in the range (first_ns < hi: each has a
# member here), and the deduplicated missed fee as the growth of each cluster's largest
# fee within the range (all of it for a cluster opened in the range).
_RAW_CLUSTERS = select(
    _g.out,
    func.sum(case((and_(_opened_in_range, _g.first_ns < bindparam("hi")), 1), else_=0)),
    func.sum(
        case(
            (_opened_in_range, _g.top),
            (_g.top > _g.before, _g.top - _g.before),
            else_=0,
        )
    ),
).group_by(_g.out)


def _add_raw_failures(
    conn: Connection, params: Mapping[str, int], acc: dict[int, _FailureSums]
) -> None:
    """Local failures resolved in ``[lo, hi)`` (inside one clock ``hour``; ``params``
    also names the ``node``), from raw rows, of the channels whose failures of that hour
    do not all fall in the range.

    Counted as the rollups count them: a failure in its (outgoing, incoming, class) group;
    a cluster when its first member falls in the range; the deduplicated missed fee as
    the growth of each cluster's largest fee within the range. Summed in SQL to a few
    rows per channel: the range may hold a million failures.
    """
    for out, inc, cls, n, raw, first_ns, last_ns, lone, lone_raw in _rows(
        conn, _RAW_FAILURES, params
    ):
        sums = _FailureSums.of(acc, out, first_ns, last_ns)
        sums.add_failures(failure_class_of(cls), int(n), int(raw))
        sums.incoming.add(inc)
        # each failure without a cluster stands alone
        sums.clusters += int(lone)
        sums.dedup_msat += int(lone_raw)
    for out, clusters, dedup in _rows(conn, _RAW_CLUSTERS, params):
        sums = acc[out]
        sums.clusters += int(clusters)
        sums.dedup_msat += int(dedup)


# --------------------------------------------------------------------------- forwards


@dataclass(frozen=True, slots=True)
class _LedgerSums:
    """Settled forwards of one (incoming, outgoing) pair in one partial range (signed ids)."""

    chan_in: int
    chan_out: int
    forwards: int
    fee_msat: int


_LEDGER = (
    select(
        forwards.c.chan_id_in, forwards.c.chan_id_out, func.count(), func.sum(forwards.c.fee_msat)
    )
    .where(forwards.c.node_id == bindparam("node"))
    .where(forwards.c.timestamp_ns >= bindparam("lo"))
    .where(forwards.c.timestamp_ns < bindparam("hi"))
    .group_by(forwards.c.chan_id_in, forwards.c.chan_id_out)
)
_wd, _w6, _wh = forward_channel_daily, forward_channel_6h, forward_channel_hourly


def _forward_source(table: Table, period: str, first: str, last: str) -> Select[Any]:
    t = table.c
    return (
        select(t.chan_id, t.forwards_out, t.forwards_in, t.fee_in_msat)
        .where(t.node_id == bindparam("node"))
        .where(t[period].between(bindparam(first), bindparam(last)))
    )


_forward_rows = union_all(
    _forward_source(_wd, "day", "d0", "d1"),
    _forward_source(_w6, "block", "c0", "c1"),
    _forward_source(_w6, "block", "e0", "e1"),
    _forward_source(_wh, "hour", "a0", "a1"),
    _forward_source(_wh, "hour", "b0", "b1"),
).subquery("rows")
# per channel over the span's days and whole hours: forwards out of it, fees in via it
_ROLLUP_FORWARDS = select(
    _forward_rows.c.chan_id,
    func.sum(_forward_rows.c.forwards_out),
    func.sum(_forward_rows.c.forwards_in),
    func.sum(_forward_rows.c.fee_in_msat),
).group_by(_forward_rows.c.chan_id)


def _forward_totals(
    conn: Connection, node_id: int, span: _Span
) -> dict[int, tuple[int, int | None]]:
    """(forwards out, fees in) per channel (signed id) over the span's days and hours.

    The fees are None for a channel no forward came in via.
    """
    if not span.has_rollups:
        return {}
    rows = _rows(conn, _ROLLUP_FORWARDS, _range_params(node_id, span))
    return {chan: (int(n_out), int(fee) if n_in else None) for chan, n_out, n_in, fee in rows}


def _ledger(conn: Connection, node_id: int, parts: Sequence[tuple[int, int]]) -> list[_LedgerSums]:
    """The ledger's forwards in each partial range, read on ``(node_id, timestamp_ns)``."""
    result: list[_LedgerSums] = []
    for lo, hi in parts:
        rows = _rows(conn, _LEDGER, {"node": node_id, "lo": lo, "hi": hi})
        result.extend(_LedgerSums(cin, cout, int(n), int(fee)) for cin, cout, n, fee in rows)
    return result


def _successes(
    window_totals: dict[int, tuple[int, int | None]], window_ledger: Sequence[_LedgerSums]
) -> dict[int, int]:
    """Settled forwards out of each channel in the window."""
    counts = {chan: n for chan, (n, _) in window_totals.items() if n}
    for sums in window_ledger:
        counts[sums.chan_out] = counts.get(sums.chan_out, 0) + sums.forwards
    return {from_signed64(chan): n for chan, n in sorted(counts.items())}


def _inbound(
    conn: Connection,
    node_id: int,
    window_totals: dict[int, tuple[int, int | None]],
    window_ledger: Sequence[_LedgerSums],
    baseline: _Span,
) -> dict[int, InboundBaseline]:
    """Fees of forwards in via each channel: in the baseline before the window, and in it."""
    base = _inbound_fees(
        _forward_totals(conn, node_id, baseline), _ledger(conn, node_id, baseline.parts)
    )
    in_window = _inbound_fees(window_totals, window_ledger)
    return {
        from_signed64(chan): InboundBaseline(
            from_signed64(chan), base.get(chan, 0), in_window.get(chan, 0)
        )
        for chan in sorted(base.keys() | in_window.keys())
    }


def _inbound_fees(
    totals: dict[int, tuple[int, int | None]], ledger: Sequence[_LedgerSums]
) -> dict[int, int]:
    """Fees of forwards in via each channel (signed id) that had any forward in via it."""
    fees = {chan: fee for chan, (_, fee) in totals.items() if fee is not None}
    for sums in ledger:
        fees[sums.chan_in] = fees.get(sums.chan_in, 0) + sums.fee_msat
    return fees
