"""Building the analysis input (:class:`lnflow.analysis.model.AnalysisInput`) from the store.

The window is exact: :func:`window_for` gives ``[until_ns − hours h, until_ns)`` and every
figure describes what happened in that half-open range, so a window is always ``hours``
long and the monthly extrapolation (× 720 / hours) scales what was really seen.

Where the figures come from:

- whole clock hours inside the window are read from the hourly rollups, so a long window
  (720 h) costs a few rollup queries;
- the partial hour at each end (none when a boundary falls on a full hour) is read from
  raw rows, on the same timestamp basis the rollups are filled on: a local failure
  counts at its LINK_FAIL time (``forward_attempts.resolved_ns``), a demand cluster at
  its first member (``failure_clusters.first_ns``), the growth of a cluster's missed fee
  (the deduplicated figure) when the member that raised it failed, and a settled forward
  at its ledger time (``forwards.timestamp_ns``);
- the inbound baseline ``[since_ns − baseline_days, since_ns)`` is split the same way.

Precision and boundaries:

- ``first_failure_ns``/``last_failure_ns`` are exact for failures in a partial hour; for
  a whole hour they are its first and its last nanosecond (rollups have no finer time);
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

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Connection, and_, func, select
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import (
    AnalysisInput,
    AnalysisSettings,
    ChannelFailures,
    ChannelState,
    ClassStats,
    FeePoint,
    Gap,
    InboundBaseline,
)
from lnflow.attempts import Outcome
from lnflow.domain import from_signed64, to_signed64
from lnflow.store.queries import stream_gaps
from lnflow.store.schema import (
    channel_samples,
    channels,
    daemon_state,
    failure_clusters,
    failure_rollups_hourly,
    forward_attempts,
    forward_rollups_hourly,
    forwards,
    nodes,
)
from lnflow.store.writer import NS_PER_HOUR

__all__ = [
    "StoreFailureDetails",
    "failure_class_of",
    "load_analysis_input",
    "node_id_of",
    "window_for",
]

_FAILED_LOCAL = int(Outcome.FAILED_LOCAL)

# Local failures of a partial hour are selected by resolved_ns (their LINK_FAIL time, the
# time the rollups count them at), which has no index. Each such query therefore walks
# ix_forward_attempts_out_seen: per outgoing channel (those with a rollup row in that
# hour: every failure of the hour has one), first_seen_ns from the range start minus this
# slack up to the range end. The upper end is exact (first_seen_ns <= resolved_ns:
# timestamps merge by minimum). The lower one holds because lnd reports a local failure
# as it refuses the HTLC: the LINK_FAIL is the attempt's first event or comes moments
# after it, well within the attempt timeout (default 600 s). One hour of slack is ample
# for that and still bounds each read to a little over an hour of the channel's
# attempts, however large the table grows. (A failure resolved more than an hour after
# its first event would count in the rollups' whole hours, but not in a partial hour.)
_RESOLVE_SLACK_NS = NS_PER_HOUR


def _unindexed(col: ColumnElement[int]) -> ColumnElement[int]:
    """``+col``: the same value, which SQLite's planner will not look up in an index.

    For the node_id condition of the ``forward_attempts`` reads: without table statistics
    SQLite prefers the unique (node_id, ...) index over ix_forward_attempts_out_seen, and
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


@dataclass(frozen=True, slots=True)
class _Span:
    """``[lo, hi)`` as whole clock hours (read from rollups) plus the partial rest."""

    first_hour: int  # whole hours first_hour .. end_hour − 1 (none when equal)
    end_hour: int
    parts: tuple[tuple[int, int], ...]  # partial ranges [lo, hi), each inside one clock hour

    @property
    def has_hours(self) -> bool:
        return self.first_hour < self.end_hour


