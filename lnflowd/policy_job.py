"""The daemon's policy job (``[policy] mode = "plan" | "apply"``), every ``interval_s``.

One run:

1. **evaluate**: every applied change whose ``evaluate_hours`` after-window has passed
   (by the daemon's heartbeat) is measured against the same-length window before it
   (:func:`lnflow.policy.effects.measure`); the figures and the verdict go into its
   history row. With ``revert_if_worse``, a change the verdict condemns is reverted
   (a ``reverted`` row naming it and the verdict), unless the channel changed since
   or the change disabled the channel (its fees out stop by design);
2. a fresh **analysis** snapshot (the daemon's own analysis run);
3. **plan** on it, and in ``plan`` mode record the changes as ``planned``; in ``apply``
   mode send them (:func:`lnflow.policy.engine.apply_plan`) with the policy macaroon.

Its calls to lnd go through the daemon's own lnd gateway process (the daemon's client,
and :meth:`LndClient.with_macaroon` for the policy macaroon): a run starts no process
and opens no connection of its own.

The history is written through a plain connection of its own
(:func:`lnflow.store.engines.open_plain_writer`, a few rows an hour beside the daemon's
writer): on a SQLite file SQLite's busy timeout orders the two, on PostgreSQL the rows
are the daemon's node's and a run's id is numbered under an advisory lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import Engine

from lnflow.lnd import LndClient, LndCredentials
from lnflow.policy import Rules, load_rules
from lnflow.policy.effects import NS_PER_HOUR, measure, verdict
from lnflow.policy.engine import apply_plan, gather, record_planned, rollback, with_whatif
from lnflow.policy.runner import guard_settings, policy_credentials, read_credentials
from lnflow.recording.jobs import guarded
from lnflow.settings import Settings
from lnflow.store import policy_history as history
from lnflow.store.engines import PlainWriter, PlainWriterStore, open_plain_writer

from .alerts import PolicyResult

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

__all__ = ["PolicyJob", "schedule_policy_job"]

log = structlog.get_logger("lnflowd.policy")

# the results that are an alert (a rolled-back change is the operator's own doing)
_ALERTED: dict[str, PolicyResult] = {
    "applied": "applied",
    "failed": "failed",
    "reverted": "reverted",
}


class PolicyJob:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        node_id: int,
        rules: Rules,
        analyze: Callable[[], Awaitable[int | None]],
        clock_ns: Callable[[], int],
        on_change: Callable[[PolicyResult, int, str], None] | None = None,
        lnd: LndClient | None = None,
    ) -> None:
        self.settings = settings
        #: the daemon's client, whose gateway process the job calls through (None: the
        #: job starts a client of its own for each use)
        self.lnd = lnd
        # (result, chan_id, detail) of each change applied, failed or reverted: the alerts
        self.on_change = on_change
        self.engine = engine
        self.node_id = node_id
        self.rules = rules
        self.analyze = analyze
        self.clock_ns = clock_ns

    @contextlib.asynccontextmanager
    async def _client(self, credentials: LndCredentials) -> AsyncIterator[LndClient]:
        """A client with ``credentials``' macaroon: on the daemon's gateway when there
        is one, else of its own (closed after use)."""
        if self.lnd is not None:
            if credentials == self.lnd.credentials:
                yield self.lnd
            else:
                yield self.lnd.with_macaroon(credentials)
            return
        s = self.settings
        async with LndClient(credentials, timeout_s=s.lnd.timeout_s) as client:
            yield client

    def _db(self) -> PlainWriterStore:
        return open_plain_writer(self.engine)

    async def run(self) -> None:
        db = self._db()
        try:
            await self.evaluate(db)
            db.commit()  # no transaction left open on the store while the analysis runs
            if await self.analyze() is None:
                log.warning("policy_skipped", reason="no fresh analysis snapshot")
                return
            await self.plan_and_apply(db)
        finally:
            db.close()

    async def plan_and_apply(self, db: PlainWriter) -> None:
        s = self.settings
        async with self._client(read_credentials(s)) as reader:
            plan = await gather(
                reader,
                db,
                self.rules,
                guards=guard_settings(s),
                analysis_window_s=s.analysis.window_hours * 3600,
                max_fee_step_percent=s.policy.max_fee_step_percent,
                now_ns=self.clock_ns(),
            )
        if plan.changes:
            with self.engine.connect() as conn:
                plan = with_whatif(plan, conn, hours=s.analysis.window_hours)
        for refusal in plan.refusals:
            log.info("policy_refused", chan_id=refusal.decision.chan_id, reason=refusal.reason)
        if not plan.changes:
            log.info("policy_no_change", channels=len(plan.decisions))
            return
        if s.policy.mode == "plan":
            run_id, ids = record_planned(db, plan, self.node_id)
            log.info("policy_planned", run_id=run_id, changes=len(ids))
            return
        async with self._client(policy_credentials(s)) as writer:
            writer.version = plan.node.version
            report = await apply_plan(plan, writer, db, self.node_id)
        for o in report.outcomes:
            log.info("policy_change", change_id=o.change_id, chan_id=o.chan_id, result=o.result,
                     error=o.error)  # fmt: skip
            self._tell(o.result, o.chan_id, f"change {o.change_id}", o.error)
        if report.stopped is not None:
            log.warning("policy_apply_stopped", run_id=report.run_id, error=report.stopped)

    async def evaluate(self, db: PlainWriter) -> None:
        p = self.settings.policy
        span_ns = round(p.evaluate_hours * NS_PER_HOUR)
        now = self.clock_ns()
        due = [
            r
            for r in history.changes(db, node_id=self.node_id, results=("applied",))
            if r.applied_ns is not None and r.applied_ns + span_ns <= now
            and not history.evaluated(db, r.id)
        ]  # fmt: skip
        for row in due:
            assert row.applied_ns is not None
            with self.engine.connect() as conn:
                effects = measure(
                    conn,
                    node_id=self.node_id,
                    chan_id=row.chan_id,
                    at_ns=row.applied_ns,
                    hours=p.evaluate_hours,
                )
            if not effects.complete:
                continue  # the daemon has not recorded the after-window to its end yet
            judged = verdict(
                effects,
                threshold_percent=p.revert_threshold_percent,
                min_forwards=p.min_forwards_to_judge,
            )
            later = [
                r
                for r in history.changes(db, node_id=self.node_id, chan_id=row.chan_id)
                if r.id > row.id and r.result in ("applied", "rolled_back", "reverted")
            ]
            reason = judged.reason
            revert = p.revert_if_worse and judged.revert
            if judged.revert and row.after.disabled:
                # a disabled channel earns nothing out: the fall is the rule's intent
                reason = f"{reason}; not reverted: the change disabled the channel"
                revert = False
            elif revert and later:
                reason = f"{reason}; not reverted: the channel changed again (change {later[0].id})"
                revert = False
            elif judged.revert and not p.revert_if_worse:
                reason = f"{reason}; not reverted: revert_if_worse is off"
            history.set_effects(db, row.id, effects, reason, evaluated_ns=now)
            db.commit()
            log.info("policy_effects", change_id=row.id, chan_id=row.chan_id, verdict=reason)
            if revert:
                async with self._client(policy_credentials(self.settings)) as writer:
                    await writer.get_version()
                    report = await rollback(
                        writer, db, change_ids=(row.id,), result="reverted", why=judged.reason
                    )
                for o in report.outcomes:
                    history.set_effects(db, o.change_id, effects, judged.reason, evaluated_ns=now)
                    db.commit()
                    log.info("policy_reverted", change_id=o.change_id, undoes=row.id,
                             result=o.result, error=o.error)  # fmt: skip
                    self._tell(o.result, o.chan_id, f"change {row.id}: {judged.reason}", o.error)

    def _tell(self, result: str, chan_id: int, detail: str, error: str | None) -> None:
        alerted = _ALERTED.get(result)
        if self.on_change is not None and alerted is not None:
            self.on_change(alerted, chan_id, f"{detail}: {error}" if error else detail)


def schedule_policy_job(
    scheduler: AsyncIOScheduler,
    settings: Settings,
    engine: Engine,
    node_id: int,
    analyze: Callable[[], Awaitable[int | None]],
    clock_ns: Callable[[], int],
    on_change: Callable[[PolicyResult, int, str], None] | None = None,
    lnd: LndClient | None = None,
) -> None:
    """Register the policy job (mode plan/apply): first run one interval from now.
    ``lnd``: the daemon's client, whose gateway process the job's calls go through."""
    every_s = settings.policy.interval_s
    rules = load_rules(settings.policy.file)
    job = PolicyJob(settings, engine, node_id, rules, analyze, clock_ns, on_change, lnd)
    scheduler.add_job(
        guarded("policy", job.run),
        "interval",
        seconds=every_s,
        id="policy",
        next_run_time=datetime.now(UTC) + timedelta(seconds=every_s),
        coalesce=True,
        max_instances=1,
        misfire_grace_time=every_s,
    )
