"""The analytics commands of lnflowctl: opportunities, analyze, monitor, report, trend, export.

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
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lnflow.analysis.model import AnalysisReport, AnalysisSettings
from lnflow.domain import format_scid, parse_scid
from lnflow.errors import ConfigError, LnflowError, StoreError, UnknownChannelError
from lnflow.limits import ANALYSIS_RANGES
from lnflow.text import printable

from .jsondoc import ReportFileError, parse_iso_ns, report_from_doc, report_to_doc
from .render import CLASS_ABBREV, iso, msat_as_sats, opportunities_lines, table

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from lnflow.store.trend import TrendDay

__all__ = [
    "EXPORT_KINDS",
    "analysis_settings",
    "cmd_analyze",
    "cmd_export",
    "cmd_monitor",
    "cmd_opportunities",
    "cmd_report",
    "cmd_trend",
    "parse_since",
    "run_analysis",
]

NS = 1_000_000_000
EXPORT_KINDS = ("events", "attempts", "forwards", "opportunities")
NO_SNAPSHOT = (
    "no analysis yet: lnflowd writes one every 10 min; run `lnflowctl analyze` for a fresh one"
)


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def reading_engine(db_path: Path) -> Iterator[Engine]:
    """A read-only engine on the store, disposed after use."""
    from lnflow.store.db import open_readonly_engine

    engine = open_readonly_engine(db_path)
    try:
        yield engine
    finally:
        engine.dispose()


@contextlib.contextmanager
def reading(db_path: Path) -> Iterator[Connection]:
    """A read-only connection to the store, closed (and the engine disposed) after use."""
    with reading_engine(db_path) as engine, engine.connect() as conn:
        yield conn


def print_json(doc: object) -> None:
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_lines(lines: Sequence[str]) -> None:
    """Human output: every line made printable (lnflow.text), whatever it quotes."""
    sys.stdout.write("\n".join(printable(line) for line in lines) + "\n")


def analysis_settings(args: argparse.Namespace) -> AnalysisSettings:
    """The analysis thresholds, layered like lnflowd's: defaults, ``[analysis]`` of
    --config, ``LNFLOW_ANALYSIS__<KEY>`` variables, then the flags.

    The TOML is read with tomllib, not the daemon's config loader: lnflowctl
    stays free of pydantic and starts fast.
    """
    defaults = AnalysisSettings()
    values: dict[str, Any] = {}  # field name → int or float, checked by take()

    def take(name: str, value: object, where: str) -> None:
        kind = type(getattr(defaults, name))
        lo, hi = ANALYSIS_RANGES[name]  # the ranges lnflowd's settings check too
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = kind(value)
        # a whole number for an int threshold; nan and inf fail the range
        if isinstance(value, bool) or not isinstance(value, kind | int) or not lo <= value <= hi:
            what = "a whole number" if kind is int else "a number"
            raise ConfigError(
                f"{where} must be {what} from {_number(lo)} to {_number(hi)}, not {value!r}"
            )
        values[name] = kind(value)

    config: Path | None = getattr(args, "config", None)
    if config is not None:
        try:
            with config.expanduser().open("rb") as fh:
                section = tomllib.load(fh).get("analysis", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {config} is not valid TOML (not UTF-8 text): "
                "give the TOML file of config/lnflow.example.toml"
            ) from exc
        if not isinstance(section, dict):
            raise ConfigError(f"{config}: [analysis] must be a table of thresholds")
        for f in dataclasses.fields(AnalysisSettings):
            if f.name in section:
                take(f.name, section[f.name], f"{config}: [analysis].{f.name}")
    for f in dataclasses.fields(AnalysisSettings):
        env = f"LNFLOW_ANALYSIS__{f.name.upper()}"
        if os.environ.get(env):
            take(f.name, os.environ[env], env)
    if getattr(args, "min_failures", None) is not None:
        values["min_failure_count"] = args.min_failures
    if getattr(args, "min_missed_sats", None) is not None:
        values["min_missed_sats"] = args.min_missed_sats
    return AnalysisSettings(**values)


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def run_analysis(
    engine: Engine, db_path: Path, hours: int, settings: AnalysisSettings, now_ns: int
) -> AnalysisReport:
    """A fresh analysis of the ``hours`` before ``now_ns`` from the store."""
    from lnflow.store.read import analyze_store, node_id_of

    with engine.connect() as conn:
        node_id = node_id_of(conn)
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


def cmd_opportunities(args: argparse.Namespace, db_path: Path) -> int:
    """The latest snapshot lnflowd wrote (plain sqlite3: no SQLAlchemy to import)."""
    from lnflow.store.readonly import open_readonly
    from lnflow.store.snapshot_read import latest_report

    db = open_readonly(db_path)
    try:
        report = latest_report(db)
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


def cmd_analyze(args: argparse.Namespace, db_path: Path) -> int:
    """A fresh analysis of the last --hours from the store."""
    settings = analysis_settings(args)
    now = time.time_ns()
    with reading_engine(db_path) as engine:
        report = run_analysis(engine, db_path, args.hours, settings, now)
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


def cmd_report(args: argparse.Namespace, db_path: Path) -> int:
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
    conn: Connection, start: MonitorStart, after_event_id: int, now_ns: int
) -> LiveStats:
    """Events stored after ``after_event_id``, and the fees missed since ``start``.

    Counting by row id, not by event time, counts every event once even though the
    daemon writes in batches: an event stored late still shows in the next line.
    """
    from sqlalchemy import func, select

    from lnflow.analysis.classify import FailureClass, classify
    from lnflow.attempts import Outcome
    from lnflow.domain import EventKind, EventType
    from lnflow.store.queries import liveness
    from lnflow.store.schema import failure_clusters, forward_attempts, htlc_events

    t = htlc_events
    newest = int(conn.scalar(select(func.max(t.c.id))) or 0)
    fresh = (t.c.id > after_event_id, t.c.id <= newest)
    events = conn.scalar(select(func.count()).select_from(t).where(*fresh))
    counts = dict.fromkeys((cls.label for cls in FailureClass), 0)
    for wire, detail, n in conn.execute(
        select(t.c.wire_failure, t.c.failure_detail, func.count())
        .where(*fresh)
        .where(t.c.kind == int(EventKind.LINK_FAIL), t.c.event_type == int(EventType.FORWARD))
        .group_by(t.c.wire_failure, t.c.failure_detail)
    ):
        counts[classify(wire, detail).label] += int(n)
    fa = forward_attempts
    raw = conn.scalar(
        select(func.coalesce(func.sum(fa.c.missed_fee_msat), 0))
        .where(fa.c.id > start.attempt_id)
        .where(fa.c.outcome == int(Outcome.FAILED_LOCAL))
    )
    fc = failure_clusters
    dedup = conn.scalar(
        select(func.coalesce(func.sum(fc.c.missed_fee_msat), 0)).where(fc.c.id > start.cluster_id)
    )
    status = liveness(conn, now_ns)
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
    labels = {cls.label: abbrev for cls, abbrev in CLASS_ABBREV.items()}
    mix = ", ".join(f"{labels.get(k, k)} {v}" for k, v in stats.failures_by_class.items())
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


def cmd_monitor(args: argparse.Namespace, db_path: Path) -> int:
    """Live stats every --interval seconds, then the analysis of the monitored period."""
    from lnflow.store.db import open_readonly_engine

    settings = analysis_settings(args)
    interval = float(args.interval)
    start = time.time_ns()
    end = start + int(args.duration * 3600 * NS)
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
        cursor = began.event_id
        try:
            while True:
                now = time.time_ns()
                if now >= end:
                    break
                time.sleep(min(interval, (end - now) / NS))
                now = time.time_ns()
                with engine.connect() as conn:
                    stats = live_stats(conn, began, cursor, now)
                cursor = stats.last_event_id
                if args.json:
                    print(json.dumps(_live_doc(stats, now)), flush=True)
                else:
                    print(printable(_live_line(stats, now)), flush=True)
        except KeyboardInterrupt:
            if not args.json:
                print("\nstopped; analyzing the monitored period ...", flush=True)
        now = time.time_ns()
        hours = max(1, math.ceil((now - start) / (3600 * NS)))
        report = run_analysis(engine, db_path, hours, settings, now)
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
    labels = {cls.label: abbrev for cls, abbrev in CLASS_ABBREV.items()}
    mix = " ".join(f"{labels.get(k, k)} {v}" for k, v in day.failures_by_class.items() if v)
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


def cmd_trend(args: argparse.Namespace, db_path: Path) -> int:
    """Daily series of one channel."""
    from lnflow.store.trend import NS_PER_DAY, channel_known, channel_trend, first_day_held

    chan_id = channel_arg(args.channel)
    now = time.time_ns()
    with reading(db_path) as conn:
        if not channel_known(conn, chan_id):
            raise UnknownChannelError(
                f"channel {format_scid(chan_id)} ({chan_id}) is not in the store {db_path}: "
                "`lnflowctl opportunities` or `lnflowctl status` show what it holds"
            )
        # no more days than the store holds (at least today's)
        first = first_day_held(conn)
        held = 1 if first is None else max(1, (now - 1) // NS_PER_DAY - first + 1)
        days = min(args.days, held)
        rows = channel_trend(conn, chan_id, until_ns=now, days=days)
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


def cmd_export(args: argparse.Namespace, db_path: Path) -> int:
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
        header, rows = export_rows(conn, args.what, since)
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
