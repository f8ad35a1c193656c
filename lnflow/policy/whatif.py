"""What-if: what a proposed policy would have earned over a channel's recorded window
(DESIGN §9). Always an estimate, and labelled so.

:func:`estimate` replays the window ``[now − hours, now)`` of one channel (with its other
ids, as the analysis counts them) against a proposed policy: the given fields, the others
as the channel's newest sample before ``now`` has them. :func:`replay` is the arithmetic,
pure. Assumptions, each one a choice the figures depend on:

* **Fees** are lnd's: ``base_fee_msat + amount × fee_rate_ppm // 10⁶`` on the outgoing
  amount (integer msat).
* **Settled forwards** out of the channel (the ledger) keep their volume and earn at the
  proposed rate: each one's fee becomes ``fee paid − our fee at the time + proposed fee``
  (floor 0), so whatever it paid beyond our outbound policy then (an inbound fee, a
  sender's overpayment) stays as it was. "Our fee at the time" is the policy of the
  channel's last sample at or before the forward (the first sample when none precedes
  it; the current policy when no sample has one). A raise is assumed to lose no
  forward; a forward above a proposed ``max_htlc_msat`` is lost (it earns nothing).
* **Local failures** of the fee and max_htlc classes are replayed per **demand cluster**
  (DESIGN §4: retries and probes of one payment count once), not per attempt. A
  cluster is recovered when one of its members (in recording order; the first such
  one counts) would pass the proposed policy: its offered fee (incoming − outgoing
  amount) is at least the proposed fee for its amount, its amount is at most the
  proposed max_htlc, and at most the channel's local balance at the time (the last
  sample at or before it, else the first; unchecked without samples): lnd checks the
  balance after the policy, so a payment the policy lets through may still fail there
  (``short_of_balance``). A recovered cluster earns the proposed fee on that member's
  amount (what a sender with current gossip pays), and is assumed to settle downstream.
* A cluster whose payment **settled anyway** (a forward of the same outgoing amount out
  of the channel in the window, from its first failure to ``served_window_s`` after its
  last: the sender retried with our fee) is not recovered again: its forward is already
  among the settled ones (``served_anyway``).
* A cluster counts in the class of its first fee or max_htlc member in the window; its
  members before the window are not replayed.
* Inbound fees are not replayed: an offer is compared with our outbound fee alone (with
  the usual negative inbound fee, a discount, the replay errs on the low side).
* Other classes (liquidity, availability, policy, other) are not replayed: a new fee
  or max_htlc does not change them.
* **Per month** is the window's figure × 720 h / ``hours``, rounded half up: "before" is
  what the channel earned in the window, "after" what it would have earned had the
  proposed policy been in force throughout.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lnflow.analysis.classify import FailureClass
from lnflow.errors import LnflowError

from .effects import NS_PER_HOUR, window_ns
from .recorded import LocalFailure, PolicyPoint, SettledForward

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = [
    "DEFAULT_SERVED_WINDOW_S",
    "MAX_BASE_FEE_MSAT",
    "MAX_FEE_PPM",
    "MAX_HTLC_LIMIT_MSAT",
    "PolicyUnknownError",
    "WhatIf",
    "estimate",
    "fee_msat",
    "replay",
]

_PPM = 1_000_000
_HOURS_PER_MONTH = 720  # 30 days, as the analysis' potential per month
_NS = 1_000_000_000
DEFAULT_SERVED_WINDOW_S = 60  # as [recording] dedup_window_s
# a channel_update carries the base fee and the rate as uint32
MAX_BASE_FEE_MSAT = MAX_FEE_PPM = 2**32 - 1
MAX_HTLC_LIMIT_MSAT = 21_000_000 * 100_000_000 * 1_000  # every bitcoin, in msat
_REPLAYED = (FailureClass.FEE, FailureClass.MAX_HTLC)


class PolicyUnknownError(LnflowError):
    """The channel's current policy is not in the store and the proposal leaves it open."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class WhatIf:
    """The estimate (see the module docstring); integers msat, counts of demand clusters
    for failures."""

    chan_id: int
    since_ns: int
    until_ns: int
    hours: float
    # the policy now (the newest sample before until_ns; None: not known)
    current_fee_base_msat: int | None
    current_fee_rate_ppm: int | None
    current_max_htlc_msat: int | None
    # the proposed policy, the fields not given taken from the current one
    fee_base_msat: int
    fee_rate_ppm: int
    max_htlc_msat: int | None
    fees_month_before_msat: int
    fees_month_after_msat: int
    fees_before_msat: int  # earned in the window (the ledger)
    fees_after_msat: int  # estimated for the window
    forwards: int  # settled forwards out of the channel in the window
    forwards_repriced: int  # ... whose fee changes at the proposed rate
    repriced_delta_msat: int  # the change of their fees (those kept)
    forwards_over_max_htlc: int  # ... above the proposed max_htlc: lost
    lost_fees_msat: int  # the fees those paid
    fee_failures: int  # local fee failures in the window (attempts)
    fee_clusters: int  # ... as demand clusters
    fee_failures_recovered: int  # clusters the proposed policy would have let through
    max_htlc_failures: int
    max_htlc_clusters: int
    max_htlc_failures_recovered: int
    recovered_fees_msat: int  # what the recovered clusters would have earned
    served_anyway: int  # clusters whose payment settled on a retry (not recovered twice)
    short_of_balance: int  # clusters the policy would pass but the local balance could not

    @property
    def fees_month_change_msat(self) -> int:
        return self.fees_month_after_msat - self.fees_month_before_msat


