"""The analytics commands of lnflowctl: opportunities, analyze, monitor, report, trend, whatif,
export, alerts.

Each command is ``cmd_NAME(args, db_path) -> exit status``. They only read the
store (a read-only SQLite connection); the heavy imports (SQLAlchemy, the
analysis) happen inside the commands so ``lnflowctl --help`` stays instant.
Operator errors are :class:`~lnflow.errors.LnflowError` (one line, non-zero).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lnflow.analysis.model import AnalysisReport, AnalysisSettings
from lnflow.domain import NS_PER_HOUR, NS_PER_S, format_scid, parse_scid
from lnflow.errors import ConfigError, LnflowError, StoreError, UnknownChannelError
from lnflow.store.engines import StoreLocation
from lnflow.text import printable

from .jsondoc import ReportFileError, parse_iso_ns, report_from_doc, report_to_doc
from .render import CLASS_ABBREV, iso, msat_as_sats, opportunities_lines, table

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from lnflow.config import Settings
    from lnflow.policy.whatif import WhatIf
    from lnflow.store.status_read import NodeRow
    from lnflow.store.trend import TrendDay

__all__ = [
    "EXPORT_KINDS",
    "cmd_alerts",
    "cmd_analyze",
    "cmd_export",
    "cmd_monitor",
    "cmd_opportunities",
    "cmd_report",
    "cmd_trend",
    "cmd_whatif",
    "ctl_analysis_settings",
    "ctl_settings",
    "parse_since",
    "run_analysis",
]

NS = NS_PER_S
EXPORT_KINDS = ("events", "attempts", "forwards", "opportunities")
NO_SNAPSHOT = (
    "no analysis yet: lnflowd writes one every 10 min; run `lnflowctl analyze` for a fresh one"
)


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def reading_engine(db_path: StoreLocation) -> Iterator[Engine]:
    """A read-only engine on the store, disposed after use."""
    from lnflow.store.db import open_readonly_engine

    engine = open_readonly_engine(db_path)
    try:
        yield engine
    finally:
        engine.dispose()


@contextlib.contextmanager
def reading(db_path: StoreLocation) -> Iterator[Connection]:
    """A read-only connection to the store, closed (and the engine disposed) after use."""
    with reading_engine(db_path) as engine, engine.connect() as conn:
        yield conn


def print_json(doc: object) -> None:
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_lines(lines: Sequence[str]) -> None:
    """Human output: every line made printable (lnflow.text), whatever it quotes."""
    sys.stdout.write("\n".join(printable(line) for line in lines) + "\n")


def ctl_settings(args: argparse.Namespace) -> Settings:
    """lnflowctl's settings, through lnflowd's loader (:func:`lnflow.config.load_settings`):
    --config, ``LNFLOW_*`` variables, then the flags (--db, --min-failures,
    --min-missed-sats). A file or variable lnflowd refuses is refused here, in its words."""
    from lnflow.config import load_settings

    return load_settings(
        getattr(args, "config", None),
        {
            "store": {"db": getattr(args, "db", None)},
            "analysis": {
                "min_failure_count": getattr(args, "min_failures", None),
                "min_missed_sats": getattr(args, "min_missed_sats", None),
            },
        },
    )


def ctl_analysis_settings(args: argparse.Namespace) -> AnalysisSettings:
    """The analysis thresholds of :func:`ctl_settings` (``[analysis]``, its timing keys
    left out), as lnflowd's analysis job gets them."""
    from lnflow.config import analysis_settings as of_settings

    return of_settings(ctl_settings(args))


def run_analysis(
    engine: Engine,
    db_path: StoreLocation,
    hours: int,
    settings: AnalysisSettings,
    now_ns: int,
    node_id: int | None,
) -> AnalysisReport:
    """A fresh analysis of ``node_id``'s ``hours`` before ``now_ns`` from the store (None:
    the store records no node yet)."""
    from lnflow.store.read import analyze_store

    if node_id is None:
        raise StoreError(
            f"the store {db_path} has no node yet: lnflowd has not reached lnd "
            "(see `lnflowctl status`)"
        )
    return analyze_store(
        engine, node_id, until_ns=now_ns, hours=hours, settings=settings, generated_ns=now_ns
    )


