"""`lnflowctl whatif` on what the real daemon recorded from the simulated node over gRPC:
a channel whose senders fail on its fee, replayed at a lower and a higher rate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, db_arg, run_lnflowctl
from simnode import SimNode

from lnflow.domain import format_scid
from lnflow.store.engines import StoreLocation

# starts the simulated node, lnflowd or lnflowctl; the daemon records into either engine
pytestmark = [pytest.mark.e2e, pytest.mark.engines("sqlite", "postgresql")]

B = (830_001 << 40) | (2 << 16)  # too expensive: senders offer less than our fee
C = (830_002 << 40) | (3 << 16)  # incoming channels
D = (830_003 << 40) | (4 << 16)
E = (830_004 << 40) | (5 << 16)
AMOUNT = 100_000_000  # msat

CHANNELS: list[dict[str, Any]] = [
    {
        "op": "channel",
        "chan_id": B,
        "peer_alias": "bob",
        "capacity_sat": 2_000_000,
        "local_balance_sat": 1_000_000,
        "fee_base_msat": 1_000,
        "fee_rate_ppm": 1_000,
    },
    {"op": "channel", "chan_id": C, "peer_alias": "carol", "local_balance_sat": 900_000},
    {"op": "channel", "chan_id": D, "peer_alias": "dave", "local_balance_sat": 300_000},
    {"op": "channel", "chan_id": E, "peer_alias": "erin", "local_balance_sat": 300_000},
    # two settled forwards out of B at its fee: 1000 + 1000 ppm of 20,000,000 msat
    *(
        {
            "op": "forwarding_event",
            "chan_id_in": inc,
            "chan_id_out": B,
            "amt_in_msat": 20_000_000 + 21_000,
            "amt_out_msat": 20_000_000,
        }
        for inc in (C, D)
    ),
]


def fee_fail(htlc: int, inc: int, amt_out: int, fee: int) -> dict[str, Any]:
    return {
        "event": "link_fail",
        "incoming_channel_id": inc,
        "incoming_htlc_id": htlc,
        "outgoing_channel_id": B,
        "incoming_amt_msat": amt_out + fee,
        "outgoing_amt_msat": amt_out,
        "incoming_timelock": 900,
        "outgoing_timelock": 860,
        "wire_failure": "FEE_INSUFFICIENT",
        "failure_detail": "NO_DETAIL",
    }


# B's fee on 100,000,000 msat is 101,000 msat. Three senders offer less: one retries
# (75,000 then 80,000 msat: one payment), the others offer 85,000 and 90,000 msat.
EVENTS = [
    fee_fail(1, C, AMOUNT, 75_000),
    fee_fail(2, C, AMOUNT, 80_000),
    fee_fail(1, D, AMOUNT + 1, 85_000),
    fee_fail(1, E, AMOUNT + 2, 90_000),
]


def whatif(db: StoreLocation, *flags: str) -> dict[str, Any]:
    code, out, err = run_lnflowctl(
        "--db", db_arg(db), "whatif", format_scid(B), "--hours", "1", "--json", *flags
    )
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_whatif_recovers_fee_failures_at_a_lower_rate(
    tmp_path: Path, store_at: Callable[[str], StoreLocation]
) -> None:
    script = [*CHANNELS, {"op": "wait_subscribers", "count": 1}, *EVENTS]
    db = store_at("s.db")
    with (
        SimNode(tmp_path / "lnd", script=script) as sim,
        Daemon(sim, db, log=tmp_path / "d.log") as d,
    ):
        # every failure and forward recorded, and B's policy sampled
        d.wait_for(
            lambda c: (
                c.execute(
                    "SELECT (SELECT count(*) FROM forward_attempts WHERE outcome = 2),"
                    " (SELECT count(*) FROM forwards),"
                    " (SELECT count(*) FROM channel_samples WHERE chan_id = ?"
                    "  AND fee_rate_ppm IS NOT NULL) > 0",
                    (B,),
                ).fetchone()
                == (4, 2, 1)
            )
        )
        lower = whatif(db, "--fee-ppm", "790")  # 80,000 msat: every payment passes
        partly = whatif(db, "--fee-ppm", "840")  # 85,000: the retried one does not
        higher = whatif(db, "--fee-ppm", "1500")
        human_code, human, _ = run_lnflowctl(
            "--db", db_arg(db), "whatif", str(B), "--fee-ppm", "790"
        )
        assert d.stop() == 0

    assert (lower["current_fee_base_msat"], lower["current_fee_rate_ppm"]) == (1_000, 1_000)
    for doc in (lower, partly, higher):
        assert (doc["fee_failures"], doc["fee_clusters"], doc["forwards"]) == (4, 3, 2)
        assert doc["fees_before_msat"] == 2 * 21_000
        assert doc["served_anyway"] == doc["short_of_balance"] == 0
    assert lower["fee_failures_recovered"] == 3
    assert lower["recovered_fees_msat"] == (1_000 + 79_000) + (1_000 + 79_000) + (1_000 + 79_000)
    assert lower["forwards_repriced"] == 2
    assert lower["fees_after_msat"] == 2 * (1_000 + 15_800) + 240_000
    assert lower["fees_month_after_msat"] == lower["fees_after_msat"] * 720
    assert lower["fees_month_before_msat"] == 2 * 21_000 * 720
    assert partly["fee_failures_recovered"] == 2
    assert partly["recovered_fees_msat"] == 2 * (1_000 + 84_000)
    assert higher["fee_failures_recovered"] == 0
    assert higher["recovered_fees_msat"] == 0
    assert higher["fees_after_msat"] == 2 * (1_000 + 30_000)
    assert human_code == 0
    assert "fee failures recovered       3 of 3 payments (4 attempts)" in human
