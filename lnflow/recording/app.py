"""Building the recording parts from settings, for lnflowd and the ``HTLCMonitor`` facade.

One place turns ``[recorder]``, ``[ledger]`` and ``[channels]`` into an
:class:`~lnflow.store.ingest.Ingestor`, a :class:`Recorder`, a :class:`LedgerSync`
and a :class:`ChannelSampler`; both callers get the same defaults from the same
settings classes (:mod:`lnflow.config`). :class:`Parts` holds the four factories,
each replaceable (``dataclasses.replace(Parts(), recorder=...)``).

Periodic work is a :class:`Job` added to the scheduler; long-running work
(the recorder) runs under :func:`supervise`, one ``asyncio.TaskGroup``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Engine

from lnflow.settings import LedgerSettings, RecorderSettings
from lnflow.store.ingest import Ingestor
from lnflow.store.writer import StoreWriter

from .jobs import ChannelSampler, ChannelSource, LedgerSource, LedgerSync
from .recorder import HtlcSource, Recorder
from .storethread import StoreThread

__all__ = [
    "Job",
    "Parts",
    "make_ingestor",
    "make_ledger",
    "make_recorder",
    "make_sampler",
    "schedule",
    "supervise",
]


class _Scheduler(Protocol):
    def add_job(self, func: Callable[..., Any], trigger: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Job:
    """Periodic work: ``run`` every ``every_s`` seconds, never two at once, late runs
    coalesced. ``first_now``: the first run at once, else one interval later.
    ``misfire_grace_s``: how late a run may still start (None: the scheduler's default).
    """

    id: str
    run: Callable[[], Awaitable[object]]
    every_s: float
    first_now: bool = False
    misfire_grace_s: float | None = None


def schedule(scheduler: _Scheduler, jobs: list[Job]) -> None:
    """Add each job to an APScheduler ``AsyncIOScheduler`` under its id."""
    for job in jobs:
        kwargs: dict[str, Any] = {}
        if job.first_now:
            kwargs["next_run_time"] = datetime.now(UTC)
        if job.misfire_grace_s is not None:
            kwargs["misfire_grace_time"] = job.misfire_grace_s
        scheduler.add_job(
            job.run,
            "interval",
            seconds=job.every_s,
            id=job.id,
            coalesce=True,
            max_instances=1,
            **kwargs,
        )


async def supervise(*work: Coroutine[Any, Any, object]) -> None:
    """Run the coroutines as tasks of one ``asyncio.TaskGroup`` until all have ended.

    The first to fail cancels the others; its exception is raised as it is (not as an
    ``ExceptionGroup``), so callers handle it like a plain ``await`` of that work.
    """
    try:
        async with asyncio.TaskGroup() as group:
            for coro in work:
                group.create_task(coro)
    except BaseExceptionGroup as failed:
        raise _first_leaf(failed) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


NS = 1_000_000_000


def make_ingestor(engine: Engine, node_id: int, rec: RecorderSettings) -> Ingestor:
    """Blocking (reads the open attempts): call it in a worker thread."""
    return Ingestor(
        engine,
        node_id,
        attempt_timeout_ns=int(rec.attempt_timeout_s * NS),
        attempt_linger_ns=int(rec.attempt_linger_s * NS),
        dedup_window_ns=int(rec.dedup_window_s * NS),
        cluster_max_span_ns=int(rec.cluster_max_span_s * NS) or None,
    )


def make_recorder(
    source: HtlcSource,
    store: StoreThread[StoreWriter],
    ingestor: Ingestor,
    rec: RecorderSettings,
    *,
    node_id: int,
    lnd_version: str,
    clock_ns: Callable[[], int] = time.time_ns,
    shutdown_drain_s: float | None = None,
) -> Recorder:
    """``shutdown_drain_s`` None: ``rec.shutdown_drain_s``."""
    return Recorder(
        source,
        store,
        ingestor,
        node_id=node_id,
        lnd_version=lnd_version,
        batch_size=rec.batch_size,
        flush_interval_s=rec.flush_interval_s,
        shutdown_drain_s=rec.shutdown_drain_s if shutdown_drain_s is None else shutdown_drain_s,
        max_held_events=rec.max_held_events,
        probe_every_s=rec.probe_every_s,
        probe_timeout_s=rec.probe_timeout_s,
        reconnect_probe_s=rec.reconnect_probe_s,
        clock_ns=clock_ns,
    )


def make_ledger(
    source: LedgerSource, store: StoreThread[StoreWriter], node_id: int, ledger: LedgerSettings
) -> LedgerSync:
    return LedgerSync(source, store, node_id, page_size=ledger.page_size)


def make_sampler(
    source: ChannelSource,
    store: StoreThread[StoreWriter],
    node_id: int,
    our_pubkey: str,
    *,
    clock_ns: Callable[[], int] = time.time_ns,
) -> ChannelSampler:
    """``[channels]`` has one key, the interval: the job's, see :class:`Job`."""
    return ChannelSampler(source, store, node_id, our_pubkey, clock_ns=clock_ns)


@dataclass(frozen=True)
class Parts:
    """The factories of the recording parts; tests and embedders replace single ones."""

    ingestor: Callable[[Engine, int, RecorderSettings], Ingestor] = make_ingestor
    recorder: Callable[..., Recorder] = make_recorder
    ledger: Callable[[LedgerSource, StoreThread[StoreWriter], int, LedgerSettings], LedgerSync] = (
        make_ledger
    )
    sampler: Callable[..., ChannelSampler] = make_sampler
