"""``lnflowctl``: read-only views of the lnflow store.

It never imports grpc and never needs node credentials: everything it shows
comes from the store the daemon writes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lnflow import __version__
from lnflow.errors import ConfigError, LnflowError, StoreError
from lnflow.limits import ANALYSIS_RANGES, MAX_SATS
from lnflow.store.engines import DbUrl, StoreLocation, location
from lnflow.text import printable

from .timefmt import ago as _ago
from .timefmt import iso

__all__ = ["iso", "main"]


# --------------------------------------------------------------------------- status


def _status(args: argparse.Namespace, db_path: StoreLocation) -> int:
    from lnflow.store.status_read import status_report

    now = time.time_ns()
    if isinstance(db_path, DbUrl):  # the same readers over a psycopg connection
        from lnflow.store.engines.postgresql import open_plain

        pg = open_plain(db_path)
        try:
            rep = status_report(pg, now, args.node_id)
            size = {"store_bytes": pg.store_bytes(), "wal_bytes": 0}
        finally:
            pg.close()
    else:
        from lnflow.store.readonly import open_readonly

        db = open_readonly(db_path)
        try:
            rep = status_report(db, now, args.node_id)
        finally:
            db.close()
        size = {"store_bytes": db_path.stat().st_size, "wal_bytes": _wal_bytes(db_path)}
    stale = not rep.daemon.running and rep.daemon.stopped_ns is None and rep.daemon.pid is not None
    # a silent daemon whose process lives: it cannot write the store (disk full, ...)
    alive = _process_alive(rep.daemon.pid) if stale and rep.daemon.pid is not None else None
    doc: dict[str, Any] = {
        "store": str(db_path),
        "daemon": {
            "running": rep.daemon.running,
            "alive_not_writing": alive is True,
            "pid": rep.daemon.pid,
            "started_at": iso(rep.daemon.started_ns),
            "heartbeat_at": iso(rep.daemon.heartbeat_ns),
            "stopped_at": iso(rep.daemon.stopped_ns),
            "lnd_state": rep.daemon.lnd_state,
            "last_error": rep.daemon.last_error,
        },
        "lnd": {
            "alias": rep.lnd.alias,
            "version": rep.lnd.version,
            "network": rep.lnd.network,
            "pubkey": rep.lnd.pubkey,
        },
        "stream": {
            "connected": rep.stream.connected,
            "state": rep.stream.state,
            "connected_since": iso(rep.stream.connected_since_ns),
            "sessions": rep.stream.sessions,
            "gaps": [{"from": iso(g.from_ns), "to": iso(g.to_ns)} for g in rep.stream.gaps],
        },
        "counts": {
            "htlc_events": rep.htlc_events,
            "attempts": rep.attempts,
            "forwards": rep.forwards,
            "channels": rep.channels,
            "open_channels": rep.open_channels,
        },
        "size": size,
        "metrics": {"listen": rep.metrics_listen},
        "alert_targets": [
            {
                "name": name,
                "last_delivery_at": iso(d.done_ns) if d else None,
                "ok": d.ok if d else None,
                "attempts": d.attempts if d else None,
                "error": d.error if d else None,
            }
            for name, d in rep.alert_targets.items()
        ],
    }
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    d = rep.daemon
    if d.running:
        daemon = f"running (pid {d.pid}, heartbeat {_ago(d.heartbeat_ns, now)})"
    elif d.stopped_ns is not None:
        daemon = f"stopped {_ago(d.stopped_ns, now)}"
    elif alive:
        daemon = (
            f"alive (pid {d.pid}) but cannot write the store: last heartbeat"
            f" {_ago(d.heartbeat_ns, now)} (disk full or store not writable? see its log)"
        )
    elif d.heartbeat_ns is not None:
        daemon = f"not responding (last heartbeat {_ago(d.heartbeat_ns, now)})"
    else:
        daemon = "never ran"
    lnd = (
        f"{rep.lnd.alias} ({rep.lnd.version}, {rep.lnd.network})"
        if rep.lnd.alias is not None
        else "not connected yet"
    )
    if d.last_error:
        lnd += f"  last error: {d.last_error}"
    if rep.stream.connected:
        stream = f"connected since {iso(rep.stream.connected_since_ns)}"
    else:
        stream = f"not connected ({rep.stream.state or 'idle'})"
    stream += f", {rep.stream.sessions} session{'s' if rep.stream.sessions != 1 else ''}"
    total = sum(rep.htlc_events.values())
    events = f"{total:,}  (" + ", ".join(f"{k} {v:,}" for k, v in rep.htlc_events.items()) + ")"
    attempts = (
        f"{sum(rep.attempts.values()):,}  ("
        + ", ".join(f"{k} {v:,}" for k, v in rep.attempts.items())
        + ")"
    )
    gaps = len(rep.stream.gaps)
    if gaps:
        last = rep.stream.gaps[-1]
        stream += f"; {gaps} gap{'s' if gaps != 1 else ''}, last from {iso(last.from_ns)}"
        stream += f" to {iso(last.to_ns)}" if last.to_ns else " (ongoing)"
    rows = [
        ("store", str(db_path)),
        ("size", f"{_mib(size['store_bytes'])} + WAL {_mib(size['wal_bytes'])}"),
        ("daemon", daemon),
        ("lnd", lnd),
        ("stream", stream),
        ("htlc events", events),
        ("attempts", attempts),
        ("forwards", f"{rep.forwards:,} in the ledger"),
        ("channels", f"{rep.open_channels:,} open, {rep.channels - rep.open_channels:,} closed"),
        ("metrics", f"http://{rep.metrics_listen}/metrics" if rep.metrics_listen else "off"),
    ]
    for name, dl in rep.alert_targets.items():
        if dl is None:
            shown = "no delivery yet"
        elif dl.ok:
            shown = f"ok {_ago(dl.done_ns, now)} ({iso(dl.done_ns)})"
        else:
            shown = f"FAILED {_ago(dl.done_ns, now)} ({iso(dl.done_ns)}) after {dl.attempts}"
            shown += f" tr{'ies' if dl.attempts != 1 else 'y'}: {dl.error or '?'}"
        rows.append(("alerts", f"{name}: {shown}"))
    if not rep.alert_targets:
        rows.append(("alerts", "no targets (alerts are only recorded: lnflowctl alerts)"))
    for label, value in rows:  # the alias, version and last error come from the node
        print(f"{label:<12} {printable(value)}")
    return 0


# --------------------------------------------------------------------------- nodes


def _nodes(args: argparse.Namespace, db_path: StoreLocation) -> int:
    """The nodes the store records, each with its daemon and stream (plain DB-API)."""
    from lnflow.store.engines import open_plain_store
    from lnflow.store.status_read import list_nodes, liveness

    from .nodes import nodes_doc, nodes_lines

    db = open_plain_store(db_path)
    now = time.time_ns()
    try:
        found = [(node, liveness(db, now, node.id)) for node in list_nodes(db)]
    finally:
        db.close()
    if args.json:
        json.dump(nodes_doc(found), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for line in nodes_lines(found, now):
        print(printable(line))
    return 0


def _process_alive(pid: int) -> bool | None:
    """Whether lnflowd still runs as ``pid`` on this host (None: cannot tell)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process (the lnflow service user): it exists
    except OSError:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # hidden (ProtectProc) or not Linux: trust the pid
    return b"lnflowd" in cmdline  # the pid may have been reused by another program


