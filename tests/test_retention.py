"""Retention on real SQLite files: TTLs, batches, the size budget, page reclaim.

Boundary rule under test: a row whose time equals the cutoff (now − TTL) is kept, one
nanosecond older is deleted; an hourly rollup is deleted once its whole hour ends at or
before the cutoff.
"""

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import RealStore
from sqlalchemy import Engine, Table, func, insert, select, text

from lnflow.config import RetentionSettings, Settings, load_settings
from lnflow.domain import ForwardRecord, NodeInfo
from lnflow.errors import ConfigError
from lnflow.recording import StoreThread
from lnflow.store.retention import (
    NS_PER_DAY,
    NS_PER_HOUR,
    RETAINED,
    SIZE_BUDGET_ORDER,
    Pruner,
    PruneStepResult,
    Retained,
)
from lnflow.store.rollups import CLASS_COLUMNS
from lnflow.store.schema import (
    channel_samples,
    failure_channel_6h,
    failure_channel_daily,
    failure_channel_hourly,
    failure_clusters,
    failure_rollups_hourly,
    forward_attempts,
    forward_channel_daily,
    forward_rollups_hourly,
    forwards,
    htlc_events,
    retention_horizons,
    stream_sessions,
)
from lnflow.store.writer import StoreWriter
from lnflowd.daemon import Daemon

pytestmark = pytest.mark.engines("sqlite", "postgresql")

S = 1_000_000_000
NODE = NodeInfo("02" + "cd" * 32, "carol", "0.18.3-beta", "regtest", 100, True)
# Not on an hour boundary, so the cutoff falls inside an hour.
NOW = 1_800_000_000 * 1_000_000_000 + 1_234_567_891
DEFAULT_TTL = {
    name: int(value)
    for name, value in RetentionSettings().model_dump().items()
    if name.endswith("_days")
}
KEEP_ALL = dict.fromkeys(DEFAULT_TTL, 0)