def _span(lo: int, hi: int) -> _Span:
    if lo >= hi:
        return _Span(0, 0, ())
    first = -(-lo // NS_PER_HOUR)  # the first hour starting at or after lo
    end = hi // NS_PER_HOUR  # the hour hi falls in (not whole unless hi is its start)
    if first > end:  # lo and hi inside one clock hour
        return _Span(first, first, ((lo, hi),))
    parts = []
    if lo < first * NS_PER_HOUR:
        parts.append((lo, first * NS_PER_HOUR))
    if end * NS_PER_HOUR < hi:
        parts.append((end * NS_PER_HOUR, hi))
    return _Span(first, end, tuple(parts))


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


@dataclass(eq=False)
class StoreFailureDetails:
    """:class:`~lnflow.analysis.model.FailureDetails` read lazily from ``forward_attempts``.

    The failures are those the counts describe: ``since_ns <= resolved_ns < until_ns``.
    Each method runs one query (on index ``ix_forward_attempts_out_seen``, see
    ``_RESOLVE_SLACK_NS``) the first time it is asked for a channel, and remembers the
    answer. It uses ``conn``, so the caller keeps that connection open until the analysis
    has finished with the input.
    """

    conn: Connection
    node_id: int
    since_ns: int
    until_ns: int
    _amounts: dict[tuple[int, FailureClass], tuple[int, ...]] = field(
        default_factory=dict, repr=False
    )
    _offers: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict, repr=False)

    def _local_failures(self, chan_id: int, cls: FailureClass) -> list[tuple[int, int]]:
        """(missed fee, outgoing amount) of the channel's local failures of this class."""
        t = forward_attempts
        rows = self.conn.execute(
            select(t.c.missed_fee_msat, t.c.outgoing_amt_msat)
            .where(t.c.outgoing_channel_id == to_signed64(chan_id))
            .where(t.c.first_seen_ns >= self.since_ns - _RESOLVE_SLACK_NS)
            .where(t.c.first_seen_ns < self.until_ns)
            .where(t.c.resolved_ns >= self.since_ns)
            .where(t.c.resolved_ns < self.until_ns)
            .where(_unindexed(t.c.node_id) == self.node_id)
            .where(t.c.outcome == _FAILED_LOCAL)
            .where(t.c.failure_class == int(cls))
            .where(t.c.outgoing_amt_msat.is_not(None))
            .order_by(t.c.resolved_ns, t.c.id)
        )
        return [(int(fee), int(amount)) for fee, amount in rows]

    def amounts_msat(self, chan_id: int, cls: FailureClass) -> Sequence[int]:
        key = (chan_id, cls)
        if key not in self._amounts:
            self._amounts[key] = tuple(a for _, a in self._local_failures(chan_id, cls))
        return self._amounts[key]

    def fee_offers(self, chan_id: int) -> Sequence[tuple[int, int]]:
        if chan_id not in self._offers:
            self._offers[chan_id] = tuple(self._local_failures(chan_id, FailureClass.FEE))
        return self._offers[chan_id]


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
    failures, node_failures, node_missed = _failures(conn, node_id, window)
    return AnalysisInput(
        since_ns=since_ns,
        until_ns=until_ns,
        hours=hours,
        channels=_channels(conn, node_id, since_ns, until_ns, settings.gossip_grace_h),
        failures=failures,
        successes=_successes(conn, node_id, window, window_ledger),
        inbound=_inbound(conn, node_id, window, window_ledger, baseline),
        details=StoreFailureDetails(conn, node_id, since_ns, until_ns),
        gaps=tuple(Gap(g.from_ns, g.to_ns) for g in stream_gaps(conn, since_ns, until_ns)),
        node_failures=node_failures,
        node_missed_msat=node_missed,
    )


# --------------------------------------------------------------------------- channels


def _channels(
    conn: Connection, node_id: int, since_ns: int, until_ns: int, grace_h: int
) -> dict[int, ChannelState]:
    """Channels open now or closed at/after ``since_ns`` that have a sample by ``until_ns``."""
    c = channels
    rows = conn.execute(
        select(c.c.chan_id, c.c.remote_pubkey, c.c.peer_alias, c.c.closed_ns)
        .where(c.c.node_id == node_id)
        .where((c.c.closed_ns.is_(None)) | (c.c.closed_ns >= since_ns))
        .order_by(c.c.chan_id)
    ).all()
    result: dict[int, ChannelState] = {}
    for row in rows:
        state = _channel_state(
            conn,
            node_id,
            row.chan_id,
            peer_pubkey=row.remote_pubkey,
            peer_alias=row.peer_alias,
            closed=row.closed_ns is not None and row.closed_ns <= until_ns,
            since_ns=since_ns,
            until_ns=until_ns,
            history_from_ns=since_ns - grace_h * NS_PER_HOUR,
        )
        if state is not None:
            result[state.chan_id] = state
    return result


