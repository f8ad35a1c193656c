"""The per-channel rollups (0005) against the raw rows they summarise, and their backfill."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RealStore
from daemonproc import ATTEMPTS_SCID, link_fail
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, Table, select, text

from lnflow.attempts import Outcome
from lnflow.domain import (
    FailureDetail,
    ForwardRecord,
    NodeInfo,
    WireFailure,
    to_signed64,
)
from lnflow.store import db
from lnflow.store.engines import StoreLocation
from lnflow.store.rollups import CLASS_COLUMNS, class_index
from lnflow.store.schema import (
    failure_channel_6h,
    failure_channel_daily,
    failure_channel_hourly,
    failure_rollups_hourly,
    forward_channel_6h,
    forward_channel_daily,
    forward_channel_hourly,
    forwards,
)
from lnflow.store.writer import NS_PER_HOUR, StoreWriter

pytestmark = [
    pytest.mark.e2e,  # every test here starts a process
    pytest.mark.engines("sqlite", "postgresql"),
]

S = 1_000_000_000
H = NS_PER_HOUR
T0 = 480_000 * H + 17 * 60 * S  # mid-hour, mid-day
NODE = NodeInfo("02" + "cc" * 32, "carol", "0.18.3-beta", "regtest", 1, True)
OUTS = (11 << 40, 12 << 40, (1 << 63) + 5)  # the last one above 2^63
INS = (21 << 40, 22 << 40, 23 << 40, 24 << 40, (1 << 64) - 3)
FAILURES = (
    (WireFailure.TEMPORARY_CHANNEL_FAILURE, FailureDetail.INSUFFICIENT_BALANCE),
    (WireFailure.TEMPORARY_CHANNEL_FAILURE, FailureDetail.HTLC_EXCEEDS_MAX),
    (WireFailure.FEE_INSUFFICIENT, FailureDetail.NO_DETAIL),
    (WireFailure.UNKNOWN_NEXT_PEER, FailureDetail.NO_DETAIL),
    (WireFailure.INVALID_ONION_HMAC, FailureDetail.NO_DETAIL),
)

failure_st = st.tuples(
    # seconds after the previous failure: mostly within the hour, sometimes hours later
    st.one_of(st.integers(1, 300), st.integers(1, 3 * 3600)),
    st.sampled_from(OUTS),
    st.sampled_from(INS),
    st.sampled_from(FAILURES),
    st.sampled_from((50_000, 70_000, 900_000)),
    st.integers(0, 3_000),  # fee
)
_EXAMPLES = itertools.count()
forward_st = st.tuples(
    st.integers(1, 4 * 3600), st.sampled_from(INS + OUTS), st.sampled_from(OUTS), st.integers(0, 99)
)


def _rows(engine: Engine, table: Table) -> dict[tuple[int, ...], dict[str, Any]]:
    key = [c.name for c in table.primary_key.columns]
    with engine.connect() as conn:
        return {
            tuple(row[k] for k in key): {k: v for k, v in row.items() if k not in key}
            for row in conn.execute(select(table)).mappings()
        }


def _expected_failures(
    engine: Engine,
) -> tuple[dict[Any, dict[str, Any]], dict[Any, Any], dict[Any, Any]]:
    """(hourly, 6-hourly, daily) rows counted from the raw attempts and the hourly rollups."""
    hourly: dict[tuple[int, ...], dict[str, Any]] = {}
    incoming: dict[tuple[int, ...], set[int]] = defaultdict(set)
    times: dict[tuple[int, ...], list[int]] = {}  # first and last failure of each hour
    r = failure_rollups_hourly

    def blank(key: tuple[int, ...]) -> dict[str, Any]:
        if key not in hourly:
            hourly[key] = {"clusters": 0, "missed_dedup_msat": 0, "unknown_amount": 0} | {
                col: 0 for pair in CLASS_COLUMNS for col in pair
            }
        return hourly[key]

    with engine.connect() as conn:
        for node, out, inc, cls, ts, fee, amt in conn.execute(
            text(
                "SELECT node_id, outgoing_channel_id, incoming_channel_id, failure_class,"
                " resolved_ns, missed_fee_msat, outgoing_amt_msat"
                f" FROM {ATTEMPTS_SCID} WHERE outcome = :outcome"
            ),
            {"outcome": int(Outcome.FAILED_LOCAL)},
        ):
            key = (node, ts // H, out)
            n_col, m_col = CLASS_COLUMNS[class_index(cls or 0)]
            row = blank(key)
            row[n_col] += 1
            row[m_col] += fee
            row["unknown_amount"] += amt is None  # lnd gave no amount (0025)
            incoming[key].add(inc)
            bounds = times.setdefault(key, [ts, ts])
            bounds[0], bounds[1] = min(bounds[0], ts), max(bounds[1], ts)
        # clusters and the deduplicated fee: as the hourly rollups count them
        for node, hour, out, clusters, dedup in conn.execute(
            select(
                r.c.node_id, r.c.hour, r.c.outgoing_channel_id, r.c.clusters, r.c.missed_dedup_msat
            )
        ):
            row = blank((node, hour, out))
            row["clusters"] += clusters
            row["missed_dedup_msat"] += dedup
    periods = []
    for per in (6, 24):
        daily: dict[tuple[int, ...], dict[str, Any]] = {}
        day_incoming: dict[tuple[int, ...], set[int]] = defaultdict(set)
        for (node, hour, out), row in hourly.items():
            key = (node, hour // per, out)
            day = daily.setdefault(
                key, {k: 0 for k in row} | {"first_hour": hour, "last_hour": hour}
            )
            for k, v in row.items():
                day[k] += v
            day["first_hour"] = min(day["first_hour"], hour)
            day["last_hour"] = max(day["last_hour"], hour)
            day_incoming[key] |= incoming[(node, hour, out)]
        periods.append((daily, day_incoming))
    (blocks, block_incoming), (daily, day_incoming) = periods
    for key, (first_ns, last_ns) in times.items():
        hourly[key] |= {"first_ns": first_ns, "last_ns": last_ns}
    for rows, sets in ((hourly, incoming), (blocks, block_incoming), (daily, day_incoming)):
        for key, row in rows.items():
            ins = sets[key]
            row |= {
                "incoming_lo": min(ins),
                "incoming_hi": max(ins),
                "incoming_many": len(ins) >= 3,
            }
    return hourly, blocks, daily


def _expected_forwards(engine: Engine, per: int) -> dict[tuple[int, ...], dict[str, int]]:
    result: dict[tuple[int, ...], dict[str, int]] = {}
    with engine.connect() as conn:
        for node, ts, cin, cout, fee in conn.execute(
            select(
                forwards.c.node_id,
                forwards.c.timestamp_ns,
                forwards.c.chan_id_in,
                forwards.c.chan_id_out,
                forwards.c.fee_msat,
            )
        ):
            period = ts // H // per
            for chan, side in ((cout, "out"), (cin, "in")):
                row = result.setdefault(
                    (node, period, chan),
                    {"forwards_out": 0, "fee_out_msat": 0, "forwards_in": 0, "fee_in_msat": 0},
                )
                row[f"forwards_{side}"] += 1
                row[f"fee_{side}_msat"] += fee
    return result


@pytest.mark.timeout(360)  # 25 stores, each migrated down to 0003 and up: ~50 s alone
# each example a store of its own from ``store_at`` (a database per example on PostgreSQL)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    failures=st.lists(failure_st, min_size=1, max_size=60),
    ledger=st.lists(forward_st, max_size=30),
    batch=st.integers(1, 9),
)
def test_rollups_equal_the_raw_rows_and_the_backfill_rebuilds_them(
    store_at: Callable[[str], StoreLocation], failures: list[Any], ledger: list[Any], batch: int
) -> None:
    path = store_at(f"s{next(_EXAMPLES)}.db")
    engine = db.open_engine(path)
    writer = StoreWriter(engine)
    node = writer.upsert_node(NODE, 1)
    session = writer.open_session(node, T0, "0.18.3-beta")
    ingestor = RealStore(path, engine, writer, node).ingestor()  # the usual windows
    events, ts = [], T0
    for htlc, (gap, out, inc, failure, amt, fee) in enumerate(failures):
        ts += gap * S
        wire, detail = failure
        events.append(link_fail(htlc, ts, out, inc, amt, fee, wire=wire, detail=detail))
    for i in range(0, len(events), batch):
        part = events[i : i + batch]
        ingestor.ingest(session, part, part[-1].timestamp_ns)
    ts = T0
    records = []
    for gap, cin, cout, fee in ledger:
        ts += gap * S
        records.append(ForwardRecord(ts, cin, cout, 1_000_000 + fee, 1_000_000, fee))
    for i in range(0, len(records), batch):
        writer.insert_forwards(node, records[i : i + batch])

    hourly, blocks, daily = _expected_failures(engine)
    tables = (
        failure_channel_hourly,
        failure_channel_6h,
        failure_channel_daily,
        forward_channel_hourly,
        forward_channel_6h,
        forward_channel_daily,
    )
    recorded = {t.name: _rows(engine, t) for t in tables}
    assert recorded["failure_channel_hourly"] == hourly
    assert recorded["failure_channel_6h"] == blocks
    assert recorded["failure_channel_daily"] == daily
    assert recorded["forward_channel_hourly"] == _expected_forwards(engine, 1)
    assert recorded["forward_channel_6h"] == _expected_forwards(engine, 6)
    assert recorded["forward_channel_daily"] == _expected_forwards(engine, 24)
    assert all(key[2] == to_signed64(key[2] % (1 << 64)) for key in hourly)

    # a store upgraded from 0003 gets the same rows from its hourly rollups
    db.downgrade(engine, "0003")
    db.upgrade(engine, path)
    assert {t.name: _rows(engine, t) for t in tables} == recorded
    engine.dispose()
