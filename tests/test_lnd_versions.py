"""What lnflow records from the HTLC shapes real nodes send, per lnd version.

The real daemon against the simulated node over real gRPC into a real SQLite file,
once per lnd behaviour (0.15: no SubscribedEvent, no FinalHtlcEvent, no stream
headers before the first event, fee checked after the balance; 0.17: finals, fee
still after the balance; 0.21: the fee checked first). The script sends the shapes
that carry less than a full link fail (docs/lnd-versions.md), then runs the traffic
model on a channel that has no outbound liquidity.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from daemonproc import ATTEMPTS_SCID, EVENTS_SCID, Daemon, query, run_lnflowctl
from simnode import SimNode

from lnflow.analysis.classify import FailureClass
from lnflow.attempts import Outcome
from lnflow.domain import EventKind, EventType, FailureDetail, WireFailure, to_signed64

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]  # every test here starts a process

NS = 1_000_000_000
A = (810_000 << 40) | (1 << 16)  # payments come in here
B = (810_001 << 40) | (2 << 16) | 1  # and want to go out here: no local balance
MARKER_HTLC = 2_000_000
H = 1_000_000  # scripted htlc ids, clear of the traffic model's (from 0)


def _ev(kind: str, hin: int, cout: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "event": kind,
        "incoming_channel_id": A,
        "incoming_htlc_id": hin,
        "outgoing_channel_id": cout,
        **fields,
    }


def _final(hin: int) -> dict[str, Any]:
    return {"event": "final", "incoming_channel_id": A, "incoming_htlc_id": hin, "settled": False}


def _mailbox_fail(hin: int, detail: str) -> dict[str, Any]:
    # lnd's mailbox FailAdd: the chosen link, every amount and timelock 0
    return _ev(
        "link_fail",
        hin,
        B,
        wire_failure="TEMPORARY_CHANNEL_FAILURE",
        failure_detail=detail,
        failure_string="could not add downstream htlc",
    )


def _send_fail() -> dict[str, Any]:
    # an own payment failing at the first hop: no incoming side, no outgoing htlc id
    return {
        "event": "link_fail",
        "event_type": "SEND",
        "outgoing_channel_id": B,
        "outgoing_amt_msat": 5_000_000,
        "wire_failure": "TEMPORARY_CHANNEL_FAILURE",
        "failure_detail": "INSUFFICIENT_BALANCE",
    }


SHAPES = [
    # an HTLC interceptor fails htlc 1: FORWARD_FAIL with no FORWARD, outgoing htlc id 0
    _ev("forward_fail", H + 1, B),
    _final(H + 1),
    # a malformed onion: only the FINAL (nothing at all before lnd 0.16)
    _final(H + 2),
    _mailbox_fail(H + 3, "HTLC_ADD_FAILED"),
    _final(H + 3),
    _mailbox_fail(H + 4, "NO_DETAIL"),  # dust exposure
    _final(H + 4),
    _send_fail(),
    _send_fail(),
    _send_fail(),
]


def _script(start_ns: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = [
        {"op": "channel", "chan_id": A, "capacity_sat": 10_000_000, "demand_out": 0.0},
        {
            "op": "channel",
            "chan_id": B,
            "capacity_sat": 10_000_000,
            "local_balance_sat": 0,
            "fee_rate_ppm": 50_000,  # every failure a missed fee worth an opportunity
            "demand_in": 0.0,
        },
        {"op": "wait_subscribers", "count": 1, "timeout_s": 30},
        {"op": "sleep", "seconds": 1},  # a quiet stream first
    ]
    for i, line in enumerate(SHAPES):
        lines.append({**line, "timestamp_ns": start_ns + i * 1_000_000})
    lines.append({"op": "traffic", "seconds": 3, "rate": 200})
    lines.append(
        {
            "event": "settle",
            "event_type": "RECEIVE",
            "incoming_channel_id": A,
            "incoming_htlc_id": MARKER_HTLC,
        }
    )
    return lines


@pytest.mark.parametrize("version", ["0.15.5", "0.17.5", "0.21.0"])
def test_each_lnd_version_is_recorded_for_what_it_sends(tmp_path: Path, version: str) -> None:
    db = tmp_path / "s.db"
    triple = tuple(int(x) for x in version.split("."))
    has_final = triple >= (0, 16, 0)
    fee_first = triple >= (0, 18, 0)
    env = {"LNFLOW_RECORDER__ATTEMPT_TIMEOUT_S": "2"}
    script = _script(time.time_ns() - 60 * NS)
    marker = f"kind = {int(EventKind.SETTLE)} AND incoming_htlc_id = {MARKER_HTLC}"
    with (
        SimNode(tmp_path / "lnd", script=script, lnd_version=version) as sim,
        Daemon(sim, db, env=env) as d,
    ):
        d.wait_for(
            lambda c: c.execute(f"SELECT count(*) FROM htlc_events WHERE {marker}").fetchone()[0],
            timeout=90,  # a loaded machine may take its time to start both processes
        )
        d.wait_for(lambda c: _attempt(c, H + 2) is not None or not has_final, timeout=60)
        d.wait_for(lambda c: not _pending(c), timeout=60)
        code, out, _ = run_lnflowctl("--db", str(db), "status", "--json")
        assert code == 0
        status = json.loads(out)
        code, exported, _ = run_lnflowctl(
            "--db", str(db), "export", "--what", "attempts", "--format", "jsonl"
        )
        assert code == 0
        assert d.stop() == 0
    code, analysis, _ = run_lnflowctl("--db", str(db), "analyze", "--hours", "1", "--json")
    assert code == 0

    # the stream: SubscribedEvent and FinalHtlcEvent only from 0.16
    ((subscribed_ns,),) = query(db, "SELECT subscribed_ns FROM stream_sessions")
    assert (subscribed_ns is not None) is has_final
    finals = query(db, f"SELECT count(*) FROM htlc_events WHERE kind = {int(EventKind.FINAL)}")
    assert (finals[0][0] > 0) is has_final

    # 3: the interceptor's rejection is its own outcome, never a downstream failure
    attempts = {
        hin: (outcome, cls, amt_in, amt_out, missed, out_chan)
        for hin, outcome, cls, amt_in, amt_out, missed, out_chan in query(
            db,
            "SELECT incoming_htlc_id, outcome, failure_class, incoming_amt_msat,"
            f" outgoing_amt_msat, missed_fee_msat, outgoing_channel_id FROM {ATTEMPTS_SCID}"
            f" WHERE incoming_channel_id = {to_signed64(A)}"
            f" AND incoming_htlc_id BETWEEN {H} AND {H + 9}",
        )
    }
    assert attempts[H + 1] == (int(Outcome.REJECTED_LOCAL), None, None, None, 0, to_signed64(B))
    # 4: a malformed onion is a local failure of class other, its missed fee unknown
    if has_final:
        assert attempts[H + 2] == (
            int(Outcome.FAILED_LOCAL),
            int(FailureClass.OTHER),
            None,
            None,
            0,
            0,
        )
    else:
        assert H + 2 not in attempts  # lnd < 0.16 sends nothing for it
    # 5: mailbox failures are liquidity of the chosen channel, amounts unknown
    for hin in (H + 3, H + 4):
        assert attempts[hin] == (
            int(Outcome.FAILED_LOCAL),
            int(FailureClass.LIQUIDITY),
            None,
            None,
            0,
            to_signed64(B),
        )
    # 9: every own payment that failed at the first hop is kept
    sends = query(
        db,
        f"SELECT count(*) FROM {EVENTS_SCID} WHERE event_type = {int(EventType.SEND)}"
        f" AND kind = {int(EventKind.LINK_FAIL)} AND incoming_htlc_id = 0"
        f" AND outgoing_channel_id = {to_signed64(B)} AND outgoing_amt_msat = 5000000",
    )
    assert sends == [(3,)]

    # 17: with no outbound liquidity on B, which failure a cheap sender sees depends on
    # the version: lnd >= 0.18 checks the fee first
    by_wire = dict(
        query(
            db,
            "SELECT wire_failure, count(*) FROM forward_attempts a JOIN channel_refs r"
            f" ON r.id = a.outgoing_chan_ref WHERE r.chan_id = {to_signed64(B)}"
            f" AND outcome = {int(Outcome.FAILED_LOCAL)} GROUP BY wire_failure",
        )
    )
    assert by_wire.get(int(WireFailure.TEMPORARY_CHANNEL_FAILURE), 0) > 0
    assert (by_wire.get(int(WireFailure.FEE_INSUFFICIENT), 0) > 0) is fee_first
    details = {
        d
        for (d,) in query(
            db, "SELECT DISTINCT failure_detail FROM forward_attempts WHERE failure_detail > 0"
        )
    }
    assert int(FailureDetail.INSUFFICIENT_BALANCE) in details
    assert int(FailureDetail.ONION_DECODE) not in details  # lnd never sends it for forwards

    # status and export show the new outcome
    assert status["counts"]["attempts"]["rejected_local"] >= 1
    rows = [json.loads(line) for line in exported.splitlines() if line.strip()]
    assert any(r["outcome"] == "rejected_local" for r in rows)

    # the analysis counts them in the node totals, and says which missed fees are unknown
    report = json.loads(analysis)
    unknown = 3 if has_final else 2  # the malformed onion only where lnd reports it
    assert report["node"]["rejected"] >= 1
    assert report["node"]["unknown_amount"] >= unknown
    (opp,) = [o for o in report["opportunities"] if o["channel_id"] == B]
    assert re.search(r"; \d+ failures with unknown amount", opp["reason"])


def _attempt(conn: Any, hin: int) -> Any:
    return conn.execute(
        f"SELECT outcome FROM {ATTEMPTS_SCID} WHERE incoming_channel_id = ?"
        f" AND incoming_htlc_id = ? AND outcome = {int(Outcome.FAILED_LOCAL)}",
        (to_signed64(A), hin),
    ).fetchone()


def _pending(conn: Any) -> int:
    return int(
        conn.execute(
            f"SELECT count(*) FROM forward_attempts WHERE outcome = {int(Outcome.PENDING)}"
        ).fetchone()[0]
    )