def _channel_state(
    conn: Connection,
    node_id: int,
    signed_id: int,
    *,
    peer_pubkey: str,
    peer_alias: str,
    closed: bool,
    since_ns: int,
    until_ns: int,
    history_from_ns: int,
) -> ChannelState | None:
    s = channel_samples
    of_channel = and_(s.c.node_id == node_id, s.c.chan_id == signed_id)
    latest = conn.execute(
        select(s)
        .where(of_channel)
        .where(s.c.ts_ns <= until_ns)
        .order_by(s.c.ts_ns.desc(), s.c.id.desc())
        .limit(1)
    ).first()
    if latest is None:
        return None
    series = conn.execute(
        select(
            s.c.ts_ns,
            s.c.local_balance_sat,
            s.c.remote_balance_sat,
            s.c.uptime_s,
            s.c.lifetime_s,
            s.c.fee_base_msat,
            s.c.fee_rate_ppm,
        )
        .where(of_channel)
        .where(s.c.ts_ns >= history_from_ns)  # <= since_ns: grace_h >= 0
        .where(s.c.ts_ns <= until_ns)
        .order_by(s.c.ts_ns, s.c.id)
    ).all()
    fee_history = tuple(
        FeePoint(r.ts_ns, r.fee_base_msat, r.fee_rate_ppm)
        for r in series
        if r.fee_base_msat is not None and r.fee_rate_ppm is not None
    )
    in_window = [r for r in series if r.ts_ns >= since_ns]
    ratios = [
        r.local_balance_sat / (r.local_balance_sat + r.remote_balance_sat)
        for r in in_window
        if r.local_balance_sat + r.remote_balance_sat > 0
    ]
    uptime_ratio = None
    if in_window:
        first, last = in_window[0], in_window[-1]
        lifetime = last.lifetime_s - first.lifetime_s
        if lifetime > 0:
            uptime = (last.uptime_s - first.uptime_s) / lifetime
            uptime_ratio = min(1.0, max(0.0, uptime))
    return ChannelState(
        chan_id=from_signed64(signed_id),
        peer_pubkey=peer_pubkey,
        peer_alias=peer_alias,
        capacity_sat=latest.capacity_sat,
        local_balance_sat=latest.local_balance_sat,
        remote_balance_sat=latest.remote_balance_sat,
        local_reserve_sat=latest.local_reserve_sat,
        remote_reserve_sat=latest.remote_reserve_sat,
        active=bool(latest.active),
        closed=closed,
        fee_base_msat=latest.fee_base_msat,
        fee_rate_ppm=latest.fee_rate_ppm,
        max_htlc_msat=latest.max_htlc_msat,
        min_local_ratio=min(ratios) if ratios else None,
        fee_history=fee_history,
        uptime_ratio=uptime_ratio,
    )


# --------------------------------------------------------------------------- failures


def _failures(
    conn: Connection, node_id: int, window: _Span
) -> tuple[dict[int, ChannelFailures], int, int]:
    """Per outgoing channel (foreign ones included), plus node failures and dedup missed."""
    acc: dict[int, _FailureSums] = {}  # by signed outgoing channel id
    if window.has_hours:
        _add_rollup_failures(conn, node_id, window, acc)
    for lo, hi in window.parts:
        _add_raw_failures(conn, node_id, lo, hi, acc)
    result = {
        from_signed64(out): sums.channel_failures(from_signed64(out))
        for out, sums in sorted(acc.items())
    }
    node_failures = sum(f.failures for f in result.values())
    node_missed = sum(f.missed_dedup_msat for f in result.values())
    return result, node_failures, node_missed


@dataclass
class _FailureSums:
    first_ns: int
    last_ns: int
    failures: int = 0
    clusters: int = 0
    raw_msat: int = 0
    dedup_msat: int = 0
    by_class: dict[FailureClass, ClassStats] = field(default_factory=dict)
    incoming: set[int] = field(default_factory=set)

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
        old = self.by_class.get(cls, ClassStats(0, 0))
        self.by_class[cls] = ClassStats(old.failures + n, old.missed_msat + raw)

    def channel_failures(self, chan_id: int) -> ChannelFailures:
        return ChannelFailures(
            chan_id=chan_id,
            failures=self.failures,
            clusters=self.clusters,
            missed_raw_msat=self.raw_msat,
            missed_dedup_msat=self.dedup_msat,
            incoming_channels=len(self.incoming),
            first_failure_ns=self.first_ns,
            last_failure_ns=self.last_ns,
            by_class=dict(sorted(self.by_class.items())),
        )


