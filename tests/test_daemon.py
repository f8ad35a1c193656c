"""The real daemon against the simulated node: real gRPC, TLS, macaroons, SQLite, signals."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemonproc import (
    EVENTS_SCID,
    Daemon,
    query,
    run_lnflowd,
    sent_before_but_not_stored,
    sim_flags,
    stored,
)
from ports import free_port
from simnode import SimNode

from lnflow.domain import EventKind, from_signed64
from lnflow.store.engines import StoreLocation

pytestmark = pytest.mark.e2e  # every test here starts a process
# the recording tests run on both engines; --check and the settings touch no store
both_engines = pytest.mark.engines("sqlite", "postgresql")

T0 = 1_764_000_000_000_000_000
ALIAS_SCID = (16_000_321 << 40) | (5 << 16) | 1  # an alias SCID, >= 2**63
CHAN_A = (800_000 << 40) | (12 << 16)
CHAN_B = (800_123 << 40) | (7 << 16) | 1

# One of each variant, with the extremes the store must keep exactly.
EVENTS: list[dict[str, Any]] = [
    {
        "event": "forward",
        "event_type": "FORWARD",
        "incoming_channel_id": CHAN_A,
        "incoming_htlc_id": 1,
        "outgoing_channel_id": ALIAS_SCID,
        "outgoing_htlc_id": 9,
        "timestamp_ns": T0 + 1,
        "incoming_amt_msat": 1_002_000,
        "outgoing_amt_msat": 1_000_000,
        "incoming_timelock": 800_144,
        "outgoing_timelock": 800_104,
    },
    {
        "event": "settle",
        "event_type": "FORWARD",
        "incoming_channel_id": CHAN_A,
        "incoming_htlc_id": 1,
        "outgoing_channel_id": ALIAS_SCID,
        "outgoing_htlc_id": 9,
        "timestamp_ns": T0 + 2,
        "preimage": "11" * 32,
    },
    {
        "event": "forward_fail",
        "event_type": "FORWARD",
        "incoming_channel_id": CHAN_A,
        "incoming_htlc_id": 2,
        "outgoing_channel_id": CHAN_B,
        "outgoing_htlc_id": 4,
        "timestamp_ns": T0 + 3,
    },
    {
        "event": "link_fail",
        "event_type": "FORWARD",
        "incoming_channel_id": CHAN_B,
        "incoming_htlc_id": 3,
        "outgoing_channel_id": CHAN_A,
        "outgoing_htlc_id": 0,
        "timestamp_ns": T0 + 4,
        "incoming_amt_msat": 5_050_000,
        "outgoing_amt_msat": 5_000_000,
        "incoming_timelock": 900,
        "outgoing_timelock": 860,
        "wire_failure": "TEMPORARY_CHANNEL_FAILURE",
        "failure_detail": "INSUFFICIENT_BALANCE",
        "failure_string": "insufficient bandwidth to route htlc",
    },
    {
        "event": "link_fail",
        "event_type": 7,
        "incoming_channel_id": CHAN_B,
        "incoming_htlc_id": 4,
        "outgoing_channel_id": 0,
        "outgoing_htlc_id": 0,
        "timestamp_ns": T0 + 5,
        "incoming_amt_msat": 1000,
        "outgoing_amt_msat": 0,
        "wire_failure": 1234,
        "failure_detail": 99,
        "failure_string": "",
    },
    {
        "event": "final",
        "event_type": "UNKNOWN",
        "incoming_channel_id": CHAN_A,
        "incoming_htlc_id": 1,
        "outgoing_channel_id": 0,
        "outgoing_htlc_id": 0,
        "timestamp_ns": T0 + 6,
        "settled": True,
        "offchain": True,
    },
    {
        "event": "final",
        "event_type": "UNKNOWN",
        "incoming_channel_id": CHAN_B,
        "incoming_htlc_id": 3,
        "outgoing_channel_id": 0,
        "outgoing_htlc_id": 0,
        "timestamp_ns": T0 + 7,
        "settled": False,
        "offchain": False,
    },
    {
        "event": "settle",
        "event_type": "SEND",
        "incoming_channel_id": 0,
        "incoming_htlc_id": 0,
        "outgoing_channel_id": CHAN_B,
        "outgoing_htlc_id": 5,
        "timestamp_ns": T0 + 8,
    },
    {
        "event": "forward_fail",
        "event_type": "RECEIVE",
        "incoming_channel_id": ALIAS_SCID,
        "incoming_htlc_id": 77,
        "outgoing_channel_id": 0,
        "outgoing_htlc_id": 0,
        "timestamp_ns": T0 + 9,
    },
]

WIRE = {"TEMPORARY_CHANNEL_FAILURE": 15}
DETAIL = {"INSUFFICIENT_BALANCE": 6}
ETYPE = {"UNKNOWN": 0, "SEND": 1, "RECEIVE": 2, "FORWARD": 3}
COLUMNS = (
    "timestamp_ns, kind, event_type, incoming_channel_id, incoming_htlc_id, outgoing_channel_id,"
    " outgoing_htlc_id, incoming_amt_msat, outgoing_amt_msat, incoming_timelock,"
    " outgoing_timelock, wire_failure, failure_detail, failure_string, settled, offchain"
)


def expected_row(e: dict[str, Any]) -> tuple[Any, ...]:
    kind = EventKind[e["event"].upper()]
    info = kind in (EventKind.FORWARD, EventKind.LINK_FAIL)
    link = kind is EventKind.LINK_FAIL
    final = kind is EventKind.FINAL
    et = e["event_type"]
    return (
        e["timestamp_ns"],
        int(kind),
        ETYPE.get(et, et),
        e["incoming_channel_id"],
        e["incoming_htlc_id"],
        e["outgoing_channel_id"],
        e["outgoing_htlc_id"],
        e.get("incoming_amt_msat") if info else None,
        e.get("outgoing_amt_msat") if info else None,
        e.get("incoming_timelock", 0) if info else None,
        e.get("outgoing_timelock", 0) if info else None,
        WIRE.get(e.get("wire_failure"), e.get("wire_failure")) if link else None,
        DETAIL.get(e.get("failure_detail"), e.get("failure_detail")) if link else None,
        e.get("failure_string") if link else None,
        int(e["settled"]) if final else None,
        int(e["offchain"]) if final else None,
    )


def stored_rows(db: StoreLocation) -> list[tuple[Any, ...]]:
    rows = query(db, f"SELECT {COLUMNS} FROM {EVENTS_SCID} ORDER BY timestamp_ns")
    return [
        (
            r[0],
            r[1],
            r[2],
            from_signed64(r[3]),
            from_signed64(r[4]),
            from_signed64(r[5]),
            from_signed64(r[6]),
            *r[7:],
        )
        for r in rows
    ]


def count(db_conn: Any, table: str) -> int:
    return int(db_conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@both_engines
def test_every_stored_column_equals_what_the_node_sent(
    tmp_path: Path, store_at: Callable[[str], StoreLocation]
) -> None:
    db = store_at("s.db")
    script = [{"op": "wait_subscribers", "count": 1}, *EVENTS]
    with SimNode(tmp_path / "lnd", script=script) as sim, Daemon(sim, db) as d:
        d.wait_for(lambda c: count(c, "htlc_events") == len(EVENTS))
        assert d.stop() == 0
    assert stored_rows(db) == [expected_row(e) for e in EVENTS]


@both_engines
def test_stream_dropped_and_replayed_is_stored_once_in_two_sessions(
    tmp_path: Path, store_at: Callable[[str], StoreLocation]
) -> None:
    db = store_at("s.db")
    first, second = EVENTS[:5], EVENTS[5:]
    script = [
        {"op": "wait_subscribers", "count": 1},
        *first,
        {"op": "sleep", "seconds": 0.5},
        {"op": "drop_streams", "code": "UNAVAILABLE", "details": "lnd is shutting down"},
        {"op": "wait_subscribers", "count": 1},
        {"op": "replay", "count": 3},  # lnd may replay after a restart
        *second,
    ]
    with SimNode(tmp_path / "lnd", script=script) as sim, Daemon(sim, db) as d:
        # the replays were sent before the last event: through the store once it is
        d.wait_for(stored(EVENTS[-1]))
        assert d.stop() == 0
    assert stored_rows(db) == [expected_row(e) for e in EVENTS]
    sessions = query(db, "SELECT started_ns, ended_ns, end_reason FROM stream_sessions ORDER BY id")
    assert len(sessions) == 2
    assert "lnd is shutting down" in sessions[0][2] and sessions[1][2] == "shutdown"
    assert sessions[0][1] <= sessions[1][0]
    per_session = dict(query(db, "SELECT session_id, count(*) FROM htlc_events GROUP BY 1"))
    assert per_session == {1: len(first), 2: len(second)}


# SQLite alone: which events were sent before the signal is a race with the node's clock,
# kept to one engine (the two above hold what is stored on both)
def test_sigterm_while_events_flow_keeps_everything_sent_before_it(tmp_path: Path) -> None:
    sent_log = tmp_path / "sent.jsonl"
    args = ("--rate", "400", "--seed", "3", "--channels", "6", "--event-log", str(sent_log))
    with SimNode(tmp_path / "lnd", args=args) as sim, Daemon(sim, tmp_path / "s.db") as d:
        d.wait_for(lambda c: count(c, "htlc_events") > 500)
        signal_ns = time.time_ns()
        assert d.stop(signal.SIGTERM) == 0
    before, missing = sent_before_but_not_stored(sent_log, signal_ns, tmp_path / "s.db")
    assert len(before) > 500
    assert missing == set()


# ----------------------------------------------------------------------------- --check


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with SimNode(tmp_path_factory.mktemp("check") / "lnd", lnd_version="0.17.1") as node:
        yield node


def test_check_prints_alias_version_network(sim: SimNode) -> None:
    status, out, err = run_lnflowd(*sim_flags(sim), "--check")
    assert (status, err) == (0, "")
    assert out.splitlines() == ["alias:   lnflow-sim", "version: 0.17.1-beta", "network: regtest"]


def _one_line_error(status: int, err: str) -> str:
    assert status != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lnflowd: error: ")
    return lines[0]


def test_check_wrong_macaroon(sim: SimNode, tmp_path: Path) -> None:
    bad = tmp_path / "readonly.macaroon"
    bad.write_bytes(os.urandom(64))
    status, _, err = run_lnflowd(*sim_flags(sim), "--macaroonpath", str(bad), "--check")
    line = _one_line_error(status, err)
    assert status == 4
    assert "rejected the macaroon" in line and str(bad) in line and "--macaroonpath" in line


def test_check_missing_macaroon(sim: SimNode, tmp_path: Path) -> None:
    missing = tmp_path / "nope.macaroon"
    status, _, err = run_lnflowd(*sim_flags(sim), "--macaroonpath", str(missing), "--check")
    line = _one_line_error(status, err)
    assert f"macaroon not found at {missing}" in line


def test_check_missing_cert(sim: SimNode, tmp_path: Path) -> None:
    missing = tmp_path / "tls.cert"
    status, _, err = run_lnflowd(*sim_flags(sim), "--tlscertpath", str(missing), "--check")
    line = _one_line_error(status, err)
    assert f"TLS certificate not found at {missing}" in line and "--tlscertpath" in line


def test_check_tls_mismatch(sim: SimNode, tmp_path: Path) -> None:
    with SimNode(tmp_path / "other") as other:
        other_cert = other.tlscert_path
        status, _, err = run_lnflowd(*sim_flags(sim), "--tlscertpath", str(other_cert), "--check")
    line = _one_line_error(status, err)
    assert "TLS handshake" in line and "--tlscertpath" in line


def test_check_closed_port(sim: SimNode) -> None:
    port = free_port()
    flags = sim_flags(sim)
    flags[flags.index("--rpcserver") + 1] = f"127.0.0.1:{port}"
    status, _, err = run_lnflowd(*flags, "--check")
    line = _one_line_error(status, err)
    assert status == 5
    assert f"cannot reach LND at 127.0.0.1:{port}" in line and "--rpcserver" in line


def test_bad_config_key_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "lnflow.toml"
    cfg.write_text("[lnd]\nrpcservr = 'x'\n")
    status, _, err = run_lnflowd("--config", str(cfg), "--check")
    line = _one_line_error(status, err)
    assert status == 2 and "unknown key 'lnd.rpcservr'" in line


def test_unusable_store_path_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    status, _, err = run_lnflowd("--db", str(blocker / "lnflow.db"), "--lnddir", str(tmp_path))
    line = _one_line_error(status, err)
    assert status == 3 and "cannot create the store" in line and "--db" in line
    assert blocker.read_text() == ""
