"""Our fee history as the analysis reads it: the policy in force at the history's start,
then each change, found in SQL (lnflow.store.read.details) on histories that change
back and forth, change the base fee alone, lose the policy for a while and record two
samples at the same time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import StoreAt
from sqlalchemy import Engine, event, select

from lnflow.analysis.model import DetailRequest, FeePoint
from lnflow.domain import ChannelInfo, ChannelSample, NodeInfo, RoutingPolicy, to_signed64
from lnflow.store.channel_ids import alias_map
from lnflow.store.db import open_engine
from lnflow.store.read import fetch_details
from lnflow.store.schema import channel_samples
from lnflow.store.writer import NS_PER_HOUR, StoreWriter

pytestmark = pytest.mark.engines("sqlite", "postgresql")

H = NS_PER_HOUR
START = 490_000 * H  # the history's start (the window's start less the gossip grace)
UNTIL = START + 30 * H
NODE = NodeInfo("02" + "aa" * 32, "alice", "0.18.3-beta", "regtest", 1, True)
A = (800_000 << 40) | (1 << 16) | 1  # a policy before the start, then many changes
B = (800_001 << 40) | (2 << 16)  # no policy ever known
G = (800_002 << 40) | (3 << 16)  # first policy after the start, two samples at that time
P0, P1, P2, P3, P4 = ((1_000, 100), (1_000, 200), (0, 300), (0, 400), (5, 400))


def sample(chan: int, ours: tuple[int, int] | None) -> ChannelSample:
    info = ChannelInfo(
        chan_id=chan,
        remote_pubkey=f"03{chan % 251:02x}" + "bb" * 31,
        channel_point=f"{chan:064x}:0",
        capacity_sat=1_000_000,
        local_balance_sat=500_000,
        remote_balance_sat=480_000,
        local_reserve_sat=10_000,
        remote_reserve_sat=10_000,
        active=True,
        private=False,
        peer_alias="",
        uptime_s=0,
        lifetime_s=0,
    )
    policy = None if ours is None else RoutingPolicy(*ours, 80, 1_000, 990_000_000, False, 0)
    return ChannelSample(info=info, ours=policy, peer=None, peer_alias="")


# (hours from START, [(channel, policy)]), recorded in this order; two entries at the
# same time are two samples of that time
HISTORY: list[tuple[float, list[tuple[int, tuple[int, int] | None]]]] = [
    (-10, [(A, P1), (B, None)]),
    (-8, [(A, P0), (B, None)]),  # in force at the start
    (-1, [(A, None), (B, None)]),  # no policy known: not a point, not a change
    (1, [(A, P1), (B, None)]),
    (2, [(A, P1), (B, None), (G, P2)]),
    (2, [(A, P1), (G, P3)]),  # G: a second sample of the same time
    (3, [(A, P0), (G, P3)]),  # A: back to P0
    (4, [(A, P2), (G, P3)]),
    (4, [(A, P3), (G, P2)]),  # a change between two samples of the same time
    (5, [(A, P3), (G, P2)]),
    (6, [(A, None), (G, None)]),
    (7, [(A, P3), (G, P2)]),  # the same policy after a sample without one
    (8, [(A, P4), (G, P2)]),  # the base fee alone
    (9, [(A, P4), (G, P2)]),
    (31, [(A, P0), (G, P1)]),  # after the history's end
]


def point(hours: float, fee: tuple[int, int]) -> FeePoint:
    return FeePoint(START + int(hours * H), *fee)


def every_change(engine: Engine, node_id: int, chan: int) -> tuple[FeePoint, ...]:
    """The history from every sample: the one in force at START (else the first after
    it), then each sample whose policy differs from the sample before."""
    s = channel_samples
    with engine.connect() as conn:
        found = conn.execute(
            select(s.c.ts_ns, s.c.fee_base_msat, s.c.fee_rate_ppm)
            .where(s.c.node_id == node_id)
            .where(s.c.chan_id == to_signed64(chan))
            .where(s.c.ts_ns <= UNTIL, s.c.fee_base_msat.is_not(None))
            .where(s.c.fee_rate_ppm.is_not(None))
            .order_by(s.c.ts_ns, s.c.id)
        ).all()
    start = max((ts for ts, _, _ in found if ts <= START), default=START)
    points: list[FeePoint] = []
    for ts, base, rate in found:
        if ts >= start and (
            not points or (points[-1].fee_base_msat, points[-1].fee_rate_ppm) != (base, rate)
        ):
            points.append(FeePoint(ts, base, rate))
    return tuple(points)


@pytest.fixture
def engine(store_at: StoreAt) -> Iterator[tuple[Engine, int]]:
    engine = open_engine(store_at("s.db"))
    writer = StoreWriter(engine)
    node_id = writer.upsert_node(NODE, 1)
    for hours, taken in HISTORY:
        writer.record_channel_samples(
            node_id, START + int(hours * H), [sample(chan, ours) for chan, ours in taken]
        )
    yield engine, node_id
    engine.dispose()


def test_the_history_holds_each_change_and_nothing_else(engine: tuple[Engine, int]) -> None:
    store, node_id = engine
    asked = (A, B, G)
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(store, "before_cursor_execute", record)
    try:
        with store.connect() as conn:
            facts = fetch_details(
                conn,
                node_id,
                DetailRequest(START + 6 * H, UNTIL, START, fee_channels=asked),
                alias_map(conn, node_id),
            )
    finally:
        event.remove(store, "before_cursor_execute", record)
    assert facts.fee_history(A) == (
        point(-8, P0),
        point(1, P1),
        point(3, P0),
        point(4, P2),
        point(4, P3),
        point(8, P4),
    )
    assert facts.fee_history(B) == ()
    assert facts.fee_history(G) == (point(2, P2), point(2, P3), point(4, P2))
    for chan in asked:
        assert facts.fee_history(chan) == every_change(store, node_id, chan)
    assert len([st for st in statements if "channel_samples" in st]) == 1
