"""Guard rails on every policy change (DESIGN §9), pure.

Two steps. While deciding, :func:`fee_deltas` applies a section's minimum fee deltas the
way charge-lnd does (a fee that moves less than ``min_fee_ppm_delta`` stays as it is, and
``inbound_level_ppm`` follows the fee actually kept). Then :func:`apply_guards` checks each
remaining change, first refusal wins::

    guard                  refuses a change when
    lnd version            inbound fees on lnd < 0.18; enable/disable on lnd < 0.13
    bounds                 the new fee_ppm is outside the section's min_fee_ppm..max_fee_ppm
    stream gap             the latest analysis window had a gap > max_gap_minutes
    cooldown               the channel changed less than min_hours_between_changes ago
    channels per run       max_channels_per_run changes are already kept (most urgent first)

Refusals are one line each; nothing here talks to lnd or the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lnflow.domain import NS_PER_HOUR, LndVersion

from .model import EdgePolicy, PolicyDecision

__all__ = [
    "INBOUND_FEES_SINCE",
    "STATUS_SINCE",
    "ChangeRecord",
    "GuardSettings",
    "GuardedPlan",
    "Refusal",
    "apply_guards",
    "fee_deltas",
]

INBOUND_FEES_SINCE = (0, 18, 0)  # UpdateChannelPolicy.inbound_fee
STATUS_SINCE = (0, 13, 0)  # Router.UpdateChanStatus

_HOUR_NS = NS_PER_HOUR


@dataclass(frozen=True, slots=True)
class GuardSettings:
    min_hours_between_changes: int = 24
    max_channels_per_run: int = 10
    max_gap_minutes: int = 30


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """A policy change applied earlier (the store's history)."""

    chan_id: int
    applied_ns: int


@dataclass(frozen=True, slots=True)
class Refusal:
    decision: PolicyDecision
    reason: str  # one line


@dataclass(frozen=True, slots=True)
class GuardedPlan:
    changes: tuple[PolicyDecision, ...]  # to apply, most urgent first
    refusals: tuple[Refusal, ...]


def fee_deltas(
    before: EdgePolicy,
    *,
    fee_ppm: int | None,
    inbound_fee_ppm: int | None,
    inbound_base_fee_msat: int | None,
    inbound_level_ppm: int | None,
    min_fee_ppm_delta: int,
    min_inbound_fee_ppm_delta: int,
) -> tuple[int | None, int | None]:
    """The (fee_ppm, inbound_fee_ppm) to set after the minimum deltas; None: keep.

    * fee_ppm changes only when it moves by at least ``min_fee_ppm_delta``;
    * ``inbound_level_ppm`` sets inbound_fee_ppm = min(0, level − the fee_ppm kept);
    * inbound_fee_ppm moving by less than ``min_inbound_fee_ppm_delta`` stays, unless the
      inbound base fee changes too or the new rate is 0 (a discount is always removable).
    """
    fee_changed = (
        fee_ppm is not None
        and fee_ppm != before.fee_rate_ppm
        and abs(fee_ppm - before.fee_rate_ppm) >= min_fee_ppm_delta
    )
    kept_fee_ppm = fee_ppm if fee_changed and fee_ppm is not None else before.fee_rate_ppm
    if inbound_level_ppm is not None:
        inbound_fee_ppm = min(0, inbound_level_ppm - kept_fee_ppm)
    base_changed = (
        inbound_base_fee_msat is not None and inbound_base_fee_msat != before.inbound_fee_base_msat
    )
    if (
        inbound_fee_ppm is not None
        and not base_changed
        and inbound_fee_ppm != 0
        and abs(inbound_fee_ppm - before.inbound_fee_rate_ppm) < min_inbound_fee_ppm_delta
    ):
        inbound_fee_ppm = before.inbound_fee_rate_ppm
    return (
        fee_ppm if fee_changed else None,
        inbound_fee_ppm if inbound_fee_ppm != before.inbound_fee_rate_ppm else None,
    )


def _version(v: LndVersion) -> str:
    return ".".join(str(n) for n in v.triple)


def _refusal(
    decision: PolicyDecision,
    settings: GuardSettings,
    last_change_ns: int | None,
    *,
    now_ns: int,
    lnd_version: LndVersion,
) -> str | None:
    change = decision.change
    if change.inbound and lnd_version.triple < INBOUND_FEES_SINCE:
        return f"inbound fees need lnd 0.18 or newer (the node runs {_version(lnd_version)})"
    if change.disabled is not None and lnd_version.triple < STATUS_SINCE:
        what = "disabling" if change.disabled else "enabling"
        return f"{what} a channel needs lnd 0.13 or newer (the node runs {_version(lnd_version)})"
    ppm, low, high = change.fee_ppm, decision.min_fee_ppm, decision.max_fee_ppm
    if ppm is not None and low is not None and ppm < low:
        return f"fee_ppm {ppm} is below the section's min_fee_ppm {low}"
    if ppm is not None and high is not None and ppm > high:
        return f"fee_ppm {ppm} is above the section's max_fee_ppm {high}"
    if decision.stream_gap_s > settings.max_gap_minutes * 60:
        return (
            f"the latest analysis window has a {decision.stream_gap_s // 60} min stream gap"
            f" (max_gap_minutes {settings.max_gap_minutes}): its evidence is incomplete"
        )
    if last_change_ns is not None:
        since_ns = now_ns - last_change_ns
        if since_ns < settings.min_hours_between_changes * _HOUR_NS:
            return (
                f"changed {since_ns // _HOUR_NS} h ago"
                f" (min_hours_between_changes {settings.min_hours_between_changes})"
            )
    return None


def apply_guards(
    decisions: Iterable[PolicyDecision],
    history: Sequence[ChangeRecord],
    settings: GuardSettings,
    *,
    now_ns: int,
    lnd_version: LndVersion,
) -> GuardedPlan:
    """Keep the changes every guard allows, refuse the others with a reason.

    Decisions without a change are neither kept nor refused. Changes are taken most
    urgent first (ties: as given), so ``max_channels_per_run`` keeps the ones that matter.
    """
    last: dict[int, int] = {}
    for record in history:
        if record.applied_ns > last.get(record.chan_id, record.applied_ns - 1):
            last[record.chan_id] = record.applied_ns
    candidates = sorted(
        (d for d in decisions if d.changed), key=lambda d: -d.urgency
    )  # sorted() is stable: ties keep their order
    kept: list[PolicyDecision] = []
    refused: list[Refusal] = []
    for decision in candidates:
        reason = _refusal(
            decision, settings, last.get(decision.chan_id), now_ns=now_ns, lnd_version=lnd_version
        )
        if reason is None and len(kept) >= settings.max_channels_per_run:
            reason = f"max_channels_per_run {settings.max_channels_per_run} reached"
        if reason is None:
            kept.append(decision)
        else:
            refused.append(Refusal(decision, reason))
    return GuardedPlan(changes=tuple(kept), refusals=tuple(refused))
