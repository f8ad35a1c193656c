"""Composition root: builds the store, the LND client, the recorder and the
scheduler, and runs them under one supervisor until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine

from lnflow.analysis.model import AnalysisReport, AnalysisSettings
from lnflow.config import Settings, analysis_settings
from lnflow.domain import LndVersion, NodeInfo
from lnflow.errors import LnflowError, NodeUnreachableError
from lnflow.lnd import LndClient, LndCredentials
from lnflow.recording import (
    Backoff,
    ChannelSampler,
    ChannelSource,
    HtlcSource,
    LedgerSource,
    LedgerSync,
    Recorder,
    StoreThread,
    guarded,
    sleep_or_stop,
)
from lnflow.store.analysis_queries import analyze_window
from lnflow.store.db import open_engine
from lnflow.store.ingest import Ingestor
from lnflow.store.retention import Pruner, PruneReport
from lnflow.store.snapshots import SnapshotWriter
from lnflow.store.writer import StoreWriter

from .memory import trim_heap
from .metrics import DaemonMetrics
from .notify import notify, watchdog_enabled

__all__ = ["Daemon", "LndLike", "credentials_from"]


log = structlog.get_logger("lnflowd")


class LndLike(HtlcSource, LedgerSource, ChannelSource, Protocol):
    async def check(self) -> tuple[NodeInfo, LndVersion]: ...
    async def close(self) -> None: ...


def credentials_from(settings: Settings) -> LndCredentials:
    lnd = settings.lnd
    return LndCredentials.resolve(
        lnddir=lnd.lnddir,
        network=lnd.network,
        rpcserver=lnd.rpcserver,
        tlscertpath=lnd.tlscertpath or None,
        macaroonpath=lnd.macaroonpath or None,
    )


def _analyze_store(
    engine: Engine, node_id: int, *, until_ns: int, hours: int, settings: AnalysisSettings
) -> AnalysisReport:
    """Read the window and analyse it on one read connection (kept open for the lazy
    failure details). Blocking: runs in a worker thread, never on the store thread."""
    with engine.connect() as conn:
        return analyze_window(conn, node_id, until_ns=until_ns, hours=hours, settings=settings)


def _trimmed(job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """The job, then its freed heap pages back to the kernel (a ledger page of 10 000
    forwards leaves megabytes free in malloc's arenas otherwise)."""

    async def run() -> None:
        try:
            await job()
        finally:
            trim_heap()

    return run


def _real_client(settings: Settings) -> LndLike:
    return LndClient(credentials_from(settings), timeout_s=settings.lnd.timeout_s)


@dataclass
class Daemon:
    settings: Settings
    client_factory: Callable[[Settings], LndLike] = _real_client
    clock_ns: Callable[[], int] = time.time_ns
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> int:
        """Run until stopped; returns the exit status. LnflowErrors propagate (fatal)."""
        settings = self.settings
        db_path = settings.store.path
        engine = await asyncio.to_thread(open_engine, db_path, migrate_in_child=True)
        store = StoreThread(StoreWriter(engine))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        scheduler = AsyncIOScheduler()
        client: LndLike | None = None
        metrics: DaemonMetrics | None = None
        try:
            metrics = DaemonMetrics.start(settings, engine)
            await store.call(store.target.close_dangling_sessions, self.clock_ns())
            await store.call(
                store.target.daemon_started, self.clock_ns(), settings.recorder.heartbeat_s
            )
            log.info("daemon_started", db=str(db_path), rpcserver=settings.lnd.rpcserver)
            scheduler.add_job(
                self._heartbeat,
                "interval",
                seconds=settings.recorder.heartbeat_s,
                args=[store],
                id="heartbeat",
                coalesce=True,
                max_instances=1,
            )
            self._schedule_prune_job(
                scheduler, store, Pruner.from_settings(engine, settings.retention)
            )
            scheduler.start()
            client = self.client_factory(settings)
            connected = await self._connect(client, store)
            if connected is None:
                return 0
            info, version = connected
            node_id = await store.call(store.target.upsert_node, info, self.clock_ns())
            await store.call(
                store.target.daemon_state,
                self.clock_ns(),
                node_id=node_id,
                lnd_alias=info.alias,
                lnd_version=info.version,
                lnd_network=info.network,
                lnd_state="connected",
                last_error=None,
            )
            log.info(
                "lnd_connected", alias=info.alias, version=version.version, network=info.network
            )
            self._schedule_sync_jobs(scheduler, client, store, node_id, info.pubkey)
            self._schedule_analysis_job(scheduler, engine, store, node_id)
            if metrics is not None:
                metrics.attach(node_id, version.version, scheduler)
            if not version.has_htlc_events:
                log.warning(
                    "live_failure_capture_off",
                    reason=f"lnd {version.version} has no HTLC event stream (needs 0.10+)",
                )
                await store.call(
                    store.target.daemon_state, self.clock_ns(), stream_state="unsupported"
                )
                await self.stop.wait()
                return 0
            rec = settings.recorder
            ingestor = await asyncio.to_thread(
                Ingestor,
                engine,
                node_id,
                attempt_timeout_ns=int(rec.attempt_timeout_s * 1e9),
                attempt_linger_ns=int(rec.attempt_linger_s * 1e9),
                dedup_window_ns=int(rec.dedup_window_s * 1e9),
                cluster_max_span_ns=int(rec.cluster_max_span_s * 1e9) or None,
            )
            expired = await store.call(ingestor.expire_stale_attempts, self.clock_ns())
            if expired:
                log.info("stale_attempts_unresolved", count=expired)
            recorder = Recorder(
                client,
                store,
                ingestor,
                node_id=node_id,
                lnd_version=version.version,
                batch_size=settings.recorder.batch_size,
                flush_interval_s=settings.recorder.flush_interval_s,
                reconnect_max_s=settings.recorder.reconnect_max_s,
                shutdown_drain_s=settings.recorder.shutdown_drain_s,
                clock_ns=self.clock_ns,
            )
            if metrics is not None:
                metrics.watch(store, ingestor, recorder)
            await recorder.run(self.stop)
            log.info("daemon_stopping", events_stored=recorder.stored)
            return 0
        except LnflowError as exc:
            await store.call(
                store.target.daemon_state, self.clock_ns(), lnd_state="error", last_error=str(exc)
            )
            raise
        finally:
            if scheduler.running:
                scheduler.shutdown(wait=False)
            if client is not None:
                await client.close()
            if metrics is not None:
                metrics.close()
            await store.call(store.target.daemon_stopped, self.clock_ns())
            store.close()
            engine.dispose()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            log.info("daemon_stopped")

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self.stop.is_set():
            log.info("signal_received", signal=sig.name)
            notify("STOPPING=1")
        self.stop.set()

    async def _connect(
        self, client: LndLike, store: StoreThread[StoreWriter]
    ) -> tuple[NodeInfo, LndVersion] | None:
        """GetInfo + GetVersion, retrying only while LND is unreachable (may be starting)."""
        backoff = Backoff(self.settings.recorder.reconnect_max_s)
        reported = False
        first = True
        while not self.stop.is_set():
            try:
                result = await client.check()
                if first:
                    notify("READY=1", "STATUS=connected to lnd")
                return result
            except NodeUnreachableError as exc:
                if first:
                    notify("READY=1", "STATUS=waiting for lnd (unreachable)")
                    first = False
                if not reported:
                    log.warning("lnd_unreachable", error=str(exc))
                    await store.call(
                        store.target.daemon_state,
                        self.clock_ns(),
                        lnd_state="unreachable",
                        last_error=str(exc),
                    )
                    reported = True
                await sleep_or_stop(self.stop, backoff.next())
        return None

    def _schedule_sync_jobs(
        self,
        scheduler: AsyncIOScheduler,
        client: LndLike,
        store: StoreThread[StoreWriter],
        node_id: int,
        our_pubkey: str,
    ) -> None:
        """Ledger sync and channel sampling: first run now, then on their intervals."""
        s = self.settings
        ledger = LedgerSync(client, store, node_id, page_size=s.ledger.page_size)
        sampler = ChannelSampler(client, store, node_id, our_pubkey, clock_ns=self.clock_ns)
        for job_id, job, every_s in (
            ("ledger_sync", ledger.run, s.ledger.sync_interval_s),
            ("channel_sampler", sampler.run, s.channels.sample_interval_s),
        ):
            scheduler.add_job(
                _trimmed(guarded(job_id, job)),
                "interval",
                seconds=every_s,
                id=job_id,
                next_run_time=datetime.now(UTC),
                coalesce=True,
                max_instances=1,
                misfire_grace_time=every_s,
            )

    def _schedule_prune_job(
        self, scheduler: AsyncIOScheduler, store: StoreThread[StoreWriter], pruner: Pruner
    ) -> None:
        """Retention: first run now, then every prune_interval_s, whether LND is up or not."""
        every_s = self.settings.retention.prune_interval_s
        scheduler.add_job(
            self._prune,
            "interval",
            seconds=every_s,
            args=[store, pruner],
            id="prune",
            next_run_time=datetime.now(UTC),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=every_s,
        )

    async def _prune(self, store: StoreThread[StoreWriter], pruner: Pruner) -> None:
        """One store call per batch, so event writes queue in between and never stall."""
        r = self.settings.retention
        now_ns = self.clock_ns()
        report = PruneReport()
        for _ in range(r.max_batches):
            if self.stop.is_set():
                break
            step = await store.call(pruner.prune_step, now_ns, r.batch_rows)
            report.add(step)
            if step.cause == "size":
                log.warning(
                    "retention_size_budget_drop",
                    table=step.table,
                    rows=step.deleted,
                    through_ns=step.dropped_through_ns,
                    max_db_mb=r.max_db_mb,
                )
            if not step.more:
                break
        if report.deleted or report.pages_freed:
            log.info(
                "prune_done",
                expired=report.expired,
                dropped_for_size=report.dropped_for_size,
                pages_freed=report.pages_freed,
                batches=report.steps,
                complete=report.complete,
            )
        if report.over_budget:
            log.warning(
                "retention_over_budget",
                max_db_mb=r.max_db_mb,
                reason="no raw rows left to drop; rollups and the ledger are kept",
            )
        trim_heap()

    def _schedule_analysis_job(
        self,
        scheduler: AsyncIOScheduler,
        engine: Engine,
        store: StoreThread[StoreWriter],
        node_id: int,
    ) -> None:
        """Analysis snapshots every interval_s; the first one interval after lnd connected,
        so that a fresh store has its first channel samples and ledger pages by then."""
        every_s = self.settings.analysis.interval_s
        scheduler.add_job(
            self._analyze,
            "interval",
            seconds=every_s,
            args=[engine, store, SnapshotWriter(engine), node_id],
            id="analysis",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=every_s,
        )

    async def _analyze(
        self,
        engine: Engine,
        store: StoreThread[StoreWriter],
        snapshots: SnapshotWriter,
        node_id: int,
    ) -> int | None:
        """One run: read and analyse in a worker thread on its own connection (the store
        thread stays free for event batches), then save the snapshot on the store thread.

        Returns the run id; None when stopping or when the run failed (logged with its
        traceback, the next run is tried on time).
        """
        now_ns = self.clock_ns()
        hours = self.settings.analysis.window_hours
        started = time.perf_counter()
        try:
            report = await asyncio.to_thread(
                _analyze_store,
                engine,
                node_id,
                until_ns=now_ns,
                hours=hours,
                settings=analysis_settings(self.settings),
            )
            duration_ms = round((time.perf_counter() - started) * 1000)
            if self.stop.is_set():
                return None
            run_id = await store.call(snapshots.write_run, node_id, report, duration_ms)
        except Exception:
            log.exception("analysis_failed", hours=hours)
            return None
        finally:
            trim_heap()
        log.info(
            "analysis_done",
            run_id=run_id,
            hours=hours,
            opportunities=len(report.opportunities),
            rebalance_moves=len(report.rebalance_plan),
            node_failures=report.node_failures,
            node_missed_msat=report.node_missed_msat,
            gaps=len(report.gaps),
            duration_ms=duration_ms,
        )
        return run_id

    async def _heartbeat(self, store: StoreThread[StoreWriter]) -> None:
        await store.call(store.target.daemon_state, self.clock_ns())
        if watchdog_enabled():
            notify("WATCHDOG=1")
