from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from fractions import Fraction
from typing import TypeVar

from hypothesis import given
from hypothesis import strategies as st
from test_opportunities import SINCE, Details, channel, offer, sats

from lnflow.analysis import (
    FailureClass,
    analyze,
    deciding_class,
    rebalance_plan,
    recommend,
    urgency_score,
)
from lnflow.analysis.model import (
    Action,
    AnalysisInput,
    AnalysisSettings,
    ChannelFailures,
    ChannelState,
    ClassStats,
    InboundBaseline,
)

K = TypeVar("K")
V = TypeVar("V")

HOUR = 3_600 * 1_000_000_000
# low thresholds so that most generated channels are reported
SETTINGS = AnalysisSettings(min_failure_count=1, min_missed_sats=0)


@st.composite
def channel_failures(draw: st.DrawFn, chan_id: int) -> ChannelFailures:
    classes = draw(st.lists(st.sampled_from(FailureClass), min_size=1, max_size=4, unique=True))
    by_class = {
        cls: ClassStats(draw(st.integers(1, 60)), draw(st.integers(0, 50_000_000)))
        for cls in classes
    }
    count = sum(s.failures for s in by_class.values())
    raw = sum(s.missed_msat for s in by_class.values())
    return ChannelFailures(
        chan_id=chan_id,
        failures=count,
        clusters=draw(st.integers(1, count)),
        missed_raw_msat=raw,
        missed_dedup_msat=draw(st.integers(0, raw)),
        incoming_channels=draw(st.integers(1, 6)),
        first_failure_ns=SINCE + HOUR,
        last_failure_ns=SINCE + 2 * HOUR,
        by_class=by_class,
    )


@st.composite
def inputs(draw: st.DrawFn) -> AnalysisInput:
    hours = draw(st.integers(1, 24 * 30))
    count = draw(st.integers(0, 8))
    ids = [(800_000 + i) << 40 for i in range(count)]
    channels: dict[int, ChannelState] = {}
    failures: dict[int, ChannelFailures] = {}
    inbound: dict[int, InboundBaseline] = {}
    for chan_id in ids:
        capacity = draw(st.integers(100_000, 10_000_000))
        local = draw(st.integers(0, capacity))
        channels[chan_id] = channel(
            chan_id,
            capacity=capacity,
            local=local,
            reserve=capacity // 100,
            fee_ppm=draw(st.integers(0, 3_000)),
            max_htlc=draw(st.none() | st.integers(1, capacity * 1_000)),
            min_local_ratio=draw(st.none() | st.floats(0, 1)),
            uptime=draw(st.none() | st.floats(0, 1)),
        )
        if draw(st.booleans()):
            failures[chan_id] = draw(channel_failures(chan_id))
        if draw(st.booleans()):
            inbound[chan_id] = InboundBaseline(
                chan_id, draw(st.integers(0, 100_000_000)), draw(st.integers(0, 5_000_000))
            )
    amounts = {
        (chan_id, cls): sats(*draw(st.lists(st.integers(1, 20_000_000), max_size=5)))
        for chan_id in failures
        for cls in (FailureClass.LIQUIDITY, FailureClass.MAX_HTLC)
    }
    offers = {chan_id: [offer(draw(st.integers(0, 2_000)))] for chan_id in failures}
    return AnalysisInput(
        since_ns=SINCE,
        until_ns=SINCE + hours * HOUR,
        hours=hours,
        channels=channels,
        failures=failures,
        successes={c: draw(st.integers(0, 500)) for c in ids},
        inbound=inbound,
        details=Details(amounts, offers),
    )


@given(inputs())
def test_every_opportunity_is_consistent(inp: AnalysisInput) -> None:
    report = analyze(inp, SETTINGS, 0)
    for opp in report.opportunities:
        assert 0 <= opp.missed_msat <= opp.missed_raw_msat
        assert 0 <= opp.urgency_score <= 100
        exact = Fraction(opp.missed_msat * 720, inp.hours)
        assert opp.potential_monthly_msat == math.floor(exact + Fraction(1, 2))
        attempts = opp.failures + opp.successes
        rate = Fraction(opp.failures, attempts) if attempts else Fraction(0)
        expected = urgency_score(Fraction(opp.missed_msat, 1_000), opp.failures, rate)
        assert opp.urgency_score == expected
        assert opp.channel_id in inp.channels
        assert "\n" not in opp.reason


