"""Settled forwards of a window: successes out of each channel, fees in via each.

Whole days, blocks and hours come from the per-channel forward rollups (one row per
channel), the partial hours from the ``forwards`` ledger at its ``timestamp_ns``. The
inbound baseline ``[since_ns − baseline_days, since_ns)`` is split the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, Table, bindparam, func, select, union_all

from lnflow.analysis.model import InboundBaseline
from lnflow.domain import from_signed64
from lnflow.store.read.speed import rows
from lnflow.store.read.window import Span
from lnflow.store.schema import (
    forward_channel_6h,
    forward_channel_daily,
    forward_channel_hourly,
    forwards,
)

__all__ = ["LedgerWindow", "inbound_baselines", "ledger_window", "successes_out"]


# A channel's forwards over whole periods: (forwards out of it, fees in via it or None
# when no forward came in via it). Settled forwards of one pair in the partial ranges:
# (incoming, outgoing, forwards, fee msat). Signed ids; plain tuples, thousands a window.
_ChannelTotals = tuple[int, int | None]
_PairSums = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class LedgerWindow:
    """The settled forwards of one span: totals of its whole periods, pairs of its parts."""

    totals: Mapping[int, _ChannelTotals]
    pairs: Sequence[_PairSums]


_LEDGER = (
    select(
        forwards.c.chan_id_in,
        forwards.c.chan_id_out,
        func.count().label("forwards"),
        func.sum(forwards.c.fee_msat).label("fee_msat"),
    )
    .where(forwards.c.node_id == bindparam("node"))
    .where(forwards.c.timestamp_ns >= bindparam("lo"))
    .where(forwards.c.timestamp_ns < bindparam("hi"))
    .group_by(forwards.c.chan_id_in, forwards.c.chan_id_out)
)


def _rollup_source(table: Table, period: str, first: str, last: str) -> Select[Any]:
    t = table.c
    return (
        select(t.chan_id, t.forwards_out, t.forwards_in, t.fee_in_msat)
        .where(t.node_id == bindparam("node"))
        .where(t[period].between(bindparam(first), bindparam(last)))
    )


_rollup_rows = union_all(
    _rollup_source(forward_channel_daily, "day", "d0", "d1"),
    _rollup_source(forward_channel_6h, "block", "c0", "c1"),
    _rollup_source(forward_channel_6h, "block", "e0", "e1"),
    _rollup_source(forward_channel_hourly, "hour", "a0", "a1"),
    _rollup_source(forward_channel_hourly, "hour", "b0", "b1"),
).subquery("rows")
# per channel over the span's days and whole hours: forwards out of it, fees in via it
_ROLLUP_FORWARDS = select(
    _rollup_rows.c.chan_id,
    func.sum(_rollup_rows.c.forwards_out).label("forwards_out"),
    func.sum(_rollup_rows.c.forwards_in).label("forwards_in"),
    func.sum(_rollup_rows.c.fee_in_msat).label("fee_in_msat"),
).group_by(_rollup_rows.c.chan_id)


def ledger_window(conn: Connection, node_id: int, span: Span) -> LedgerWindow:
    """The span's settled forwards: rollups for whole periods, the ledger for the parts."""
    totals: dict[int, _ChannelTotals] = {}
    # (rows unpacked in column order: a column read by name costs ~1 µs)
    if span.has_rollups:
        params = {"node": node_id} | span.range_params()
        for chan, forwards_out, forwards_in, fee_in_msat in rows(conn, _ROLLUP_FORWARDS, params):
            totals[chan] = (int(forwards_out), int(fee_in_msat) if forwards_in else None)
    pairs: list[_PairSums] = []
    for lo, hi in span.parts:
        pairs.extend(
            (chan_in, chan_out, int(n), int(fee_msat))
            for chan_in, chan_out, n, fee_msat in rows(
                conn, _LEDGER, {"node": node_id, "lo": lo, "hi": hi}
            )
        )
    return LedgerWindow(totals, pairs)


def successes_out(window: LedgerWindow) -> dict[int, int]:
    """Settled forwards out of each channel in the window."""
    counts = {chan: out for chan, (out, _) in window.totals.items() if out}
    for _, chan_out, n, _ in window.pairs:
        counts[chan_out] = counts.get(chan_out, 0) + n
    return {from_signed64(chan): n for chan, n in sorted(counts.items())}


def _fees_in(window: LedgerWindow) -> dict[int, int]:
    """Fees of forwards in via each channel (signed id) that had any forward in via it."""
    fees = {chan: fees for chan, (_, fees) in window.totals.items() if fees is not None}
    for chan_in, _, _, fee_msat in window.pairs:
        fees[chan_in] = fees.get(chan_in, 0) + fee_msat
    return fees


def inbound_baselines(baseline: LedgerWindow, window: LedgerWindow) -> dict[int, InboundBaseline]:
    """Fees of forwards in via each channel: in the baseline before the window, and in it."""
    before, during = _fees_in(baseline), _fees_in(window)
    result = {}
    for chan in sorted(before.keys() | during.keys()):
        chan_id = from_signed64(chan)
        result[chan_id] = InboundBaseline(chan_id, before.get(chan, 0), during.get(chan, 0))
    return result
