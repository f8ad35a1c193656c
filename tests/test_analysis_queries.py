"""The analysis read side (lnflow.store.read) over a real SQLite store filled the way the
daemon fills it: the window's summary, the failure details a request names, and the
analysis as lnflowd and lnflowctl run it."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import StoreAt
from daemonproc import ATTEMPTS_SCID, link_fail
from sqlalchemy import Engine, bindparam, event, insert, select, text

import lnflow.store.read.details as read_details
from lnflow.analysis import decide, plan
from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import (
    INCOMING_CAP,
    AmountRequest,
    AnalysisSettings,
    AnalysisSummary,
    ChannelFailures,
    ChannelState,
    ClassStats,
    DetailFacts,
    DetailRequest,
    FeePoint,
    Gap,
    InboundBaseline,
)
from lnflow.analysis.ranks import percentile
from lnflow.attempts import Outcome
from lnflow.config import Settings, analysis_settings, load_settings
from lnflow.domain import (
    ChannelInfo,
    ChannelSample,
    FailureDetail,
    ForwardRecord,
    NodeInfo,
    RoutingPolicy,
    WireFailure,
    from_signed64,
    to_signed64,
)
from lnflow.errors import ConfigError
from lnflow.store.channel_ids import alias_map
from lnflow.store.db import open_engine
from lnflow.store.ingest import Ingestor
from lnflow.store.read import (
    RANK_IN_SQL_FROM_AMOUNTS,
    RANK_IN_SQL_FROM_HOURS,
    analyze_store,
    fetch_details,
    load_summary,
    node_id_of,
)
from lnflow.store.read.speed import collector_paused, rows
from lnflow.store.schema import channel_aliases, channels, failure_clusters, forwards
from lnflow.store.writer import NS_PER_HOUR, StoreWriter

pytestmark = pytest.mark.engines("sqlite", "postgresql")

S = 1_000_000_000
MIN = 60 * S
H = NS_PER_HOUR
NODE = NodeInfo("02" + "aa" * 32, "alice", "0.18.3-beta", "regtest", 1, True)

# The window: exactly 24 hours ending 40 minutes into UNTIL_HOUR, so both ends fall
# mid-hour (SINCE is 40 minutes into its hour too) and every hour SINCE + k h (k >= 1)
# falls in a whole clock hour of the window.
UNTIL_HOUR = 490_000
UNTIL = UNTIL_HOUR * H + 40 * MIN
SINCE = UNTIL - 24 * H

# Our channels
A = (800_000 << 40) | (1 << 16) | 1  # open all along, sampled before and in the window
B = (800_001 << 40) | (2 << 16)  # closed inside the window
C = (800_002 << 40) | (3 << 16)  # closed before the window: left out
D = (800_003 << 40) | (4 << 16)  # a channel row never sampled: left out
E = (1 << 63) + 12345  # an alias SCID above 2^63, no policy known
F = (800_005 << 40) | (5 << 16)  # first sampled after the window: left out
# Incoming channels and a foreign outgoing SCID (UNKNOWN_NEXT_PEER)
IN1, IN2, IN3, IN4 = (900_000 + i << 40 for i in range(1, 5))
X = (700_000 << 40) | 7

PEER = {chan: f"03{i:02x}" + "bb" * 31 for i, chan in enumerate((A, B, C, D, E, F), 1)}


def policy(base: int, ppm: int, max_htlc: int = 990_000_000) -> RoutingPolicy:
    return RoutingPolicy(base, ppm, 80, 1_000, max_htlc, False, 0)


def sample(
    chan: int,
    local: int,
    remote: int,
    *,
    ours: RoutingPolicy | None = None,
    uptime: int = 0,
    lifetime: int = 0,
    active: bool = True,
) -> ChannelSample:
    capacity = local + remote + 20_000
    info = ChannelInfo(
        chan_id=chan,
        remote_pubkey=PEER[chan],
        channel_point=f"{chan:064x}:0",
        capacity_sat=capacity,
        local_balance_sat=local,
        remote_balance_sat=remote,
        local_reserve_sat=10_000,
        remote_reserve_sat=10_000,
        active=active,
        private=False,
        peer_alias="",
        uptime_s=uptime,
        lifetime_s=lifetime,
    )
    return ChannelSample(info=info, ours=ours, peer=None, peer_alias=f"peer-{chan % 1000}")


LIQ = {"detail": FailureDetail.INSUFFICIENT_BALANCE}


@dataclasses.dataclass
class Store:
    engine: Engine
    writer: StoreWriter
    node_id: int


@pytest.fixture
def store(store_at: StoreAt) -> Iterator[Store]:
    engine = open_engine(store_at("s.db"))
    writer = StoreWriter(engine)
    yield Store(engine, writer, writer.upsert_node(NODE, 1))
    engine.dispose()


def make_ingestor(s: Store) -> Ingestor:
    return Ingestor(
        s.engine,
        s.node_id,
        attempt_timeout_ns=600 * S,
        attempt_linger_ns=10 * S,
        dedup_window_ns=60 * S,
        cluster_max_span_ns=600 * S,
    )


def fill(s: Store) -> None:
    """The hand-made history the expected input below is written from."""
    w, node = s.writer, s.node_id
    a_fee = policy(1_000, 100)
    # channel samples (each call also marks channels missing from it as closed)
    w.record_channel_samples(
        node, SINCE - 10 * H, [sample(A, 100_000, 900_000, ours=a_fee), sample(C, 1, 2)]
    )
    w.record_channel_samples(node, SINCE - 2 * H, [sample(A, 200_000, 800_000, ours=a_fee)])
    w.record_channel_samples(
        node,
        SINCE + 1 * H,
        [
            sample(A, 300_000, 700_000, ours=policy(1_000, 200), uptime=1_000, lifetime=1_000),
            sample(B, 900_000, 100_000, ours=policy(0, 50), uptime=50, lifetime=60),
            sample(E, 0, 500_000, uptime=7, lifetime=7),
        ],
    )
    w.record_channel_samples(
        node,
        SINCE + 5 * H,
        [
            sample(A, 500_000, 500_000, ours=policy(1_000, 200), uptime=8_200, lifetime=15_400),
            sample(E, 0, 500_000, uptime=7, lifetime=7),
        ],
    )
    w.record_channel_samples(
        node,
        UNTIL - 10 * MIN,
        [
            sample(
                A,
                600_000,
                400_000,
                # an inbound discount (lnd >= 0.18): read from the latest sample
                ours=dataclasses.replace(
                    policy(0, 200, 5_000_000), inbound_fee_base_msat=-500, inbound_fee_rate_ppm=-150
                ),
                uptime=10_000,
                lifetime=19_000,
            ),
            sample(E, 1_000, 499_000, uptime=7, lifetime=7, active=False),
        ],
    )
    # after the window: ignored
    w.record_channel_samples(
        node,
        UNTIL + 1,
        [sample(A, 50_000, 950_000, ours=a_fee), sample(E, 0, 500_000), sample(F, 1, 1)],
    )
    with s.engine.begin() as conn:
        conn.execute(
            insert(channels).values(
                node_id=node,
                chan_id=to_signed64(D),
                remote_pubkey=PEER[D],
                channel_point="d:0",
                capacity_sat=1,
                peer_alias="never-sampled",
                private=False,
                first_seen_ns=SINCE,
                last_seen_ns=SINCE,
            )
        )

    # stream sessions: a gap before the window (left out) and one inside it
    s0 = w.open_session(node, SINCE - 30 * H, "0.18.3-beta")
    w.close_session(s0, SINCE - 29 * H, "lnd restarted")
    s1 = w.open_session(node, SINCE - 1 * H, "0.18.3-beta")
    w.close_session(s1, SINCE + 2 * H, "lnd restarted")
    s2 = w.open_session(node, SINCE + 3 * H, "0.18.3-beta")

    # local failures, recorded like the daemon does
    ingestor = make_ingestor(s)
    events = [
        link_fail(1, SINCE - 1 * H, A, IN1, 7_000_000, 9_000, **LIQ),  # before the window
        link_fail(2, SINCE + 1 * H, A, IN1, 1_000_000, 2_000, **LIQ),  # cluster 1 ...
        link_fail(3, SINCE + 1 * H + 10 * S, A, IN1, 1_500_000, 3_000, **LIQ),  # ... its max
        link_fail(4, SINCE + 2 * H, X, IN1, 100_000, 500, wire=WireFailure.UNKNOWN_NEXT_PEER),
        link_fail(
            5,
            SINCE + 3 * H,
            E,
            IN2,
            3_000_000,
            4_000,
            detail=FailureDetail.HTLC_EXCEEDS_MAX,
        ),
        link_fail(6, SINCE + 6 * H, A, IN2, 2_000_000, 1_000, **LIQ),
        # outgoing amount 0 (unknown): counts, misses nothing, has no amount
        link_fail(7, SINCE + 7 * H, A, IN4, 0, 0, detail=FailureDetail.ONION_DECODE),
        link_fail(8, UNTIL - 30 * MIN, A, IN3, 400_000, 100, wire=WireFailure.FEE_INSUFFICIENT),
    ]
    ingestor.ingest(s2, events, UNTIL)

    # the forwards ledger
    w.insert_forwards(
        node,
        [
            ForwardRecord(SINCE - 15 * 24 * H, E, A, 1, 1, 7_777),  # before the baseline
            ForwardRecord(SINCE - 3 * 24 * H, E, A, 1, 1, 1_000),  # baseline
            ForwardRecord(SINCE - 24 * H, IN1, A, 1, 1, 500),  # baseline
            ForwardRecord(SINCE + 4 * H, IN1, A, 1, 1, 10),  # window
            ForwardRecord(SINCE + 9 * H, IN1, A, 1, 1, 20),
            ForwardRecord(SINCE + 9 * H + 1, B, E, 1, 1, 30),
            ForwardRecord((UNTIL_HOUR + 1) * H, IN1, A, 1, 1, 40),  # after the window
        ],
    )


def expected_summary() -> AnalysisSummary:
    """What ``fill`` must give."""

    def state(chan: int, **kw: Any) -> ChannelState:
        base: dict[str, Any] = {
            "chan_id": chan,
            "peer_pubkey": PEER[chan],
            "peer_alias": f"peer-{chan % 1000}",
            "local_reserve_sat": 10_000,
            "remote_reserve_sat": 10_000,
            "active": True,
            "closed": False,
        }
        return ChannelState(**(base | kw))

    return AnalysisSummary(
        since_ns=SINCE,
        until_ns=UNTIL,
        hours=24,
        channels={
            A: state(
                A,
                capacity_sat=1_020_000,
                local_balance_sat=600_000,
                remote_balance_sat=400_000,
                fee_base_msat=0,
                fee_rate_ppm=200,
                max_htlc_msat=5_000_000,
                # its lowest is 0.3, but its latest ratio (0.6) is below inbound_ratio
                # (0.9): it cannot be a rebalance_inbound and the lowest is not read
                min_local_ratio=None,
                uptime_ratio=0.5,  # (10 000 − 1 000) / (19 000 − 1 000)
                inbound_fee_base_msat=-500,
                inbound_fee_rate_ppm=-150,
            ),
            B: state(
                B,
                capacity_sat=1_020_000,
                local_balance_sat=900_000,
                remote_balance_sat=100_000,
                closed=True,
                fee_base_msat=0,
                fee_rate_ppm=50,
                max_htlc_msat=990_000_000,
                min_local_ratio=0.9,  # latest 0.9: read
                uptime_ratio=None,  # one sample: no span to measure
                inbound_fee_base_msat=0,  # a policy without an inbound fee
                inbound_fee_rate_ppm=0,
            ),
            E: state(
                E,
                capacity_sat=520_000,
                local_balance_sat=1_000,
                remote_balance_sat=499_000,
                active=False,
                fee_base_msat=None,
                fee_rate_ppm=None,
                max_htlc_msat=None,
                min_local_ratio=None,  # latest 0.002
                uptime_ratio=None,  # lifetime did not move
            ),
        },
        failures={
            A: ChannelFailures(
                chan_id=A,
                failures=5,
                clusters=4,
                missed_raw_msat=2_000 + 3_000 + 1_000 + 0 + 100,
                missed_dedup_msat=3_000 + 1_000 + 0 + 100,
                incoming_channels=3,  # 4, counted up to INCOMING_CAP
                first_failure_ns=SINCE + 1 * H - 40 * MIN,  # the start of a whole hour
                last_failure_ns=UNTIL - 30 * MIN,  # exact: in the partial last hour
                by_class={
                    FailureClass.LIQUIDITY: ClassStats(3, 6_000),
                    FailureClass.FEE: ClassStats(1, 100),
                    FailureClass.OTHER: ClassStats(1, 0),
                },
            ),
            E: ChannelFailures(
                chan_id=E,
                failures=1,
                clusters=1,
                missed_raw_msat=4_000,
                missed_dedup_msat=4_000,
                incoming_channels=1,
                first_failure_ns=SINCE + 3 * H - 40 * MIN,
                last_failure_ns=SINCE + 4 * H - 40 * MIN - 1,
                by_class={FailureClass.MAX_HTLC: ClassStats(1, 4_000)},
            ),
            X: ChannelFailures(
                chan_id=X,
                failures=1,
                clusters=1,
                missed_raw_msat=500,
                missed_dedup_msat=500,
                incoming_channels=1,
                first_failure_ns=SINCE + 2 * H - 40 * MIN,
                last_failure_ns=SINCE + 3 * H - 40 * MIN - 1,
                by_class={FailureClass.AVAILABILITY: ClassStats(1, 500)},
            ),
        },
        successes={A: 2, E: 1},
        inbound={
            IN1: InboundBaseline(IN1, 500, 30),
            E: InboundBaseline(E, 1_000, 0),
            B: InboundBaseline(B, 0, 30),
        },
        gaps=(Gap(SINCE + 2 * H, SINCE + 3 * H),),
        node_failures=7,
        node_missed_msat=4_100 + 4_000 + 500,  # deduplicated, the foreign X's included
        node_missed_raw_msat=6_100 + 4_000 + 500,
        unknown_amount={A: 1},  # htlc 7: lnd gave no outgoing amount
        # sessions cover the window but for the gap: SINCE..+2 h and +3 h..UNTIL
        observed_ns=(UNTIL - SINCE) - 1 * H,
    )


# -- the node --------------------------------------------------------------------------


def test_node_is_the_daemons_else_the_only_one(store: Store) -> None:
    with store.engine.connect() as conn:
        assert node_id_of(conn) == store.node_id
    other = store.writer.upsert_node(dataclasses.replace(NODE, pubkey="03" + "ee" * 32), 2)
    with store.engine.connect() as conn:
        assert node_id_of(conn) is None  # two nodes, no daemon: ambiguous
    store.writer.daemon_started(5, 5)
    store.writer.daemon_state(6, node_id=other)
    with store.engine.connect() as conn:
        assert node_id_of(conn) == other


def test_empty_store_has_no_node(store_at: StoreAt) -> None:
    engine = open_engine(store_at("s.db"))
    with engine.connect() as conn:
        assert node_id_of(conn) is None
    engine.dispose()


# -- the summary -----------------------------------------------------------------------


def load(s: Store, until_ns: int, hours: int, **settings: Any) -> AnalysisSummary:
    """The window's summary, read as the analysis reads it."""
    with s.engine.connect() as conn:
        return load_summary(
            conn,
            s.node_id,
            alias_map(conn, s.node_id),
            until_ns=until_ns,
            hours=hours,
            settings=AnalysisSettings(**settings),
        )


