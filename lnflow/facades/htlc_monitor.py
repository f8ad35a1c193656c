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
import contextlib
import functools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

from sqlalchemy import Engine

from lnflow.analysis.model import AnalysisReport, AnalysisSettings
from lnflow.domain import (
    ChannelEdge,
    ChannelInfo,
    ChannelSample,
    ForwardingPage,
    HtlcEvent,
    LndVersion,
    NodeInfo,
    StreamSubscribed,
)
from lnflow.errors import (
    LndError,
    MacaroonMissingError,
    MacaroonRejectedError,
    TlsMismatchError,
)
from lnflow.store.ingest import Ingestor
from lnflow.store.writer import StoreWriter

__all__ = ["HTLCMonitor", "HtlcStreamLike", "MonitorSource"]

log = logging.getLogger("lnflow.facades")

T = TypeVar("T")

NS = 1_000_000_000
# The daemon's defaults ([recorder], [ledger], [channels] of config/lnflow.example.toml).
_BATCH_SIZE = 5000
_FLUSH_INTERVAL_S = 1.0
_LEDGER_INTERVAL_S = 60.0
_SAMPLE_INTERVAL_S = 300.0
_RECONNECT_MAX_S = 30.0
_ATTEMPT_TIMEOUT_S = 600
_ATTEMPT_LINGER_S = 10
_DEDUP_WINDOW_S = 60
_CLUSTER_MAX_SPAN_S = 600
_PAGE_SIZE = 10_000
# Stream errors no reconnect can fix (lnflowd treats them as fatal, too).
_FATAL = (MacaroonRejectedError, MacaroonMissingError, TlsMismatchError)


class HtlcStreamLike(Protocol):
    def __aiter__(self) -> HtlcStreamLike: ...
    async def __anext__(self) -> HtlcEvent | StreamSubscribed: ...
    async def wait_connected(self, timeout_s: float) -> None: ...
    def cancel(self) -> None: ...


class MonitorSource(Protocol):
    """What the monitor needs from an lnd client (:class:`AsyncLNDgRPCClient` has it)."""

    async def check(self) -> tuple[NodeInfo, LndVersion]: ...
    def subscribe_htlc_events(self) -> HtlcStreamLike: ...
    async def list_channels(self) -> list[ChannelInfo]: ...
    async def get_chan_info(self, chan_id: int) -> ChannelEdge | None: ...
    async def get_node_alias(self, pubkey: str) -> str | None: ...
    async def forwarding_history(
        self,
        *,
        start_time_s: int,
        end_time_s: int = 0,
        index_offset: int = 0,
        num_max_events: int = 10_000,
    ) -> ForwardingPage: ...