def _add_rollup_failures(
    conn: Connection, node_id: int, window: _Span, acc: dict[int, _FailureSums]
) -> None:
    """The window's whole hours, from ``failure_rollups_hourly``."""
    r = failure_rollups_hourly
    in_hours = and_(
        r.c.node_id == node_id, r.c.hour.between(window.first_hour, window.end_hour - 1)
    )
    per_class = conn.execute(
        select(
            r.c.outgoing_channel_id,
            r.c.failure_class,
            func.sum(r.c.failures),
            func.sum(r.c.clusters),
            func.sum(r.c.missed_raw_msat),
            func.sum(r.c.missed_dedup_msat),
            func.min(r.c.hour),
            func.max(r.c.hour),
        )
        .where(in_hours)
        .group_by(r.c.outgoing_channel_id, r.c.failure_class)
    )
    for out, cls, n, clusters, raw, dedup, first_hour, last_hour in per_class:
        sums = _FailureSums.of(
            acc, out, first_hour * NS_PER_HOUR, (last_hour + 1) * NS_PER_HOUR - 1
        )
        sums.add_failures(failure_class_of(cls), int(n), int(raw))
        sums.clusters += int(clusters)
        sums.dedup_msat += int(dedup)
    pairs = conn.execute(
        select(r.c.outgoing_channel_id, r.c.incoming_channel_id).where(in_hours).distinct()
    )
    for out, inc in pairs:
        acc[out].incoming.add(inc)


