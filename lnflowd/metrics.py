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

The text is written by :mod:`lnflowd.exposition` (why: see there) and served by its HTTP
server in a daemon thread; the lock below is held only to update or copy plain dicts,
never while rendering. prometheus_client keeps the two histograms.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from sqlalchemy import Engine

from lnflow import __version__
from lnflow.domain import (
    MSAT_PER_SAT,
    NS_PER_S,
    EventKind,
    EventType,
    FailureClass,
    Outcome,
    StreamState,
)
from lnflow.settings import Settings
from lnflow.store import metrics_read
from lnflow.store.engines import store_bytes
from lnflow.store.ingest import Ingestor, IngestResult
from lnflow.store.policy_history import RESULTS

from .exposition import MetricsServer, family, labels

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from lnflow.recording import Recorder, StoreThread
    from lnflow.store.writer import StoreWriter

__all__ = ["DaemonMetrics", "MetricsState"]

log = structlog.get_logger("lnflowd.metrics")

_OUTCOME_LABEL = {int(o): o.label for o in Outcome if o is not Outcome.PENDING}
_KIND_LABEL = {int(k): k.label for k in EventKind}
_TYPE_LABEL = {int(t): t.name.lower() for t in EventType}
# seconds: a batch write takes milliseconds, an analysis run up to minutes
_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_ANALYSIS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _class_label(cls: int) -> str:
    return FailureClass.of_stored(cls).label


