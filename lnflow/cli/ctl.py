"""``lnflowctl``: read-only views of the lnflow store.

It never imports grpc and never needs node credentials: everything it shows
comes from the store the daemon writes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lnflow import __version__
from lnflow.errors import LnflowError

__all__ = ["main"]


def iso(ts_ns: int | None) -> str | None:
    """ISO-8601 UTC with a Z, second precision; None stays None."""
    if ts_ns is None:
        return None
    dt = datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).replace(microsecond=0)
    return dt.isoformat().replace("+00:00", "Z")


def _ago(ts_ns: int | None, now_ns: int) -> str:
    if ts_ns is None:
        return "never"
    secs = max(0, (now_ns - ts_ns) // 1_000_000_000)
    if secs < 120:
        return f"{secs} s ago"
    if secs < 7200:
        return f"{secs // 60} min ago"
    return f"{secs // 3600} h ago"


# --------------------------------------------------------------------------- status


def _status(args: argparse.Namespace, db_path: Path) -> int:
    from lnflow.store.db import open_readonly_engine
    from lnflow.store.queries import status_report

    engine = open_readonly_engine(db_path)
    now = time.time_ns()
    try:
        with engine.connect() as conn:
            rep = status_report(conn, now)
    finally:
        engine.dispose()
    doc: dict[str, Any] = {
        "store": str(db_path),
        "daemon": {
            "running": rep.daemon.running,
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
        ("daemon", daemon),
        ("lnd", lnd),
        ("stream", stream),
        ("htlc events", events),
        ("attempts", attempts),
        ("forwards", f"{rep.forwards:,} in the ledger"),
        ("channels", f"{rep.open_channels:,} open, {rep.channels - rep.open_channels:,} closed"),
    ]
    for label, value in rows:
        print(f"{label:<12} {value}")
    return 0


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
        "--config", type=Path, default=default, help="read [store].db from this TOML file"
    )
    common.add_argument(
        "--json", action="store_true", default=default or False, help="machine-readable output"
    )
    return common


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lnflowctl",
        description="Read-only views of the lnflow store: status, opportunities, history.",
        parents=[_common(suppress=False)],
    )
    p.add_argument("--version", action="version", version=f"lnflowctl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub_common = _common(suppress=True)
    sub.add_parser(
        "status",
        parents=[sub_common],
        help="is the daemon alive, which node, stream state, stored rows",
        description="Daemon liveness, LND identity, stream sessions and stored event counts.",
    )
    return p


_COMMANDS = {"status": _status}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from lnflow.paths import resolve_db_path

    try:
        db_path = resolve_db_path(args.db, args.config)
        return _COMMANDS[args.command](args, db_path)
    except LnflowError as exc:
        print(f"lnflowctl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
