"""``lnflow-sim``: a simulated LND node (gRPC, TLS, macaroons) for tests, demos and benchmarks.

    lnflow-sim --lnddir DIR [--port 10009] [--network regtest] [--channels 8] [--seed 1]
               [--rate 20] [--script FILE.jsonl] [--lnd-version 0.18.3] [--alias NAME]
               [--history N] [--event-log FILE]

Writes ``DIR/tls.cert``, ``DIR/tls.key`` and the macaroons in lnd's layout (reused
when present), then ``DIR/sim.json`` once it listens. SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from lnflow.domain import LndVersion
from lnflow.sim.credentials import ensure_macaroons, ensure_tls, write_json_atomic
from lnflow.sim.hub import EventLog, Hub
from lnflow.sim.model import GOSSIP_DELAY_S, TrafficParams, preload_history
from lnflow.sim.runner import Driver
from lnflow.sim.script import ChannelOp, Op, parse_script, split_setup
from lnflow.sim.server import MacaroonInterceptor, SimServicer, rpc_handlers
from lnflow.sim.state import NodeState, model_channels, parse_version

__all__ = ["SimConfig", "main", "serve"]

log = logging.getLogger("lnflow.sim")

_MAX_MSG = 200 * 1024 * 1024  # lnd's MaxGrpcMsgSize
_SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),  # a second sim on the same port must fail, not share it
    ("grpc.max_send_message_length", _MAX_MSG),
    ("grpc.max_receive_message_length", _MAX_MSG),
]


def ping_policy(version: LndVersion, scale: float = 1.0) -> list[tuple[str, int]]:
    """lnd's gRPC keepalive, as grpc C-core server options (times divided by ``scale``).

    lnd >= 0.17 (lnd.go): pings an idle client after 1 min (20 s timeout) and lets
    clients ping every 5 s, not without a stream. Before 0.17 lnd set nothing, so
    grpc-go's defaults applied: the server pings after 2 h, and a client ping less
    than 5 min after the previous one is a strike unless the server sent data in
    between; the third strike ends the connection with GOAWAY "too_many_pings".
    ``scale`` (hidden ``--ping-scale``, for tests) shortens every interval alike,
    so the same ratios are proven in less time.
    """

    def ms(seconds: float) -> int:
        return max(1, round(seconds * 1000 / scale))

    if version.has_ping_policy:
        return [
            ("grpc.keepalive_time_ms", ms(60)),
            ("grpc.keepalive_timeout_ms", ms(20)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", ms(5)),
            ("grpc.http2.max_ping_strikes", 2),
        ]
    return [
        ("grpc.keepalive_time_ms", ms(2 * 3600)),
        ("grpc.keepalive_timeout_ms", ms(20)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", ms(5 * 60)),
        ("grpc.http2.max_ping_strikes", 2),
    ]


DEFAULT_VERSION = parse_version("0.18.3")


@dataclass(frozen=True, slots=True)
class SimConfig:
    lnddir: Path
    port: int = 10009
    network: str = "regtest"
    channels: int = 8
    seed: int = 1
    rate: float = 20.0
    ops: tuple[Op, ...] | None = None  # a script replaces the traffic model
    version: LndVersion = DEFAULT_VERSION
    alias: str = "lnflow-sim"
    history: int = 0
    event_log: Path | None = None
    reject_htlc: bool = False  # lnd's rejecthtlc: the model refuses every forward
    ping_scale: float = 1.0
    gossip_delay_s: float = GOSSIP_DELAY_S


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lnflow-sim",
        description="Simulated LND node: lnd's gRPC API over TLS with macaroons, "
        "driven by a seeded traffic model or a JSONL script (docs/sim-script.md).",
    )
    p.add_argument("--lnddir", required=True, type=Path, help="lnd-style directory to use")
    p.add_argument("--port", type=int, default=10009, help="gRPC port (0: pick a free one)")
    p.add_argument("--network", default="regtest", help="network name (default: regtest)")
    p.add_argument("--channels", type=int, default=8, help="channels of the model node")
    p.add_argument("--seed", type=int, default=1, help="seed of everything simulated")
    p.add_argument("--rate", type=float, default=20.0, help="HTLC events per second")
    p.add_argument("--script", type=Path, help="JSONL script to run instead of the model")
    p.add_argument("--lnd-version", default="0.18.3", help="lnd version to behave like")
    p.add_argument("--alias", default="lnflow-sim", help="node alias")
    p.add_argument("--history", type=int, default=0, help="settled forwards to preload")
    p.add_argument("--event-log", type=Path, help="append every event sent (JSON lines)")
    p.add_argument(
        "--rejecthtlc",
        action="store_true",
        help="like lnd's rejecthtlc: the model fails every forward (FORWARDS_DISABLED)",
    )
    p.add_argument(
        "--gossip-delay",
        type=float,
        default=GOSSIP_DELAY_S,
        metavar="S",
        help="seconds after a policy change during which half the senders still pay the "
        "previous fee (default %(default)s; 0: every sender knows the new policy at once)",
    )
    # tests only: divide the keepalive policy's intervals (see ping_policy)
    p.add_argument("--ping-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    return p


def _config(args: argparse.Namespace) -> SimConfig:
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port {args.port} is not a port number")
    if not args.ping_scale > 0:
        raise ValueError("--ping-scale must be positive")
    if args.channels < 0 or args.history < 0 or args.rate < 0 or not args.gossip_delay >= 0:
        raise ValueError("--channels, --history, --rate and --gossip-delay must not be negative")
    if args.event_log is not None and not args.event_log.parent.is_dir():
        raise ValueError(f"--event-log: no directory {args.event_log.parent}")
    ops = None
    if args.script is not None:
        ops = tuple(parse_script(args.script.read_text(encoding="utf-8")))
    return SimConfig(
        lnddir=args.lnddir,
        port=args.port,
        network=args.network,
        channels=args.channels,
        seed=args.seed,
        rate=args.rate,
        ops=ops,
        version=parse_version(args.lnd_version),
        alias=args.alias,
        history=args.history,
        event_log=args.event_log,
        reject_htlc=args.rejecthtlc,
        ping_scale=args.ping_scale,
        gossip_delay_s=args.gossip_delay,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = _config(args)
    except (ValueError, OSError) as exc:
        print(f"lnflow-sim: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s lnflow-sim %(message)s"
    )
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(serve(cfg))


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed, else None (asyncio's own).

    Each streamed event costs the simulator a gRPC write whose completion comes back
    through the event loop; uvloop's shorter round trips raise what one subscriber
    can be sent (bench/README.md, "Recording rate").
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def build_node(cfg: SimConfig, now_ns: int) -> NodeState:
    """The node's identity and, unless the script defines channels, the model channels."""
    node = NodeState(cfg.seed, cfg.version, cfg.alias, cfg.network, start_ns=now_ns)
    if not any(isinstance(op, ChannelOp) for op in cfg.ops or ()):
        node.channels = {c.chan_id: c for c in model_channels(cfg.channels, cfg.seed)}
    return node


