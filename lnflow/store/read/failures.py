"""Local failures of a window per outgoing channel, and the node totals.

Whole weeks, days, blocks and hours (:class:`~.window.Span`,
:meth:`~.window.Span.failure_params`) come from the per-channel failure rollups, summed
in SQL to one row per channel. The partial hour at each end (none when a
boundary falls on a full hour) comes from raw rows, counted on the basis the rollups are
filled on: a local failure at its LINK_FAIL time (``forward_attempts.resolved_ns``), a
demand cluster at its first member (``failure_clusters.first_ns``), the growth of a
cluster's largest missed fee (the deduplicated figure) when the member that raised it
failed. Channels whose failures of a partial hour all fall inside the range are read from
their hourly row instead (same figures, exact times).

The failures lnd gave no amount for (:func:`unknown_and_rejected`) come from the same
rollups' ``unknown_amount`` when the window starts after the node's retention horizon,
their partial hours from raw rows; from raw rows alone otherwise.

Precision: ``first_failure_ns``/``last_failure_ns`` are exact for failures in a partial
hour, the first and last nanosecond of a whole hour otherwise; ``incoming_channels`` is
exact up to :data:`~lnflow.analysis.model.INCOMING_CAP`; a stored class number this code
does not know counts as ``other``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import add
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    union_all,
)

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import INCOMING_CAP, ChannelFailures, ClassStats
from lnflow.domain import from_signed64
from lnflow.store.read.speed import AnyRow, rows
from lnflow.store.read.sql import (
    FAILED_LOCAL,
    REJECTED_LOCAL,
    number,
    starts_after_horizon,
    unindexed,
)
from lnflow.store.read.window import Span
from lnflow.store.rollups import CLASS_COLUMNS, NS_PER_HOUR
from lnflow.store.schema import (
    channel_refs,
    failure_channel_6h,
    failure_channel_daily,
    failure_channel_hourly,
    failure_channel_weekly,
    failure_clusters,
    forward_attempts,
)

__all__ = ["WindowFailures", "failure_class_of", "unknown_and_rejected", "window_failures"]

# Members of a demand cluster resolved before a partial range are looked up from the
# cluster's first failure minus this slack: a member's resolved_ns is its LINK_FAIL time
# and the cluster's first_ns the earliest of those, so the slack only guards against a
# final event dated before its LINK_FAIL (lnd does not send one); it also bounds each read.
_RESOLVE_SLACK_NS = NS_PER_HOUR

_CLASSES = tuple(FailureClass)
_new_tuple = tuple.__new__
_FAILURE_COLUMNS = tuple(failures for failures, _ in CLASS_COLUMNS)


def failure_class_of(number: int) -> FailureClass:
    """The class a stored ``failure_class`` number stands for (unknown numbers: other)."""
    try:
        return FailureClass(number)
    except ValueError:
        return FailureClass.OTHER


class _ChannelTally:
    """One outgoing channel's failures as they are added up from several sources."""

    __slots__ = (
        "class_failures",
        "class_missed",
        "clusters",
        "dedup_msat",
        "failures",
        "first_ns",
        "incoming",
        "incoming_many",
        "last_ns",
        "raw_msat",
        "unknown",
    )

    def __init__(
        self,
        first_ns: int,
        last_ns: int,
        failures: int = 0,
        clusters: int = 0,
        raw_msat: int = 0,
        dedup_msat: int = 0,
        class_failures: list[int] | None = None,
        class_missed: list[int] | None = None,
        unknown: int = 0,
    ) -> None:
        self.first_ns = first_ns
        self.last_ns = last_ns
        self.failures = failures
        self.clusters = clusters
        self.raw_msat = raw_msat
        self.dedup_msat = dedup_msat
        # of the failures, those with no amount (counted from the rollups' whole periods only)
        self.unknown = unknown
        # failures and raw missed msat of each class, in class order
        self.class_failures = class_failures or [0] * len(_CLASSES)
        self.class_missed = class_missed or [0] * len(_CLASSES)
        # the incoming channels known one by one, and whether there were INCOMING_CAP or more
        self.incoming: set[int] = set()
        self.incoming_many = False

    def channel_failures(self, chan_id: int) -> ChannelFailures:
        incoming = INCOMING_CAP if self.incoming_many else min(len(self.incoming), INCOMING_CAP)
        # (one per channel of the window: positional, each ClassStats made by
        # tuple.__new__, which skips the named tuple's Python-level __new__)
        classes = zip(_CLASSES, self.class_failures, self.class_missed, strict=True)
        return ChannelFailures(
            chan_id,
            self.failures,
            self.clusters,
            self.raw_msat,
            self.dedup_msat,
            incoming,
            self.first_ns,
            self.last_ns,
            {cls: _new_tuple(ClassStats, (n, raw)) for cls, n, raw in classes if n or raw},
        )


