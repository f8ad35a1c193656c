"""Match channels against the rules and compute their new policy, as charge-lnd does.

For each channel, sections are tried top to bottom; a section matches when every one of
its criteria holds. A matching section *without* a strategy lays its properties over
whatever comes later and the search goes on; the first matching section *with* a
strategy ends it. When no final section matched, ``[default]`` applies (over the
properties laid so far). No match and no ``[default]``: the channel is left alone.

A criterion whose figure is unknown (no peer policy, no pending HTLC, an empty channel's
ratio, no snapshot row) does not hold.

The strategies (``fee_ppm``, ``base_fee_msat`` and the inbound fees come from the
properties unless the strategy computes them)::

    ignore        nothing changes
    ignore_fees   only min_htlc_msat, max_htlc_msat(_ratio) and time_lock_delta
    static        the properties as written
    match_peer    the peer's fees (outbound and inbound), a property overriding each
    proportional  fee_ppm = min_fee_ppm + (1 − ratio)(max_fee_ppm − min_fee_ppm), rounded down;
                  ratio over all the peer's channels with sum_peer_chans (active ones, or
                  all when none is active); min_fee_ppm_delta 10 unless set
    disable       disable the channel (only that)
    use_config    the decision of the rules in config_file, evaluated afresh
    opportunity   the latest snapshot's suggestion: lower_fees → fee_ppm toward the
                  suggested ppm, at most max_fee_step_percent (25) of the current ppm a
                  step, within min_fee_ppm..max_fee_ppm; raise_max_htlc → the suggested
                  max_htlc_msat, only up (max_htlc_msat/_ratio cap it, never set it)

Every strategy but ``ignore`` and ``disable`` also sets min_htlc_msat, max_htlc_msat
(``max_htlc_msat_ratio`` × capacity, the smaller of the two when both are set) and
time_lock_delta when the properties have them, and enables the channel if we had disabled
it. min_htlc_msat is raised to the channel's constraint floor and max_htlc_msat lowered
to its ceiling, as lnd would otherwise refuse the update. The minimum fee deltas are
applied here (:func:`lnflow.policy.guards.fee_deltas`); the other guard rails later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from lnflow.analysis.model import Action, Opportunity
from lnflow.analysis.opportunities import dominant_class

from .guards import fee_deltas
from .model import (
    BLOCK_S,
    ChannelActivity,
    ChannelState,
    EdgePolicy,
    PeerNode,
    PolicyChange,
    PolicyDecision,
)
from .rules import CriterionValue, Properties, Rules, Section, Strategy, window_s

__all__ = ["DEFAULT_MAX_FEE_STEP_PERCENT", "PROPORTIONAL_MIN_FEE_PPM_DELTA", "evaluate"]

DEFAULT_MAX_FEE_STEP_PERCENT = 25
PROPORTIONAL_MIN_FEE_PPM_DELTA = 10

_Number = int | Fraction


@dataclass(frozen=True, slots=True)
class _PeerShare:
    """Our channels with one peer, summed (node.*shared* criteria, sum_peer_chans)."""

    channels_active: int = 0
    channels_inactive: int = 0
    local_active_sat: int = 0
    remote_active_sat: int = 0
    local_inactive_sat: int = 0
    remote_inactive_sat: int = 0

    def add(self, channel: ChannelState) -> _PeerShare:
        local, remote = channel.local_total_sat, channel.remote_total_sat
        if channel.active:
            return replace(
                self,
                channels_active=self.channels_active + 1,
                local_active_sat=self.local_active_sat + local,
                remote_active_sat=self.remote_active_sat + remote,
            )
        return replace(
            self,
            channels_inactive=self.channels_inactive + 1,
            local_inactive_sat=self.local_inactive_sat + local,
            remote_inactive_sat=self.remote_inactive_sat + remote,
        )

    @property
    def active_sat(self) -> int:
        return self.local_active_sat + self.remote_active_sat

    @property
    def inactive_sat(self) -> int:
        return self.local_inactive_sat + self.remote_inactive_sat


def _ratio(part: int, whole: int) -> Fraction | None:
    return Fraction(part, whole) if whole else None


@dataclass(frozen=True, slots=True)
class _View:
    """One channel seen by the criteria: its state plus what is shared or passed in."""

    channel: ChannelState
    share: _PeerShare
    block_height: int
    analysis_window_s: int
    max_fee_step_percent: int = DEFAULT_MAX_FEE_STEP_PERCENT  # when the section sets none

    def activity(self, period_s: int) -> ChannelActivity:
        try:
            return self.channel.activity[period_s]
        except KeyError:
            raise ValueError(
                f"channel {self.channel.chan_id}: no activity for {period_s} s;"
                " fetch every period of Rules.activity_periods_s()"
            ) from None


def _period(view: _View, section: Section) -> ChannelActivity:
    period = section.get("chan.activity_period")
    assert isinstance(period, int)
    return view.activity(period)


def _window(view: _View, section: Section) -> ChannelActivity:
    return view.activity(window_s(section, view.analysis_window_s))


def _in_ratio(a_in: int, a_out: int) -> Fraction | None:
    return _ratio(a_in, a_in + a_out)


def _next_expiry(view: _View, _: Section) -> int | None:
    pending = view.channel.pending_htlcs
    if not pending:
        return None
    return min(h.expiration_height for h in pending) - view.block_height


def _opp_figure(get: Callable[[_View], _Number]) -> Callable[[_View, Section], _Number | None]:
    def figure(view: _View, _: Section) -> _Number | None:
        return get(view) if view.channel.opportunity is not None else None

    return figure


def _peer_figure(get: Callable[[EdgePolicy], int]) -> Callable[[_View, Section], int | None]:
    def figure(view: _View, _: Section) -> int | None:
        peer = view.channel.peer
        return get(peer) if peer is not None else None

    return figure


def _node_figure(get: Callable[[PeerNode], int]) -> Callable[[_View, Section], int | None]:
    def figure(view: _View, _: Section) -> int | None:
        node = view.channel.peer_node
        return get(node) if node is not None else None

    return figure


# The figure behind each min_/max_ criterion ("chan.min_capacity" compares "chan.capacity");
# None: unknown, and the criterion does not hold.
_FIGURES: Mapping[str, Callable[[_View, Section], _Number | None]] = {
    "chan.capacity": lambda v, _: v.channel.capacity_sat,
    "chan.age": lambda v, _: v.channel.age_blocks(v.block_height),
    "chan.ratio": lambda v, _: v.channel.ratio,
    "chan.local_balance": lambda v, _: v.channel.local_total_sat,
    "chan.remote_balance": lambda v, _: v.channel.remote_total_sat,
    "chan.base_fee_msat": _peer_figure(lambda p: p.fee_base_msat),
    "chan.fee_ppm": _peer_figure(lambda p: p.fee_rate_ppm),
    "chan.htlcs_in": lambda v, s: _period(v, s).htlcs_in,
    "chan.htlcs_out": lambda v, s: _period(v, s).htlcs_out,
    "chan.sats_in": lambda v, s: _period(v, s).sats_in,
    "chan.sats_out": lambda v, s: _period(v, s).sats_out,
    "chan.htlcs_ratio": lambda v, s: _in_ratio(_period(v, s).htlcs_in, _period(v, s).htlcs_out),
    "chan.sats_ratio": lambda v, s: _in_ratio(_period(v, s).sats_in, _period(v, s).sats_out),
    "chan.count_pending_htlcs": lambda v, _: len(v.channel.pending_htlcs),
    "chan.next_pending_htlc_expiry": _next_expiry,
    "node.channels": _node_figure(lambda n: n.num_channels),
    "node.capacity": _node_figure(lambda n: n.total_capacity_sat),
    "node.shared_channels_active": lambda v, _: v.share.channels_active,
    "node.shared_channels_inactive": lambda v, _: v.share.channels_inactive,
    "node.shared_capacity_active": lambda v, _: v.share.active_sat,
    "node.shared_capacity_inactive": lambda v, _: v.share.inactive_sat,
    "node.shared_ratio": lambda v, _: _ratio(
        v.share.local_active_sat + v.share.local_inactive_sat,
        v.share.active_sat + v.share.inactive_sat,
    ),
    "node.shared_ratio_active": lambda v, _: _ratio(v.share.local_active_sat, v.share.active_sat),
    "node.shared_ratio_inactive": lambda v, _: _ratio(
        v.share.local_inactive_sat, v.share.inactive_sat
    ),
    "lnflow.urgency": _opp_figure(lambda v: _opp(v).urgency_score),
    "lnflow.missed_sats": _opp_figure(lambda v: Fraction(_opp(v).missed_msat, 1000)),
    "lnflow.failures": _opp_figure(lambda v: _opp(v).failures),
    "lnflow.fees_earned_sats": lambda v, s: Fraction(_window(v, s).fees_out_msat, 1000),
    "lnflow.forwards": lambda v, s: _window(v, s).htlcs_out,
}


def _opp(view: _View) -> Opportunity:
    opp = view.channel.opportunity
    assert opp is not None  # _opp_figure looked
    return opp


def _holds(key: str, value: CriterionValue, view: _View, section: Section) -> bool:
    channel = view.channel
    namespace, name = key.split(".", 1)
    if name.startswith(("min_", "max_")):
        figure = _FIGURES[f"{namespace}.{name[4:]}"](view, section)
        if figure is None:
            return False
        assert isinstance(value, int | Fraction)
        return figure >= value if name.startswith("min_") else figure <= value
    if isinstance(value, frozenset):
        return _in_list(key, value, channel)
    if key == "chan.initiator":
        return channel.initiator is value
    if key == "chan.private":
        return channel.private is value
    if key == "chan.disabled":
        return channel.peer is not None and channel.peer.disabled is value
    if key == "chan.activity_period":
        assert isinstance(value, int)
        if section.get("chan.activity_period_ignore_channel_age") is True:
            return True
        # a channel younger than the period has not had the chance to be active
        return channel.age_blocks(view.block_height) * BLOCK_S >= value
    # modifiers read with another criterion: chan.activity_period_ignore_channel_age,
    # lnflow.window_hours
    return True


def _in_list(key: str, value: frozenset[int] | frozenset[str], channel: ChannelState) -> bool:
    opp = channel.opportunity
    if key == "chan.id":
        return channel.chan_id in value
    if key == "node.id":
        return channel.peer_pubkey in value
    if key == "lnflow.recommendation":
        return opp is not None and opp.recommended_action in value
    if key == "lnflow.dominant_class":
        return opp is not None and dominant_class(opp.by_class) in value
    raise AssertionError(key)


def _matches(section: Section, view: _View) -> bool:
    return all(_holds(c.key, c.value, view, section) for c in section.criteria)


# --------------------------------------------------------------------------- strategies


@dataclass(frozen=True, slots=True)
class _Target:
    """What a strategy asks for; None: keep."""

    base_fee_msat: int | None = None
    fee_ppm: int | None = None
    min_htlc_msat: int | None = None
    max_htlc_msat: int | None = None
    time_lock_delta: int | None = None
    inbound_base_fee_msat: int | None = None
    inbound_fee_ppm: int | None = None
    inbound_level_ppm: int | None = None
    disabled: bool | None = None
    note: str = ""


class _Skip(Exception):
    """The strategy cannot decide for this channel: leave it alone, say why."""


def _max_htlc_msat(props: Properties, channel: ChannelState) -> int | None:
    result = props.max_htlc_msat
    if props.max_htlc_msat_ratio is not None:
        by_ratio = int(props.max_htlc_msat_ratio * channel.capacity_sat * 1000)
        result = by_ratio if result is None else min(result, by_ratio)
    return result


def _fees(props: Properties) -> _Target:
    return _Target(
        base_fee_msat=props.base_fee_msat,
        fee_ppm=props.fee_ppm,
        inbound_base_fee_msat=props.inbound_base_fee_msat,
        inbound_fee_ppm=props.inbound_fee_ppm,
        inbound_level_ppm=props.inbound_level_ppm,
    )


def _proportional(props: Properties, view: _View) -> _Target:
    low, high = props.min_fee_ppm, props.max_fee_ppm
    if low is None or high is None:
        raise _Skip("proportional needs min_fee_ppm and max_fee_ppm")
    if low > high:
        raise _Skip(f"min_fee_ppm {low} is above max_fee_ppm {high}")
    if props.sum_peer_chans:
        share = view.share
        local, remote = share.local_active_sat, share.remote_active_sat
        if share.channels_active == 0:  # the peer is likely offline: count what we have
            local += share.local_inactive_sat
            remote += share.remote_inactive_sat
        scope, have = "the peer's channels", "have"
    else:
        local, remote = view.channel.local_total_sat, view.channel.remote_total_sat
        scope, have = "the channel", "has"
    if local + remote == 0:
        raise _Skip(f"{scope} {have} no balance: no ratio")
    # min + (1 − ratio)(max − min), exact, rounded toward min
    ppm = low + (remote * (high - low)) // (local + remote)
    ratio = Fraction(local, local + remote)
    return replace(_fees(props), fee_ppm=max(ppm, 0), note=f"ratio {float(ratio):.2f} of {scope}")


def _match_peer(props: Properties, channel: ChannelState) -> _Target:
    peer = channel.peer
    if peer is None:
        raise _Skip("the peer's policy is unknown")

    def pick(own: int | None, theirs: int) -> int:
        return own if own is not None else theirs

    return _Target(
        base_fee_msat=pick(props.base_fee_msat, peer.fee_base_msat),
        fee_ppm=pick(props.fee_ppm, peer.fee_rate_ppm),
        inbound_base_fee_msat=pick(props.inbound_base_fee_msat, peer.inbound_fee_base_msat),
        inbound_fee_ppm=pick(props.inbound_fee_ppm, peer.inbound_fee_rate_ppm),
    )


def _opportunity(
    props: Properties, channel: ChannelState, ours: EdgePolicy, default_step_percent: int
) -> _Target:
    target = replace(_fees(props), fee_ppm=None)
    opp = channel.opportunity
    if opp is None:
        return replace(target, note="no opportunity in the latest snapshot")
    action = opp.recommended_action
    if action is Action.LOWER_FEES and opp.suggested_fee_ppm is not None:
        current = ours.fee_rate_ppm
        percent = props.max_fee_step_percent or default_step_percent
        step = max(1, current * percent // 100)
        ppm = max(opp.suggested_fee_ppm, current - step)
        if props.min_fee_ppm is not None:
            ppm = max(ppm, props.min_fee_ppm)
        if props.max_fee_ppm is not None:
            ppm = min(ppm, props.max_fee_ppm)
        note = (
            f"lower_fees suggests {opp.suggested_fee_ppm} ppm"
            f" (urgency {opp.urgency_score}; step at most {percent} %)"
        )
        return replace(target, fee_ppm=ppm if ppm < current else None, note=note)
    if action is Action.RAISE_MAX_HTLC and opp.suggested_max_htlc_msat is not None:
        ceiling = _max_htlc_msat(props, channel)
        value = opp.suggested_max_htlc_msat
        if ceiling is not None:
            value = min(value, ceiling)
        note = (
            f"raise_max_htlc suggests {opp.suggested_max_htlc_msat} msat"
            f" (urgency {opp.urgency_score})"
        )
        return replace(
            target, max_htlc_msat=value if value > ours.max_htlc_msat else None, note=note
        )
    return replace(target, note=f"{action.value} is not a policy change")


def _strategy_target(
    strategy: Strategy, props: Properties, view: _View, ours: EdgePolicy
) -> _Target:
    channel = view.channel
    if strategy is Strategy.IGNORE:
        return _Target()
    if strategy is Strategy.DISABLE:
        return _Target(disabled=True)
    if strategy is Strategy.IGNORE_FEES:
        target = _Target()
    elif strategy is Strategy.STATIC:
        target = _fees(props)
    elif strategy is Strategy.MATCH_PEER:
        target = _match_peer(props, channel)
    elif strategy is Strategy.PROPORTIONAL:
        target = _proportional(props, view)
    elif strategy is Strategy.OPPORTUNITY:
        target = _opportunity(props, channel, ours, view.max_fee_step_percent)
    else:  # pragma: no cover - use_config is resolved before
        raise AssertionError(strategy)
    # opportunity reads max_htlc_msat(_ratio) as the ceiling of its suggestion only
    max_htlc = (
        target.max_htlc_msat if strategy is Strategy.OPPORTUNITY else _max_htlc_msat(props, channel)
    )
    return replace(
        target,
        min_htlc_msat=props.min_htlc_msat,
        max_htlc_msat=max_htlc,
        time_lock_delta=props.time_lock_delta,
        disabled=False,
    )


def _change(
    target: _Target, props: Properties, strategy: Strategy, channel: ChannelState, ours: EdgePolicy
) -> tuple[PolicyChange, str]:
    """The fields that differ from our policy, after constraints and minimum deltas."""
    min_delta = props.min_fee_ppm_delta
    if min_delta is None:
        min_delta = PROPORTIONAL_MIN_FEE_PPM_DELTA if strategy is Strategy.PROPORTIONAL else 0
    min_inbound_delta = props.min_inbound_fee_ppm_delta
    if min_inbound_delta is None:
        min_inbound_delta = min_delta
    fee_ppm, inbound_fee_ppm = fee_deltas(
        ours,
        fee_ppm=target.fee_ppm,
        inbound_fee_ppm=target.inbound_fee_ppm,
        inbound_base_fee_msat=target.inbound_base_fee_msat,
        inbound_level_ppm=target.inbound_level_ppm,
        min_fee_ppm_delta=min_delta,
        min_inbound_fee_ppm_delta=min_inbound_delta,
    )
    notes = []
    if target.fee_ppm is not None and target.fee_ppm != ours.fee_rate_ppm and fee_ppm is None:
        notes.append(f"fee_ppm {target.fee_ppm} is within min_fee_ppm_delta {min_delta}")
    min_htlc = target.min_htlc_msat
    if min_htlc is not None:
        min_htlc = max(min_htlc, channel.min_htlc_floor_msat)
    max_htlc = target.max_htlc_msat
    if max_htlc is not None and channel.max_htlc_ceiling_msat is not None:
        max_htlc = min(max_htlc, channel.max_htlc_ceiling_msat)
    disabled = target.disabled
    if disabled is not None and (not channel.active or disabled == ours.disabled):
        disabled = None  # lnd sets an inactive channel's status itself

    def differs(new: int | None, old: int) -> int | None:
        return new if new is not None and new != old else None

    change = PolicyChange(
        base_fee_msat=differs(target.base_fee_msat, ours.fee_base_msat),
        fee_ppm=fee_ppm,
        min_htlc_msat=differs(min_htlc, ours.min_htlc_msat),
        max_htlc_msat=differs(max_htlc, ours.max_htlc_msat),
        time_lock_delta=differs(target.time_lock_delta, ours.time_lock_delta),
        inbound_base_fee_msat=differs(target.inbound_base_fee_msat, ours.inbound_fee_base_msat),
        inbound_fee_ppm=inbound_fee_ppm,
        disabled=disabled,
    )
    return change, "; ".join(notes)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class _Match:
    sections: tuple[str, ...]
    props: Properties
    strategy: Strategy | None


def _match(rules: Rules, view: _View) -> _Match:
    sections: list[str] = []
    props = Properties()
    for section in rules.sections:
        if _matches(section, view):
            sections.append(section.name)
            props = section.properties.over(props)
            if section.final:
                return _Match(tuple(sections), props, section.strategy)
    if rules.default is not None:
        sections.append(rules.default.name)
        props = rules.default.properties.over(props)
        return _Match(tuple(sections), props, rules.default.strategy)
    return _Match(tuple(sections), props, None)


def _resolve(rules: Rules, view: _View) -> tuple[_Match, str]:
    """The match, following use_config into the rules it names; and a note."""
    found = _match(rules, view)
    if found.strategy is not Strategy.USE_CONFIG:
        return found, ""
    config_file = found.props.config_file
    if config_file is None:
        raise _Skip("use_config needs config_file")
    inner, note = _resolve(rules.includes[config_file], view)
    sections = (*found.sections, *(f"{name} (from {config_file})" for name in inner.sections))
    props = inner.props
    if props.min_fee_ppm_delta is None:
        props = replace(props, min_fee_ppm_delta=found.props.min_fee_ppm_delta)
    if inner.strategy is None:
        note = f"no section of {config_file} matched"
    return _Match(sections, props, inner.strategy), note


def _label(sections: Sequence[str]) -> str:
    return " > ".join(f"[{name}]" for name in sections) or "no section matched"


def _decide(rules: Rules, view: _View) -> PolicyDecision:
    channel = view.channel
    ours = channel.ours
    opp = channel.opportunity
    base = PolicyDecision(
        chan_id=channel.chan_id,
        peer_pubkey=channel.peer_pubkey,
        sections=(),
        strategy=None,
        before=ours,
        change=PolicyChange(),
        reason="",
        urgency=opp.urgency_score if opp is not None else 0,
        stream_gap_s=channel.stream_gap_s,
    )
    try:
        found, note = _resolve(rules, view)
    except _Skip as skip:
        found, note = _match(rules, view), str(skip)
        return replace(
            base,
            sections=found.sections,
            strategy=found.strategy,
            reason=f"{_label(found.sections)} {found.strategy}: {note}: left alone",
        )
    decision = replace(
        base,
        sections=found.sections,
        strategy=found.strategy,
        min_fee_ppm=found.props.min_fee_ppm,
        max_fee_ppm=found.props.max_fee_ppm,
    )
    if found.strategy is None:
        return replace(decision, reason=f"{_label(found.sections)}: {note or 'left alone'}")
    head = f"{_label(found.sections)} {found.strategy}"
    if found.strategy is Strategy.IGNORE:
        return replace(decision, reason=f"{head}: left alone")
    if ours is None:
        return replace(decision, reason=f"{head}: our policy is unknown: left alone")
    try:
        target = _strategy_target(found.strategy, found.props, view, ours)
    except _Skip as skip:
        return replace(decision, reason=f"{head}: {skip}: left alone")
    change, delta_note = _change(target, found.props, found.strategy, channel, ours)
    detail = "; ".join(n for n in (target.note, change.describe(ours), delta_note) if n)
    return replace(decision, change=change, reason=f"{head}: {detail}")


def evaluate(
    rules: Rules,
    channels: Sequence[ChannelState],
    *,
    block_height: int,
    analysis_window_s: int,
    max_fee_step_percent: int = DEFAULT_MAX_FEE_STEP_PERCENT,
) -> tuple[PolicyDecision, ...]:
    """One decision per channel, in the order given.

    ``block_height`` dates the channels (chan.*_age, pending HTLC expiry); each channel's
    ``activity`` must hold every period of ``rules.activity_periods_s(analysis_window_s)``.
    ``max_fee_step_percent`` bounds ``opportunity``'s steps where a section sets none
    (``[policy] max_fee_step_percent``).
    """
    shares: dict[str, _PeerShare] = {}
    for channel in channels:
        shares[channel.peer_pubkey] = shares.get(channel.peer_pubkey, _PeerShare()).add(channel)
    return tuple(
        _decide(
            rules,
            _View(
                channel=channel,
                share=shares[channel.peer_pubkey],
                block_height=block_height,
                analysis_window_s=analysis_window_s,
                max_fee_step_percent=max_fee_step_percent,
            ),
        )
        for channel in channels
    )