class MetricsState:
    """Everything a scrape shows, as plain data. Writers swap or add under ``lock``."""

    def __init__(self, *, budget_bytes: int = 0) -> None:
        self.lock = threading.Lock()
        self.lnd_version = ""
        # counters
        self.events: dict[tuple[int, int], int] = {}
        self.attempt_base: dict[int, int] = {}
        self.resolved: list[int] | None = None  # the tracker's live counts
        self.failures: dict[tuple[int, int], tuple[int, ...]] = {}
        self.forwards: dict[int, tuple[int, ...]] = {}
        self.forwards_last_id = 0
        # the same summed by label string ("other" for SCIDs not in _ours), kept as they
        # change so that a scrape only joins lines; rebuilt when the channel set changes
        self._ours: frozenset[int] = frozenset()
        self.failures_by_label: dict[str, tuple[int, ...]] = {}
        self.forwards_by_label: dict[str, tuple[int, ...]] = {}
        self.sessions = 0
        # gauges
        self.newest_event_ns = 0
        self.ingest_lag_s: float | None = None
        self.stream_connected: Callable[[], bool] | None = None
        self.stream_state: str | None = None
        self.view: metrics_read.RefreshView | None = None
        self.view_text = ""
        self.store_bytes: int | None = None
        self.budget_bytes = budget_bytes
        self.rows: dict[str, int] = {}

    # -- writers -----------------------------------------------------------------------

    def start_totals(
        self,
        totals: metrics_read.RecordingTotals,
        resolved: list[int],
        already: Sequence[int] = (),
    ) -> None:
        """``resolved``: the tracker's live counts; ``already``: those of them that the
        totals include (subtracted from the base)."""
        with self.lock:
            self.events = dict(totals.events)
            base = dict(totals.attempts)
            for outcome, n in enumerate(already):
                if n:
                    base[outcome] = base.get(outcome, 0) - n
            self.attempt_base = base
            self.resolved = resolved
            self.failures = dict(totals.failures)
            self.newest_event_ns = totals.newest_event_ns
            self._relabel()

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
            by_label = self.failures_by_label
            ours = self._ours
            for (out, cls), acc in per_channel.items():
                failures[(out, cls)] = _plus(failures.get((out, cls)), acc)
                lbl = _failure_labels(out if out in ours else None, cls)
                by_label[lbl] = _plus(by_label.get(lbl), acc)
            if result.newest_event_ns:
                self.newest_event_ns = max(self.newest_event_ns, result.newest_event_ns)
                self.ingest_lag_s = max(0, committed_ns - result.newest_event_ns) / NS_PER_S

    def add_forwards(self, found: metrics_read.ForwardTotals) -> None:
        with self.lock:
            fw = self.forwards
            by_label = self.forwards_by_label
            ours = self._ours
            for chan, acc in found.by_channel.items():
                fw[chan] = _plus(fw.get(chan), acc)
                lbl = _chan_out_labels(chan if chan in ours else None)
                by_label[lbl] = _plus(by_label.get(lbl), acc)
            self.forwards_last_id = found.last_id

    def set_view(self, view: metrics_read.RefreshView) -> None:
        text = _render_view(view)  # here, not per scrape: it changes once per refresh
        ours = frozenset(view.peers)
        with self.lock:
            self.view = view
            self.view_text = text
            if ours != self._ours:
                self._ours = ours
                self._relabel()
            self.sessions = view.sessions
            self.stream_state = view.stream_state

    def set_store(self, size_bytes: int, rows: dict[str, int] | None) -> None:
        with self.lock:
            self.store_bytes = size_bytes
            if rows is not None:
                self.rows = rows

    def _relabel(self) -> None:
        """Sum the raw figures by label again (under the lock): the channel set changed."""
        ours = self._ours
        fails: dict[str, tuple[int, ...]] = {}
        for (out, cls), acc in sorted(self.failures.items()):
            lbl = _failure_labels(out if out in ours else None, cls)
            fails[lbl] = _plus(fails.get(lbl), acc)
        self.failures_by_label = fails
        fwd: dict[str, tuple[int, ...]] = {}
        for chan, acc in sorted(self.forwards.items()):
            lbl = _chan_out_labels(chan if chan in ours else None)
            fwd[lbl] = _plus(fwd.get(lbl), acc)
        self.forwards_by_label = fwd

    # -- reading -----------------------------------------------------------------------

    def render(self, now_ns: int) -> str:
        """The exposition text of everything but the histograms."""
        with self.lock:
            events = dict(self.events)
            attempts = dict(self.attempt_base)
            if self.resolved is not None:
                for outcome, n in enumerate(self.resolved):
                    if n:
                        attempts[outcome] = attempts.get(outcome, 0) + n
            failures = list(self.failures_by_label.items())  # values are replaced, not
            fwd = list(self.forwards_by_label.items())  # changed: a consistent copy
            view_text = self.view_text
            sessions = self.sessions
            newest_ns = self.newest_event_ns
            lag = self.ingest_lag_s
            connected = self.stream_connected
            stream_state = self.stream_state
            store_bytes = self.store_bytes
            rows = dict(self.rows)
            lnd_version = self.lnd_version
        out = [
            family(
                "lnflow_build_info",
                "gauge",
                "lnflow and lnd versions",
                [(labels((("lnd_version", lnd_version), ("version", __version__))), 1)],
            ),
            family(
                "lnflow_htlc_events_total",
                "counter",
                "HTLC events recorded, by lnd event kind and event_type",
                ((_event_labels(kind, etype), n) for (kind, etype), n in sorted(events.items())),
            ),
            family(
                "lnflow_forward_attempts_total",
                "counter",
                "Forward attempts resolved, by the outcome they first resolved with",
                (
                    (_OUTCOME_LABELS[outcome], attempts.get(outcome, 0))
                    for outcome in _OUTCOME_LABELS
                ),
            ),
        ]
        for i, (name, doc) in enumerate(_FAILURE_FAMILIES):
            out.append(family(name, "counter", doc, [(lbl, v[i]) for lbl, v in failures]))
        fw_ordered = fwd
        out.append(
            family(
                "lnflow_forwards_total",
                "counter",
                "Settled forwards in the ledger, by outgoing channel",
                ((lbl, v[0]) for lbl, v in fw_ordered),
            )
        )
        out.append(
            family(
                "lnflow_fees_earned_msat_total",
                "counter",
                "Fees earned (forwards ledger), by outgoing channel",
                ((lbl, v[1]) for lbl, v in fw_ordered),
            )
        )
        out.append(
            family(
                "lnflow_stream_sessions_total",
                "counter",
                "HTLC stream sessions opened (the first connection and every reconnect)",
                [("", sessions)],
            )
        )
        up = connected() if connected is not None else stream_state == StreamState.CONNECTED
        out.append(
            family(
                "lnflow_stream_connected",
                "gauge",
                "1 while the HTLC event stream is connected",
                [("", int(up))],
            )
        )
        if newest_ns:
            out.append(
                family(
                    "lnflow_htlc_last_event_age_seconds",
                    "gauge",
                    "Seconds since the newest recorded HTLC event (lnd's timestamp)",
                    [("", max(0, now_ns - newest_ns) / NS_PER_S)],
                )
            )
        if lag is not None:
            out.append(
                family(
                    "lnflow_ingest_lag_seconds",
                    "gauge",
                    "From the newest event of the last batch to its commit in the store",
                    [("", lag)],
                )
            )
        if store_bytes is not None:
            out.append(
                family(
                    "lnflow_store_size_bytes",
                    "gauge",
                    "Store file size (database and WAL)",
                    [("", store_bytes)],
                )
            )
        out.append(
            family(
                "lnflow_store_budget_bytes",
                "gauge",
                "The store's size budget ([retention] max_db_mb), 0 when there is none",
                [("", self.budget_bytes)],
            )
        )
        out.append(
            family(
                "lnflow_store_rows",
                "gauge",
                "Rows per store table",
                ((labels((("table", t),)), n) for t, n in sorted(rows.items())),
            )
        )
        out.append(view_text)
        return "".join(out)