@dataclass
class Store:
    engine: Engine
    writer: StoreWriter
    node_id: int
    session_id: int
    path: Path

    def add(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows``; raw rows as if each was recorded at its own time (a mark)."""
        spec = next((s for s in RETAINED if s.table is table and s.marked), None)
        with self.engine.begin() as conn:
            if spec is None:
                if rows:
                    conn.execute(insert(table), rows)
                return
            for row in rows:
                row_id = conn.execute(insert(table).values(row)).inserted_primary_key[0]
                mark = f"recording_marks.{spec.marked}"
                conn.execute(
                    text(
                        f"INSERT INTO recording_marks (recorded_ns, {spec.marked})"
                        f" VALUES (:at, :id) ON CONFLICT (recorded_ns) DO UPDATE SET"
                        f" {spec.marked} = CASE WHEN coalesce({mark}, 0) > excluded.{spec.marked}"
                        f" THEN {mark} ELSE excluded.{spec.marked} END"
                    ),
                    {"at": row[spec.column], "id": row_id},
                )

    def count(self, table: Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(table)) or 0)

    def times(self, spec: Retained) -> list[int]:
        with self.engine.connect() as conn:
            col = spec.table.c[spec.column]
            return sorted(conn.scalars(select(col).where(col.is_not(None))))

    def pragma(self, name: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql(f"PRAGMA {name}").scalar_one())


@pytest.fixture
def store(open_store: Callable[..., RealStore]) -> Store:
    s = open_store(node=NODE)
    session_id = s.open_session(1, "0.18.3-beta")  # open: never pruned
    return Store(s.engine, s.writer, s.node_id, session_id, s.path)


# -- rows ------------------------------------------------------------------------------


def _event(s: Store, i: int, ts_ns: int, note: str | None = None) -> dict[str, Any]:
    return {
        "node_id": s.node_id,
        "session_id": s.session_id,
        "timestamp_ns": ts_ns,
        "kind": 4,  # link fail
        "event_type": 3,
        "incoming_chan_ref": 1,
        "incoming_htlc_id": i,
        "outgoing_chan_ref": 2,
        "outgoing_htlc_id": i,
        "incoming_amt_msat": 1_001_000,
        "outgoing_amt_msat": 1_000_000,
        "failure_string": note,
    }


def _attempt(s: Store, i: int, ts_ns: int) -> dict[str, Any]:
    return {
        "node_id": s.node_id,
        "incoming_chan_ref": 1,
        "incoming_htlc_id": i,
        "outgoing_chan_ref": 2,
        "outgoing_htlc_id": i,
        "first_seen_ns": ts_ns,
        "outcome": 2,
        "failure_class": 1,
        "missed_fee_msat": 1_000,
    }


def _cluster(s: Store, i: int, ts_ns: int) -> dict[str, Any]:
    return {
        "id": i + 1,
        "node_id": s.node_id,
        "outgoing_chan_ref": 2,
        "first_ns": ts_ns - 5,
        "last_ns": ts_ns,
        "members": 2,
        "missed_fee_msat": 1_000,
    }


def _sample(s: Store, i: int, ts_ns: int) -> dict[str, Any]:
    return {
        "node_id": s.node_id,
        "chan_id": 22 + i % 3,
        "ts_ns": ts_ns,
        "capacity_sat": 1_000_000,
        "local_balance_sat": 400_000,
        "remote_balance_sat": 590_000,
        "local_reserve_sat": 10_000,
        "remote_reserve_sat": 10_000,
        "active": True,
        "uptime_s": 100,
        "lifetime_s": 100,
    }


def _session(s: Store, i: int, ended_ns: int) -> dict[str, Any]:
    return {"node_id": s.node_id, "started_ns": ended_ns - 10, "ended_ns": ended_ns}


def _failure_rollup(s: Store, i: int, hour: int) -> dict[str, Any]:
    return {
        "node_id": s.node_id,
        "hour": hour,
        "outgoing_channel_id": 22,
        "incoming_channel_id": 11 + i,
        "failure_class": 1,
        "failures": 3,
        "clusters": 1,
        "missed_raw_msat": 3_000,
        "missed_dedup_msat": 1_000,
    }


def _forward_rollup(s: Store, i: int, hour: int) -> dict[str, Any]:
    return {
        "node_id": s.node_id,
        "hour": hour,
        "chan_id_in": 11 + i,
        "chan_id_out": 22,
        "forwards": 2,
        "amt_out_msat": 2_000_000,
        "fee_msat": 2_000,
    }


def _failure_channel(period: str) -> Callable[[Store, int, int], dict[str, Any]]:
    def row(s: Store, i: int, when: int) -> dict[str, Any]:
        values: dict[str, Any] = {
            "node_id": s.node_id,
            period: when,
            "outgoing_channel_id": 22 + i,
            "clusters": 1,
            "missed_dedup_msat": 1_000,
            "incoming_lo": 11,
            "incoming_hi": 11,
            "incoming_many": False,
        }
        for n_col, m_col in CLASS_COLUMNS:
            values |= {n_col: 0, m_col: 0}
        values |= {"liquidity_failures": 3, "liquidity_missed_msat": 3_000}
        if period == "day":
            values |= {"first_hour": when * 24, "last_hour": when * 24 + 23}
        if period == "week":
            # failures in the week's last hour only: the week holding the cutoff counted
            # no expired hour, so it stays as it is (see the tests of partial weeks)
            values |= {"first_hour": when * 168 + 167, "last_hour": when * 168 + 167}
        if period == "block":
            values |= {"first_hour": when * 6, "last_hour": when * 6 + 5}
        if period == "hour":
            values |= {"first_ns": when * NS_PER_HOUR, "last_ns": when * NS_PER_HOUR}
        return values

    return row


def _forward_channel(period: str) -> Callable[[Store, int, int], dict[str, Any]]:
    def row(s: Store, i: int, when: int) -> dict[str, Any]:
        return {
            "node_id": s.node_id,
            period: when,
            "chan_id": 22 + i,
            "forwards_out": 2,
            "fee_out_msat": 2_000,
            "forwards_in": 0,
            "fee_in_msat": 0,
        }

    return row


def _ledger(s: Store, i: int, ts_ns: int) -> dict[str, Any]:
    return {
        "node_id": s.node_id,
        "timestamp_ns": ts_ns,
        "chan_id_in": 11,
        "chan_id_out": 22,
        "amt_in_msat": 1_001_000,
        "amt_out_msat": 1_000_000,
        "fee_msat": 1_000,
    }


def _run(s: Store, i: int, ts_ns: int) -> dict[str, Any]:
    return {
        "node_id": s.node_id,
        "generated_ns": ts_ns,
        "since_ns": ts_ns - 24 * NS_PER_HOUR,
        "until_ns": ts_ns,
        "hours": 24,
        "duration_ms": 5,
        "opportunities": 1,
        "node_failures": 3,
        "node_missed_msat": 1_000,
    }


def _run_gap(s: Store, i: int, ts_ns: int) -> dict[str, Any]:
    return {"run_id": i + 1, "position": 0, "generated_ns": ts_ns, "from_ns": ts_ns - 10}


def _opportunity(s: Store, i: int, ts_ns: int) -> dict[str, Any]:
    return {
        "run_id": i + 1,
        "rank": 1,
        "generated_ns": ts_ns,
        "channel_id": 22,
        "peer_pubkey": "02" + "ab" * 32,
        "peer_alias": "",
        "failures": 3,
        "clusters": 1,
        "successes": 0,
        "failure_rate": 1.0,
        "missed_msat": 1_000,
        "missed_raw_msat": 3_000,
        "potential_monthly_msat": 30_000,
        "urgency_score": 40,
        "confidence": "low",
        "recommended_action": "rebalance_outbound",
        "reason": "",
        "estimated": False,
        "capacity_sat": 1_000_000,
        "local_balance_sat": 0,
    }


def _rebalance_move(s: Store, i: int, ts_ns: int) -> dict[str, Any]:
    return {
        "run_id": i + 1,
        "position": 0,
        "generated_ns": ts_ns,
        "target_channel_id": 22,
        "source_channel_ids": "11",
        "amount_sat": 500_000,
        "max_cost_ppm": 400,
    }


ROWS: dict[str, Callable[[Store, int, int], dict[str, Any]]] = {
    "htlc_events": _event,
    "forward_attempts": _attempt,
    "failure_clusters": _cluster,
    "channel_samples": _sample,
    "stream_sessions": _session,
    "failure_rollups_hourly": _failure_rollup,
    "forward_rollups_hourly": _forward_rollup,
    "failure_channel_hourly": _failure_channel("hour"),
    "failure_channel_daily": _failure_channel("day"),
    "failure_channel_6h": _failure_channel("block"),
    "failure_channel_weekly": _failure_channel("week"),
    "forward_channel_6h": _forward_channel("block"),
    "forward_channel_hourly": _forward_channel("hour"),
    "forward_channel_daily": _forward_channel("day"),
    "run_gaps": _run_gap,
    "opportunities": _opportunity,
    "rebalance_moves": _rebalance_move,
    "analysis_runs": _run,
}


def _step_tables(steps: list[PruneStepResult]) -> list[str]:
    return [s.table for s in steps if s.table is not None]


# -- TTLs ------------------------------------------------------------------------------


def test_every_retained_table_has_a_setting_and_a_row_factory() -> None:
    for spec in RETAINED:
        assert spec.setting in RetentionSettings.model_fields
        assert spec.table.name in ROWS
    assert forwards.name not in {spec.table.name for spec in RETAINED}


@pytest.mark.parametrize("spec", RETAINED, ids=[spec.table.name for spec in RETAINED])
def test_row_at_the_cutoff_is_kept_and_one_unit_older_is_deleted(
    store: Store, spec: Retained
) -> None:
    pruner = Pruner(store.engine, DEFAULT_TTL)
    cutoff_ns = NOW - DEFAULT_TTL[spec.setting] * NS_PER_DAY
    at = cutoff_ns // spec.unit_ns  # for hours: the hour holding the cutoff
    assert pruner.cutoff(spec, NOW) == at
    fresh = NOW // spec.unit_ns
    times = [at - 1000, at - 1, at, at + 1, fresh]
    store.add(spec.table, [ROWS[spec.table.name](store, i, t) for i, t in enumerate(times)])

    report = pruner.prune(NOW, batch_rows=100, max_batches=50)

    assert report.expired == {spec.table.name: 2}
    assert report.complete and not report.dropped_for_size
    assert store.times(spec) == [at, at + 1, fresh]


def test_hour_rule_keeps_an_hour_that_starts_before_the_cutoff(store: Store) -> None:
    spec = next(s for s in RETAINED if s.table is failure_rollups_hourly)
    cutoff_ns = NOW - DEFAULT_TTL["rollups_days"] * NS_PER_DAY
    holding = cutoff_ns // NS_PER_HOUR
    assert holding * NS_PER_HOUR < cutoff_ns < (holding + 1) * NS_PER_HOUR
    store.add(failure_rollups_hourly, [_failure_rollup(store, 0, holding)])
    Pruner(store.engine, DEFAULT_TTL).prune(NOW, batch_rows=10, max_batches=5)
    assert store.times(spec) == [holding]


def test_zero_days_keeps_forever_and_the_ledger_is_never_pruned(store: Store) -> None:
    ancient = NOW - 5000 * NS_PER_DAY
    store.add(htlc_events, [_event(store, 0, ancient)])
    store.add(forwards, [_ledger(store, i, ancient + i) for i in range(3)])
    kept = Pruner(store.engine, {**DEFAULT_TTL, "events_days": 0})
    assert kept.prune(NOW, 100, 10).deleted == 0
    assert store.count(htlc_events) == 1

    Pruner(store.engine, dict.fromkeys(DEFAULT_TTL, 1)).prune(NOW, 100, 10)
    assert store.count(htlc_events) == 0
    assert store.count(forwards) == 3


def test_expired_sessions_go_open_ones_stay(store: Store) -> None:
    old = NOW - 500 * NS_PER_DAY
    w = store.writer
    closed = w.open_session(store.node_id, old, "0.17.0-beta")
    w.close_session(closed, old + 1, "lnd restarted")
    recent = w.open_session(store.node_id, NOW - NS_PER_DAY, "0.17.0-beta")
    w.close_session(recent, NOW - NS_PER_DAY + 1, "lnd restarted")
    still_open = w.open_session(store.node_id, old + 4, "0.17.0-beta")
    store.add(stream_sessions, [_session(store, i, old + i) for i in range(10)])
    Pruner(store.engine, DEFAULT_TTL).prune(NOW, 100, 10)
    with store.engine.connect() as conn:
        left = set(conn.scalars(select(stream_sessions.c.id)))
    assert closed not in left
    assert {recent, still_open} <= left
    assert len(left) == len({store.session_id, recent, still_open})


def test_rollup_totals_over_30_days_survive_pruning_the_raw_rows(store: Store) -> None:
    start_ns = NOW - 29 * NS_PER_DAY
    step_ns = NS_PER_HOUR // 2
    count = 29 * 24 * 2
    times = [start_ns + i * step_ns for i in range(count)]
    # raw rows and the hourly rollups that summarise them
    store.add(htlc_events, [_event(store, i, t) for i, t in enumerate(times)])
    store.add(forward_attempts, [_attempt(store, i, t) for i, t in enumerate(times)])
    hours = sorted({t // NS_PER_HOUR for t in times})
    store.add(failure_rollups_hourly, [_failure_rollup(store, 0, h) for h in hours])
    store.writer.insert_forwards(
        store.node_id,
        [
            ForwardRecord(t + 1, 11, 22, 1_001_000 + i, 1_000_000, 1_000 + i)
            for i, t in enumerate(times)
        ],
    )

    def totals() -> tuple[int, ...]:
        since = (NOW - 30 * NS_PER_DAY) // NS_PER_HOUR
        f, r = failure_rollups_hourly, forward_rollups_hourly
        d = forward_channel_daily
        with store.engine.connect() as conn:
            daily = conn.execute(
                select(func.sum(d.c.forwards_out), func.sum(d.c.fee_in_msat)).where(
                    d.c.day >= since // 24
                )
            ).one()
            assert tuple(daily) == (count, sum(1_000 + i for i in range(count)))
            fail = conn.execute(
                select(func.sum(f.c.failures), func.sum(f.c.missed_raw_msat)).where(
                    f.c.hour >= since
                )
            ).one()
            fwd = conn.execute(
                select(func.sum(r.c.forwards), func.sum(r.c.fee_msat)).where(r.c.hour >= since)
            ).one()
        return (*fail, *fwd)

    before = totals()
    report = Pruner(store.engine, {**DEFAULT_TTL, "attempts_days": 10}).prune(NOW, 500, 100)
    assert report.expired["htlc_events"] > 0 and report.expired["forward_attempts"] > 0
    assert "failure_rollups_hourly" not in report.expired
    assert totals() == before
    assert before == (
        len(hours) * 3,
        len(hours) * 3_000,
        count,
        sum(1_000 + i for i in range(count)),
    )


# -- batches ---------------------------------------------------------------------------


def test_a_step_deletes_at_most_batch_rows_from_one_table(store: Store) -> None:
    old = NOW - 100 * NS_PER_DAY
    store.add(htlc_events, [_event(store, i, old + i) for i in range(23)])
    store.add(channel_samples, [_sample(store, i, old + i) for i in range(4)])
    pruner = Pruner(store.engine, DEFAULT_TTL)

    steps = [pruner.prune_step(NOW, 5) for _ in range(8)]

    assert [(s.table, s.deleted) for s in steps] == [
        ("htlc_events", 5),
        ("htlc_events", 5),
        ("htlc_events", 5),
        ("htlc_events", 5),
        ("htlc_events", 3),
        ("channel_samples", 4),
        (None, 0),
        (None, 0),
    ]
    assert not steps[-1].more


def test_batches_delete_oldest_first_and_max_batches_bounds_a_run(store: Store) -> None:
    old = NOW - 100 * NS_PER_DAY
    samples = next(spec for spec in RETAINED if spec.table is channel_samples)
    # inserted newest first, so row order and time order disagree: a time index decides
    rows = [_sample(store, i, old - i) | {"chan_id": i} for i in range(30)]
    store.add(channel_samples, rows)
    pruner = Pruner(store.engine, DEFAULT_TTL)
    report = pruner.prune(NOW, batch_rows=4, max_batches=3)
    assert report.expired == {"channel_samples": 12} and report.steps == 3
    assert not report.complete
    assert store.times(samples) == [old - i for i in range(17, -1, -1)]
    rest = pruner.prune(NOW, batch_rows=4, max_batches=100)
    assert rest.expired == {"channel_samples": 18} and rest.complete


@pytest.mark.parametrize("spec", [s for s in RETAINED if s.marked], ids=lambda s: s.table.name)
def test_raw_rows_expire_by_recording_time_not_by_the_nodes_clock(
    store: Store, spec: Retained
) -> None:
    """A node clock 100 days behind stamps fresh rows in the past; one ahead stamps old
    rows in the future: both expire by when they were recorded (their marks)."""
    assert spec.marked is not None
    pruner = Pruner(store.engine, DEFAULT_TTL)
    cutoff = pruner.cutoff(spec, NOW)
    assert cutoff is not None
    make = ROWS[spec.table.name]
    # recorded long ago, stamped "now" by a clock ahead: 12 rows in 4-row steps
    old = [make(store, i, NOW) for i in range(12)]
    # recorded now, stamped 100 days back by a clock behind
    fresh = [make(store, 100 + i, NOW - 100 * NS_PER_DAY) for i in range(3)]
    with store.engine.begin() as conn:
        for rows, recorded in ((old, cutoff - 1), (fresh, NOW)):
            conn.execute(insert(spec.table), rows)
            top = conn.scalar(select(func.max(spec.table.c.id)))
            conn.execute(
                text(f"INSERT INTO recording_marks (recorded_ns, {spec.marked}) VALUES (:at, :id)"),
                {"at": recorded, "id": top},
            )
    report = pruner.prune(NOW, batch_rows=4, max_batches=100)
    assert report.expired == {spec.table.name: 12} and report.complete
    assert store.times(spec) == [NOW - 100 * NS_PER_DAY] * 3


def test_a_prune_marks_what_was_recorded_and_drops_marks_no_table_needs(store: Store) -> None:
    pruner = Pruner(store.engine, DEFAULT_TTL)
    store.add(stream_sessions, [])  # nothing recorded yet: no mark
    assert not pruner.mark(NOW - 40 * NS_PER_DAY)
    with store.engine.begin() as conn:
        conn.execute(insert(htlc_events), [_event(store, 1, 5)])
    assert pruner.mark(NOW - 40 * NS_PER_DAY)
    assert not pruner.mark(NOW - 39 * NS_PER_DAY)  # nothing new since
    with store.engine.begin() as conn:
        conn.execute(insert(htlc_events), [_event(store, 2, 5)])
    assert pruner.mark(NOW - 35 * NS_PER_DAY)
    assert pruner.prune(NOW, 100, 10).expired == {"htlc_events": 2}
    with store.engine.connect() as conn:
        marks = conn.exec_driver_sql("SELECT recorded_ns FROM recording_marks").scalars()
        # 40 d is older than every TTL and a newer mark bounds the same rows: dropped
        assert sorted(marks) == [NOW - 35 * NS_PER_DAY]


# -- size budget -----------------------------------------------------------------------

PAD = "x" * 800  # makes rows big enough to fill pages quickly


def _fill(store: Store, table: Table, n: int, first_ns: int) -> None:
    make = ROWS[table.name]
    rows = [make(store, i, first_ns + i * 1_000_000_000) for i in range(n)]
    if table is htlc_events:
        rows = [r | {"failure_string": PAD} for r in rows]
    if table is channel_samples:
        rows = [r | {"chan_id": i} for i, r in enumerate(rows)]
    store.add(table, rows)


def _used_mib(store: Store) -> float:
    """The bytes in use against the budget, measured afresh: SQLite's pages in use plus
    the WAL, once a checkpoint emptied the WAL (as the daemon's prune run ends); on
    PostgreSQL the rows' bytes."""
    pruner = Pruner(store.engine, KEEP_ALL)
    pruner.checkpoint()
    used = pruner.used_bytes()
    assert used is not None
    return used / 1024 / 1024


def test_size_budget_drops_the_oldest_events_first_and_stops_under_budget(
    store: Store,
) -> None:
    recent = NOW - 3 * NS_PER_DAY  # far inside every TTL
    _fill(store, htlc_events, 6000, recent)  # ~5.5 MiB
    _fill(store, channel_samples, 500, recent)
    hour = NOW // NS_PER_HOUR - 10
    store.add(failure_rollups_hourly, [_failure_rollup(store, i, hour) for i in range(50)])
    store.add(forwards, [_ledger(store, i, recent + i) for i in range(50)])
    assert _used_mib(store) > 5
    budget_mib = 3
    pruner = Pruner(store.engine, DEFAULT_TTL, max_db_mb=budget_mib)

    steps: list[PruneStepResult] = []
    used_before: list[float] = []
    while True:
        used_before.append(_used_mib(store))
        step = pruner.prune_step(NOW, 200)
        if not step.deleted:
            break
        steps.append(step)

    assert steps and {s.cause for s in steps} == {"size"}
    assert set(_step_tables(steps)) == {"htlc_events"}
    # every batch started over budget; the store ended under it
    assert all(u > budget_mib for u in used_before[:-1])
    assert used_before[-1] <= budget_mib
    left = store.times(RETAINED[0])
    dropped_through = max(s.dropped_through_ns or 0 for s in steps)
    assert left and min(left) > dropped_through  # the newest events survive
    assert store.count(channel_samples) == 500
    assert store.count(failure_rollups_hourly) == 50 and store.count(forwards) == 50


def test_size_budget_goes_on_to_samples_then_attempts_never_rollups_or_ledger(
    store: Store,
) -> None:
    recent = NOW - 3 * NS_PER_DAY
    _fill(store, htlc_events, 1500, recent)
    _fill(store, channel_samples, 300, recent)
    _fill(store, forward_attempts, 300, recent)
    _fill(store, failure_clusters, 300, recent)
    store.add(forwards, [_ledger(store, i, recent + i) for i in range(20_000)])
    hour = NOW // NS_PER_HOUR - 10
    store.add(forward_rollups_hourly, [_forward_rollup(store, i, hour) for i in range(100)])
    assert _used_mib(store) > 1
    pruner = Pruner(store.engine, DEFAULT_TTL, max_db_mb=1)  # less than the ledger alone

    steps = []
    while (step := pruner.prune_step(NOW, 250)).deleted:
        steps.append(step)

    tables = _step_tables(steps)
    first_seen = sorted(set(tables), key=tables.index)
    assert first_seen == [spec.table.name for spec in SIZE_BUDGET_ORDER]
    assert sorted(tables, key=first_seen.index) == tables  # one table drained at a time
    assert {s.cause for s in steps} == {"size"}
    assert step.over_budget
    for table in (htlc_events, channel_samples, forward_attempts, failure_clusters):
        assert store.count(table) == 0
    assert store.count(forwards) == 20_000 and store.count(forward_rollups_hourly) == 100


def test_a_store_trimmed_under_its_budget_is_not_trimmed_again(store: Store) -> None:
    """The next prune run measures the store afresh and drops nothing more: on
    PostgreSQL a delete does not shrink the tables' files, so a budget read from their
    size would drop every raw row, run after run."""
    recent = NOW - 3 * NS_PER_DAY
    _fill(store, htlc_events, 4000, recent)
    assert _used_mib(store) > 3
    pruner = Pruner(store.engine, DEFAULT_TTL, max_db_mb=2)
    first = pruner.prune(NOW, 500, 1000)
    assert first.complete and not first.over_budget
    assert set(first.dropped_for_size) == {"htlc_events"} and not first.expired
    left = store.count(htlc_events)
    assert 0 < left < 4000 and _used_mib(store) <= 2
    for later in (NOW + 300 * 1_000_000_000, NOW + 600 * 1_000_000_000):  # the next runs
        again = pruner.prune(later, 500, 1000)
        assert again.deleted == 0 and not again.over_budget
    assert store.count(htlc_events) == left


@pytest.mark.engines("postgresql")
def test_the_store_size_on_postgresql_is_lnflows_tables_only(store: Store) -> None:
    """Another application's table in the same database is not the store's: it counts
    neither in the metric's store size nor in the budget."""
    from lnflow.store.engines import store_bytes

    _fill(store, htlc_events, 500, NOW)
    ours, used = store_bytes(store.engine), Pruner(store.engine, KEEP_ALL).used_bytes()
    assert ours > 500 * len(PAD) and 500 * len(PAD) < used <= ours
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE other_app (note text)"))
        conn.execute(
            text("INSERT INTO other_app SELECT repeat('y', 900) FROM generate_series(1, 5000)")
        )
        database = conn.scalar(text("SELECT pg_database_size(current_database())"))
    assert database > ours + 4_000_000
    assert store_bytes(store.engine) == ours
    assert Pruner(store.engine, KEEP_ALL).used_bytes() == used


# -- reclaiming pages ------------------------------------------------------------------


@pytest.mark.engines("sqlite")  # SQLite's pages and WAL
def test_freed_pages_are_handed_back_in_bounded_steps(store: Store) -> None:
    _fill(store, htlc_events, 3000, NOW - 100 * NS_PER_DAY)
    pages_full = store.pragma("page_count")

    no_vacuum = Pruner(store.engine, DEFAULT_TTL, vacuum_pages=0)
    assert no_vacuum.prune(NOW, 1000, 10).expired == {"htlc_events": 3000}
    free = store.pragma("freelist_count")
    assert free > 500

    pruner = Pruner(store.engine, DEFAULT_TTL, vacuum_pages=100)
    step = pruner.prune_step(NOW, 1000)
    assert step.deleted == 0 and step.pages_freed == 100 and step.more
    assert store.pragma("freelist_count") == free - 100

    report = pruner.prune(NOW, 1000, 1000)
    assert report.complete and report.pages_freed == free - 100
    assert store.pragma("freelist_count") == 0
    assert store.pragma("page_count") <= pages_full - free


# -- config and daemon -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("events_days = -1", "retention.events_days"),
        ("batch_rows = 0", "retention.batch_rows"),
        ("max_db_mb = 5", "retention.max_db_mb"),
        ("samples_days = 'long'", "retention.samples_days"),
    ],
    ids=["negative-ttl", "batch-range", "tiny-budget", "type"],
)
def test_bad_retention_value_is_one_line_naming_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    path = tmp_path / "lnflow.toml"
    path.write_text(f"[retention]\n{text}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert f"bad value for '{key}'" in str(err.value)
    assert "\n" not in str(err.value)


def test_pruner_from_settings_uses_every_ttl(store: Store) -> None:
    settings = load_settings(overrides={"retention": {"events_days": 2, "max_db_mb": 64}})
    pruner = Pruner.from_settings(store.engine, settings.retention)
    events = RETAINED[0]
    assert pruner.cutoff(events, NOW) == NOW - 2 * NS_PER_DAY


def test_daemon_prune_job_runs_in_batches_and_logs_a_summary(store: Store) -> None:
    store.add(htlc_events, [_event(store, i, NOW - 20 * NS_PER_DAY + i) for i in range(250)])
    settings = Settings(retention=RetentionSettings(batch_rows=100, max_batches=50))
    daemon = Daemon(settings, clock_ns=lambda: NOW)  # the default TTLs: DEFAULT_TTL
    thread = StoreThread(store.writer)
    (prune,) = [job for job in daemon.jobs_at_start(store.engine, thread) if job.id == "prune"]
    assert prune.first_now and prune.every_s == settings.retention.prune_interval_s

    async def run() -> None:
        await asyncio.wait_for(prune.run(), timeout=30)

    try:
        with structlog.testing.capture_logs() as logs:
            asyncio.run(run())
    finally:
        thread.close()
    assert store.count(htlc_events) == 0
    (done,) = [e for e in logs if e["event"] == "prune_done"]
    assert done["expired"] == {"htlc_events": 250}
    assert done["batches"] >= 4 and done["complete"]  # 100 + 100 + 50, then nothing


def test_daemon_prune_job_keeps_the_store_under_its_budget(store: Store) -> None:
    """The daemon's prune run with [retention] max_db_mb: the oldest events go until the
    store is under its budget, each batch logged, and the next run drops nothing."""
    _fill(store, htlc_events, 24_000, NOW - 3 * NS_PER_DAY)  # ~20 MiB, inside every TTL
    assert _used_mib(store) > 17
    settings = Settings(retention=RetentionSettings(max_db_mb=16, batch_rows=2000))
    now = [NOW]
    daemon = Daemon(settings, clock_ns=lambda: now[0])
    thread = StoreThread(store.writer)
    (prune,) = [job for job in daemon.jobs_at_start(store.engine, thread) if job.id == "prune"]

    async def run() -> None:
        await asyncio.wait_for(prune.run(), timeout=60)

    try:
        with structlog.testing.capture_logs() as logs:
            asyncio.run(run())
        left = store.count(htlc_events)
        now[0] += settings.retention.prune_interval_s * 1_000_000_000  # the next run
        with structlog.testing.capture_logs() as again:
            asyncio.run(run())
    finally:
        thread.close()
    drops = [e for e in logs if e["event"] == "retention_size_budget_drop"]
    assert drops and {e["table"] for e in drops} == {"htlc_events"}
    assert sum(e["rows"] for e in drops) == 24_000 - left > 0
    assert _used_mib(store) <= 16
    assert not [e for e in again if e["event"] == "retention_size_budget_drop"]
    assert store.count(htlc_events) == left


@pytest.mark.engines("sqlite")  # SQLite's pages and WAL
def test_the_wal_counts_in_the_size_budget_and_a_checkpoint_truncates_it(store: Store) -> None:
    pruner = Pruner(store.engine, KEEP_ALL, max_db_mb=16)
    reader = sqlite3.connect(store.path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM htlc_events").fetchone()  # pins the WAL
    _fill(store, htlc_events, 3000, NOW)
    pinned = pruner.checkpoint()
    assert pinned is not None and pinned.busy and pinned.wal_bytes > 2 * 1024 * 1024
    with store.engine.connect() as conn:
        pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
        page = int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
    assert pruner.used_bytes() == pytest.approx(pages * page + pinned.wal_bytes, rel=0.02)
    reader.rollback()
    reader.close()
    done = pruner.checkpoint()
    assert done is not None and not done.busy and done.wal_bytes == 0


# -- retention horizons (0023) ------------------------------------------------------------

OTHER_NODE = NodeInfo("03" + "ef" * 32, "dave", "0.18.3-beta", "regtest", 100, True)


def _horizons(store: Store) -> dict[int, int]:
    h = retention_horizons
    with store.engine.connect() as conn:
        return {
            int(node): int(ns)
            for node, ns in conn.execute(select(h.c.node_id, h.c.deleted_through_ns)).all()
        }


def _resolved(store: Store) -> set[tuple[int, int, int | None]]:
    """(node, incoming htlc id, resolved_ns) of every attempt kept."""
    a = forward_attempts
    with store.engine.connect() as conn:
        rows = conn.execute(select(a.c.node_id, a.c.incoming_htlc_id, a.c.resolved_ns)).all()
    return {(int(n), int(h), r) for n, h, r in rows}


def _deleted_through(gone: set[tuple[int, int, int | None]]) -> dict[int, int]:
    newest: dict[int, int] = {}
    for node, _, resolved in gone:
        if resolved is not None:
            newest[node] = max(resolved, newest.get(node, resolved))
    return newest


def test_expired_attempts_raise_their_nodes_horizon_step_by_step_never_lowering_it(
    store: Store,
) -> None:
    """Each TTL step that deletes attempts raises each of their nodes' horizon to the
    newest resolved_ns among them, in the same transaction; an older one (a node clock
    set back) leaves it; a pending attempt (no time) and fresh ones change nothing."""
    other = store.writer.upsert_node(OTHER_NODE, NOW)
    old = NOW - 40 * NS_PER_DAY
    rows = [
        _attempt(store, i, old + i * NS_PER_HOUR)
        | {"node_id": (store.node_id, other)[i % 2], "resolved_ns": old + i * NS_PER_HOUR + 7}
        for i in range(10)
    ]
    rows[6]["resolved_ns"] = old - NS_PER_DAY  # a clock set back: older than the rest
    rows[9]["resolved_ns"] = None  # still pending when it expired
    rows += [
        _attempt(store, 20 + i, NOW - NS_PER_DAY) | {"resolved_ns": NOW - NS_PER_DAY + 1}
        for i in range(3)
    ]
    store.add(forward_attempts, rows)
    everything = _resolved(store)
    pruner = Pruner(store.engine, DEFAULT_TTL)
    pruner.mark(NOW)
    seen: list[dict[int, int]] = []
    while (step := pruner.prune_step(NOW, 3)).deleted:
        if step.table == "forward_attempts":
            expected = _deleted_through(everything - _resolved(store))
            assert _horizons(store) == expected
            seen.append(expected)
    assert len(seen) == 4  # 10 rows in steps of 3
    assert seen[-1] == {store.node_id: old + 8 * NS_PER_HOUR + 7, other: old + 7 * NS_PER_HOUR + 7}
    assert store.count(forward_attempts) == 3


def test_pruned_failure_rollups_raise_the_horizon_to_their_periods_end(store: Store) -> None:
    """Rollups kept shorter than the raw attempts: the horizon covers the last
    nanosecond of the newest failure rollup period pruned (of any level); forward
    rollups, which the failure counts never read, leave it."""
    ttl = {**DEFAULT_TTL, "rollups_days": 10}
    old_day = (NOW - 12 * NS_PER_DAY) // NS_PER_DAY
    hour = old_day * 24 + 30  # in the day after: also older than the cutoff
    store.add(failure_channel_daily, [_failure_channel("day")(store, 0, old_day)])
    store.add(failure_channel_hourly, [_failure_channel("hour")(store, 0, hour)])
    store.add(failure_channel_6h, [_failure_channel("block")(store, 0, hour // 6 - 1)])
    store.add(forward_channel_daily, [_forward_channel("day")(store, 0, old_day + 1)])
    kept = NOW // NS_PER_HOUR - 5
    store.add(failure_channel_hourly, [_failure_channel("hour")(store, 0, kept)])
    report = Pruner(store.engine, ttl).prune(NOW, 100, 100)
    assert report.expired.keys() >= {
        "failure_channel_daily",
        "failure_channel_hourly",
        "failure_channel_6h",
        "forward_channel_daily",
    }
    assert _horizons(store) == {store.node_id: (hour + 1) * NS_PER_HOUR - 1}
    assert store.count(failure_channel_hourly) == 1


def test_attempts_dropped_for_the_size_budget_raise_the_horizon(store: Store) -> None:
    recent = NOW - 3 * NS_PER_DAY  # inside every TTL: only the budget drops them
    rows = [
        _attempt(store, i, recent + i * S) | {"resolved_ns": recent + i * S + 5} for i in range(300)
    ]
    store.add(forward_attempts, rows)
    store.add(forwards, [_ledger(store, i, recent + i) for i in range(20_000)])
    everything = _resolved(store)
    pruner = Pruner(store.engine, DEFAULT_TTL, max_db_mb=1)  # less than the ledger alone
    steps = 0
    while (step := pruner.prune_step(NOW, 70)).deleted:
        assert step.cause == "size"
        if step.table == "forward_attempts":
            steps += 1
            assert _horizons(store) == _deleted_through(everything - _resolved(store))
    assert steps == 5 and store.count(forward_attempts) == 0
    assert _horizons(store) == {store.node_id: recent + 299 * S + 5}