def emit_report(report: AnalysisReport, as_json: bool, *, now_ns: int | None = None) -> None:
    if as_json:
        print_json(report_to_doc(report))
    else:
        print_lines(opportunities_lines(report, now_ns=now_ns))


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half a file.

    The file is private (0600): a report names channels, peers and balances.
    """
    path = path.expanduser()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a stale temporary file keeps its mode otherwise
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LnflowError(
            f"cannot write {path} ({exc.strerror or exc}): pick a writable --output path"
        ) from exc


# --------------------------------------------------------------------------- opportunities


def emit_fleet(
    reports: Sequence[tuple[NodeRow, AnalysisReport | None]],
    as_json: bool,
    *,
    now_ns: int | None = None,
) -> None:
    """``--all-nodes``: every node's opportunities ranked together (lnflow.cli.fleet)."""
    from .fleet import fleet_doc, fleet_lines

    if as_json:
        print_json(fleet_doc(reports))
    else:
        print_lines(fleet_lines(reports, now_ns=now_ns))


def _store_nodes(db_path: StoreLocation) -> list[NodeRow]:
    from lnflow.store.engines import open_plain_store
    from lnflow.store.status_read import list_nodes

    db = open_plain_store(db_path)
    try:
        found = list_nodes(db)
    finally:
        db.close()
    if not found:
        raise StoreError(
            f"the store {db_path} has no node yet: lnflowd has not reached lnd "
            "(see `lnflowctl status`)"
        )
    return found


def cmd_opportunities(args: argparse.Namespace, db_path: StoreLocation) -> int:
    """The latest snapshot lnflowd wrote (a plain connection: on SQLite, no SQLAlchemy
    to import)."""
    from lnflow.store.engines import open_plain_store
    from lnflow.store.snapshot_read import latest_report

    if args.all_nodes:
        nodes = _store_nodes(db_path)
        db = open_plain_store(db_path)
        try:
            reports = [(node, latest_report(db, node.id)) for node in nodes]
        finally:
            db.close()
        emit_fleet(reports, args.json, now_ns=time.time_ns())
        return 0
    db = open_plain_store(db_path)
    try:
        report = latest_report(db, args.node_id)  # None: the store's (it has no node yet)
    finally:
        db.close()
    now = time.time_ns()
    if report is None:
        if args.json:
            print_json(None)
        print(f"lnflowctl: {NO_SNAPSHOT}", file=sys.stderr if args.json else sys.stdout)
        return 0
    emit_report(report, args.json, now_ns=now)
    return 0


# --------------------------------------------------------------------------- analyze


def cmd_analyze(args: argparse.Namespace, db_path: StoreLocation) -> int:
    """A fresh analysis of the last --hours from the store."""
    settings = ctl_analysis_settings(args)
    now = time.time_ns()
    if args.all_nodes:
        if args.output is not None:
            raise ConfigError(
                "--output saves one node's report: pass --node ALIAS instead of --all-nodes"
            )
        nodes = _store_nodes(db_path)
        with reading_engine(db_path) as engine:
            reports: list[tuple[NodeRow, AnalysisReport | None]] = [
                (node, run_analysis(engine, db_path, args.hours, settings, now, node.id))
                for node in nodes
            ]
        emit_fleet(reports, args.json)
        return 0
    with reading_engine(db_path) as engine:
        report = run_analysis(engine, db_path, args.hours, settings, now, args.node_id)
    if args.output is not None:
        write_atomically(args.output, json.dumps(report_to_doc(report), indent=2) + "\n")
    emit_report(report, args.json)
    return 0


# --------------------------------------------------------------------------- report


def load_report_file(path: Path) -> AnalysisReport:
    path = path.expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportFileError(
            f"cannot read {path} ({exc.strerror or exc}): "
            "give a file written by `lnflowctl analyze --output`"
        ) from exc
    except UnicodeDecodeError as exc:  # binary, or not the UTF-8 `analyze --output` writes
        raise ReportFileError(
            f"{path} is not JSON (not UTF-8 text): "
            "give a file written by `lnflowctl analyze --output`"
        ) from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ReportFileError(
            f"{path} is not JSON ({exc}): give a file written by `lnflowctl analyze --output`"
        ) from exc
    return report_from_doc(doc, source=str(path))


def cmd_report(args: argparse.Namespace, db_path: StoreLocation) -> int:
    """Render a saved ``analyze --output`` file."""
    emit_report(load_report_file(args.file), args.json)
    return 0


# --------------------------------------------------------------------------- monitor


