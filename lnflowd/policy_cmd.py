"""``lnflowd policy check | plan | apply | rollback``: the fee policy engine by hand.

``check`` loads the rules file; ``plan`` reads lnd (the read-only macaroon) and the
store and prints what would change, writing nothing; ``apply`` does what plan shows
through ``UpdateChannelPolicy`` with the policy macaroon (offchain:write) and records
every change; ``rollback`` restores the recorded "before" values.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from lnflow.cli.render import msat_as_sats
from lnflow.config import load_settings, plain
from lnflow.domain import format_scid
from lnflow.errors import ConfigError, LnflowError
from lnflow.lnd import LndClient
from lnflow.policy import runner
from lnflow.policy.engine import (
    ApplyReport,
    Outcome,
    Plan,
    apply_plan,
    plan_doc,
    rollback,
)
from lnflow.policy.runner import (
    make_plan,
    open_history,
    policy_credentials,
    read_credentials,
    rules_of,
)
from lnflow.settings import Settings
from lnflow.text import printable

__all__ = ["plan_lines", "policy_main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lnflowd policy",
        description="Plan, apply and roll back fee policy changes (docs/policy.md).",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML config file")
    common.add_argument("--rules", type=Path, help="rules file (default: [policy] file)")
    common.add_argument("--lnddir")
    common.add_argument("--network")
    common.add_argument("--rpcserver")
    common.add_argument("--tlscertpath")
    common.add_argument("--macaroonpath", help="read-only macaroon (plan)")
    common.add_argument(
        "--policy-macaroonpath", help="macaroon with offchain:write (apply, rollback)"
    )
    common.add_argument(
        "--db", help="the store: a SQLite file or postgresql+psycopg://USER@HOST/DB"
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("check", parents=[common], help="load and validate the rules file")
    plan = sub.add_parser("plan", parents=[common], help="what would change (writes nothing)")
    plan.add_argument("--json", action="store_true")
    apply = sub.add_parser("apply", parents=[common], help="apply the plan")
    apply.add_argument("--yes", action="store_true", help="do not ask")
    rb = sub.add_parser("rollback", parents=[common], help="restore recorded 'before' values")
    what = rb.add_mutually_exclusive_group(required=True)
    what.add_argument("change_id", nargs="?", type=int, help="a change id (policy history)")
    what.add_argument("--run", type=int, help="every applied change of this run")
    return p


def _settings(args: argparse.Namespace) -> Settings:
    return plain(
        load_settings(
            args.config,
            {
                "lnd": {
                    "lnddir": args.lnddir,
                    "network": args.network,
                    "rpcserver": args.rpcserver,
                    "tlscertpath": args.tlscertpath,
                    "macaroonpath": args.macaroonpath,
                },
                "store": {"db": args.db},
                "policy": {
                    "file": str(args.rules) if args.rules else None,
                    "macaroonpath": args.policy_macaroonpath,
                },
            },
        )
    )


def plan_lines(plan: Plan) -> list[str]:
    lines = []
    for d in plan.changes:
        assert d.before is not None
        lines.append(
            f"{format_scid(d.chan_id)}  [{printable(', '.join(d.sections))}]"
            f" {d.strategy.value if d.strategy else ''}: {printable(d.change.describe(d.before))}"
        )
        lines.append(f"    why: {printable(d.reason)}")
        if d.chan_id in plan.whatif:
            before, after = plan.whatif[d.chan_id]
            lines.append(
                f"    what-if (estimate): fees per month {msat_as_sats(before)}"
                f" → {msat_as_sats(after)} sats"
            )
    for r in plan.refusals:
        lines.append(f"{format_scid(r.decision.chan_id)}  refused: {printable(r.reason)}")
    unchanged = sum(not d.changed for d in plan.decisions)
    lines.append(
        f"{len(plan.changes)} change(s), {len(plan.refusals)} refused, {unchanged} unchanged"
        f" (snapshot run {plan.evidence.snapshot_run_id or 'none'})"
    )
    return lines


def _outcome_line(o: Outcome) -> str:
    what = o.result if o.error is None else f"{o.result}: {o.error}"
    return f"{format_scid(o.chan_id)}  change {o.change_id} {printable(what)}"


def _finish(report: ApplyReport, verb: str) -> int:
    if report.stopped is not None:
        print(f"lnflowd: error: {printable(report.stopped)}", file=sys.stderr)
    print(
        f"run {report.run_id}: {report.applied} {verb}, {report.failed} failed"
        " (lnflowctl policy history)"
    )
    return 1 if report.stopped is not None or report.failed else 0


async def _plan(settings: Settings, as_json: bool) -> int:
    rules = rules_of(settings)
    async with LndClient(read_credentials(settings), timeout_s=settings.lnd.timeout_s) as lnd:
        plan = await make_plan(settings, rules, lnd)
    if as_json:
        print(json.dumps(plan_doc(plan), indent=2))
    else:
        print("\n".join(plan_lines(plan)))
    return 0


async def _apply(settings: Settings, yes: bool) -> int:
    rules = rules_of(settings)
    async with LndClient(read_credentials(settings), timeout_s=settings.lnd.timeout_s) as lnd:
        plan = await make_plan(settings, rules, lnd)
    print("\n".join(plan_lines(plan)))
    if not plan.changes:
        return 0
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError("not asking without a terminal: pass --yes to apply")
        if input(f"apply {len(plan.changes)} change(s)? [y/N] ").strip().lower() != "y":
            return 0
    node_id = runner.node_id(settings, plan.node.info)
    with open_history(settings) as db:
        async with LndClient(
            policy_credentials(settings), timeout_s=settings.lnd.timeout_s
        ) as writer:
            writer.version = plan.node.version
            report = await apply_plan(
                plan, writer, db, node_id, on_result=lambda o: print(_outcome_line(o))
            )
    return _finish(report, "applied")


async def _rollback(settings: Settings, change_id: int | None, run_id: int | None) -> int:
    with open_history(settings) as db:
        async with LndClient(
            policy_credentials(settings), timeout_s=settings.lnd.timeout_s
        ) as writer:
            await writer.get_version()
            report = await rollback(
                writer,
                db,
                change_ids=() if change_id is None else (change_id,),
                run_id=run_id,
                on_result=lambda o: print(_outcome_line(o)),
            )
    return _finish(report, "rolled back")


def policy_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        if args.action == "check":
            rules = rules_of(settings)
            finals = sum(s.final for s in rules.sections)
            default = "with" if rules.default else "without"
            print(
                f"{printable(rules.source)}: {len(rules.sections)} section(s),"
                f" {finals} final, {default} [default]: ok"
            )
            return 0
        if args.action == "plan":
            return asyncio.run(_plan(settings, args.json))
        if args.action == "apply":
            return asyncio.run(_apply(settings, args.yes))
        return asyncio.run(_rollback(settings, args.change_id, args.run))
    except LnflowError as exc:
        print(f"lnflowd: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