def _plus(old: tuple[int, ...] | None, add: Sequence[int]) -> tuple[int, ...]:
    return tuple(add) if old is None else tuple(map(operator.add, old, add))


_FAILURE_FAMILIES = (
    ("lnflow_local_failures_total", "Forwards failed at this node, by outgoing channel"),
    ("lnflow_failure_clusters_total", "Demand clusters opened by local failures"),
    ("lnflow_missed_fees_msat_total", "Fees of local failures (raw: retries included)"),
    (
        "lnflow_missed_fees_dedup_msat_total",
        "Fees of local failures, deduplicated by demand cluster",
    ),
)
_OUTCOME_LABELS = {
    outcome: labels((("outcome", label),)) for outcome, label in _OUTCOME_LABEL.items()
}


@functools.cache
def _event_labels(kind: int, etype: int) -> str:
    return labels(
        (
            ("event", _KIND_LABEL.get(kind, str(kind))),
            ("event_type", _TYPE_LABEL.get(etype, str(etype))),
        )
    )


@functools.lru_cache(maxsize=65_536)
def _failure_labels(chan: int | None, cls: int) -> str:
    """Label string of (outgoing channel or None for "other", class): built once per key."""
    return labels(
        (("chan_out", "other" if chan is None else str(chan)), ("failure_class", _class_label(cls)))
    )


@functools.lru_cache(maxsize=65_536)
def _chan_out_labels(chan: int | None) -> str:
    return labels((("chan_out", "other" if chan is None else str(chan)),))


def _render_view(view: metrics_read.RefreshView) -> str:
    """The latest snapshot's and channel samples' families."""
    opp: list[tuple[str, int, int, float]] = []
    report = view.report
    out = []
    if report is not None:
        for o in report.opportunities:
            lbl = labels(
                (
                    ("action", str(o.recommended_action)),
                    ("chan_id", str(o.channel_id)),
                    ("peer", o.peer_pubkey),
                )
            )
            opp.append(
                (lbl, o.urgency_score, o.missed_msat, o.potential_monthly_msat / MSAT_PER_SAT)
            )
        out.append(
            family(
                "lnflow_analysis_last_run_timestamp_seconds",
                "gauge",
                "When the latest snapshot was generated",
                [("", report.generated_ns / NS_PER_S)],
            )
        )
    out.append(
        family(
            "lnflow_opportunity_urgency_score",
            "gauge",
            "Urgency (0-100) in the latest snapshot",
            ((lbl, u) for lbl, u, _, _ in opp),
        )
    )
    out.append(
        family(
            "lnflow_opportunity_missed_msat",
            "gauge",
            "Missed fees (deduplicated) in the latest snapshot's window",
            ((lbl, m) for lbl, _, m, _ in opp),
        )
    )
    out.append(
        family(
            "lnflow_opportunity_potential_monthly_sats",
            "gauge",
            "Missed fees extrapolated to 30 days, in the latest snapshot",
            ((lbl, p) for lbl, _, _, p in opp),
        )
    )
    chans: list[tuple[str, float, int]] = []
    for ch in view.channels:
        total = ch.local_balance_sat + ch.remote_balance_sat
        lbl = labels((("chan_id", str(ch.chan_id)), ("peer", ch.peer_pubkey)))
        chans.append((lbl, ch.local_balance_sat / total if total else 0.0, int(ch.active)))
    out.append(
        family(
            "lnflow_channel_local_balance_ratio",
            "gauge",
            "local / (local + remote) balance in the latest channel sample",
            ((lbl, r) for lbl, r, _ in chans),
        )
    )
    out.append(
        family(
            "lnflow_channel_active",
            "gauge",
            "1 when lnd reported the channel active",
            ((lbl, a) for lbl, _, a in chans),
        )
    )
    out.append(
        family(
            "lnflow_policy_changes_total",
            "counter",
            "Fee policy changes the policy engine recorded, by result",
            (
                (labels((("result", result),)), view.policy_changes.get(result, 0))
                for result in RESULTS
            ),
        )
    )
    return "".join(out)


