"""Building the analysis input (:class:`lnflow.analysis.model.AnalysisInput`) from the store.

The window is whole clock hours, because failures and forwards are read from the hourly
rollups: :func:`window_for` gives ``[since_ns, until_ns)`` covering the last ``hours``
hours including the current, partial one; rollup rows of hours
``since_ns // NS_PER_HOUR`` to ``(until_ns − 1) // NS_PER_HOUR`` count.

Precision and boundaries:

- failure times come from rollups, so ``first_failure_ns`` is the start of the first
  hour with a failure and ``last_failure_ns`` the last nanosecond of the last such hour;
- channel samples count when ``ts_ns <= until_ns`` (a sample taken at ``until_ns`` is
  the state at the end of the window); raw failures (:class:`StoreFailureDetails`) when
  ``since_ns <= first_seen_ns < until_ns``;
- a rollup row with a class number this code does not know counts as ``other``.

Reads only; nothing here writes or reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, and_, case, func, select

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
    failure_rollups_hourly,
    forward_attempts,
    forward_rollups_hourly,
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


def window_for(until_ns: int, hours: int) -> tuple[int, int]:
    """``(since_ns, until_ns)`` of the last ``hours`` clock hours, the current one included.

    ``since_ns = (until_hour − hours + 1) × NS_PER_HOUR`` with
    ``until_hour = (until_ns − 1) // NS_PER_HOUR``: at 10:20 a 2-hour window starts at
    09:00 and rollup hours 09 and 10 count.
    """
    if hours < 1:
        raise ValueError("hours must be >= 1")
    until_hour = (until_ns - 1) // NS_PER_HOUR
    return (until_hour - hours + 1) * NS_PER_HOUR, until_ns


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

    Each method runs one query (on index ``ix_forward_attempts_out_seen``) the first time
    it is asked for a channel, and remembers the answer. It uses ``conn``, so the caller
    keeps that connection open until the analysis has finished with the input.
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
            .where(t.c.first_seen_ns >= self.since_ns)
            .where(t.c.first_seen_ns < self.until_ns)
            .where(t.c.node_id == self.node_id)
            .where(t.c.outcome == _FAILED_LOCAL)
            .where(t.c.failure_class == int(cls))
            .where(t.c.outgoing_amt_msat.is_not(None))
            .order_by(t.c.first_seen_ns, t.c.id)
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
    since_hour = since_ns // NS_PER_HOUR
    until_hour = (until_ns - 1) // NS_PER_HOUR
    failures, node_failures, node_missed = _failures(conn, node_id, since_hour, until_hour)
    return AnalysisInput(
        since_ns=since_ns,
        until_ns=until_ns,
        hours=hours,
        channels=_channels(conn, node_id, since_ns, until_ns, settings.gossip_grace_h),
        failures=failures,
        successes=_successes(conn, node_id, since_hour, until_hour),
        inbound=_inbound(conn, node_id, since_hour, until_hour, settings.baseline_days),
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


# --------------------------------------------------------------------------- rollups


def _failures(
    conn: Connection, node_id: int, since_hour: int, until_hour: int
) -> tuple[dict[int, ChannelFailures], int, int]:
    """Per outgoing channel (foreign ones included), plus node failures and dedup missed."""
    r = failure_rollups_hourly
    in_window = and_(r.c.node_id == node_id, r.c.hour.between(since_hour, until_hour))
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
        .where(in_window)
        .group_by(r.c.outgoing_channel_id, r.c.failure_class)
    ).all()
    incoming: dict[int, int] = {
        out: int(n)
        for out, n in conn.execute(
            select(r.c.outgoing_channel_id, func.count(r.c.incoming_channel_id.distinct()))
            .where(in_window)
            .group_by(r.c.outgoing_channel_id)
        )
    }
    acc: dict[int, _FailureSums] = {}
    for out, cls, n, clusters, raw, dedup, first_hour, last_hour in per_class:
        sums = acc.setdefault(out, _FailureSums(first_hour=first_hour, last_hour=last_hour))
        sums.add(failure_class_of(cls), int(n), int(clusters), int(raw), int(dedup))
        sums.first_hour = min(sums.first_hour, first_hour)
        sums.last_hour = max(sums.last_hour, last_hour)
    result = {
        from_signed64(out): sums.channel_failures(from_signed64(out), incoming.get(out, 0))
        for out, sums in sorted(acc.items())
    }
    node_failures = sum(f.failures for f in result.values())
    node_missed = sum(f.missed_dedup_msat for f in result.values())
    return result, node_failures, node_missed


@dataclass
class _FailureSums:
    first_hour: int
    last_hour: int
    failures: int = 0
    clusters: int = 0
    raw_msat: int = 0
    dedup_msat: int = 0
    by_class: dict[FailureClass, ClassStats] = field(default_factory=dict)

    def add(self, cls: FailureClass, n: int, clusters: int, raw: int, dedup: int) -> None:
        self.failures += n
        self.clusters += clusters
        self.raw_msat += raw
        self.dedup_msat += dedup
        old = self.by_class.get(cls, ClassStats(0, 0))
        self.by_class[cls] = ClassStats(old.failures + n, old.missed_msat + raw)

    def channel_failures(self, chan_id: int, incoming_channels: int) -> ChannelFailures:
        return ChannelFailures(
            chan_id=chan_id,
            failures=self.failures,
            clusters=self.clusters,
            missed_raw_msat=self.raw_msat,
            missed_dedup_msat=self.dedup_msat,
            incoming_channels=incoming_channels,
            first_failure_ns=self.first_hour * NS_PER_HOUR,
            last_failure_ns=(self.last_hour + 1) * NS_PER_HOUR - 1,
            by_class=dict(sorted(self.by_class.items())),
        )


def _successes(conn: Connection, node_id: int, since_hour: int, until_hour: int) -> dict[int, int]:
    r = forward_rollups_hourly
    rows = conn.execute(
        select(r.c.chan_id_out, func.sum(r.c.forwards))
        .where(r.c.node_id == node_id)
        .where(r.c.hour.between(since_hour, until_hour))
        .group_by(r.c.chan_id_out)
        .order_by(r.c.chan_id_out)
    )
    return {from_signed64(chan): int(n) for chan, n in rows}


def _inbound(
    conn: Connection, node_id: int, since_hour: int, until_hour: int, baseline_days: int
) -> dict[int, InboundBaseline]:
    """Fees of forwards in via each channel: baseline days before the window, and in it."""
    r = forward_rollups_hourly
    in_window = r.c.hour >= since_hour
    rows = conn.execute(
        select(
            r.c.chan_id_in,
            func.sum(case((in_window, 0), else_=r.c.fee_msat)),
            func.sum(case((in_window, r.c.fee_msat), else_=0)),
        )
        .where(r.c.node_id == node_id)
        .where(r.c.hour.between(since_hour - baseline_days * 24, until_hour))
        .group_by(r.c.chan_id_in)
        .order_by(r.c.chan_id_in)
    )
    return {
        from_signed64(chan): InboundBaseline(from_signed64(chan), int(base), int(window))
        for chan, base, window in rows
    }
