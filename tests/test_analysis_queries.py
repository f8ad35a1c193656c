"""Building the analysis input from a real SQLite store filled the way the daemon fills it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import (
    AnalysisInput,
    AnalysisSettings,
    ChannelFailures,
    ChannelState,
    ClassStats,
    FailureDetails,
    FeePoint,
    Gap,
    InboundBaseline,
)
from lnflow.config import Settings, analysis_settings, load_settings
from lnflow.domain import (
    ChannelInfo,
    ChannelSample,
    EventKind,
    EventType,
    FailureDetail,
    ForwardRecord,
    HtlcEvent,
    NodeInfo,
    RoutingPolicy,
    WireFailure,
    to_signed64,
)
from lnflow.errors import ConfigError
from lnflow.store.analysis_queries import (
    StoreFailureDetails,
    load_analysis_input,
    node_id_of,
    window_for,
)
from lnflow.store.db import open_engine
from lnflow.store.ingest import Ingestor
from lnflow.store.schema import channels
from lnflow.store.writer import NS_PER_HOUR, StoreWriter

S = 1_000_000_000
MIN = 60 * S
H = NS_PER_HOUR
NODE = NodeInfo("02" + "aa" * 32, "alice", "0.18.3-beta", "regtest", 1, True)

# The window: 24 clock hours ending 40 minutes into UNTIL_HOUR.
UNTIL_HOUR = 490_000
UNTIL = UNTIL_HOUR * H + 40 * MIN
SINCE = (UNTIL_HOUR - 23) * H

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


def link_fail(
    htlc: int,
    ts_ns: int,
    out: int,
    inc: int,
    amt_out: int,
    fee: int,
    *,
    wire: WireFailure = WireFailure.TEMPORARY_CHANNEL_FAILURE,
    detail: FailureDetail = FailureDetail.NO_DETAIL,
) -> HtlcEvent:
    return HtlcEvent(
        timestamp_ns=ts_ns,
        kind=EventKind.LINK_FAIL,
        event_type=int(EventType.FORWARD),
        incoming_channel_id=inc,
        incoming_htlc_id=htlc,
        outgoing_channel_id=out,
        outgoing_htlc_id=0,
        incoming_amt_msat=amt_out + fee,
        outgoing_amt_msat=amt_out,
        wire_failure=int(wire),
        failure_detail=int(detail),
    )


LIQ = {"detail": FailureDetail.INSUFFICIENT_BALANCE}


@dataclasses.dataclass
class Store:
    engine: Engine
    writer: StoreWriter
    node_id: int


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = open_engine(tmp_path / "s.db")
    writer = StoreWriter(engine)
    yield Store(engine, writer, writer.upsert_node(NODE, 1))
    engine.dispose()


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
                A, 600_000, 400_000, ours=policy(0, 200, 5_000_000), uptime=10_000, lifetime=19_000
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
    ingestor = Ingestor(
        s.engine,
        node,
        attempt_timeout_ns=600 * S,
        attempt_linger_ns=10 * S,
        dedup_window_ns=60 * S,
        cluster_max_span_ns=600 * S,
    )
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


def expected_input(details: FailureDetails) -> AnalysisInput:
    """What ``fill`` must give (``details`` is checked by its own test)."""

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

    return AnalysisInput(
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
                min_local_ratio=0.3,
                fee_history=(
                    FeePoint(SINCE - 2 * H, 1_000, 100),  # inside gossip_grace_h before since
                    FeePoint(SINCE + 1 * H, 1_000, 200),
                    FeePoint(SINCE + 5 * H, 1_000, 200),
                    FeePoint(UNTIL - 10 * MIN, 0, 200),
                ),
                uptime_ratio=0.5,  # (10 000 − 1 000) / (19 000 − 1 000)
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
                min_local_ratio=0.9,
                fee_history=(FeePoint(SINCE + 1 * H, 0, 50),),
                uptime_ratio=None,  # one sample: no span to measure
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
                min_local_ratio=0.0,
                fee_history=(),
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
                incoming_channels=4,
                first_failure_ns=(SINCE // H + 1) * H,
                last_failure_ns=(UNTIL_HOUR + 1) * H - 1,
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
                first_failure_ns=SINCE + 3 * H,
                last_failure_ns=SINCE + 4 * H - 1,
                by_class={FailureClass.MAX_HTLC: ClassStats(1, 4_000)},
            ),
            X: ChannelFailures(
                chan_id=X,
                failures=1,
                clusters=1,
                missed_raw_msat=500,
                missed_dedup_msat=500,
                incoming_channels=1,
                first_failure_ns=SINCE + 2 * H,
                last_failure_ns=SINCE + 3 * H - 1,
                by_class={FailureClass.AVAILABILITY: ClassStats(1, 500)},
            ),
        },
        successes={A: 2, E: 1},
        inbound={
            IN1: InboundBaseline(IN1, 500, 30),
            E: InboundBaseline(E, 1_000, 0),
            B: InboundBaseline(B, 0, 30),
        },
        details=details,
        gaps=(Gap(SINCE + 2 * H, SINCE + 3 * H),),
        node_failures=7,
        node_missed_msat=4_100 + 4_000 + 500,
    )


# -- the window ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("until_ns", "hours", "since_ns"),
    [
        (10 * H, 1, 9 * H),  # on an hour boundary: the hour that just ended
        (10 * H + 1, 1, 10 * H),  # one ns into hour 10: hour 10 only
        (10 * H + 20 * MIN, 2, 9 * H),  # 10:20, two hours: 09:00 onwards
        (10 * H + 20 * MIN, 24, -13 * H),
    ],
    ids=["boundary", "just-after", "mid-hour", "day"],
)
def test_window_is_whole_clock_hours_including_the_current_one(
    until_ns: int, hours: int, since_ns: int
) -> None:
    assert window_for(until_ns, hours) == (since_ns, until_ns)


def test_window_needs_an_hour() -> None:
    with pytest.raises(ValueError, match="hours"):
        window_for(10 * H, 0)


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


def test_empty_store_has_no_node(tmp_path: Path) -> None:
    engine = open_engine(tmp_path / "s.db")
    with engine.connect() as conn:
        assert node_id_of(conn) is None
    engine.dispose()


# -- the input -------------------------------------------------------------------------


def test_input_equals_the_hand_written_one(store: Store) -> None:
    fill(store)
    with store.engine.connect() as conn:
        inp = load_analysis_input(
            conn, store.node_id, until_ns=UNTIL, hours=24, settings=AnalysisSettings()
        )
    assert isinstance(inp.details, StoreFailureDetails)
    assert inp == expected_input(inp.details)


def test_empty_store_gives_an_empty_input(store: Store) -> None:
    with store.engine.connect() as conn:
        inp = load_analysis_input(
            conn, store.node_id, until_ns=UNTIL, hours=3, settings=AnalysisSettings()
        )
    assert (inp.since_ns, inp.until_ns, inp.hours) == ((UNTIL_HOUR - 2) * H, UNTIL, 3)
    assert not (inp.channels or inp.failures or inp.successes or inp.inbound or inp.gaps)
    assert (inp.node_failures, inp.node_missed_msat) == (0, 0)


def test_settings_shape_fee_history_and_baseline(store: Store) -> None:
    fill(store)
    settings = AnalysisSettings(gossip_grace_h=0, baseline_days=1)
    with store.engine.connect() as conn:
        inp = load_analysis_input(conn, store.node_id, until_ns=UNTIL, hours=24, settings=settings)
    assert inp.channels[A].fee_history[0] == FeePoint(SINCE + 1 * H, 1_000, 200)
    assert inp.inbound == {
        IN1: InboundBaseline(IN1, 500, 30),  # a day before since: still in
        B: InboundBaseline(B, 0, 30),
    }


# -- raw failure details ---------------------------------------------------------------


def test_details_are_queried_only_when_asked_and_once(store: Store) -> None:
    fill(store)
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        with store.engine.connect() as conn:
            inp = load_analysis_input(
                conn, store.node_id, until_ns=UNTIL, hours=24, settings=AnalysisSettings()
            )
            assert not [s for s in statements if "forward_attempts" in s]
            details = inp.details
            assert details.amounts_msat(A, FailureClass.LIQUIDITY) == (
                1_000_000,
                1_500_000,
                2_000_000,
            )  # the failure before the window is left out
            assert details.amounts_msat(A, FailureClass.LIQUIDITY) == (
                1_000_000,
                1_500_000,
                2_000_000,
            )
            assert details.amounts_msat(A, FailureClass.OTHER) == ()  # amount unknown
            assert details.amounts_msat(E, FailureClass.MAX_HTLC) == (3_000_000,)
            assert details.amounts_msat(B, FailureClass.LIQUIDITY) == ()
            assert details.fee_offers(A) == ((100, 400_000),)
            assert details.fee_offers(A) == ((100, 400_000),)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    # one query per distinct question, on the (outgoing channel, time) index
    assert len([s for s in statements if "forward_attempts" in s]) == 5


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
