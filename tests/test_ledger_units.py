"""Pure parts of the ledger: the page conversion (keys, rejects) and the job guard."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from lnflow.errors import LndRpcError
from lnflow.lnd import convert
from lnflow.lnd._proto import lightning_pb2
from lnflow.recording import guarded

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