def fetch(s: Store, request: DetailRequest) -> DetailFacts:
    """The details ``request`` names, fetched as the analysis fetches them."""
    with s.engine.connect() as conn:
        return fetch_details(conn, s.node_id, request, alias_map(conn, s.node_id))


def amounts_of(*asked: tuple[int, FailureClass, int]) -> tuple[AmountRequest, ...]:
    """PERCENTS of (channel, class, failures bound) each."""
    return tuple(AmountRequest(chan, cls, PERCENTS, bound) for chan, cls, bound in asked)


def test_summary_equals_the_hand_written_one(store: Store) -> None:
    fill(store)
    assert load(store, UNTIL, 24) == expected_summary()


def test_empty_store_gives_an_empty_summary(store: Store) -> None:
    summary = load(store, UNTIL, 3)
    assert (summary.since_ns, summary.until_ns, summary.hours) == (UNTIL - 3 * H, UNTIL, 3)
    assert not (summary.channels or summary.failures or summary.successes or summary.inbound)
    assert (summary.node_failures, summary.node_missed_msat) == (0, 0)
    assert plan(summary, AnalysisSettings()) == DetailRequest(
        UNTIL - 3 * H, UNTIL, UNTIL - 3 * H - 6 * H
    )
    assert fetch(store, plan(summary, AnalysisSettings())) == DetailFacts()


