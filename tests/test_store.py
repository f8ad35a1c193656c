"""The writer and the read-side queries on real stores, on both engines."""

import threading
import time
from collections.abc import Callable

import pytest
from conftest import RealStore
from daemonproc import EVENTS_SCID, query

from lnflow.domain import (
    EventKind,
    EventType,
    ForwardRecord,
    HtlcEvent,
    NodeInfo,
    from_signed64,
)
from lnflow.store.db import open_readonly_engine
from lnflow.store.engines import StoreLocation
from lnflow.store.ingest import Ingestor
from lnflow.store.queries import status_report
from lnflow.store.retention import RETAINED, Pruner

S = 1_000_000_000

pytestmark = pytest.mark.engines("sqlite", "postgresql")

NODE = NodeInfo("02" + "ab" * 32, "alice", "0.18.3-beta commit=v0.18.3-beta", "regtest", 100, True)
ALIAS_SCID = (16_000_123 << 40) | (7 << 16) | 1  # >= 2**63


def _forward(i: int, out_chan: int = ALIAS_SCID) -> HtlcEvent:
    return HtlcEvent(
        timestamp_ns=1_700_000_000_000_000_000 + i,
        kind=EventKind.FORWARD,
        event_type=int(EventType.FORWARD),
        incoming_channel_id=123,
        incoming_htlc_id=i,
        outgoing_channel_id=out_chan,
        outgoing_htlc_id=i,
        incoming_amt_msat=1_001_000 + i,
        outgoing_amt_msat=1_000_000,
        incoming_timelock=800,
        outgoing_timelock=760,
    )


class _Store:
    def __init__(self, real: RealStore) -> None:
        self.path = real.path
        self.engine = real.engine
        self.writer = real.writer
        self.node_id = real.node_id
        self.ingestor = self.new_ingestor()

    def new_ingestor(self) -> Ingestor:
        return Ingestor(
            self.engine,
            self.node_id,
            attempt_timeout_ns=600 * S,
            attempt_linger_ns=10 * S,
            dedup_window_ns=60 * S,
            cluster_max_span_ns=None,
        )

    def insert_events(self, session: int, events: list[HtlcEvent]) -> int:
        return self.ingestor.ingest(session, events, 1_700_000_000 * S).new_events


Opener = Callable[..., RealStore]


def _writer(open_store: Opener) -> tuple[_Store, int, int, StoreLocation]:
    store = _Store(open_store(node=NODE))
    session = store.writer.open_session(store.node_id, 1, "0.18.3-beta")
    return store, store.node_id, session, store.path


def test_replayed_events_are_stored_once(open_store: Opener) -> None:
    writer, node_id, session, path = _writer(open_store)
    assert writer.insert_events(session, [_forward(i) for i in range(10)]) == 10
    session2 = writer.writer.open_session(node_id, 2, "0.18.3-beta")
    # a replay of the last five plus five new ones
    assert writer.insert_events(session2, [_forward(i) for i in range(5, 15)]) == 5
    assert query(path, "SELECT count(*) FROM htlc_events") == [(15,)]
    sessions = dict(query(path, "SELECT incoming_htlc_id, session_id FROM htlc_events"))
    assert sessions[7] == session and sessions[12] == session2


def test_uint64_channel_ids_round_trip(open_store: Opener) -> None:
    writer, _node_id, session, path = _writer(open_store)
    writer.insert_events(session, [_forward(0)])
    ((stored,),) = query(path, f"SELECT outgoing_channel_id FROM {EVENTS_SCID}")
    assert stored < 0
    assert from_signed64(stored) == ALIAS_SCID


def test_status_counts_and_liveness(open_store: Opener) -> None:
    writer, node_id, session, path = _writer(open_store)
    now = time.time_ns()
    writer.writer.daemon_started(now, heartbeat_interval_s=5)
    writer.writer.daemon_state(now, node_id=node_id, lnd_alias="alice", stream_state="connected")
    writer.insert_events(session, [_forward(i) for i in range(3)])
    engine = open_readonly_engine(path)
    with engine.connect() as conn:
        rep = status_report(conn, now + 1_000_000_000)
        assert rep.daemon.running and rep.stream.connected
        assert rep.htlc_events == {
            "forward": 3,
            "forward_fail": 0,
            "settle": 0,
            "link_fail": 0,
            "final": 0,
        }
        stale = status_report(conn, now + 60 * 1_000_000_000)
        assert not stale.daemon.running and not stale.stream.connected
    writer.writer.daemon_stopped(now + 2)
    with engine.connect() as conn:
        assert not status_report(conn, now + 3).daemon.running
    engine.dispose()


