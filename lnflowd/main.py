"""``lnflowd``: the recording daemon's command line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from pathlib import Path
from typing import Any

from lnflow import __version__
from lnflow.errors import LnflowError
from lnflow.settings import Settings, SettingsChild
from lnflow.text import printable

from .memory import fix_malloc_thresholds, limit_malloc_arenas

__all__ = ["main"]

# gRPC's C core writes its own INFO lines (e.g. every failed TLS handshake) to stderr;
# lnflowd reports those failures itself, once, in one line. grpc runs in the lnd gateway
# process (lnflow.lnd.gateway), which inherits this environment.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lnflowd",
        description="Record every HTLC event of an LND node into the lnflow store.",
        epilog="lnflowd policy {check,plan,apply,rollback}: the fee policy engine (see"
        " lnflowd policy --help); lnflowd copy-store --from PATH --to URL: copy a SQLite"
        " store into PostgreSQL (see lnflowd copy-store --help)",
    )
    p.add_argument("--config", type=Path, help="TOML config file (see config/lnflow.example.toml)")
    p.add_argument("--lnddir", help="lnd's directory (default ~/.lnd)")
    p.add_argument(
        "--network",
        help="mainnet, testnet, testnet4, signet, regtest or simnet (default mainnet)",
    )
    p.add_argument("--rpcserver", help="lnd gRPC host:port (default localhost:10009)")
    p.add_argument("--tlscertpath", help="lnd's tls.cert (default <lnddir>/tls.cert)")
    p.add_argument(
        "--macaroonpath",
        help="macaroon file (default <lnddir>/data/chain/bitcoin/<network>/readonly.macaroon)",
    )
    p.add_argument(
        "--db",
        help="the store: a SQLite file (default $STATE_DIRECTORY or ~/.lnflow/lnflow.db) or"
        " postgresql+psycopg://USER@HOST/DB",
    )
    p.add_argument("--manage-url", help="lnd-manageJ base URL for enrichment (optional)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    p.add_argument(
        "--check",
        action="store_true",
        help="connect once, print the node's alias, version and network, and exit",
    )
    p.add_argument("--version", action="version", version=f"lnflowd {__version__}")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "lnd": {
            "lnddir": args.lnddir,
            "network": args.network,
            "rpcserver": args.rpcserver,
            "tlscertpath": args.tlscertpath,
            "macaroonpath": args.macaroonpath,
        },
        "store": {"db": args.db},
        "manage": {"url": args.manage_url},
        "log": {"level": args.log_level, "format": args.log_format},
    }


async def _check(settings: Settings) -> int:
    from lnflow.lnd import LndClient

    from .daemon import credentials_from

    async with LndClient(credentials_from(settings), timeout_s=settings.lnd.timeout_s) as client:
        info, version = await client.check()
    # the node's own words: its alias is whatever its operator set
    print(f"alias:   {printable(info.alias)}")
    print(f"version: {printable(version.version)}")
    print(f"network: {printable(info.network)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    limit_malloc_arenas()  # before any thread starts (bench/README.md: memory)
    fix_malloc_thresholds()
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["policy"]:
        from .policy_cmd import policy_main

        return policy_main(given[1:])
    if given[:1] == ["copy-store"]:
        from .copy_store import copy_main

        return copy_main(given[1:])
    args = _parser().parse_args(argv)
    try:
        # validated by lnflow.config in a child: pydantic stays out of this process;
        # the daemon's modules load meanwhile (bench/README.md: start-up)
        child = SettingsChild(args.config, _overrides(args))
        if args.check:
            import lnflow.lnd  # noqa: F401
        else:
            from . import daemon  # noqa: F401
        settings = child.result()
        if args.check:
            return asyncio.run(_check(settings))
        if settings.policy.mode != "off":  # a bad rules file stops the start, in one line
            from lnflow.policy.runner import rules_of

            rules_of(settings)
        from .logs import configure_logging

        configure_logging(settings.log.level, settings.log.format)
        return asyncio.run(_run(settings))
    except LnflowError as exc:
        print(f"lnflowd: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


async def _run(settings: Settings) -> int:
    from .daemon import Daemon

    _tune_gc()
    return await Daemon(settings).run()


def _tune_gc() -> None:
    """Fewer, cheaper cyclic-GC passes for the recording hot path.

    Events and attempts live for a batch (thousands of objects), so with the default
    thresholds they reach the oldest generation and trigger full collections that walk
    every module, SQLAlchemy and protobuf object loaded at start-up (bench/ingest, 20 s:
    3.6 s inside collections while the process used 10.7 s of CPU; 0.7 s after).
    Freezing start-up's objects takes them out of those walks; a larger first threshold
    collects less often. Almost nothing per event is cyclic (reference counting frees
    it), so memory does not grow.
    """
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)


if __name__ == "__main__":
    sys.exit(main())