def test_settings_shape_fee_history_and_baseline(store: Store) -> None:
    fill(store)
    settings = AnalysisSettings(gossip_grace_h=0, baseline_days=1)
    summary = load(store, UNTIL, 24, gossip_grace_h=0, baseline_days=1)
    request = plan(summary, settings)
    assert request.history_from_ns == SINCE  # no grace: from since
    facts = fetch(store, DetailRequest(SINCE, UNTIL, request.history_from_ns, fee_channels=(A,)))
    # from since, where the policy in force is the one sampled 2 h before
    assert facts.fee_history(A) == (
        FeePoint(SINCE - 2 * H, 1_000, 100),
        FeePoint(SINCE + 1 * H, 1_000, 200),  # the rise, when it was first seen
        FeePoint(UNTIL - 10 * MIN, 0, 200),
    )
    assert summary.inbound == {
        IN1: InboundBaseline(IN1, 500, 30),  # a day before since: still in
        B: InboundBaseline(B, 0, 30),
    }


# -- plan: which details the recommendations need ----------------------------------------


def test_plan_names_the_deciding_class_of_each_reported_channel(store: Store) -> None:
    fill(store)
    settings = AnalysisSettings(min_failure_count=1, min_missed_sats=0)
    summary = load(store, UNTIL, 24, min_failure_count=1, min_missed_sats=0)
    # A: liquidity 6 000 of 6 100 msat missed; E: max_htlc alone; X is no channel of ours
    assert plan(summary, settings) == DetailRequest(
        since_ns=SINCE,
        until_ns=UNTIL,
        history_from_ns=SINCE - 6 * H,
        amounts=(
            AmountRequest(A, FailureClass.LIQUIDITY, (50, 90), 3),
            AmountRequest(E, FailureClass.MAX_HTLC, (90,), 1),
        ),
    )
    # from 3 failures only A is reported; with thresholds none reaches, nothing
    three = AnalysisSettings(min_failure_count=3, min_missed_sats=0)
    assert plan(load(store, UNTIL, 24), three).amounts == (
        AmountRequest(A, FailureClass.LIQUIDITY, (50, 90), 3),
    )
    strict = AnalysisSettings(min_failure_count=10**9)
    assert plan(load(store, UNTIL, 24), strict) == DetailRequest(SINCE, UNTIL, SINCE - 6 * H)


# -- fetch: raw failure details ----------------------------------------------------------


def test_details_fetch_what_is_asked_in_one_statement_per_kind(store: Store) -> None:
    fill(store)
    request = DetailRequest(
        SINCE,
        UNTIL,
        SINCE - 6 * H,
        amounts=amounts_of(
            (A, FailureClass.LIQUIDITY, 3),
            (B, FailureClass.LIQUIDITY, 0),
            (A, FailureClass.OTHER, 1),
            (E, FailureClass.MAX_HTLC, 1),
        ),
        fee_channels=(A, B, E),
    )
    with recorded(store.engine) as statements:
        facts = fetch(store, request)
    # the failure before the window is left out
    liquidity = (1_000_000, 1_500_000, 2_000_000)
    assert facts.amount_percentiles(A, FailureClass.LIQUIDITY, PERCENTS) == tuple(
        percentile(liquidity, p) for p in PERCENTS
    )
    assert facts.amount_percentiles(A, FailureClass.LIQUIDITY, (90, 50)) == (2_000_000, 1_500_000)
    assert facts.amount_percentiles(A, FailureClass.OTHER, PERCENTS) == ()  # amount unknown
    assert facts.amount_percentiles(E, FailureClass.MAX_HTLC, PERCENTS) == (3_000_000,) * 6
    assert facts.amount_percentiles(B, FailureClass.LIQUIDITY, PERCENTS) == ()
    assert facts.fee_offers(A) == ((100, 400_000, IN3),)
    assert facts.fee_offers(B) == facts.fee_offers(E) == ()
    # our policy from since − gossip_grace_h (6 h): the one in force then (sampled 10 h
    # before since), then only its changes
    assert facts.fee_history(A) == (
        FeePoint(SINCE - 10 * H, 1_000, 100),
        FeePoint(SINCE + 1 * H, 1_000, 200),
        FeePoint(UNTIL - 10 * MIN, 0, 200),
    )
    assert facts.fee_history(B) == (FeePoint(SINCE + 1 * H, 0, 50),)
    assert facts.fee_history(E) == ()  # no policy known
    # what was not asked for is a plan's bug, not an empty answer
    with pytest.raises(KeyError):
        facts.amount_percentiles(E, FailureClass.LIQUIDITY, PERCENTS)
    with pytest.raises(KeyError):
        facts.fee_history(F)
    # one statement per class of amounts, one for the offers, one for the fee histories
    assert len([s for s, _ in statements if "forward_attempts" in s]) == 3 + 1
    assert len([s for s, _ in statements if "channel_samples" in s]) == 1


