"""The node away (stopped, then back) and frozen (SIGSTOP, then SIGCONT), with the real
lnflowd against the simulated node over real gRPC into a real SQLite file.

Each test measures what docs/reliability.md reports ("The node away, frozen or slow;
...") and prints it (``pytest -s``): seconds from the node answering again to the new
session, the gap recorded against the real one, events sent against stored.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import EVENTS_SCID, Daemon, query, run_lnflowctl
from simnode import SimNode

from lnflow.domain import EventKind, from_signed64

# every test here starts a process; the outages are measured to the second, so one
# worker runs the timing-bound fault tests in turn (tests/faults/test_keepalive.py)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180), pytest.mark.xdist_group("timing")]

NS = 1_000_000_000
RATE = "100"  # HTLC events per second from the model
RECONNECT_S = 2.0  # the promise: a new session within 2 s of the node answering
SLACK_S = 1.0  # a loaded machine: the daemon's and the test's clocks are read apart
PROBE_EVERY_S = 10.0  # the defaults the daemon ships with
PROBE_TIMEOUT_S = 5.0


def sessions(db: Path) -> list[tuple[int, int, int | None, str | None]]:
    return [
        (r[0], r[1], r[2], r[3])
        for r in query(
            db, "SELECT id, started_ns, ended_ns, end_reason FROM stream_sessions ORDER BY id"
        )
    ]


def stored_keys(db: Path) -> set[tuple[int, ...]]:
    return {
        (r[0], from_signed64(r[1]), from_signed64(r[2]), from_signed64(r[3]), from_signed64(r[4]))
        for r in query(
            db,
            "SELECT kind, incoming_channel_id, incoming_htlc_id, outgoing_channel_id,"
            f" outgoing_htlc_id FROM {EVENTS_SCID}",
        )
    }


def sent(log: Path) -> list[dict[str, Any]]:
    """The simulator's event log: every event written to a subscriber."""
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    return [x for x in lines if x["event"]["event"] != "subscribed"]


def key(line: dict[str, Any]) -> tuple[int, ...]:
    e = line["event"]
    return (
        EventKind[e["event"].upper()].value,
        e["incoming_channel_id"],
        e["incoming_htlc_id"],
        e["outgoing_channel_id"],
        e["outgoing_htlc_id"],
    )


