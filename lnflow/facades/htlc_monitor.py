"""``HTLCMonitor``: record a node's HTLC events from a script, with the seed's API.

It does what lnflowd does, in-process and for as long as the caller wants:
subscribe to the HTLC event stream and write every event through the store's
:class:`~lnflow.store.ingest.Ingestor` (attempts, demand clusters, rollups),
sync the forwards ledger and sample the channels, all into an lnflow store
(:func:`~lnflow.store.db.open_engine`, :class:`~lnflow.store.writer.StoreWriter`).
The analysis then reads that store like ``lnflowctl analyze`` does.

    monitor = HTLCMonitor(grpc_client, db_path="monitor.db")
    await monitor.start_monitoring()
    await asyncio.sleep(3600)
    await monitor.stop_monitoring()
    report = await monitor.analysis_report()

For a long-running recorder use ``lnflowd``; give the monitor its own store
(the default is a temporary file), not the daemon's.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine

from lnflow import settings as plain
from lnflow.analysis.model import AnalysisReport, AnalysisSettings
from lnflow.config import (
    AnalysisConfig,
    ChannelSettings,
    LedgerSettings,
    LndSettings,
    RecorderSettings,
)
from lnflow.domain import LndVersion, NodeInfo
from lnflow.errors import LndError
from lnflow.recording import (
    ChannelSampler,
    ChannelSource,
    HtlcSource,
    HtlcStreamLike,
    LedgerSource,
    LedgerSync,
    Recorder,
    StoreThread,
    guarded,
)
from lnflow.recording.app import Job, Parts, schedule, supervise
from lnflow.store.ingest import Ingestor
from lnflow.store.writer import StoreWriter

__all__ = ["HTLCMonitor", "HtlcStreamLike", "MonitorSource"]

# The daemon's defaults: the settings classes of lnflowd's [analysis] section and the
# analysis thresholds (config/lnflow.example.toml).
_ANALYSIS = AnalysisConfig()


class MonitorSource(HtlcSource, LedgerSource, ChannelSource, Protocol):
    """What the monitor needs from an lnd client (:class:`AsyncLNDgRPCClient` has it)."""

    async def check(self) -> tuple[NodeInfo, LndVersion]: ...


class HTLCMonitor:
    """Records HTLC events, forwards and channel samples into an lnflow store.

    The same recorder, ledger sync and channel sampler as lnflowd
    (:mod:`lnflow.recording`), run in-process. ``history_hours`` is the window
    :meth:`analysis_report` covers by default; ``min_failure_count`` and
    ``min_missed_sats`` are the reporting thresholds of the analysis (DESIGN §5).
    ``db_path`` None: a temporary store, removed by :meth:`close`.

    ``recorder``, ``ledger`` and ``channels`` are lnflowd's settings sections of the
    same names (default: lnflowd's defaults); ``parts`` builds the recording parts
    (:class:`lnflow.recording.app.Parts`). Unlike lnflowd, stopping does not wait
    for lnd to send more (no ``shutdown_drain_s``): what was received is written.
    """

    def __init__(
        self,
        grpc_client: MonitorSource,
        history_hours: int = _ANALYSIS.window_hours,
        min_failure_count: int = _ANALYSIS.min_failure_count,
        min_missed_sats: int = _ANALYSIS.min_missed_sats,
        db_path: str | Path | None = None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        recorder: RecorderSettings | None = None,
        ledger: LedgerSettings | None = None,
        channels: ChannelSettings | None = None,
        parts: Parts | None = None,
    ) -> None:
        if history_hours < 1:
            raise ValueError("history_hours must be at least 1")
        _log_through_stdlib_logging()
        self.client = grpc_client
        self.history_hours = history_hours
        self.min_failure_count = min_failure_count
        self.min_missed_sats = min_missed_sats
        self._tmpdir: Path | None = None
        if db_path is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="lnflow-monitor-"))
            db_path = self._tmpdir / "lnflow.db"
        self.db_path = Path(db_path).expanduser()
        self._now = clock_ns
        # lnflow.recording takes lnflowd's plain settings (lnflow.settings)
        self._rec = plain.section(
            plain.RecorderSettings, (recorder or RecorderSettings()).model_dump()
        )
        self._ledger_settings = plain.section(
            plain.LedgerSettings, (ledger or LedgerSettings()).model_dump()
        )
        self._channels = channels or ChannelSettings()
        self._parts = parts or Parts()
        self._engine: Engine | None = None
        self._store: StoreThread[StoreWriter] | None = None
        self._ingestor: Ingestor | None = None
        self._ledger: LedgerSync | None = None
        self._sampler: ChannelSampler | None = None
        self._recorder: Recorder | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.node_id: int | None = None
        self.node: NodeInfo | None = None
        #: the error that ended recording early (raised again by stop_monitoring)
        self.failure: LndError | None = None
        self.started_ns: int | None = None
        self.stopped_ns: int | None = None

    # -- public ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def events_recorded(self) -> int:
        """Events written to the store so far (replays after a reconnect not counted)."""
        return self._recorder.stored if self._recorder else 0

    async def start_monitoring(self) -> None:
        """Connect, open the store, take a first ledger sync and channel sample, subscribe.

        Returns once the HTLC stream is up; recording continues in the background
        until :meth:`stop_monitoring`, reconnecting with backoff when lnd restarts.
        LND errors (unreachable, macaroon rejected, ...) are raised here.
        """
        if self._task is not None:
            return
        info, version = await self.client.check()
        if not version.has_htlc_events:
            raise LndError(
                f"lnd {version.version} has no HTLC event stream (needs 0.10+): "
                "upgrade lnd, or analyze the forwards ledger with lnflowd"
            )
        store = await self._open_store()
        self.node = info
        self.node_id = node_id = await store.call(store.target.upsert_node, info, self._now())
        if self._ingestor is None:
            self._ingestor = await asyncio.to_thread(
                self._parts.ingestor, self._require_engine(), node_id, self._rec
            )
            await store.call(self._ingestor.expire_stale_attempts, self._now())
        parts = self._parts
        self._ledger = parts.ledger(self.client, store, node_id, self._ledger_settings)
        self._sampler = parts.sampler(self.client, store, node_id, info.pubkey, clock_ns=self._now)
        await self.sample_channels()
        await self.sync_ledger()
        self._stop = asyncio.Event()
        self.failure = None
        recorder = self._recorder = parts.recorder(
            self.client,
            store,
            self._ingestor,
            self._rec,
            node_id=node_id,
            lnd_version=version.version,
            clock_ns=self._now,
            shutdown_drain_s=0.0,
        )
        # the one background task: the recorder under the same supervisor as lnflowd's
        self._task = asyncio.create_task(supervise(recorder.run(self._stop)), name="lnflow-monitor")
        connected = asyncio.create_task(recorder.connected.wait())
        done, _ = await asyncio.wait(
            {self._task, connected},
            timeout=LndSettings().timeout_s,
            return_when="FIRST_COMPLETED",
        )
        connected.cancel()
        if self._task in done:  # the recorder gave up: a fatal LND error
            task, self._task = self._task, None
            task.result()
        self.started_ns, self.stopped_ns = self._now(), None
        ledger_every_s = self._ledger_settings.sync_interval_s
        sample_s = self._channels.sample_interval_s
        self._scheduler = AsyncIOScheduler()
        # first runs one interval later: the first sync and sample were taken above
        schedule(
            self._scheduler,
            [
                Job("ledger_sync", guarded("ledger_sync", self.sync_ledger), ledger_every_s),
                Job("channel_sampler", guarded("channel_sampler", self.sample_channels), sample_s),
            ],
        )
        self._scheduler.start()

    async def stop_monitoring(self) -> None:
        """Stop the stream, write what was received, take a last ledger sync and sample.

        The store stays open for :meth:`analysis_report` until :meth:`close`. If
        recording had ended early (e.g. the macaroon was rejected), that error is
        raised here, after everything received was written.
        """
        task, self._task = self._task, None
        if task is None:
            return
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._stop.set()
        try:
            await task
        except LndError as exc:
            self.failure = exc
        self.stopped_ns = self._now()
        if self.failure is not None:
            raise self.failure
        for name, step in (
            ("ledger_sync", self.sync_ledger),
            ("channel_sampler", self.sample_channels),
        ):
            await guarded(name, step)()

    async def analysis_report(
        self, hours: int | None = None, settings: AnalysisSettings | None = None
    ) -> AnalysisReport:
        """Analyze the last ``hours`` (default ``history_hours``) of the store, now."""
        from lnflow.store.read import analyze_store

        if self.node_id is None:
            raise RuntimeError("nothing recorded yet: await start_monitoring() first")
        if self._recorder is not None:
            await self._recorder.flush()
        engine, node_id = self._require_engine(), self.node_id
        window = hours or self.history_hours
        settings = settings or AnalysisSettings(
            min_failure_count=self.min_failure_count, min_missed_sats=self.min_missed_sats
        )
        now = self._now()

        return await asyncio.to_thread(
            analyze_store,
            engine,
            node_id,
            until_ns=now,
            hours=window,
            settings=settings,
            generated_ns=now,
        )

    async def close(self) -> None:
        """Stop if running, close the store; a temporary store is deleted."""
        await self.stop_monitoring()
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    async def __aenter__(self) -> HTLCMonitor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def sync_ledger(self) -> int:
        """Store forwards lnd settled since the newest one stored (paginated, no cap)."""
        if self._ledger is None:
            raise RuntimeError("the store is not open: await start_monitoring() first")
        return await self._ledger.run()

    async def sample_channels(self) -> int:
        """One sample per open channel, with both policies and the peer's alias."""
        if self._sampler is None:
            raise RuntimeError("the store is not open: await start_monitoring() first")
        return await self._sampler.run()

    # -- internals -----------------------------------------------------------------------

    async def _open_store(self) -> StoreThread[StoreWriter]:
        if self._store is None:
            from lnflow.store.db import open_engine

            self._engine = await asyncio.to_thread(open_engine, self.db_path)
            self._store = StoreThread(StoreWriter(self._engine))
        return self._store

    def _require_engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the store is not open: await start_monitoring() first")
        return self._engine


def _log_through_stdlib_logging() -> None:
    """In a host program, the recorder's log lines go to :mod:`logging` ("lnflow.recording"),
    not to stdout, unless the program configured structlog itself."""
    if not structlog.is_configured():
        structlog.configure(
            processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            cache_logger_on_first_use=True,
        )