class HTLCMonitor:
    """Records HTLC events, forwards and channel samples into an lnflow store.

    ``history_hours`` is the window :meth:`analysis_report` covers by default;
    ``min_failure_count`` and ``min_missed_sats`` are the reporting thresholds
    of the analysis (DESIGN §5). ``db_path`` None: a temporary store, removed
    by :meth:`close`.
    """

    def __init__(
        self,
        grpc_client: MonitorSource,
        history_hours: int = 24,
        min_failure_count: int = 3,
        min_missed_sats: int = 100,
        db_path: str | Path | None = None,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if history_hours < 1:
            raise ValueError("history_hours must be at least 1")
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
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lnflow-monitor")
        self._engine: Engine | None = None
        self._writer: StoreWriter | None = None
        self._ingestor: Ingestor | None = None
        self.node_id: int | None = None
        self.node: NodeInfo | None = None
        self._version = ""
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stream: HtlcStreamLike | None = None
        self._session_id: int | None = None
        self._buffer: list[HtlcEvent] = []
        self._flush_lock = asyncio.Lock()
        self._aliases: dict[str, str] = {}
        #: events written to the store so far (replays after a reconnect not counted)
        self.events_recorded = 0
        #: the error that ended recording early (raised again by stop_monitoring)
        self.failure: LndError | None = None
        self.started_ns: int | None = None
        self.stopped_ns: int | None = None

    # -- public ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def start_monitoring(self) -> None:
        """Connect, open the store, take a first ledger sync and channel sample, subscribe.

        Returns once the HTLC stream is up; recording continues in the background
        until :meth:`stop_monitoring`, reconnecting with backoff when lnd restarts.
        LND errors (unreachable, macaroon rejected, ...) are raised here.
        """
        if self._tasks:
            return
        info, version = await self.client.check()
        if not version.has_htlc_events:
            raise LndError(
                f"lnd {version.version} has no HTLC event stream (needs 0.10+): "
                "upgrade lnd, or analyze the forwards ledger with lnflowd"
            )
        from lnflow.store.db import open_engine

        if self._engine is None:
            self._engine = await self._call(open_engine, self.db_path)
            self._writer = StoreWriter(self._engine)
        writer = self._store_writer
        self.node, self._version = info, version.version
        self.node_id = await self._call(writer.upsert_node, info, self._now())
        if self._ingestor is None:
            self._ingestor = await self._call(
                Ingestor,
                self._engine,
                self.node_id,
                attempt_timeout_ns=_ATTEMPT_TIMEOUT_S * NS,
                attempt_linger_ns=_ATTEMPT_LINGER_S * NS,
                dedup_window_ns=_DEDUP_WINDOW_S * NS,
                cluster_max_span_ns=_CLUSTER_MAX_SPAN_S * NS,
            )
            await self._call(self._ingestor.expire_stale_attempts, self._now())
        await self.sample_channels()
        await self.sync_ledger()
        self._stop = asyncio.Event()
        self.failure = None
        stream = self.client.subscribe_htlc_events()
        try:
            await stream.wait_connected(timeout_s=2.0)
        except BaseException:
            stream.cancel()
            raise
        self.started_ns, self.stopped_ns = self._now(), None
        self._tasks = [
            asyncio.create_task(self._record(stream), name="lnflow-monitor-record"),
            asyncio.create_task(self._housekeeping(), name="lnflow-monitor-housekeeping"),
        ]

    async def stop_monitoring(self) -> None:
        """Stop the stream, write what was received, take a last ledger sync and sample.

        The store stays open for :meth:`analysis_report` until :meth:`close`. If
        recording had ended early (e.g. the macaroon was rejected), that error is
        raised here, after everything received was written.
        """
        if not self._tasks:
            return
        self._stop.set()
        if self._stream is not None:
            self._stream.cancel()
        tasks, self._tasks = self._tasks, []
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await self._flush()
        self.stopped_ns = self._now()
        failure = self.failure or next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure
        for step in (self.sync_ledger, self.sample_channels):
            try:
                await step()
            except LndError as exc:
                log.warning("final %s failed: %s", step.__name__, exc)

    async def analysis_report(
        self, hours: int | None = None, settings: AnalysisSettings | None = None
    ) -> AnalysisReport:
        """Analyze the last ``hours`` (default ``history_hours``) of the store, now."""
        from lnflow.analysis.opportunities import analyze
        from lnflow.store.analysis_queries import load_analysis_input, window_for

        if self._engine is None or self.node_id is None:
            raise RuntimeError("nothing recorded yet: await start_monitoring() first")
        await self._flush()
        engine, node_id = self._engine, self.node_id
        window = hours or self.history_hours
        settings = settings or AnalysisSettings(
            min_failure_count=self.min_failure_count, min_missed_sats=self.min_missed_sats
        )
        now = self._now()

        def run() -> AnalysisReport:
            _since, until = window_for(now, window)
            with engine.connect() as conn:
                inp = load_analysis_input(
                    conn, node_id, until_ns=until, hours=window, settings=settings
                )
                return analyze(inp, settings, now)

        return await self._call(run)

    async def close(self) -> None:
        """Stop if running, close the store; a temporary store is deleted."""
        await self.stop_monitoring()
        if self._engine is not None:
            await self._call(self._engine.dispose)
            self._engine = None
        self._pool.shutdown(wait=True)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    async def __aenter__(self) -> HTLCMonitor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- ledger and channels -------------------------------------------------------------

    async def sync_ledger(self) -> int:
        """Store forwards lnd settled since the newest one stored (paginated, no cap)."""
        writer, node_id = self._store_writer, self._node_id
        last_ns = await self._call(writer.last_forward_ns, node_id)
        start_s, end_s = last_ns // NS, self._now() // NS
        offset = new = 0
        while True:
            page = await self.client.forwarding_history(
                start_time_s=start_s,
                end_time_s=end_s,
                index_offset=offset,
                num_max_events=_PAGE_SIZE,
            )
            if not page.events:
                return new
            new += await self._call(writer.insert_forwards, node_id, page.events)
            offset = page.last_offset_index

    async def sample_channels(self) -> int:
        """One sample per open channel, with both policies and the peer's alias."""
        our_pubkey = self.node.pubkey if self.node else ""
        channels = await self.client.list_channels()
        samples = []
        for info in channels:
            edge = await self.client.get_chan_info(info.chan_id)
            alias = info.peer_alias or self._aliases.get(info.remote_pubkey, "")
            if not alias:
                alias = await self.client.get_node_alias(info.remote_pubkey) or ""
                if alias:
                    self._aliases[info.remote_pubkey] = alias
            ours, peer = edge.policies_for(our_pubkey) if edge else (None, None)
            samples.append(ChannelSample(info=info, ours=ours, peer=peer, peer_alias=alias))
        return await self._call(
            self._store_writer.record_channel_samples, self._node_id, self._now(), samples
        )

    # -- internals -----------------------------------------------------------------------

    @property
    def _store_writer(self) -> StoreWriter:
        if self._writer is None:
            raise RuntimeError("the store is not open: await start_monitoring() first")
        return self._writer

    @property
    def _node_id(self) -> int:
        if self.node_id is None:
            raise RuntimeError("no node yet: await start_monitoring() first")
        return self.node_id

    async def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run ``fn`` on the store thread: SQLite sees one writer, the loop never blocks."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _flush(self) -> None:
        ingestor = self._ingestor
        if ingestor is None:
            return
        async with self._flush_lock:
            batch, self._buffer = self._buffer, []
            result = await self._call(ingestor.ingest, self._session_id, batch, self._now())
            self.events_recorded += result.new_events

    async def _record(self, first: HtlcStreamLike) -> None:
        """Sessions until stopped: read, buffer, flush; reconnect with backoff."""
        writer = self._store_writer
        stream: HtlcStreamLike | None = first
        delay = 0.5
        while not self._stop.is_set():
            if stream is None:
                stream = self.client.subscribe_htlc_events()
                try:
                    await stream.wait_connected(timeout_s=2.0)
                except LndError as exc:
                    stream.cancel()
                    stream = None
                    if isinstance(exc, _FATAL):
                        self.failure = exc
                        self._stop.set()
                        return
                    log.warning("HTLC stream not connected (%s); retrying in %.1f s", exc, delay)
                    await self._sleep(delay)
                    delay = min(_RECONNECT_MAX_S, delay * 2)
                    continue
            started = self._now()
            self._stream = stream
            self._session_id = await self._call(
                writer.open_session, self._node_id, started, self._version
            )
            reason = "closed by lnd"
            try:
                async for item in stream:
                    if isinstance(item, StreamSubscribed):
                        await self._call(
                            writer.mark_subscribed, self._session_id, item.timestamp_ns or started
                        )
                        continue
                    self._buffer.append(item)
                    if len(self._buffer) >= _BATCH_SIZE:
                        await self._flush()
                if self._stop.is_set():
                    reason = "stopped"
            except LndError as exc:
                reason = "stopped" if self._stop.is_set() else str(exc)
                if not self._stop.is_set():
                    log.warning("HTLC stream ended: %s", exc)
                    if isinstance(exc, _FATAL):
                        self.failure = exc  # retrying cannot help: stop_monitoring raises it
                        self._stop.set()
            finally:
                await self._flush()
                await self._call(writer.close_session, self._session_id, self._now(), reason)
                self._session_id = None
                self._stream = None
                stream = None
            if self._now() - started > 10 * NS:
                delay = 0.5
            if not self._stop.is_set():
                await self._sleep(delay)
                delay = min(_RECONNECT_MAX_S, delay * 2)

    async def _housekeeping(self) -> None:
        """Flush every second; sync the ledger and sample channels on the daemon's intervals."""
        last_ledger = last_sample = time.monotonic()
        while not self._stop.is_set():
            await self._sleep(_FLUSH_INTERVAL_S)
            await self._flush()
            now = time.monotonic()
            try:
                if now - last_ledger >= _LEDGER_INTERVAL_S:
                    last_ledger = now
                    await self.sync_ledger()
                if now - last_sample >= _SAMPLE_INTERVAL_S:
                    last_sample = now
                    await self.sample_channels()
            except LndError as exc:
                log.warning("periodic sync failed: %s", exc)

    async def _sleep(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=delay_s)
