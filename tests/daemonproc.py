"""Run the real ``lnflowd`` in a subprocess against a :class:`simnode.SimNode`.

    with SimNode(...) as sim, Daemon(sim, tmp_path / "lnflow.db") as d:
        d.wait_for(lambda db: count(db, "htlc_events") == 5)
        assert d.stop() == 0                       # SIGTERM, exit status

``Daemon(sim, db, *, args=(), env=None)``: ``.start()``, ``.stop(sig=SIGTERM)``,
``.kill()`` (SIGKILL), ``.wait_for(predicate(conn) -> bool, timeout)`` (``conn``
sqlite3's, or a plain reader of PostgreSQL with the same ``execute``),
``.log()`` (stderr, JSON lines), ``.events(name)`` (parsed log records named ``name``).
``run_lnflowd(*args)`` runs it to completion: (exit status, stdout, stderr);
``run_lnflowctl(*args)`` likewise for ``lnflowctl``.
``query(db, sql, *params)`` reads the store with ``?`` placeholders: a SQLite file with
the plain sqlite3 module, a PostgreSQL database (a ``DbUrl``) through psycopg; a daemon
records into either (``store_at`` of tests/conftest.py gives the test's store on its
engine).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from simnode import SimNode

from lnflow.domain import (
    EventKind,
    EventType,
    FailureDetail,
    HtlcEvent,
    WireFailure,
    to_signed64,
)
from lnflow.store.engines import DbUrl, StoreLocation

__all__ = [
    "Daemon",
    "children",
    "db_arg",
    "proc_state",
    "query",
    "run_lnflowctl",
    "run_lnflowd",
    "stored",
]


def children(pid: int) -> list[int]:
    """Child pids of a process, from /proc (Linux)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the thread or process is gone
            found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(found)


def proc_state(pid: int) -> str | None:
    """The state letter of a process (R, S, Z, ...), None once it is gone (reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LNFLOW_")}
    env.pop("NOTIFY_SOCKET", None)
    env["LNFLOW_METRICS__LISTEN"] = ""  # no port 9109 shared by parallel runs; opt in
    env.update(extra or {})
    return env


def sim_flags(sim: SimNode, macaroon: str = "readonly") -> list[str]:
    return [
        "--lnddir",
        str(sim.lnddir),
        "--network",
        sim.network,
        "--rpcserver",
        sim.rpcserver,
        "--macaroonpath",
        str(sim.macaroon_path(macaroon)),
    ]


def run_lnflowd(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "lnflowd.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        check=False,
    )
    return out.returncode, out.stdout, out.stderr


def run_lnflowctl(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "lnflow.cli.ctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        check=False,
    )
    return out.returncode, out.stdout, out.stderr


# htlc_events with its channels as SCIDs (the table keeps channel_refs ids), for
# ``SELECT ... FROM {EVENTS_SCID}``; a ref of 0 (no channel on that side) reads as 0
EVENTS_SCID = (
    "(SELECT e.*, coalesce(ri.chan_id, 0) AS incoming_channel_id,"
    " coalesce(ro.chan_id, 0) AS outgoing_channel_id FROM htlc_events e"
    " LEFT JOIN channel_refs ri ON ri.id = e.incoming_chan_ref"
    " LEFT JOIN channel_refs ro ON ro.id = e.outgoing_chan_ref) AS scid"
)
# the same for forward_attempts (channel refs since 0009)
ATTEMPTS_SCID = EVENTS_SCID.replace("htlc_events e", "forward_attempts e")


def stored(event: Mapping[str, Any]) -> Callable[[sqlite3.Connection], bool]:
    """``Daemon.wait_for`` predicate, the flush barrier: ``event`` (a script event) is in
    the store. The node sends a stream's events in order and lnflowd writes them in
    the order received, so once the last event sent is stored, every event sent before
    it on that stream has been through the store (stored, or dropped as a replay):
    nothing more is coming, without sleeping to make sure."""
    key = (
        int(EventKind[str(event["event"]).upper()]),
        to_signed64(int(event["incoming_channel_id"])),
        to_signed64(int(event["incoming_htlc_id"])),
        to_signed64(int(event["outgoing_channel_id"])),
        to_signed64(int(event["outgoing_htlc_id"])),
        int(event["timestamp_ns"]),
    )

    def check(conn: sqlite3.Connection) -> bool:
        row = conn.execute(
            f"SELECT count(*) FROM {EVENTS_SCID} WHERE kind = ? AND incoming_channel_id = ?"
            " AND incoming_htlc_id = ? AND outgoing_channel_id = ? AND outgoing_htlc_id = ?"
            " AND timestamp_ns = ?",
            key,
        ).fetchone()
        return bool(row[0])

    return check


def sent_before_but_not_stored(
    sent_log: Path, signal_ns: int, db: StoreLocation
) -> tuple[set[tuple[int, ...]], set[tuple[int, ...]]]:
    """Events the simulator logged as sent before ``signal_ns`` (kind and circuit key),
    and those of them the store does not have."""
    from lnflow.domain import EventKind, from_signed64

    sent = [json.loads(line) for line in sent_log.read_text().splitlines() if line.strip()]
    before = {
        (
            EventKind[s["event"]["event"].upper()].value,
            s["event"]["incoming_channel_id"],
            s["event"]["incoming_htlc_id"],
            s["event"]["outgoing_channel_id"],
            s["event"]["outgoing_htlc_id"],
        )
        for s in sent
        if s["sent_ns"] < signal_ns and s["event"]["event"] != "subscribed"
    }
    stored = {
        (r[0], from_signed64(r[1]), from_signed64(r[2]), from_signed64(r[3]), from_signed64(r[4]))
        for r in query(
            db,
            "SELECT kind, incoming_channel_id, incoming_htlc_id, outgoing_channel_id,"
            f" outgoing_htlc_id FROM {EVENTS_SCID}",
        )
    }
    return before, before - stored


def db_arg(db: StoreLocation) -> str:
    """The store as ``--db`` takes it: a file's path, or a database's URL."""
    return db.secret if isinstance(db, DbUrl) else str(db)


def query(db: StoreLocation, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (``?`` placeholders) read from the store at ``db``: a SQLite
    file with the plain sqlite3 module, a PostgreSQL database through psycopg (lnflow's
    plain reader, whose ``numeric`` sums come back as ints, as SQLite's do)."""
    if isinstance(db, DbUrl):
        from lnflow.store.engines import open_plain_store

        plain = open_plain_store(db)
        try:
            return [tuple(row) for row in plain.execute(sql, params).fetchall()]
        finally:
            plain.close()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


