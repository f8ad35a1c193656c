"""The lnd gateway process (all of lnflowd's gRPC): the real lnflowd against the simulated
node, what its main process keeps out (grpc), and what happens to the gateway when the
daemon dies, the gateway dies, or systemd signals both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, proc_state, query, sent_before_but_not_stored
from simnode import SimNode

from lnflow.lnd.gateway import GATEWAY

pytestmark = pytest.mark.e2e  # every test here starts a process


def count(conn: Any, table: str, where: str = "") -> int:
    sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
    return int(conn.execute(sql).fetchone()[0])


def gateway_of(d: Daemon) -> int:
    """The daemon's one child: its lnd gateway (started before the daemon connects)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        kids = [pid for pid in d.children() if proc_state(pid) not in (None, "Z")]
        if kids:
            (pid,) = kids
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert str(GATEWAY).encode() in cmdline
            return pid
        time.sleep(0.05)
    raise AssertionError("lnflowd started no gateway process")


def wait_gone(pid: int, timeout: float = 20) -> str | None:
    """Wait until the process has exited; its state then (None: reaped, Z: exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = proc_state(pid)
        if state in (None, "Z"):
            return state
        time.sleep(0.05)
    return proc_state(pid)


def test_gateway_imports_neither_lnflow_nor_protobuf_nor_sqlalchemy_nor_grpc() -> None:
    # grpc: the gateway speaks gRPC itself (lnflow/lnd/_http2.py); ssl is its TLS
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1], run_name='reader');"
        "print(sorted(m for m in sys.modules if sys.modules[m] is not None"
        " and m.split('.')[0] in ('lnflow', 'lnflowd', 'sqlalchemy', 'google', 'grpc', 'ssl')))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code, str(GATEWAY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "['ssl']"


def mapped(pid: int) -> str:
    """The files a process has mapped (its shared libraries among them)."""
    return Path(f"/proc/{pid}/maps").read_text()


def test_neither_the_daemon_nor_its_gateway_loads_grpc(tmp_path: Path) -> None:
    """cygrpc (which every grpc import loads) is mapped by neither process while they
    record: the gateway reads lnd over its own TLS connections."""
    args = ("--rate", "300", "--seed", "24", "--channels", "6")
    with SimNode(tmp_path / "lnd", args=args) as sim, Daemon(sim, tmp_path / "s.db") as d:
        d.wait_for(lambda c: count(c, "htlc_events") > 100)
        gateway = gateway_of(d)
        assert "cygrpc" not in mapped(d.pid)
        assert "cygrpc" not in mapped(gateway)
        assert "libssl" in mapped(gateway)  # it is the process that reads lnd
        assert d.stop() == 0


def test_daemon_modules_import_no_grpc() -> None:
    code = (
        "import sys, lnflowd.main, lnflowd.daemon, lnflowd.policy_cmd, lnflow.lnd, lnflow.facades;"
        "from lnflow import AsyncLNDgRPCClient;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_gateway_dies_with_the_daemon(tmp_path: Path) -> None:
    args = ("--rate", "300", "--seed", "21", "--channels", "6")
    with SimNode(tmp_path / "lnd", args=args) as sim, Daemon(sim, tmp_path / "s.db") as d:
        d.wait_for(lambda c: count(c, "htlc_events") > 100)
        gateway = gateway_of(d)
        assert d.kill() == -9
        assert wait_gone(gateway) in (None, "Z")


def test_gateway_killed_is_a_gap_then_a_new_gateway_records_and_the_old_one_is_reaped(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    args = ("--rate", "300", "--seed", "22", "--channels", "6")
    with SimNode(tmp_path / "lnd", args=args) as sim, Daemon(sim, db) as d:
        d.wait_for(lambda c: count(c, "htlc_events") > 100)
        first = gateway_of(d)
        os.kill(first, signal.SIGKILL)
        d.wait_for(lambda c: count(c, "stream_sessions") == 2)
        before = query(db, "SELECT count(*) FROM htlc_events")[0][0]
        d.wait_for(lambda c: count(c, "htlc_events") > before + 100)
        assert wait_gone(first) is None  # reaped by the daemon: no zombie
        second = gateway_of(d)
        assert second != first
        assert d.stop() == 0
        assert wait_gone(second) is None
    sessions = query(db, "SELECT id, ended_ns, end_reason FROM stream_sessions ORDER BY id")
    (id1, _, reason1), (id2, _, reason2) = sessions
    assert "gateway process exited unexpectedly" in reason1
    assert reason2 == "shutdown"
    per_session = dict(query(db, "SELECT session_id, count(*) FROM htlc_events GROUP BY 1"))
    assert per_session[id1] > 100 and per_session[id2] > 100


def test_sigterm_to_daemon_and_gateway_keeps_everything_sent_before_it(tmp_path: Path) -> None:
    """systemd signals the whole cgroup: the gateway keeps reading until lnflowd stops it."""
    sent_log = tmp_path / "sent.jsonl"
    args = ("--rate", "400", "--seed", "23", "--channels", "6", "--event-log", str(sent_log))
    with SimNode(tmp_path / "lnd", args=args) as sim, Daemon(sim, tmp_path / "s.db") as d:
        d.wait_for(lambda c: count(c, "htlc_events") > 500)
        gateway = gateway_of(d)
        signal_ns = time.time_ns()
        os.kill(gateway, signal.SIGTERM)
        assert d.stop(signal.SIGTERM) == 0
        assert wait_gone(gateway) is None
    before, missing = sent_before_but_not_stored(sent_log, signal_ns, tmp_path / "s.db")
    assert len(before) > 500
    assert missing == set()
    ((reason,),) = query(tmp_path / "s.db", "SELECT end_reason FROM stream_sessions")
    assert reason == "shutdown"


def _frames(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        kind, size = data[pos : pos + 1], int.from_bytes(data[pos + 1 : pos + 5], "little")
        out.append((kind, data[pos + 9 : pos + 5 + size]))  # past the stream id
        pos += 5 + size
    return out


def test_a_fault_inside_the_gateways_client_fails_the_stream_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in the client (not lnd's answer) must end the stream with an error the
    daemon acts on (it subscribes again), never leave it looking quiet forever."""
    import json
    import runpy

    module = runpy.run_path(str(GATEWAY), run_name="gateway_under_test")
    http2 = module["http2"]

    def broken(self: Any, *args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(http2.Call, "run", broken)
    r, w = os.pipe()
    cfg = {"rpcserver": "127.0.0.1:1", "cert_hex": "", "macaroon_hex": "00"}
    gateway = module["Gateway"](cfg, module["_Out"](w))
    stream = module["_Stream"](gateway, 7, "/routerrpc.Router/SubscribeHtlcEvents", [], ())
    stream.run()
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        frames = _frames(pipe.read())
    assert [k for k, _ in frames] == [b"S", b"X"]
    error = json.loads(frames[1][1])
    assert error["code"] == "INTERNAL" and "a bug" in error["details"]