def _add_raw_failures(
    conn: Connection, node_id: int, lo: int, hi: int, acc: dict[int, _FailureSums]
) -> None:
    """Local failures resolved in ``[lo, hi)`` (inside one clock hour), from raw rows.

    Counted as the rollups count them: a failure in its (outgoing, incoming, class) group;
    a cluster when its first member falls in the range; the deduplicated missed fee as
    the growth of each cluster's largest fee within the range.
    """
    a, c, r = forward_attempts, failure_clusters, failure_rollups_hourly
    # see _RESOLVE_SLACK_NS: one index range per outgoing channel failing in this hour
    failing_out = (
        select(r.c.outgoing_channel_id)
        .where(r.c.node_id == node_id)
        .where(r.c.hour == lo // NS_PER_HOUR)
    )
    rows = conn.execute(
        select(
            a.c.outgoing_channel_id,
            a.c.incoming_channel_id,
            func.coalesce(a.c.failure_class, 0),
            a.c.cluster_id,
            c.c.first_ns,
            func.count(),
            func.sum(a.c.missed_fee_msat),
            func.max(a.c.missed_fee_msat),
            func.min(a.c.resolved_ns),
            func.max(a.c.resolved_ns),
        )
        .select_from(a.outerjoin(c, c.c.id == a.c.cluster_id))
        .where(a.c.outgoing_channel_id.in_(failing_out))
        .where(a.c.first_seen_ns >= lo - _RESOLVE_SLACK_NS)
        .where(a.c.first_seen_ns < hi)
        .where(a.c.resolved_ns >= lo)
        .where(a.c.resolved_ns < hi)
        .where(_unindexed(a.c.node_id) == node_id)
        .where(a.c.outcome == _FAILED_LOCAL)
        .group_by(
            a.c.outgoing_channel_id,
            a.c.incoming_channel_id,
            func.coalesce(a.c.failure_class, 0),
            a.c.cluster_id,
            c.c.first_ns,
        )
    ).all()
    # (outgoing channel, cluster id) → (cluster's first_ns, largest fee in the range)
    grown: dict[tuple[int, int], tuple[int, int]] = {}
    for out, inc, cls, cluster_id, cluster_first_ns, n, raw, top, first_ns, last_ns in rows:
        sums = _FailureSums.of(acc, out, first_ns, last_ns)
        sums.add_failures(failure_class_of(cls), int(n), int(raw))
        sums.incoming.add(inc)
        if cluster_id is None or cluster_first_ns is None:
            # recorded without a cluster (the recorder assigns every local failure one):
            # each such failure stands alone
            sums.clusters += int(n)
            sums.dedup_msat += int(raw)
            continue
        key = (out, cluster_id)
        seen = grown.get(key)
        grown[key] = (cluster_first_ns, max(int(top), seen[1] if seen else 0))
    for (out, cluster_id), (cluster_first_ns, top) in grown.items():
        sums = acc[out]
        if cluster_first_ns >= lo:  # opened in the range (first_ns < hi: it has a member here)
            sums.clusters += 1 if cluster_first_ns < hi else 0
            sums.dedup_msat += top
        else:  # opened before the range: only its growth counts here
            before = _cluster_max_before(conn, node_id, out, cluster_id, cluster_first_ns, lo)
            sums.dedup_msat += max(0, top - before)


def _cluster_max_before(
    conn: Connection, node_id: int, out: int, cluster_id: int, cluster_first_ns: int, lo: int
) -> int:
    """The largest missed fee among the cluster's members resolved before ``lo``."""
    a = forward_attempts
    top = conn.scalar(
        select(func.max(a.c.missed_fee_msat))
        .where(a.c.outgoing_channel_id == out)
        # members resolved at or after the cluster's first failure: see _RESOLVE_SLACK_NS
        .where(a.c.first_seen_ns >= cluster_first_ns - _RESOLVE_SLACK_NS)
        .where(a.c.first_seen_ns < lo)
        .where(a.c.resolved_ns < lo)
        .where(a.c.cluster_id == cluster_id)
        .where(_unindexed(a.c.node_id) == node_id)
        .where(a.c.outcome == _FAILED_LOCAL)
    )
    return int(top or 0)


# --------------------------------------------------------------------------- forwards


@dataclass(frozen=True, slots=True)
class _LedgerSums:
    """Settled forwards of one (incoming, outgoing) pair in one partial range (signed ids)."""

    chan_in: int
    chan_out: int
    forwards: int
    fee_msat: int


def _ledger(conn: Connection, node_id: int, parts: Sequence[tuple[int, int]]) -> list[_LedgerSums]:
    """The ledger's forwards in each partial range, read on ``(node_id, timestamp_ns)``."""
    f = forwards
    result: list[_LedgerSums] = []
    for lo, hi in parts:
        rows = conn.execute(
            select(f.c.chan_id_in, f.c.chan_id_out, func.count(), func.sum(f.c.fee_msat))
            .where(f.c.node_id == node_id)
            .where(f.c.timestamp_ns >= lo)
            .where(f.c.timestamp_ns < hi)
            .group_by(f.c.chan_id_in, f.c.chan_id_out)
        )
        result.extend(_LedgerSums(cin, cout, int(n), int(fee)) for cin, cout, n, fee in rows)
    return result


def _successes(
    conn: Connection, node_id: int, window: _Span, window_ledger: Sequence[_LedgerSums]
) -> dict[int, int]:
    """Settled forwards out of each channel in the window."""
    counts: dict[int, int] = {}
    if window.has_hours:
        r = forward_rollups_hourly
        rows = conn.execute(
            select(r.c.chan_id_out, func.sum(r.c.forwards))
            .where(r.c.node_id == node_id)
            .where(r.c.hour.between(window.first_hour, window.end_hour - 1))
            .group_by(r.c.chan_id_out)
        )
        for chan, n in rows:
            counts[chan] = counts.get(chan, 0) + int(n)
    for sums in window_ledger:
        counts[sums.chan_out] = counts.get(sums.chan_out, 0) + sums.forwards
    return {from_signed64(chan): n for chan, n in sorted(counts.items())}


def _inbound(
    conn: Connection,
    node_id: int,
    window: _Span,
    window_ledger: Sequence[_LedgerSums],
    baseline: _Span,
) -> dict[int, InboundBaseline]:
    """Fees of forwards in via each channel: in the baseline before the window, and in it."""
    base = _inbound_fees(conn, node_id, baseline, _ledger(conn, node_id, baseline.parts))
    in_window = _inbound_fees(conn, node_id, window, window_ledger)
    return {
        from_signed64(chan): InboundBaseline(
            from_signed64(chan), base.get(chan, 0), in_window.get(chan, 0)
        )
        for chan in sorted(base.keys() | in_window.keys())
    }


def _inbound_fees(
    conn: Connection, node_id: int, span: _Span, ledger: Sequence[_LedgerSums]
) -> dict[int, int]:
    """Fees of forwards in via each channel (signed id) that had any forward in ``span``."""
    fees: dict[int, int] = {}
    if span.has_hours:
        r = forward_rollups_hourly
        rows = conn.execute(
            select(r.c.chan_id_in, func.sum(r.c.fee_msat))
            .where(r.c.node_id == node_id)
            .where(r.c.hour.between(span.first_hour, span.end_hour - 1))
            .group_by(r.c.chan_id_in)
        )
        for chan, fee in rows:
            fees[chan] = fees.get(chan, 0) + int(fee)
    for sums in ledger:
        fees[sums.chan_in] = fees.get(sums.chan_in, 0) + sums.fee_msat
    return fees
