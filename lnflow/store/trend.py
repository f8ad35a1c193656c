"""One channel's daily history (``lnflowctl trend``), read from rollups and snapshots.

Days are UTC calendar days. The series ends with the day holding ``until_ns − 1`` and
has one entry per day, oldest first; a day without data has zeros (and None for the
urgency and the local ratio). Per day:

- ``forwards``, ``fees_msat``: settled forwards OUT of the channel (the fee our outgoing
  policy earned), from ``forward_rollups_hourly``;
- failures: local failures with the channel as outgoing channel, from
  ``failure_rollups_hourly``; ``missed_msat`` deduplicated, ``missed_raw_msat`` raw;
- ``urgency``: the channel's score in that day's last snapshot that lists it;
- ``local_ratio``: local / (local + remote) of the day's last sample.

Days before the retention of a source (rollups, samples, runs) show zeros or None.
Rows of every node in the store count (one node per store today).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, Select, exists, func, literal, or_, select

from lnflow.domain import NS_PER_DAY, NS_PER_HOUR, FailureClass, to_signed64
from lnflow.store.read import failure_class_of
from lnflow.store.schema import (
    analysis_runs,
    channel_refs,
    channel_samples,
    channels,
    failure_rollups_hourly,
    forward_attempts,
    forward_channel_daily,
    forward_rollups_hourly,
    forwards,
    nodes,
    opportunities,
)

__all__ = ["NS_PER_DAY", "TrendDay", "channel_known", "channel_trend", "first_day_held"]

_HOURS_PER_DAY = 24


@dataclass(frozen=True, slots=True)
class TrendDay:
    day: str  # YYYY-MM-DD, UTC
    forwards: int
    fees_msat: int
    failures_by_class: Mapping[str, int]  # every FailureClass label, zeros included
    failures: int
    missed_msat: int  # deduplicated
    missed_raw_msat: int
    urgency: int | None  # from the day's last snapshot listing the channel
    local_ratio: float | None  # the day's last sample


def _of_node(node_id: int | None) -> Select[Any]:
    """The node ids a reading covers: ``node_id``, or every node's (None)."""
    ids = select(nodes.c.id)
    return ids if node_id is None else ids.where(nodes.c.id == node_id)


def channel_known(conn: Connection, chan_id: int, node_id: int | None = None) -> bool:
    """Whether the store has anything on the channel (of ``node_id`` if given): a channel
    row, failures or forwards."""
    cid = to_signed64(chan_id)
    any_node = _of_node(node_id)
    fa, fw, fr, fd = forward_attempts, forwards, failure_rollups_hourly, forward_channel_daily
    refs = select(channel_refs.c.id).where(channel_refs.c.chan_id == cid)
    if node_id is not None:
        refs = refs.where(channel_refs.c.node_id == node_id)
    probes = (
        select(channels.c.chan_id).where(
            channels.c.chan_id == cid, channels.c.node_id.in_(any_node)
        ),
        select(fa.c.id).where(fa.c.outgoing_chan_ref.in_(refs)),
        select(fa.c.id).where(fa.c.node_id.in_(any_node)).where(fa.c.incoming_chan_ref.in_(refs)),
        # no index on the channel in what follows: scans, reached only when every probe
        # above missed, smallest first. Settled forwards by day and channel (one row per
        # channel and day); failures older than the attempts' retention survive in the
        # rollups only; the ledger itself, for forwards older than the rollups.
        select(fd.c.day).where(fd.c.chan_id == cid, fd.c.node_id.in_(any_node)),
        select(fr.c.hour).where(fr.c.outgoing_channel_id == cid, fr.c.node_id.in_(any_node)),
        select(fw.c.id)
        .where(or_(fw.c.chan_id_out == cid, fw.c.chan_id_in == cid))
        .where(fw.c.node_id.in_(any_node)),
    )
    return any(conn.scalar(select(exists(probe))) for probe in probes)