class _Tallies(dict[int, _ChannelTally]):
    """Tallies by signed outgoing channel id."""

    def of(self, out: int, first_ns: int, last_ns: int) -> _ChannelTally:
        """The channel's tally, created or widened to cover the given times."""
        tally = self.get(out)
        if tally is None:
            tally = self[out] = _ChannelTally(first_ns, last_ns)
        else:
            if first_ns < tally.first_ns:
                tally.first_ns = first_ns
            if last_ns > tally.last_ns:
                tally.last_ns = last_ns
        return tally


# --------------------------------------------------------------------------- rollups


def _rollup_source(
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
            t.unknown_amount,
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


_daily, _blocks, _hourly = failure_channel_daily, failure_channel_6h, failure_channel_hourly
_weekly = failure_channel_weekly
# one statement whatever the window: a range with no whole week reads an empty week range
_rollup_rows = union_all(
    _rollup_source(_daily, "day", "d0", "d1", _daily.c.first_hour, _daily.c.last_hour),
    _rollup_source(_weekly, "week", "w0", "w1", _weekly.c.first_hour, _weekly.c.last_hour),
    _rollup_source(_daily, "day", "f0", "f1", _daily.c.first_hour, _daily.c.last_hour),
    _rollup_source(_blocks, "block", "c0", "c1", _blocks.c.first_hour, _blocks.c.last_hour),
    _rollup_source(_blocks, "block", "e0", "e1", _blocks.c.first_hour, _blocks.c.last_hour),
    _rollup_source(_hourly, "hour", "a0", "a1"),
    _rollup_source(_hourly, "hour", "b0", "b1"),
).subquery("rows")
_rolled = _rollup_rows.c
_ns_per_hour = number(NS_PER_HOUR)
# Per outgoing channel over the span's weeks, days and whole hours: the sums, the first and last
# failure to the hour, and what tells how many incoming channels there were, up to 3 (see
# the "many" test below).
_ROLLUP_FAILURES = select(
    _rolled.out,
    func.sum(_rolled.clusters).label("clusters"),
    func.sum(_rolled.missed_dedup_msat).label("dedup_msat"),
    func.sum(_rolled.unknown_amount).label("unknown"),
    *(func.sum(_rolled[col]).label(col) for pair in CLASS_COLUMNS for col in pair),
    (func.min(_rolled.first_hour) * _ns_per_hour).label("first_ns"),
    ((func.max(_rolled.last_hour) + 1) * _ns_per_hour - 1).label("last_ns"),
    func.min(_rolled.incoming_lo).label("lo"),
    func.max(_rolled.incoming_hi).label("hi"),
    func.max(case((_rolled.incoming_many, 1), else_=0)).label("many"),
    func.count(_rolled.incoming_lo.distinct()).label("n_lo"),
    func.count(_rolled.incoming_hi.distinct()).label("n_hi"),
    func.max(_rolled.incoming_lo).label("max_lo"),
    func.min(_rolled.incoming_hi).label("min_hi"),
).group_by(_rolled.out)

# The rows of the hour of [lo, hi) whose failures all fall in [lo, hi), in the shape of
# _ROLLUP_FAILURES, with their failures' exact times: what the raw rows would count.
_hour_inside = and_(_hourly.c.first_ns >= bindparam("lo"), _hourly.c.last_ns < bindparam("hi"))
_HOUR_FAILURES = select(
    _hourly.c.outgoing_channel_id.label("out"),
    _hourly.c.clusters,
    _hourly.c.missed_dedup_msat.label("dedup_msat"),
    # the partial hour's failures with no amount are counted from raw rows for every
    # channel (_UNKNOWN_AMOUNT)
    literal_column("0").label("unknown"),
    *(_hourly.c[col] for pair in CLASS_COLUMNS for col in pair),
    _hourly.c.first_ns,
    _hourly.c.last_ns,
    _hourly.c.incoming_lo.label("lo"),
    _hourly.c.incoming_hi.label("hi"),
    case((_hourly.c.incoming_many, 1), else_=0).label("many"),
    # one row's incoming summary as the "many" test reads a group's: one distinct lo and
    # one distinct hi, the largest lo and the smallest hi its own
    literal_column("1").label("n_lo"),
    literal_column("1").label("n_hi"),
    _hourly.c.incoming_lo.label("max_lo"),
    _hourly.c.incoming_hi.label("min_hi"),
).where(_hourly.c.node_id == bindparam("node"), _hourly.c.hour == bindparam("hour"), _hour_inside)


# Whether some periods together had at least 3 distinct incoming channels (the "many" test
# of _add_rollup_rows): each period without ``incoming_many`` had exactly the ids
# {lo_i, hi_i}. Their union has a third id besides the smallest ``lo`` and the largest
# ``hi`` iff 3 or more distinct lo_i or hi_i exist, or the largest lo_i or the smallest
# hi_i lies strictly between them (otherwise every lo_i and hi_i is one of the two).


def _add_rollup_rows(rows: Iterable[AnyRow], tallies: _Tallies) -> None:
    """Rows of _ROLLUP_FAILURES' shape added to the tallies."""
    # (unpacked in column order: a column read by name costs ~1 µs, ~25 a channel)
    for row in rows:
        out, clusters, dedup_msat, unknown, *by_class = row[:-9]
        first_ns, last_ns, lo, hi, many, n_lo, n_hi, max_lo, min_hi = row[-9:]
        # SQLite's sums of integer columns are ints already (~1 000 rows a window); the
        # class columns come in CLASS_COLUMNS' pairs (failures, missed msat)
        failures = by_class[0::2]
        missed = by_class[1::2]
        tally = tallies.get(out)
        if tally is None:  # the channel's first row (every row of the window's rollups)
            tally = tallies[out] = _ChannelTally(
                first_ns,
                last_ns,
                sum(failures),
                clusters,
                sum(missed),
                dedup_msat,
                failures,
                missed,
                unknown,
            )
        else:
            if first_ns < tally.first_ns:
                tally.first_ns = first_ns
            if last_ns > tally.last_ns:
                tally.last_ns = last_ns
            tally.class_failures = list(map(add, tally.class_failures, failures))
            tally.class_missed = list(map(add, tally.class_missed, missed))
            tally.failures += sum(failures)
            tally.raw_msat += sum(missed)
            tally.clusters += clusters
            tally.dedup_msat += dedup_msat
            tally.unknown += unknown
        # the "many" test (above)
        if many or n_lo >= 3 or n_hi >= 3 or lo < max_lo < hi or lo < min_hi < hi:
            tally.incoming_many = True
        else:
            tally.incoming.update((lo, hi))


# --------------------------------------------------------------------------- raw rows

_attempt, _cluster = forward_attempts, failure_clusters
_attempt_out, _attempt_in = channel_refs.alias("a_out"), channel_refs.alias("a_in")


def _raw_failures_of(cls: FailureClass, failures_col: str, *columns: Any) -> Select[Any]:
    """The hour's local failures of one class in [lo, hi), with the given columns.

    One index range of ``ix_forward_attempts_local`` per outgoing channel whose rollup row
    of the hour counts failures of the class (every failure of the hour is counted there;
    the ``other`` column also counts class numbers this code does not know, so it may ask
    for a range that holds none), unless all of the row's failures fall in [lo, hi)
    (_HOUR_FAILURES reads those channels). ``columns`` may name the outgoing channel's
    SCID, the attempt, its incoming channel's ref and its cluster.
    """
    return (
        select(*columns)
        .select_from(
            _hourly.join(
                _attempt_out,
                and_(
                    _attempt_out.c.node_id == _hourly.c.node_id,
                    _attempt_out.c.chan_id == _hourly.c.outgoing_channel_id,
                ),
            )
            .join(
                _attempt,
                and_(
                    _attempt.c.outgoing_chan_ref == _attempt_out.c.id,
                    _attempt.c.failure_class == number(cls),
                    _attempt.c.resolved_ns >= bindparam("lo"),
                    _attempt.c.resolved_ns < bindparam("hi"),
                ),
            )
            .outerjoin(_attempt_in, _attempt_in.c.id == _attempt.c.incoming_chan_ref)
            .outerjoin(_cluster, _cluster.c.id == _attempt.c.cluster_id)
        )
        .where(_hourly.c.node_id == bindparam("node"))
        .where(_hourly.c.hour == bindparam("hour"))
        .where(_hourly.c[failures_col] > 0)
        .where(~_hour_inside)  # those are read from the hourly rows (_HOUR_FAILURES)
        .where(unindexed(_attempt.c.node_id) == bindparam("node"))
        .where(_attempt.c.outcome == FAILED_LOCAL)
    )


_RAW_CLASSES = tuple(zip(FailureClass, _FAILURE_COLUMNS, strict=True))
# a failure recorded without a cluster (the recorder assigns every local failure one)
_no_cluster = or_(_attempt.c.cluster_id.is_(None), _cluster.c.first_ns.is_(None))
# Per (outgoing, incoming, class): failures, raw missed msat, the first and last
# resolved_ns, and the failures and raw missed msat of those without a cluster. One row
# per channel pair and class, however many failures the range holds.
_RAW_FAILURES = union_all(
    *(
        _raw_failures_of(
            cls,
            failures_col,
            _hourly.c.outgoing_channel_id.label("out"),
            func.coalesce(_attempt_in.c.chan_id, 0).label("incoming"),
            number(cls).label("failure_class"),
            func.count().label("failures"),
            func.sum(_attempt.c.missed_fee_msat).label("missed_msat"),
            func.min(_attempt.c.resolved_ns).label("first_ns"),
            func.max(_attempt.c.resolved_ns).label("last_ns"),
            func.sum(case((_no_cluster, 1), else_=0)).label("lone"),
            func.sum(case((_no_cluster, _attempt.c.missed_fee_msat), else_=0)).label("lone_msat"),
        ).group_by(_hourly.c.outgoing_channel_id, _attempt_in.c.chan_id)
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
            _hourly.c.outgoing_channel_id.label("out"),
            _attempt_out.c.id.label("out_ref"),
            _attempt.c.cluster_id.label("cluster_id"),
            _cluster.c.first_ns.label("first_ns"),
            _attempt.c.missed_fee_msat.label("fee"),
        ).where(~_no_cluster)
        for cls, failures_col in _RAW_CLASSES
    )
).subquery("members")
_member = _raw_members.c
# the largest missed fee among a cluster's members resolved before lo
_cluster_max_before = func.coalesce(
    select(func.max(_attempt.c.missed_fee_msat))
    .where(_attempt.c.outgoing_chan_ref == _member.out_ref)
    .where(_attempt.c.failure_class.in_([number(c) for c in FailureClass]))
    # members resolved at or after the cluster's first failure: see _RESOLVE_SLACK_NS
    .where(_attempt.c.resolved_ns >= _member.first_ns - number(_RESOLVE_SLACK_NS))
    .where(_attempt.c.resolved_ns < bindparam("lo"))
    .where(_attempt.c.cluster_id == _member.cluster_id)
    .where(unindexed(_attempt.c.node_id) == bindparam("node"))
    .where(_attempt.c.outcome == FAILED_LOCAL)
    .scalar_subquery(),
    0,
)
# Per cluster: its channel, first failure, largest missed fee in the range (none below
# 0) and, for a cluster opened before the range, its largest fee before lo (looked up
# once per cluster, as the group is output)
_raw_clusters = (
    select(
        _member.out,
        _member.first_ns,
        case((func.max(_member.fee) > 0, func.max(_member.fee)), else_=0).label("top"),
        case((_member.first_ns >= bindparam("lo"), 0), else_=_cluster_max_before).label("before"),
    )
    .group_by(_member.out, _member.out_ref, _member.cluster_id, _member.first_ns)
    .subquery("grown")
)
_grown = _raw_clusters.c
_opened_in_range = _grown.first_ns >= bindparam("lo")
# Per outgoing channel: the clusters opened in the range (first_ns < hi: each has a
# member here), and the deduplicated missed fee as the growth of each cluster's largest
# fee within the range (all of it for a cluster opened in the range).
_RAW_CLUSTERS = select(
    _grown.out,
    func.sum(case((and_(_opened_in_range, _grown.first_ns < bindparam("hi")), 1), else_=0)).label(
        "clusters"
    ),
    func.sum(
        case(
            (_opened_in_range, _grown.top),
            (_grown.top > _grown.before, _grown.top - _grown.before),
            else_=0,
        )
    ).label("dedup_msat"),
).group_by(_grown.out)


