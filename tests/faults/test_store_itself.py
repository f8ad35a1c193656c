"""The store itself: foreign files, failed migrations, the WAL, permissions, retention,
and how much of a window was observed (issue 11, items 4, 7, 8, 11 and 14).

Every test drives the real lnflowd / lnflowctl processes against the simulated node
and a real SQLite file; the figures in docs/reliability.md come from these tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, query, run_lnflowctl, run_lnflowd, sim_flags
from simnode import SimNode

from lnflow.store import db
from lnflow.store.readonly import SCHEMA_REVISIONS

pytestmark = pytest.mark.e2e  # every test here starts a process

NS = 1_000_000_000
DAY_NS = 86_400 * NS
CHAN_IN = "810000x1x0"
CHAN_OUT = "810001x2x1"
CTL_COMMANDS: list[tuple[str, ...]] = [
    ("status",),
    ("opportunities",),
    ("analyze", "--hours", "1"),
    ("monitor", "--duration", "0.001", "--interval", "1"),
    ("trend", CHAN_OUT),
    ("export", "--what", "events"),
]


# --------------------------------------------------------------------------- helpers


def _channels() -> list[dict[str, Any]]:
    return [
        {"op": "channel", "chan_id": CHAN_IN, "peer_alias": "alice"},
        {"op": "channel", "chan_id": CHAN_OUT, "peer_alias": "bob", "local_balance_sat": 10_000},
    ]


def _fails(first: int, n: int, ts_ns: int | None = None) -> list[dict[str, Any]]:
    """``n`` liquidity failures out of CHAN_OUT (stamped ``ts_ns``, or when sent)."""
    return [
        {
            "event": "link_fail",
            "incoming_channel_id": CHAN_IN,
            "incoming_htlc_id": first + i,
            "outgoing_channel_id": CHAN_OUT,
            "incoming_amt_msat": 500_250_000,
            "outgoing_amt_msat": 500_000_000,
            "incoming_timelock": 880_180,
            "outgoing_timelock": 880_100,
            "wire_failure": "TEMPORARY_CHANNEL_FAILURE",
            "failure_detail": "INSUFFICIENT_BALANCE",
            **({"timestamp_ns": ts_ns} if ts_ns is not None else {}),
        }
        for i in range(n)
    ]


def _script(*events: dict[str, Any]) -> list[dict[str, Any]]:
    return [*_channels(), {"op": "wait_subscribers", "count": 1, "timeout_s": 60}, *events]


def _count(db_path: Path, table: str) -> int:
    return int(query(db_path, f"SELECT count(*) FROM {table}")[0][0])


def _one_line_error(rc: int, out: str, err: str, *wanted: str) -> str:
    """The CLI contract for an operator error: non-zero, one line, no traceback."""
    assert rc != 0, (out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for w in wanted:
        assert w in lines[0], lines[0]
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sql(path: Path, sql: str) -> None:
    """Run ``sql`` on a connection closed right after (the store is then one file: the
    last connection checkpoints and removes the WAL)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(sql)
        conn.commit()


def _schema(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY 2"
        ).fetchall()
    finally:
        conn.close()


def _foreign_app_db(path: Path) -> None:
    """Another application's database: its tables, rows, rollback journal, Alembic."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
        INSERT INTO users (name) VALUES ('ann'), ('bo');
        CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);
        INSERT INTO alembic_version VALUES ('0003');
        """
    )
    conn.commit()
    conn.close()


def _plain_sqlite_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (t TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()


FOREIGN_FILES = {
    "another-apps-db": _foreign_app_db,
    "plain-sqlite": _plain_sqlite_db,
    "not-sqlite": lambda p: p.write_text("just some text, not a database\n" * 50),
}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimNode]:
    with SimNode(tmp_path / "lnd", script=_script()) as node:
        yield node


# --------------------------------------------------------------------------- item 7


