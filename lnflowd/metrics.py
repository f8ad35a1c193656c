"""The Prometheus endpoint of lnflowd (DESIGN §10): ``GET /metrics`` on ``[metrics] listen``.

A scrape never reads the store. It renders what this module holds in memory:

* counters the recording path updates once per committed batch
  (:meth:`DaemonMetrics.observe_batch`, from the batch's :class:`IngestResult` and the
  attempt tracker's resolution counts), started from the store's totals when the stream
  is first watched, so a restart continues where the store stands
  (:func:`lnflow.store.metrics_read.recording_totals` says what it keeps);
* figures a refresh job reads every ``refresh_s`` from small tables: the latest
  snapshot, the latest channel samples, the stream sessions, and the ledger rows added
  since the previous read (fees earned); ``store_refresh_s``: file size and row counts.

Label cardinality is bounded by the node's channels: ``chan_id``/``chan_out`` only take
the SCIDs of the node's channels (open or closed, from the ``channels`` table); every
other outgoing SCID (a foreign one named by UNKNOWN_NEXT_PEER, or 0) is reported as
``chan_out="other"``. So a family has at most channels × 6 failure classes series.

prometheus_client's HTTP server runs in its own daemon thread; the lock below is held
only to swap or copy plain dicts, never while rendering.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from lnflow import __version__
from lnflow.analysis.classify import FailureClass
from lnflow.attempts import Outcome
from lnflow.config import Settings
from lnflow.domain import EventKind, EventType
from lnflow.errors import ConfigError
from lnflow.store import metrics_read
from lnflow.store.ingest import Ingestor, IngestResult

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from lnflow.recording import Recorder

__all__ = ["DaemonMetrics", "MetricsState", "parse_listen"]

log = structlog.get_logger("lnflowd.metrics")

_NS = 1_000_000_000
_CLASS_LABEL = {int(c): c.label for c in FailureClass}
_OUTCOME_LABEL = {int(o): o.label for o in Outcome if o is not Outcome.PENDING}
_KIND_LABEL = {int(k): k.label for k in EventKind}
_TYPE_LABEL = {int(t): t.name.lower() for t in EventType}
# seconds: a batch write takes milliseconds, an analysis run up to minutes
_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_ANALYSIS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def parse_listen(listen: str) -> tuple[str, int] | None:
    """``host:port`` (``[::1]:9109`` for IPv6) → (host, port); "" → None (off)."""
    text = listen.strip()
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"bad [metrics] listen '{listen}': use host:port, e.g. 127.0.0.1:9109, or \"\" for off"
        )
    return host, int(port)


def _class_label(cls: int) -> str:
    return _CLASS_LABEL.get(cls, "other")


class MetricsState:
    """Everything a scrape shows, as plain data. Writers swap or add under ``lock``."""

    def __init__(self, *, budget_bytes: int = 0) -> None:
        self.lock = threading.Lock()
        self.lnd_version = ""
        # counters
        self.events: dict[tuple[int, int], int] = {}
        self.attempt_base: dict[int, int] = {}
        self.resolved: list[int] | None = None  # the tracker's live counts
        self.failures: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        self.forwards: dict[int, tuple[int, int]] = {}
        self.forwards_last_id = 0
        self.sessions = 0
        # gauges
        self.newest_event_ns = 0
        self.ingest_lag_s: float | None = None
        self.stream_connected: Callable[[], bool] | None = None
        self.stream_state: str | None = None
        self.view: metrics_read.RefreshView | None = None
        self.store_bytes: int | None = None
        self.budget_bytes = budget_bytes
        self.rows: dict[str, int] = {}

    # -- writers -----------------------------------------------------------------------

    def start_totals(self, totals: metrics_read.RecordingTotals, resolved: list[int]) -> None:
        with self.lock:
            self.events = dict(totals.events)
            self.attempt_base = dict(totals.attempts)
            self.resolved = resolved
            self.failures = dict(totals.failures)
            self.newest_event_ns = totals.newest_event_ns

    def add_batch(self, result: IngestResult, committed_ns: int) -> None:
        """One committed batch: a handful of dict updates per distinct key, no per-event
        work (the batch's result is already aggregated by type and channel)."""
        per_channel: dict[tuple[int, int], list[int]] = {}
        for (_hour, out, _inc, cls), acc in result.failure_rollup.items():
            cur = per_channel.get((out, cls))
            if cur is None:
                per_channel[(out, cls)] = list(acc)
            else:
                for i, v in enumerate(acc):
                    cur[i] += v
        with self.lock:
            events = self.events
            for key, n in result.events_by_type.items():
                k = (int(key[0]), int(key[1]))
                events[k] = events.get(k, 0) + n
            failures = self.failures
            for key, (n, c, raw, dedup) in per_channel.items():
                old = failures.get(key, (0, 0, 0, 0))
                failures[key] = (old[0] + n, old[1] + c, old[2] + raw, old[3] + dedup)
            if result.newest_event_ns:
                self.newest_event_ns = max(self.newest_event_ns, result.newest_event_ns)
                self.ingest_lag_s = max(0, committed_ns - result.newest_event_ns) / _NS

    def add_forwards(self, found: metrics_read.ForwardTotals) -> None:
        with self.lock:
            fw = self.forwards
            for chan, (n, fee) in found.by_channel.items():
                old = fw.get(chan, (0, 0))
                fw[chan] = (old[0] + n, old[1] + fee)
            self.forwards_last_id = found.last_id

    def set_view(self, view: metrics_read.RefreshView) -> None:
        with self.lock:
            self.view = view
            self.sessions = view.sessions
            self.stream_state = view.stream_state

    def set_store(self, size_bytes: int, rows: dict[str, int] | None) -> None:
        with self.lock:
            self.store_bytes = size_bytes
            if rows is not None:
                self.rows = rows

    # -- reading -----------------------------------------------------------------------

    def families(self, now_ns: int) -> Iterator[Metric]:
        with self.lock:
            events = dict(self.events)
            attempts = dict(self.attempt_base)
            if self.resolved is not None:
                for outcome, n in enumerate(self.resolved):
                    if n:
                        attempts[outcome] = attempts.get(outcome, 0) + n
            failures = dict(self.failures)
            fwd = dict(self.forwards)
            view = self.view
            sessions = self.sessions
            newest_ns = self.newest_event_ns
            lag = self.ingest_lag_s
            connected = self.stream_connected
            stream_state = self.stream_state
            store_bytes = self.store_bytes
            rows = dict(self.rows)
            lnd_version = self.lnd_version
        peers = view.peers if view is not None else {}

        info = InfoMetricFamily("lnflow_build", "lnflow and lnd versions", labels=None)
        info.add_metric([], {"version": __version__, "lnd_version": lnd_version})
        yield info

        m = CounterMetricFamily(
            "lnflow_htlc_events",
            "HTLC events recorded, by lnd event kind and event_type",
            labels=["event", "event_type"],
        )
        for (kind, etype), n in sorted(events.items()):
            m.add_metric([_KIND_LABEL.get(kind, str(kind)), _TYPE_LABEL.get(etype, str(etype))], n)
        yield m

        m = CounterMetricFamily(
            "lnflow_forward_attempts",
            "Forward attempts resolved, by the outcome they first resolved with",
            labels=["outcome"],
        )
        for outcome, label in _OUTCOME_LABEL.items():
            m.add_metric([label], attempts.get(outcome, 0))
        yield m

        merged: dict[tuple[str, str], list[int]] = {}
        for (out, cls), values in failures.items():
            key = (str(out) if out in peers else "other", _class_label(cls))
            cur = merged.get(key)
            if cur is None:
                merged[key] = list(values)
            else:
                for i, v in enumerate(values):
                    cur[i] += v
        for i, (name, doc) in enumerate(
            (
                ("lnflow_local_failures", "Forwards failed at this node, by outgoing channel"),
                ("lnflow_failure_clusters", "Demand clusters opened by local failures"),
                ("lnflow_missed_fees_msat", "Fees of local failures (raw: retries included)"),
                (
                    "lnflow_missed_fees_dedup_msat",
                    "Fees of local failures, deduplicated by demand cluster",
                ),
            )
        ):
            fam = CounterMetricFamily(name, doc, labels=["chan_out", "failure_class"])
            for (chan_label, cls_label), sums in sorted(merged.items()):
                fam.add_metric([chan_label, cls_label], sums[i])
            yield fam

        fw_merged: dict[str, list[int]] = {}
        for out, (n, fee) in fwd.items():
            label = str(out) if out in peers else "other"
            cur = fw_merged.setdefault(label, [0, 0])
            cur[0] += n
            cur[1] += fee
        forwards_m = CounterMetricFamily(
            "lnflow_forwards",
            "Settled forwards in the ledger, by outgoing channel",
            labels=["chan_out"],
        )
        fees_m = CounterMetricFamily(
            "lnflow_fees_earned_msat",
            "Fees earned (forwards ledger), by outgoing channel",
            labels=["chan_out"],
        )
        for chan, (n, fee) in sorted(fw_merged.items()):
            forwards_m.add_metric([chan], n)
            fees_m.add_metric([chan], fee)
        yield forwards_m
        yield fees_m

        m = CounterMetricFamily(
            "lnflow_stream_sessions",
            "HTLC stream sessions opened (the first connection and every reconnect)",
        )
        m.add_metric([], sessions)
        yield m

        up = connected() if connected is not None else stream_state == "connected"
        yield GaugeMetricFamily(
            "lnflow_stream_connected", "1 while the HTLC event stream is connected", value=up
        )
        if newest_ns:
            yield GaugeMetricFamily(
                "lnflow_htlc_last_event_age_seconds",
                "Seconds since the newest recorded HTLC event (lnd's timestamp)",
                value=max(0, now_ns - newest_ns) / _NS,
            )
        if lag is not None:
            yield GaugeMetricFamily(
                "lnflow_ingest_lag_seconds",
                "From the newest event of the last batch to its commit in the store",
                value=lag,
            )
        if store_bytes is not None:
            yield GaugeMetricFamily(
                "lnflow_store_size_bytes", "Store file size (database and WAL)", value=store_bytes
            )
        yield GaugeMetricFamily(
            "lnflow_store_budget_bytes",
            "The store's size budget ([retention] max_db_mb), 0 when there is none",
            value=self.budget_bytes,
        )
        table_rows = GaugeMetricFamily(
            "lnflow_store_rows", "Rows per store table", labels=["table"]
        )
        for table, n in rows.items():
            table_rows.add_metric([table], n)
        yield table_rows

        if view is not None:
            yield from _view_families(view)


def _view_families(view: metrics_read.RefreshView) -> Iterable[Metric]:
    labels = ["chan_id", "peer", "action"]
    urgency = GaugeMetricFamily(
        "lnflow_opportunity_urgency_score", "Urgency (0-100) in the latest snapshot", labels=labels
    )
    missed = GaugeMetricFamily(
        "lnflow_opportunity_missed_msat",
        "Missed fees (deduplicated) in the latest snapshot's window",
        labels=labels,
    )
    monthly = GaugeMetricFamily(
        "lnflow_opportunity_potential_monthly_sats",
        "Missed fees extrapolated to 30 days, in the latest snapshot",
        labels=labels,
    )
    report = view.report
    if report is not None:
        for o in report.opportunities:
            values = [str(o.channel_id), o.peer_pubkey, str(o.recommended_action)]
            urgency.add_metric(values, o.urgency_score)
            missed.add_metric(values, o.missed_msat)
            monthly.add_metric(values, o.potential_monthly_msat / 1000)
        yield GaugeMetricFamily(
            "lnflow_analysis_last_run_timestamp_seconds",
            "When the latest snapshot was generated",
            value=report.generated_ns / _NS,
        )
    yield urgency
    yield missed
    yield monthly
    ratio = GaugeMetricFamily(
        "lnflow_channel_local_balance_ratio",
        "local / (local + remote) balance in the latest channel sample",
        labels=["chan_id", "peer"],
    )
    active = GaugeMetricFamily(
        "lnflow_channel_active",
        "1 when lnd reported the channel active",
        labels=["chan_id", "peer"],
    )
    for ch in view.channels:
        values = [str(ch.chan_id), ch.peer_pubkey]
        total = ch.local_balance_sat + ch.remote_balance_sat
        ratio.add_metric(values, ch.local_balance_sat / total if total else 0.0)
        active.add_metric(values, 1 if ch.active else 0)
    yield ratio
    yield active


class _Collector(Collector):
    def __init__(self, state: MetricsState) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        return self._state.families(time.time_ns())


def _store_bytes(db: Path) -> int:
    total = 0
    for path in (db, db.with_name(db.name + "-wal")):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


class DaemonMetrics:
    """The endpoint, its state and its refresh jobs. Built by :meth:`start`."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._settings = settings.metrics
        self._engine = engine
        self._db = settings.store.path
        self.state = MetricsState(budget_bytes=settings.retention.max_db_mb * 1024 * 1024)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self.state))
        self.batch_seconds = Histogram(
            "lnflow_store_batch_write_duration_seconds",
            "Time to write one batch of HTLC events and what derives from it",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.analysis_seconds = Histogram(
            "lnflow_analysis_duration_seconds",
            "Time an analysis run took (read and analyse the window)",
            buckets=_ANALYSIS_BUCKETS,
            registry=self.registry,
        )
        self._node_id: int | None = None
        self._runs_seen: int | None = None  # None: runs before start-up are not observed
        self._server: object | None = None
        self._refreshing = asyncio.Lock()

    @classmethod
    def start(cls, settings: Settings, engine: Engine) -> DaemonMetrics | None:
        """Listen on ``[metrics] listen``; None when it is "" or cannot be bound (logged).
        Raises ConfigError for an address that is not host:port."""
        where = parse_listen(settings.metrics.listen)
        if where is None:
            return None
        metrics = cls(settings, engine)
        host, port = where
        try:
            server, _thread = start_http_server(port, host, registry=metrics.registry)
        except OSError as exc:
            # Recording matters more than its metrics: say so and go on without them
            # (Prometheus' up == 0 shows the missing target).
            log.error(
                "metrics_unavailable",
                listen=settings.metrics.listen,
                error=exc.strerror or str(exc),
                fix='change [metrics] listen, or set it to "" to turn the endpoint off',
            )
            return None
        metrics._server = server
        metrics.state.set_store(_store_bytes(metrics._db), None)
        log.info("metrics_listening", listen=settings.metrics.listen)
        return metrics

    async def attach(self, node_id: int, lnd_version: str, scheduler: AsyncIOScheduler) -> None:
        """lnd is connected: read what the gauges follow now, then on the refresh timers."""
        from datetime import UTC, datetime

        self._node_id = node_id
        self.state.lnd_version = lnd_version
        await self.refresh()
        await self.refresh_store()
        s = self._settings
        for job_id, job, every_s in (
            ("metrics_refresh", self.refresh, s.refresh_s),
            ("metrics_store", self.refresh_store, s.store_refresh_s),
        ):
            scheduler.add_job(
                job,
                "interval",
                seconds=every_s,
                id=job_id,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(1, int(every_s)),
                next_run_time=datetime.now(UTC),
            )

    async def watch(self, ingestor: Ingestor, recorder: Recorder) -> None:
        """The HTLC stream is about to start: counters from the store's totals, then per
        batch. Call before the recorder runs, so no batch falls between the two."""
        assert self._node_id is not None, "attach() first"
        totals = await asyncio.to_thread(self._totals, self._node_id)
        self.state.start_totals(totals, ingestor.tracker.resolved)
        self.state.stream_connected = recorder.connected.is_set
        ingestor.observer = self.observe_batch

    def _totals(self, node_id: int) -> metrics_read.RecordingTotals:
        with self._engine.connect() as conn:
            return metrics_read.recording_totals(conn, node_id)

    def observe_batch(self, result: IngestResult, write_s: float) -> None:
        """Per committed batch, on the store thread."""
        self.state.add_batch(result, time.time_ns())
        if result.newest_event_ns:
            self.batch_seconds.observe(write_s)

    async def refresh(self) -> None:
        """The small tables, the ledger rows added since the last read; new runs' durations."""
        node_id = self._node_id
        if node_id is None:
            return
        async with self._refreshing:
            view, found = await asyncio.to_thread(self._read, node_id)
            self.state.add_forwards(found)
            if self._runs_seen is not None:
                for _run_id, duration_ms in view.new_runs:
                    self.analysis_seconds.observe(duration_ms / 1000)
            if view.new_runs:
                self._runs_seen = view.new_runs[-1][0]
            elif self._runs_seen is None:
                self._runs_seen = 0
            self.state.set_view(view)

    def _read(self, node_id: int) -> tuple[metrics_read.RefreshView, metrics_read.ForwardTotals]:
        with self._engine.connect() as conn:
            view = metrics_read.refresh_view(conn, node_id, self._runs_seen or 0)
            found = metrics_read.forwards_after(conn, node_id, self.state.forwards_last_id)
        return view, found

    async def refresh_store(self) -> None:
        rows = await asyncio.to_thread(self._count_rows)
        self.state.set_store(_store_bytes(self._db), rows)

    def _count_rows(self) -> dict[str, int]:
        with self._engine.connect() as conn:
            return metrics_read.table_rows(conn)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