def _add_raw_failures(conn: Connection, params: Mapping[str, int], tallies: _Tallies) -> None:
    """Local failures resolved in ``[lo, hi)`` (inside one clock ``hour``; ``params``
    also names the ``node``), from raw rows, of the channels whose failures of that hour
    do not all fall in the range.

    Counted as the rollups count them: a failure in its (outgoing, incoming, class) group;
    a cluster when its first member falls in the range; the deduplicated missed fee as
    the growth of each cluster's largest fee within the range. Summed in SQL to a few
    rows per channel: the range may hold a million failures.
    """
    # (rows unpacked in column order: a column read by name costs ~1 µs)
    for out, incoming, cls, failures, missed_msat, first_ns, last_ns, lone, lone_msat in rows(
        conn, _RAW_FAILURES, params
    ):
        tally = tallies.of(out, first_ns, last_ns)
        # the class numbers are the statement's own (_RAW_CLASSES): FailureClass values,
        # in class order from 1
        tally.failures += failures
        tally.raw_msat += missed_msat
        tally.class_failures[cls - 1] += failures
        tally.class_missed[cls - 1] += missed_msat
        tally.incoming.add(incoming)
        # each failure without a cluster stands alone
        tally.clusters += lone
        tally.dedup_msat += lone_msat
    for out, clusters, dedup_msat in rows(conn, _RAW_CLUSTERS, params):
        tally = tallies[out]
        tally.clusters += clusters
        tally.dedup_msat += dedup_msat


