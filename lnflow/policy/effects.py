"""Measured effects of a policy change, and the verdict on reverting it (DESIGN §9).

:func:`measure` compares two windows of the same length ``hours`` around a change made
at ``at_ns``: before ``[at − hours, at)`` and after ``[at, at + hours)``. Per window,
for the channel (with its other ids, as the analysis counts them):

==================  =====================================================================
figure              rule
==================  =====================================================================
forwards_out        settled forwards out of the channel (the ledger, by timestamp_ns)
fees_out_msat       the fees they earned: what the channel's outbound policy earns
forwards_in         settled forwards that came in via the channel
fees_in_msat        the fees they earned (on the outgoing channels; an inbound fee of the
                    channel is part of them)
failures            local failures out of the channel, by their LINK_FAIL time, per class
missed_raw_msat     the sum of their missed fees
missed_msat         deduplicated (DESIGN §4): per demand cluster, how far the window's
                    members raised the cluster's largest missed fee above its earlier
                    members, so a retried payment counts once
clusters            demand clusters opened in the window (first member in it)
observed_ns         how long an HTLC stream was connected in the window (failures outside
                    it went unseen; the ledger is complete either way)
==================  =====================================================================

The after-window is ``complete`` when the store's time (``now_ns``, else the daemon's
newest heartbeat) has reached its end; until then its figures are partial.

:func:`verdict` judges the fees earned out of the channel: revert when they fell by
**more** than ``threshold_percent`` from the before-window to the after-window, with at
least ``min_forwards`` forwards out in the before-window, on a complete after-window
only. Exactly the threshold does not revert; no fees before means nothing could fall.

The figures come from raw failures (kept ``[retention] attempts_days``) and the ledger
(kept for good), read by :mod:`lnflow.store.policy_read`; everything else is pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from lnflow.analysis.classify import FailureClass

from .recorded import LocalFailure, SettledForward

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = [
    "NS_PER_HOUR",
    "Effects",
    "Verdict",
    "WindowEffects",
    "dedup_missed",
    "measure",
    "verdict",
    "window_effects",
    "window_ns",
]

NS_PER_HOUR = 3_600 * 1_000_000_000


def window_ns(hours: float) -> int:
    """``hours`` as whole nanoseconds (rounded); hours must be a finite number above 0."""
    if isinstance(hours, bool) or not math.isfinite(hours) or hours <= 0:
        raise ValueError(f"hours must be a number above 0, not {hours!r}")
    span = round(Fraction(hours) * NS_PER_HOUR)
    if span < 1:
        raise ValueError(f"hours must be a number above 0, not {hours!r}")
    return span


@dataclass(frozen=True, slots=True)
class WindowEffects:
    """One window's figures for the channel (see the module docstring)."""

    since_ns: int
    until_ns: int
    forwards_out: int
    fees_out_msat: int
    forwards_in: int
    fees_in_msat: int
    failures: int
    failures_by_class: Mapping[str, int]  # every FailureClass label, zeros included
    clusters: int
    missed_msat: int  # deduplicated
    missed_raw_msat: int
    observed_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Effects:
    """The same-length windows before and after a change at ``at_ns``."""

    chan_id: int
    at_ns: int
    hours: float
    before: WindowEffects
    after: WindowEffects
    #: the after-window has ended by ``as_of_ns``; until then its figures are partial
    complete: bool
    #: the time the store was read up to (``now_ns``, else the newest heartbeat)
    as_of_ns: int | None

    @property
    def fees_out_change_msat(self) -> int:
        return self.after.fees_out_msat - self.before.fees_out_msat


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether to revert a change, and why, in one line naming the figures."""

    revert: bool
    reason: str


# --------------------------------------------------------------------------- pure


def dedup_missed(failures: Iterable[LocalFailure], since_ns: int, until_ns: int) -> tuple[int, int]:
    """(deduplicated missed fee, clusters opened) of the failures resolved in the window.

    Per demand cluster: the largest missed fee of its members resolved before
    ``until_ns`` minus the largest of those resolved before ``since_ns`` (0 without
    any), floor 0. A failure without a cluster is a demand of its own.
    """
    before: dict[int, int] = {}  # cluster → largest fee before the window
    upto: dict[int, int] = {}  # cluster → largest fee before the window's end
    first: dict[int, int] = {}  # cluster → its first member's time
    loose = 0
    for f in failures:
        if f.resolved_ns >= until_ns:
            continue
        if f.cluster_id is None:
            if f.resolved_ns >= since_ns:
                loose += f.missed_fee_msat
            continue
        c = f.cluster_id
        first[c] = min(first.get(c, f.resolved_ns), f.resolved_ns)
        upto[c] = max(upto.get(c, 0), f.missed_fee_msat)
        if f.resolved_ns < since_ns:
            before[c] = max(before.get(c, 0), f.missed_fee_msat)
    missed = loose + sum(max(0, top - before.get(c, 0)) for c, top in upto.items())
    opened = sum(1 for t in first.values() if t >= since_ns)
    return missed, opened


def window_effects(
    since_ns: int,
    until_ns: int,
    chan_ids: frozenset[int],
    failures: Iterable[LocalFailure],
    forwards: Iterable[SettledForward],
    observed_ns: int | None = None,
) -> WindowEffects:
    """One window's figures from the channel's failures (those of the window and the
    earlier members of their clusters) and its settled forwards."""
    failures = tuple(failures)
    forwards_out = fees_out = forwards_in = fees_in = 0
    for fw in forwards:
        if not since_ns <= fw.timestamp_ns < until_ns:
            continue
        if fw.chan_id_out in chan_ids:
            forwards_out += 1
            fees_out += fw.fee_msat
        if fw.chan_id_in in chan_ids:
            forwards_in += 1
            fees_in += fw.fee_msat
    by_class = dict.fromkeys((cls.label for cls in FailureClass), 0)
    raw = 0
    for f in failures:
        if since_ns <= f.resolved_ns < until_ns:
            by_class[f.failure_class.label] += 1
            raw += f.missed_fee_msat
    missed, clusters = dedup_missed(failures, since_ns, until_ns)
    return WindowEffects(
        since_ns=since_ns,
        until_ns=until_ns,
        forwards_out=forwards_out,
        fees_out_msat=fees_out,
        forwards_in=forwards_in,
        fees_in_msat=fees_in,
        failures=sum(by_class.values()),
        failures_by_class=by_class,
        clusters=clusters,
        missed_msat=missed,
        missed_raw_msat=raw,
        observed_ns=observed_ns,
    )


def _sats(msat: int) -> str:
    sats, rest = divmod(abs(msat), 1_000)
    text = f"{sats:,}" if rest == 0 else f"{sats:,}.{rest:03d}".rstrip("0")
    return f"-{text}" if msat < 0 else text


def _hours(hours: float) -> str:
    return f"{hours:g} h"


def verdict(effects: Effects, *, threshold_percent: float, min_forwards: int) -> Verdict:
    """Revert when the fees earned out of the channel fell by more than
    ``threshold_percent`` with at least ``min_forwards`` forwards out in the
    before-window; never on an incomplete after-window (see the module docstring)."""
    if isinstance(threshold_percent, bool) or not (
        math.isfinite(threshold_percent) and threshold_percent >= 0
    ):
        raise ValueError(f"threshold_percent must be a number from 0, not {threshold_percent!r}")
    if isinstance(min_forwards, bool) or min_forwards < 0:
        raise ValueError(f"min_forwards must be a whole number from 0, not {min_forwards!r}")
    before, after = effects.before, effects.after
    span = _hours(effects.hours)
    if not effects.complete:
        return Verdict(
            False,
            f"not judged yet: the {span} after the change have not all passed",
        )
    if before.forwards_out < min_forwards:
        return Verdict(
            False,
            f"not judged: {before.forwards_out:,} forwards out in the {span} before the "
            f"change, fewer than the {min_forwards:,} needed",
        )
    figures = (
        f"fees earned out {_sats(before.fees_out_msat)} → {_sats(after.fees_out_msat)} sats "
        f"({before.forwards_out:,} → {after.forwards_out:,} forwards) over {span}"
    )
    if before.fees_out_msat <= 0:
        return Verdict(False, f"kept: no fees earned before the change to fall from; {figures}")
    fell = before.fees_out_msat - after.fees_out_msat
    share = Fraction(fell * 100, before.fees_out_msat)  # exact percent fallen
    limit = Fraction(threshold_percent)
    shown = f"{float(abs(share)):.1f}%"
    if share > limit:
        return Verdict(True, f"revert: {figures}, down {shown}, more than {threshold_percent:g}%")
    direction = f"down {shown}" if share > 0 else f"up {shown}" if share < 0 else "unchanged"
    return Verdict(False, f"kept: {figures}, {direction}, within {threshold_percent:g}%")


# --------------------------------------------------------------------------- store


def measure(
    conn: Connection,
    *,
    node_id: int,
    chan_id: int,
    at_ns: int,
    hours: float,
    now_ns: int | None = None,
) -> Effects:
    """The channel's windows of ``hours`` before and after ``at_ns``, read through ``conn``.

    ``now_ns``: the time the after-window is complete by (default: the daemon's newest
    heartbeat in the store, so a window the daemon did not record to its end stays
    incomplete).
    """
    from lnflow.store import policy_read
    from lnflow.store.queries import observed_ns

    span = window_ns(hours)
    start, end = at_ns - span, at_ns + span
    ids = policy_read.channel_ids(conn, node_id, chan_id)
    failures = policy_read.local_failures(conn, node_id, ids, start, end)
    forwards = policy_read.settled_forwards(conn, node_id, ids, start, end)
    as_of = now_ns if now_ns is not None else policy_read.recorded_until_ns(conn, node_id)
    seen_until = end if as_of is None else max(at_ns, min(end, as_of))
    return Effects(
        chan_id=chan_id,
        at_ns=at_ns,
        hours=hours,
        before=window_effects(
            start, at_ns, ids, failures, forwards, observed_ns(conn, node_id, start, at_ns)
        ),
        after=window_effects(
            at_ns, end, ids, failures, forwards, observed_ns(conn, node_id, at_ns, seen_until)
        ),
        complete=as_of is not None and as_of >= end,
        as_of_ns=as_of,
    )
