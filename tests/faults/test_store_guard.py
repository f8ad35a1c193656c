"""The store moved under a running daemon, and a second daemon on the same store.

The real lnflowd records the simulated node's traffic into a real SQLite file; the
file is then deleted, moved away or replaced by another store, or a second lnflowd is
started on it. Figures: docs/reliability.md ("The node away, frozen or slow; the
store moved; a second daemon").
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonproc import Daemon, query, run_lnflowctl, run_lnflowd, sim_flags
from simnode import SimNode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]  # every test here starts a process

HEARTBEAT_S = 5  # the default; detection must come within a heartbeat or two


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimNode]:
    with SimNode(tmp_path / "lnd", args=("--rate", "50", "--seed", "3")) as node:
        yield node


def events(db: Path) -> int:
    return int(query(db, "SELECT count(*) FROM htlc_events")[0][0])


def wait_exit(d: Daemon, timeout: float) -> tuple[int, float]:
    """Exit status and the seconds it took."""
    assert d._proc is not None
    started = time.monotonic()
    try:
        status = d._proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"lnflowd still running after {timeout}s:\n{d.log()}") from None
    return status, time.monotonic() - started


def last_line(d: Daemon) -> str:
    lines = d.log().strip().splitlines()
    assert "Traceback" not in d.log()
    return lines[-1]


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


# ------------------------------------------------------------------- a second daemon


def test_a_second_daemon_on_the_same_store_is_refused_naming_the_first_ones_pid(
    sim: SimNode, tmp_path: Path
) -> None:
    db = tmp_path / "lnflow.db"
    with Daemon(sim, db) as first:
        first.wait_for(lambda c: events_in(c) > 20, timeout=30)
        before = query(db, "SELECT pid, started_ns FROM daemon_state")
        status, _, err = run_lnflowd(*sim_flags(sim), "--db", str(db), timeout=60)
        lines = err.strip().splitlines()
        assert status == 3, err
        assert len(lines) == 1 and "Traceback" not in err
        assert lines[0] == (
            f"lnflowd: error: another lnflowd (pid {first.pid}) is recording into {db}: "
            "stop it first (one daemon per store), or pass --db with another store"
        )
        # nothing of the second one reached the store; the first records on
        assert query(db, "SELECT pid, started_ns FROM daemon_state") == before
        n = events(db)
        first.wait_for(lambda c: events_in(c) > n + 20, timeout=30)
        # readers are not locked out
        code, doc, _ = run_lnflowctl("--db", str(db), "status", "--json")
        assert code == 0 and json.loads(doc)["daemon"]["pid"] == first.pid
        assert first.stop() == 0
    # the lock goes with the process: a new daemon starts on the same store
    with Daemon(sim, db) as again:
        again.wait_for(
            lambda c: c.execute("SELECT pid FROM daemon_state").fetchone()[0] == again.pid
        )
        assert again.stop() == 0


def test_the_lock_of_a_killed_daemon_does_not_block_the_next_one(
    sim: SimNode, tmp_path: Path
) -> None:
    db = tmp_path / "lnflow.db"
    with Daemon(sim, db) as first:
        first.wait_for(lambda c: events_in(c) > 5, timeout=30)
        first_pid = first.pid
        first.kill()
    assert (tmp_path / "lnflow.db.lock").read_text().strip() == str(first_pid)
    with Daemon(sim, db) as second:
        second.wait_for(
            lambda c: c.execute("SELECT pid FROM daemon_state").fetchone()[0] == second.pid
        )
        assert second.stop() == 0


def events_in(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM htlc_events").fetchone()[0])


# ------------------------------------------------------------------- the store moved


def test_store_deleted_while_recording_stops_within_a_heartbeat_with_one_line(
    sim: SimNode, tmp_path: Path
) -> None:
    db = tmp_path / "lnflow.db"
    d = Daemon(sim, db).start()
    try:
        d.wait_for(lambda c: events_in(c) > 20, timeout=30)
        for f in (db, db.with_name("lnflow.db-wal"), db.with_name("lnflow.db-shm")):
            f.unlink(missing_ok=True)
        status, took = wait_exit(d, 3 * HEARTBEAT_S + 10)
    finally:
        if d.running():
            d.kill()
    assert status == 3
    line = last_line(d)
    assert line.startswith(
        f"lnflowd: error: the store {db} was deleted while lnflowd was recording"
    )
    assert "stopped at once; nothing was written at the path" in line
    assert not db.exists()  # nothing recreated at the path
    print(f"store deleted: exit {status} after {took:.1f}s")


def test_store_moved_away_stops_and_names_where_it_went(sim: SimNode, tmp_path: Path) -> None:
    db = tmp_path / "lnflow.db"
    moved = tmp_path / "elsewhere.db"
    d = Daemon(sim, db).start()
    try:
        d.wait_for(lambda c: events_in(c) > 20, timeout=30)
        stored_before = events(db)
        db.rename(moved)
        status, took = wait_exit(d, 3 * HEARTBEAT_S + 10)
    finally:
        if d.running():
            d.kill()
    assert status == 3
    assert f"the store {db} was moved to {moved} while lnflowd was recording" in last_line(d)
    assert not db.exists() and not db.with_name("lnflow.db-wal").exists()
    # the store is whole where it went: its WAL went with it
    assert integrity(moved) == "ok"
    assert events(moved) >= stored_before
    print(f"store moved: exit {status} after {took:.1f}s")


def test_another_store_renamed_over_the_path_is_left_untouched(
    sim: SimNode, tmp_path: Path
) -> None:
    db = tmp_path / "lnflow.db"
    other = tmp_path / "other.db"
    # another lnflow store, e.g. a backup being restored over the live one
    with Daemon(sim, other) as d0:
        d0.wait_for(lambda c: events_in(c) > 10, timeout=30)
    shutil.copy(other, tmp_path / "other-before.db")
    other_events = events(other)

    d = Daemon(sim, db).start()
    try:
        d.wait_for(lambda c: events_in(c) > 20, timeout=30)
        os.replace(other, db)
        status, took = wait_exit(d, 3 * HEARTBEAT_S + 10)
    finally:
        if d.running():
            d.kill()
    assert status == 3
    line = last_line(d)
    assert f"the store {db} was replaced by another file" in line
    assert "ours is deleted" in line
    # the file put in place is intact and was not written to
    assert integrity(db) == "ok"
    assert events(db) == other_events
    assert (tmp_path / "other-before.db").read_bytes() == db.read_bytes()
    print(f"store replaced: exit {status} after {took:.1f}s")