def test_fee_histories_of_all_fee_channels_come_in_one_statement(store: Store) -> None:
    fill(store)
    asked = (A, B, E, F, C, D, X)  # X is no channel of ours
    request = DetailRequest(SINCE, UNTIL, SINCE - 6 * H, fee_channels=asked)
    with recorded(store.engine) as statements:
        facts = fetch(store, request)
    assert facts.fee_history(A) == (
        FeePoint(SINCE - 10 * H, 1_000, 100),
        FeePoint(SINCE + 1 * H, 1_000, 200),
        FeePoint(UNTIL - 10 * MIN, 0, 200),
    )
    assert facts.fee_history(E) == facts.fee_history(X) == ()
    assert set(facts.fee_histories) == set(asked)
    samples = [s for s, _ in statements if "channel_samples" in s]
    assert len(samples) == 1
    assert "IN (" in samples[0]


@pytest.mark.parametrize("many", [2, 3])
def test_failure_counts_spare_counting_amounts_of_short_windows(
    store: Store, monkeypatch: pytest.MonkeyPatch, many: int
) -> None:
    # A has 3 liquidity failures in the window, each with an amount: with the threshold
    # at 3 they are read without a count; at 2 they are counted, then ranked in SQL
    fill(store)
    monkeypatch.setattr(read_details, "RANK_IN_SQL_FROM_AMOUNTS", many)
    summary = load(store, UNTIL, 24)
    assert summary.failures[A].by_class[FailureClass.LIQUIDITY].failures == 3
    liquidity = (1_000_000, 1_500_000, 2_000_000)
    expected = tuple(percentile(liquidity, p) for p in PERCENTS)
    request = DetailRequest(
        SINCE,
        UNTIL,
        SINCE,
        amounts=amounts_of(
            (A, FailureClass.LIQUIDITY, 3),
            (B, FailureClass.LIQUIDITY, 0),
            (X, FailureClass.MAX_HTLC, 0),
        ),
    )
    with recorded(store.engine) as statements:
        facts = fetch(store, request)
    assert facts.amount_percentiles(A, FailureClass.LIQUIDITY, PERCENTS) == expected
    assert facts.amount_percentiles(B, FailureClass.LIQUIDITY, PERCENTS) == ()
    assert facts.amount_percentiles(X, FailureClass.MAX_HTLC, PERCENTS) == ()
    counted = [st for st, _ in statements if "count(" in st]
    ranked = [st for st, _ in statements if "OFFSET" in st]
    assert (len(counted) > 0, len(ranked)) == ((False, 0) if many == 3 else (True, 6))