class Daemon:
    def __init__(
        self,
        sim: SimNode,
        db: Path | DbUrl,
        *,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        """``db``: a SQLite file, or a PostgreSQL database. The daemon's log goes to
        ``log``, by default beside the file (``lnflow.log`` for ``lnflow.db``), or for a
        database beside the simulated node's lnd directory (``lnflowd.log``), so that a
        test reads it alike on either engine."""
        self.sim = sim
        self.db = db
        self.args = list(args)
        self.env = env
        if log is None:
            if isinstance(db, DbUrl):
                log = sim.lnddir.parent / "lnflowd.log"
            else:
                log = db.with_suffix(".log")
        self.stderr_path = log
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        cmd = [
            sys.executable,
            "-m",
            "lnflowd.main",
            *sim_flags(self.sim),
            "--db",
            db_arg(self.db),
            "--log-format",
            "json",
            "--log-level",
            "debug",
            *self.args,
        ]
        with self.stderr_path.open("ab") as err:
            self._proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env(self.env)
            )
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def children(self) -> list[int]:
        """Pids of the daemon's child processes (its lnd gateway)."""
        return children(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        proc, self._proc = self._proc, None
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 60) -> None:
        """Poll the store until ``predicate`` holds. ``timeout`` is a deadline for a
        failing run, not a speed requirement: generous, as `make test` runs several
        end-to-end tests at once on two cores."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise AssertionError(f"lnflowd exited with {self._proc.returncode}:\n{self.log()}")
            if isinstance(self.db, DbUrl):
                if _holds_on_server(self.db, predicate):
                    return
            elif self.db.exists():
                conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
                try:
                    if predicate(conn):
                        return
                except sqlite3.OperationalError:
                    pass  # schema not there yet
                finally:
                    conn.close()
            time.sleep(0.05)
        raise AssertionError(f"condition not met in {timeout}s; lnflowd log:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == name:
                found.append(record)
        return found

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self.stop()


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
    """A forward that failed at our node (LINK_FAIL), ``fee`` msat over ``amt_out``."""
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


def _holds_on_server(url: DbUrl, predicate: Callable[[Any], bool]) -> bool:
    """``predicate`` on a plain reader of the PostgreSQL store (``?`` placeholders, as
    sqlite3's)."""
    from lnflow.errors import StoreError
    from lnflow.store.engines import open_plain_store

    try:
        db = open_plain_store(url)
    except StoreError:  # not migrated yet
        return False
    try:
        return predicate(db)
    finally:
        db.close()