@dataclasses.dataclass(frozen=True, slots=True)
class LiveStats:
    """What ``monitor`` prints each interval (read from the store)."""

    last_event_id: int  # the newest htlc_events row seen: the next interval starts after it
    events: int  # HTLC events recorded in the interval
    failures_by_class: dict[str, int]  # local forward failures recorded in the interval
    missed_msat: int  # deduplicated, since the monitoring started
    missed_raw_msat: int
    daemon_running: bool
    stream_connected: bool
    stream_state: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class MonitorStart:
    """The newest row ids when monitoring began: later rows are the monitored period's.

    Row ids only grow, so "after this id" is an index range, where "since this time"
    would scan tables that have no time index (they are written in time order).
    """

    event_id: int
    attempt_id: int
    cluster_id: int


def monitor_start(conn: Connection) -> MonitorStart:
    from sqlalchemy import func, select

    from lnflow.store.schema import failure_clusters, forward_attempts, htlc_events

    return MonitorStart(
        event_id=int(conn.scalar(select(func.max(htlc_events.c.id))) or 0),
        attempt_id=int(conn.scalar(select(func.max(forward_attempts.c.id))) or 0),
        cluster_id=int(conn.scalar(select(func.max(failure_clusters.c.id))) or 0),
    )


def live_stats(
    conn: Connection,
    start: MonitorStart,
    after_event_id: int,
    now_ns: int,
    node_id: int | None = None,
) -> LiveStats:
    """Events stored after ``after_event_id``, and the fees missed since ``start``, of
    ``node_id`` (None: of the store, one node's).

    Counting by row id, not by event time, counts every event once even though the
    daemon writes in batches: an event stored late still shows in the next line.
    """
    from sqlalchemy import func, select

    from lnflow.analysis.classify import classify
    from lnflow.domain import EventKind, EventType, FailureClass, Outcome
    from lnflow.store.queries import liveness
    from lnflow.store.schema import failure_clusters, forward_attempts, htlc_events

    t = htlc_events
    newest = int(conn.scalar(select(func.max(t.c.id))) or 0)
    fresh = [t.c.id > after_event_id, t.c.id <= newest]
    fa, fc = forward_attempts, failure_clusters
    mine = [fa.c.outcome == int(Outcome.FAILED_LOCAL)]
    clusters = [fc.c.id > start.cluster_id]
    if node_id is not None:
        fresh.append(t.c.node_id == node_id)
        mine.append(fa.c.node_id == node_id)
        clusters.append(fc.c.node_id == node_id)
    events = conn.scalar(select(func.count()).select_from(t).where(*fresh))
    counts = dict.fromkeys((cls.label for cls in FailureClass), 0)
    for wire, detail, n in conn.execute(
        select(t.c.wire_failure, t.c.failure_detail, func.count())
        .where(*fresh)
        .where(t.c.kind == int(EventKind.LINK_FAIL), t.c.event_type == int(EventType.FORWARD))
        .group_by(t.c.wire_failure, t.c.failure_detail)
    ):
        counts[classify(wire, detail).label] += int(n)
    raw = conn.scalar(
        select(func.coalesce(func.sum(fa.c.missed_fee_msat), 0))
        .where(fa.c.id > start.attempt_id)
        .where(*mine)
    )
    dedup = conn.scalar(select(func.coalesce(func.sum(fc.c.missed_fee_msat), 0)).where(*clusters))
    status = liveness(conn, now_ns, node_id)
    return LiveStats(
        last_event_id=newest,
        events=int(events or 0),
        failures_by_class={k: v for k, v in counts.items() if v},
        missed_msat=int(dedup or 0),
        missed_raw_msat=int(raw or 0),
        daemon_running=status.daemon.running,
        stream_connected=status.stream.connected,
        stream_state=status.stream.state,
    )


def _live_line(stats: LiveStats, now_ns: int) -> str:
    fails = sum(stats.failures_by_class.values())
    mix = ", ".join(f"{CLASS_ABBREV.get(k, k)} {v}" for k, v in stats.failures_by_class.items())
    if not stats.daemon_running:
        stream = "lnflowd is not running: nothing new gets recorded"
    elif stats.stream_connected:
        stream = "stream connected"
    else:
        stream = f"stream {stats.stream_state or 'not connected'}"
    clock = (iso(now_ns) or "")[11:19]
    return (
        f"{clock}  {stats.events:,} events, {fails:,} local failures"
        f"{f' ({mix})' if mix else ''}; missed so far {msat_as_sats(stats.missed_msat)} sats "
        f"(raw {msat_as_sats(stats.missed_raw_msat)}); {stream}"
    )