def _wal_bytes(path: Path) -> int:
    """Size of the store's WAL file (0 when there is none)."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size
    except OSError:
        return 0


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):,.1f} MiB"


# --------------------------------------------------------------------------- entry point


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command (``lnflowctl --db F status --json``)."""
    default = argparse.SUPPRESS if suppress else None
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=default,
        help="the store (default: LNFLOW_STORE__DB, [store].db of --config, "
        "$STATE_DIRECTORY/lnflow.db or ~/.lnflow/lnflow.db)",
    )
    common.add_argument(
        "--config",
        type=Path,
        default=default,
        help="lnflowd's TOML config file: its [store].db and [analysis] thresholds apply, "
        "and it is checked as lnflowd checks it",
    )
    common.add_argument(
        "--json", action="store_true", default=default or False, help="machine-readable output"
    )
    common.add_argument(
        "--node",
        default=default,
        metavar="ALIAS|PUBKEY",
        help="the node to show, of a store that records several (`lnflowctl nodes`); "
        "a store of one node needs none",
    )
    return common


# The range of every number lnflowctl takes (README "lnflowctl", docs/reliability.md).
# A window or a series longer than the store can hold only costs memory and time.
MAX_HOURS = 24 * 366  # analyze --hours, monitor --duration: as [analysis].window_hours
MAX_DAYS = 36_500  # trend --days, before it is clamped to the days the store holds
MAX_INTERVAL_S = 86_400.0  # monitor --interval
MIN_INTERVAL_S = 0.01
MAX_POLICY_U32 = 2**32 - 1  # whatif --fee-ppm, --base-fee-msat: uint32 in a channel_update


