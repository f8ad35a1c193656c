"""A real store (real migrations, the recorder's ingest path) for the policy read tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

from samples import balance_sample
from sqlalchemy import Connection, Engine

from lnflow.domain import (
    EventKind,
    EventType,
    FailureDetail,
    ForwardRecord,
    HtlcEvent,
    NodeInfo,
    RoutingPolicy,
    WireFailure,
)
from lnflow.store.db import open_engine
from lnflow.store.engines import StoreLocation
from lnflow.store.ingest import Ingestor
from lnflow.store.writer import NS_PER_HOUR, StoreWriter

S = 1_000_000_000
H = NS_PER_HOUR
NODE = NodeInfo("02" + "aa" * 32, "alice", "0.18.3-beta", "regtest", 1, True)
T0 = 1_760_000_000 * S  # a whole hour
A = (850_000 << 40) | (1 << 16)  # the channel measured
B = (851_000 << 40) | (2 << 16)  # another channel of ours
IN1, IN2 = 860_000 << 40, 870_000 << 40

FEE = {"wire": int(WireFailure.FEE_INSUFFICIENT), "detail": int(FailureDetail.NO_DETAIL)}
MAX_HTLC = {
    "wire": int(WireFailure.TEMPORARY_CHANNEL_FAILURE),
    "detail": int(FailureDetail.HTLC_EXCEEDS_MAX),
}
LIQUIDITY = {
    "wire": int(WireFailure.TEMPORARY_CHANNEL_FAILURE),
    "detail": int(FailureDetail.INSUFFICIENT_BALANCE),
}


@dataclasses.dataclass
class Store:
    engine: Engine
    writer: StoreWriter
    node_id: int
    session: int
    ingestor: Ingestor
    _htlc: int = 0

    def fail(
        self,
        ts_ns: int,
        *,
        out: int = A,
        inc: int = IN1,
        amount: int = 1_000_000,
        fee: int = 100,
        how: dict[str, int] = FEE,
    ) -> None:
        """A local failure of a forward of ``amount`` msat offering ``fee`` msat."""
        self._htlc += 1
        ev = HtlcEvent(
            timestamp_ns=ts_ns,
            kind=EventKind.LINK_FAIL,
            event_type=int(EventType.FORWARD),
            incoming_channel_id=inc,
            incoming_htlc_id=self._htlc,
            outgoing_channel_id=out,
            outgoing_htlc_id=0,
            incoming_amt_msat=amount + fee,
            outgoing_amt_msat=amount,
            wire_failure=how["wire"],
            failure_detail=how["detail"],
        )
        self.ingestor.ingest(self.session, [ev], ts_ns)

    def forward(
        self, ts_ns: int, *, out: int = A, inc: int = IN1, amount: int = 1_000_000, fee: int = 100
    ) -> None:
        self.writer.insert_forwards(
            self.node_id, [ForwardRecord(ts_ns, inc, out, amount + fee, amount, fee)]
        )

    def sample(
        self,
        ts_ns: int,
        *,
        chan: int = A,
        local_sat: int = 5_000_000,
        base: int = 1_000,
        ppm: int = 1_000,
        max_htlc: int = 990_000_000,
        aliases: tuple[int, ...] = (),
    ) -> None:
        ours = RoutingPolicy(base, ppm, 80, 1_000, max_htlc, False, 0)
        sample = balance_sample(chan, local_sat, 10_000_000 - local_sat, ours=ours, aliases=aliases)
        self.writer.record_channel_samples(self.node_id, ts_ns, [sample])

    def heartbeat(self, ts_ns: int) -> None:
        self.writer.daemon_started(ts_ns, 30)
        self.writer.daemon_state(ts_ns, node_id=self.node_id)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn


@contextmanager
def make_store(path: StoreLocation) -> Iterator[Store]:
    """A store at ``path``: a SQLite file, or a PostgreSQL database (conftest's store_at)."""
    engine = open_engine(path)
    writer = StoreWriter(engine)
    node_id = writer.upsert_node(NODE, 1)
    session = writer.open_session(node_id, T0 - 100 * H, "0.18.3-beta")
    ingestor = Ingestor(
        engine,
        node_id,
        attempt_timeout_ns=600 * S,
        attempt_linger_ns=10 * S,
        dedup_window_ns=60 * S,
        cluster_max_span_ns=600 * S,
    )
    try:
        yield Store(engine, writer, node_id, session, ingestor)
    finally:
        engine.dispose()
