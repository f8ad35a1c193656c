"""``lnflowctl policy history | effects``: the policy engine's record, read-only.

``history`` lists every planned, applied, failed, rolled-back and reverted change
(``policy_changes``); ``effects`` measures each applied change over the same-length
windows before and after it (:mod:`lnflow.policy.effects`) and shows the revert
verdict the daemon would reach, or the one it recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lnflow.domain import format_scid, parse_scid
from lnflow.errors import ConfigError
from lnflow.store.engines import StoreLocation, open_plain_store, plain_connection
from lnflow.store.policy_history import ChangeRow, changes

from .commands import print_lines, reading
from .render import iso, msat_as_sats

__all__ = ["cmd_policy"]


def _fields(row: ChangeRow) -> str:
    parts = [f"{name} {old} → {new}" for name, old, new in row.changed_fields()]
    return ", ".join(parts) or "no field"


def history_line(row: ChangeRow) -> str:
    undo = f" (undoes {row.undoes_id})" if row.undoes_id is not None else ""
    error = f": {row.error}" if row.error else ""
    section = f" [{row.section}]" if row.section else ""
    return (
        f"#{row.id} run {row.run_id} {(iso(row.created_ns) or '')[:19]}"
        f" {format_scid(row.chan_id)}{section} {row.strategy}: {_fields(row)}"
        f" — {row.result}{undo}{error}"
    )


def _doc(row: ChangeRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "run_id": row.run_id,
        "created": iso(row.created_ns),
        "chan_id": row.chan_id,
        "section": row.section,
        "strategy": row.strategy,
        "fields": {n: {"before": b, "after": a} for n, b, a in row.changed_fields()},
        "snapshot_run_id": row.snapshot_run_id,
        "reason": row.reason,
        "result": row.result,
        "error": row.error,
        "applied": iso(row.applied_ns) if row.applied_ns else None,
        "undoes_id": row.undoes_id,
    }


def _history(args: argparse.Namespace, db_path: StoreLocation) -> int:
    chan = None
    if args.channel:
        try:
            chan = parse_scid(args.channel)
        except ValueError as exc:
            raise ConfigError(f"--channel {args.channel}: {exc}") from exc
    db = open_plain_store(db_path)
    try:
        rows = changes(db, node_id=args.node_id, chan_id=chan)
    finally:
        db.close()
    if args.json:
        json.dump([_doc(r) for r in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    lines = [history_line(r) for r in rows]
    if args.verbose:
        lines = [x for r in rows for x in (history_line(r), f"    why: {r.reason}")]
    print_lines(lines or ["no policy change recorded"])
    return 0


def _effects(args: argparse.Namespace, db_path: StoreLocation) -> int:
    from lnflow.policy.effects import measure, verdict

    lines: list[str] = []
    with reading(db_path) as conn:
        rows = changes(plain_connection(conn), node_id=args.node_id, results=("applied",))
        for row in rows:
            assert row.applied_ns is not None
            eff = measure(
                conn,
                node_id=row.node_id,
                chan_id=row.chan_id,
                at_ns=row.applied_ns,
                hours=args.hours,
            )
            b, a = eff.before, eff.after
            judged = verdict(
                eff, threshold_percent=args.threshold_percent, min_forwards=args.min_forwards
            )
            lines += [
                f"#{row.id} {format_scid(row.chan_id)} {_fields(row)}"
                f" (applied {(iso(row.applied_ns) or '')[:19]}), {args.hours:g} h before → after:",
                f"    forwards out {b.forwards_out} → {a.forwards_out},"
                f" fees out {msat_as_sats(b.fees_out_msat)} → {msat_as_sats(a.fees_out_msat)} sats,"
                f" fees in {msat_as_sats(b.fees_in_msat)} → {msat_as_sats(a.fees_in_msat)} sats",
                f"    local failures {b.failures} → {a.failures}, missed"
                f" {msat_as_sats(b.missed_msat)} → {msat_as_sats(a.missed_msat)} sats",
                f"    {judged.reason}",
            ]
    print_lines(lines or ["no applied policy change to measure"])
    return 0


def cmd_policy(args: argparse.Namespace, db_path: StoreLocation) -> int:
    if args.view == "history":
        return _history(args, db_path)
    return _effects(args, db_path)
