"""A ForwardingHistory record with a value the store cannot hold (>= 2^63) must not stop
the ledger: it is set apart at the lnd adapter, logged once with its identity and
counted, and every other record, on its page and after it, is stored; on both engines."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, query
from simnode import SimNode

from lnflow.domain import format_scid
from lnflow.store.engines import StoreLocation

pytestmark = [
    pytest.mark.e2e,  # every test here starts a process
    pytest.mark.engines("sqlite", "postgresql"),
]

NS = 1_000_000_000
CHAN_A = (810_000 << 40) | (1 << 16)
CHAN_B = (810_001 << 40) | (2 << 16) | 1
U64_MAX = (1 << 64) - 1


def forward(ts_ns: int, amt_in_msat: int, amt_out_msat: int = 1_000_000) -> dict[str, Any]:
    return {
        "op": "forwarding_event",
        "timestamp_ns": ts_ns,
        "chan_id_in": CHAN_A,
        "chan_id_out": CHAN_B,
        "amt_in_msat": amt_in_msat,
        "amt_out_msat": amt_out_msat,
    }


def test_a_forward_beyond_int64_is_rejected_counted_and_the_ledger_goes_on(
    store_at: Callable[[str], StoreLocation],
    tmp_path: Path,
) -> None:
    base = time.time_ns() // NS - 3600
    good = [forward((base + i // 3) * NS + i, 1_001_000 + i) for i in range(250)]
    bad_ns = (base + 40) * NS + 999_999  # inside the first page of 100 records
    bad_out_ns = (base + 70) * NS + 999_999  # on the second page
    script = [*good, forward(bad_ns, U64_MAX), forward(bad_out_ns, 2**63 + 1000, 2**63)]
    db = store_at("s.db")
    env = {"LNFLOW_LEDGER__PAGE_SIZE": "100", "LNFLOW_LEDGER__SYNC_INTERVAL_S": "5"}
    script.sort(key=lambda f: f["timestamp_ns"])
    with SimNode(tmp_path / "lnd", script=script) as sim, Daemon(sim, db, env=env) as d:
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM forwards").fetchone()[0] >= 250)
        # a second pass re-reads the last second; the rejected records stay logged once
        deadline = time.monotonic() + 30
        while len(d.events("ledger_page")) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert d.stop() == 0
    stored = {ts for (ts,) in query(db, "SELECT timestamp_ns FROM forwards")}
    assert stored == {f["timestamp_ns"] for f in good}
    rejected = d.events("ledger_record_rejected")
    assert [(r["timestamp_ns"], r["rejected_total"]) for r in rejected] == [
        (bad_ns, 1),
        (bad_out_ns, 2),
    ]
    first = rejected[0]
    assert first["timestamp_s"] == base + 40
    assert (first["chan_id_in"], first["chan_id_out"]) == (format_scid(CHAN_A), format_scid(CHAN_B))
    assert first["amt_in_msat"] == U64_MAX
    assert first["reason"] == f"amt_in_msat {U64_MAX} is beyond the store's signed 64-bit range"
    assert rejected[1]["fee_msat"] == 1000
    assert d.events("job_crashed") == []
    assert d.events("ledger_synced")[0]["rejected"] == 2
    rollup = query(db, "SELECT sum(forwards), sum(fee_msat) FROM forward_rollups_hourly")[0]
    assert rollup == query(db, "SELECT count(*), sum(fee_msat) FROM forwards")[0]