class DaemonMetrics:
    """The endpoint, its state and its refresh jobs. Built by :meth:`start`."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._settings = settings.metrics
        self._engine = engine
        self.state = MetricsState(budget_bytes=settings.retention.max_db_mb * 1024 * 1024)
        self.registry = CollectorRegistry(auto_describe=False)  # the histograms
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
        self._server: MetricsServer | None = None
        self._refreshing = asyncio.Lock()
        self._loading: asyncio.Future[None] | None = None

    @classmethod
    def start(cls, settings: Settings, engine: Engine) -> DaemonMetrics | None:
        """Listen on ``[metrics] listen`` (validated with the settings); None when it is ""
        or cannot be bound (logged)."""
        where = settings.metrics.address
        if where is None:
            return None
        metrics = cls(settings, engine)
        host, port = where
        try:
            server = MetricsServer(host, port, metrics.render)
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
        metrics.state.set_store(store_bytes(engine), None)
        log.info("metrics_listening", listen=settings.metrics.listen)
        return metrics

    @property
    def listening(self) -> str | None:
        """``host:port`` the endpoint is bound to, None when it is off or failed to bind."""
        if self._server is None:
            return None
        host, _ = self._settings.address or ("", 0)
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self._server.port}"

    def attach(self, node_id: int, lnd_version: str, scheduler: AsyncIOScheduler) -> None:
        """lnd is connected: the refresh jobs start now (in the scheduler, so a large
        store's first row counts never hold up the HTLC subscription)."""
        from datetime import UTC, datetime

        self._node_id = node_id
        self.state.lnd_version = lnd_version
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

    def watch(
        self, store: StoreThread[StoreWriter], ingestor: Ingestor, recorder: Recorder
    ) -> None:
        """The HTLC stream is about to start: counters from the store's totals, then per
        batch. Call just before the recorder runs.

        The totals are read on the store thread, queued ahead of the recorder's first
        write: the subscription starts at once (events wait in the recorder's buffer,
        not in lnd, while a large store is summed), and every batch is either in the
        totals or observed after them, never both and never neither.
        """
        assert self._node_id is not None, "attach() first"
        node_id = self._node_id
        resolved_before = list(ingestor.tracker.resolved)

        def load() -> None:
            totals = self._totals(node_id)
            # attempts resolved by batches written before this point are in the totals
            already = [
                n - b for n, b in zip(ingestor.tracker.resolved, resolved_before, strict=True)
            ]
            self.state.start_totals(totals, ingestor.tracker.resolved, already)
            ingestor.observer = self.observe_batch

        self._loading = asyncio.ensure_future(store.call(load))
        self.state.stream_connected = recorder.connected.is_set

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
        size = await asyncio.to_thread(store_bytes, self._engine)
        self.state.set_store(size, rows)

    def _count_rows(self) -> dict[str, int]:
        with self._engine.connect() as conn:
            return metrics_read.table_rows(conn)

    def render(self) -> bytes:
        """One scrape: the state's text and the histograms (prometheus_client's)."""
        return self.state.render(time.time_ns()).encode() + generate_latest(self.registry)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
