"""Store writes failing: disk full, a store that cannot be written, values it cannot hold.

A failed write is held and retried, never dropped; the retry stores exactly what a
first-time success would have; past ``recorder.max_held_events`` the daemon stops with
one line. Disk full is made without root by ``RLIMIT_FSIZE`` (writes past the limit
fail with EFBIG; Python ignores SIGXFSZ, so SQLite reports "disk I/O error", or
"database or disk is full" for a write cut short at the limit); raising the limit
again is the space coming back. docs/reliability.md quotes these figures.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, _env, query, run_lnflowctl, sim_flags
from simnode import SimNode
from sqlalchemy.exc import OperationalError

from lnflow.domain import EventKind, EventType, FailureDetail, HtlcEvent, NodeInfo, WireFailure
from lnflow.store.db import open_engine
from lnflow.store.ingest import Ingestor
from lnflow.store.writer import StoreWriter

S = 1_000_000_000
FULL = "disk I/O error|database or disk is full"  # SQLite's words for a write past the limit
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
            "failure_channel_weekly",
            "channel_refs",
            "row_counts",  # what status shows: a failed try must not count
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
    assert sum(n for _, name, _, n in want["row_counts"] if name == "htlc_events") == 9
    members = [row[5] for row in want["failure_clusters"]]
    assert members == [3, 1]  # the retried batch joined the first cluster


def test_a_batch_retried_after_disk_full_at_commit(tmp_path: Path) -> None:
    """The same at the file level: no file may grow, so the commit itself fails."""
    clean, faulty = _Store(tmp_path / "clean.db"), _Store(tmp_path / "faulty.db")
    for events, now_ns in _batches():
        clean.ingestor.ingest(clean.session, events, now_ns)
    for number, (events, now_ns) in enumerate(_batches()):
        if number == 1:
            with _file_size_limit(1), pytest.raises(OperationalError, match=FULL):
                faulty.ingestor.ingest(faulty.session, events, now_ns)
        faulty.ingestor.ingest(faulty.session, events, now_ns)
    assert faulty.dump() == clean.dump()


# --------------------------------------------------------------------------- the daemon

CHAN_IN, CHAN_OUT = (810_000 << 40) | (1 << 16), (810_001 << 40) | (2 << 16) | 1
UNLIMITED = resource.RLIM_INFINITY


def _script(n: int, *, every: int = 10, pause_s: float = 0.1, extra: Any = ()) -> list[Any]:
    """``n`` local failures (distinct HTLCs), ``every`` of them per ``pause_s``."""
    lines: list[Any] = [
        {"op": "channel", "chan_id": CHAN_IN, "peer_alias": "alice"},
        {"op": "channel", "chan_id": CHAN_OUT, "peer_alias": "bob"},
        {"op": "wait_subscribers", "count": 1, "timeout_s": 60},
        *extra,
    ]
    for i in range(n):
        lines.append(
            {
                "event": "link_fail",
                "incoming_channel_id": CHAN_IN,
                "incoming_htlc_id": i,
                "outgoing_channel_id": CHAN_OUT,
                "incoming_amt_msat": 1_000_000 + 1_000 + i,
                "outgoing_amt_msat": 1_000_000,
                "wire_failure": "TEMPORARY_CHANNEL_FAILURE",
                "failure_detail": "INSUFFICIENT_BALANCE",
            }
        )
        if i % every == every - 1:
            lines.append({"op": "sleep", "seconds": pause_s})
    return lines


class PipedDaemon(Daemon):
    """lnflowd whose stderr goes through a pipe (a file-size limit must not hit its log),
    optionally started with ``RLIMIT_FSIZE`` already set (a disk full from the start)."""

    def __init__(
        self, sim: SimNode, db: Path, *, config: str = "", fsize: int | None = None
    ) -> None:
        args: list[str] = []
        if config:
            path = db.with_suffix(".toml")
            path.write_text(config)
            args = ["--config", str(path)]
        super().__init__(sim, db, args=args)
        self.fsize = fsize
        self._pump: threading.Thread | None = None

    def start(self) -> PipedDaemon:
        cmd = [
            sys.executable,
            *("-m", "lnflowd.main", *sim_flags(self.sim), "--db", str(self.db)),
            *("--log-format", "json", "--log-level", "info", *self.args),
        ]
        limit = self.fsize

        def preexec() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, UNLIMITED))

        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), preexec_fn=preexec
        )
        self._proc = proc
        self._pump = threading.Thread(target=self._copy, args=(proc,), daemon=True)
        self._pump.start()
        return self

    def _copy(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with proc.stderr, self.stderr_path.open("ab") as out:
            for line in proc.stderr:
                out.write(line)
                out.flush()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        code = super().stop(sig, timeout)
        if self._pump is not None:
            self._pump.join(timeout)  # every line it wrote is in the log
        return code

    def limit_file_size(self, limit: int) -> None:
        """Disk full (a tiny limit) or space back (UNLIMITED), for the running daemon."""
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (limit, UNLIMITED))

    def wait_exit(self, timeout: float) -> int:
        proc = self._proc
        assert proc is not None
        code = proc.wait(timeout)
        if self._pump is not None:
            self._pump.join(timeout)
        self._proc = None
        return code


def _stored(db: Path) -> list[tuple[int, int]]:
    """(kind, incoming htlc id) of every stored event."""
    return [
        (int(k), int(h)) for k, h in query(db, "SELECT kind, incoming_htlc_id FROM htlc_events")
    ]


def _sent(event_log: Path) -> int:
    if not event_log.exists():
        return 0
    lines = [json.loads(x) for x in event_log.read_text().splitlines() if x.strip()]
    return sum(1 for x in lines if x["event"]["event"] != "subscribed")


def _wait(what: str, predicate: Callable[[], bool], timeout: float, d: Daemon) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; lnflowd log:\n{d.log()}")
        time.sleep(0.1)


def _no_traceback(d: Daemon) -> None:
    assert "Traceback" not in d.log()
    assert not [e for e in d.events("job_failed") if "Traceback" in json.dumps(e)]


CONFIG = """
[recorder]
heartbeat_s = 1
"""


@pytest.mark.e2e
def test_disk_full_mid_stream_holds_the_events_and_writes_them_when_space_returns(
    tmp_path: Path,
) -> None:
    sent_log = tmp_path / "sent.jsonl"
    total = 1500
    sim = SimNode(tmp_path / "lnd", script=_script(total), args=("--event-log", str(sent_log)))
    with sim, PipedDaemon(sim, tmp_path / "lnflow.db", config=CONFIG) as d:
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] >= 50)
        d.limit_file_size(1)  # no file may be written past its first byte: disk full
        _wait("writes failing", lambda: bool(d.events("store_write_failing")), 30, d)
        stored_at_fault = len(_stored(d.db))
        # lnflowctl status tells the silent daemon from a dead one
        status_text = ""

        def status_says_not_writing() -> bool:
            nonlocal status_text
            code, status_text, _ = run_lnflowctl("--db", str(d.db), "status")
            return code == 0 and "cannot write the store" in status_text

        _wait("status", status_says_not_writing, 60, d)
        _, out, _ = run_lnflowctl("--db", str(d.db), "status", "--json")
        assert json.loads(out)["daemon"]["alive_not_writing"] is True
        assert d.running()
        held_while_full = len(_stored(d.db)) == stored_at_fault  # nothing written meanwhile
        d.limit_file_size(UNLIMITED)  # space is back
        _wait("all sent", lambda: _sent(sent_log) == total, 120, d)
        _wait("all stored", lambda: len(_stored(d.db)) == total, 60, d)
        _wait("held written", lambda: bool(d.events("held_events_written")), 30, d)
        assert d.stop() == 0
    stored = _stored(d.db)
    assert len(stored) == len(set(stored)) == total  # sent == stored, no duplicate
    assert held_while_full
    failing = d.events("store_write_failing")
    assert len(failing) == 1 and re.fullmatch(FULL, failing[0]["error"])
    recovered = d.events("store_write_recovered")
    assert len(recovered) == 1 and recovered[0]["held_events"] > 0
    assert d.events("held_events_written")[0]["events"] >= recovered[0]["held_events"]
    attempts = query(
        d.db, "SELECT count(*), count(DISTINCT incoming_htlc_id) FROM forward_attempts"
    )
    assert attempts == [(total, total)]
    assert query(d.db, "SELECT sum(failures) FROM failure_rollups_hourly") == [(total,)]
    (last_error,) = query(d.db, "SELECT last_error FROM daemon_state")[0]
    assert last_error.startswith("store writes failed from ") and "none lost" in last_error
    _no_traceback(d)


@pytest.mark.e2e
def test_past_max_held_events_the_daemon_exits_with_one_line_and_the_store_intact(
    tmp_path: Path,
) -> None:
    sent_log = tmp_path / "sent.jsonl"
    total = 4000
    config = "[recorder]\nmax_held_events = 1000\nbatch_size = 100\n"
    script = _script(total, every=20, pause_s=0.05)
    sim = SimNode(tmp_path / "lnd", script=script, args=("--event-log", str(sent_log)))
    with sim:
        d = PipedDaemon(sim, tmp_path / "lnflow.db", config=config).start()
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] >= 50)
        d.limit_file_size(1)
        _wait("writes failing", lambda: bool(d.events("store_write_failing")), 30, d)
        stored_at_fault = len(_stored(d.db))
        code = d.wait_exit(timeout=120)
        sent_at_exit = _sent(sent_log)
    assert code == 3
    lines = d.log().strip().splitlines()
    assert lines[-1].startswith("lnflowd: error: store writes failing for ")
    assert "more than recorder.max_held_events (1,000)" in lines[-1]
    assert sum(1 for line in lines if not line.startswith("{")) == 1  # that line, no traceback
    _no_traceback(d)
    stored = _stored(d.db)
    assert len(stored) == len(set(stored)) == stored_at_fault  # the stored events are intact
    assert query(d.db, "PRAGMA integrity_check") == [("ok",)]
    assert stored_at_fault < sent_at_exit
    gave_up = d.events("store_write_gave_up")
    assert len(gave_up) == 1 and gave_up[0]["events_not_stored"] > 1000


@pytest.mark.e2e
def test_sigterm_while_writes_fail_retries_then_exits_with_one_line(tmp_path: Path) -> None:
    sim = SimNode(tmp_path / "lnd", script=_script(3000, pause_s=0.1))
    with sim:
        d = PipedDaemon(sim, tmp_path / "lnflow.db").start()
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] >= 50)
        d.limit_file_size(1)
        _wait("writes failing", lambda: bool(d.events("store_write_failing")), 30, d)
        stored_at_fault = len(_stored(d.db))
        code = d.stop(timeout=60)  # SIGTERM: the held events are retried a while first
    assert code == 3
    lines = d.log().strip().splitlines()
    assert lines[-1].startswith("lnflowd: error: store writes failing for ")
    assert re.search(rf"\(({FULL})\): stopping; \d+ events were not stored", lines[-1])
    assert sum(1 for line in lines if not line.startswith("{")) == 1
    _no_traceback(d)
    assert len(_stored(d.db)) == stored_at_fault
    assert query(d.db, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.parametrize(
    "ended", [signal.SIGTERM, signal.SIGKILL], ids=["after a clean stop", "after a crash"]
)
@pytest.mark.e2e
def test_starting_on_a_full_disk_ends_with_one_line(tmp_path: Path, ended: int) -> None:
    """Opening the store already writes (the WAL index after a clean stop, WAL recovery
    after a crash), so a restart on a full disk ends there, at once, each time."""
    sim = SimNode(tmp_path / "lnd", script=_script(20))
    with sim:
        d = PipedDaemon(sim, tmp_path / "lnflow.db").start()
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] == 20)
        d.stop(ended)
        full = PipedDaemon(sim, tmp_path / "lnflow.db", fsize=1).start()
        code = full.wait_exit(timeout=60)
    assert code == 3
    lines = full.log().strip().splitlines()
    opening = re.escape(f"lnflowd: error: cannot open the store at {d.db}")
    assert re.match(rf"{opening} \(({FULL})\)", lines[-1])
    assert sum(1 for line in lines if not line.startswith("{")) == 1
    assert "Traceback" not in full.log()
    assert len(_stored(d.db)) == 20
    assert query(d.db, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.e2e
def test_an_amount_of_2_63_or_more_is_kept_as_unknown_and_recording_goes_on(
    tmp_path: Path,
) -> None:
    huge = {
        "event": "link_fail",
        "incoming_channel_id": CHAN_IN,
        "incoming_htlc_id": 10_000,
        "outgoing_channel_id": CHAN_OUT,
        "incoming_amt_msat": 2**64 - 1,
        "outgoing_amt_msat": 2**63,
        "wire_failure": "TEMPORARY_CHANNEL_FAILURE",
        "failure_detail": "INSUFFICIENT_BALANCE",
    }
    sim = SimNode(tmp_path / "lnd", script=_script(40, extra=[huge]))
    with sim, PipedDaemon(sim, tmp_path / "lnflow.db") as d:
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] == 41)
        assert d.stop() == 0
    row = query(
        d.db,
        "SELECT incoming_amt_msat, outgoing_amt_msat FROM htlc_events WHERE incoming_htlc_id = ?",
        10_000,
    )
    assert row == [(None, None)]
    (logged,) = d.events("htlc_value_out_of_range")
    assert logged["incoming_htlc_id"] == 10_000 and logged["kind"] == "link_fail"
    assert set(logged["fields"]) == {"incoming_amt_msat", "outgoing_amt_msat"}
    assert not d.events("store_write_failing")
    assert len(set(_stored(d.db))) == 41
