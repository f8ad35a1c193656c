"""Built-in notifications (DESIGN §10): ``[alerts]`` targets, off the recording path.

What fires is decided by :class:`lnflow.alerts.AlertRules`; this module feeds it and
delivers what it returns:

* producers (the analysis job, the check job, the policy code) call :meth:`AlertService.
  analysis_done`, :meth:`~AlertService.analysis_failed`, :meth:`~AlertService.policy_change`;
  each only puts the alert in a bounded queue (``queue_size``) and returns: a full queue
  drops the alert, counts it (:attr:`AlertService.dropped`) and logs ``alert_dropped``;
* one dispatcher task records each alert in the store (on the store thread, queued
  behind the event batches like any write) and hands it to each target's own queue;
  before lnd has answered, alerts are recorded against the node the store knows from
  the last run; a store that has never seen lnd keeps them (and their deliveries) in
  memory until :meth:`AlertService.attach` names the node;
* one task per target delivers: ``attempts`` tries, waiting ``retry_s``, then twice as
  long each time (at most ``retry_max_s``), and records the outcome. A slow or dead
  target delays only its own deliveries.

Secrets: a webhook URL appears only as its scheme and host (:func:`lnflow.alerts.
redact_url`); errors have every piece of the URL replaced (:func:`lnflow.alerts.scrub`)
before they are logged or stored. httpx's own request log is kept quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from lnflow.alerts import (
    Alert,
    AlertKind,
    AlertRules,
    alert_document,
    scrub,
    url_secrets,
    webhook_request,
)
from lnflow.analysis.model import AnalysisReport
from lnflow.errors import StoreWriteError
from lnflow.settings import AlertsSettings, CommandTarget, Settings, WebhookTarget
from lnflow.store.alerts import AlertLog, Delivery, known_node, open_conditions
from lnflow.store.engines import store_bytes
from lnflow.text import printable

if TYPE_CHECKING:
    import httpx
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from lnflow.recording import StoreThread
    from lnflow.store.writer import StoreWriter

__all__ = ["AlertService", "PolicyResult"]

log = structlog.get_logger("lnflowd.alerts")

# httpx logs each request with its full URL at INFO: never let that through
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

PolicyResult = Literal["applied", "failed", "reverted"]
_ERROR_CHARS = 300


@dataclass(slots=True, eq=False)
class _Row:
    """An alert on its way to the store: its id once recorded; ``waiting``: while the
    node is unknown (``pending``), the deliveries done meanwhile."""

    alert: Alert
    id: int | None = None
    log: AlertLog | None = None  # the node's log it was recorded in
    pending: bool = False
    waiting: list[Delivery] = field(default_factory=list)


def _down() -> bool:
    return False


class _Sender(Protocol):
    label: str

    async def send(self, alert: Alert, document: dict[str, object]) -> str | None:
        """Deliver once; the error (secrets removed) or None."""


class _Webhook:
    def __init__(self, target: WebhookTarget, client: httpx.AsyncClient) -> None:
        self.label = target.label
        self._target = target
        self._client = client
        self._secrets = url_secrets(target.url)

    async def send(self, alert: Alert, document: dict[str, object]) -> str | None:
        t = self._target
        node = document["node"]
        assert isinstance(node, dict)
        body, headers = webhook_request(
            t.format,
            alert,
            node_pubkey=str(node["pubkey"]),
            node_alias=str(node["alias"]),
            chat_id=t.chat_id,
        )
        import httpx  # loaded with the first webhook target (bench/README.md: memory)

        try:
            response = await self._client.post(
                t.url, content=body, headers=headers, timeout=t.timeout_s
            )
        except httpx.TimeoutException:
            return f"timed out after {t.timeout_s:g} s"
        except httpx.HTTPError as exc:
            return self._clean(f"{type(exc).__name__}: {exc}")
        if response.is_success:
            return None
        return self._clean(f"HTTP {response.status_code}: {response.text[:200]}")

    def _clean(self, text: str) -> str:
        return printable(scrub(text, self._secrets))[:_ERROR_CHARS]


class _Command:
    def __init__(self, target: CommandTarget) -> None:
        self.label = target.label
        self._target = target

    async def send(self, alert: Alert, document: dict[str, object]) -> str | None:
        t = self._target
        stdin = json.dumps(document).encode() + b"\n"
        try:
            proc = await asyncio.create_subprocess_exec(
                *t.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            return f"cannot run {Path(t.command[0]).name}: {exc.strerror or exc}"
        try:
            _, err = await asyncio.wait_for(proc.communicate(stdin), t.timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return f"timed out after {t.timeout_s:g} s (killed)"
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        if proc.returncode == 0:
            return None
        last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return printable(f"exit status {proc.returncode}: {last[0]}".rstrip(": "))[:_ERROR_CHARS]


class _Worker:
    """One target's queue and delivery loop."""

    def __init__(self, sender: _Sender, settings: AlertsSettings) -> None:
        self.sender = sender
        self.queue: asyncio.Queue[tuple[_Row, dict[str, object]]] = asyncio.Queue(
            settings.queue_size
        )
        self._s = settings

    async def deliver(
        self, alert: Alert, document: dict[str, object], clock_ns: Callable[[], int]
    ) -> Delivery:
        s = self._s
        error: str | None = None
        for attempt in range(1, s.attempts + 1):
            error = await self.sender.send(alert, document)
            if error is None:
                return Delivery(self.sender.label, clock_ns(), True, attempt, None)
            log.warning(
                "alert_delivery_failed",
                target=self.sender.label,
                kind=alert.kind.value,
                attempt=attempt,
                of=s.attempts,
                error=error,
            )
            if attempt < s.attempts:
                await asyncio.sleep(min(s.retry_s * 2 ** (attempt - 1), s.retry_max_s))
        return Delivery(self.sender.label, clock_ns(), False, s.attempts, error)