def fee_msat(base_msat: int, rate_ppm: int, amount_msat: int) -> int:
    """lnd's fee for forwarding ``amount_msat``: base + amount × rate // 10⁶."""
    return base_msat + amount_msat * rate_ppm // _PPM


def _monthly(msat: int, span_ns: int) -> int:
    num, den = msat * _HOURS_PER_MONTH * NS_PER_HOUR, span_ns
    return (2 * num + den) // (2 * den)


def _check(name: str, value: int | None, lo: int, hi: int) -> None:
    if value is not None and (isinstance(value, bool) or not lo <= value <= hi):
        raise ValueError(f"{name} must be a whole number from {lo:,} to {hi:,}, not {value!r}")


class _Timeline:
    """The channel's samples in time order: the one in force at a time."""

    def __init__(self, points: Sequence[PolicyPoint]) -> None:
        self._points = sorted(points, key=lambda p: p.ts_ns)
        self._times = [p.ts_ns for p in self._points]

    def current(self) -> PolicyPoint | None:
        """The newest sample that knows our fee policy."""
        known = [
            p for p in self._points if p.fee_base_msat is not None and p.fee_rate_ppm is not None
        ]
        return known[-1] if known else None

    def at(self, ts_ns: int) -> PolicyPoint | None:
        """The last sample at or before ``ts_ns``, else the first one (None: no sample)."""
        if not self._points:
            return None
        i = bisect.bisect_right(self._times, ts_ns)
        return self._points[max(i - 1, 0)]


