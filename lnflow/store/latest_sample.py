"""Each channel's latest sample, kept on its ``channels`` row (migration 0024).

``channels.latest_sample_id`` and ``latest_sample_ns`` name the channel's sample with
the highest ``ts_ns`` (then the highest id: the order the analysis reads a channel's
state in), or are NULL. They are set again from the samples themselves after every
write of samples and after every deletion of samples, so samples written out of time
order, or deleted by the retention, leave no stale value: a reader may take the kept
sample whenever its time is at or before the moment it asks about, and look the sample
up otherwise (or when NULL).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import ColumnElement, Connection, exists, select, update

from lnflow.store.schema import channel_samples, channels

__all__ = ["refresh_deleted", "refresh_latest"]


def _latest(column: ColumnElement[int]) -> ColumnElement[int]:
    """``column`` of the latest sample of the ``channels`` row being updated."""
    s = channel_samples
    return (
        select(column)
        .where(s.c.node_id == channels.c.node_id)
        .where(s.c.chan_id == channels.c.chan_id)
        .order_by(s.c.ts_ns.desc(), s.c.id.desc())
        .limit(1)
        .correlate(channels)
        .scalar_subquery()
    )


_VALUES = {
    channels.c.latest_sample_id: _latest(channel_samples.c.id),
    channels.c.latest_sample_ns: _latest(channel_samples.c.ts_ns),
}


def refresh_latest(conn: Connection, node_id: int, chan_ids: Collection[int]) -> None:
    """Set the latest sample of the channels ``chan_ids`` (signed ids) of ``node_id``."""
    if chan_ids:
        conn.execute(
            update(channels)
            .where(channels.c.node_id == node_id)
            .where(channels.c.chan_id.in_(sorted(chan_ids)))
            .values(_VALUES)
        )


def refresh_deleted(conn: Connection) -> None:
    """Set again the latest sample of every channel whose kept sample was deleted."""
    gone = ~exists().where(channel_samples.c.id == channels.c.latest_sample_id)
    conn.execute(
        update(channels).where(channels.c.latest_sample_id.is_not(None)).where(gone).values(_VALUES)
    )