def _live_doc(stats: LiveStats, now_ns: int) -> dict[str, Any]:
    return {
        "at": iso(now_ns),
        "events": stats.events,
        "failures": sum(stats.failures_by_class.values()),
        "failures_by_class": stats.failures_by_class,
        "missed_msat": stats.missed_msat,
        "missed_raw_msat": stats.missed_raw_msat,
        "daemon_running": stats.daemon_running,
        "stream_connected": stats.stream_connected,
    }


def cmd_monitor(args: argparse.Namespace, db_path: StoreLocation) -> int:
    """Live stats every --interval seconds, then the analysis of the monitored period."""
    from lnflow.store.db import open_readonly_engine

    settings = ctl_analysis_settings(args)
    interval = float(args.interval)
    engine = open_readonly_engine(db_path)
    try:
        if not args.json:
            print(
                printable(
                    f"monitoring {db_path} for {args.duration:g} h, a line every {interval:g} s "
                    "(Ctrl-C stops and analyzes)"
                ),
                flush=True,
            )
        with engine.connect() as conn:
            began = monitor_start(conn)
        # the period counts from the first snapshot, not from the store's opening: a
        # short --duration on a busy machine still gets its lines
        start = time.time_ns()
        end = start + int(args.duration * 3600 * NS)
        cursor = began.event_id
        try:
            while True:
                now = time.time_ns()
                if now >= end:
                    break
                time.sleep(min(interval, (end - now) / NS))
                now = time.time_ns()
                with engine.connect() as conn:
                    stats = live_stats(conn, began, cursor, now, args.node_id)
                cursor = stats.last_event_id
                if args.json:
                    print(json.dumps(_live_doc(stats, now)), flush=True)
                else:
                    print(printable(_live_line(stats, now)), flush=True)
        except KeyboardInterrupt:
            if not args.json:
                print("\nstopped; analyzing the monitored period ...", flush=True)
        now = time.time_ns()
        hours = max(1, math.ceil((now - start) / NS_PER_HOUR))
        report = run_analysis(engine, db_path, hours, settings, now, args.node_id)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report_to_doc(report)), flush=True)
    else:
        print()
        emit_report(report, False)
    return 0


# --------------------------------------------------------------------------- trend

TREND_COLUMNS = (
    "Day",
    "Forwards",
    "Fees (sats)",
    "Failures",
    "Missed (sats)",
    "Urgency",
    "Local ratio",
)


def _failures_cell(day: TrendDay) -> str:
    if not day.failures:
        return "0"
    mix = " ".join(f"{CLASS_ABBREV.get(k, k)} {v}" for k, v in day.failures_by_class.items() if v)
    return f"{day.failures:,} ({mix})" if mix else f"{day.failures:,}"


def _trend_row(day: TrendDay) -> list[str]:
    return [
        day.day,
        f"{day.forwards:,}",
        msat_as_sats(day.fees_msat, 3),
        _failures_cell(day),
        msat_as_sats(day.missed_msat, 3),
        "-" if day.urgency is None else str(day.urgency),
        "-" if day.local_ratio is None else f"{day.local_ratio:.2f}",
    ]


def _trend_doc(
    chan_id: int, days: int, requested: int, until_ns: int, rows: Sequence[TrendDay]
) -> dict[str, Any]:
    return {
        "channel_id": chan_id,
        "scid": format_scid(chan_id),
        "days": days,
        "days_requested": requested,
        "until": iso(until_ns),
        "series": [
            {
                "day": d.day,
                "forwards": d.forwards,
                "fees_msat": d.fees_msat,
                "failures": d.failures,
                "failures_by_class": dict(d.failures_by_class),
                "missed_msat": d.missed_msat,
                "missed_raw_msat": d.missed_raw_msat,
                "urgency": d.urgency,
                "local_ratio": d.local_ratio,
            }
            for d in rows
        ],
    }


def channel_arg(text: str) -> int:
    """A channel given as decimal SCID or BxTxO; bad syntax is an UnknownChannelError."""
    try:
        return parse_scid(text)
    except ValueError as exc:
        raise UnknownChannelError(str(exc)) from exc


