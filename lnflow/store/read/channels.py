"""Our channels as the analysis sees them: open now or closed at/after the window's start.

A channel counts when it has a sample at or before ``until_ns`` (a sample taken at
``until_ns`` is the state at the end of the window); its state is the latest such
sample, its uptime ratio the change between its first sample in the window and that one.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Connection,
    Float,
    FromClause,
    and_,
    bindparam,
    case,
    cast,
    func,
    select,
    union_all,
)

from lnflow.analysis.model import ChannelState
from lnflow.domain import NS_PER_DAY, NS_PER_HOUR, from_signed64
from lnflow.store.read.speed import rows
from lnflow.store.schema import (
    channel_ratio_daily,
    channel_ratio_hourly,
    channel_samples,
    channels,
)

__all__ = ["channel_states", "has_policy", "sample_of"]


def sample_of(
    samples: FromClause, node: ColumnElement[int], chan: ColumnElement[int]
) -> ColumnElement[bool]:
    """The samples of channel ``chan`` of ``node`` (ix_channel_samples_chan_state's prefix)."""
    return and_(samples.c.node_id == node, samples.c.chan_id == chan)


def has_policy(samples: FromClause) -> ColumnElement[bool]:
    """Samples that know our fee policy."""
    return and_(samples.c.fee_base_msat.is_not(None), samples.c.fee_rate_ppm.is_not(None))


# Every channel open now or closed at/after since, with its latest sample at or before
# until and its first sample in [since, until] (for the uptime ratio): one statement for
# all channels, each sample found by a correlated lookup on ix_channel_samples_chan_state
# (whose entries end with the row id, so "ts_ns DESC, id DESC LIMIT 1" is one seek).
# The latest sample is the one kept on the channel's row (lnflow.store.latest_sample)
# when that one is at or before until, as it is for a window ending now: a row lookup by
# id instead of a seek in the index first; a window ending earlier, or a channel whose
# kept sample is not known, looks it up (SQLite runs the subquery only then).
_latest = channel_samples.alias("latest")
_first = channel_samples.alias("first")
_looked_up = (
    select(channel_samples.c.id)
    .where(sample_of(channel_samples, channels.c.node_id, channels.c.chan_id))
    .where(channel_samples.c.ts_ns <= bindparam("until"))
    .order_by(channel_samples.c.ts_ns.desc(), channel_samples.c.id.desc())
    .limit(1)
    .correlate(channels)
    .scalar_subquery()
)
_latest_id = case(
    (channels.c.latest_sample_ns <= bindparam("until"), channels.c.latest_sample_id),
    else_=_looked_up,
)
_first_id = (
    select(channel_samples.c.id)
    .where(sample_of(channel_samples, channels.c.node_id, channels.c.chan_id))
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
        _latest.c.inbound_fee_base_msat,
        _latest.c.inbound_fee_rate_ppm,
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
    select(channel_samples.c.chan_id, func.min(_ratio).label("lowest"))
    .where(channel_samples.c.node_id == bindparam("node"))
    .where(channel_samples.c.chan_id.in_(bindparam("chans", expanding=True)))
    .where(channel_samples.c.ts_ns >= bindparam("since"))
    .where(channel_samples.c.ts_ns <= bindparam("until"))
    .where(channel_samples.c.local_balance_sat + channel_samples.c.remote_balance_sat > 0)
    .group_by(channel_samples.c.chan_id)
)

# The same for a window holding whole hours: the lowest ratio of its whole UTC days from
# channel_ratio_daily, of its other whole hours from channel_ratio_hourly, and of the
# samples only in its partial first and last hour. A period's row counts every sample of
# the period written, so it is read only for periods after the oldest sample's: the
# retention deletes the oldest samples first, so those periods still have every sample.
# (Parts may overlap when no whole day is read: the lowest of a sample seen twice is the
# same.)
_oldest = select(func.min(channel_samples.c.ts_ns)).scalar_subquery()


def _later(a: ColumnElement[int], b: ColumnElement[int]) -> ColumnElement[int]:
    return case((a > b, a), else_=b)


def _earlier(a: ColumnElement[int], b: ColumnElement[int]) -> ColumnElement[int]:
    return case((a < b, a), else_=b)


# the first hour and the first day whose rows are read
_first_hour = _later(_oldest // NS_PER_HOUR + 1, bindparam("h0", type_=BigInteger))
_first_day = _later(_oldest // NS_PER_DAY + 1, bindparam("d0", type_=BigInteger))
# the window's whole hours and days end before h1 and d1; its last whole hour at tail_from
_h1 = bindparam("h1", type_=BigInteger)
_d1 = bindparam("d1", type_=BigInteger)
_tail_from: BindParameter[int] = bindparam("tail_from", type_=BigInteger)
_chans: BindParameter[list[int]] = bindparam("chans", expanding=True)
_s = channel_samples.c
_sampled = (
    select(_s.chan_id, _ratio.label("ratio"))
    .where(_s.node_id == bindparam("node"))
    .where(_s.chan_id.in_(_chans))
    .where(_s.local_balance_sat + _s.remote_balance_sat > 0)
)


_h, _d = channel_ratio_hourly.c, channel_ratio_daily.c
_around = union_all(
    # the samples before the first hour read
    _sampled.where(_s.ts_ns >= bindparam("since")).where(
        _s.ts_ns < _earlier(_first_hour * NS_PER_HOUR, _tail_from)
    ),
    # the hours before the first day read, the days, the hours after the last day
    select(_h.chan_id, _h.lowest)
    .where(_h.node_id == bindparam("node"))
    .where(_h.chan_id.in_(_chans))
    .where(_h.hour >= _first_hour)
    .where(_h.hour < _earlier(_first_day * 24, _h1)),
    select(_d.chan_id, _d.lowest)
    .where(_d.node_id == bindparam("node"))
    .where(_d.chan_id.in_(_chans))
    .where(_d.day >= _first_day)
    .where(_d.day < _d1),
    select(_h.chan_id, _h.lowest)
    .where(_h.node_id == bindparam("node"))
    .where(_h.chan_id.in_(_chans))
    .where(_h.hour >= _later(_d1 * 24, _first_hour))
    .where(_h.hour < _h1),
    # the samples of the partial last hour
    _sampled.where(_s.ts_ns >= _tail_from).where(_s.ts_ns <= bindparam("until")),
).subquery()
_MIN_LOCAL_RATIO_PERIODS = select(
    _around.c.chan_id, func.min(_around.c.ratio).label("lowest")
).group_by(_around.c.chan_id)


def _lowest_ratios(conn: Connection, params: dict[str, int], chans: list[int]) -> dict[int, float]:
    """The lowest local ratio of each of ``chans`` in [since, until] (signed ids)."""
    since, until = params["since"], params["until"]
    h0, h1 = -(-since // NS_PER_HOUR), (until + 1) // NS_PER_HOUR  # whole hours [h0, h1)
    if h0 < h1:
        stmt = _MIN_LOCAL_RATIO_PERIODS
        d0, d1 = -(-since // NS_PER_DAY), (until + 1) // NS_PER_DAY
        extra = {"h0": h0, "h1": h1, "d0": d0, "d1": d1, "tail_from": h1 * NS_PER_HOUR}
    else:
        stmt, extra = _MIN_LOCAL_RATIO, {}
    ratios = conn.execute(stmt, params | extra | {"chans": chans}).all()
    return {chan: float(ratio) for chan, ratio in ratios}


def channel_states(
    conn: Connection, node_id: int, since_ns: int, until_ns: int, inbound_ratio: float
) -> dict[int, ChannelState]:
    """Channels open now or closed at/after ``since_ns`` that have a sample by ``until_ns``.

    ``min_local_ratio`` is read only for channels whose latest sample is in the window
    with a local ratio of at least ``inbound_ratio``: the lowest ratio of any other
    channel is below it (or it has no sample in the window), and it stays None.
    """
    params = {"node": node_id, "since": since_ns, "until": until_ns}
    sampled = rows(conn, _CHANNELS, params)
    # the channels whose latest sample is in the window with a local ratio of at least
    # inbound_ratio (columns by position: see below)
    full = [
        row[0]
        for row in sampled
        if row[15] is not None  # first_id
        and row[5] + row[6] > 0
        and row[5] / (row[5] + row[6]) >= inbound_ratio
    ]
    lowest = _lowest_ratios(conn, params, full) if full else {}
    result: dict[int, ChannelState] = {}
    # the rows unpacked in _CHANNELS' column order: reading a row's column by name costs
    # ~1 µs, and a node of thousands of channels would read ~20 of them each
    for (
        chan,
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
        fee_rate,
        max_htlc,
        uptime_s,
        lifetime_s,
        first_id,
        first_uptime_s,
        first_lifetime_s,
        inbound_base,
        inbound_rate,
    ) in sampled:
        uptime_ratio = None
        if first_id is not None:  # the latest sample is in the window too
            lifetime = lifetime_s - first_lifetime_s
            if lifetime > 0:
                uptime = (uptime_s - first_uptime_s) / lifetime
                uptime_ratio = min(1.0, max(0.0, uptime))
        chan_id = from_signed64(chan)
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
            fee_rate_ppm=fee_rate,
            max_htlc_msat=max_htlc,
            min_local_ratio=lowest.get(chan),
            uptime_ratio=uptime_ratio,
            inbound_fee_base_msat=inbound_base,
            inbound_fee_rate_ppm=inbound_rate,
        )
    return result
