"""One channel, several ids: alias SCIDs and a zero-conf channel's confirmed SCID.

lnd may name one of our channels by an id other than the ``chan_id`` ListChannels
reports (lnflow's id of the channel): a link failure on an alias whose peer is offline
keeps the alias, and a zero-conf channel's graph edge moves to its real SCID once it
confirms (lnd-api.md, "Real-node behaviours"). The sampler keeps every such id in
``channel_aliases``; the analysis folds what the store holds under those ids into the
channel, here (the failure details in :mod:`lnflow.store.read.details`), so
opportunities, successes and failure details are per channel.

What cannot be folded exactly is an estimate, said so: the distinct incoming channels
of failures recorded under two ids are the larger of the two counts (a lower bound),
and demand clusters never span two ids (the recorder clusters by the id lnd named).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from sqlalchemy import Connection, select

from lnflow.analysis.model import ChannelFailures, ClassStats
from lnflow.domain import from_signed64
from lnflow.store.schema import channel_aliases

__all__ = ["alias_map", "fold_counts", "fold_failures"]


def alias_map(conn: Connection, node_id: int) -> dict[int, int]:
    """Every other id of our channels -> the channel's chan_id (unsigned)."""
    rows = conn.execute(
        select(channel_aliases.c.scid, channel_aliases.c.chan_id).where(
            channel_aliases.c.node_id == node_id
        )
    )
    return {from_signed64(scid): from_signed64(chan) for scid, chan in rows}


def _merge(a: ChannelFailures, b: ChannelFailures, chan_id: int) -> ChannelFailures:
    by_class = dict(a.by_class)
    for cls, stats in b.by_class.items():
        old = by_class.get(cls)
        by_class[cls] = (
            stats
            if old is None
            else ClassStats(old.failures + stats.failures, old.missed_msat + stats.missed_msat)
        )
    return ChannelFailures(
        chan_id=chan_id,
        failures=a.failures + b.failures,
        clusters=a.clusters + b.clusters,
        missed_raw_msat=a.missed_raw_msat + b.missed_raw_msat,
        missed_dedup_msat=a.missed_dedup_msat + b.missed_dedup_msat,
        incoming_channels=max(a.incoming_channels, b.incoming_channels),
        first_failure_ns=min(a.first_failure_ns, b.first_failure_ns),
        last_failure_ns=max(a.last_failure_ns, b.last_failure_ns),
        by_class=by_class,
    )


def fold_failures(
    failures: Mapping[int, ChannelFailures], aliases: Mapping[int, int]
) -> dict[int, ChannelFailures]:
    """Failures per channel, those recorded under another id of it added in."""
    result: dict[int, ChannelFailures] = {}
    for chan_id, f in sorted(failures.items()):
        owner = aliases.get(chan_id, chan_id)
        held = result.get(owner)
        if held is None:
            result[owner] = f if owner == chan_id else replace(f, chan_id=owner)
        else:
            result[owner] = _merge(held, f, owner)
    return dict(sorted(result.items()))


def fold_counts(counts: Mapping[int, int], aliases: Mapping[int, int]) -> dict[int, int]:
    """Per-channel counts (settled forwards), those under another id of it added in."""
    result: dict[int, int] = {}
    for chan_id, n in counts.items():
        owner = aliases.get(chan_id, chan_id)
        result[owner] = result.get(owner, 0) + n
    return dict(sorted(result.items()))
