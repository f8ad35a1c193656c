"""Timer jobs the scheduler runs: forwards-ledger sync and channel sampling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from lnflow.domain import ChannelEdge, ChannelInfo, ChannelSample, ForwardingPage
from lnflow.errors import LndError, StoreWriteError
from lnflow.recording.storethread import StoreThread
from lnflow.store.writer import StoreWriter

__all__ = ["ChannelSampler", "LedgerSync", "guarded"]

log = structlog.get_logger("lnflow.recording")


class LedgerSource(Protocol):
    async def forwarding_history(
        self,
        *,
        start_time_s: int,
        end_time_s: int = 0,
        index_offset: int = 0,
        num_max_events: int = 10_000,
    ) -> ForwardingPage: ...


class ChannelSource(Protocol):
    async def list_channels(self) -> list[ChannelInfo]: ...
    async def get_chan_info(self, chan_id: int) -> ChannelEdge | None: ...
    async def get_node_alias(self, pubkey: str) -> str | None: ...


class LedgerSync:
    """Incremental ForwardingHistory sync (lnd-api §2 recipe).

    Start from the second of the newest stored forward (0 on first run: full
    backfill), end at lnd's "now", page with ``index_offset`` until an empty
    page, no cap; dedupe on ``timestamp_ns`` in the store.
    """

    def __init__(
        self,
        source: LedgerSource,
        store: StoreThread[StoreWriter],
        node_id: int,
        *,
        page_size: int = 1_000,
    ) -> None:
        self._source = source
        self._store = store
        self._node_id = node_id
        self._page_size = page_size
        self._lock = asyncio.Lock()

    async def run(self) -> int:
        """One sync pass; returns how many new forwards were stored."""
        async with self._lock:
            writer = self._store.target
            last_ns = await self._store.call(writer.last_forward_ns, self._node_id)
            start_s = last_ns // 1_000_000_000
            offset = 0
            new = pages = 0
            while True:
                page = await self._source.forwarding_history(
                    start_time_s=start_s,
                    # 0 = lnd's "now" to the nanosecond: a fixed end second would leave
                    # out forwards later inside that second until the next pass. Pages
                    # stay stable as lnd appends newer forwards at the end.
                    end_time_s=0,
                    index_offset=offset,
                    num_max_events=self._page_size,
                )
                if not page.events:
                    break
                pages += 1
                new += await self._store.call(writer.insert_forwards, self._node_id, page.events)
                offset = page.last_offset_index
            if new:
                log.info("ledger_synced", new_forwards=new, pages=pages, from_s=start_s)
            return new


class ChannelSampler:
    """Samples every open channel with both policies; keeps aliases of closed ones."""

    def __init__(
        self,
        source: ChannelSource,
        store: StoreThread[StoreWriter],
        node_id: int,
        our_pubkey: str,
        *,
        concurrency: int = 8,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._source = source
        self._store = store
        self._node_id = node_id
        self._our_pubkey = our_pubkey
        self._sem = asyncio.Semaphore(concurrency)
        self._aliases: dict[str, str] = {}
        self._now = clock_ns

    async def _sample(self, info: ChannelInfo) -> ChannelSample:
        async with self._sem:
            edge = await self._source.get_chan_info(info.chan_id)
            alias = info.peer_alias or self._aliases.get(info.remote_pubkey, "")
            if not alias:
                alias = await self._source.get_node_alias(info.remote_pubkey) or ""
                if alias:
                    self._aliases[info.remote_pubkey] = alias
        ours, peer = edge.policies_for(self._our_pubkey) if edge else (None, None)
        return ChannelSample(info=info, ours=ours, peer=peer, peer_alias=alias)

    async def run(self) -> int:
        channels = await self._source.list_channels()
        samples = await asyncio.gather(*(self._sample(c) for c in channels))
        writer = self._store.target
        n = await self._store.call(
            writer.record_channel_samples, self._node_id, self._now(), samples
        )
        log.debug("channels_sampled", channels=n)
        return n


def guarded(name: str, job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """A periodic job that survives LND being away or the store refusing writes: logged
    once per outage, no traceback, tried again on its next run."""
    failing = False

    async def run() -> None:
        nonlocal failing
        try:
            await job()
        except asyncio.CancelledError:
            return  # the daemon is exiting under it
        except (LndError, StoreWriteError) as exc:
            if not failing:
                log.warning("job_failed", job=name, error=str(exc))
            failing = True
        else:
            if failing:
                log.info("job_recovered", job=name)
            failing = False

    return run
