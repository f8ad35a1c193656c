"""The recorder against a fake stream and a store slower than the stream: backpressure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from lnflow.domain import EventKind, HtlcEvent, StreamSubscribed
from lnflow.recording import Recorder, StoreThread
from lnflow.store.ingest import IngestResult

BATCH = 100
EVENTS = 2_000


class FastStream:
    """Yields EVENTS events as fast as they are asked for, counting them."""

    def __init__(self) -> None:
        self.taken = 0
        self.established = True

    @property
    def received(self) -> int:
        return self.taken

    def __aiter__(self) -> FastStream:
        return self

    async def __anext__(self) -> HtlcEvent | StreamSubscribed:
        if self.taken >= EVENTS:
            raise StopAsyncIteration
        self.taken += 1
        if self.taken % 50 == 0:
            await asyncio.sleep(0)  # a pipe read: other tasks run
        return HtlcEvent(self.taken, EventKind.FORWARD, 1, 5, self.taken, 6, self.taken)

    async def wait_connected(self, timeout_s: float) -> None:
        return None

    def cancel(self) -> None:
        pass


class Source:
    def __init__(self) -> None:
        self.stream = FastStream()

    def subscribe_htlc_events(self) -> FastStream:
        return self.stream

    async def probe(self, timeout_s: float) -> None:
        return None

    def prepare_stream(self) -> None:
        pass


class SlowStore:
    """Store-thread target and ingestor: each batch takes 20 ms; notes what was read
    from the stream but not yet stored when a write starts."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.stored: list[int] = []
        self.held: list[int] = []

    def ingest(
        self, session_id: int | None, events: Sequence[HtlcEvent], now_ns: int
    ) -> IngestResult:
        self.held.append(self.source.stream.taken - len(self.stored))
        time.sleep(0.02)
        self.stored.extend(e.incoming_htlc_id for e in events)
        return IngestResult(len(events), 0, 0)

    def open_session(self, *args: Any) -> int:
        return 1

    def close_session(self, *args: Any) -> None:
        pass

    def daemon_state(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.mark.timeout(30)
def test_a_slow_store_holds_the_stream_back_and_keeps_every_event_in_order() -> None:
    async def run() -> SlowStore:
        source = Source()
        target = SlowStore(source)
        store = StoreThread(target)
        stop = asyncio.Event()
        recorder = Recorder(
            source,
            store,  # type: ignore[arg-type]  # the fake stands in for the StoreWriter
            target,  # type: ignore[arg-type]  # and for the Ingestor
            node_id=1,
            lnd_version="0.18.0-beta",
            batch_size=BATCH,
            flush_interval_s=0.005,
            shutdown_drain_s=0.0,
        )
        task = asyncio.create_task(recorder.run(stop))
        while len(target.stored) < EVENTS:
            await asyncio.sleep(0.01)
        stop.set()
        await task
        store.close()
        return target

    target = asyncio.run(run())
    assert target.stored == list(range(1, EVENTS + 1))
    # one batch being written, the next one filling, one pipe read (50) past it
    assert max(target.held) <= 2 * BATCH + 50


class SilentStream:
    """A call that never sends headers or events (lnd < 0.16 before its first event, or
    a frozen node) until cancelled."""

    established = False
    received = 0

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    def __aiter__(self) -> SilentStream:
        return self

    async def __anext__(self) -> HtlcEvent | StreamSubscribed:
        await self.cancelled.wait()
        raise StopAsyncIteration

    async def wait_connected(self, timeout_s: float) -> None:
        return None

    def cancel(self) -> None:
        self.cancelled.set()


class Node:
    """The network edge: probes answer only while ``answering``; every stream is silent."""

    def __init__(self, clock: list[int]) -> None:
        self.answering = False
        self.clock = clock
        self.streams: list[SilentStream] = []
        self.probes: list[tuple[int, bool]] = []  # (clock, answered)

    def subscribe_htlc_events(self) -> SilentStream:
        self.streams.append(SilentStream())
        return self.streams[-1]

    def prepare_stream(self) -> None:
        pass

    async def probe(self, timeout_s: float) -> None:
        from lnflow.errors import NodeUnreachableError

        self.probes.append((self.clock[0], self.answering))
        if not self.answering:
            await asyncio.sleep(timeout_s)
            raise NodeUnreachableError("LND at x timed out: GetVersion got no answer")


class Sessions:
    def __init__(self) -> None:
        self.opened: list[int] = []
        self.closed: list[tuple[int, str]] = []
        self.states: list[str] = []

    def ingest(self, session_id: int | None, events: Sequence[HtlcEvent], now_ns: int) -> Any:
        return IngestResult(len(events), 0, 0)

    def open_session(self, node_id: int, now_ns: int, version: str) -> int:
        self.opened.append(now_ns)
        return len(self.opened)

    def close_session(self, session_id: int, now_ns: int, reason: str) -> None:
        self.closed.append((now_ns, reason))

    def daemon_state(self, *args: Any, stream_state: str = "", **kwargs: Any) -> None:
        self.states.append(stream_state)

    def mark_subscribed(self, *args: Any) -> None:
        pass


@pytest.mark.timeout(30)
def test_a_silent_stream_is_a_session_only_once_the_node_answers_and_ends_where_last_heard() -> (
    None
):
    clock = [0]  # the recorder's wall clock, advanced by the test: ns = "ticks"

    async def run() -> tuple[Node, Sessions]:
        node = Node(clock)
        target = Sessions()
        store = StoreThread(target)
        stop = asyncio.Event()
        recorder = Recorder(
            node,
            store,  # type: ignore[arg-type]  # the fake stands in for the StoreWriter
            target,  # type: ignore[arg-type]  # and for the Ingestor
            node_id=1,
            lnd_version="0.15.5-beta",
            batch_size=BATCH,
            flush_interval_s=0.05,
            shutdown_drain_s=0.0,
            probe_every_s=0.2,
            # an answering fake node answers at once: a loaded machine must not turn an
            # answer late into a timeout (the frozen one never answers, whatever the wait)
            probe_timeout_s=0.5,
            reconnect_probe_s=0.02,
            clock_ns=lambda: clock[0],
        )
        task = asyncio.create_task(recorder.run(stop))

        async def until(cond: Any) -> None:
            while not cond():
                await asyncio.sleep(0.01)

        # frozen from the start: the silent stream is given up, nothing opens
        clock[0] = 100
        await until(lambda: len(node.probes) >= 5)
        assert target.opened == [] and "connected" not in target.states
        assert node.streams[0].cancelled.is_set()
        # it answers at 200: a session opens, stamped when the answer came
        clock[0] = 200
        node.answering = True
        await until(lambda: target.opened)
        assert target.opened == [200]
        assert target.states[-1] == "connected"
        # quiet but answering: the watcher's probes keep it open (last heard moves on)
        clock[0] = 300
        await until(lambda: any(t == 300 and ok for t, ok in node.probes))
        # frozen again at 400: the session ends at 300, where the node was last heard
        clock[0] = 400
        node.answering = False
        await until(lambda: target.closed)
        assert target.closed[0][0] == 300
        assert target.closed[0][1].startswith("lnd stopped answering: ")
        assert target.states[-1] in ("unreachable", "reconnecting")
        stop.set()
        await task
        store.close()
        return node, target

    _, target = asyncio.run(run())
    assert len(target.opened) == 1


def test_the_store_thread_is_named_for_the_operating_system() -> None:
    """``top -H`` and ``/proc/PID/task/*/comm`` tell the store thread (most of
    lnflowd's CPU) from the event loop's."""
    import threading
    from pathlib import Path

    from lnflow.recording.storethread import OS_THREAD_NAME

    def comm() -> str:
        return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    class Target:
        def name(self) -> str:
            return comm()

    store = StoreThread(Target())
    try:
        assert asyncio.run(store.call(store.target.name)) == OS_THREAD_NAME
    finally:
        store.close()
    assert comm() != OS_THREAD_NAME  # this thread keeps its own
