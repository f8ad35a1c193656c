"""Composition root: builds the store, the LND client, the recorder and the
scheduler, and runs them under one supervisor until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ParamSpec, Protocol, TypeVar

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine, event

from lnflow.config import Settings, analysis_settings
from lnflow.domain import LndVersion, NodeInfo
from lnflow.errors import ConfigError, LnflowError, NodeUnreachableError, StoreWriteError
from lnflow.lnd import LndClient, LndCredentials
from lnflow.recording import (
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
from lnflow.store.db import WAL_SIZE_LIMIT, open_engine
from lnflow.store.ingest import Ingestor
from lnflow.store.read import analyze_store
from lnflow.store.retention import Pruner, PruneReport
from lnflow.store.snapshots import SnapshotWriter
from lnflow.store.writer import StoreWriter

from .memory import trim_heap
from .metrics import DaemonMetrics
from .notify import notify, watchdog_enabled
from .storeguard import StoreIdentity, StoreLock, StoreMovedError, stop_now

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


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _quiet_when_cancelled(job: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R | None]]:
    """A scheduler job that ends quietly when it is cancelled.

    On exit (SIGTERM, or lnd's credentials missing at start) the daemon shuts the
    scheduler down, which cancels the jobs still running: the first prune, a ledger page.
    APScheduler logs each such cancellation as a job failure with a 15-line traceback.
    Only the cancellation is quiet; any other exception propagates as before.
    """

    @functools.wraps(job)
    async def run(*args: _P.args, **kwargs: _P.kwargs) -> _R | None:
        try:
            return await job(*args, **kwargs)
        except asyncio.CancelledError:
            log.debug("job_cancelled", job=getattr(job, "__name__", "?"))
            return None

    return run


def _trimmed(job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """The job, then its freed heap pages back to the kernel (a ledger page of 10 000
    forwards leaves megabytes free in malloc's arenas otherwise)."""

    @_quiet_when_cancelled
    async def run() -> None:
        try:
            await job()
        finally:
            trim_heap()

    return run


def _guard_connect(identity: StoreIdentity) -> Callable[[object, object], None]:
    def check(dbapi_connection: object, connection_record: object) -> None:
        try:
            identity.check()
        except StoreMovedError as exc:
            stop_now(exc, identity)

    return check


# Tests only: divides the HTLC stream's keepalive times, so a simulator whose ping
# policy is scaled alike proves a long quiet stream in a short run (tests/faults).
KEEPALIVE_SCALE_ENV = "_LNFLOW_KEEPALIVE_SCALE"


def _keepalive_scale() -> float:
    text = os.environ.get(KEEPALIVE_SCALE_ENV, "1")
    try:
        scale = float(text)
    except ValueError:
        scale = 0.0
    if not scale > 0:
        raise ConfigError(f"{KEEPALIVE_SCALE_ENV}={text!r} is not a positive number: unset it")
    return scale


def _real_client(settings: Settings) -> LndLike:
    return LndClient(
        credentials_from(settings),
        timeout_s=settings.lnd.timeout_s,
        keepalive_scale=_keepalive_scale(),
    )


@dataclass
class Daemon:
    settings: Settings
    client_factory: Callable[[Settings], LndLike] = _real_client
    clock_ns: Callable[[], int] = time.time_ns
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _heartbeat_failing: bool = field(default=False, init=False)
    _identity: StoreIdentity | None = field(default=None, init=False)

    async def run(self) -> int:
        """Run until stopped; returns the exit status. LnflowErrors propagate (fatal)."""
        settings = self.settings
        db_path = settings.store.path
        lock = StoreLock(db_path).acquire()  # before anything is written
        try:
            engine = await asyncio.to_thread(open_engine, db_path, migrate_in_child=True)
        except BaseException:
            lock.release(remove=True)
            raise
        identity = StoreIdentity(db_path)
        self._identity = identity
        # a new connection must open our file, never one put in its place
        event.listen(engine, "connect", _guard_connect(identity), insert=True)
        store = StoreThread(StoreWriter(engine), label=str(db_path))
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
            client.prepare_stream()  # its reader starts while lnd is asked who it is
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
                shutdown_drain_s=settings.recorder.shutdown_drain_s,
                max_held_events=settings.recorder.max_held_events,
                probe_every_s=settings.recorder.probe_every_s,
                probe_timeout_s=settings.recorder.probe_timeout_s,
                reconnect_probe_s=settings.recorder.reconnect_probe_s,
                clock_ns=self.clock_ns,
            )
            if metrics is not None:
                metrics.watch(store, ingestor, recorder)
            await recorder.run(self.stop)
            log.info("daemon_stopping", events_stored=recorder.stored)
            return 0
        except LnflowError as exc:
            with contextlib.suppress(StoreWriteError):  # the store may be what failed
                await store.call(
                    store.target.daemon_state,
                    self.clock_ns(),
                    lnd_state="error",
                    last_error=str(exc),
                )
            raise
        finally:
            if scheduler.running:
                scheduler.shutdown(wait=False)
            if client is not None:
                await client.close()
            if metrics is not None:
                metrics.close()
            with contextlib.suppress(StoreWriteError):
                await store.call(store.target.daemon_stopped, self.clock_ns())
            store.close()
            engine.dispose()
            identity.close()
            lock.release()
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
        """GetInfo + GetVersion, retrying only while LND is unreachable (may be starting).

        Retries at the recorder's reconnect pace (``reconnect_probe_s``, jittered):
        each attempt is one cheap call, and lnd is reached as soon as it answers.
        """
        pace = self.settings.recorder.reconnect_probe_s
        reported = ""
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
                if str(exc) != reported:  # each new reason once, not every attempt
                    log.warning("lnd_unreachable", error=str(exc))
                    await store.call(
                        store.target.daemon_state,
                        self.clock_ns(),
                        lnd_state="unreachable",
                        last_error=str(exc),
                    )
                    reported = str(exc)
                await sleep_or_stop(self.stop, pace * random.uniform(0.8, 1.2))
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
            guarded("prune", functools.partial(self._prune, store, pruner)),
            "interval",
            seconds=every_s,
            id="prune",
            next_run_time=datetime.now(UTC),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=every_s,
        )

    @_quiet_when_cancelled
    async def _prune(self, store: StoreThread[StoreWriter], pruner: Pruner) -> None:
        """One store call per batch, so event writes queue in between and never stall."""
        r = self.settings.retention
        now_ns = self.clock_ns()
        await store.call(pruner.mark, now_ns)  # raw rows expire by when they were recorded
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
        cp = await store.call(pruner.checkpoint)  # truncate the WAL when no reader holds it
        if cp is not None:
            log.debug("wal_checkpoint", busy=cp.busy, wal_bytes=cp.wal_bytes)
            if cp.busy and cp.wal_bytes > WAL_SIZE_LIMIT:
                log.warning("wal_held_by_reader", wal_bytes=cp.wal_bytes)
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

    @_quiet_when_cancelled
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
                analyze_store,
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
        except StoreWriteError as exc:
            log.warning("analysis_not_saved", hours=hours, error=exc.reason)
            return None
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

    @_quiet_when_cancelled
    async def _heartbeat(self, store: StoreThread[StoreWriter]) -> None:
        """The store's sign of life; systemd's watchdog is fed even while the store cannot
        be written (the recorder holds events meanwhile and stops past its bound). A store
        moved or deleted under the daemon stops it first."""
        if self._identity is not None:
            try:
                self._identity.check()
            except StoreMovedError as exc:
                stop_now(exc, self._identity)
        try:
            await store.call(store.target.daemon_state, self.clock_ns())
        except asyncio.CancelledError:
            return  # the daemon is exiting under it (e.g. after giving up on the store)
        except StoreWriteError as exc:
            if not self._heartbeat_failing:
                log.warning("heartbeat_not_written", error=exc.reason, store=store.label)
            self._heartbeat_failing = True
        else:
            if self._heartbeat_failing:
                log.info("heartbeat_written_again")
            self._heartbeat_failing = False
        if watchdog_enabled():
            notify("WATCHDOG=1")
