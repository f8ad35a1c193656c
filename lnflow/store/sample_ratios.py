"""Each channel's lowest local ratio per hour and per UTC day (migration 0026).

``channel_ratio_hourly`` and ``channel_ratio_daily`` hold, per channel and period, the
smallest ``local / (local + remote)`` of the channel's samples in it that have a balance.
:func:`lower_ratios` keeps them as samples are written (a row only ever goes lower, so
samples may come in any order); :func:`drop_expired_ratios` deletes the rows of periods
before the oldest sample's after the retention deleted samples. The retention deletes the
oldest samples first, so a period after the oldest sample's still has every sample it
had: the analysis reads rows of those periods only, and the samples of the rest
(:mod:`lnflow.store.read.channels`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Table, case, delete, func, select, tuple_

from lnflow.domain import NS_PER_DAY, NS_PER_HOUR, ChannelSample, to_signed64
from lnflow.store.db import dialect_insert
from lnflow.store.schema import channel_ratio_daily, channel_ratio_hourly, channel_samples, channels

__all__ = ["drop_expired_ratios", "lower_ratios"]

#: (table, its period column, nanoseconds per period)
_LEVELS: tuple[tuple[Table, str, int], ...] = (
    (channel_ratio_hourly, "hour", NS_PER_HOUR),
    (channel_ratio_daily, "day", NS_PER_DAY),
)


def lower_ratios(
    conn: Connection, node_id: int, now_ns: int, samples: Sequence[ChannelSample]
) -> None:
    """Each sampled channel's lowest ratio of the hour and of the day lowered to this
    sample's, if lower (samples with no balance have no ratio)."""
    lowest: dict[int, float] = {}
    for s in samples:
        local, remote = s.info.local_balance_sat, s.info.remote_balance_sat
        if local + remote > 0:
            chan = to_signed64(s.info.chan_id)
            # int / int: the IEEE quotient SQL's CAST(local AS REAL) / (local + remote)
            # gives for balances below 2^53
            ratio = local / (local + remote)
            if chan not in lowest or ratio < lowest[chan]:
                lowest[chan] = ratio
    if not lowest:
        return
    for table, period, ns in _LEVELS:
        stmt = dialect_insert(conn.engine, table)
        new, old = stmt.excluded.lowest, table.c.lowest
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["node_id", "chan_id", period],
                set_={"lowest": case((new < old, new), else_=old)},
            ),
            [
                {"node_id": node_id, "chan_id": chan, period: now_ns // ns, "lowest": ratio}
                for chan, ratio in sorted(lowest.items())
            ],
        )


def drop_expired_ratios(conn: Connection) -> None:
    """Delete the rows of periods before the oldest sample's (all when none is left): one
    key range of each channel's rows."""
    oldest = conn.scalar(select(func.min(channel_samples.c.ts_ns)))
    ours = select(channels.c.node_id, channels.c.chan_id)
    for table, period, ns in _LEVELS:
        t = table.c
        stmt = delete(table)
        if oldest is not None:
            stmt = stmt.where(tuple_(t.node_id, t.chan_id).in_(ours)).where(
                t[period] < int(oldest) // ns
            )
        conn.execute(stmt)