def _whole(unit: str, lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number of ``unit`` from ``lo`` to ``hi``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(
                f"must be a whole number of {unit} from {lo:,} to {hi:,}, not '{text}'"
            )
        return value

    return parse


def _number(unit: str, lo: float, hi: float, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a number of ``unit`` from ``lo`` (``above``: more than it) to ``hi``;
    inf and nan are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        low_ok = value > lo if above else value >= lo
        if not (low_ok and value <= hi):  # nan fails both comparisons
            start = f"more than {lo:,g}" if above else f"from {lo:,g}"
            raise argparse.ArgumentTypeError(
                f"must be a number of {unit} {start} to {hi:,g}, not '{text}'"
            )
        return value

    return parse


def _int_range(key: str) -> tuple[int, int]:
    """The range of an [analysis] whole-number key (lnflow.limits, as the loader checks it)."""
    lo, hi = ANALYSIS_RANGES[key]
    return int(lo), int(hi)


def _thresholds(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--min-failures",
        type=_whole("failures", *_int_range("min_failure_count")),
        metavar="N",
        help="report a channel from N local failures on (default 3, or [analysis] of --config)",
    )
    p.add_argument(
        "--min-missed-sats",
        type=_whole("sats", *_int_range("min_missed_sats")),
        metavar="N",
        help="report a channel from N missed sats on (default 100, or [analysis] of --config)",
    )


def _all_nodes(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--all-nodes",
        action="store_true",
        help=f"{what}, every node's opportunities ranked together with a node column",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lnflowctl",
        description="Read-only views of the lnflow store: status, opportunities, history.",
        parents=[_common(suppress=False)],
    )
    p.add_argument("--version", action="version", version=f"lnflowctl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub_common = _common(suppress=True)

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[sub_common], help=help, description=description)

    command(
        "status",
        "is the daemon alive, which node, stream state, stored rows",
        "Daemon liveness, LND identity, stream sessions and stored event counts.",
    )
    command(
        "nodes",
        "the nodes the store records, with their daemon and stream",
        "Each node lnflowd recorded into the store (one lnflowd per node): alias, pubkey, "
        "network, whether its daemon runs and its HTLC stream is connected.",
    )
    opportunities = command(
        "opportunities",
        "the latest opportunity snapshot lnflowd wrote",
        "The channels losing the most routing revenue, ranked, from the latest analysis "
        "snapshot lnflowd writes (every 10 min by default); with --json one object "
        "(docs/json.md), or null before the first snapshot.",
    )
    _all_nodes(opportunities, "each node's latest snapshot")
    analyze = command(
        "analyze",
        "a fresh analysis of the last N hours from the store",
        "Analyze the last --hours of recorded failures and forwards now, without waiting "
        "for lnflowd's next snapshot. Same output as `opportunities`.",
    )
    analyze.add_argument(
        "--hours",
        type=_whole("hours", 1, MAX_HOURS),
        default=24,
        metavar="N",
        help=f"window (default 24, at most {MAX_HOURS})",
    )
    analyze.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="also save the JSON document to FILE (render it later with `report FILE`)",
    )
    _thresholds(analyze)
    _all_nodes(analyze, "a fresh analysis of each node")
    monitor = command(
        "monitor",
        "live per-interval stats, then the analysis of the monitored period",
        "Every --interval seconds print the events, failures by class and missed fees "
        "lnflowd recorded; after --duration hours (or Ctrl-C) print the analysis of the "
        "monitored period. Reads the store only; lnflowd does the recording.",
    )
    monitor.add_argument(
        "--duration",
        type=_number("hours", 0, MAX_HOURS, above=True),
        default=24.0,
        metavar="HOURS",
        help=f"how long to monitor (default 24, at most {MAX_HOURS})",
    )
    monitor.add_argument(
        "--interval",
        type=_number("seconds", MIN_INTERVAL_S, MAX_INTERVAL_S),
        default=60.0,
        metavar="SECONDS",
        help=f"seconds between stat lines (default 60, {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g})",
    )
    _thresholds(monitor)
    report = command(
        "report",
        "render a JSON file saved by `analyze --output`",
        "Validate and render a report saved by `lnflowctl analyze --output FILE`.",
    )
    report.add_argument("file", type=Path, metavar="FILE", help="the saved JSON report")
    trend = command(
        "trend",
        "daily series of one channel",
        "Per UTC day: forwards, fees earned, local failures by class, missed fees, "
        "the urgency of that day's last snapshot and the local balance ratio.",
    )
    trend.add_argument("channel", metavar="CHANNEL", help="decimal SCID or BLOCKxTXxOUTPUT")
    trend.add_argument(
        "--days",
        type=_whole("days", 1, MAX_DAYS),
        default=30,
        metavar="N",
        help="days back (default 30; cut to the days the store holds)",
    )
    whatif = command(
        "whatif",
        "estimate what a proposed fee or max_htlc would have earned on one channel",
        "Replay the channel's last --hours of recorded forwards and fee / max_htlc "
        "failures against a proposed policy (fields not given stay as the channel has "
        "them) and estimate the fees per month before and after, with the counts behind "
        "them. An estimate: docs/policy.md lists what it assumes.",
    )
    whatif.add_argument("channel", metavar="CHANNEL", help="decimal SCID or BLOCKxTXxOUTPUT")
    whatif.add_argument(
        "--fee-ppm",
        type=_whole("ppm", 0, MAX_POLICY_U32),
        metavar="N",
        help="proposed fee rate (default: the channel's)",
    )
    whatif.add_argument(
        "--base-fee-msat",
        type=_whole("msat", 0, MAX_POLICY_U32),
        metavar="N",
        help="proposed base fee (default: the channel's)",
    )
    whatif.add_argument(
        "--max-htlc-msat",
        type=_whole("msat", 1, MAX_SATS * 1_000),
        metavar="N",
        help="proposed max_htlc (default: the channel's)",
    )
    whatif.add_argument(
        "--hours",
        type=_number("hours", 0, MAX_HOURS, above=True),
        default=24.0,
        metavar="H",
        help=f"the recorded window to replay (default 24, at most {MAX_HOURS})",
    )
    export = command(
        "export",
        "stream stored rows as CSV or JSON lines",
        "Write events, attempts, forwards or opportunities to stdout, oldest first.",
    )
    export.add_argument(
        "--what",
        required=True,
        choices=("events", "attempts", "forwards", "opportunities"),
        help="which rows",
    )
    export.add_argument(
        "--since",
        metavar="WHEN",
        help="ISO-8601 time or a duration back from now (24h, 7d); default: everything",
    )
    export.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        default="csv",
        help="csv (default) or jsonl; --json means jsonl",
    )
    alerts = command(
        "alerts",
        "the alerts lnflowd fired and their deliveries",
        "Alerts lnflowd fired ([alerts] in its config), oldest first: when a condition "
        "started or cleared, or a policy change, with each target's delivery outcome.",
    )
    alerts.add_argument(
        "--since",
        metavar="WHEN",
        help="ISO-8601 time or a duration back from now (24h, 7d); default: everything",
    )
    policy = command(
        "policy",
        "the policy engine's changes (history) and their measured effects",
        "history: every planned, applied, failed, rolled-back and reverted fee policy "
        "change lnflowd recorded; effects: each applied change's forwards, fees and "
        "failures in the --hours before and after it, with the revert verdict.",
    )
    policy.add_argument("view", choices=("history", "effects"))
    policy.add_argument("--channel", metavar="C", help="history of one channel (SCID)")
    policy.add_argument("--verbose", "-v", action="store_true", help="history: the reasons")
    policy.add_argument(
        "--hours",
        type=_number("hours", 0.001, MAX_HOURS),
        default=72.0,
        help="effects: window before and after each change (default 72, [policy] evaluate_hours)",
    )
    policy.add_argument(
        "--threshold-percent",
        type=_number("percent", 0, 100),
        default=20.0,
        help="effects: the revert threshold the verdict applies (default 20)",
    )
    policy.add_argument(
        "--min-forwards",
        type=_whole("forwards", 0, 1_000_000),
        default=10,
        help="effects: forwards needed in the before-window to judge (default 10)",
    )
    return p


