"""Analysis snapshots on real stores (SQLite files, PostgreSQL databases): round trip,
history, retention, the daemon job."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, cast

import pytest
import structlog
from conftest import STORE_NODE, RealStore
from sqlalchemy import Engine, Table, func, select
from sqlalchemy.exc import IntegrityError

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import (
    Action,
    AnalysisReport,
    ClassStats,
    Confidence,
    Gap,
    Opportunity,
    RebalanceMove,
)
from lnflow.cli.render import opportunities_body
from lnflow.cli.saved_table import TABLE_FORMAT
from lnflow.config import AnalysisConfig, Settings
from lnflow.domain import NodeInfo
from lnflow.recording import StoreThread
from lnflow.recording.app import Job
from lnflow.store.retention import NS_PER_DAY, RETAINED, Pruner
from lnflow.store.schema import analysis_runs, opportunities, rebalance_moves, run_gaps
from lnflow.store.snapshots import SnapshotWriter, latest_report, report_of, urgency_history
from lnflow.store.writer import NS_PER_HOUR, StoreWriter
from lnflowd.daemon import Daemon, LndLike

NODE = NodeInfo("02" + "aa" * 32, "alice", "0.18.3-beta", "regtest", 1, True)
T0 = 1_790_000_000 * 1_000_000_000
BIG = (1 << 64) - 5  # an alias SCID above 2^63
A, B, C = 850_000 << 40, (850_001 << 40) | 3, (850_002 << 40) | (2 << 16)

pytestmark = pytest.mark.engines("sqlite", "postgresql")


@dataclasses.dataclass
class Store:
    engine: Engine
    writer: StoreWriter
    snapshots: SnapshotWriter
    node_id: int

    def count(self, table: Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(table)) or 0)


@pytest.fixture
def store(open_store: Callable[..., RealStore]) -> Store:
    s = open_store(node=NODE)
    return Store(s.engine, s.writer, SnapshotWriter(s.engine), s.node_id)


BASE = Opportunity(
    rank=1,
    channel_id=A,
    peer_pubkey="03" + "11" * 32,
    peer_alias="peer ⚡",
    failures=12,
    clusters=5,
    successes=6,
    failure_rate=12 / 18,
    missed_msat=123_456_789,
    missed_raw_msat=223_456_789,
    potential_monthly_msat=3_703_703_670,
    urgency_score=0,
    confidence=Confidence.MEDIUM,
    recommended_action=Action.REBALANCE_OUTBOUND,
    reason="9 of 12 failures lacked outbound liquidity (123 sats missed)",
    estimated=False,
    by_class={
        FailureClass.LIQUIDITY: ClassStats(9, 200_000_000),
        FailureClass.FEE: ClassStats(3, 23_456_789),
    },
    capacity_sat=5_000_000,
    local_balance_sat=12_345,
    outbound_fee_ppm=250,
    suggested_amount_sat=2_487_655,
)


def opportunity(rank: int, chan: int, urgency: int, **kw: Any) -> Opportunity:
    peer = "03" + f"{rank:02x}" * 32
    return dataclasses.replace(
        BASE, rank=rank, channel_id=chan, urgency_score=urgency, peer_pubkey=peer, **kw
    )


def report(generated_ns: int = T0, opps: tuple[Opportunity, ...] | None = None) -> AnalysisReport:
    if opps is None:
        opps = (
            opportunity(1, A, 87),
            opportunity(
                2,
                BIG,
                55,
                recommended_action=Action.LOWER_FEES,
                confidence=Confidence.HIGH,
                by_class={
                    FailureClass.FEE: ClassStats(10, 5_000),
                    FailureClass.POLICY: ClassStats(0, 0),  # present with zeros: kept
                    FailureClass.OTHER: ClassStats(2, 0),
                },
                outbound_fee_ppm=None,
                suggested_fee_ppm=175,
                suggested_amount_sat=None,
                suggested_max_htlc_msat=1_000_000_000,
            ),
            opportunity(
                3,
                C,
                12,
                failures=0,
                clusters=0,
                successes=0,
                failure_rate=0.0,
                recommended_action=Action.REBALANCE_INBOUND,
                confidence=Confidence.LOW,
                estimated=True,
                by_class={},
                missed_raw_msat=0,
                reason="",
            ),
        )
    return AnalysisReport(
        since_ns=generated_ns - 24 * NS_PER_HOUR,
        until_ns=generated_ns,
        hours=24,
        generated_ns=generated_ns,
        opportunities=opps,
        rebalance_plan=(
            RebalanceMove(A, (C, BIG), 2_487_655, 200),
            RebalanceMove(BIG, (), 1, 0),
        ),
        gaps=(Gap(generated_ns - 5 * NS_PER_HOUR, generated_ns - 4 * NS_PER_HOUR), Gap(T0, None)),
        node_failures=40,
        node_missed_msat=987_654_321_012,
        node_missed_raw_msat=1_987_654_321_012,
    )


# -- round trip ------------------------------------------------------------------------


def test_latest_report_equals_what_was_written(store: Store) -> None:
    written = report()
    run_id = store.snapshots.write_run(store.node_id, written, duration_ms=42)
    with store.engine.connect() as conn:
        assert latest_report(conn) == written
        assert latest_report(conn, store.node_id) == written
        assert report_of(conn, run_id) == written
        run = conn.execute(select(analysis_runs)).one()
    assert (run.duration_ms, run.opportunities, run.node_id) == (42, 3, store.node_id)


def test_an_empty_report_round_trips_too(store: Store) -> None:
    empty = dataclasses.replace(report(), opportunities=(), rebalance_plan=(), gaps=())
    store.snapshots.write_run(store.node_id, empty, duration_ms=0)
    with store.engine.connect() as conn:
        assert latest_report(conn) == empty


def test_latest_is_the_newest_run_of_the_node(store: Store) -> None:
    newer, older = report(T0 + NS_PER_HOUR), report(T0)
    store.snapshots.write_run(store.node_id, newer, 1)
    store.snapshots.write_run(store.node_id, older, 1)  # written later, generated earlier
    other = store.writer.upsert_node(dataclasses.replace(NODE, pubkey="03" + "ee" * 32), 2)
    theirs = report(T0 + 2 * NS_PER_HOUR, opps=())
    store.snapshots.write_run(other, theirs, 1)
    with store.engine.connect() as conn:
        assert latest_report(conn) == theirs
        assert latest_report(conn, store.node_id) == newer
        assert latest_report(conn, other + 1) is None


def test_no_run_yet(store: Store) -> None:
    with store.engine.connect() as conn:
        assert latest_report(conn) is None
        assert report_of(conn, 1) is None


def test_a_run_is_written_whole_or_not_at_all(store: Store) -> None:
    clash = report(opps=(opportunity(1, A, 80), opportunity(1, C, 70)))  # duplicate rank
    with pytest.raises(IntegrityError):
        store.snapshots.write_run(store.node_id, clash, 1)
    for table in (analysis_runs, run_gaps, opportunities, rebalance_moves):
        assert store.count(table) == 0


# -- urgency history -------------------------------------------------------------------


def test_urgency_history_lists_the_runs_that_had_the_channel(store: Store) -> None:
    runs = [
        (T0, (opportunity(1, A, 80), opportunity(2, BIG, 30))),
        (T0 + 600 * 10**9, (opportunity(1, BIG, 45),)),
        (T0 + 1200 * 10**9, (opportunity(1, A, 90), opportunity(2, BIG, 20))),
    ]
    for ts, opps in runs:
        store.snapshots.write_run(store.node_id, report(ts, opps), 1)
    with store.engine.connect() as conn:
        assert urgency_history(conn, A, 0) == [(T0, 80), (T0 + 1200 * 10**9, 90)]
        assert urgency_history(conn, BIG, T0 + 1) == [
            (T0 + 600 * 10**9, 45),
            (T0 + 1200 * 10**9, 20),
        ]
        assert urgency_history(conn, C, 0) == []
    # another node's runs of a channel with the same id are not this node's history
    other = store.writer.upsert_node(dataclasses.replace(STORE_NODE, pubkey="03" + "ef" * 32), 9)
    store.snapshots.write_run(other, report(T0 + 1800 * 10**9, (opportunity(1, A, 10),)), 1)
    with store.engine.connect() as conn:
        assert urgency_history(conn, A, 0, store.node_id) == [(T0, 80), (T0 + 1200 * 10**9, 90)]
        assert urgency_history(conn, A, 0, other) == [(T0 + 1800 * 10**9, 10)]


# -- retention -------------------------------------------------------------------------


def test_retention_prunes_expired_runs_children_first_in_bounded_batches(store: Store) -> None:
    now = T0 + 100 * NS_PER_DAY
    old = [now - (91 + i) * NS_PER_DAY for i in range(3)]  # past runs_days = 90
    recent = now - 89 * NS_PER_DAY
    for ts in [*old, recent]:
        store.snapshots.write_run(store.node_id, report(ts), 1)
    ttl = {spec.setting: 0 for spec in RETAINED} | {"runs_days": 90}
    pruner = Pruner(store.engine, ttl)

    steps = []
    while (step := pruner.prune_step(now, batch_rows=4)).deleted:
        steps.append((step.table, step.deleted))

    # 3 expired runs: 6 gaps, 9 opportunities, 6 moves, then the 3 run rows
    assert steps == [
        ("run_gaps", 4),
        ("run_gaps", 2),
        ("opportunities", 4),
        ("opportunities", 4),
        ("opportunities", 1),
        ("rebalance_moves", 4),
        ("rebalance_moves", 2),
        ("analysis_runs", 3),
    ]
    with store.engine.connect() as conn:
        assert latest_report(conn) == report(recent)
        assert conn.scalars(select(analysis_runs.c.generated_ns)).all() == [recent]
    assert (store.count(run_gaps), store.count(opportunities), store.count(rebalance_moves)) == (
        2,
        3,
        2,
    )


# -- the daemon job --------------------------------------------------------------------


def analysis_job(
    daemon: Daemon, store: Store, thread: StoreThread[StoreWriter], node_id: int
) -> Job:
    """The daemon's analysis job as it registers it once lnd answered (the client is
    only handed to the ledger sync and the channel sampler, which do not run here)."""
    no_client = cast(LndLike, None)
    jobs = daemon.jobs_when_connected(no_client, store.engine, thread, node_id, NODE.pubkey)
    (job,) = [job for job in jobs if job.id == "analysis"]
    return job


def test_daemon_analysis_job_saves_a_snapshot_and_logs_it(store: Store) -> None:
    now = T0 + 30 * 60 * 10**9
    settings = Settings(analysis=AnalysisConfig(window_hours=6))
    daemon = Daemon(settings, clock_ns=lambda: now)
    thread = StoreThread(store.writer)
    analysis = analysis_job(daemon, store, thread, store.node_id)
    assert not analysis.first_now and analysis.every_s == settings.analysis.interval_s

    async def run() -> object:
        return await asyncio.wait_for(analysis.run(), timeout=30)

    try:
        with structlog.testing.capture_logs() as logs:
            run_id = asyncio.run(run())
    finally:
        thread.close()
    assert run_id is not None
    with store.engine.connect() as conn:
        saved = latest_report(conn, store.node_id)
    assert saved is not None
    assert (saved.generated_ns, saved.until_ns, saved.hours) == (now, now, 6)
    assert saved.since_ns == now - 6 * NS_PER_HOUR  # exactly window_hours before now
    # with the table `lnflowctl opportunities` prints, rendered once, here
    with store.engine.connect() as conn:
        table = conn.execute(
            select(analysis_runs.c.table_format, analysis_runs.c.table_text).where(
                analysis_runs.c.id == run_id
            )
        ).one()
    assert tuple(table) == (TABLE_FORMAT, "\n".join(opportunities_body(saved)))
    (done,) = [e for e in logs if e["event"] == "analysis_done"]
    assert done["run_id"] == run_id and done["hours"] == 6
    assert done["opportunities"] == len(saved.opportunities)
    assert isinstance(done["duration_ms"], int) and done["duration_ms"] >= 0


def test_daemon_analysis_job_logs_a_failure_and_keeps_going(store: Store) -> None:
    daemon = Daemon(Settings(), clock_ns=lambda: T0)
    thread = StoreThread(store.writer)
    # a node id that does not exist: the run row violates its foreign key
    analysis = analysis_job(daemon, store, thread, 999)

    async def run() -> object:
        return await asyncio.wait_for(analysis.run(), timeout=30)

    try:
        with structlog.testing.capture_logs() as logs:
            assert asyncio.run(run()) is None
    finally:
        thread.close()
    assert [e["event"] for e in logs] == ["analysis_failed"]
