"""The composition root's pieces: the supervisor, the job registration, the factories."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from conftest import RealStore

from lnflow.config import Settings
from lnflow.errors import NodeUnreachableError
from lnflow.recording import StoreThread
from lnflow.recording.app import Job, schedule, supervise
from lnflowd.daemon import Daemon

pytestmark = pytest.mark.timeout(30)


def test_supervise_raises_the_failure_itself_and_cancels_the_rest() -> None:
    cancelled = asyncio.Event()

    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise NodeUnreachableError("lnd at 127.0.0.1:1 did not answer")

    async def waits() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def run() -> None:
        await supervise(waits(), fails())

    # a plain LnflowError, not an ExceptionGroup: lnflowd prints it as one line
    with pytest.raises(NodeUnreachableError, match="did not answer"):
        asyncio.run(run())
    assert cancelled.is_set()


def test_supervise_returns_when_all_work_has_ended() -> None:
    done: list[str] = []

    async def work(name: str) -> None:
        await asyncio.sleep(0)
        done.append(name)

    asyncio.run(supervise(work("a"), work("b")))
    assert sorted(done) == ["a", "b"]


def test_schedule_registers_each_job_under_its_id() -> None:
    async def tick() -> None:
        return None

    async def run() -> dict[str, Any]:
        scheduler = AsyncIOScheduler()
        schedule(
            scheduler,
            [
                Job("now", tick, 60, first_now=True, misfire_grace_s=60),
                Job("later", tick, 5),
            ],
        )
        scheduler.start(paused=True)
        try:
            return {job.id: job for job in scheduler.get_jobs()}
        finally:
            scheduler.shutdown(wait=False)

    before = datetime.now(UTC)
    jobs = asyncio.run(run())
    assert set(jobs) == {"now", "later"}
    assert jobs["now"].next_run_time <= datetime.now(UTC) + timedelta(seconds=1)
    assert jobs["later"].next_run_time >= before + timedelta(seconds=4)
    assert jobs["now"].misfire_grace_time == 60 and jobs["later"].misfire_grace_time == 1
    assert all(job.coalesce and job.max_instances == 1 for job in jobs.values())


def test_the_daemon_registers_its_jobs_by_name(real_store: RealStore) -> None:
    settings = Settings()
    daemon = Daemon(settings)
    store = StoreThread(real_store.writer)
    try:
        at_start = daemon.jobs_at_start(real_store.engine, store)
    finally:
        store.close()
    assert [(j.id, j.every_s, j.first_now) for j in at_start] == [
        ("heartbeat", settings.recorder.heartbeat_s, False),
        ("prune", settings.retention.prune_interval_s, True),
    ]