def _opportunities(args: argparse.Namespace, db_path: StoreLocation) -> int:
    """The latest snapshot's table as lnflowd saved it (lnflow.cli.saved_table), without
    importing the analysis; JSON, --all-nodes and a run without a usable saved table go
    through lnflow.cli.commands, which renders the run from its rows."""
    if not args.json and not args.all_nodes:
        from lnflow.store.engines import open_plain_store

        from .saved_table import saved_table_lines

        db = open_plain_store(db_path)
        try:
            lines = saved_table_lines(db, args.node_id, time.time_ns())
        finally:
            db.close()
        if lines is not None:
            sys.stdout.write("\n".join(lines) + "\n")
            return 0
    from .commands import cmd_opportunities

    return cmd_opportunities(args, db_path)


def _command(name: str) -> Callable[[argparse.Namespace, StoreLocation], int]:
    if name == "status":
        return _status
    if name == "opportunities":
        return _opportunities
    if name == "nodes":
        return _nodes
    if name == "policy":
        from .policy_views import cmd_policy

        return cmd_policy
    from . import commands

    fn: Callable[[argparse.Namespace, StoreLocation], int] = getattr(commands, f"cmd_{name}")
    return fn


def _store_path(args: argparse.Namespace) -> StoreLocation:
    """The store to read: lnflowd's settings loader decides it (file < LNFLOW_* < --db);
    a file, or a PostgreSQL URL.

    With no --config file and no ``LNFLOW_*`` variable there is nothing to layer or
    check: the loader would return --db or the default path, so that is read directly,
    without importing pydantic (~0.2-0.4 s of start-up that `status` cannot afford).
    Flags that are thresholds are checked by the loader when the command reads them.
    """
    if getattr(args, "config", None) is None and not any(
        name.upper().startswith("LNFLOW_") for name in os.environ
    ):
        from lnflow.paths import default_db_path

        return location(args.db or "", default_db_path())
    from .commands import ctl_settings

    return ctl_settings(args).store.location