def status(db: Path) -> dict[str, Any]:
    code, out, err = run_lnflowctl("--db", str(db), "status", "--json")
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def wait_until(predicate: Any, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` held (polled every 0.1 s)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def sim_args(seed: int, log: Path) -> tuple[str, ...]:
    return ("--rate", RATE, "--seed", str(seed), "--event-log", str(log))


@pytest.fixture
def lnddir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "lnd"


def test_node_back_after_an_outage_is_recorded_again_within_2s_with_the_gap_to_the_second(
    tmp_path: Path, lnddir: Path
) -> None:
    db = tmp_path / "lnflow.db"
    log = tmp_path / "sent.jsonl"
    outage_s = 12.0
    sim = SimNode(lnddir, args=sim_args(1, log)).start()
    d = Daemon(sim, db).start()
    try:
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] > 200)
        down_ns = time.time_ns()
        assert sim.stop() == 0
        wait_until(lambda: not status(db)["stream"]["connected"], 20, "shown disconnected")
        time.sleep(max(0.0, outage_s - (time.time_ns() - down_ns) / NS))
        # lnd comes back on the same port and credentials (another seed: new HTLC ids)
        sim = SimNode(lnddir, port=sim.port, args=sim_args(2, log))
        sim.start()
        up_ns = time.time_ns()  # it answers from here on
        wait_until(lambda: len(sessions(db)) == 2, 30, "a second session")
        n = len(stored_keys(db))
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] > n + 200)
        stop_ns = time.time_ns()
        assert d.stop() == 0
    finally:
        if d.running():
            d.kill()
        sim.stop()

    (_, _, end1, reason1), (_, start2, _, reason2) = sessions(db)
    assert end1 is not None and reason1 and "lnd unreachable" in reason1
    assert reason2 == "shutdown"
    reconnect_s = (start2 - up_ns) / NS
    recorded_s = (start2 - end1) / NS
    real_s = (up_ns - down_ns) / NS
    assert reconnect_s <= RECONNECT_S + SLACK_S, reconnect_s
    # the gap starts when lnd went (within the stop's own time) and ends on reconnecting
    assert real_s - SLACK_S <= recorded_s <= real_s + RECONNECT_S + SLACK_S
    # every event lnd wrote to our subscriptions before the daemon was told to stop is
    # stored, each once; one written after SIGTERM, as the stream closes, is lnd's to lose
    lines = sent(log)
    written = {key(x) for x in lines}
    stored = stored_keys(db)
    missing = [
        f"{key(x)} sent {(x['sent_ns'] - stop_ns) / NS:+.3f}s from the stop"
        for x in lines
        if x["sent_ns"] < stop_ns and key(x) not in stored
    ]
    assert not missing, missing
    assert stored <= written
    print(
        f"\nnode away {real_s:.1f}s: new session {reconnect_s:.2f}s after it answered; "
        f"gap recorded {recorded_s:.1f}s of a real {real_s:.1f}s; "
        f"events sent {len(written)}, stored {len(stored)}"
    )


def test_frozen_node_is_shown_unreachable_and_the_recorded_gap_is_the_real_one(
    tmp_path: Path, lnddir: Path
) -> None:
    db = tmp_path / "lnflow.db"
    log = tmp_path / "sent.jsonl"
    frozen_s = 30.0
    with SimNode(lnddir, args=sim_args(1, log)) as sim, Daemon(sim, db) as d:
        assert sim.pid is not None
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] > 200)
        assert status(db)["stream"]["connected"] is True
        frozen_ns = time.time_ns()
        os.kill(sim.pid, signal.SIGSTOP)
        try:
            detect_s = wait_until(
                lambda: not status(db)["stream"]["connected"],
                PROBE_EVERY_S + PROBE_TIMEOUT_S + 15,
                "a frozen node shown disconnected",
            )
            state = query(db, "SELECT stream_state, last_error FROM daemon_state")[0]
            assert state[0] in ("unreachable", "reconnecting")
            # while it stays frozen no session counts as connected
            time.sleep(max(0.0, frozen_s - (time.time_ns() - frozen_ns) / NS))
            during = sessions(db)
            assert len(during) == 1 and during[0][2] is not None
            assert status(db)["stream"]["connected"] is False
        finally:
            thawed_ns = time.time_ns()
            os.kill(sim.pid, signal.SIGCONT)
        wait_until(lambda: len(sessions(db)) == 2, 30, "a session after the thaw")
        wait_until(lambda: status(db)["stream"]["connected"], 30, "shown connected again")
        n = len(stored_keys(db))
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] > n + 200)
        stop_ns = time.time_ns()
        assert d.stop() == 0

    (_, _, end1, reason1), (_, start2, _, _) = sessions(db)
    assert end1 is not None and reason1 is not None
    assert reason1.startswith("lnd stopped answering: ") and "timed out" in reason1
    assert "tls.cert" not in reason1
    assert state[1] and "timed out" in state[1]
    recorded_s = (start2 - end1) / NS
    real_s = (thawed_ns - frozen_ns) / NS
    reconnect_s = (start2 - thawed_ns) / NS
    # the session ends where lnd was last heard from, not when the probe gave up
    assert abs((end1 - frozen_ns) / NS) <= RECONNECT_S
    assert reconnect_s <= RECONNECT_S + SLACK_S
    assert abs(recorded_s - real_s) <= RECONNECT_S + SLACK_S
    # every event written before the freeze, and every one written to the new
    # subscription before the daemon was told to stop, is stored; the stream given up
    # on may get a few at the thaw, and events written after SIGTERM are lnd's to lose
    lines = sent(log)
    last_sub = max(x["sub"] for x in lines)
    kept = [
        x
        for x in lines
        if x["sent_ns"] < frozen_ns or (x["sub"] == last_sub and x["sent_ns"] < stop_ns)
    ]
    stored = stored_keys(db)
    missing = [
        f"{key(x)} sub {x['sub']} sent {(x['sent_ns'] - frozen_ns) / NS:+.3f}s from the freeze,"
        f" {(x['sent_ns'] - stop_ns) / NS:+.3f}s from the stop"
        for x in kept
        if key(x) not in stored
    ]
    assert not missing, missing
    lost = {key(x) for x in lines} - stored
    print(
        f"\nnode frozen {real_s:.1f}s: shown disconnected after {detect_s:.1f}s; "
        f"gap recorded {recorded_s:.1f}s of a real {real_s:.1f}s; new session "
        f"{reconnect_s:.2f}s after the thaw; events sent {len({key(x) for x in lines})}, "
        f"stored {len(stored)}, written to the abandoned stream at the thaw {len(lost)}"
    )


def test_node_frozen_at_start_up_is_waited_for_and_named_a_timeout(
    tmp_path: Path, lnddir: Path
) -> None:
    db = tmp_path / "lnflow.db"
    with SimNode(lnddir, args=("--rate", RATE, "--seed", "5")) as sim:
        assert sim.pid is not None
        os.kill(sim.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            d = Daemon(sim, db).start()
            # grpc gives up the TLS handshake after 20 s: two attempts, both timeouts
            wait_until(lambda: len(d.events("lnd_unreachable")) >= 2, 60, "two timeouts")
            assert d.running()
            frozen_s = time.monotonic() - started
        finally:
            thawed_ns = time.time_ns()
            os.kill(sim.pid, signal.SIGCONT)
        try:
            d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] > 50)
            assert d.stop() == 0
        finally:
            if d.running():
                d.kill()
    (_, start1, _, _), *_ = sessions(db)
    connect_s = (start1 - thawed_ns) / NS
    # the pending GetInfo is answered at the thaw; then GetVersion, jobs and the stream
    assert connect_s <= RECONNECT_S + SLACK_S
    errors = [e["error"] for e in d.events("lnd_unreachable")]
    assert all("tls.cert" not in e for e in errors), errors
    assert any("did not answer the TLS handshake" in e for e in errors), errors
    assert all("timed out" in e or "no answer within" in e for e in errors), errors
    print(
        f"\nnode frozen at start-up {frozen_s:.0f}s: still waiting, {len(errors)} reasons "
        f"logged, all timeouts; first session {connect_s:.2f}s after the thaw"
    )
