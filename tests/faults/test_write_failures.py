"""Store writes failing: disk full, a store that cannot be written, values it cannot hold.

A failed write is held and retried, never dropped; the retry stores exactly what a
first-time success would have; past ``recorder.max_held_events`` the daemon stops with
one line. Disk full is made without root by ``RLIMIT_FSIZE`` (writes past the limit
fail with EFBIG; Python ignores SIGXFSZ, so SQLite reports "disk I/O error"); raising
the limit again is the space coming back. docs/reliability.md quotes these figures.
"""

from __future__ import annotations

import contextlib
import resource
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from lnflow.domain import EventKind, EventType, FailureDetail, HtlcEvent, NodeInfo, WireFailure
from lnflow.store.db import open_engine
from lnflow.store.ingest import Ingestor
from lnflow.store.writer import StoreWriter

S = 1_000_000_000
T0 = 1_700_000_000 * S
NODE = NodeInfo("03" + "cd" * 32, "bob", "0.18.3-beta", "regtest", 1, True)
A, B, C = 800_000 << 40, 800_001 << 40, 800_002 << 40

# --------------------------------------------------------------------------- ingest level


def _event(kind: EventKind, inc: int, htlc: int, t_s: float, **kw: Any) -> HtlcEvent:
    final = kind is EventKind.FINAL
    return HtlcEvent(
        timestamp_ns=T0 + int(t_s * S),
        kind=kind,
        event_type=int(EventType.UNKNOWN if final else EventType.FORWARD),
        incoming_channel_id=inc,
        incoming_htlc_id=htlc,
        outgoing_channel_id=0 if final else kw.pop("out", C),
        outgoing_htlc_id=0 if final else kw.pop("out_htlc", 0),
        **kw,
    )


def _link_fail(inc: int, htlc: int, t_s: float, amt: int, fee: int) -> HtlcEvent:
    return _event(
        EventKind.LINK_FAIL,
        inc,
        htlc,
        t_s,
        incoming_amt_msat=amt + fee,
        outgoing_amt_msat=amt,
        wire_failure=int(WireFailure.TEMPORARY_CHANNEL_FAILURE),
        failure_detail=int(FailureDetail.INSUFFICIENT_BALANCE),
    )


def _batches() -> list[tuple[list[HtlcEvent], int]]:
    """Batches whose results depend on the in-memory state carried between them:
    clusters joined across batches, attempts resolved in a later batch, expiry."""
    fwd = {"incoming_amt_msat": 1_001_000, "outgoing_amt_msat": 1_000_000}
    return [
        (
            [
                _link_fail(A, 1, 0, 500_000, 2_000),
                _event(EventKind.FORWARD, A, 2, 0.5, out_htlc=7, **fwd),
                _event(EventKind.FORWARD, B, 3, 0.6, out_htlc=8, **fwd),
            ],
            T0 + 1 * S,
        ),
        (
            [
                _link_fail(A, 4, 2, 500_000, 3_000),  # joins the cluster of htlc 1
                _link_fail(B, 5, 3, 500_000, 1_000),  # same amount: joins it too
                _event(EventKind.SETTLE, A, 2, 2.5, out_htlc=7),
                _event(EventKind.FINAL, A, 1, 2.6, settled=False, offchain=True),
            ],
            T0 + 3 * S,
        ),
        (
            [
                _link_fail(B, 6, 200, 700_000, 5_000),  # window passed: a new cluster
                _event(EventKind.FINAL, A, 2, 200.1, settled=True, offchain=True),
            ],
            T0 + 200 * S,  # htlc 3 (forward only) times out here
        ),
    ]


class _Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = open_engine(path)
        writer = StoreWriter(self.engine)
        self.node_id = writer.upsert_node(NODE, 1)
        self.session = writer.open_session(self.node_id, T0, "0.18.3-beta")
        self.ingestor = Ingestor(
            self.engine,
            self.node_id,
            attempt_timeout_ns=120 * S,
            attempt_linger_ns=5 * S,
            dedup_window_ns=60 * S,
            cluster_max_span_ns=600 * S,
        )

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        tables = (
            "htlc_events",
            "forward_attempts",
            "failure_clusters",
            "failure_rollups_hourly",
            "failure_channel_hourly",
            "failure_channel_6h",
            "failure_channel_daily",
            "channel_refs",
        )
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return {
                t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() for t in tables
            }


def _inject(path: Path, table: str, on: bool) -> None:
    """A trigger that aborts every insert into ``table`` while it exists: the transaction
    fails after the events were fed to the in-memory pairing and clustering."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        if on:
            conn.execute(
                f"CREATE TRIGGER fault_{table} BEFORE INSERT ON {table}"
                " BEGIN SELECT RAISE(ABORT, 'injected write failure'); END"
            )
        else:
            conn.execute(f"DROP TRIGGER fault_{table}")


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """This process may write no file past ``limit`` bytes: SQLite's writes fail."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


FAULTS = {
    # where the transaction fails: each after the batch was fed to the cores
    "attempts upsert": "forward_attempts",
    "cluster upsert": "failure_clusters",
    "rollup upsert": "failure_rollups_hourly",
}


@pytest.mark.parametrize("table", FAULTS.values(), ids=FAULTS.keys())
def test_a_retried_batch_stores_what_a_first_success_stores(tmp_path: Path, table: str) -> None:
    clean, faulty = _Store(tmp_path / "clean.db"), _Store(tmp_path / "faulty.db")
    for events, now_ns in _batches():
        clean.ingestor.ingest(clean.session, events, now_ns)
    for number, (events, now_ns) in enumerate(_batches()):
        if number == 1:  # the batch that joins clusters and resolves an attempt
            _inject(faulty.path, table, on=True)
            for _ in range(3):  # fails three times, then the cause goes
                with pytest.raises(Exception, match="injected write failure"):
                    faulty.ingestor.ingest(faulty.session, events, now_ns)
            _inject(faulty.path, table, on=False)
        result = faulty.ingestor.ingest(faulty.session, events, now_ns)
        assert result.new_events == len(events)
    got, want = faulty.dump(), clean.dump()
    assert got == want
    assert len(want["htlc_events"]) == 9
    members = [row[5] for row in want["failure_clusters"]]
    assert members == [3, 1]  # the retried batch joined the first cluster


def test_a_batch_retried_after_disk_full_at_commit(tmp_path: Path) -> None:
    """The same at the file level: no file may grow, so the commit itself fails."""
    clean, faulty = _Store(tmp_path / "clean.db"), _Store(tmp_path / "faulty.db")
    for events, now_ns in _batches():
        clean.ingestor.ingest(clean.session, events, now_ns)
    for number, (events, now_ns) in enumerate(_batches()):
        if number == 1:
            with _file_size_limit(1), pytest.raises(OperationalError, match="disk I/O error"):
                faulty.ingestor.ingest(faulty.session, events, now_ns)
        faulty.ingestor.ingest(faulty.session, events, now_ns)
    assert faulty.dump() == clean.dump()