def test_long_windows_rank_the_known_amounts_in_sql_however_the_store_is_shared(
    store: Store,
) -> None:
    # A's liquidity failures of a 200 h window: 9 with an amount, 3 without (counted
    # by the summary, ranked nowhere), one each just before and at the window's end
    # with extreme amounts; B's failures all in the window. A is walked with the time
    # checks (failures outside), B without while the store holds one node, with them
    # once a second node shares it: the same ranks every way.
    until = UNTIL + 200 * H
    since = until - 200 * H
    known = [3_000_000, 1_000_000, 9_000_000, 4_000_000, 2_000_000, 8_000_000, 5_000_000]
    known += [7_000_000, 6_000_000]
    events = [link_fail(1, since - 1, A, IN1, 1, 0, **LIQ)]
    for i, amount in enumerate(known):
        events.append(link_fail(10 + i, since + (1 + 20 * i) * H, A, IN1, amount, 10, **LIQ))
        events.append(link_fail(40 + i, since + (2 + 20 * i) * H, B, IN2, amount // 2, 10, **LIQ))
    for i in range(3):
        fail = link_fail(30 + i, since + (5 + 30 * i) * H, A, IN1, 0, 0, **LIQ)
        events.append(dataclasses.replace(fail, outgoing_amt_msat=None, incoming_amt_msat=None))
    events.append(link_fail(2, until, A, IN1, 99_000_000_000, 0, **LIQ))
    events.sort(key=lambda e: e.timestamp_ns)
    session = store.writer.open_session(store.node_id, since - 2 * H, "0.18.3-beta")
    make_ingestor(store).ingest(session, events, until + 10 * MIN)
    summary = load(store, until, 200)
    failures = {
        chan: summary.failures[chan].by_class[FailureClass.LIQUIDITY].failures for chan in (A, B)
    }
    assert failures == {A: 12, B: 9}
    request = DetailRequest(
        since,
        until,
        since,
        amounts=amounts_of((A, FailureClass.LIQUIDITY, 12), (B, FailureClass.LIQUIDITY, 9)),
    )
    expected = {
        A: tuple(percentile(sorted(known), p) for p in PERCENTS),
        B: tuple(percentile(sorted(a // 2 for a in known), p) for p in PERCENTS),
    }
    for nodes in (1, 2):
        if nodes == 2:
            store.writer.upsert_node(dataclasses.replace(NODE, pubkey="03" + "ee" * 32), 2)
        with recorded(store.engine) as statements:
            facts = fetch(store, request)
        for chan in (A, B):
            assert (
                facts.amount_percentiles(chan, FailureClass.LIQUIDITY, PERCENTS) == expected[chan]
            )
        # one walk per percent and channel, B's without the checks on one node only
        walks = [st.count("OFFSET") for st, _ in statements]
        bare = [st.count("OFFSET") for st, _ in statements if "resolved_ns" not in st]
        assert (sum(walks), sum(bare)) == (2 * len(PERCENTS), len(PERCENTS) if nodes == 1 else 0)


def test_a_channels_other_ids_count_in_its_details(store: Store) -> None:
    fill(store)
    # E's failure under its own id, plus what lnd recorded under another id of A's
    with store.engine.begin() as conn:
        conn.execute(
            insert(channel_aliases),
            [
                {
                    "node_id": store.node_id,
                    "scid": to_signed64(E),
                    "chan_id": to_signed64(A),
                    "confirmed": False,
                }
            ],
        )
    summary = load(store, UNTIL, 24)
    assert E not in summary.failures  # folded into A
    assert summary.failures[A].by_class[FailureClass.MAX_HTLC] == ClassStats(1, 4_000)
    request = DetailRequest(
        SINCE,
        UNTIL,
        SINCE - 6 * H,
        amounts=amounts_of((A, FailureClass.MAX_HTLC, 1), (A, FailureClass.LIQUIDITY, 3)),
        fee_channels=(A,),
    )
    facts = fetch(store, request)
    assert facts.amount_percentiles(A, FailureClass.MAX_HTLC, (50,)) == (3_000_000,)
    liquidity = (1_000_000, 1_500_000, 2_000_000)
    assert facts.amount_percentiles(A, FailureClass.LIQUIDITY, (50, 100)) == liquidity[1:]
    assert facts.fee_offers(A) == ((100, 400_000, IN3),)


@pytest.mark.engines("sqlite")  # SQLite's query plans
def test_channels_and_details_read_bounded_index_ranges(store: Store) -> None:
    fill(store)
    with recorded(store.engine) as statements:
        load(store, UNTIL, 24)
        loaded = len(statements)
        fetch(
            store,
            DetailRequest(
                SINCE,
                UNTIL,
                SINCE - 6 * H,
                amounts=amounts_of((A, FailureClass.LIQUIDITY, 3)),
                fee_channels=(A,),
            ),
        )
    samples = [st for st in statements[:loaded] if "channel_samples" in st[0]]
    # all channels at once: their latest sample and their first in the window (one
    # statement), then the lowest local ratio of the one channel whose latest sample
    # (B's 0.9) reaches inbound_ratio
    assert len(samples) == 2
    assert to_signed64(B) in samples[1][1]  # the expanded IN list: B alone
    assert not {to_signed64(A), to_signed64(E)} & set(samples[1][1])
    sample_plans = plans(store.engine, samples)
    assert not [p for p in sample_plans if p.startswith("SCAN channel_samples")], sample_plans
    assert (
        sample_plans.count(
            "SEARCH channel_samples USING COVERING INDEX ix_channel_samples_chan_state "
            "(node_id=? AND chan_id=? AND ts_ns<?)"
        )
        == 1
    ), sample_plans
    # the lowest local ratio: from the index alone, no table row per sample
    assert (
        "SEARCH channel_samples USING COVERING INDEX ix_channel_samples_chan_state "
        "(node_id=? AND chan_id=? AND ts_ns>? AND ts_ns<?)"
    ) in plans(store.engine, samples[1:]), sample_plans
    # the failure details: one range of the partial covering index per channel ref; no
    # table rows for the amounts, the fee offers read each failure's incoming channel
    # (whose inbound fee counts) from its row
    details = [st for st in statements[loaded:] if "forward_attempts" in st[0]]
    detail_plans = plans(store.engine, details)
    in_range = "(outgoing_chan_ref=? AND failure_class=? AND resolved_ns>? AND resolved_ns<?)"
    assert not [p for p in detail_plans if p.startswith("SCAN forward_attempts")], detail_plans
    assert (
        f"SEARCH forward_attempts USING COVERING INDEX ix_forward_attempts_local {in_range}"
        in detail_plans
    ), detail_plans
    assert (
        f"SEARCH forward_attempts USING INDEX ix_forward_attempts_local {in_range}" in detail_plans
    ), detail_plans
    # the fee history: the channel's samples from the grace period's start
    history = [st for st in statements[loaded:] if "channel_samples" in st[0]]
    history_plans = plans(store.engine, history)
    assert len(history) == 1
    assert not [p for p in history_plans if p.startswith("SCAN channel_samples")]
    assert any(
        "COVERING INDEX ix_channel_samples_chan_state (node_id=? AND chan_id=? AND ts_ns>?" in p
        for p in history_plans
    ), history_plans
    assert not [p for p in history_plans if "USING INTEGER PRIMARY KEY" in p], history_plans


# -- the analysis as lnflowd, lnflowctl and the facades run it ---------------------------


def test_analyze_store_is_summary_plan_fetch_decide(store: Store) -> None:
    fill(store)
    settings = AnalysisSettings(min_failure_count=1, min_missed_sats=0)
    summary = load(store, UNTIL, 24, min_failure_count=1, min_missed_sats=0)
    facts = fetch(store, plan(summary, settings))
    expected = decide(summary, facts, settings, UNTIL + 5)
    report = analyze_store(
        store.engine,
        store.node_id,
        until_ns=UNTIL,
        hours=24,
        settings=settings,
        generated_ns=UNTIL + 5,
    )
    assert report == expected
    assert report.generated_ns == UNTIL + 5
    assert [o.channel_id for o in report.opportunities if not o.estimated] == [A, E]
    assert store.engine.pool.checkedout() == 0  # its connection is back


# -- exact windows: partial hours from raw rows, whole hours from rollups --------------

# A window of 3 hours whose ends fall 17 min 5 s into their clock hours.
EX_UNTIL = 500_000 * H + 17 * MIN + 5 * S
EX_SINCE = EX_UNTIL - 3 * H
EX_IN = [(950_000 + k) << 40 for k in range(9)]  # one incoming channel per failure


def ex_failure_times() -> list[int]:
    """Local failure k on A at these times, missing 1 000 × 2^k msat."""
    return [
        EX_SINCE - 10 * MIN,  # 0: same clock hour as since, before it
        EX_SINCE - 2 * S,  # 1
        EX_SINCE,  # 2: the window starts here (inclusive)
        EX_SINCE + 2 * S,  # 3
        EX_SINCE + 1 * H,  # 4: a whole hour
        EX_UNTIL - 2 * S,  # 5
        EX_UNTIL,  # 6: the window ends here (exclusive)
        EX_UNTIL + 2 * S,  # 7
        EX_UNTIL + 10 * MIN,  # 8: same clock hour as until, after it
    ]


def fill_boundaries(s: Store) -> None:
    """Failures and forwards a few seconds either side of EX_SINCE and EX_UNTIL."""
    w, node = s.writer, s.node_id
    session = w.open_session(node, EX_SINCE - 30 * H, "0.18.3-beta")
    events = [
        # distinct incoming channels and amounts: every failure is its own cluster
        link_fail(k, ts, A, EX_IN[k], 1_000_000 + k, 1_000 << k, **LIQ)
        for k, ts in enumerate(ex_failure_times())
    ]
    make_ingestor(s).ingest(session, events, EX_UNTIL + 1 * H)
    # forwards in via IN1 and out via B at the failure times, fee 2^k msat
    ledger = [ForwardRecord(ts, IN1, B, 1, 1, 1 << k) for k, ts in enumerate(ex_failure_times())]
    # forwards in via IN2 around the start of a one-day baseline
    ledger += [
        ForwardRecord(EX_SINCE - 24 * H - 2 * S, IN2, B, 1, 1, 1_000),  # before the baseline
        ForwardRecord(EX_SINCE - 24 * H, IN2, B, 1, 1, 2_000),  # its first ns
        ForwardRecord(EX_SINCE - 24 * H + 2 * S, IN2, B, 1, 1, 4_000),
        ForwardRecord(EX_SINCE - 10 * H, IN2, B, 1, 1, 8_000),  # a whole hour
        ForwardRecord(EX_SINCE - 1 * S, IN2, B, 1, 1, 16_000),  # its last second
    ]
    w.insert_forwards(node, ledger)


def test_mid_hour_window_counts_exactly_what_falls_inside(store: Store) -> None:
    fill_boundaries(store)
    inp = load(store, EX_UNTIL, 3, baseline_days=1)
    inside = range(2, 6)  # failures 2 to 5
    missed = sum(1_000 << k for k in inside)
    assert inp.failures == {
        A: ChannelFailures(
            chan_id=A,
            failures=4,
            clusters=4,
            missed_raw_msat=missed,
            missed_dedup_msat=missed,
            incoming_channels=3,  # 4, counted up to INCOMING_CAP
            first_failure_ns=EX_SINCE,  # exact: in the partial first hour
            last_failure_ns=EX_UNTIL - 2 * S,  # exact: in the partial last hour
            by_class={FailureClass.LIQUIDITY: ClassStats(4, missed)},
        )
    }
    assert (inp.node_failures, inp.node_missed_msat) == (4, missed)
    assert inp.successes == {B: 4}
    assert inp.inbound == {
        IN1: InboundBaseline(IN1, 1 + 2, sum(1 << k for k in inside)),  # 0, 1: baseline
        IN2: InboundBaseline(IN2, 2_000 + 4_000 + 8_000 + 16_000, 0),
    }
    # the raw details describe the same failures as the counts
    request = DetailRequest(
        inp.since_ns, inp.until_ns, inp.since_ns, amounts_of((A, FailureClass.LIQUIDITY, 4))
    )
    amounts = [1_000_000 + k for k in inside]
    assert fetch(store, request).amount_percentiles(A, FailureClass.LIQUIDITY, PERCENTS) == tuple(
        percentile(amounts, p) for p in PERCENTS
    )


def test_window_on_hour_boundaries_is_the_rollups_alone(store: Store) -> None:
    fill_boundaries(store)
    until = EX_UNTIL // H * H  # 500 000 h: since is 499 997 h
    with recorded(store.engine) as statements:
        inp = load(store, until, 3, baseline_days=1)
    # no partial hour: nothing read from raw rows but the counts that have no rollup (of
    # failures without an amount and of rejections), each from its small partial index
    raw = [s for s, _ in statements if RAW_TABLES.search(s) and not NO_ROLLUP.search(s)]
    assert raw == []
    inside = range(5)  # failures 0 to 4: 499 997:07:05 to 499 998:17:05
    missed = sum(1_000 << k for k in inside)
    assert inp.failures == {
        A: ChannelFailures(
            chan_id=A,
            failures=5,
            clusters=5,
            missed_raw_msat=missed,
            missed_dedup_msat=missed,
            incoming_channels=3,  # 5, counted up to INCOMING_CAP
            first_failure_ns=499_997 * H,  # hour precision
            last_failure_ns=499_999 * H - 1,
            by_class={FailureClass.LIQUIDITY: ClassStats(5, missed)},
        )
    }
    assert inp.successes == {B: 5 + 1}  # and IN2's forward a second before EX_SINCE
    assert inp.inbound == {
        # baseline 499 973 h to 499 997 h: IN2's forward at EX_SINCE − 24 h − 2 s is in it
        IN2: InboundBaseline(IN2, 1_000 + 2_000 + 4_000 + 8_000, 16_000),
        IN1: InboundBaseline(IN1, 0, sum(1 << k for k in inside)),
    }


# Demand clusters around the boundaries of a 2-hour window from CL_SINCE (30 min into
# hour CL_H0) to CL_UNTIL: partial [CL_SINCE, CL_H0 + 1 h), whole hour CL_H0 + 1,
# partial [CL_H0 + 2 h, CL_UNTIL). Members share their incoming channel, so each group
# below is one cluster.
CL_H0 = 600_000
CL_SINCE = CL_H0 * H + 30 * MIN
CL_UNTIL = CL_SINCE + 2 * H


def test_dedup_counts_only_a_clusters_growth_inside_the_window(store: Store) -> None:
    w, node = store.writer, store.node_id
    first_whole, tail = (CL_H0 + 1) * H, (CL_H0 + 2) * H
    members = [
        # c1 on A straddles the window start: it grows from 3 000 to 5 000 inside
        (A, IN1, CL_SINCE - 20 * S, 3_000),
        (A, IN1, CL_SINCE + 10 * S, 2_000),
        (A, IN1, CL_SINCE + 20 * S, 5_000),
        (A, IN1, CL_SINCE + 30 * S, 4_000),
        # c2 on B straddles the window start but does not grow inside
        (B, IN2, CL_SINCE - 5 * S, 9_000),
        (B, IN2, CL_SINCE + 5 * S, 1_000),
        # c3 on A: opens in the partial first hour, grows in the whole hour (rollups)
        (A, IN3, first_whole - 10 * S, 1_000),
        (A, IN3, first_whole + 10 * S, 6_000),
        # c4 on A: opens in the whole hour, grows in the partial last hour
        (A, IN4, tail - 10 * S, 1_000),
        (A, IN4, tail + 10 * S, 4_000),
        (A, IN4, tail + 20 * S, 2_000),
        # c5 on B straddles the window end: only its member inside counts
        (B, IN1, CL_UNTIL - 10 * S, 500),
        (B, IN1, CL_UNTIL + 10 * S, 8_000),
    ]
    session = w.open_session(node, CL_SINCE - 1 * H, "0.18.3-beta")
    events = [
        link_fail(htlc, ts, out, inc, 1_000_000 + htlc, fee, **LIQ)
        for htlc, (out, inc, ts, fee) in enumerate(members)
    ]
    make_ingestor(store).ingest(session, events, CL_UNTIL + 1 * H)
    with recorded(store.engine) as statements:
        inp = load(store, CL_UNTIL, 2)
    assert {
        c: (f.failures, f.clusters, f.missed_raw_msat, f.missed_dedup_msat)
        for c, f in inp.failures.items()
    } == {
        # (failures, clusters, raw, dedup) of c1 + c3 + c4, and of c2 + c5
        A: (3 + 2 + 3, 0 + 1 + 1, 11_000 + 7_000 + 7_000, 2_000 + 6_000 + 4_000),
        B: (1 + 1, 0 + 1, 1_000 + 500, 0 + 500),
    }
    assert inp.failures[A].first_failure_ns == CL_SINCE + 10 * S
    assert inp.failures[B].last_failure_ns == CL_UNTIL - 10 * S
    # node totals: every local failure, deduplicated and raw
    assert (inp.node_failures, inp.node_missed_msat, inp.node_missed_raw_msat) == (
        8 + 2,
        12_000 + 500,
        25_000 + 1_500,
    )
    # the clusters opened before a partial hour (c1, c2, c4) were looked up on the index
    if store.engine.dialect.name == "sqlite":  # SQLite's query plans
        assert full_scans(store.engine, statements) == []


@pytest.mark.engines("sqlite")  # SQLite's query plans
def test_long_windows_read_whole_hours_from_rollups(store: Store) -> None:
    fill(store)
    runs = {}
    for hours in (24, 720):
        with recorded(store.engine) as statements:
            inp = load(store, UNTIL, hours)
        runs[hours] = (statements, inp)
        assert full_scans(store.engine, statements) == []
        # raw rows only for the partial first and last hour, each a bounded index range
        raw = [plan for plan in plans(store.engine, statements) if "forward" in plan]
        assert raw
        assert all(
            re.search(
                r"USING (COVERING )?INDEX \w+ \(.*(timestamp_ns|first_seen_ns|resolved_ns)>\? AND",
                p,
            )
            or ROLLUPS.search(p)
            for p in raw
        ), raw
    # the cost does not grow with the window: the same failure and forward statements
    # (other bounds), raw rows for the partial first and last hour only
    counted = [
        [s for s, _ in statements if RAW_TABLES.search(s) or ROLLUPS.search(s)]
        for statements, _ in runs.values()
    ]
    assert counted[0] == counted[1]
    # per partial hour: the hourly rows of the channels whose failures of the hour all
    # lie in the window, then two statements for the others' raw rows (the sums per
    # channel pair and class, and the clusters' sums per channel)
    assert len([s for s in counted[0] if re.search(r"\bJOIN forward_attempts\b", s)]) == 4
    hour_rows = (
        r"^SELECT failure_channel_hourly.outgoing_channel_id AS out, failure_channel_hourly.clu"
    )
    assert len([s for s in counted[0] if re.search(hour_rows, s)]) == 2
    # and the month sees all the day saw
    assert runs[720][1].failures[A].failures == runs[24][1].failures[A].failures + 1


NO_ROLLUP = re.compile(r"outgoing_amt_msat IS NULL|forward_attempts.outcome = 5\b")
RAW_TABLES = re.compile(r"\b(FROM|JOIN) (forward_attempts|forwards|failure_clusters)\b")
ROLLUPS = re.compile(r"\w+_(rollups_hourly|channel_hourly|channel_6h|channel_daily)\b")


@contextlib.contextmanager
def recorded(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The statements (with their parameters) run on ``engine`` inside the block."""
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plans(engine: Engine, statements: list[tuple[str, Any]]) -> list[str]:
    """Every line of SQLite's query plan for each statement."""
    with engine.connect() as conn:
        return [
            row[3]
            for statement, parameters in statements
            if statement.lstrip().upper().startswith(("SELECT", "WITH"))
            for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        ]


def full_scans(engine: Engine, statements: list[tuple[str, Any]]) -> list[str]:
    """Plan lines that read a whole attempts, ledger, cluster or rollup table."""
    tables = r"(forward_attempts|forwards|failure_clusters|\w+_rollups_hourly|\w+_channel_\w+)"
    return [p for p in plans(engine, statements) if re.match(rf"SCAN {tables}\b", p)]


# -- exact windows against a brute-force count from the raw rows -----------------------


@pytest.mark.parametrize(
    ("gap_scale", "max_hours"),
    [(1, 30), (5, 200)],
    ids=["hours: some 60 h of data", "days: some 12 days, windows of whole days and hours"],
)
def test_random_windows_match_a_brute_force_count(
    store: Store, gap_scale: int, max_hours: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random failures and forwards; many windows, aligned or not, short or over days."""
    rng = random.Random(7)
    w, node = store.writer, store.node_id
    t0 = 700_000 * H
    outs, ins = (A, B, E, X), (IN1, IN2, IN3, IN4)
    amounts = (100_000, 200_000, 300_000, 400_000)
    kinds = (
        LIQ,
        {"wire": WireFailure.FEE_INSUFFICIENT},
        {"detail": FailureDetail.HTLC_EXCEEDS_MAX},
    )
    events, ts = [], t0
    out, inc, amount = A, IN1, amounts[0]
    for htlc in range(800):
        if rng.random() < 0.6:  # a retry of the last demand: mostly joins its cluster
            ts += rng.randrange(1, 40) * S
            if rng.random() < 0.5:
                inc = rng.choice(ins)  # same amount, another route
        else:
            ts += rng.choice((20 * S, 2 * MIN, 10 * MIN, 40 * MIN)) * gap_scale
            out, inc, amount = rng.choice(outs), rng.choice(ins), rng.choice(amounts)
        fee = rng.randrange(5_000)
        events.append(link_fail(htlc, ts, out, inc, amount, fee, **rng.choice(kinds)))
    session = w.open_session(node, t0, "0.18.3-beta")
    ingestor = make_ingestor(store)
    for i in range(0, len(events), 37):  # batches, in time order, as the daemon records
        batch = events[i : i + 37]
        ingestor.ingest(session, batch, batch[-1].timestamp_ns)
    end = ts
    ledger_times = sorted(rng.sample(range(t0 - 30 * H, end, 97 * S), 400))
    w.insert_forwards(
        node,
        [
            ForwardRecord(t, rng.choice(ins), rng.choice(outs), 1, 1, rng.randrange(1, 1_000))
            for t in ledger_times
        ],
    )
    truth = RawTruth.read(store)
    day = 24 * H
    windows = [(end + H, (end - t0) // H + 2), (t0 // H * H + 20 * H, 10)]  # all; hour-aligned
    windows += [(t0 // day * day + 3 * day, 48), (t0 // day * day + 3 * day + 5 * H, 53)]
    windows += [(end + H, 201), (end + 30 * MIN, 200)]  # amounts ranked in SQL
    windows += [(rng.randrange(t0 + 2 * H, end + H), rng.randint(1, max_hours)) for _ in range(30)]
    # ends, then starts, cutting through demand clusters
    windows += [(rng.choice(events).timestamp_ns + 1, rng.randint(1, max_hours)) for _ in range(15)]
    windows += [
        (rng.choice(events).timestamp_ns + hours * H, hours)
        for hours in (rng.randint(1, max_hours) for _ in range(15))
    ]
    ranked_in_sql = short_ranked_in_sql = 0
    # a channel's failures in a partial hour are summed from the attempts, or read as
    # its hourly row when all of them fall inside the window: count both ways
    paths: collections.Counter[str] = collections.Counter()
    for until, hours in windows:
        inp = load(store, until, hours, baseline_days=1)
        assert inp.failures == truth.failures(until - hours * H, until), (until, hours)
        assert inp.successes == truth.successes(until - hours * H, until)
        assert inp.inbound == truth.inbound(until - hours * H, until, 24 * H)
        assert inp.node_failures == sum(f.failures for f in inp.failures.values())
        paths.update(truth.partial_hour_paths(until - hours * H, until))
        # percentiles of the failed amounts: read and sorted (short windows) or ranked in
        # SQL (from RANK_IN_SQL_FROM_HOURS), the same nearest ranks either way
        # every third window ranks the amounts of channels with more than 3 in SQL,
        # however short the window
        many = 3 if (until // S) % 3 == 0 else RANK_IN_SQL_FROM_AMOUNTS
        monkeypatch.setattr(read_details, "RANK_IN_SQL_FROM_AMOUNTS", many)
        classes = (FailureClass.LIQUIDITY, FailureClass.FEE, FailureClass.MAX_HTLC)
        # each channel's failures of the class bound its amounts, as the summary counts them
        asked = [
            (out, cls, inp.failures[out].by_class.get(cls, ClassStats(0, 0)).failures)
            if out in inp.failures
            else (out, cls, 0)
            for out in outs
            for cls in classes
        ]
        facts = fetch(
            store,
            DetailRequest(until - hours * H, until, until, amounts_of(*asked), fee_channels=outs),
        )
        for out in outs:
            for cls in classes:
                amounts = truth.amounts(out, cls, until - hours * H, until)
                expected = tuple(percentile(amounts, p) for p in PERCENTS) if amounts else ()
                assert facts.amount_percentiles(out, cls, PERCENTS) == expected
            offers = truth.offers(out, FailureClass.FEE, until - hours * H, until)
            assert sorted(facts.fee_offers(out)) == sorted(offers)
        ranked_in_sql += hours >= RANK_IN_SQL_FROM_HOURS
        short_ranked_in_sql += hours < RANK_IN_SQL_FROM_HOURS and many == 3
    assert ranked_in_sql >= (5 if max_hours > RANK_IN_SQL_FROM_HOURS else 2)
    assert paths["raw"] >= 10
    assert paths["hour rows"] >= 10
    assert short_ranked_in_sql >= 5


PERCENTS = (1, 10, 50, 90, 99, 100)


@dataclasses.dataclass
class RawTruth:
    """Window figures counted one raw row at a time, straight from their definitions."""

    failures_rows: list[tuple[int, int, int, int, int, int]]  # out, in, class, ts, fee, cluster
    # out, class, ts, amount, fee, incoming channel
    amount_rows: list[tuple[int, int, int, int | None, int, int]]
    cluster_first: dict[int, int]
    ledger: list[tuple[int, int, int, int]]  # ts, in, out, fee

    @classmethod
    def read(cls, s: Store) -> RawTruth:
        with s.engine.connect() as conn:
            failures_rows = [
                (from_signed64(o), from_signed64(i), c, ts, fee, cl)
                for o, i, c, ts, fee, cl in conn.execute(
                    text(
                        "SELECT outgoing_channel_id, incoming_channel_id, failure_class,"
                        f" resolved_ns, missed_fee_msat, cluster_id FROM {ATTEMPTS_SCID}"
                        " WHERE outcome = :outcome"
                    ),
                    {"outcome": int(Outcome.FAILED_LOCAL)},
                )
            ]
            amount_rows = [
                (from_signed64(o), c, ts, amount, fee, from_signed64(i))
                for o, c, ts, amount, fee, i in conn.execute(
                    text(
                        "SELECT outgoing_channel_id, failure_class, resolved_ns,"
                        " outgoing_amt_msat, missed_fee_msat, incoming_channel_id"
                        f" FROM {ATTEMPTS_SCID} WHERE outcome = :outcome"
                    ),
                    {"outcome": int(Outcome.FAILED_LOCAL)},
                )
            ]
            cluster_first = dict(
                conn.execute(select(failure_clusters.c.id, failure_clusters.c.first_ns)).all()
            )
            ledger = [
                (ts, from_signed64(i), from_signed64(o), fee)
                for ts, i, o, fee in conn.execute(
                    select(
                        forwards.c.timestamp_ns,
                        forwards.c.chan_id_in,
                        forwards.c.chan_id_out,
                        forwards.c.fee_msat,
                    )
                )
            ]
        return cls(failures_rows, amount_rows, cluster_first, ledger)

    def amounts(self, out: int, cls: FailureClass, since: int, until: int) -> list[int]:
        return [a for _, a, _ in self.offers(out, cls, since, until)]

    def offers(
        self, out: int, cls: FailureClass, since: int, until: int
    ) -> list[tuple[int, int, int]]:
        """(missed fee, amount, incoming channel) of the failures with a known amount."""
        return [
            (fee, a, i)
            for o, c, ts, a, fee, i in self.amount_rows
            if o == out and c == cls and since <= ts < until and a is not None
        ]

    def partial_hour_paths(self, since: int, until: int) -> Counter[str]:
        """How the summary reads each channel's failures of the window's partial hours:
        its hourly row ("hour rows") when all of the hour's fall in the window, else the
        attempts ("raw")."""
        paths: Counter[str] = Counter()
        for lo, hi in ((since, -(-since // H) * H), (until // H * H, until)):
            if lo >= hi:
                continue
            hour = lo // H
            for out in {r[0] for r in self.failures_rows}:
                times = [r[3] for r in self.failures_rows if r[0] == out and r[3] // H == hour]
                inside = [t for t in times if lo <= t < hi]
                if inside:
                    paths["hour rows" if len(inside) == len(times) else "raw"] += 1
        return paths

    def failures(self, since: int, until: int) -> dict[int, ChannelFailures]:
        def whole_hour(ts: int) -> bool:
            return since <= ts // H * H and (ts // H + 1) * H <= until

        result = {}
        for out in sorted({row[0] for row in self.failures_rows}):
            mine = [r for r in self.failures_rows if r[0] == out]
            inside = [r for r in mine if since <= r[3] < until]
            if not inside:
                continue
            by_class: dict[FailureClass, ClassStats] = {}
            for _, _, c, _, fee, _ in inside:
                old = by_class.get(FailureClass(c), ClassStats(0, 0))
                by_class[FailureClass(c)] = ClassStats(old.failures + 1, old.missed_msat + fee)

            clusters = {r[5] for r in inside}
            result[out] = ChannelFailures(
                chan_id=out,
                failures=len(inside),
                clusters=sum(since <= self.cluster_first[c] < until for c in clusters),
                missed_raw_msat=sum(r[4] for r in inside),
                # a cluster's growth in the window: its largest fee by until − by since
                missed_dedup_msat=sum(
                    self.top(mine, c, until) - self.top(mine, c, since) for c in clusters
                ),
                incoming_channels=min(len({r[1] for r in inside}), INCOMING_CAP),
                first_failure_ns=min(r[3] // H * H if whole_hour(r[3]) else r[3] for r in inside),
                last_failure_ns=max(
                    (r[3] // H + 1) * H - 1 if whole_hour(r[3]) else r[3] for r in inside
                ),
                by_class=dict(sorted(by_class.items())),
            )
        return result

    @staticmethod
    def top(rows: list[tuple[int, int, int, int, int, int]], cluster: int, before: int) -> int:
        """The largest missed fee of the cluster's failures before ``before`` (0: none)."""
        return max((r[4] for r in rows if r[5] == cluster and r[3] < before), default=0)

    def successes(self, since: int, until: int) -> dict[int, int]:
        return dict(Counter(o for ts, _, o, _ in self.ledger if since <= ts < until))

    def inbound(self, since: int, until: int, baseline_ns: int) -> dict[int, InboundBaseline]:
        base: Counter[int] = Counter()
        window: Counter[int] = Counter()
        for ts, i, _, fee in self.ledger:
            if since - baseline_ns <= ts < since:
                base[i] += fee
            elif since <= ts < until:
                window[i] += fee
        return {c: InboundBaseline(c, base[c], window[c]) for c in base.keys() | window.keys()}


# -- settings --------------------------------------------------------------------------


def test_analysis_section_defaults_are_the_analysis_defaults() -> None:
    settings = Settings()
    assert analysis_settings(settings) == AnalysisSettings()
    assert (settings.analysis.interval_s, settings.analysis.window_hours) == (600, 24)


def test_analysis_section_overrides_reach_the_thresholds(tmp_path: Path) -> None:
    path = tmp_path / "lnflow.toml"
    path.write_text("[analysis]\nmin_failure_count = 5\nmax_cost_share = 0.5\n")
    settings = analysis_settings(load_settings(path))
    assert settings == AnalysisSettings(min_failure_count=5, max_cost_share=0.5)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("window_hours = 0", "analysis.window_hours"),
        ("max_cost_share = 1.5", "analysis.max_cost_share"),
        ("interval_s = 1", "analysis.interval_s"),
        ("min_missed_sats = -1", "analysis.min_missed_sats"),
    ],
    ids=["window", "share", "interval", "negative"],
)
def test_bad_analysis_value_is_one_line_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "lnflow.toml"
    path.write_text(f"[analysis]\n{text}\n")
    with pytest.raises(ConfigError, match=f"bad value for '{key}'"):
        load_settings(path)


def test_collector_pause_nests_and_keeps_a_collector_that_was_off() -> None:
    assert gc.isenabled()
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still runs
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("an analysis that fails")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()


def test_compiled_once_statements_answer_as_executed_ones(store: Store) -> None:
    fill(store)
    statement = (
        select(channels.c.chan_id, channels.c.peer_alias.label("alias"))
        .where(channels.c.node_id == bindparam("node"))
        .order_by(channels.c.chan_id)
        .limit(3)
    )
    with store.engine.connect() as conn:
        expected = conn.execute(statement, {"node": store.node_id}).all()
        for _ in range(2):  # compiled the first time, reused the second
            found = rows(conn, statement, {"node": store.node_id})
            assert found == expected
            assert [row.alias for row in found] == [row.alias for row in expected]
        assert rows(conn, statement, {"node": store.node_id + 1}) == []