@given(inputs())
def test_ranking_is_sorted(inp: AnalysisInput) -> None:
    opportunities = analyze(inp, SETTINGS, 0).opportunities
    assert [o.rank for o in opportunities] == list(range(1, len(opportunities) + 1))
    keys = [(-o.urgency_score, -o.missed_msat, o.channel_id) for o in opportunities]
    assert keys == sorted(keys)
    assert len({o.channel_id for o in opportunities}) == len(opportunities)


def reverse(mapping: Mapping[K, V]) -> dict[K, V]:
    return dict(reversed(list(mapping.items())))


@given(inputs())
def test_order_of_the_input_does_not_matter(inp: AnalysisInput) -> None:
    shuffled = AnalysisInput(
        since_ns=inp.since_ns,
        until_ns=inp.until_ns,
        hours=inp.hours,
        channels=reverse(inp.channels),
        failures=reverse(inp.failures),
        successes=reverse(inp.successes),
        inbound=reverse(inp.inbound),
        details=inp.details,
    )
    assert analyze(shuffled, SETTINGS, 0) == analyze(inp, SETTINGS, 0)


@given(inputs())
def test_rebalance_plan_is_bounded(inp: AnalysisInput) -> None:
    report = analyze(inp, SETTINGS, 0)
    wanted = {o.channel_id: o.suggested_amount_sat or 0 for o in report.opportunities}
    for move in report.rebalance_plan:
        assert move.target_channel_id not in move.source_channel_ids
        assert 0 < move.amount_sat <= wanted[move.target_channel_id]
        assert move.max_cost_ppm >= 0


ratios = st.fractions(0, 1) | st.floats(0, 1)


@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 1_000),
    ratios,
)
def test_urgency_bounded_and_monotonic_in_missed(
    a_msat: int, b_msat: int, failures: int, rate: Fraction | float
) -> None:
    low, high = sorted((a_msat, b_msat))
    low_score = urgency_score(Fraction(low, 1_000), failures, rate)
    high_score = urgency_score(Fraction(high, 1_000), failures, rate)
    assert 0 <= low_score <= high_score <= 100
    # floats are accepted too (display figures), at their exact value
    assert 0 <= urgency_score(high / 1_000, failures, float(rate)) <= 100


@given(inputs())
def test_the_plan_does_not_depend_on_the_order_it_is_handed_the_opportunities(
    inp: AnalysisInput,
) -> None:
    report = analyze(inp, SETTINGS, 0)
    shuffled = list(reversed(report.opportunities))
    assert rebalance_plan(shuffled, inp.channels, SETTINGS) == report.rebalance_plan


@given(st.integers(0, 3).flatmap(lambda n: channel_failures((800_000 + n) << 40)), st.booleans())
def test_details_are_asked_for_exactly_when_a_class_decides(
    failures: ChannelFailures, nothing_missed: bool
) -> None:
    if nothing_missed:  # the 50 % rule then weighs failure counts
        by_class = {cls: ClassStats(s.failures, 0) for cls, s in failures.by_class.items()}
        failures = replace(failures, missed_raw_msat=0, missed_dedup_msat=0, by_class=by_class)
    details = Details()
    recommend(channel(failures.chan_id), failures, details, SETTINGS)
    decides = deciding_class(failures)
    asks = (FailureClass.LIQUIDITY, FailureClass.MAX_HTLC, FailureClass.FEE)
    assert (details.calls > 0) == (decides in asks)
    if decides is None:
        assert recommend(channel(failures.chan_id), failures, details, SETTINGS).action is (
            Action.INVESTIGATE
        )
