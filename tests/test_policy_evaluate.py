"""Matching and strategies, written from charge-lnd's documented semantics (lnflow.policy)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import Action, ClassStats, Confidence, Opportunity
from lnflow.policy import (
    ChannelActivity,
    ChannelState,
    EdgePolicy,
    PeerNode,
    PendingHtlc,
    PolicyChange,
    PolicyDecision,
    Strategy,
    evaluate,
    load_rules,
    parse_rules,
)

ROOT = Path(__file__).resolve().parent.parent
HEIGHT = 800_000
FUNDING = 700_000  # the channel is 100_000 blocks old
CHAN = (FUNDING << 40) | (5 << 16) | 1
PEER_KEY = "02" + "ab" * 32
OTHER_KEY = "03" + "cd" * 32
DAY_S = 86_400
WEEK_S = 7 * DAY_S

OURS = EdgePolicy(
    fee_base_msat=1_000,
    fee_rate_ppm=500,
    time_lock_delta=40,
    min_htlc_msat=1_000,
    max_htlc_msat=500_000_000,
)
PEER = EdgePolicy(
    fee_base_msat=0,
    fee_rate_ppm=100,
    time_lock_delta=144,
    min_htlc_msat=1,
    max_htlc_msat=990_000_000,
    inbound_fee_base_msat=-200,
    inbound_fee_rate_ppm=-20,
)
ACTIVITY = {
    DAY_S: ChannelActivity(
        htlcs_in=3, htlcs_out=1, sats_in=30_000, sats_out=90_000, fees_out_msat=4_500
    ),
    WEEK_S: ChannelActivity(
        htlcs_in=9, htlcs_out=6, sats_in=1, sats_out=3, fees_out_msat=12_000_000
    ),
}


def opp(**kw: Any) -> Opportunity:
    base = Opportunity(
        rank=1,
        channel_id=CHAN,
        peer_pubkey=PEER_KEY,
        peer_alias="peer",
        failures=12,
        clusters=5,
        successes=8,
        failure_rate=0.6,
        missed_msat=2_500_000,
        missed_raw_msat=4_000_000,
        potential_monthly_msat=75_000_000,
        urgency_score=45,
        confidence=Confidence.MEDIUM,
        recommended_action=Action.LOWER_FEES,
        reason="fee failures",
        estimated=False,
        by_class={
            FailureClass.FEE: ClassStats(failures=9, missed_msat=3_000_000),
            FailureClass.LIQUIDITY: ClassStats(failures=3, missed_msat=1_000_000),
        },
        capacity_sat=1_000_000,
        local_balance_sat=600_000,
        outbound_fee_ppm=500,
        suggested_fee_ppm=300,
    )
    return replace(base, **kw)


def chan(**kw: Any) -> ChannelState:
    base = ChannelState(
        chan_id=CHAN,
        peer_pubkey=PEER_KEY,
        capacity_sat=1_000_000,
        local_balance_sat=600_000,
        remote_balance_sat=400_000,
        initiator=True,
        private=False,
        active=True,
        ours=OURS,
        peer=PEER,
        activity=ACTIVITY,
        peer_node=PeerNode(num_channels=20, total_capacity_sat=50_000_000),
        opportunity=opp(),
    )
    return replace(base, **kw)


def decide(text: str, channel: ChannelState | None = None, **kw: Any) -> PolicyDecision:
    channels = kw.pop("channels", None) or [channel or chan()]
    rules = parse_rules(text, source="p.conf", base_dir=kw.pop("base_dir", "."))
    return evaluate(rules, channels, block_height=HEIGHT, analysis_window_s=DAY_S, **kw)[0]


# --------------------------------------------------------------------------- criteria

# (id, criteria lines, channel changes, matches)
CRITERIA = [
    ("chan.id-in", "chan.id = 1x1x1, 700000x5x1", {}, True),
    ("chan.id-decimal", f"chan.id = {CHAN}", {}, True),
    ("chan.id-out", "chan.id = 1x1x1", {}, False),
    ("chan.initiator-true", "chan.initiator = true", {}, True),
    ("chan.initiator-false", "chan.initiator = false", {}, False),
    ("chan.private-false", "chan.private = false", {}, True),
    ("chan.private-true", "chan.private = true", {}, False),
    ("chan.private-true-private", "chan.private = true", {"private": True}, True),
    ("chan.min_capacity-equal", "chan.min_capacity = 1_000_000", {}, True),
    ("chan.min_capacity-above", "chan.min_capacity = 1_000_001", {}, False),
    ("chan.max_capacity-equal", "chan.max_capacity = 1_000_000", {}, True),
    ("chan.max_capacity-below", "chan.max_capacity = 999_999", {}, False),
    ("chan.min_age-equal", "chan.min_age = 100_000", {}, True),
    ("chan.min_age-above", "chan.min_age = 100_001", {}, False),
    ("chan.max_age-equal", "chan.max_age = 100_000", {}, True),
    ("chan.max_age-below", "chan.max_age = 99_999", {}, False),
    ("chan.max_age-funding-height", "chan.max_age = 10", {"funding_height": HEIGHT - 10}, True),
    ("chan.min_ratio-equal", "chan.min_ratio = 0.6", {}, True),
    ("chan.min_ratio-above", "chan.min_ratio = 0.61", {}, False),
    ("chan.max_ratio-equal", "chan.max_ratio = 0.6", {}, True),
    ("chan.max_ratio-below", "chan.max_ratio = 0.59", {}, False),
    # initiator: the commit fee counts on our side; pending HTLCs on their sender's side
    (
        "chan.min_ratio-commit-fee",
        "chan.min_ratio = 0.6",
        {"commit_fee_sat": 25_000, "local_balance_sat": 575_000},
        True,
    ),
    (
        "chan.min_ratio-pending-out",
        "chan.min_ratio = 0.6",
        {"local_balance_sat": 500_000, "pending_htlcs": (PendingHtlc(False, 100_000, HEIGHT + 9),)},
        True,
    ),
    (
        "chan.max_ratio-pending-in",
        "chan.max_ratio = 0.5",
        {"remote_balance_sat": 300_000, "pending_htlcs": (PendingHtlc(True, 300_000, HEIGHT + 9),)},
        True,
    ),
    (
        "chan.max_ratio-commit-fee-peer-opened",
        "chan.max_ratio = 0.45",
        {"initiator": False, "local_balance_sat": 400_000, "commit_fee_sat": 200_000},
        True,
    ),
    (
        "chan.min_ratio-empty-channel",
        "chan.min_ratio = 0",
        {"local_balance_sat": 0, "remote_balance_sat": 0},
        False,
    ),
    ("chan.min_local_balance-equal", "chan.min_local_balance = 600_000", {}, True),
    ("chan.min_local_balance-above", "chan.min_local_balance = 600_001", {}, False),
    ("chan.max_local_balance-equal", "chan.max_local_balance = 600_000", {}, True),
    ("chan.max_local_balance-below", "chan.max_local_balance = 30_000", {}, False),
    ("chan.min_remote_balance-equal", "chan.min_remote_balance = 400_000", {}, True),
    ("chan.min_remote_balance-above", "chan.min_remote_balance = 400_001", {}, False),
    ("chan.max_remote_balance-equal", "chan.max_remote_balance = 400_000", {}, True),
    ("chan.max_remote_balance-below", "chan.max_remote_balance = 399_999", {}, False),
    ("chan.min_base_fee_msat-peer", "chan.min_base_fee_msat = 0", {}, True),
    ("chan.min_base_fee_msat-above", "chan.min_base_fee_msat = 1", {}, False),
    ("chan.max_base_fee_msat-zero-base", "chan.max_base_fee_msat = 0", {}, True),
    (
        "chan.max_base_fee_msat-ours-ignored",
        "chan.max_base_fee_msat = 0",
        {"ours": replace(OURS, fee_base_msat=0)},
        True,
    ),
    (
        "chan.max_base_fee_msat-below",
        "chan.max_base_fee_msat = 0",
        {"peer": replace(PEER, fee_base_msat=1)},
        False,
    ),
    ("chan.min_fee_ppm-peer", "chan.min_fee_ppm = 100", {}, True),
    ("chan.min_fee_ppm-not-ours", "chan.min_fee_ppm = 500", {}, False),
    ("chan.max_fee_ppm-equal", "chan.max_fee_ppm = 100", {}, True),
    ("chan.max_fee_ppm-below", "chan.max_fee_ppm = 99", {}, False),
    ("chan.min_fee_ppm-peer-unknown", "chan.min_fee_ppm = 0", {"peer": None}, False),
    ("chan.disabled-false", "chan.disabled = false", {}, True),
    ("chan.disabled-true", "chan.disabled = true", {}, False),
    (
        "chan.disabled-true-peer-disabled",
        "chan.disabled = true",
        {"peer": replace(PEER, disabled=True)},
        True,
    ),
    ("chan.disabled-false-peer-unknown", "chan.disabled = false", {"peer": None}, False),
    ("chan.min_htlcs_in-equal", "chan.activity_period = 1d\nchan.min_htlcs_in = 3", {}, True),
    ("chan.min_htlcs_in-above", "chan.activity_period = 1d\nchan.min_htlcs_in = 4", {}, False),
    ("chan.max_htlcs_in-equal", "chan.activity_period = 1d\nchan.max_htlcs_in = 3", {}, True),
    ("chan.max_htlcs_in-below", "chan.activity_period = 1d\nchan.max_htlcs_in = 2", {}, False),
    ("chan.min_htlcs_out-equal", "chan.activity_period = 1d\nchan.min_htlcs_out = 1", {}, True),
    ("chan.min_htlcs_out-above", "chan.activity_period = 1d\nchan.min_htlcs_out = 2", {}, False),
    ("chan.max_htlcs_out-week", "chan.activity_period = 7d\nchan.max_htlcs_out = 6", {}, True),
    ("chan.max_htlcs_out-below", "chan.activity_period = 1d\nchan.max_htlcs_out = 0", {}, False),
    ("chan.min_sats_in-equal", "chan.activity_period = 24h\nchan.min_sats_in = 30_000", {}, True),
    ("chan.min_sats_in-above", "chan.activity_period = 24h\nchan.min_sats_in = 30_001", {}, False),
    ("chan.max_sats_in-equal", "chan.activity_period = 86400\nchan.max_sats_in = 30_000", {}, True),
    (
        "chan.max_sats_in-below",
        "chan.activity_period = 86400\nchan.max_sats_in = 29_999",
        {},
        False,
    ),
    (
        "chan.min_sats_out-equal",
        "chan.activity_period = 1440m\nchan.min_sats_out = 90_000",
        {},
        True,
    ),
    (
        "chan.min_sats_out-above",
        "chan.activity_period = 1440m\nchan.min_sats_out = 90_001",
        {},
        False,
    ),
    ("chan.max_sats_out-equal", "chan.activity_period = 1d\nchan.max_sats_out = 90_000", {}, True),
    ("chan.max_sats_out-below", "chan.activity_period = 1d\nchan.max_sats_out = 89_999", {}, False),
    (
        "chan.min_htlcs_ratio-equal",
        "chan.activity_period = 1d\nchan.min_htlcs_ratio = 0.75",
        {},
        True,
    ),
    (
        "chan.min_htlcs_ratio-above",
        "chan.activity_period = 1d\nchan.min_htlcs_ratio = 0.76",
        {},
        False,
    ),
    (
        "chan.max_htlcs_ratio-equal",
        "chan.activity_period = 1d\nchan.max_htlcs_ratio = 0.75",
        {},
        True,
    ),
    (
        "chan.max_htlcs_ratio-below",
        "chan.activity_period = 1d\nchan.max_htlcs_ratio = 0.7",
        {},
        False,
    ),
    (
        "chan.min_sats_ratio-equal",
        "chan.activity_period = 1d\nchan.min_sats_ratio = 0.25",
        {},
        True,
    ),
    (
        "chan.min_sats_ratio-above",
        "chan.activity_period = 1d\nchan.min_sats_ratio = 0.3",
        {},
        False,
    ),
    (
        "chan.max_sats_ratio-equal",
        "chan.activity_period = 1d\nchan.max_sats_ratio = 0.25",
        {},
        True,
    ),
    (
        "chan.max_sats_ratio-below",
        "chan.activity_period = 1d\nchan.max_sats_ratio = 0.2",
        {},
        False,
    ),
    (
        "chan.max_htlcs_ratio-no-forwards",
        "chan.activity_period = 1d\nchan.max_htlcs_ratio = 1",
        {"activity": {DAY_S: ChannelActivity()}},
        False,
    ),
    (
        "chan.max_sats_ratio-no-forwards",
        "chan.activity_period = 1d\nchan.max_sats_ratio = 1",
        {"activity": {DAY_S: ChannelActivity()}},
        False,
    ),
    # a channel younger than the period is not judged on it, unless told to ignore its age
    (
        "chan.activity_period-young",
        "chan.activity_period = 1d\nchan.max_htlcs_out = 5",
        {"funding_height": HEIGHT - 143},
        False,
    ),
    (
        "chan.activity_period-old-enough",
        "chan.activity_period = 1d\nchan.max_htlcs_out = 5",
        {"funding_height": HEIGHT - 144},
        True,
    ),
    (
        "chan.activity_period_ignore_channel_age-true",
        "chan.activity_period = 1d\nchan.activity_period_ignore_channel_age = true\n"
        "chan.max_htlcs_out = 5",
        {"funding_height": HEIGHT - 1},
        True,
    ),
    (
        "chan.activity_period_ignore_channel_age-false",
        "chan.activity_period = 1d\nchan.activity_period_ignore_channel_age = false\n"
        "chan.max_htlcs_out = 5",
        {"funding_height": HEIGHT - 1},
        False,
    ),
    ("chan.min_count_pending_htlcs-zero", "chan.min_count_pending_htlcs = 0", {}, True),
    ("chan.min_count_pending_htlcs-one", "chan.min_count_pending_htlcs = 1", {}, False),
    (
        "chan.max_count_pending_htlcs-two",
        "chan.max_count_pending_htlcs = 1",
        {"pending_htlcs": (PendingHtlc(True, 1, HEIGHT + 5), PendingHtlc(False, 1, HEIGHT + 50))},
        False,
    ),
    (
        "chan.min_next_pending_htlc_expiry-equal",
        "chan.min_next_pending_htlc_expiry = 5",
        {"pending_htlcs": (PendingHtlc(True, 1, HEIGHT + 5), PendingHtlc(False, 1, HEIGHT + 50))},
        True,
    ),
    (
        "chan.min_next_pending_htlc_expiry-above",
        "chan.min_next_pending_htlc_expiry = 6",
        {"pending_htlcs": (PendingHtlc(True, 1, HEIGHT + 5),)},
        False,
    ),
    (
        "chan.max_next_pending_htlc_expiry-equal",
        "chan.max_next_pending_htlc_expiry = 5",
        {"pending_htlcs": (PendingHtlc(True, 1, HEIGHT + 50), PendingHtlc(False, 1, HEIGHT + 5))},
        True,
    ),
    (
        "chan.max_next_pending_htlc_expiry-none-pending",
        "chan.max_next_pending_htlc_expiry = 1000",
        {},
        False,
    ),
    ("node.id-in", f"node.id = {OTHER_KEY},\n  {PEER_KEY}", {}, True),
    ("node.id-out", f"node.id = {OTHER_KEY}", {}, False),
    ("node.min_channels-equal", "node.min_channels = 20", {}, True),
    ("node.min_channels-above", "node.min_channels = 21", {}, False),
    ("node.max_channels-equal", "node.max_channels = 20", {}, True),
    ("node.max_channels-below", "node.max_channels = 8", {}, False),
    ("node.min_capacity-equal", "node.min_capacity = 50_000_000", {}, True),
    ("node.min_capacity-above", "node.min_capacity = 5_000_0001", {}, False),
    ("node.max_capacity-equal", "node.max_capacity = 50_000_000", {}, True),
    ("node.max_capacity-below", "node.max_capacity = 1_000_000", {}, False),
    ("node.min_channels-node-unknown", "node.min_channels = 0", {"peer_node": None}, False),
    ("node.min_shared_channels_active", "node.min_shared_channels_active = 1", {}, True),
    (
        "node.min_shared_channels_active-inactive",
        "node.min_shared_channels_active = 1",
        {"active": False},
        False,
    ),
    ("node.max_shared_channels_active", "node.max_shared_channels_active = 0", {}, False),
    (
        "node.max_shared_channels_active-offline",
        "node.max_shared_channels_active = 0",
        {"active": False},
        True,
    ),
    (
        "node.min_shared_channels_inactive",
        "node.min_shared_channels_inactive = 1",
        {"active": False},
        True,
    ),
    (
        "node.min_shared_channels_inactive-active",
        "node.min_shared_channels_inactive = 1",
        {},
        False,
    ),
    ("node.max_shared_channels_inactive", "node.max_shared_channels_inactive = 0", {}, True),
    (
        "node.max_shared_channels_inactive-above",
        "node.max_shared_channels_inactive = 0",
        {"active": False},
        False,
    ),
    ("node.min_shared_capacity_active", "node.min_shared_capacity_active = 1_000_000", {}, True),
    (
        "node.min_shared_capacity_active-above",
        "node.min_shared_capacity_active = 1_000_001",
        {},
        False,
    ),
    ("node.max_shared_capacity_active", "node.max_shared_capacity_active = 1_000_000", {}, True),
    (
        "node.max_shared_capacity_active-below",
        "node.max_shared_capacity_active = 10_000",
        {},
        False,
    ),
    (
        "node.min_shared_capacity_inactive",
        "node.min_shared_capacity_inactive = 1",
        {"active": False},
        True,
    ),
    ("node.min_shared_capacity_inactive-none", "node.min_shared_capacity_inactive = 1", {}, False),
    ("node.max_shared_capacity_inactive", "node.max_shared_capacity_inactive = 0", {}, True),
    (
        "node.max_shared_capacity_inactive-above",
        "node.max_shared_capacity_inactive = 999_999",
        {"active": False},
        False,
    ),
    ("node.min_shared_ratio", "node.min_shared_ratio = 0.6", {}, True),
    ("node.min_shared_ratio-above", "node.min_shared_ratio = 0.9", {}, False),
    ("node.max_shared_ratio", "node.max_shared_ratio = 0.6", {}, True),
    ("node.max_shared_ratio-below", "node.max_shared_ratio = 0.1", {}, False),
    (
        "node.min_shared_ratio-empty",
        "node.min_shared_ratio = 0",
        {"local_balance_sat": 0, "remote_balance_sat": 0},
        False,
    ),
    ("node.min_shared_ratio_active", "node.min_shared_ratio_active = 0.6", {}, True),
    ("node.max_shared_ratio_active-below", "node.max_shared_ratio_active = 0.01", {}, False),
    (
        "node.min_shared_ratio_active-none-active",
        "node.min_shared_ratio_active = 0",
        {"active": False},
        False,
    ),
    (
        "node.min_shared_ratio_inactive",
        "node.min_shared_ratio_inactive = 0.6",
        {"active": False},
        True,
    ),
    (
        "node.max_shared_ratio_inactive-above",
        "node.max_shared_ratio_inactive = 0.5",
        {"active": False},
        False,
    ),
    (
        "node.max_shared_ratio_inactive-none-inactive",
        "node.max_shared_ratio_inactive = 1",
        {},
        False,
    ),
    ("lnflow.recommendation-in", "lnflow.recommendation = raise_max_htlc, lower_fees", {}, True),
    ("lnflow.recommendation-out", "lnflow.recommendation = rebalance_outbound", {}, False),
    (
        "lnflow.recommendation-no-snapshot",
        "lnflow.recommendation = lower_fees",
        {"opportunity": None},
        False,
    ),
    ("lnflow.min_urgency-equal", "lnflow.min_urgency = 45", {}, True),
    ("lnflow.min_urgency-above", "lnflow.min_urgency = 46", {}, False),
    ("lnflow.min_urgency-no-snapshot", "lnflow.min_urgency = 0", {"opportunity": None}, False),
    ("lnflow.min_missed_sats-equal", "lnflow.min_missed_sats = 2_500", {}, True),
    ("lnflow.min_missed_sats-above", "lnflow.min_missed_sats = 2_501", {}, False),
    (
        "lnflow.min_missed_sats-sub-sat",
        "lnflow.min_missed_sats = 2_500",
        {"opportunity": opp(missed_msat=2_499_999)},
        False,
    ),
    ("lnflow.min_failures-equal", "lnflow.min_failures = 12", {}, True),
    ("lnflow.min_failures-above", "lnflow.min_failures = 13", {}, False),
    ("lnflow.dominant_class-fee", "lnflow.dominant_class = fee", {}, True),
    ("lnflow.dominant_class-other", "lnflow.dominant_class = liquidity, max_htlc", {}, False),
    (
        "lnflow.dominant_class-no-snapshot",
        "lnflow.dominant_class = fee",
        {"opportunity": None},
        False,
    ),
    ("lnflow.min_fees_earned_sats-window", "lnflow.min_fees_earned_sats = 4", {}, True),
    ("lnflow.min_fees_earned_sats-msat", "lnflow.min_fees_earned_sats = 5", {}, False),
    ("lnflow.max_fees_earned_sats-equal", "lnflow.max_fees_earned_sats = 4", {}, False),
    ("lnflow.max_fees_earned_sats-above", "lnflow.max_fees_earned_sats = 5", {}, True),
    (
        "lnflow.min_fees_earned_sats-week",
        "lnflow.min_fees_earned_sats = 12_000\nlnflow.window_hours = 168",
        {},
        True,
    ),
    (
        "lnflow.max_fees_earned_sats-week",
        "lnflow.max_fees_earned_sats = 11_999\nlnflow.window_hours = 168",
        {},
        False,
    ),
    ("lnflow.min_forwards-equal", "lnflow.min_forwards = 1", {}, True),
    ("lnflow.min_forwards-above", "lnflow.min_forwards = 2", {}, False),
    ("lnflow.max_forwards-week", "lnflow.max_forwards = 6\nlnflow.window_hours = 168", {}, True),
    ("lnflow.max_forwards-below", "lnflow.max_forwards = 0", {}, False),
    (
        "lnflow.min_forwards-no-snapshot-needed",
        "lnflow.min_forwards = 1",
        {"opportunity": None},
        True,
    ),
    ("all-criteria-must-hold", "chan.min_capacity = 1\nchan.private = true", {}, False),
    (
        "all-criteria-hold",
        "chan.min_capacity = 1\nnode.min_channels = 1\nlnflow.min_urgency = 1",
        {},
        True,
    ),
    ("no-criteria", "", {}, True),
]


@pytest.mark.parametrize(
    ("criteria", "changes", "matches"), [c[1:] for c in CRITERIA], ids=[c[0] for c in CRITERIA]
)
def test_criterion(criteria: str, changes: dict[str, Any], matches: bool) -> None:
    decision = decide(f"[s]\n{criteria}\nstrategy = static\nfee_ppm = 1\n", chan(**changes))
    assert decision.sections == (("s",) if matches else ())
    assert decision.strategy is (Strategy.STATIC if matches else None)


def test_shared_figures_sum_every_channel_with_the_peer() -> None:
    mine = chan(local_balance_sat=100_000, remote_balance_sat=900_000)
    other = chan(chan_id=CHAN + 1, local_balance_sat=900_000, remote_balance_sat=100_000)
    offline = chan(chan_id=CHAN + 2, active=False, local_balance_sat=50, remote_balance_sat=50)
    stranger = chan(chan_id=CHAN + 3, peer_pubkey=OTHER_KEY, local_balance_sat=7)
    text = (
        "[s]\nnode.min_shared_channels_active = 2\nnode.max_shared_channels_active = 2\n"
        "node.min_shared_channels_inactive = 1\nnode.min_shared_capacity_active = 2_000_000\n"
        "node.max_shared_capacity_inactive = 100\nnode.min_shared_ratio_active = 0.5\n"
        "node.max_shared_ratio_active = 0.5\nstrategy = ignore\n"
    )
    rules = parse_rules(text)
    decisions = evaluate(
        rules, [mine, other, offline, stranger], block_height=HEIGHT, analysis_window_s=DAY_S
    )
    assert [d.sections for d in decisions] == [("s",), ("s",), ("s",), ()]


def test_missing_activity_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match=r"fetch every period of Rules\.activity_periods_s"):
        decide("[s]\nchan.activity_period = 2d\nchan.max_htlcs_out = 1\nstrategy = ignore\n")


# --------------------------------------------------------------------------- strategies

# (id, rules text, channel changes, expected change)
STRATEGIES = [
    (
        "ignore",
        "[default]\nstrategy = ignore\nfee_ppm = 1\nmin_htlc_msat = 5\n",
        {},
        PolicyChange(),
    ),
    (
        "ignore_fees-keeps-fees",
        "[default]\nstrategy = ignore_fees\nfee_ppm = 1\nbase_fee_msat = 0\ninbound_fee_ppm = -5\n"
        "min_htlc_msat = 2_000\nmax_htlc_msat = 100_000_000\ntime_lock_delta = 80\n",
        {},
        PolicyChange(min_htlc_msat=2_000, max_htlc_msat=100_000_000, time_lock_delta=80),
    ),
    (
        "static",
        "[default]\nstrategy = static\nfee_ppm = 200\nbase_fee_msat = 0\n",
        {},
        PolicyChange(base_fee_msat=0, fee_ppm=200),
    ),
    (
        "static-same-values",
        "[default]\nstrategy = static\nfee_ppm = 500\nbase_fee_msat = 1000\n",
        {},
        PolicyChange(),
    ),
    (
        "static-only-what-is-set",
        "[default]\nstrategy = static\nfee_ppm = 200\n",
        {},
        PolicyChange(fee_ppm=200),
    ),
    ("static-nothing-set", "[default]\nstrategy = static\n", {}, PolicyChange()),
    (
        "static-inbound",
        "[default]\nstrategy = static\nfee_ppm = 2000\ninbound_base_fee_msat = -500\n"
        "inbound_fee_ppm = -1000\n",
        {},
        PolicyChange(fee_ppm=2000, inbound_base_fee_msat=-500, inbound_fee_ppm=-1000),
    ),
    (
        "static-inbound_level_ppm",
        "[default]\nstrategy = static\nfee_ppm = 800\ninbound_level_ppm = 300\n",
        {},
        PolicyChange(fee_ppm=800, inbound_fee_ppm=-500),
    ),
    (
        "static-inbound_level_ppm-above-fee",
        "[default]\nstrategy = static\nfee_ppm = 200\ninbound_level_ppm = 300\n",
        {"ours": replace(OURS, inbound_fee_rate_ppm=-50)},
        PolicyChange(fee_ppm=200, inbound_fee_ppm=0),
    ),
    (
        "static-inbound_level_ppm-overrides-inbound_fee_ppm",
        "[default]\nstrategy = static\nfee_ppm = 800\ninbound_fee_ppm = -1\n"
        "inbound_level_ppm = 700\n",
        {},
        PolicyChange(fee_ppm=800, inbound_fee_ppm=-100),
    ),
    (
        "match_peer",
        "[default]\nstrategy = match_peer\n",
        {},
        PolicyChange(base_fee_msat=0, fee_ppm=100, inbound_base_fee_msat=-200, inbound_fee_ppm=-20),
    ),
    (
        "match_peer-overrides",
        "[default]\nstrategy = match_peer\nfee_ppm = 50\ninbound_fee_ppm = 0\n",
        {},
        PolicyChange(base_fee_msat=0, fee_ppm=50, inbound_base_fee_msat=-200),
    ),
    (
        "match_peer-peer-unknown",
        "[default]\nstrategy = match_peer\n",
        {"peer": None},
        PolicyChange(),
    ),
    # ratio 0.6: 100 + 0.4 × (600 − 100) = 300
    (
        "proportional",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 100\nmax_fee_ppm = 600\n"
        "base_fee_msat = 0\n",
        {},
        PolicyChange(base_fee_msat=0, fee_ppm=300),
    ),
    (
        "proportional-full",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 100\nmax_fee_ppm = 600\n",
        {"remote_balance_sat": 0},
        PolicyChange(fee_ppm=100),
    ),
    (
        "proportional-empty",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 100\nmax_fee_ppm = 600\n",
        {"local_balance_sat": 0},
        PolicyChange(fee_ppm=600),
    ),
    # 100 + (1 − 1/3) × 100 = 166.67: rounded down
    (
        "proportional-rounds-down",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 100\nmax_fee_ppm = 200\n",
        {"local_balance_sat": 100, "remote_balance_sat": 200},
        PolicyChange(fee_ppm=166),
    ),
    # min_fee_ppm_delta defaults to 10 for proportional: 300 vs 291 stays
    (
        "proportional-default-delta",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 100\nmax_fee_ppm = 600\n",
        {"ours": replace(OURS, fee_rate_ppm=291)},
        PolicyChange(),
    ),
    (
        "proportional-delta-reached",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 100\nmax_fee_ppm = 600\n",
        {"ours": replace(OURS, fee_rate_ppm=290)},
        PolicyChange(fee_ppm=300),
    ),
    (
        "proportional-delta-set",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 100\nmax_fee_ppm = 600\n"
        "min_fee_ppm_delta = 0\n",
        {"ours": replace(OURS, fee_rate_ppm=299)},
        PolicyChange(fee_ppm=300),
    ),
    (
        "proportional-missing-max",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 100\n",
        {},
        PolicyChange(),
    ),
    (
        "proportional-no-balance",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 1\nmax_fee_ppm = 9\n",
        {"local_balance_sat": 0, "remote_balance_sat": 0},
        PolicyChange(),
    ),
    (
        "proportional-inbound_level_ppm",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 100\nmax_fee_ppm = 600\n"
        "inbound_level_ppm = 200\n",
        {},
        PolicyChange(fee_ppm=300, inbound_fee_ppm=-100),
    ),
    (
        "disable",
        "[default]\nstrategy = disable\nfee_ppm = 1\nmin_htlc_msat = 5\n",
        {},
        PolicyChange(disabled=True),
    ),
    (
        "disable-already",
        "[default]\nstrategy = disable\n",
        {"ours": replace(OURS, disabled=True)},
        PolicyChange(),
    ),
    ("disable-inactive", "[default]\nstrategy = disable\n", {"active": False}, PolicyChange()),
    (
        "reenable",
        "[default]\nstrategy = static\n",
        {"ours": replace(OURS, disabled=True)},
        PolicyChange(disabled=False),
    ),
    (
        "reenable-ignore_fees",
        "[default]\nstrategy = ignore_fees\n",
        {"ours": replace(OURS, disabled=True)},
        PolicyChange(disabled=False),
    ),
    (
        "no-reenable-by-ignore",
        "[default]\nstrategy = ignore\n",
        {"ours": replace(OURS, disabled=True)},
        PolicyChange(),
    ),
    (
        "no-reenable-inactive",
        "[default]\nstrategy = static\n",
        {"active": False, "ours": replace(OURS, disabled=True)},
        PolicyChange(),
    ),
    (
        "our-policy-unknown",
        "[default]\nstrategy = static\nfee_ppm = 1\n",
        {"ours": None},
        PolicyChange(),
    ),
    # opportunity: current 500 ppm, lower_fees suggests 300, steps of at most 25 % (125 ppm)
    (
        "opportunity-lower-step",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\n",
        {},
        PolicyChange(fee_ppm=375),
    ),
    (
        "opportunity-lower-reaches",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\n",
        {"opportunity": opp(suggested_fee_ppm=450)},
        PolicyChange(fee_ppm=450),
    ),
    (
        "opportunity-step-percent",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\nmax_fee_step_percent = 50\n",
        {},
        PolicyChange(fee_ppm=300),
    ),
    (
        "opportunity-min_fee_ppm",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\nmin_fee_ppm = 400\n",
        {},
        PolicyChange(fee_ppm=400),
    ),
    (
        "opportunity-at-floor",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\nmin_fee_ppm = 500\n",
        {},
        PolicyChange(),
    ),
    (
        "opportunity-max_fee_ppm",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\nmax_fee_ppm = 350\n",
        {},
        PolicyChange(fee_ppm=350),
    ),
    (
        "opportunity-tiny-fee-steps-1",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\n",
        {"ours": replace(OURS, fee_rate_ppm=3), "opportunity": opp(suggested_fee_ppm=1)},
        PolicyChange(fee_ppm=2),
    ),
    (
        "opportunity-fee_ppm-property-unused",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\nfee_ppm = 900\nbase_fee_msat = 0\n",
        {},
        PolicyChange(base_fee_msat=0, fee_ppm=375),
    ),
    (
        "opportunity-raise_max_htlc",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\n",
        {
            "opportunity": opp(
                recommended_action=Action.RAISE_MAX_HTLC,
                suggested_fee_ppm=None,
                suggested_max_htlc_msat=800_000_000,
            )
        },
        PolicyChange(max_htlc_msat=800_000_000),
    ),
    (
        "opportunity-raise_max_htlc-capped-by-ratio",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\nmax_htlc_msat_ratio = 0.7\n",
        {
            "opportunity": opp(
                recommended_action=Action.RAISE_MAX_HTLC,
                suggested_fee_ppm=None,
                suggested_max_htlc_msat=800_000_000,
            )
        },
        PolicyChange(max_htlc_msat=700_000_000),
    ),
    (
        "opportunity-max_htlc-ratio-is-only-a-cap",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\nmax_htlc_msat_ratio = 0.9\n",
        {"opportunity": opp(suggested_fee_ppm=500)},
        PolicyChange(),
    ),
    (
        "opportunity-raise_max_htlc-cap-below-current",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\nmax_htlc_msat = 300_000_000\n",
        {
            "opportunity": opp(
                recommended_action=Action.RAISE_MAX_HTLC,
                suggested_fee_ppm=None,
                suggested_max_htlc_msat=800_000_000,
            )
        },
        PolicyChange(),
    ),
    (
        "opportunity-raise_max_htlc-never-lowers",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\n",
        {
            "opportunity": opp(
                recommended_action=Action.RAISE_MAX_HTLC,
                suggested_fee_ppm=None,
                suggested_max_htlc_msat=400_000_000,
            )
        },
        PolicyChange(),
    ),
    (
        "opportunity-other-action",
        "[o]\nlnflow.min_urgency = 1\nstrategy = opportunity\n",
        {"opportunity": opp(recommended_action=Action.REBALANCE_OUTBOUND)},
        PolicyChange(),
    ),
    (
        "opportunity-no-snapshot",
        "[default]\nstrategy = opportunity\ntime_lock_delta = 80\n",
        {"opportunity": None},
        PolicyChange(time_lock_delta=80),
    ),
]


@pytest.mark.parametrize(
    ("text", "changes", "expected"), [s[1:] for s in STRATEGIES], ids=[s[0] for s in STRATEGIES]
)
def test_strategy(text: str, changes: dict[str, Any], expected: PolicyChange) -> None:
    decision = decide(text, chan(**changes))
    assert decision.change == expected, decision.reason
    assert "\n" not in decision.reason
    assert decision.changed is not expected.empty


REASONS = [
    (
        "proportional-missing-max",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 100\n",
        {},
        "[default] proportional: proportional needs min_fee_ppm and max_fee_ppm: left alone",
    ),
    (
        "proportional-no-balance",
        "[default]\nstrategy = proportional\nmin_fee_ppm = 1\nmax_fee_ppm = 9\n",
        {"local_balance_sat": 0, "remote_balance_sat": 0},
        "[default] proportional: the channel has no balance: no ratio: left alone",
    ),
    (
        "match_peer-peer-unknown",
        "[default]\nstrategy = match_peer\n",
        {"peer": None},
        "[default] match_peer: the peer's policy is unknown: left alone",
    ),
    (
        "our-policy-unknown",
        "[default]\nstrategy = static\n",
        {"ours": None},
        "[default] static: our policy is unknown: left alone",
    ),
    ("ignore", "[default]\nstrategy = ignore\n", {}, "[default] ignore: left alone"),
    (
        "nothing-matched",
        "[s]\nchan.private = true\nstrategy = ignore\n",
        {},
        "no section matched: left alone",
    ),
    (
        "static",
        "[a]\nbase_fee_msat = 0\n[default]\nstrategy = static\nfee_ppm = 200\n",
        {},
        "[a] > [default] static: base_fee_msat 1000 → 0, fee_ppm 500 → 200",
    ),
    (
        "delta",
        "[default]\nstrategy = static\nfee_ppm = 495\nmin_fee_ppm_delta = 10\n",
        {},
        "[default] static: no change; fee_ppm 495 is within min_fee_ppm_delta 10",
    ),
    (
        "opportunity",
        "[default]\nstrategy = opportunity\n",
        {},
        "[default] opportunity: lower_fees suggests 300 ppm (urgency 45; "
        "step at most 25 %); fee_ppm 500 → 375",
    ),
    (
        "opportunity-other",
        "[default]\nstrategy = opportunity\n",
        {"opportunity": opp(recommended_action=Action.INVESTIGATE)},
        "[default] opportunity: investigate is not a policy change; no change",
    ),
    ("disable", "[default]\nstrategy = disable\n", {}, "[default] disable: disable"),
]


@pytest.mark.parametrize(
    ("text", "changes", "reason"), [r[1:] for r in REASONS], ids=[r[0] for r in REASONS]
)
def test_reason_is_one_line_with_the_numbers(
    text: str, changes: dict[str, Any], reason: str
) -> None:
    assert decide(text, chan(**changes)).reason.startswith(reason)


# --------------------------------------------------------------------------- properties

# (id, properties, channel changes, expected change) under strategy static
PROPERTIES = [
    ("base_fee_msat", "base_fee_msat = 0", {}, PolicyChange(base_fee_msat=0)),
    ("fee_ppm", "fee_ppm = 1", {}, PolicyChange(fee_ppm=1)),
    ("min_htlc_msat", "min_htlc_msat = 5_000", {}, PolicyChange(min_htlc_msat=5_000)),
    ("min_htlc_msat-floor", "min_htlc_msat = 1", {"min_htlc_floor_msat": 1_000}, PolicyChange()),
    ("max_htlc_msat", "max_htlc_msat = 1_000_000", {}, PolicyChange(max_htlc_msat=1_000_000)),
    (
        "max_htlc_msat-ceiling",
        "max_htlc_msat = 999_000_000",
        {"max_htlc_ceiling_msat": 900_000_000},
        PolicyChange(max_htlc_msat=900_000_000),
    ),
    (
        "max_htlc_msat_ratio",
        "max_htlc_msat_ratio = 0.25",
        {},
        PolicyChange(max_htlc_msat=250_000_000),
    ),
    (
        "max_htlc_msat_ratio-and-max",
        "max_htlc_msat_ratio = 0.25\nmax_htlc_msat = 100_000",
        {},
        PolicyChange(max_htlc_msat=100_000),
    ),
    (
        "max_htlc_msat-and-ratio-smaller",
        "max_htlc_msat_ratio = 0.001\nmax_htlc_msat = 9_000_000",
        {},
        PolicyChange(max_htlc_msat=1_000_000),
    ),
    ("time_lock_delta", "time_lock_delta = 144", {}, PolicyChange(time_lock_delta=144)),
    ("min_fee_ppm_delta-below", "fee_ppm = 491\nmin_fee_ppm_delta = 10", {}, PolicyChange()),
    (
        "min_fee_ppm_delta-equal",
        "fee_ppm = 490\nmin_fee_ppm_delta = 10",
        {},
        PolicyChange(fee_ppm=490),
    ),
    (
        "min_fee_ppm_delta-other-fields-still-change",
        "fee_ppm = 499\nbase_fee_msat = 0\nmin_fee_ppm_delta = 10",
        {},
        PolicyChange(base_fee_msat=0),
    ),
    ("inbound_fee_ppm", "inbound_fee_ppm = -100", {}, PolicyChange(inbound_fee_ppm=-100)),
    (
        "inbound_base_fee_msat",
        "inbound_base_fee_msat = -1_000",
        {},
        PolicyChange(inbound_base_fee_msat=-1_000),
    ),
    ("inbound_level_ppm", "inbound_level_ppm = 100", {}, PolicyChange(inbound_fee_ppm=-400)),
    # the level follows the fee actually kept: 495 is within the delta, so 500 is kept
    (
        "inbound_level_ppm-after-delta",
        "fee_ppm = 495\nmin_fee_ppm_delta = 10\ninbound_level_ppm = 100",
        {},
        PolicyChange(inbound_fee_ppm=-400),
    ),
    # inbound delta defaults to min_fee_ppm_delta
    ("inbound-delta-default", "inbound_fee_ppm = -5\nmin_fee_ppm_delta = 10", {}, PolicyChange()),
    (
        "min_inbound_fee_ppm_delta",
        "inbound_fee_ppm = -5\nmin_fee_ppm_delta = 10\nmin_inbound_fee_ppm_delta = 5",
        {},
        PolicyChange(inbound_fee_ppm=-5),
    ),
    (
        "inbound-delta-zero-always",
        "inbound_fee_ppm = 0\nmin_inbound_fee_ppm_delta = 50",
        {"ours": replace(OURS, inbound_fee_rate_ppm=-10)},
        PolicyChange(inbound_fee_ppm=0),
    ),
    (
        "inbound-delta-base-changes",
        "inbound_fee_ppm = -5\ninbound_base_fee_msat = -1\nmin_inbound_fee_ppm_delta = 50",
        {},
        PolicyChange(inbound_base_fee_msat=-1, inbound_fee_ppm=-5),
    ),
]


@pytest.mark.parametrize(
    ("props", "changes", "expected"), [p[1:] for p in PROPERTIES], ids=[p[0] for p in PROPERTIES]
)
def test_property(props: str, changes: dict[str, Any], expected: PolicyChange) -> None:
    decision = decide(f"[default]\nstrategy = static\n{props}\n", chan(**changes))
    assert decision.change == expected, decision.reason


def test_bounds_travel_with_the_decision() -> None:
    decision = decide("[a]\nmin_fee_ppm = 10\n[default]\nstrategy = static\nmax_fee_ppm = 90\n")
    assert (decision.min_fee_ppm, decision.max_fee_ppm) == (10, 90)


# --------------------------------------------------------------------------- ordering

ORDERING = [
    (
        "first-final-match-wins",
        "[a]\nchan.min_capacity = 1\nstrategy = static\nfee_ppm = 1\n"
        "[b]\nchan.min_capacity = 1\nstrategy = static\nfee_ppm = 2\n",
        ("a",),
        1,
        None,
    ),
    (
        "a-failing-section-is-skipped",
        "[a]\nchan.private = true\nstrategy = static\nfee_ppm = 1\n"
        "[b]\nchan.min_capacity = 1\nstrategy = static\nfee_ppm = 2\n",
        ("b",),
        2,
        None,
    ),
    (
        "default-at-the-top-is-still-the-fallback",
        "[default]\nstrategy = static\nfee_ppm = 9\n"
        "[b]\nchan.min_capacity = 1\nstrategy = static\nfee_ppm = 2\n",
        ("b",),
        2,
        None,
    ),
    (
        "default-when-nothing-matched",
        "[a]\nchan.private = true\nstrategy = static\nfee_ppm = 1\n"
        "[default]\nstrategy = static\nfee_ppm = 9\n",
        ("default",),
        9,
        None,
    ),
    (
        "nothing-matched-no-default",
        "[a]\nchan.private = true\nstrategy = static\nfee_ppm = 1\n",
        (),
        None,
        None,
    ),
    (
        "non-final-lays-properties-over-later",
        "[defaults]\nbase_fee_msat = 0\n"
        "[b]\nchan.min_capacity = 1\nstrategy = static\nfee_ppm = 2\n",
        ("defaults", "b"),
        2,
        0,
    ),
    (
        "final-overrides-non-final",
        "[defaults]\nbase_fee_msat = 0\nfee_ppm = 7\n[b]\nstrategy = static\nbase_fee_msat = 5\n",
        ("defaults", "b"),
        7,
        5,
    ),
    (
        "later-non-final-overrides-earlier",
        "[one]\nbase_fee_msat = 1\nfee_ppm = 1\n[two]\nchan.min_capacity = 1\nbase_fee_msat = 2\n"
        "[default]\nstrategy = static\n",
        ("one", "two", "default"),
        1,
        2,
    ),
    (
        "non-matching-non-final-lays-nothing",
        "[private-defaults]\nchan.private = true\nbase_fee_msat = 0\n"
        "[b]\nstrategy = static\nfee_ppm = 2\n",
        ("b",),
        2,
        None,
    ),
    (
        "non-final-after-the-final-match-is-not-reached",
        "[b]\nstrategy = static\nfee_ppm = 2\n[late]\nbase_fee_msat = 0\n",
        ("b",),
        2,
        None,
    ),
    (
        "non-final-reaches-default",
        "[defaults]\nbase_fee_msat = 0\n[default]\nstrategy = static\nfee_ppm = 9\n",
        ("defaults", "default"),
        9,
        0,
    ),
    (
        "non-final-only-no-default",
        "[defaults]\nbase_fee_msat = 0\nfee_ppm = 1\n",
        ("defaults",),
        None,
        None,
    ),
    (
        "default-overrides-layers",
        "[defaults]\nfee_ppm = 1\n[default]\nstrategy = static\nfee_ppm = 9\n",
        ("defaults", "default"),
        9,
        None,
    ),
    (
        "non-final-strategy-props-reach-proportional",
        "[bounds]\nmin_fee_ppm = 100\nmax_fee_ppm = 600\n[default]\nstrategy = proportional\n",
        ("bounds", "default"),
        300,
        None,
    ),
    (
        "lnflow-and-charge-lnd-sections-mix",
        "[busy]\nlnflow.min_urgency = 90\nstrategy = static\nfee_ppm = 1\n"
        "[fee]\nlnflow.recommendation = lower_fees\nchan.min_ratio = 0.5\nstrategy = static\n"
        "fee_ppm = 2\n",
        ("fee",),
        2,
        None,
    ),
]


@pytest.mark.parametrize(
    ("text", "sections", "fee_ppm", "base_fee_msat"),
    [o[1:] for o in ORDERING],
    ids=[o[0] for o in ORDERING],
)
def test_ordering(
    text: str, sections: tuple[str, ...], fee_ppm: int | None, base_fee_msat: int | None
) -> None:
    decision = decide(text)
    assert decision.sections == sections
    assert decision.change.fee_ppm == fee_ppm
    assert decision.change.base_fee_msat == base_fee_msat


def test_use_config_evaluates_the_named_rules(tmp_path: Path) -> None:
    (tmp_path / "inner.conf").write_text(
        "[rich]\nchan.min_ratio = 0.5\nstrategy = static\nfee_ppm = 42\n"
        "[default]\nstrategy = static\nfee_ppm = 7\n"
    )
    text = (
        "[layers]\nbase_fee_msat = 0\nmin_fee_ppm_delta = 100\n"
        "[include]\nchan.min_capacity = 1\nstrategy = use_config\nconfig_file = inner.conf\n"
    )
    decision = decide(text, base_dir=tmp_path)
    assert decision.sections == ("layers", "include", "rich (from inner.conf)")
    assert decision.strategy is Strategy.STATIC
    # the named file starts afresh (no base fee from [layers]); the delta carries over
    assert decision.change == PolicyChange(fee_ppm=42)
    lower = decide(text, chan(ours=replace(OURS, fee_rate_ppm=100)), base_dir=tmp_path)
    assert lower.change == PolicyChange()
    assert "within min_fee_ppm_delta 100" in lower.reason


def test_use_config_with_nothing_matching_leaves_the_channel(tmp_path: Path) -> None:
    (tmp_path / "inner.conf").write_text(
        "[s]\nchan.private = true\nstrategy = static\nfee_ppm = 1\n"
    )
    decision = decide(
        "[default]\nstrategy = use_config\nconfig_file = inner.conf\n", base_dir=tmp_path
    )
    assert decision.strategy is None and not decision.changed
    assert decision.reason == "[default]: no section of inner.conf matched"


def test_use_config_file_laid_by_a_non_final_section(tmp_path: Path) -> None:
    (tmp_path / "inner.conf").write_text("[default]\nstrategy = static\nfee_ppm = 1\n")
    decision = decide(
        "[where]\nconfig_file = inner.conf\n[default]\nstrategy = use_config\n", base_dir=tmp_path
    )
    assert decision.change == PolicyChange(fee_ppm=1)


def test_use_config_without_a_file_leaves_the_channel() -> None:
    decision = decide("[default]\nstrategy = use_config\n")
    assert not decision.changed and "use_config needs config_file" in decision.reason


def test_decisions_keep_channel_order_and_carry_evidence() -> None:
    quiet = chan(chan_id=CHAN + 1, opportunity=None, stream_gap_s=120)
    rules = parse_rules("[default]\nstrategy = static\nfee_ppm = 1\n")
    decisions = evaluate(rules, [chan(), quiet], block_height=HEIGHT, analysis_window_s=DAY_S)
    assert [d.chan_id for d in decisions] == [CHAN, CHAN + 1]
    assert [d.urgency for d in decisions] == [45, 0]
    assert [d.stream_gap_s for d in decisions] == [0, 120]
    assert decisions[0].before == OURS


def test_the_shipped_example_decides() -> None:
    rules = load_rules(ROOT / "config" / "policies.example.conf")
    periods = rules.activity_periods_s(DAY_S)
    activity = {p: ChannelActivity(htlcs_out=1) for p in periods}
    fee = chan(activity=activity)
    drained = chan(
        chan_id=CHAN + 1, activity=activity, opportunity=None, local_balance_sat=50_000,
        remote_balance_sat=950_000,
    )  # fmt: skip
    plain = chan(chan_id=CHAN + 2, activity=activity, opportunity=None, peer_node=None)
    decisions = evaluate(rules, [fee, drained, plain], block_height=HEIGHT, analysis_window_s=DAY_S)
    assert [d.sections[-1] for d in decisions] == ["fee-failures", "drained", "default"]
    assert decisions[0].change.fee_ppm == 400  # 500 − 20 %
    assert decisions[1].change.fee_ppm == 800
    assert decisions[2].change.fee_ppm == 300  # proportional 100..600 at ratio 0.6


# --------------------------------------------------------------------------- invariants


@given(
    local=st.integers(0, 10**9),
    remote=st.integers(0, 10**9),
    low=st.integers(0, 5_000),
    span=st.integers(0, 5_000),
)
def test_proportional_stays_within_its_bounds(local: int, remote: int, low: int, span: int) -> None:
    high = low + span
    decision = decide(
        f"[default]\nstrategy = proportional\nmin_fee_ppm = {low}\nmax_fee_ppm = {high}\n"
        "min_fee_ppm_delta = 0\n",
        chan(
            local_balance_sat=local, remote_balance_sat=remote, ours=replace(OURS, fee_rate_ppm=-1)
        ),
    )
    if local + remote == 0:
        assert not decision.changed
    else:
        assert decision.change.fee_ppm is not None and low <= decision.change.fee_ppm <= high


@given(
    current=st.integers(1, 100_000),
    suggested=st.integers(0, 100_000),
    percent=st.integers(1, 100),
    floor=st.integers(0, 1_000),
)
def test_opportunity_only_lowers_within_one_step_and_the_floor(
    current: int, suggested: int, percent: int, floor: int
) -> None:
    decision = decide(
        f"[default]\nstrategy = opportunity\nmax_fee_step_percent = {percent}\n"
        f"min_fee_ppm = {floor}\n",
        chan(
            ours=replace(OURS, fee_rate_ppm=current), opportunity=opp(suggested_fee_ppm=suggested)
        ),
    )
    new = decision.change.fee_ppm
    if new is None:
        return
    assert new < current
    assert new >= max(suggested, floor)
    assert current - new <= max(1, current * percent // 100)


@given(order=st.permutations(range(4)))
def test_decisions_do_not_depend_on_channel_order(order: list[int]) -> None:
    channels = [
        chan(chan_id=CHAN + 0, local_balance_sat=100_000, remote_balance_sat=900_000),
        chan(chan_id=CHAN + 1, active=False),
        chan(chan_id=CHAN + 2, peer_pubkey=OTHER_KEY, opportunity=None),
        chan(chan_id=CHAN + 3, local_balance_sat=0, remote_balance_sat=0),
    ]
    rules = parse_rules(
        "[offline-peer]\nnode.min_shared_channels_inactive = 1\nnode.max_shared_ratio = 0.5\n"
        "base_fee_msat = 0\n"
        "[fee]\nlnflow.recommendation = lower_fees\nchan.max_ratio = 0.5\nstrategy = opportunity\n"
        "[default]\nstrategy = proportional\nsum_peer_chans = true\nmin_fee_ppm = 0\n"
        "max_fee_ppm = 1_000\n"
    )
    base = {
        d.chan_id: d
        for d in evaluate(rules, channels, block_height=HEIGHT, analysis_window_s=DAY_S)
    }
    shuffled = evaluate(
        rules, [channels[i] for i in order], block_height=HEIGHT, analysis_window_s=DAY_S
    )
    assert {d.chan_id: d for d in shuffled} == base