@pytest.mark.parametrize("kind", list(FOREIGN_FILES))
def test_lnflowd_refuses_a_foreign_file_and_leaves_it_unchanged(
    tmp_path: Path, sim: SimNode, kind: str
) -> None:
    path = tmp_path / "other.db"
    FOREIGN_FILES[kind](path)
    before, listing = _digest(path), sorted(os.listdir(tmp_path))

    rc, out, err = run_lnflowd(*sim_flags(sim), "--db", str(path))

    line = _one_line_error(rc, out, err, str(path), "not an lnflow store", "check --db")
    assert _digest(path) == before, line
    assert sorted(os.listdir(tmp_path)) == listing  # no -wal, -shm or journal left
    if kind != "not-sqlite":
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_migration_failing_halfway_leaves_the_store_as_it_was(
    tmp_path: Path, sim: SimNode
) -> None:
    """Revision 0004 creates channel_refs; a store at 0003 that already has a table of
    that name makes the upgrade fail after earlier steps of it ran."""
    path = tmp_path / "lnflow.db"
    engine = db.open_engine(path)
    db.downgrade(engine, "0003")
    engine.dispose()
    _sql(path, "CREATE TABLE channel_refs (x INTEGER)")
    # every connection of this process is closed before the file is read as bytes:
    # closing a file SQLite has open drops its POSIX locks (sqlite.org/howtocorrupt.html)
    schema, before = _schema(path), path.read_bytes()

    rc, out, err = run_lnflowd(*sim_flags(sim), "--db", str(path))

    _one_line_error(rc, out, err, "cannot migrate", "channel_refs", "still revision 0003")
    assert query(path, "SELECT version_num FROM alembic_version") == [("0003",)]
    assert _schema(path) == schema
    after = path.read_bytes()
    # every page as it was; SQLite itself only bumps the change counter (bytes 24-27,
    # 92-95 of the header) when it checkpoints an empty WAL
    assert len(after) == len(before)
    changed = [i for i in range(len(after)) if after[i] != before[i]]
    assert set(changed) <= {*range(24, 28), *range(92, 96)}, changed[:10]

    # once the blocking table is gone the same store upgrades to the newest revision
    _sql(path, "DROP TABLE channel_refs")
    with Daemon(sim, path) as d:
        d.wait_for(
            lambda c: (
                c.execute("SELECT version_num FROM alembic_version").fetchone()[0]
                == SCHEMA_REVISIONS[-1]
            )
        )
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


# --------------------------------------------------------------------------- item 14