def _pick_node(args: argparse.Namespace, db_path: StoreLocation) -> None:
    """``args.node_id``: the store's node that --node names, or its only one (None: it
    records none yet). Several nodes and none named, or an unknown name: ConfigError.
    Read with plain sqlite3, as `status` is."""
    args.node_id = None
    if getattr(args, "all_nodes", False):
        if args.node is not None:
            raise ConfigError("--node and --all-nodes exclude each other: pass one of them")
        return
    if args.command in ("nodes", "report"):
        return
    from lnflow.store.engines import open_plain_store
    from lnflow.store.status_read import pick_node

    db = open_plain_store(db_path)
    try:
        node = pick_node(db, args.node, db_path)
    finally:
        db.close()
    args.node_id = None if node is None else node.id


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        db_path = _store_path(args)
        _pick_node(args, db_path)
        return _command(args.command)(args, db_path)
    except LnflowError as exc:
        print(f"lnflowctl: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, and keep Python's exit-time
        # flush of stdout from failing again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        # sqlite3 errors, bare (the plain-sqlite3 readers: opportunities) or wrapped by
        # SQLAlchemy (.orig): e.g. a store lnflowd has not upgraded yet (a table or
        # column it adds is missing), or one locked for longer than the busy timeout
        orig = exc if isinstance(exc, sqlite3.Error) else getattr(exc, "orig", None)
        if isinstance(db_path, DbUrl) and orig is not None:  # the server's, one line
            from lnflow.store.engines.postgresql import connect_error

            err = connect_error(exc, db_path)
            print(f"lnflowctl: error: {printable(str(err))}", file=sys.stderr)
            return err.exit_code
        if not isinstance(orig, sqlite3.Error):
            raise
        err = StoreError(f"cannot read the store {db_path} ({orig}): start lnflowd to upgrade it")
        print(f"lnflowctl: error: {printable(str(err))}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
