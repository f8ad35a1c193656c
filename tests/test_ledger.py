"""The forwards ledger against the simulated node: keys, paging, re-syncs."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, query
from simnode import SimNode, make_channel

from lnflow.domain import to_signed64
from lnflow.lnd._proto import lightning_pb2, lightning_pb2_grpc
from lnflow.store.engines import StoreLocation

pytestmark = [
    pytest.mark.e2e,  # every test here starts a process
    pytest.mark.engines("sqlite", "postgresql"),
]

NS = 1_000_000_000
CHAN_A = (810_000 << 40) | (1 << 16)
CHAN_B = (810_001 << 40) | (2 << 16) | 1
PAGE = 100  # the smallest page the settings allow
ENV = {"LNFLOW_LEDGER__PAGE_SIZE": str(PAGE)}


def forwards(second: int, count: int, first: int = 0) -> list[dict[str, Any]]:
    """``count`` forwards inside one second, told apart by their amounts."""
    return [
        {
            "op": "forwarding_event",
            "timestamp_ns": second * NS + (first + i) * 1000,
            "chan_id_in": CHAN_A,
            "chan_id_out": CHAN_B,
            "amt_in_msat": 2_000_000 + second % 1000 * 1000 + first + i,
            "amt_out_msat": 1_000_000,
        }
        for i in range(count)
    ]


def served(sim: SimNode) -> list[tuple[int, int]]:
    """(second, amt_in_msat) of every forward the node serves, in lnd's order."""
    channel = make_channel(sim, "readonly")
    try:
        stub = lightning_pb2_grpc.LightningStub(channel)
        resp = stub.ForwardingHistory(
            lightning_pb2.ForwardingHistoryRequest(num_max_events=1_000_000), timeout=30
        )
        return [(f.timestamp, f.amt_in_msat) for f in resp.forwarding_events]
    finally:
        channel.close()


def stored(db: StoreLocation) -> list[tuple[int, int, int, int]]:
    """(second, amt_in_msat, ns within the second, chan_id_out) in key order."""
    rows = query(db, "SELECT timestamp_ns, amt_in_msat, chan_id_out FROM forwards ORDER BY 1")
    return [(ts // NS, amt, ts % NS, out) for ts, amt, out in rows]


def sync_once(sim: SimNode, db: StoreLocation) -> list[dict[str, Any]]:
    """Run the daemon until its first ledger pass is done; its log records of that run."""
    with Daemon(sim, db, env=ENV) as d:
        before = len(d.log().splitlines())  # the log file is shared by successive runs
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pages = [e for e in run_events(d, before) if e["event"] == "ledger_page"]
            if pages and pages[-1]["records"] < PAGE:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"no complete ledger pass:\n{d.log()}")
        assert d.stop() == 0
        return run_events(d, before)


def run_events(d: Daemon, skip_lines: int) -> list[dict[str, Any]]:
    found = []
    for line in d.log().splitlines()[skip_lines:]:
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def named(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event") == name]


def test_ledger_keeps_every_forward_of_a_second_from_lnd_0_12(
    tmp_path: Path, store_at: Callable[[str], StoreLocation]
) -> None:
    """lnd < 0.13 reports whole seconds: the ledger key is the second plus the record's
    rank in lnd's order within it, so many forwards per second are all kept, in order,
    and re-syncs (which re-read the last second) store none twice."""
    base = time.time_ns() // NS - 7200
    # a lone forward, a second of 250 (more than a page: paged inside the second), and
    # seconds straddling page boundaries
    script = forwards(base, 1) + forwards(base + 1, 250) + forwards(base + 2, 60)
    script += forwards(base + 3, 80) + forwards(base + 5, 7)
    db = store_at("s.db")
    lnddir = tmp_path / "lnd"
    with SimNode(lnddir, script=script, lnd_version="0.12.1") as sim:
        truth = served(sim)
        port = sim.port
        first = sync_once(sim, db)
    assert len(truth) == 398
    rows = stored(db)
    assert [(s, amt) for s, amt, _, _ in rows] == truth  # all of them, in lnd's order
    ranks = Counter[int]()
    for second, _, ns, _ in rows:
        assert ns == ranks[second]  # second * 10^9 + rank within the second
        ranks[second] += 1
    per_second = Counter(s for s, _ in truth)
    pages = named(first, "ledger_page")
    assert [p["index_offset"] for p in pages] == [0, 99, 199, 49]
    assert all(p["index_offset"] <= per_second[p["start_s"]] for p in pages)

    # lnd logs more forwards inside the last stored second and after it; the next sync
    # starts at that second's first record, so the ranks of the stored ones hold.
    more = forwards(base + 5, 5, first=7) + forwards(base + 6, 3)
    with SimNode(lnddir, script=script + more, lnd_version="0.12.1", port=port) as sim:
        truth = served(sim)
        second = sync_once(sim, db)
        third = sync_once(sim, db)  # and once more: nothing new
    assert named(third, "ledger_synced") == []
    (synced,) = named(second, "ledger_synced")
    assert synced["new_forwards"] == 8
    assert synced["from_s"] == base + 5
    rows = stored(db)
    assert [(s, amt) for s, amt, _, _ in rows] == truth
    assert len(rows) == len({(s, ns) for s, _, ns, _ in rows}) == 406
    rollup = query(db, "SELECT sum(forwards), sum(fee_msat) FROM forward_rollups_hourly")[0]
    assert rollup == query(db, "SELECT count(*), sum(fee_msat) FROM forwards")[0]
    assert {out for *_, out in rows} == {to_signed64(CHAN_B)}
