"""Same events, same numbers (DESIGN §4–5): a scripted stream through the simulated node
and the real daemon, delivered in one subscription or cut at random points into several,
gives the same clusters, rollups and `lnflowctl analyze --json`.

The events are dated 40 minutes before the daemon's clock (lnd's clock running behind,
or a daemon catching up), so any clusters closed by the wall clock or by a batch or
stream boundary would show as a difference. The cut runs record on both engines, each
compared with the one subscription recorded into a SQLite file: same numbers whatever the
store.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, db_arg, query
from simnode import SimNode

from lnflow.domain import from_signed64
from lnflow.store.engines import StoreLocation

pytestmark = pytest.mark.e2e  # every test here starts a process

S = 1_000_000_000
A = (820_000 << 40) | (1 << 16)  # liquidity-starved outbound channel
B = (820_001 << 40) | (2 << 16)  # too expensive
C = (820_002 << 40) | (3 << 16)  # an incoming channel
E = (820_003 << 40) | (4 << 16)  # an incoming channel with an inbound discount
FOREIGN = 999 << 40
# fixed for the module: every run sees the same event times
BASE_NS = (time.time_ns() // S - 40 * 60) * S

CHANNELS: list[dict[str, Any]] = [
    {
        "op": "channel",
        "chan_id": A,
        "peer_alias": "alice",
        "local_balance_sat": 50_000,
        "fee_base_msat": 1_000,
        "fee_rate_ppm": 500,
    },
    {
        "op": "channel",
        "chan_id": B,
        "peer_alias": "bob",
        "fee_base_msat": 1_000,
        "fee_rate_ppm": 1_000,
    },
    {"op": "channel", "chan_id": C, "peer_alias": "carol", "local_balance_sat": 900_000},
    {
        "op": "channel",
        "chan_id": E,
        "peer_alias": "erin",
        "inbound_fee_base_msat": 0,
        "inbound_fee_rate_ppm": -200,
    },
    {
        "op": "forwarding_event",
        "timestamp_ns": BASE_NS + 5 * S,
        "chan_id_in": C,
        "chan_id_out": A,
        "amt_in_msat": 100_050_000,
        "amt_out_msat": 100_000_000,
    },
]


def _fail(
    htlc: int, t_s: float, inc: int, out: int, amt: int, fee: int, wire: str, detail: str
) -> dict[str, Any]:
    return {
        "event": "link_fail",
        "timestamp_ns": BASE_NS + int(t_s * S),
        "incoming_channel_id": inc,
        "incoming_htlc_id": htlc,
        "outgoing_channel_id": out,
        "incoming_amt_msat": amt + fee,
        "outgoing_amt_msat": amt,
        "incoming_timelock": 900,
        "outgoing_timelock": 860,
        "wire_failure": wire,
        "failure_detail": detail,
    }


def all_recorded(conn: Any) -> bool:
    """Whether the daemon stored every scripted event, the ledger's forward and the four
    channels' samples: the whole of the script, whatever the cuts."""
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM htlc_events), (SELECT count(*) FROM forwards),"
        " (SELECT count(DISTINCT chan_id) FROM channel_samples)"
    ).fetchone()
    return bool(counts == (len(EVENTS), 1, 4))


def _events() -> list[dict[str, Any]]:
    liq = ("TEMPORARY_CHANNEL_FAILURE", "INSUFFICIENT_BALANCE")
    fee = ("FEE_INSUFFICIENT", "NO_DETAIL")
    events: list[dict[str, Any]] = []
    htlc = 0
    for burst in range(3):  # retry bursts on A from C: 5 tries 20 s apart, bursts 200 s apart
        for k in range(5):
            htlc += 1
            t = 200 * burst + 20 * k
            events.append(_fail(htlc, t, C, A, 300_000_000, 100_000 + 7_000 * k, *liq))
    for k in range(6):  # senders via E short on B's fee even with E's inbound discount
        htlc += 1
        events.append(_fail(htlc, 30 + 70 * k, E, B, 100_000_000 + k % 2, 60_000 + 1_000 * k, *fee))
    htlc += 1
    events.append(_fail(htlc, 400, C, FOREIGN, 5_000_000, 7_000, "UNKNOWN_NEXT_PEER", "NO_DETAIL"))
    for k in range(3):  # settled forwards between the failures
        htlc += 1
        key = {"incoming_channel_id": C, "incoming_htlc_id": htlc, "outgoing_channel_id": B}
        t = BASE_NS + (100 + 150 * k) * S
        events.append(
            {
                "event": "forward",
                "timestamp_ns": t,
                **key,
                "outgoing_htlc_id": htlc,
                "incoming_amt_msat": 1_001_000,
                "outgoing_amt_msat": 1_000_000,
            }
        )
        events.append({"event": "settle", "timestamp_ns": t + S, **key, "outgoing_htlc_id": htlc})
    return sorted(events, key=lambda e: e["timestamp_ns"])