def cmd_trend(args: argparse.Namespace, db_path: StoreLocation) -> int:
    """Daily series of one channel."""
    from lnflow.store.trend import NS_PER_DAY, channel_known, channel_trend, first_day_held

    chan_id = channel_arg(args.channel)
    now = time.time_ns()
    with reading(db_path) as conn:
        if not channel_known(conn, chan_id, args.node_id):
            raise UnknownChannelError(
                f"channel {format_scid(chan_id)} ({chan_id}) is not in the store {db_path}: "
                "`lnflowctl opportunities` or `lnflowctl status` show what it holds"
            )
        # no more days than the store holds (at least today's)
        first = first_day_held(conn, args.node_id)
        held = 1 if first is None else max(1, (now - 1) // NS_PER_DAY - first + 1)
        days = min(args.days, held)
        rows = channel_trend(conn, chan_id, until_ns=now, days=days, node_id=args.node_id)
    if args.json:
        print_json(_trend_doc(chan_id, days, args.days, now, rows))
        return 0
    cut = f" (--days {args.days} cut to the days the store holds)" if days < args.days else ""
    last = f"last {days} day{'s' if days != 1 else ''}"
    lines = [
        f"channel {format_scid(chan_id)} ({chan_id}), daily, {last} "
        f"to {(iso(now) or '')[:10]} (UTC){cut}",
        "",
        *table(TREND_COLUMNS, [_trend_row(d) for d in rows], (False, *([True] * 6))),
    ]
    if not rows:
        lines.append("(no activity recorded in these days)")
    print_lines(lines)
    return 0


# --------------------------------------------------------------------------- whatif


def _whatif_doc(w: WhatIf) -> dict[str, Any]:
    doc: dict[str, Any] = {"channel_id": w.chan_id, "scid": format_scid(w.chan_id)}
    doc["estimate"] = True
    doc["since"], doc["until"] = iso(w.since_ns), iso(w.until_ns)
    doc |= {k: v for k, v in dataclasses.asdict(w).items() if k not in ("chan_id",)}
    doc.pop("since_ns")
    doc.pop("until_ns")
    doc["fees_month_change_msat"] = w.fees_month_change_msat
    return doc


def _signed_sats(msat: int) -> str:
    return ("+" if msat >= 0 else "-") + msat_as_sats(abs(msat), 3)


def _whatif_lines(w: WhatIf) -> list[str]:
    def field(now: int | None, new: int | None, unit: str) -> str:
        def show(v: int | None) -> str:
            return "unknown" if v is None else f"{v:,} {unit}"

        return show(now) if now == new else f"{show(now)} -> {show(new)}"

    cls = (
        ("fee failures recovered", w.fee_failures_recovered, w.fee_clusters, w.fee_failures),
        (
            "max_htlc failures recovered",
            w.max_htlc_failures_recovered,
            w.max_htlc_clusters,
            w.max_htlc_failures,
        ),
    )
    lines = [
        f"channel {format_scid(w.chan_id)} ({w.chan_id}): what-if over the last {w.hours:g} h "
        f"to {iso(w.until_ns)} (an estimate)",
        "",
        f"  fee rate        {field(w.current_fee_rate_ppm, w.fee_rate_ppm, 'ppm')}",
        f"  base fee        {field(w.current_fee_base_msat, w.fee_base_msat, 'msat')}",
        f"  max_htlc        {field(w.current_max_htlc_msat, w.max_htlc_msat, 'msat')}",
        "",
        f"  fees per month  {msat_as_sats(w.fees_month_before_msat, 3)} -> "
        f"{msat_as_sats(w.fees_month_after_msat, 3)} sats "
        f"({_signed_sats(w.fees_month_change_msat)})",
        f"  in the window   {msat_as_sats(w.fees_before_msat, 3)} -> "
        f"{msat_as_sats(w.fees_after_msat, 3)} sats",
        "",
        f"  forwards repriced            {w.forwards_repriced:,} of {w.forwards:,} "
        f"({_signed_sats(w.repriced_delta_msat)} sats)",
    ]
    if w.forwards_over_max_htlc:
        lines.append(
            f"  forwards above the max_htlc  {w.forwards_over_max_htlc:,} "
            f"(-{msat_as_sats(w.lost_fees_msat, 3)} sats)"
        )
    for label, recovered, clusters, raw in cls:
        lines.append(
            f"  {label:<28} {recovered:,} of {clusters:,} payments "
            f"({raw:,} attempt{'s' if raw != 1 else ''})"
        )
    lines.append(f"  earned by the recovered      {msat_as_sats(w.recovered_fees_msat, 3)} sats")
    if w.served_anyway:
        lines.append(f"  settled anyway on a retry    {w.served_anyway:,} (not counted again)")
    if w.short_of_balance:
        lines.append(f"  short of local balance       {w.short_of_balance:,} (not recovered)")
    return lines


def cmd_whatif(args: argparse.Namespace, db_path: StoreLocation) -> int:
    """What a proposed policy would have earned over the channel's recorded window."""
    from lnflow.policy.whatif import estimate
    from lnflow.store.trend import channel_known

    chan_id = channel_arg(args.channel)
    now = time.time_ns()
    with reading(db_path) as conn:
        node_id = args.node_id
        if node_id is None or not channel_known(conn, chan_id, node_id):
            raise UnknownChannelError(
                f"channel {format_scid(chan_id)} ({chan_id}) is not in the store {db_path}: "
                "`lnflowctl opportunities` or `lnflowctl status` show what it holds"
            )
        result = estimate(
            conn,
            node_id=node_id,
            chan_id=chan_id,
            fee_ppm=args.fee_ppm,
            base_fee_msat=args.base_fee_msat,
            max_htlc_msat=args.max_htlc_msat,
            hours=args.hours,
            now_ns=now,
        )
    if args.json:
        print_json(_whatif_doc(result))
    else:
        print_lines(_whatif_lines(result))
    return 0


# --------------------------------------------------------------------------- export

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_since(text: str | None, now_ns: int) -> int:
    """``--since``: an ISO-8601 time (UTC unless it names a zone) or a duration before now
    (``90s``, ``30m``, ``24h``, ``7d``, ``2w``). None: everything (0)."""
    if text is None:
        return 0
    match = _DURATION.match(text)
    if match:
        back_s = float(match[1]) * _UNIT_S[match[2]]  # inf for a number too long for a float
        if back_s * NS >= now_ns:  # before 1970: everything
            return 0
        return now_ns - int(back_s * NS)
    try:
        return parse_iso_ns(text)
    except ValueError:
        raise ConfigError(
            f"--since '{text}' is neither an ISO-8601 time (2026-11-25T14:00:00Z) "
            "nor a duration (24h, 7d)"
        ) from None


def _json_value(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    return value


def cmd_export(args: argparse.Namespace, db_path: StoreLocation) -> int:
    """Stream rows to stdout as CSV or JSON lines."""
    from lnflow.store.export import EXPORTABLE, csv_cell, export_rows

    if args.what not in EXPORTABLE:
        raise ConfigError(
            f"cannot export '{args.what}': choose one of {', '.join(sorted(EXPORTABLE))}"
        )
    fmt = "jsonl" if args.json else args.format
    since = parse_since(args.since, time.time_ns())
    out = sys.stdout
    with reading(db_path) as conn:
        header, rows = export_rows(conn, args.what, since, node_id=args.node_id)
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
            for row in rows:
                writer.writerow([csv_cell(v) for v in row])
        else:
            dumps = json.dumps
            for row in rows:
                obj = {k: _json_value(v) for k, v in zip(header, row, strict=True)}
                out.write(dumps(obj) + "\n")
    out.flush()
    return 0


# --------------------------------------------------------------------------- alerts


def cmd_alerts(args: argparse.Namespace, db_path: StoreLocation) -> int:
    """The alerts lnflowd fired (oldest first) and how each was delivered."""
    from lnflow.store.alerts import alerts_since

    now = time.time_ns()
    since = parse_since(args.since, now)
    with reading(db_path) as conn:
        found = alerts_since(conn, since, node_id=args.node_id)
    if args.json:
        print_json(
            [
                {
                    "id": a.id,
                    "at": iso(a.fired_ns),
                    "kind": a.kind,
                    "state": a.phase,
                    "subject": a.subject,
                    "title": a.title,
                    "message": a.message,
                    "detail": a.detail,
                    "deliveries": [
                        {
                            "target": d.target,
                            "at": iso(d.done_ns),
                            "ok": d.ok,
                            "attempts": d.attempts,
                            "error": d.error,
                        }
                        for d in a.deliveries
                    ],
                }
                for a in found
            ]
        )
        return 0
    if not found:
        print("no alerts" + (" in that time" if args.since else " recorded yet"))
        return 0
    lines = []
    for a in found:
        sent = ", ".join(
            f"{d.target} " + ("ok" if d.ok else f"failed ({d.error or '?'})") for d in a.deliveries
        )
        lines.append(f"{iso(a.fired_ns)}  {a.phase:<5}  {a.title}")
        lines.append(f"    {a.message}")
        if sent:
            lines.append(f"    sent: {sent}")
    print_lines(lines)
    return 0
