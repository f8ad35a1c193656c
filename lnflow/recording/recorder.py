"""The HTLC recorder: subscribe, batch, store; watch the node; reconnect at once.

Decoding lives in ``lnflow.lnd``, writing in ``lnflow.store``; this module only
moves batches between them and keeps the stream-session bookkeeping.

A batch whose write fails (disk full, a store that cannot be written) is held and
retried with backoff, in order, never dropped; reading goes on meanwhile. Held
events are bounded by ``max_held_events``: past it the recorder stops with a
:class:`~lnflow.errors.StoreWriteError` (events already stored are intact). Each
episode is logged when it starts (``store_write_failing``), every minute while it
lasts, when writes work again (``store_write_recovered``) and when every held event
is written (``held_events_written``).

A stream session is open only while the node is known to answer: the stream has
sent headers or events, or a probe (one cheap unary call with a short deadline)
was answered after the call started. lnd < 0.16 sends nothing until the first
event, and a frozen lnd sends nothing at all, so silence alone proves nothing.
While the stream is quiet the node is probed every ``probe_every_s``; a probe
that times out ends the session at the moment the node was last heard from (the
last message or answered probe), so the recorded gap is the real one. While the
node is away it is probed every ``reconnect_probe_s`` (with jitter) and
subscribed to again as soon as it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, Protocol, TypeVar

import structlog

from lnflow.domain import NS_PER_S, HtlcEvent, StreamState, StreamSubscribed
from lnflow.errors import LndError, NodeUnreachableError, StoreWriteError
from lnflow.recording.storethread import StoreThread
from lnflow.store.ingest import Ingestor
from lnflow.store.writer import StoreWriter

__all__ = ["Backoff", "HtlcSource", "Recorder", "sleep_or_stop"]

log = structlog.get_logger("lnflow.recording")

P = ParamSpec("P")
R = TypeVar("R")

#: failed writes are retried after 0.5 s, doubling up to this
WRITE_RETRY_MAX_S = 4.0
#: while writes fail, a reminder in the log this often
WRITE_REMINDER_S = 60.0
#: on shutdown, failed writes are retried this long before giving up
SHUTDOWN_WRITE_S = 10.0


class HtlcStreamLike(Protocol):
    #: messages received so far
    received: int

    def __aiter__(self) -> HtlcStreamLike: ...
    async def __anext__(self) -> HtlcEvent | StreamSubscribed: ...
    async def wait_connected(self, timeout_s: float) -> None: ...
    @property
    def established(self) -> bool: ...
    def cancel(self) -> None: ...


class HtlcSource(Protocol):
    """What the recorder needs from an LND client."""

    def subscribe_htlc_events(self) -> HtlcStreamLike: ...

    def prepare_stream(self) -> None:
        """Get the next subscription ready (e.g. start its reader) while lnd is away."""
        ...

    async def probe(self, timeout_s: float) -> None:
        """One cheap call; raises :class:`NodeUnreachableError` unless lnd answers in time."""
        ...


WATCH_TICK_S = 0.5  # how often the watcher looks at the stream's message count
CONNECT_WAIT_S = 1.0  # headers expected this soon after the call started, else probe


class Backoff:
    """Exponential backoff: 0.5 s doubling up to ``cap_s``; reset after a good run."""

    def __init__(self, cap_s: float, first_s: float = 0.5) -> None:
        self._cap = cap_s
        self._first = first_s
        self._next = first_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self._cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self._first


class Recorder:
    """Runs the subscription until ``stop`` is set; every event ends up in the store."""

    def __init__(
        self,
        source: HtlcSource,
        store: StoreThread[StoreWriter],
        ingestor: Ingestor,
        *,
        node_id: int,
        lnd_version: str,
        batch_size: int,
        flush_interval_s: float,
        shutdown_drain_s: float,
        max_held_events: int = 100_000,
        probe_every_s: float = 10.0,
        probe_timeout_s: float = 5.0,
        reconnect_probe_s: float = 0.5,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._source = source
        self._store = store
        self._ingestor = ingestor
        self._node_id = node_id
        self._lnd_version = lnd_version
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._drain_s = shutdown_drain_s
        self._probe_every_s = probe_every_s
        self._probe_timeout_s = probe_timeout_s
        self._reconnect_probe_s = reconnect_probe_s
        self._now = clock_ns
        self._last_heard_ns = 0  # wall clock, for the record
        self._last_heard_at = 0.0  # loop clock, for the intervals
        self._lost: NodeUnreachableError | None = None
        self._buffer: list[HtlcEvent] = []
        self._session_id: int | None = None
        self._last_write: asyncio.Task[None] | None = None
        self._background: asyncio.Task[None] | None = None
        self._stream: HtlcStreamLike | None = None
        self._stop: asyncio.Event | None = None
        self.stored = 0
        self.state = StreamState.IDLE
        #: set while a stream session is open
        self.connected = asyncio.Event()
        # store writes failing: events handed over and not yet written, the bound
        self.held = 0
        self._max_held = max_held_events
        self._write_backoff = Backoff(WRITE_RETRY_MAX_S)
        self._failing_since: float | None = None  # monotonic
        self._failing_since_ns = 0
        self._failing_reason = ""
        self._reminder_at = 0.0
        self._episode_held = 0  # most events held during the episode
        self._draining = False  # recovered; held events still being written
        self._giving_up_at: float | None = None
        self._fatal: StoreWriteError | None = None
        #: set while store writes fail
        self.failing = asyncio.Event()

    # -- public ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Record until ``stop``; raises StoreWriteError when held events had to be given up."""
        self._stop = stop
        flusher = asyncio.create_task(self._flush_periodically(stop), name="flusher")
        try:
            while not stop.is_set() and self._fatal is None:
                await self._one_session(stop)
                if stop.is_set():
                    break
                await self._wait_for_node(stop)
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            await self._finish_background()
            await self.flush()

    async def flush(self) -> None:
        """Write the buffered events of the current session in one transaction.

        Called with nothing buffered it still lets pending attempts time out.
        Returns once they (and every batch handed over before them) are written.
        """
        await asyncio.shield(self._submit())

    def _submit(self) -> asyncio.Task[None]:
        """Take the buffered events now; write them after the batches taken before."""
        if self._fatal is not None:
            raise self._fatal
        batch, self._buffer = self._buffer, []
        self.held += len(batch)
        if self._failing_since is not None:
            self._episode_held = max(self._episode_held, self.held)
            if self.held > self._max_held:
                raise self._give_up(
                    f"{self.held:,} events held in memory, more than"
                    f" recorder.max_held_events ({self._max_held:,})"
                )
        task = asyncio.create_task(
            self._write(self._last_write, self._session_id, batch, self._now()), name="flush"
        )
        task.add_done_callback(_seen)  # not awaited while writes fail: no stray warning
        self._last_write = task
        return task

    async def _write(
        self,
        before: asyncio.Task[None] | None,
        session_id: int | None,
        batch: list[HtlcEvent],
        now_ns: int,
    ) -> None:
        if before is not None:
            await asyncio.wait({before})  # in order; its error surfaces where it is awaited
        result = await self._write_retrying(self._ingestor.ingest, session_id, batch, now_ns)
        self.held -= len(batch)
        self.stored += result.new_events
        if result.new_events < len(batch):
            log.debug("replayed_events_ignored", count=len(batch) - result.new_events)
        if self._draining and self.held == 0:
            self._draining = False
            log.info("held_events_written", events=self._episode_held)

    async def _write_retrying(self, method: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """A store write, retried with backoff until it succeeds: never dropped.

        Raises StoreWriteError only when the recorder gives up (held events past the
        bound, or still failing ``SHUTDOWN_WRITE_S`` after a stop).
        """
        while True:
            if self._fatal is not None:
                raise self._fatal
            try:
                result = await self._store.call(method, *args, **kwargs)
            except Exception as exc:  # any failed write is held and retried, never dropped
                delay = self._write_backoff.next()
                self._write_failed(exc, delay)
                await asyncio.sleep(delay)
                continue
            if self._failing_since is not None:
                await self._write_recovered()
            return result

    def _write_failed(self, exc: Exception, retry_in_s: float) -> None:
        now = time.monotonic()
        reason = exc.reason if isinstance(exc, StoreWriteError) else f"{type(exc).__name__}: {exc}"
        if self._failing_since is None:
            self._failing_since = now
            self._failing_since_ns = self._now()
            self._failing_reason = reason
            self._reminder_at = now + WRITE_REMINDER_S
            self._episode_held = self.held
            self._draining = False
            self.failing.set()
            log.warning(
                "store_write_failing",
                error=reason,
                store=self._store.label,
                held_events=self.held,
                max_held_events=self._max_held,
                retry_in_s=retry_in_s,
                # SQLite refusing the write is the operator's to fix; anything else a bug
                exc_info=not isinstance(exc, StoreWriteError),
            )
        elif now >= self._reminder_at:
            self._reminder_at = now + WRITE_REMINDER_S
            log.warning(
                "store_write_still_failing",
                error=reason,
                failing_for_s=round(now - self._failing_since),
                held_events=self.held,
                max_held_events=self._max_held,
            )
        if self._stop is not None and self._stop.is_set():
            if self._giving_up_at is None:
                self._giving_up_at = now + SHUTDOWN_WRITE_S
            elif now >= self._giving_up_at:
                raise self._give_up("stopping")

    def _give_up(self, why: str) -> StoreWriteError:
        """The one line the daemon exits with; ends the stream so the recorder stops."""
        failing_for = time.monotonic() - (self._failing_since or time.monotonic())
        unwritten = self.held + len(self._buffer)
        self._fatal = StoreWriteError(
            f"store writes failing for {failing_for:.0f} s ({self._failing_reason}): {why};"
            f" {unwritten:,} events were not stored (those stored before are intact)."
            " Free space on the store's disk, or make it writable, and start lnflowd again",
            self._failing_reason,
        )
        log.error(
            "store_write_gave_up",
            error=self._failing_reason,
            failing_for_s=round(failing_for),
            events_not_stored=unwritten,
            reason=why,
        )
        if self._stream is not None:
            self._stream.cancel()
        return self._fatal

    async def _write_recovered(self) -> None:
        assert self._failing_since is not None
        failed_for = time.monotonic() - self._failing_since
        self._failing_since = None
        self._giving_up_at = None
        self._write_backoff.reset()
        self.failing.clear()
        self._draining = self.held > 0
        log.info(
            "store_write_recovered",
            error=self._failing_reason,
            failed_for_s=round(failed_for, 1),
            held_events=self.held,
        )
        since = datetime.fromtimestamp(self._failing_since_ns / NS_PER_S, UTC)
        await self._note_state(
            stream_state=self.state,
            last_error=(
                f"store writes failed from {since:%Y-%m-%dT%H:%M:%SZ} for {failed_for:.0f} s"
                f" ({self._failing_reason}); {self._episode_held:,} events were held,"
                " none lost"
            ),
        )

    async def _note_state(self, **values: Any) -> None:
        """daemon_state, best effort: while the store cannot be written it cannot say so
        either (``lnflowctl status`` then sees the heartbeat stop)."""
        with contextlib.suppress(StoreWriteError):
            await self._store.call(self._store.target.daemon_state, self._now(), **values)

    # -- internals ---------------------------------------------------------------------

    async def _set_state(self, state: StreamState, **values: object) -> None:
        if state != self.state:
            self.state = state
            await self._note_state(stream_state=state, **values)

    def _heard(self) -> None:
        self._last_heard_ns = self._now()
        self._last_heard_at = asyncio.get_running_loop().time()

    async def _probe(self, stop: asyncio.Event | None = None) -> bool:
        """Whether lnd answered one probe (False when stopped first).

        Raises :class:`NodeUnreachableError` when it did not answer in time, and the
        errors no retry can fix (macaroon, TLS); any other answer, even an error,
        shows the node is there.
        """
        probe = asyncio.ensure_future(self._source.probe(self._probe_timeout_s))
        if stop is not None:
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({probe, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not probe.done():
                probe.cancel()
                await asyncio.gather(probe, return_exceptions=True)
                return False
        try:
            await probe
        except NodeUnreachableError:
            raise
        except LndError as exc:
            if not _is_transient(exc):
                raise
        return True

    async def _wait_for_node(self, stop: asyncio.Event) -> None:
        """Probe every ``reconnect_probe_s`` (jittered) until lnd answers or stop."""
        loop = asyncio.get_running_loop()
        self._source.prepare_stream()
        while not stop.is_set():
            began = loop.time()
            try:
                if not await self._probe(stop):
                    return
            except NodeUnreachableError as exc:
                await self._set_state(StreamState.UNREACHABLE, last_error=str(exc))
                pause = self._reconnect_probe_s * random.uniform(0.8, 1.2)
                pause = max(0.0, pause - (loop.time() - began))
                log.debug("stream_reconnect_scheduled", in_s=round(pause, 3), error=str(exc))
                await sleep_or_stop(stop, pause)
                continue
            self._heard()
            log.info("lnd_answering_again")
            return

    async def _one_session(self, stop: asyncio.Event) -> None:
        stream = self._source.subscribe_htlc_events()
        try:
            await stream.wait_connected(timeout_s=CONNECT_WAIT_S)
            if not stream.established:
                # no headers yet: lnd < 0.16 (quiet until the first event) or a node
                # that does not answer at all; only an answer tells them apart
                await self._probe()
        except NodeUnreachableError as exc:
            stream.cancel()
            if self.state != StreamState.UNREACHABLE:
                log.warning("stream_unreachable", error=str(exc))
            await self._set_state(StreamState.UNREACHABLE, last_error=str(exc))
            return
        self._heard()
        started = self._last_heard_ns
        self._lost = None
        self._session_id = await self._write_retrying(
            self._store.target.open_session, self._node_id, started, self._lnd_version
        )
        self._stream = stream
        self.connected.set()
        await self._set_state(StreamState.CONNECTED, last_error=None)
        log.info("stream_connected", session=self._session_id)
        reason = "closed by lnd"
        drainer = asyncio.create_task(self._cancel_after_stop(stop, stream), name="drainer")
        watcher = asyncio.create_task(self._watch(stream), name="watcher")
        ended: int | None = None
        try:
            async for item in stream:
                if isinstance(item, StreamSubscribed):
                    await self._write_retrying(
                        self._store.target.mark_subscribed,
                        self._session_id,
                        item.timestamp_ns or self._now(),
                    )
                    continue
                self._buffer.append(item)
                if len(self._buffer) >= self._batch_size:
                    await self._flush_behind()
            if stop.is_set():
                reason = "shutdown"
            elif self._lost is not None:
                reason = f"lnd stopped answering: {self._lost}"
                ended = self._last_heard_ns
        except NodeUnreachableError as exc:
            reason = f"lnd unreachable: {exc}"
        except LndError as exc:
            reason = "shutdown" if stop.is_set() else str(exc)
            if not stop.is_set() and not _is_transient(exc):
                raise
        finally:
            watcher.cancel()
            drainer.cancel()
            await asyncio.gather(watcher, drainer, return_exceptions=True)
            await self._finish_background()
            await self.flush()
            if ended is None:
                ended = self._now()
            await self._write_retrying(
                self._store.target.close_session, self._session_id, ended, reason
            )
            self._stream = None
            self.connected.clear()
        log.info("stream_ended", session=self._session_id, reason=reason)
        await self._set_state(StreamState.STOPPED if stop.is_set() else StreamState.RECONNECTING)

    async def _watch(self, stream: HtlcStreamLike) -> None:
        """While the stream is quiet, probe the node; end the stream when it stops answering."""
        loop = asyncio.get_running_loop()
        seen = stream.received
        while True:
            await asyncio.sleep(WATCH_TICK_S)
            if stream.received != seen:
                seen = stream.received
                self._heard()
                continue
            if loop.time() - self._last_heard_at < self._probe_every_s:
                continue
            try:
                await self._probe()
            except NodeUnreachableError as exc:
                if stream.received != seen:
                    continue  # it spoke meanwhile: slow, not gone
                log.warning("lnd_stopped_answering", error=str(exc))
                self._lost = exc
                await self._set_state(StreamState.UNREACHABLE, last_error=str(exc))
                stream.cancel()
                return
            except LndError:
                pass  # refused (e.g. the macaroon): still an answer; the stream decides
            self._heard()

    async def _cancel_after_stop(self, stop: asyncio.Event, stream: HtlcStreamLike) -> None:
        """On shutdown keep reading for a moment, so events already sent are kept."""
        await stop.wait()
        await asyncio.sleep(self._drain_s)
        stream.cancel()

    async def _finish_background(self) -> None:
        running, self._background = self._background, None
        if running is not None:
            await running

    async def _flush_behind(self) -> None:
        """Hand a full batch to the store thread and keep reading while it is written.

        Reading waits when the batch before is still being written: at most two
        batches are held in memory when the store is slower than lnd; the reader
        process then blocks on the pipe and gRPC's flow control holds lnd back.
        While writes fail it does not wait, see :meth:`_written_or_failing`.
        """
        running, self._background = self._background, None
        if running is not None:
            await self._written_or_failing(running)
        self._background = self._submit()

    async def _written_or_failing(self, task: asyncio.Task[None]) -> None:
        """Wait until ``task`` is written, or only until writes fail: reading goes on
        then, and the events are held here up to ``max_held_events`` (lnd would hold
        them instead, without bound). Raises if the recorder gave up."""
        if not task.done() and not self.failing.is_set():
            failing = asyncio.ensure_future(self.failing.wait())
            try:
                await asyncio.wait({task, failing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                failing.cancel()
        if task.done():
            await task

    async def _flush_periodically(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self._flush_interval_s)
            if self.failing.is_set() and not self._buffer:
                continue  # nothing new: the held batches are being retried
            await self._written_or_failing(self._submit())


def _seen(task: asyncio.Task[None]) -> None:
    """Mark a write's outcome as retrieved; whoever awaits the task still gets it."""
    if not task.cancelled():
        task.exception()


def _is_transient(exc: LndError) -> bool:
    """A stream error worth reconnecting for (lnd restarting, unmapped failure, ...)."""
    from lnflow.errors import MacaroonMissingError, MacaroonRejectedError, TlsMismatchError

    return not isinstance(exc, MacaroonRejectedError | MacaroonMissingError | TlsMismatchError)


async def sleep_or_stop(stop: asyncio.Event, delay_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay_s)
