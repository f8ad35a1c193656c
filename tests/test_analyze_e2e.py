"""A scripted day through the simulated node and the real daemon, then `lnflowctl analyze
--json` against numbers computed by hand from DESIGN §5."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, db_arg
from simnode import SimNode

from lnflow.domain import format_scid
from lnflow.store.engines import StoreLocation

pytestmark = [
    pytest.mark.e2e,  # every test here starts a process
    pytest.mark.engines("sqlite", "postgresql"),
]

A = (810_000 << 40) | (1 << 16)  # liquidity-starved outbound channel
B = (810_001 << 40) | (2 << 16)  # too expensive: senders offer less than our fee
C = (810_002 << 40) | (3 << 16)  # mostly local balance: a rebalance source
D = (810_003 << 40) | (4 << 16)
E = (16_000_100 << 40) | (5 << 16) | 1  # alias SCID >= 2**63, an incoming channel

CHANNELS = [
    {
        "op": "channel",
        "chan_id": A,
        "peer_alias": "alice",
        "capacity_sat": 1_000_000,
        "local_balance_sat": 50_000,
        "local_reserve_sat": 10_000,
        "remote_reserve_sat": 10_000,
        "fee_base_msat": 1_000,
        "fee_rate_ppm": 500,
        "max_htlc_msat": 990_000_000,
    },
    {
        "op": "channel",
        "chan_id": B,
        "peer_alias": "bob",
        "capacity_sat": 2_000_000,
        "local_balance_sat": 1_000_000,
        "fee_base_msat": 1_000,
        "fee_rate_ppm": 1_000,
    },
    {
        "op": "channel",
        "chan_id": C,
        "peer_alias": "carol",
        "capacity_sat": 1_000_000,
        "local_balance_sat": 900_000,
    },
    {
        "op": "channel",
        "chan_id": D,
        "peer_alias": "dave",
        "capacity_sat": 1_000_000,
        "local_balance_sat": 300_000,
    },
    {
        "op": "channel",
        "chan_id": E,
        "peer_alias": "erin",
        "capacity_sat": 1_000_000,
        "local_balance_sat": 400_000,
    },
    # two settled forwards out of A (the ledger: successes)
    {
        "op": "forwarding_event",
        "chan_id_in": C,
        "chan_id_out": A,
        "amt_in_msat": 100_050_000,
        "amt_out_msat": 100_000_000,
    },
    {
        "op": "forwarding_event",
        "chan_id_in": D,
        "chan_id_out": A,
        "amt_in_msat": 20_010_000,
        "amt_out_msat": 20_000_000,
    },
]


def link_fail(
    htlc: int, inc: int, out: int, amt_out: int, fee: int, wire: str, detail: str
) -> dict[str, Any]:
    return {
        "event": "link_fail",
        "incoming_channel_id": inc,
        "incoming_htlc_id": htlc,
        "outgoing_channel_id": out,
        "incoming_amt_msat": amt_out + fee,
        "outgoing_amt_msat": amt_out,
        "incoming_timelock": 900,
        "outgoing_timelock": 860,
        "wire_failure": wire,
        "failure_detail": detail,
    }


def final(htlc: int, inc: int) -> dict[str, Any]:
    return {
        "event": "final",
        "incoming_channel_id": inc,
        "incoming_htlc_id": htlc,
        "settled": False,
    }


LIQ = ("TEMPORARY_CHANNEL_FAILURE", "INSUFFICIENT_BALANCE")
FEE = ("FEE_INSUFFICIENT", "NO_DETAIL")
EVENTS = [
    # A: a retry burst from one sender via C: 4 failures, 1 cluster, missed = the largest fee
    link_fail(1, C, A, 200_000_000, 100_000, *LIQ),
    final(1, C),
    link_fail(2, C, A, 200_000_000, 120_000, *LIQ),
    link_fail(3, C, A, 200_000_000, 150_000, *LIQ),
    link_fail(4, C, A, 200_000_000, 130_000, *LIQ),
    # B: three different senders and amounts: 3 clusters; offered 790, 840, 890 ppm
    link_fail(1, D, B, 100_000_000, 80_000, *FEE),
    link_fail(1, E, B, 100_000_001, 85_000, *FEE),
    link_fail(5, C, B, 100_000_002, 90_000, *FEE),
    # a foreign SCID (not our channel): node totals only
    link_fail(2, D, 999 << 40, 5_000_000, 7_000, "UNKNOWN_NEXT_PEER", "NO_DETAIL"),
]


def expected_opportunities() -> list[dict[str, Any]]:
    """DESIGN §5 by hand."""
    # B: failures 3, clusters 3 (no shared incoming channel or amount), successes 0
    b_missed = 80_000 + 85_000 + 90_000  # every cluster has one member: dedup = raw
    b_urgency = round(min(40, b_missed / 1e6 * 4) + min(30, 3 / 10 * 30) + 1.0 * 30)  # 40
    # offered ppm = (missed - base 1000) * 1e6 / amount; median of 790, 840, 890 (floored)
    offered = sorted(
        (fee - 1_000) * 1_000_000 // amt
        for fee, amt in ((80_000, 100_000_000), (85_000, 100_000_001), (90_000, 100_000_002))
    )
    b_fee = max(offered[1], -(-7 * 1_000 // 10), 1)
    # A: 4 failures in one cluster, 2 successes
    a_raw = 100_000 + 120_000 + 150_000 + 130_000
    a_missed = 150_000
    a_rate = 4 / 6
    a_urgency = int(min(40, a_missed / 1e6 * 4) + min(30, 4 / 10 * 30) + a_rate * 30 + 0.5)
    # liquidity 100 %: median 200 000 sat <= usable 980 000 -> rebalance_outbound
    a_amount = max(200_000, 1_000_000 // 2) - 50_000
    zero = {"failures": 0, "missed_msat": 0}
    classes = ["liquidity", "max_htlc", "fee", "availability", "policy", "other"]
    return [
        {
            "rank": 1,
            "channel_id": B,
            "scid": format_scid(B),
            "peer_alias": "bob",
            "failures": 3,
            "clusters": 3,
            "successes": 0,
            "failure_rate": 1.0,
            "missed_msat": b_missed,
            "missed_raw_msat": b_missed,
            "missed_sats": b_missed / 1000,
            "potential_monthly_sats": b_missed * 720 / 1 / 1000,
            "urgency_score": b_urgency,
            "confidence": "medium",
            "recommended_action": "lower_fees",
            "estimated": False,
            "by_class": {
                c: ({"failures": 3, "missed_msat": b_missed} if c == "fee" else zero)
                for c in classes
            },
            "capacity_sat": 2_000_000,
            "local_balance_sat": 1_000_000,
            "outbound_fee_ppm": 1_000,
            "suggested_fee_ppm": b_fee,
        },
        {
            "rank": 2,
            "channel_id": A,
            "scid": format_scid(A),
            "peer_alias": "alice",
            "failures": 4,
            "clusters": 1,
            "successes": 2,
            "failure_rate": a_rate,
            "missed_msat": a_missed,
            "missed_raw_msat": a_raw,
            "missed_sats": a_missed / 1000,
            "potential_monthly_sats": a_missed * 720 / 1 / 1000,
            "urgency_score": a_urgency,
            "confidence": "low",
            "recommended_action": "rebalance_outbound",
            "estimated": False,
            "by_class": {
                c: ({"failures": 4, "missed_msat": a_raw} if c == "liquidity" else zero)
                for c in classes
            },
            "capacity_sat": 1_000_000,
            "local_balance_sat": 50_000,
            "outbound_fee_ppm": 500,
            "suggested_amount_sat": a_amount,
        },
    ]


def test_analyze_json_equals_the_hand_computed_expectation(
    tmp_path: Path, store_at: Callable[[str], StoreLocation]
) -> None:
    script = [*CHANNELS, {"op": "wait_subscribers", "count": 1}, *EVENTS]
    db = store_at("s.db")
    with SimNode(tmp_path / "lnd", script=script) as sim, Daemon(sim, db) as d:
        d.wait_for(
            lambda c: (
                c.execute(
                    "SELECT (SELECT count(*) FROM forward_attempts WHERE outcome = 2),"
                    " (SELECT count(*) FROM forwards), (SELECT count(*) FROM channels)"
                ).fetchone()
                == (8, 2, 5)
            )
        )
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "lnflow.cli.ctl",
                "--db",
                db_arg(db),
                "analyze",
                "--hours",
                "1",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert d.stop() == 0
    doc = json.loads(out.stdout)
    assert doc["window_hours"] == 1
    assert doc["gaps"] == []
    # every local failure, the foreign SCID's included: A's burst counts once deduplicated
    a_raw = 100_000 + 120_000 + 150_000 + 130_000
    assert doc["node"] == {
        "failures": 8,
        "missed_msat": 150_000 + 255_000 + 7_000,
        "missed_raw_msat": a_raw + 255_000 + 7_000,
        "unknown_amount": 0,
        "rejected": 0,
    }
    got = doc["opportunities"]
    expected = expected_opportunities()
    assert [o["channel_id"] for o in got] == [B, A]
    for want, have in zip(expected, got, strict=True):
        for key, value in want.items():
            assert have[key] == value, (want["scid"], key)
        assert "\n" not in have["reason"]
    # the reasons name the numbers behind them
    assert "840" in got[0]["reason"] or str(expected[0]["suggested_fee_ppm"]) in got[0]["reason"]
    assert "liquidity" in got[1]["reason"]
    # the rebalance plan moves C's excess (900 000 - 500 000) towards A, at most 0.8 x 500 ppm
    assert doc["rebalance_plan"] == [
        {
            "target_channel_id": A,
            "target_scid": format_scid(A),
            "source_channel_ids": [C],
            "source_scids": [format_scid(C)],
            "amount_sat": 400_000,
            "max_cost_ppm": 400,
        }
    ]
