"""Keepalive against lnd < 0.17: a quiet HTLC stream must stay up.

lnd sets a gRPC ping policy only from 0.17; before, grpc-go's default applies: a
client ping less than 5 min after the previous one is a strike (reset when the server
sends something), the third strike ends the connection with GOAWAY "too_many_pings".
The simulator applies that policy when it plays an lnd < 0.17. Fifteen minutes are
too long for the suite, so both sides are scaled by the same factor: the simulator's
ping intervals (hidden ``--ping-scale``) and the daemon's keepalive (test-only
``_LNFLOW_KEEPALIVE_SCALE``); the ratios, which decide strikes, stay the same.
The true-time run: ``FAULTS_PING_SCALE=1 FAULTS_QUIET_S=900 pytest tests/faults/
test_keepalive.py -k 15_minutes -s`` (15 min).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from daemonproc import Daemon, query, run_lnflowctl
from simnode import SimNode

from lnflow.domain import LndVersion
from lnflow.lnd._proto import router_pb2, router_pb2_grpc
from lnflow.lnd.client import stream_options

SCALE = float(os.environ.get("FAULTS_PING_SCALE", "15"))  # 1 s here is 15 s for lnd
# 20 min at lnd's pace: three keepalive pings, enough for a GOAWAY if they were strikes
QUIET_S = float(os.environ.get("FAULTS_QUIET_S", "80"))
# the keepalive ratios are timing: one worker runs the timing-bound fault tests in turn
pytestmark = [pytest.mark.timeout(QUIET_S + 180), pytest.mark.xdist_group("timing")]
OLD = "0.16.4"  # the last release without lnd's ping policy
CHAN_A = (810_000 << 40) | (1 << 16)
CHAN_B = (810_001 << 40) | (2 << 16) | 1


def keepalive_ms(options: tuple[tuple[str, Any], ...]) -> int:
    return int(dict(options)["grpc.keepalive_time_ms"])


@pytest.mark.parametrize(
    ("version", "expected_ms"),
    [
        pytest.param(None, 360_000, id="unknown"),
        pytest.param(LndVersion(0, 10, 0, "0.10.0-beta"), 360_000, id="0.10"),
        pytest.param(LndVersion(0, 16, 4, "0.16.4-beta"), 360_000, id="0.16.4"),
        pytest.param(LndVersion(0, 17, 0, "0.17.0-beta"), 30_000, id="0.17.0"),
        pytest.param(LndVersion(0, 18, 3, "0.18.3-beta"), 30_000, id="0.18.3"),
    ],
)
def test_stream_keepalive_is_picked_by_lnd_version(
    version: LndVersion | None, expected_ms: int
) -> None:
    options = stream_options(version)
    assert keepalive_ms(options) == expected_ms
    assert dict(options)["grpc.http2.max_pings_without_data"] == 0  # keeps pinging
    assert keepalive_ms(stream_options(version, scale=15)) == round(expected_ms / 15)


@pytest.mark.e2e
def test_quiet_stream_to_old_lnd_stays_up_for_15_minutes_at_scale(tmp_path: Path) -> None:
    db = tmp_path / "lnflow.db"
    script = [
        {"op": "wait_subscribers", "count": 1},
        {"op": "sleep", "seconds": QUIET_S},
        {
            "event": "forward",
            "incoming_channel_id": CHAN_A,
            "incoming_htlc_id": 1,
            "outgoing_channel_id": CHAN_B,
            "outgoing_htlc_id": 1,
            "incoming_amt_msat": 1_001_000,
            "outgoing_amt_msat": 1_000_000,
        },
    ]
    with (
        SimNode(
            tmp_path / "lnd", script=script, lnd_version=OLD, args=("--ping-scale", f"{SCALE:g}")
        ) as sim,
        Daemon(sim, db, env={"_LNFLOW_KEEPALIVE_SCALE": f"{SCALE:g}"}) as d,
    ):
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM stream_sessions").fetchone()[0] == 1)
        started = time.monotonic()
        # the event comes after the quiet spell, on the stream opened before it
        d.wait_for(
            lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] == 1,
            timeout=QUIET_S + 60,
        )
        quiet_s = time.monotonic() - started
        code, _, err = run_lnflowctl("--db", str(db), "status", "--json")
        assert code == 0, err
        assert d.stop() == 0
    assert quiet_s >= QUIET_S - 1
    sessions = query(db, "SELECT id, end_reason FROM stream_sessions")
    assert sessions == [(1, "shutdown")]
    assert query(db, "SELECT session_id FROM htlc_events") == [(1,)]
    assert "too_many_pings" not in d.log().lower() and "too many pings" not in d.log().lower()
    print(
        f"\nquiet stream to lnd {OLD}: up {quiet_s:.0f}s at scale {SCALE:g} "
        f"(= {quiet_s * SCALE / 60:.0f} min), one session"
    )


def _subscribe_quietly(sim: SimNode, options: tuple[tuple[str, Any], ...], seconds: float) -> Any:
    """Subscribe with these channel options; the error that ended the call, or None."""
    from simnode import _MacaroonPlugin

    creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(sim.tlscert),
        grpc.metadata_call_credentials(_MacaroonPlugin(sim.macaroon("readonly"))),
    )
    channel = grpc.secure_channel(sim.rpcserver, creds, options=list(options))
    try:
        call = router_pb2_grpc.RouterStub(channel).SubscribeHtlcEvents(
            router_pb2.SubscribeHtlcEventsRequest(), timeout=seconds
        )
        try:
            for _ in call:
                pass
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return None
            return exc
        return None
    finally:
        channel.close()


@pytest.mark.e2e
def test_the_simulated_old_lnd_cuts_a_stream_that_pings_like_for_lnd_0_17(
    tmp_path: Path,
) -> None:
    """The control: lnd >= 0.17's keepalive (30 s) against the old policy is cut; the
    old-lnd keepalive is not. This is what picking by version avoids."""
    new = stream_options(LndVersion(0, 17, 0, "0.17.0-beta"), scale=SCALE)
    old = stream_options(LndVersion(0, 16, 4, "0.16.4-beta"), scale=SCALE)
    quiet = ("--rate", "0", "--ping-scale", f"{SCALE:g}")  # no traffic: nothing resets strikes
    with SimNode(tmp_path / "lnd", lnd_version=OLD, args=quiet) as sim:
        started = time.monotonic()
        cut = _subscribe_quietly(sim, new, 40)
        took = time.monotonic() - started
        assert cut is not None, "the 30 s keepalive survived the old policy"
        assert cut.code() == grpc.StatusCode.UNAVAILABLE
        assert "too many pings" in (cut.details() or "").lower()
        assert _subscribe_quietly(sim, old, 40) is None
    print(f"\n0.17 keepalive against lnd {OLD}: cut after {took:.0f}s (= {took * SCALE:.0f}s)")