def _as_user(user: str, argv: list[str]) -> tuple[int, str, str]:
    """``lnflowctl argv`` in a child process running as ``user`` (tests run as root,
    which may read any file). The child imports lnflowctl first: the interpreter's own
    files may not be readable by that user."""
    import lnflow.cli.commands
    import lnflow.cli.ctl as ctl
    import lnflow.store.db
    import lnflow.store.queries
    import lnflow.store.readonly  # noqa: F401

    pw = pwd.getpwnam(user)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        rc = 70
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            sys.stdout = os.fdopen(1, "w", closefd=False)
            sys.stderr = os.fdopen(2, "w", closefd=False)
            rc = ctl.main(argv)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as o, os.fdopen(err_r) as e:
        out, err = o.read(), e.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out, err


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="lnflow-faults-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("kind", ["zero-byte", *FOREIGN_FILES])
def test_lnflowctl_on_a_file_that_is_no_store_says_so_in_one_line(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "x.db"
    if kind == "zero-byte":
        path.touch()
    else:
        FOREIGN_FILES[kind](path)
    before, listing = _digest(path), sorted(os.listdir(tmp_path))
    for cmd in CTL_COMMANDS:
        rc, out, err = run_lnflowctl("--db", str(path), *cmd)
        line = _one_line_error(rc, out, err, str(path), "not an lnflow store")
        assert rc == 3, (cmd, line)
        assert out == "", (cmd, out)
        if kind == "zero-byte":
            assert "empty" in line
        if kind == "not-sqlite":
            assert "not an SQLite database" in line
    assert _digest(path) == before
    assert sorted(os.listdir(tmp_path)) == listing


def test_lnflowctl_on_a_store_it_may_not_read_names_the_owner(shared_dir: Path) -> None:
    owner = "daemon"  # the store's owner; lnflowctl runs as nobody
    store_dir = shared_dir / "state"
    path = store_dir / "lnflow.db"
    db.open_engine(path).dispose()
    uid = pwd.getpwnam(owner).pw_uid
    for p in (store_dir, path):
        os.chown(p, uid, -1)
    assert store_dir.stat().st_mode & 0o777 == 0o700  # as lnflowd creates it
    for cmd in CTL_COMMANDS:
        rc, out, err = _as_user("nobody", ["--db", str(path), *cmd])
        line = _one_line_error(
            rc, out, err, "permission denied", f"belongs to user {owner}", f"sudo -u {owner}"
        )
        assert rc == 3 and "not an lnflow store" not in line, (cmd, line)
    # the directory open, the file itself 0600: the same message
    store_dir.chmod(0o755)
    rc, out, err = _as_user("nobody", ["--db", str(path), "status"])
    _one_line_error(rc, out, err, "permission denied", f"belongs to user {owner}")


# --------------------------------------------------------------------------- item 11


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_store_directory_and_saved_reports_are_private_under_umask_000(
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "state" / "lnflow"
    path = store_dir / "lnflow.db"
    report = tmp_path / "report.json"
    with SimNode(tmp_path / "lnd", script=_script(*_fails(1, 3))) as sim, _umask(0):
        d = Daemon(sim, path)
        d.stderr_path = tmp_path / "lnflowd.log"  # the store's directory does not exist yet
        with d:
            d.wait_for(lambda c: _count_c(c, "htlc_events") == 3)
            rc, _, err = run_lnflowctl(
                "--db", str(path), "analyze", "--hours", "1", "--output", str(report)
            )
            assert rc == 0, err
            modes = {p.name: p.stat().st_mode & 0o777 for p in (store_dir, path, report)}
            wal = db.wal_path(path)
            if wal.exists():
                modes[wal.name] = wal.stat().st_mode & 0o777
    assert modes == {
        "lnflow": 0o700,
        "lnflow.db": 0o600,
        "report.json": 0o600,
        **({"lnflow.db-wal": 0o600} if "lnflow.db-wal" in modes else {}),
    }
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700  # created for the store too


def _count_c(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _last_checkpoints(d: Daemon) -> int:
    return len(d.events("wal_checkpoint"))


def test_events_stamped_in_the_past_survive_and_old_recordings_expire(tmp_path: Path) -> None:
    """A node clock 30 days behind: its fresh events must survive a prune with
    events_days = 14, while events recorded more than 14 days ago go, whatever their
    stamps say."""
    path = tmp_path / "lnflow.db"
    env = {"LNFLOW_RETENTION__EVENTS_DAYS": "14", "LNFLOW_RETENTION__PRUNE_INTERVAL_S": "10"}
    # first run: 5 events stamped "now", then taken as recorded 20 days ago
    with (
        SimNode(tmp_path / "lnd", script=_script(*_fails(1, 5))) as sim,
        Daemon(sim, path, env=env) as d,
    ):
        d.wait_for(
            lambda c: (
                _count_c(c, "htlc_events") == 5
                and c.execute("SELECT max(event_id) FROM recording_marks").fetchone()[0] == 5
            ),
            timeout=40,
        )
    _sql(path, f"UPDATE recording_marks SET recorded_ns = recorded_ns - {20 * DAY_NS}")
    # second run: the node's clock is 30 days behind
    stamped = time.time_ns() - 30 * DAY_NS
    script = _script(*_fails(100, 7, stamped))
    with SimNode(tmp_path / "lnd2", script=script) as sim, Daemon(sim, path, env=env) as d:
        d.wait_for(
            lambda c: (
                c.execute("SELECT max(event_id) FROM recording_marks").fetchone()[0]
                == c.execute("SELECT max(id) FROM htlc_events").fetchone()[0]
                and _count_c(c, "htlc_events") >= 7
            ),
            timeout=40,
        )
        # the prune run that wrote that mark ends with a checkpoint: wait for one more
        seen = _last_checkpoints(d)
        d.wait_for(lambda c: _last_checkpoints(d) > seen, timeout=40)
        left = query(path, "SELECT timestamp_ns FROM htlc_events ORDER BY id")
    assert len(left) == 7  # the 5 recorded "20 days ago" are gone, though stamped today
    assert {ts for (ts,) in left} == {stamped}


# --------------------------------------------------------------------------- item 4


def test_unobserved_time_of_the_window_is_disclosed(tmp_path: Path) -> None:
    """A store recorded for a few seconds, analysed over 24 h: observed_hours says so
    and the table warns; the daemon's own snapshot carries the same figure."""
    path = tmp_path / "lnflow.db"
    env = {"LNFLOW_ANALYSIS__INTERVAL_S": "10"}
    with (
        SimNode(tmp_path / "lnd", script=_script(*_fails(1, 4))) as sim,
        Daemon(sim, path, env=env) as d,
    ):
        d.wait_for(lambda c: _count_c(c, "analysis_runs") >= 1, timeout=60)
    sessions = query(path, "SELECT started_ns, ended_ns FROM stream_sessions")
    recorded_h = sum(e - s for s, e in sessions) / 3600 / NS
    assert 0 < recorded_h < 0.05

    rc, out, err = run_lnflowctl("--db", str(path), "analyze", "--hours", "24", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["observed_hours"] == pytest.approx(recorded_h, abs=0.001)
    assert doc["window_hours"] == 24 and "node" in doc and "gaps" in doc  # fields kept
    print(f"\nobserved {doc['observed_hours']} h of a 24 h window")

    rc, out, err = run_lnflowctl("--db", str(path), "analyze", "--hours", "24")
    assert rc == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("WARNING: only")]
    assert len(warnings) == 1 and "of this 24 h window was observed" in warnings[0]

    rc, out, err = run_lnflowctl("--db", str(path), "opportunities", "--json")
    assert rc == 0, err
    snap = json.loads(out)
    assert 0 < snap["observed_hours"] < 0.05
    stored = query(path, "SELECT observed_ns FROM analysis_runs ORDER BY id DESC LIMIT 1")
    assert abs(stored[0][0] / 3600 / NS - snap["observed_hours"]) < 0.0001

    # the same store as if lnflowd had recorded for two hours more: observed, no warning
    _sql(path, f"UPDATE stream_sessions SET started_ns = started_ns - {2 * 3600 * NS}")
    rc, out, err = run_lnflowctl("--db", str(path), "analyze", "--hours", "1", "--json")
    assert rc == 0, err
    assert json.loads(out)["observed_hours"] > 0.9
    rc, out, err = run_lnflowctl("--db", str(path), "analyze", "--hours", "1")
    assert rc == 0 and "WARNING: only" not in out, out


# --------------------------------------------------------------------------- item 8


def test_a_stalled_export_does_not_pin_the_wal(tmp_path: Path) -> None:
    """`lnflowctl export | less` left waiting while lnflowd records: the daemon's
    checkpoints still truncate the WAL, which stays under SQLite's journal_size_limit
    lnflow sets; status shows the WAL's size."""
    path = tmp_path / "lnflow.db"
    env = {"LNFLOW_RETENTION__PRUNE_INTERVAL_S": "10"}
    sim_args = ("--rate", "400", "--seed", "3", "--channels", "6")
    with SimNode(tmp_path / "lnd", args=sim_args) as sim, Daemon(sim, path, env=env) as d:
        d.wait_for(lambda c: _count_c(c, "htlc_events") >= 3000, timeout=40)
        export = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lnflow.cli.ctl",
                "--db",
                str(path),
                "export",
                "--what",
                "events",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            first = export.stdout.read(4096) if export.stdout else b""  # then nobody reads
            assert first.startswith(b"id,timestamp_ns")
            stalled_at = _count(path, "htlc_events")
            seen = len(d.events("wal_checkpoint"))
            biggest = 0

            def truncated_after_more_rows(c: sqlite3.Connection) -> bool:
                nonlocal biggest
                biggest = max(biggest, db.wal_bytes(path))
                done = [e for e in d.events("wal_checkpoint")[seen:] if not e["busy"]]
                return bool(done) and _count_c(c, "htlc_events") > stalled_at + 2000

            d.wait_for(truncated_after_more_rows, timeout=60)
            assert export.poll() is None  # still stalled, mid-stream
            rc, out, err = run_lnflowctl("--db", str(path), "status", "--json")
            assert rc == 0, err
            size = json.loads(out)["size"]
            assert size["store_bytes"] > 0 and 0 <= size["wal_bytes"] <= db.WAL_SIZE_LIMIT
        finally:
            export.kill()
            export.wait()
            for pipe in (export.stdout, export.stderr):
                if pipe is not None:
                    pipe.close()
    print(f"\nWAL peak behind a stalled export: {biggest / 1024 / 1024:.1f} MiB")
    assert biggest <= db.WAL_SIZE_LIMIT