def test_reader_sees_committed_batches_while_the_writer_writes(open_store: Opener) -> None:
    writer, _node_id, session, path = _writer(open_store)
    reader = open_readonly_engine(path)
    done = threading.Event()
    seen: list[int] = []

    def read() -> None:
        while not done.is_set():
            with reader.connect() as conn:
                seen.append(conn.exec_driver_sql("SELECT count(*) FROM htlc_events").scalar_one())

    t = threading.Thread(target=read)
    t.start()
    for batch in range(20):
        writer.insert_events(session, [_forward(batch * 100 + i) for i in range(100)])
    done.set()
    t.join()
    reader.dispose()
    assert seen == sorted(seen)  # never goes backwards
    assert all(n % 100 == 0 for n in seen)  # never half a batch


def _scanned_counts(path: StoreLocation) -> tuple[dict[int, int], dict[int, int], int]:
    """What the kept counts must equal: the event tables counted row by row."""
    kinds = dict(query(path, "SELECT kind, count(*) FROM htlc_events GROUP BY kind"))
    outcomes = dict(query(path, "SELECT outcome, count(*) FROM forward_attempts GROUP BY outcome"))
    ((ledger,),) = query(path, "SELECT count(*) FROM forwards")
    return kinds, outcomes, ledger


def _kept_counts(path: StoreLocation) -> tuple[dict[int, int], dict[int, int], int]:
    rows = query(path, "SELECT table_name, value, n FROM row_counts WHERE n != 0")
    kinds = {v: n for t, v, n in rows if t == "htlc_events"}
    outcomes = {v: n for t, v, n in rows if t == "forward_attempts"}
    return kinds, outcomes, sum(n for t, _, n in rows if t == "forwards")


def test_kept_counts_follow_replays_outcomes_the_ledger_and_pruning(open_store: Opener) -> None:
    """Status reads counts kept as rows are written: they equal a scan after replays,
    attempts changing outcome, restarts expiring pending attempts, ledger syncs and
    retention deleting events, attempts (by trigger) and nothing of the ledger."""
    store, node_id, session, path = _writer(open_store)
    t0 = 1_700_000_000 * S
    fwd = [_forward(i) for i in range(20)]
    assert store.insert_events(session, fwd) == 20
    assert store.insert_events(session, fwd[10:]) == 0  # replayed: counted once
    settles = [
        HtlcEvent(
            timestamp_ns=t0 + i,
            kind=EventKind.SETTLE,
            event_type=int(EventType.FORWARD),
            incoming_channel_id=123,
            incoming_htlc_id=i,
            outgoing_channel_id=ALIAS_SCID,
            outgoing_htlc_id=i,
        )
        for i in range(8)
    ]
    assert store.insert_events(session, settles) == 8
    assert _kept_counts(path) == _scanned_counts(path)
    # a restart: what a previous run left pending can no longer be paired
    assert store.new_ingestor().expire_stale_attempts(t0) > 0
    store.writer.insert_forwards(
        node_id,
        [ForwardRecord(t0 + i, 123, ALIAS_SCID, 1_001_000, 1_000_000, 1_000) for i in range(5)],
    )
    kinds, outcomes, ledger = _kept_counts(path)
    assert (kinds, outcomes, ledger) == _scanned_counts(path)
    assert sum(kinds.values()) == 28 and sum(outcomes.values()) == 20 and ledger == 5
    # everything so far was recorded 40 days ago; retention drops it, the ledger stays
    now = time.time_ns()
    pruner = Pruner(store.engine, dict.fromkeys({spec.setting for spec in RETAINED}, 30))
    assert pruner.mark(now - 40 * 86_400 * S)
    assert store.insert_events(session, [_forward(100 + i) for i in range(3)]) == 3
    report = pruner.prune(now, batch_rows=7, max_batches=100)
    assert report.expired.get("htlc_events") == 28
    assert _kept_counts(path) == _scanned_counts(path) == ({1: 3}, {0: 3}, 5)
    engine = open_readonly_engine(path)
    with engine.connect() as conn:
        rep = status_report(conn, now)
    engine.dispose()
    assert rep.htlc_events["forward"] == 3 and sum(rep.htlc_events.values()) == 3
    assert rep.attempts["pending"] == 3 and sum(rep.attempts.values()) == 3
    assert rep.forwards == 5