async def serve(cfg: SimConfig) -> int:
    """Run the node until SIGTERM/SIGINT; returns the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    now = time.time_ns()
    node = build_node(cfg, now)
    hub = Hub(cfg.version)
    params = TrafficParams(reject_htlc=cfg.reject_htlc, gossip_delay_s=cfg.gossip_delay_s)
    driver = Driver(node, hub, cfg.seed, params)
    setup, rest = split_setup(list(cfg.ops or ()))
    for op in setup:  # channels and ledger exist before the first client connects
        await driver.run(op)
    preload_history(node, cfg.history, now, cfg.seed)
    # The model's events live until written (and in the replay buffer), so with the
    # default thresholds they reach the oldest generation and trigger full collections
    # over the growing ledger (bench/ingest: 2.3 s of 18 s CPU in 20 s; 0.35 s after), on
    # the thread that also writes the streams. Nothing per event is cyclic.
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)

    sim_json = cfg.lnddir / "sim.json"
    sim_json.unlink(missing_ok=True)
    event_log = EventLog(cfg.event_log) if cfg.event_log else None
    server, port = _listen(cfg, SimServicer(node, hub, event_log))
    if server is None:
        print(f"lnflow-sim: cannot listen on 127.0.0.1:{cfg.port} (in use?)", file=sys.stderr)
        return 1
    await server.start()
    rpcserver = f"127.0.0.1:{port}"
    info = {
        "port": port,
        "pid": os.getpid(),
        "rpcserver": rpcserver,
        "network": cfg.network,
        "event_loop": type(loop).__module__,
    }
    write_json_atomic(sim_json, info)
    print(f"lnflow-sim listening on {rpcserver}", flush=True)

    work = asyncio.create_task(
        driver.script(rest) if cfg.ops is not None else driver.traffic(cfg.rate)
    )
    work.add_done_callback(_report_failure)
    flusher = asyncio.create_task(_flush_every(event_log)) if event_log else None
    await stop.wait()

    log.info("stopping")
    for task in (work, flusher):
        if task:
            task.cancel()
    hub.drop("UNAVAILABLE", "server shutting down")
    await server.stop(1.0)
    if event_log:
        event_log.close()
    sim_json.unlink(missing_ok=True)
    return 0


def _listen(cfg: SimConfig, servicer: SimServicer) -> tuple[Any, int]:
    """A TLS server with lnd's credentials (created or reused) bound to the port, or None."""
    cfg.lnddir.mkdir(parents=True, exist_ok=True)
    cert, key = ensure_tls(cfg.lnddir)
    macaroons = ensure_macaroons(cfg.lnddir, cfg.network)
    options = _SERVER_OPTIONS + ping_policy(cfg.version, cfg.ping_scale)
    server = grpc.aio.server(interceptors=[MacaroonInterceptor(macaroons)], options=options)
    server.add_generic_rpc_handlers(tuple(rpc_handlers(servicer)))
    try:
        port = server.add_secure_port(
            f"127.0.0.1:{cfg.port}", grpc.ssl_server_credentials([(key, cert)])
        )
    except RuntimeError:
        port = 0
    return (server, port) if port else (None, 0)


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("event driver failed", exc_info=task.exception())


async def _flush_every(event_log: EventLog) -> None:
    while True:
        await asyncio.sleep(0.2)
        event_log.flush()


if __name__ == "__main__":
    sys.exit(main())
