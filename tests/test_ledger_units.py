"""Pure parts of the ledger: the page conversion (keys, rejects) and the job guard."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from lnflow.domain import ForwardingPage, ForwardRecord, NodeInfo
from lnflow.errors import LndRpcError
from lnflow.lnd import convert
from lnflow.lnd._proto import lightning_pb2
from lnflow.recording import LedgerSync, guarded
from lnflow.recording.storethread import StoreThread
from lnflow.sim.state import ForwardLog
from lnflow.store.db import open_engine
from lnflow.store.engines import StoreLocation
from lnflow.store.schema import forwards
from lnflow.store.writer import StoreWriter

NS = 1_000_000_000
S = 1_600_000_000


def page(
    *records: tuple[int, int, int], start: int = 0, offset: int = 0
) -> tuple[list[int], list[int], int, int]:
    """(keys, rejected amounts, last second, its count) of a page of (s, ns, amt_in) records."""
    resp = lightning_pb2.ForwardingHistoryResponse(
        forwarding_events=[
            lightning_pb2.ForwardingEvent(
                timestamp=s, timestamp_ns=ns, amt_in_msat=amt, amt_out_msat=1, fee_msat=amt - 1
            )
            for s, ns, amt in records
        ],
        last_offset_index=offset + len(records),
    )
    got = convert.forwarding_page(resp, start_time_s=start, index_offset=offset)
    assert got.size == len(records)
    return (
        [e.timestamp_ns for e in got.events],
        [r.amt_in_msat for r in got.rejected],
        got.last_second_s,
        got.last_second_count,
    )


@pytest.mark.parametrize(
    ("records", "start", "offset", "expected"),
    [
        pytest.param(
            [(S, S * NS + 7, 5), (S + 1, (S + 1) * NS, 5)],
            S,
            0,
            ([S * NS + 7, (S + 1) * NS], [], S + 1, 1),
            id="lnd>=0.13: its ns keys",
        ),
        pytest.param(
            [(S, 0, 5), (S, 0, 5), (S + 2, 0, 5), (S + 2, 0, 5), (S + 2, 0, 5)],
            S,
            0,
            ([S * NS, S * NS + 1, (S + 2) * NS, (S + 2) * NS + 1, (S + 2) * NS + 2], [], S + 2, 3),
            id="lnd<0.13: second plus rank",
        ),
        pytest.param(
            [(S, 0, 5), (S, 0, 5), (S + 1, 0, 5)],
            S,
            100,
            ([S * NS + 100, S * NS + 101, (S + 1) * NS], [], S + 1, 1),
            id="lnd<0.13: offset into the start second continues its ranks",
        ),
        pytest.param(
            [(S + 3, 0, 5), (S + 3, 0, 5)],
            S,
            4,
            ([(S + 3) * NS, (S + 3) * NS + 1], [], S + 3, 2),
            id="lnd<0.13: offset used up by the start second",
        ),
        pytest.param(
            [(S, 0, 5), (S, 0, 2**63), (S, 0, 5)],
            S,
            0,
            ([S * NS, S * NS + 2], [2**63], S, 3),
            id="rejected record keeps its rank",
        ),
        pytest.param(
            [(S, S * NS, 2**63 - 1), (S, S * NS + 1, 2**64 - 1)],
            S,
            0,
            ([S * NS], [2**64 - 1], S, 2),
            id="int64 max is kept, beyond it is not",
        ),
        pytest.param([], S, 0, ([], [], 0, 0), id="empty"),
    ],
)
def test_forwarding_page_keys(
    records: list[tuple[int, int, int]],
    start: int,
    offset: int,
    expected: tuple[list[int], list[int], int, int],
) -> None:
    assert page(*records, start=start, offset=offset) == expected


def test_forwarding_page_rejects_every_out_of_range_field() -> None:
    big = 2**63
    cases = {
        "timestamp_ns": lightning_pb2.ForwardingEvent(timestamp_ns=big),
        "fee_msat": lightning_pb2.ForwardingEvent(timestamp_ns=1, fee_msat=big),
        "amt_out_msat": lightning_pb2.ForwardingEvent(timestamp_ns=1, amt_out_msat=big),
        "incoming_htlc_id": lightning_pb2.ForwardingEvent(timestamp_ns=1, incoming_htlc_id=big),
        "outgoing_htlc_id": lightning_pb2.ForwardingEvent(timestamp_ns=1, outgoing_htlc_id=big),
        "amt_in_msat": lightning_pb2.ForwardingEvent(timestamp=1, amt_in=big // 1000 + 1),
    }
    for name, ev in cases.items():
        resp = lightning_pb2.ForwardingHistoryResponse(forwarding_events=[ev])
        got = convert.forwarding_page(resp)
        assert got.events == ()
        assert got.rejected[0].reason.startswith(f"{name} "), name
    alias_scid = lightning_pb2.ForwardingEvent(timestamp_ns=1, chan_id_in=2**64 - 1)
    resp = lightning_pb2.ForwardingHistoryResponse(forwarding_events=[alias_scid])
    assert len(convert.forwarding_page(resp).events) == 1  # SCIDs are mapped, not rejected


def test_guarded_job_survives_a_bug_logs_it_once_and_runs_again() -> None:
    runs: list[str] = []
    outcomes = iter(["bug", "bug", "lnd", "ok", "bug"])

    async def job() -> None:
        outcome = next(outcomes)
        runs.append(outcome)
        if outcome == "bug":
            raise KeyError("poisoned")
        if outcome == "lnd":
            raise LndRpcError("lnd is away")

    async def body() -> None:
        run = guarded("ledger_sync", job)
        for _ in range(5):
            await run()

    with capture_logs() as logs:
        asyncio.run(body())
    assert runs == ["bug", "bug", "lnd", "ok", "bug"]
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("job_crashed", "error"),
        ("job_recovered", "info"),
        ("job_crashed", "error"),
    ]
    assert logs[0]["exc_info"] is True and logs[0]["job"] == "ledger_sync"


class WholeSecondLnd:
    """lnd < 0.13 at the network edge: its forwarding log (the simulator's, which walks
    offsets as lnd does), whole seconds on the wire, converted by the real adapter."""

    def __init__(self, log: ForwardLog) -> None:
        self.log = log

    async def forwarding_history(
        self,
        *,
        start_time_s: int,
        end_time_s: int = 0,
        index_offset: int = 0,
        num_max_events: int = 10_000,
    ) -> ForwardingPage:
        records = self.log.query(
            start_ns=start_time_s * NS,
            end_ns=end_time_s * NS if end_time_s else 1 << 62,
            offset=index_offset,
            limit=num_max_events,
        )
        resp = lightning_pb2.ForwardingHistoryResponse(
            forwarding_events=[
                lightning_pb2.ForwardingEvent(
                    timestamp=r.timestamp_ns // NS,
                    chan_id_in=r.chan_id_in,
                    chan_id_out=r.chan_id_out,
                    amt_in_msat=r.amt_in_msat,
                    amt_out_msat=r.amt_out_msat,
                    fee_msat=r.fee_msat,
                )
                for r in records
            ],
            last_offset_index=index_offset + len(records),
        )
        return convert.forwarding_page(resp, start_time_s=start_time_s, index_offset=index_offset)


async def sync(lnd: WholeSecondLnd, writer: StoreWriter, node_id: int, page: int) -> None:
    store = StoreThread(writer)
    try:
        await asyncio.wait_for(LedgerSync(lnd, store, node_id, page_size=page).run(), 60)
    finally:
        store.close()


@pytest.mark.engines("sqlite", "postgresql")
def test_whole_second_keys_do_not_depend_on_page_size_or_sync_points(
    store_at: Callable[[str], StoreLocation],
) -> None:
    """Random logs of many forwards per second, synced in two passes at random points with
    random page sizes: every forward stored once, keyed second + rank in lnd's order."""
    engine = open_engine(store_at("s.db"))
    writer = StoreWriter(engine)
    rng = random.Random(10)
    for case in range(40):
        node = NodeInfo(f"02{case:064x}", "n", "0.12.1-beta", "regtest", 1, True)
        node_id = writer.upsert_node(node, 1)
        seconds = sorted(rng.sample(range(S, S + 40), rng.randint(1, 8)))
        stamps = sorted(
            s * NS + rng.randrange(NS) for s in seconds for _ in range(rng.randint(1, 30))
        )
        split = rng.randint(1, len(stamps))  # the first pass sees the log up to here
        page = rng.randint(1, 12)
        log = ForwardLog()
        lnd = WholeSecondLnd(log)

        for i, ts in enumerate(stamps[:split]):
            log.append(ForwardRecord(ts, 1, 2, 2_000_000 + i, 1_000_000, 1_000_000 + i))
        asyncio.run(sync(lnd, writer, node_id, page))
        for i, ts in enumerate(stamps[split:], start=split):
            log.append(ForwardRecord(ts, 1, 2, 2_000_000 + i, 1_000_000, 1_000_000 + i))
        asyncio.run(sync(lnd, writer, node_id, page))
        asyncio.run(sync(lnd, writer, node_id, page))

        expected, rank = [], Counter[int]()
        for i, ts in enumerate(stamps):
            second = ts // NS
            expected.append((second * NS + rank[second], 2_000_000 + i))
            rank[second] += 1
        with engine.connect() as conn:
            stored = conn.execute(
                select(forwards.c.timestamp_ns, forwards.c.amt_in_msat)
                .where(forwards.c.node_id == node_id)
                .order_by(forwards.c.timestamp_ns)
            ).all()
        assert [tuple(r) for r in stored] == expected, (case, page, split)
    engine.dispose()