# --------------------------------------------------------------------------- the window


@dataclass(frozen=True, slots=True)
class WindowFailures:
    """Failures per outgoing channel as stored (unsigned ids, foreign ones included), and
    the node totals: failures, missed fees deduplicated and raw.

    ``unknown_rolled``: per outgoing channel (unsigned, 0 for none), the failures with no
    amount of the span's whole periods (not its partial hours), from the rollups (channels
    with none left out).
    """

    by_channel: Mapping[int, ChannelFailures]
    failures: int
    missed_dedup_msat: int
    missed_raw_msat: int
    unknown_rolled: Mapping[int, int]


def window_failures(conn: Connection, node_id: int, window: Span) -> WindowFailures:
    """The window's local failures per outgoing channel."""
    tallies = _Tallies()
    if window.has_rollups:
        params = {"node": node_id} | window.failure_params()
        _add_rollup_rows(rows(conn, _ROLLUP_FAILURES, params), tallies)
    for lo, hi in window.parts:
        # a channel whose failures of the hour all fall in [lo, hi): its hourly row;
        # any other channel failing in that hour: its raw rows
        params = {"node": node_id, "hour": lo // NS_PER_HOUR, "lo": lo, "hi": hi}
        _add_rollup_rows(rows(conn, _HOUR_FAILURES, params), tallies)
        _add_raw_failures(conn, params, tallies)
    by_channel = {}
    unknown_rolled = {}
    for out in sorted(tallies):
        chan_id = from_signed64(out)
        tally = tallies[out]
        by_channel[chan_id] = tally.channel_failures(chan_id)
        if tally.unknown:
            unknown_rolled[chan_id] = tally.unknown
    tallied = tallies.values()
    return WindowFailures(
        by_channel=by_channel,
        failures=sum(t.failures for t in tallied),
        missed_dedup_msat=sum(t.dedup_msat for t in tallied),
        missed_raw_msat=sum(t.raw_msat for t in tallied),
        unknown_rolled=unknown_rolled,
    )


# Local failures lnd gave no amount for (mailbox add failures, dust exposure, malformed
# onions, incoming-side link fails: missed fee unknown) and HTLCs an interceptor rejected,
# resolved in [lo, hi): few rows, each set on its own small partial index (0013). The
# former per outgoing channel are also counted in the per-channel failure rollups (0025).
_UNKNOWN_AMOUNT: Select[*tuple[Any, ...]] = (
    select(
        func.coalesce(channel_refs.c.chan_id, 0).label("chan_id"),
        func.count().label("failures"),
    )
    .select_from(
        _attempt.outerjoin(channel_refs, channel_refs.c.id == _attempt.c.outgoing_chan_ref)
    )
    .where(_attempt.c.outcome == FAILED_LOCAL)
    .where(_attempt.c.outgoing_amt_msat.is_(None))
    .where(_attempt.c.resolved_ns >= bindparam("lo"), _attempt.c.resolved_ns < bindparam("hi"))
    .where(unindexed(_attempt.c.node_id) == bindparam("node"))
    # the ref's SCID named too: PostgreSQL does not infer it from the ref (same groups)
    .group_by(_attempt.c.outgoing_chan_ref, channel_refs.c.chan_id)
)
_REJECTED = (
    select(func.count())
    .select_from(_attempt)
    .where(_attempt.c.outcome == REJECTED_LOCAL)
    .where(_attempt.c.resolved_ns >= bindparam("lo"), _attempt.c.resolved_ns < bindparam("hi"))
    .where(unindexed(_attempt.c.node_id) == bindparam("node"))
)


def unknown_and_rejected(
    conn: Connection,
    node_id: int,
    lo: int,
    hi: int,
    rolled: tuple[Span, WindowFailures] | None = None,
) -> tuple[dict[int, int], int]:
    """Failures with an unknown amount by outgoing channel (0: none), and rejections, of
    ``[lo, hi)``.

    ``rolled``: the window's span and failures (:func:`window_failures`); when the span
    has whole periods and starts after the node's retention horizon (every raw failure
    the rollups count there is kept), the failures with no amount of those periods are
    the rollups', and only its partial hours are counted from raw rows. Otherwise all are
    counted from raw rows: a window reaching back to the horizon may hold periods whose
    raw rows are gone, which the rollups still count.
    """
    params = {"node": node_id, "lo": lo, "hi": hi}
    unknown: dict[int, int]
    if rolled is not None and rolled[0].has_rollups and starts_after_horizon(conn, node_id, lo):
        span, failures = rolled
        unknown = dict(failures.unknown_rolled)
        ranges: Iterable[tuple[int, int]] = span.parts
    else:
        unknown, ranges = {}, ((lo, hi),)
    # (rows unpacked in column order: hundreds of channels a window)
    for part_lo, part_hi in ranges:
        part = {"node": node_id, "lo": part_lo, "hi": part_hi}
        for chan_id, n in rows(conn, _UNKNOWN_AMOUNT, part):
            chan = from_signed64(chan_id)
            unknown[chan] = unknown.get(chan, 0) + int(n)
    ((rejected,),) = rows(conn, _REJECTED, params)
    return unknown, int(rejected or 0)
