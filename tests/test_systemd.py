"""lnflowd under systemd: the sd_notify protocol over a real datagram socket, and the unit."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from daemonproc import Daemon
from simnode import SimNode

pytestmark = pytest.mark.e2e  # every test here starts a process

ROOT = Path(__file__).resolve().parent.parent


def _messages(sock: socket.socket, until: str, timeout: float = 20) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.extend(data.splitlines())
        if until in got:
            return got
    raise AssertionError(f"no {until} in {got}")


def test_ready_watchdog_and_stopping_are_sent(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        env = {
            "NOTIFY_SOCKET": str(path),
            "WATCHDOG_USEC": "30000000",
            "LNFLOW_RECORDER__HEARTBEAT_S": "1",
        }
        with SimNode(tmp_path / "lnd") as sim:
            d = Daemon(sim, tmp_path / "s.db", env=env).start()
            try:
                assert "READY=1" in _messages(sock, "READY=1")
                assert "WATCHDOG=1" in _messages(sock, "WATCHDOG=1")
            finally:
                status = d.stop()
            assert status == 0
            assert "STOPPING=1" in _messages(sock, "STOPPING=1", timeout=5)


def test_ready_is_sent_even_while_lnd_is_unreachable(tmp_path: Path) -> None:
    """systemd must not time the start out while lnd itself is still starting."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        with SimNode(tmp_path / "lnd") as sim:
            pass  # credentials exist, nothing listens any more
        d = Daemon(sim, tmp_path / "s.db", env={"NOTIFY_SOCKET": str(path)}).start()
        try:
            messages = _messages(sock, "READY=1")
            assert any(m.startswith("STATUS=waiting for lnd") for m in messages)
        finally:
            assert d.stop() == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_is_rated_ok_or_better() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(ROOT / "systemd/lnflowd.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    last = [line for line in out.stdout.splitlines() if "Overall exposure level" in line]
    assert last, out.stdout + out.stderr
    # "→ Overall exposure level for lnflowd.service: 1.4 OK 🙂": the rating word after the score
    verdict = last[0].split(":")[-1].split()
    assert verdict[1] in {"SAFE", "OK"}, last[0]