def replay(
    *,
    chan_id: int,
    chan_ids: frozenset[int],
    since_ns: int,
    until_ns: int,
    hours: float,
    forwards: Iterable[SettledForward],
    failures: Iterable[LocalFailure],
    points: Sequence[PolicyPoint],
    fee_ppm: int | None = None,
    base_fee_msat: int | None = None,
    max_htlc_msat: int | None = None,
    served_window_s: float = DEFAULT_SERVED_WINDOW_S,
) -> WhatIf:
    """The estimate from the window's records (pure; see the module docstring).

    ``points``: the channel's samples from the last one at or before ``since_ns`` up to
    ``until_ns``; the newest is the current policy. Raises :class:`PolicyUnknownError`
    when the proposal leaves a fee field open and no sample knows our policy, and
    ValueError for a field out of range.
    """
    _check("fee_ppm", fee_ppm, 0, MAX_FEE_PPM)
    _check("base_fee_msat", base_fee_msat, 0, MAX_BASE_FEE_MSAT)
    _check("max_htlc_msat", max_htlc_msat, 1, MAX_HTLC_LIMIT_MSAT)
    if not math.isfinite(served_window_s) or served_window_s < 0:
        raise ValueError(f"served_window_s must be a number from 0, not {served_window_s!r}")
    span = until_ns - since_ns
    if span <= 0:
        raise ValueError("the window must not be empty")
    timeline = _Timeline(points)
    current = timeline.current()
    cur_base = current.fee_base_msat if current is not None else None
    cur_ppm = current.fee_rate_ppm if current is not None else None
    cur_max = current.max_htlc_msat if current is not None else None
    new_base = base_fee_msat if base_fee_msat is not None else cur_base
    new_ppm = fee_ppm if fee_ppm is not None else cur_ppm
    if new_base is None or new_ppm is None:
        raise PolicyUnknownError(
            "the channel's current fee policy is not in the store (no sample of it yet): "
            "give both --fee-ppm and --base-fee-msat"
        )
    new_max = max_htlc_msat if max_htlc_msat is not None else cur_max

    def fee_then(ts_ns: int, amount: int) -> int | None:
        point = timeline.at(ts_ns)
        if point is not None and point.fee_base_msat is not None and point.fee_rate_ppm is not None:
            return fee_msat(point.fee_base_msat, point.fee_rate_ppm, amount)
        if cur_base is not None and cur_ppm is not None:
            return fee_msat(cur_base, cur_ppm, amount)
        return None

    # settled forwards out of the channel: repriced, or lost above a proposed max_htlc
    out = [
        fw
        for fw in forwards
        if since_ns <= fw.timestamp_ns < until_ns and fw.chan_id_out in chan_ids
    ]
    before = after = repriced = delta = over = lost = 0
    for fw in out:
        before += fw.fee_msat
        if max_htlc_msat is not None and fw.amt_out_msat > max_htlc_msat:
            over += 1
            lost += fw.fee_msat
            continue
        then = fee_then(fw.timestamp_ns, fw.amt_out_msat)
        new = fee_msat(new_base, new_ppm, fw.amt_out_msat)
        fee = max(0, fw.fee_msat - then + new) if then is not None else new
        after += fee
        if fee != fw.fee_msat:
            repriced += 1
            delta += fee - fw.fee_msat

    # fee and max_htlc failures, per demand cluster
    clusters: dict[tuple[bool, int], list[LocalFailure]] = {}
    raw = dict.fromkeys(_REPLAYED, 0)
    for f in failures:
        if not since_ns <= f.resolved_ns < until_ns or f.failure_class not in _REPLAYED:
            continue
        raw[f.failure_class] += 1
        key = (True, f.cluster_id) if f.cluster_id is not None else (False, f.attempt_id)
        clusters.setdefault(key, []).append(f)
    settled = sorted((fw.amt_out_msat, fw.timestamp_ns) for fw in out)
    served_ns = round(served_window_s * _NS)

    def served(members: Sequence[LocalFailure]) -> bool:
        lo, hi = members[0].resolved_ns, members[-1].resolved_ns + served_ns
        for amount in {m.outgoing_amt_msat for m in members if m.outgoing_amt_msat is not None}:
            i = bisect.bisect_left(settled, (amount, lo))
            if i < len(settled) and settled[i][0] == amount and settled[i][1] <= hi:
                return True
        return False

    counted = dict.fromkeys(_REPLAYED, 0)
    recovered = dict.fromkeys(_REPLAYED, 0)
    recovered_fees = served_anyway = short = 0
    for members in clusters.values():
        members.sort(key=lambda m: (m.resolved_ns, m.attempt_id))
        cls = members[0].failure_class
        counted[cls] += 1
        if served(members):
            served_anyway += 1
            continue
        passed = balance_short = False
        for m in members:
            amount = m.outgoing_amt_msat
            if amount is None or amount <= 0:
                continue
            fee = fee_msat(new_base, new_ppm, amount)
            if m.missed_fee_msat < fee or (new_max is not None and amount > new_max):
                continue
            point = timeline.at(m.resolved_ns)
            if point is not None and amount > point.local_balance_sat * 1_000:
                balance_short = True
                continue
            passed = True
            recovered[cls] += 1
            recovered_fees += fee
            break
        if not passed and balance_short:
            short += 1
    after += recovered_fees
    return WhatIf(
        chan_id=chan_id,
        since_ns=since_ns,
        until_ns=until_ns,
        hours=hours,
        current_fee_base_msat=cur_base,
        current_fee_rate_ppm=cur_ppm,
        current_max_htlc_msat=cur_max,
        fee_base_msat=new_base,
        fee_rate_ppm=new_ppm,
        max_htlc_msat=new_max,
        fees_month_before_msat=_monthly(before, span),
        fees_month_after_msat=_monthly(after, span),
        fees_before_msat=before,
        fees_after_msat=after,
        forwards=len(out),
        forwards_repriced=repriced,
        repriced_delta_msat=delta,
        forwards_over_max_htlc=over,
        lost_fees_msat=lost,
        fee_failures=raw[FailureClass.FEE],
        fee_clusters=counted[FailureClass.FEE],
        fee_failures_recovered=recovered[FailureClass.FEE],
        max_htlc_failures=raw[FailureClass.MAX_HTLC],
        max_htlc_clusters=counted[FailureClass.MAX_HTLC],
        max_htlc_failures_recovered=recovered[FailureClass.MAX_HTLC],
        recovered_fees_msat=recovered_fees,
        served_anyway=served_anyway,
        short_of_balance=short,
    )


def estimate(
    conn: Connection,
    *,
    node_id: int,
    chan_id: int,
    fee_ppm: int | None = None,
    base_fee_msat: int | None = None,
    max_htlc_msat: int | None = None,
    hours: float,
    now_ns: int,
    served_window_s: float = DEFAULT_SERVED_WINDOW_S,
) -> WhatIf:
    """The estimate for the channel's window ``[now_ns − hours, now_ns)``, read through
    ``conn`` (:mod:`lnflow.store.policy_read`), computed by :func:`replay`."""
    from lnflow.store import policy_read

    span = window_ns(hours)
    since_ns = now_ns - span
    ids = policy_read.channel_ids(conn, node_id, chan_id)
    return replay(
        chan_id=chan_id,
        chan_ids=ids,
        since_ns=since_ns,
        until_ns=now_ns,
        hours=hours,
        forwards=policy_read.settled_forwards(conn, node_id, ids, since_ns, now_ns),
        failures=policy_read.local_failures(
            conn, node_id, ids, since_ns, now_ns, classes=_REPLAYED
        ),
        points=policy_read.policy_points(conn, node_id, chan_id, since_ns, now_ns),
        fee_ppm=fee_ppm,
        base_fee_msat=base_fee_msat,
        max_htlc_msat=max_htlc_msat,
        served_window_s=served_window_s,
    )
