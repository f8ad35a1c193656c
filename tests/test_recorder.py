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