class AlertService:
    """The daemon's alerts: build, :meth:`start` when lnflowd starts, :meth:`attach` once
    lnd is known, :meth:`watch_stream` when the HTLC stream starts. The producers'
    methods never wait."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        store: StoreThread[StoreWriter],
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        s = settings.alerts
        self._settings = s
        self._engine = engine
        self._store = store
        self._clock_ns = clock_ns
        self._budget_bytes = settings.retention.max_db_mb * 1024 * 1024
        self.rules = AlertRules(
            min_urgency=s.min_urgency,
            stream_down_s=s.stream_down_s,
            store_budget_pct=s.store_budget_pct,
        )
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(s.queue_size)
        self.dropped = 0
        self._client: httpx.AsyncClient | None = None
        self._workers: list[_Worker] = []
        for target in s.targets:
            # by its tag, not its class: tests hand in lnflow.config's targets as well
            if target.type == "webhook":
                if self._client is None:
                    import httpx  # only with a webhook: ~1 MB the daemon need not hold

                    self._client = httpx.AsyncClient(follow_redirects=False)
                self._workers.append(_Worker(_Webhook(target, self._client), s))
            else:
                self._workers.append(_Worker(_Command(target), s))
        self._tasks: list[asyncio.Task[None]] = []
        self._log: AlertLog | None = None
        self._node_id: int | None = None
        self._node = {"pubkey": "", "alias": ""}
        self._unrecorded: list[_Row] = []  # fired before any node was known
        self._connected: Callable[[], bool] | None = None
        self._started = False

    # -- set-up ---------------------------------------------------------------------

    async def start(self, scheduler: AsyncIOScheduler) -> None:
        """lnflowd starts, lnd has not answered yet: the stream counts as down from now
        (``stream_down_s`` later "stream down" fires), the store size is checked, and
        alerts are delivered. They are recorded against the node the store knows from
        the last run (its open conditions restored); with none, once :meth:`attach`
        names it. Reading the store never stops the start: unreadable, no node."""
        try:
            known = await asyncio.to_thread(self._known_node)
        except SQLAlchemyError as exc:
            log.warning("alerts_node_unknown", error=str(exc).splitlines()[0])
            known = None
        if known is not None:
            node_id, pubkey, alias = known
            self.rules.active |= await asyncio.to_thread(self._open_conditions, node_id)
            self._use_node(node_id, pubkey, alias)
        self._connected = _down
        await self._start(scheduler)

    async def attach(
        self,
        node_id: int,
        pubkey: str,
        alias: str,
        scheduler: AsyncIOScheduler,
    ) -> None:
        """lnd is known: restore the conditions that still hold, record the alerts that
        waited for the node, start the delivery tasks and the check job (stream and
        store size every ``check_s``) unless :meth:`start` did. The stream is watched
        again from :meth:`watch_stream` (its down time still counts from the start)."""
        if node_id != self._node_id:
            restored = await asyncio.to_thread(self._open_conditions, node_id)
            if self._node_id is not None:  # lnd is another node than the store's last one
                self.rules.active = {
                    c
                    for c in self.rules.active
                    if c[0] in (AlertKind.STREAM_DOWN, AlertKind.STORE_BUDGET)
                }
            self.rules.active |= restored
            alert_log = AlertLog(self._engine, node_id, keep_days=self._settings.keep_days)
            while self._unrecorded:  # oldest first; the dispatcher adds here meanwhile
                await self._record_late(alert_log, self._unrecorded.pop(0))
            self._use_node(node_id, pubkey, alias)
        self._node = {"pubkey": pubkey, "alias": alias}
        if self._connected is _down:
            self._connected = None
        await self._start(scheduler)

    def _use_node(self, node_id: int, pubkey: str, alias: str) -> None:
        self._node_id = node_id
        self._node = {"pubkey": pubkey, "alias": alias}
        self._log = AlertLog(self._engine, node_id, keep_days=self._settings.keep_days)

    async def _record_late(self, alert_log: AlertLog, row: _Row) -> None:
        """An alert fired before the node was known, and its deliveries done since."""
        try:
            alert_id = await self._store.call(alert_log.record_alert, row.alert)
        except StoreWriteError as exc:
            log.warning("alert_not_recorded", kind=row.alert.kind.value, error=exc.reason)
            row.pending = False
            return
        row.id, row.log, row.pending = alert_id, alert_log, False
        waiting, row.waiting = row.waiting, []
        for delivery in waiting:
            await self._write_delivery(alert_log, alert_id, delivery)

    async def _start(self, scheduler: AsyncIOScheduler) -> None:
        if self._started:
            return
        self._started = True
        with contextlib.suppress(StoreWriteError):
            await self._store.call(
                self._store.target.daemon_state,
                self._clock_ns(),
                alert_targets=json.dumps([w.sender.label for w in self._workers]),
            )
        self._tasks.append(asyncio.create_task(self._dispatch(), name="alerts"))
        for worker in self._workers:
            self._tasks.append(
                asyncio.create_task(self._deliver(worker), name=f"alerts {worker.sender.label}")
            )
        scheduler.add_job(
            self.check,
            "interval",
            seconds=self._settings.check_s,
            id="alerts_check",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(self._settings.check_s)),
            next_run_time=datetime.now(UTC),
        )
        log.info("alerts_ready", targets=[w.sender.label for w in self._workers])

    def _known_node(self) -> tuple[int, str, str] | None:
        with self._engine.connect() as conn:
            return known_node(conn)

    def _open_conditions(self, node_id: int) -> set[tuple[AlertKind, str]]:
        with self._engine.connect() as conn:
            return open_conditions(conn, node_id)

    def watch_stream(self, connected: Callable[[], bool]) -> None:
        """The HTLC stream starts now; ``connected()`` tells whether it is up."""
        self._connected = connected

    async def close(self, drain_s: float = 1.0) -> None:
        """Stop; alerts already queued are recorded first (for at most ``drain_s``),
        deliveries still being tried are cut."""
        if self._tasks and not self._tasks[0].done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()

    # -- producers (never wait) ----------------------------------------------------

    def analysis_done(self, report: AnalysisReport) -> None:
        for alert in self.rules.snapshot(report, self._clock_ns()):
            self._put(alert)

    def analysis_failed(self, error: str) -> None:
        self._put(self.rules.analysis(error, self._clock_ns()))

    def policy_change(self, result: PolicyResult, chan_id: int, detail: str) -> None:
        """For the policy engine: one alert per change applied, failed or reverted."""
        self._put(self.rules.policy_change(result, chan_id, detail, self._clock_ns()))

    async def check(self) -> None:
        """The stream's state and the store's size against their thresholds."""
        now = self._clock_ns()
        if self._connected is not None:
            self._put(self.rules.stream(self._connected(), now))
        if self._budget_bytes:
            size = await asyncio.to_thread(store_bytes, self._engine)
            self._put(self.rules.store(size, self._budget_bytes, now))

    def _put(self, alert: Alert | None) -> None:
        if alert is None:
            return
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "alert_dropped",
                kind=alert.kind.value,
                phase=alert.phase.value,
                subject=alert.key,
                dropped=self.dropped,
                reason=f"{self._settings.queue_size} alerts already wait (queue_size)",
            )

    # -- tasks ----------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            alert = await self._queue.get()
            row = _Row(alert)
            alert_log = self._log
            if alert_log is None:  # no node yet: recorded by attach()
                row.pending = True
                self._unrecorded.append(row)
            else:
                try:
                    row.id = await self._store.call(alert_log.record_alert, alert)
                    row.log = alert_log
                except StoreWriteError as exc:
                    log.warning("alert_not_recorded", kind=alert.kind.value, error=exc.reason)
            log.info(
                "alert",
                kind=alert.kind.value,
                phase=alert.phase.value,
                subject=alert.key,
                title=alert.title,
            )
            document = alert_document(
                alert, node_pubkey=self._node["pubkey"], node_alias=self._node["alias"]
            )
            self._queue.task_done()
            for worker in self._workers:
                try:
                    worker.queue.put_nowait((row, document))
                except asyncio.QueueFull:
                    self.dropped += 1
                    log.warning(
                        "alert_dropped",
                        target=worker.sender.label,
                        kind=alert.kind.value,
                        dropped=self.dropped,
                        reason="the target's queue is full (queue_size)",
                    )
                    await self._record(
                        row, Delivery(worker.sender.label, self._clock_ns(), False, 0, "queue full")
                    )

    async def _deliver(self, worker: _Worker) -> None:
        while True:
            row, document = await worker.queue.get()
            alert = row.alert
            delivery = await worker.deliver(alert, document, self._clock_ns)
            if delivery.ok:
                log.info(
                    "alert_delivered",
                    target=delivery.target,
                    kind=alert.kind.value,
                    attempts=delivery.attempts,
                )
            else:
                log.error(
                    "alert_not_delivered",
                    target=delivery.target,
                    kind=alert.kind.value,
                    attempts=delivery.attempts,
                    error=delivery.error,
                )
            await self._record(row, delivery)

    async def _record(self, row: _Row, delivery: Delivery) -> None:
        if row.pending:
            row.waiting.append(delivery)  # recorded with its alert by attach()
        elif row.id is not None and row.log is not None:
            await self._write_delivery(row.log, row.id, delivery)

    async def _write_delivery(self, alert_log: AlertLog, alert_id: int, delivery: Delivery) -> None:
        try:
            await self._store.call(alert_log.record_delivery, alert_id, delivery)
        except StoreWriteError as exc:
            log.warning("alert_delivery_not_recorded", target=delivery.target, error=exc.reason)