EVENTS = _events()

DERIVED = {
    "clusters": "SELECT c.id, r.chan_id, c.first_ns, c.last_ns, c.members, c.missed_fee_msat"
    " FROM failure_clusters c JOIN channel_refs r ON r.id = c.outgoing_chan_ref ORDER BY c.id",
    "rollups": "SELECT * FROM failure_rollups_hourly ORDER BY 1, 2, 3, 4, 5",
    "per channel": "SELECT * FROM failure_channel_hourly ORDER BY 1, 2, 3",
    "attempts": "SELECT r.chan_id, a.incoming_htlc_id, a.outcome, a.failure_class,"
    " a.missed_fee_msat, a.cluster_id FROM forward_attempts a"
    " JOIN channel_refs r ON r.id = a.incoming_chan_ref ORDER BY 1, 2",
}


def _record(
    tmp_path: Path, cuts: list[int], db: StoreLocation
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the script into ``db`` with the stream dropped before each event index in
    ``cuts``; the analysis document (without its times and gaps) and the derived tables."""
    script: list[dict[str, Any]] = [*CHANNELS, {"op": "wait_subscribers", "count": 1}]
    for i, event in enumerate(EVENTS):
        if i in cuts:
            script += [
                {"op": "drop_streams", "code": "UNAVAILABLE", "details": "lnd restarting"},
                {"op": "wait_subscribers", "count": 1, "timeout_s": 60},
            ]
        script.append(event)
    with SimNode(tmp_path / "lnd", script=script) as sim, Daemon(sim, db) as d:
        d.wait_for(all_recorded, timeout=90)
        sessions = query(db, "SELECT count(*) FROM stream_sessions")[0][0]
        ctl = [sys.executable, "-m", "lnflow.cli.ctl", "--db", db_arg(db)]
        out = subprocess.run(
            [*ctl, "analyze", "--hours", "1", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        samples = query(
            db,
            "SELECT DISTINCT chan_id, inbound_fee_base_msat, inbound_fee_rate_ppm"
            " FROM channel_samples ORDER BY chan_id",
        )
        assert d.stop() == 0
    assert sessions >= len(cuts) + 1
    assert {from_signed64(c): (b, p) for c, b, p in samples}[E] == (0, -200), samples
    doc = json.loads(out.stdout)
    # about this run's clock and its stream sessions (cut runs are observed less)
    for key in ("generated_at", "since", "until", "gaps", "observed_hours"):
        del doc[key]
    tables = {name: query(db, sql) for name, sql in DERIVED.items()}
    return doc, tables


@pytest.fixture(scope="module")
def one_subscription(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    tmp = tmp_path_factory.mktemp("one")
    return _record(tmp, [], tmp / "s.db")


def test_the_scenario_has_clusters_to_split(one_subscription: tuple[Any, Any]) -> None:
    doc, tables = one_subscription
    members = [row[4] for row in tables["clusters"]]
    assert max(members) >= 5 and len(members) < len(EVENTS)
    by_chan = {o["channel_id"]: o for o in doc["opportunities"]}
    assert by_chan[A]["clusters"] == 3 and by_chan[A]["failures"] == 15
    # B's offers came in over E, whose inbound discount counts in the offered ppm
    assert "inbound fee" in by_chan[B]["reason"]
    assert doc["node"]["failures"] == 15 + 6 + 1
    assert doc["node"]["missed_msat"] < doc["node"]["missed_raw_msat"]


@pytest.mark.engines("sqlite", "postgresql")
@pytest.mark.parametrize("seed", [1, 2])
def test_same_events_cut_into_subscriptions_give_the_same_numbers(
    tmp_path: Path,
    store_at: Callable[[str], StoreLocation],
    one_subscription: tuple[Any, Any],
    seed: int,
) -> None:
    cuts = sorted(random.Random(seed).sample(range(1, len(EVENTS)), 4))
    assert _record(tmp_path, cuts, store_at("s.db")) == one_subscription