def _day_label(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")


@dataclass
class _Day:
    forwards: int = 0
    fees_msat: int = 0
    failures: int = 0
    missed_msat: int = 0
    missed_raw_msat: int = 0
    urgency: int | None = None
    local_ratio: float | None = None
    by_class: dict[FailureClass, int] = field(
        default_factory=lambda: dict.fromkeys(FailureClass, 0)
    )


def first_day_held(conn: Connection, node_id: int | None = None) -> int | None:
    """The oldest UTC day (days since 1970) the store holds anything a trend shows:
    rollups, the ledger, samples or snapshots; None for a store without any.

    ``lnflowctl trend`` cuts ``--days`` to the days from this one on: a series of
    empty days before the store's first row costs memory and time, and shows nothing.
    Each minimum is read from an index (per node where the key starts with it).
    ``node_id``: what that node's rows hold (None: every node's).
    """
    any_node = _of_node(node_id)
    fr, wr, fw = failure_rollups_hourly, forward_rollups_hourly, forwards
    # the hour times a 64-bit constant: PostgreSQL multiplies in the operands' type
    hour_ns = literal(NS_PER_HOUR, BigInteger)
    oldest_ns = [
        select(func.min(fr.c.hour) * hour_ns).where(fr.c.node_id.in_(any_node)),
        select(func.min(wr.c.hour) * hour_ns).where(wr.c.node_id.in_(any_node)),
        select(func.min(fw.c.timestamp_ns)).where(fw.c.node_id.in_(any_node)),
        select(func.min(channel_samples.c.ts_ns)).where(channel_samples.c.node_id.in_(any_node)),
        select(func.min(opportunities.c.generated_ns)).where(
            opportunities.c.run_id.in_(_runs_of(node_id))
        ),
    ]
    found = [v for v in (conn.scalar(q) for q in oldest_ns) if v is not None]
    return min(int(v) for v in found) // NS_PER_DAY if found else None


def _runs_of(node_id: int | None) -> Select[Any]:
    runs = select(analysis_runs.c.id)
    return runs if node_id is None else runs.where(analysis_runs.c.node_id == node_id)


def channel_trend(
    conn: Connection, chan_id: int, *, until_ns: int, days: int, node_id: int | None = None
) -> list[TrendDay]:
    """The channel's last ``days`` UTC days up to ``until_ns`` (exclusive), oldest first,
    as ``node_id`` recorded it (None: every node)."""
    if days < 1:
        raise ValueError("days must be >= 1")
    cid = to_signed64(chan_id)
    last_day = (until_ns - 1) // NS_PER_DAY
    first_day = last_day - days + 1
    series = {day: _Day() for day in range(first_day, last_day + 1)}
    first_hour = first_day * _HOURS_PER_DAY
    last_hour = (until_ns - 1) // NS_PER_HOUR
    since_ns = first_day * NS_PER_DAY
    any_node = _of_node(node_id)

    fr = forward_rollups_hourly
    for hour, n, fee in conn.execute(
        select(fr.c.hour, func.sum(fr.c.forwards), func.sum(fr.c.fee_msat))
        .where(fr.c.node_id.in_(any_node))
        .where(fr.c.hour.between(first_hour, last_hour))
        .where(fr.c.chan_id_out == cid)
        .group_by(fr.c.hour)
    ):
        d = series[hour // _HOURS_PER_DAY]
        d.forwards += int(n)
        d.fees_msat += int(fee)

    r = failure_rollups_hourly
    for hour, cls, n, raw, dedup in conn.execute(
        select(
            r.c.hour,
            r.c.failure_class,
            func.sum(r.c.failures),
            func.sum(r.c.missed_raw_msat),
            func.sum(r.c.missed_dedup_msat),
        )
        .where(r.c.node_id.in_(any_node))
        .where(r.c.hour.between(first_hour, last_hour))
        .where(r.c.outgoing_channel_id == cid)
        .group_by(r.c.hour, r.c.failure_class)
    ):
        d = series[hour // _HOURS_PER_DAY]
        d.by_class[failure_class_of(cls)] += int(n)
        d.failures += int(n)
        d.missed_raw_msat += int(raw)
        d.missed_msat += int(dedup)

    o = opportunities
    for ts, score in conn.execute(
        select(o.c.generated_ns, o.c.urgency_score)
        .where(o.c.channel_id == cid)
        .where(o.c.run_id.in_(_runs_of(node_id)))
        .where(o.c.generated_ns.between(since_ns, until_ns - 1))
        .order_by(o.c.generated_ns, o.c.run_id)
    ):
        series[ts // NS_PER_DAY].urgency = int(score)  # the day's last one wins

    s = channel_samples
    for day, d in series.items():
        last = conn.execute(
            select(s.c.local_balance_sat, s.c.remote_balance_sat)
            .where(s.c.node_id.in_(any_node))
            .where(s.c.chan_id == cid)
            .where(s.c.ts_ns.between(day * NS_PER_DAY, min((day + 1) * NS_PER_DAY, until_ns) - 1))
            .order_by(s.c.ts_ns.desc(), s.c.id.desc())
            .limit(1)
        ).first()
        if last is not None and last.local_balance_sat + last.remote_balance_sat > 0:
            d.local_ratio = last.local_balance_sat / (
                last.local_balance_sat + last.remote_balance_sat
            )

    return [
        TrendDay(
            day=_day_label(day),
            forwards=d.forwards,
            fees_msat=d.fees_msat,
            failures_by_class={cls.label: n for cls, n in d.by_class.items()},
            failures=d.failures,
            missed_msat=d.missed_msat,
            missed_raw_msat=d.missed_raw_msat,
            urgency=d.urgency,
            local_ratio=d.local_ratio,
        )
        for day, d in series.items()
    ]
