"""Timer jobs the scheduler runs: forwards-ledger sync and channel sampling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from lnflow.domain import (
    NS_PER_S,
    ChannelEdge,
    ChannelInfo,
    ChannelSample,
    ForwardingPage,
    RejectedForward,
    format_scid,
)
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
    """Incremental ForwardingHistory sync (lnd-api §2, paging by time).

    Start from the second of the newest stored forward (0 on first run: full backfill)
    and end at lnd's "now". lnd walks ``index_offset`` records from ``start_time`` on
    every call, so paging by offset alone costs O(n^2) over a long history; instead
    each next page starts at the second of the previous page's last record, skipping
    with ``index_offset`` only the records of that second already read (a page that
    lies wholly inside one second advances the offset within it). A page shorter than
    asked for is the end. The store dedupes on the ledger key (``timestamp_ns``, see
    :func:`lnflow.lnd.convert.forwarding_page` for lnd < 0.13).

    Records the store cannot hold arrive in ``page.rejected``: each is logged once with
    its identity and counted in ``rejected_total``; the sync goes on past them.
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
        self._rejected_seen: set[RejectedForward] = set()
        self.rejected_total = 0

    async def run(self) -> int:
        """One sync pass; returns how many new forwards were stored."""
        async with self._lock:
            writer = self._store.target
            last_ns = await self._store.call(writer.last_forward_ns, self._node_id)
            from_s = start_s = last_ns // NS_PER_S
            offset = 0
            new = pages = rejected = 0
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
                log.debug("ledger_page", start_s=start_s, index_offset=offset, records=page.size)
                if not page.size:
                    break
                pages += 1
                if page.events:
                    new += await self._store.call(
                        writer.insert_forwards, self._node_id, page.events
                    )
                rejected += self._reject(page.rejected)
                if page.size < self._page_size:
                    break
                if page.last_second_s == start_s:
                    offset += page.size  # the whole page inside the start second
                else:
                    start_s, offset = page.last_second_s, page.last_second_count
            if new or rejected:
                log.info(
                    "ledger_synced",
                    new_forwards=new,
                    pages=pages,
                    from_s=from_s,
                    rejected=rejected,
                    rejected_total=self.rejected_total,
                )
            return new

    def _reject(self, records: tuple[RejectedForward, ...]) -> int:
        """Log and count records not seen before (a re-read second brings them again)."""
        fresh = 0
        for r in records:
            if r in self._rejected_seen:
                continue
            self._rejected_seen.add(r)
            self.rejected_total += 1
            fresh += 1
            log.warning(
                "ledger_record_rejected",
                reason=r.reason,
                timestamp_s=r.timestamp_s,
                timestamp_ns=r.timestamp_ns,
                chan_id_in=format_scid(r.chan_id_in),
                chan_id_out=format_scid(r.chan_id_out),
                amt_in_msat=r.amt_in_msat,
                amt_out_msat=r.amt_out_msat,
                fee_msat=r.fee_msat,
                rejected_total=self.rejected_total,
            )
        return fresh


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
            # a zero-conf channel's edge moves to its real SCID once it confirms
            edge = await self._source.get_chan_info(info.graph_id)
            if edge is None and info.graph_id != info.chan_id:
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
    once per outage, no traceback, tried again on its next run.

    Any other exception is a bug: logged once with its traceback (until the job
    succeeds again), and the job still runs on its next interval, so one bad input
    never stops the daemon's other work.
    """
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
        except Exception as exc:
            if not failing:
                log.exception("job_crashed", job=name, error=repr(exc))
            failing = True
        else:
            if failing:
                log.info("job_recovered", job=name)
            failing = False

    return run
