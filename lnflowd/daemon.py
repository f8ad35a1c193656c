"""Composition root: builds the store, the LND client, the recorder and the
scheduler, and runs them under one supervisor until SIGTERM/SIGINT.

Periodic work is registered in :meth:`Daemon.jobs_at_start` (runs whether lnd is up
or not) or :meth:`Daemon.jobs_when_connected` (needs the node); long-running work in
:meth:`Daemon._tasks`. The recording parts come from :class:`lnflow.recording.app.Parts`,
each replaceable by a test."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine

from lnflow.cli.render import table_to_save
from lnflow.domain import DaemonState, LndVersion, NodeInfo, StreamState
from lnflow.errors import ConfigError, LnflowError, NodeUnreachableError, StoreWriteError
from lnflow.lnd import LndClient, LndCredentials
from lnflow.recording import (
    ChannelSource,
    HtlcSource,
    LedgerSource,
    Recorder,
    StoreThread,
    guarded,
    sleep_or_stop,
)
from lnflow.recording.app import Job, Parts, schedule, supervise
from lnflow.settings import Settings, analysis_settings
from lnflow.store.db import WAL_SIZE_LIMIT, open_engine
from lnflow.store.read import analyze_store
from lnflow.store.retention import Pruner, PruneReport
from lnflow.store.snapshots import SnapshotWriter
from lnflow.store.writer import NodeTakenError, StoreWriter
from lnflow.text import printable

from .alerts import AlertService
from .memory import release_file_pages, trim_heap
from .metrics import DaemonMetrics
from .notify import notify, watchdog_enabled
from .storeguard import StoreGuard, guard_for

__all__ = ["Daemon", "LndLike", "credentials_from"]


log = structlog.get_logger("lnflowd")


class LndLike(HtlcSource, LedgerSource, ChannelSource, Protocol):
    async def check(self) -> tuple[NodeInfo, LndVersion]: ...
    async def close(self) -> None: ...


def credentials_from(settings: Settings) -> LndCredentials:
    return LndCredentials.from_settings(settings.lnd)


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


#: how long after recording starts the start-up's file pages are released (the config,
#: the store and the connection are done by then; a page later work needs comes back on
#: its first access)
RELEASE_PAGES_AFTER_S = 5.0


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
    parts: Parts = field(default_factory=Parts)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _heartbeat_failing: bool = field(default=False, init=False)
    _guard: StoreGuard | None = field(default=None, init=False)
    alerts: AlertService | None = field(default=None, init=False)

    async def run(self) -> int:
        """Run until stopped; returns the exit status. LnflowErrors propagate (fatal)."""
        settings = self.settings
        where = settings.store.location
        guard = guard_for(where)  # a file's lock before anything is written
        try:
            engine = await asyncio.to_thread(open_engine, where, migrate_in_child=True)
        except BaseException:
            guard.release(refused=True)
            raise
        guard.opened(engine)
        self._guard = guard
        store = StoreThread(StoreWriter(engine, exclusive=guard.exclusive), label=str(where))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        scheduler = AsyncIOScheduler()
        client: LndLike | None = None
        metrics: DaemonMetrics | None = None
        try:
            metrics = DaemonMetrics.start(settings, engine)
            self.alerts = AlertService(settings, engine, store, clock_ns=self.clock_ns)
            await store.call(
                store.target.daemon_started,
                self.clock_ns(),
                settings.recorder.heartbeat_s,
                metrics_listen=metrics.listening if metrics is not None else None,
            )
            log.info("daemon_started", db=str(where), rpcserver=settings.lnd.rpcserver)
            schedule(scheduler, self.jobs_at_start(engine, store))
            scheduler.start()
            await self.alerts.start(scheduler)  # the stream counts as down until it connects
            client = self.client_factory(settings)
            client.prepare_stream()  # its reader starts while lnd is asked who it is
            connected = await self._connect(client, store)
            if connected is None:
                return 0
            info, version = connected
            node_id = await store.call(store.target.upsert_node, info, self.clock_ns())
            describe = f"{printable(info.alias)} ({info.pubkey})"
            try:
                await asyncio.to_thread(guard.claim, engine, node_id, describe)
                await store.call(
                    store.target.claim_node,
                    node_id,
                    self.clock_ns(),
                    describe,
                    held=not guard.exclusive,
                )
            except NodeTakenError:
                await store.call(store.target.daemon_refused)
                raise
            await store.call(
                store.target.daemon_state,
                self.clock_ns(),
                node_id=node_id,
                lnd_alias=info.alias,
                lnd_version=info.version,
                lnd_network=info.network,
                lnd_state=DaemonState.CONNECTED,
                last_error=None,
            )
            log.info(
                "lnd_connected", alias=info.alias, version=version.version, network=info.network
            )
            schedule(
                scheduler, self.jobs_when_connected(client, engine, store, node_id, info.pubkey)
            )
            if settings.policy.mode != "off":
                from .policy_job import schedule_policy_job

                analyze = functools.partial(
                    self._analyze, engine, store, SnapshotWriter(engine), node_id
                )
                schedule_policy_job(
                    scheduler,
                    settings,
                    engine,
                    node_id,
                    analyze,
                    self.clock_ns,
                    on_change=self.alerts.policy_change,
                    lnd=client if isinstance(client, LndClient) else None,
                )
            if metrics is not None:
                metrics.attach(node_id, version.version, scheduler)
            await self.alerts.attach(node_id, info.pubkey, info.alias, scheduler)
            if not version.has_htlc_events:
                log.warning(
                    "live_failure_capture_off",
                    reason=f"lnd {version.version} has no HTLC event stream (needs 0.10+)",
                )
                await store.call(
                    store.target.daemon_state, self.clock_ns(), stream_state=StreamState.UNSUPPORTED
                )
                await self.stop.wait()
                return 0
            ingestor = await asyncio.to_thread(
                self.parts.ingestor, engine, node_id, settings.recorder
            )
            expired = await store.call(ingestor.expire_stale_attempts, self.clock_ns())
            if expired:
                log.info("stale_attempts_unresolved", count=expired)
            recorder = self.parts.recorder(
                client,
                store,
                ingestor,
                settings.recorder,
                node_id=node_id,
                lnd_version=version.version,
                clock_ns=self.clock_ns,
            )
            if metrics is not None:
                metrics.watch(store, ingestor, recorder)
            self.alerts.watch_stream(recorder.connected.is_set)
            await supervise(*self._tasks(recorder))
            log.info("daemon_stopping", events_stored=recorder.stored)
            return 0
        except LnflowError as exc:
            with contextlib.suppress(StoreWriteError):  # the store may be what failed
                await store.call(
                    store.target.daemon_state,
                    self.clock_ns(),
                    lnd_state=DaemonState.ERROR,
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
            if self.alerts is not None:
                await self.alerts.close()
            with contextlib.suppress(StoreWriteError):
                await store.call(store.target.daemon_stopped, self.clock_ns())
            store.close()
            guard.release()
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
                        lnd_state=DaemonState.UNREACHABLE,
                        last_error=str(exc),
                    )
                    reported = str(exc)
                await sleep_or_stop(self.stop, pace * random.uniform(0.8, 1.2))
        return None

    # -- what runs: one line per job or task --------------------------------------------

    def jobs_at_start(self, engine: Engine, store: StoreThread[StoreWriter]) -> list[Job]:
        """From the start, whether lnd is up or not: the heartbeat, and retention
        (first run now, then every prune_interval_s)."""
        s = self.settings
        pruner = Pruner.from_settings(engine, s.retention)
        every_prune_s = s.retention.prune_interval_s
        return [
            Job("heartbeat", functools.partial(self._heartbeat, store), s.recorder.heartbeat_s),
            Job(
                "prune",
                guarded("prune", functools.partial(self._prune, store, pruner)),
                every_prune_s,
                first_now=True,
                misfire_grace_s=every_prune_s,
            ),
        ]

    def jobs_when_connected(
        self,
        client: LndLike,
        engine: Engine,
        store: StoreThread[StoreWriter],
        node_id: int,
        our_pubkey: str,
    ) -> list[Job]:
        """Once lnd answered. Ledger sync and channel sampling: first run now, then on
        their intervals. Analysis snapshots every interval_s, the first one interval
        after lnd connected, so that a fresh store has its first channel samples and
        ledger pages by then."""
        s = self.settings
        ledger = self.parts.ledger(client, store, node_id, s.ledger)
        sampler = self.parts.sampler(client, store, node_id, our_pubkey, clock_ns=self.clock_ns)
        every_analysis_s = s.analysis.interval_s
        return [
            *(
                Job(
                    job_id,
                    _trimmed(guarded(job_id, job)),
                    every_s,
                    first_now=True,
                    misfire_grace_s=every_s,
                )
                for job_id, job, every_s in (
                    ("ledger_sync", ledger.run, s.ledger.sync_interval_s),
                    ("channel_sampler", sampler.run, s.channels.sample_interval_s),
                )
            ),
            Job(
                "analysis",
                functools.partial(self._analyze, engine, store, SnapshotWriter(engine), node_id),
                every_analysis_s,
                misfire_grace_s=every_analysis_s,
            ),
        ]

    def _tasks(self, recorder: Recorder) -> list[Coroutine[Any, Any, object]]:
        """Long-running work under one supervisor (:func:`supervise`) until stop is
        set; the first to fail ends the others and the daemon."""
        return [recorder.run(self.stop), self._release_start_pages()]

    async def _release_start_pages(self) -> None:
        """Once recording runs: the file pages only start-up needed back to the kernel
        (lnflowd/memory.py)."""
        await sleep_or_stop(self.stop, RELEASE_PAGES_AFTER_S)
        if not self.stop.is_set():
            await asyncio.to_thread(release_file_pages)

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
            # rendered here, off the store thread, once for every `lnflowctl opportunities`
            table = await asyncio.to_thread(table_to_save, report)
            if self.stop.is_set():
                return None
            run_id = await store.call(snapshots.write_run, node_id, report, duration_ms, table)
        except StoreWriteError as exc:
            log.warning("analysis_not_saved", hours=hours, error=exc.reason)
            if self.alerts is not None:
                self.alerts.analysis_failed(f"snapshot not saved: {exc.reason}")
            return None
        except Exception as exc:
            log.exception("analysis_failed", hours=hours)
            if self.alerts is not None:
                self.alerts.analysis_failed(f"{type(exc).__name__}: {exc}")
            return None
        finally:
            trim_heap()
        if self.alerts is not None:
            self.alerts.analysis_done(report)
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
        if self._guard is not None:
            await asyncio.to_thread(self._guard.check)  # a server's may wait on the network
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
