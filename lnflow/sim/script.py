"""The JSONL script format (docs/sim-script.md): parsing and the pure state changes.

One JSON object per line; blank lines and lines starting with ``#`` are
ignored. A line with an ``"event"`` key is an HTLC event to broadcast; a line
with an ``"op"`` key is an instruction. Parsing validates everything up front
and reports the first problem with its line number.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from lnflow.domain import ForwardRecord, parse_scid
from lnflow.lnd._http2 import STATUS as GRPC_STATUS
from lnflow.sim.events import EventError, SimEvent, event_from_json
from lnflow.sim.state import Channel, NodeState, default_channel

__all__ = [
    "STATUS_CODES",
    "ChannelOp",
    "DropOp",
    "EmitOp",
    "ForwardOp",
    "Op",
    "ReplayOp",
    "ScriptError",
    "SleepOp",
    "TrafficOp",
    "WaitOp",
    "apply_channel_op",
    "parse_script",
    "split_setup",
]

STATUS_CODES = frozenset(GRPC_STATUS)


class ScriptError(ValueError):
    """A script line that cannot be run; the message names the line."""


@dataclass(frozen=True, slots=True)
class EmitOp:
    event: SimEvent


@dataclass(frozen=True, slots=True)
class ChannelOp:
    chan_id: int
    fields: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ForwardOp:
    record: ForwardRecord  # timestamp_ns 0: the time the op runs


@dataclass(frozen=True, slots=True)
class WaitOp:
    count: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class SleepOp:
    seconds: float


@dataclass(frozen=True, slots=True)
class DropOp:
    code: str
    details: str


@dataclass(frozen=True, slots=True)
class ReplayOp:
    count: int


@dataclass(frozen=True, slots=True)
class TrafficOp:
    seconds: float
    rate: float


Op = EmitOp | ChannelOp | ForwardOp | WaitOp | SleepOp | DropOp | ReplayOp | TrafficOp

_U64 = 1 << 64

# channel op fields and their JSON types
_CHANNEL_FIELDS: dict[str, type] = {
    "remote_pubkey": str,
    "peer_alias": str,
    "channel_point": str,
    "capacity_sat": int,
    "local_balance_sat": int,
    "remote_balance_sat": int,
    "local_reserve_sat": int,
    "remote_reserve_sat": int,
    "active": bool,
    "private": bool,
    "initiator": bool,
    "announced": bool,
    "alias_scids": list,
    "zero_conf_confirmed_scid": int,
    "fee_base_msat": int,
    "fee_rate_ppm": int,
    "time_lock_delta": int,
    "min_htlc_msat": int,
    "max_htlc_msat": int,
    "disabled": bool,
    "inbound_fee_base_msat": int,
    "inbound_fee_rate_ppm": int,
    "peer_fee_base_msat": int,
    "peer_fee_rate_ppm": int,
    "peer_time_lock_delta": int,
    "peer_min_htlc_msat": int,
    "peer_max_htlc_msat": int,
    "peer_disabled": bool,
    "demand_in": float,
    "demand_out": float,
}
_POLICY_FIELDS = {
    "fee_base_msat",
    "fee_rate_ppm",
    "time_lock_delta",
    "min_htlc_msat",
    "max_htlc_msat",
    "disabled",
    "inbound_fee_base_msat",
    "inbound_fee_rate_ppm",
}


def parse_script(text: str) -> list[Op]:
    """All operations of a script, validated; raises ScriptError naming the line."""
    ops: list[Op] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ScriptError("expected a JSON object")
            ops.append(_parse_line(obj))
        except (ScriptError, EventError, json.JSONDecodeError) as exc:
            raise ScriptError(f"line {number}: {exc}") from None
    return ops


def split_setup(ops: Sequence[Op]) -> tuple[list[Op], list[Op]]:
    """Leading channel/forwarding_event ops (applied before serving) and the rest."""
    for i, op in enumerate(ops):
        if not isinstance(op, ChannelOp | ForwardOp):
            return list(ops[:i]), list(ops[i:])
    return list(ops), []


def _parse_line(obj: Mapping[str, Any]) -> Op:
    if "event" in obj:
        if "op" in obj:
            raise ScriptError("a line is either an event or an op, not both")
        return EmitOp(event_from_json(obj))
    op = obj.get("op")
    parser = _PARSERS.get(op) if isinstance(op, str) else None
    if parser is None:
        raise ScriptError(f"unknown op {op!r} (expected one of {', '.join(_PARSERS)})")
    args = {k: v for k, v in obj.items() if k != "op"}
    allowed = _ALLOWED[str(op)]
    unknown = sorted(set(args) - allowed) if allowed is not None else []
    if unknown:
        raise ScriptError(f"op {op} has no field(s) {', '.join(unknown)}")
    return parser(args)


_ALLOWED: dict[str, set[str] | None] = {
    "channel": None,  # checked against _CHANNEL_FIELDS
    "forwarding_event": {
        "timestamp_ns",
        "chan_id_in",
        "chan_id_out",
        "amt_in_msat",
        "amt_out_msat",
        "incoming_htlc_id",
        "outgoing_htlc_id",
    },
    "wait_subscribers": {"count", "timeout_s"},
    "sleep": {"seconds"},
    "drop_streams": {"code", "details"},
    "replay": {"count"},
    "traffic": {"seconds", "rate"},
}


def _int(args: Mapping[str, Any], name: str, default: int | None = None) -> int:
    value = args.get(name, default)
    if value is None:
        raise ScriptError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _U64:
        raise ScriptError(f"{name} must be a non-negative 64-bit integer, got {value!r}")
    return value


def _count(args: Mapping[str, Any], name: str) -> int:
    return _int(args, name, 1)


def _number(
    args: Mapping[str, Any], name: str, default: float = 0.0, *, required: bool = False
) -> float:
    if required and name not in args:
        raise ScriptError(f"{name} is required")
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ScriptError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def _scid(args: Mapping[str, Any], name: str) -> int:
    value = args.get(name)
    if isinstance(value, str):
        try:
            return parse_scid(value)
        except ValueError as exc:
            raise ScriptError(f"{name}: {exc}") from None
    return _int(args, name)


def _channel_op(args: Mapping[str, Any]) -> ChannelOp:
    chan_id = _scid(args, "chan_id")
    fields: list[tuple[str, Any]] = []
    for name, value in args.items():
        if name == "chan_id":
            continue
        kind = _CHANNEL_FIELDS.get(name)
        if kind is None:
            raise ScriptError(f"op channel has no field {name}")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ScriptError(f"{name} must be of type {kind.__name__}, got {value!r}")
        if isinstance(value, list):  # SCIDs
            fields.append((name, tuple(_scid({name: v}, name) for v in value)))
            continue
        negative = isinstance(value, int | float) and value < 0
        if negative and not name.startswith("inbound_"):
            raise ScriptError(f"{name} must not be negative")
        fields.append((name, value))
    return ChannelOp(chan_id, tuple(fields))


def _forward_op(args: Mapping[str, Any]) -> ForwardOp:
    amt_in = _int(args, "amt_in_msat")
    amt_out = _int(args, "amt_out_msat")
    if amt_out > amt_in:
        raise ScriptError("amt_out_msat must not exceed amt_in_msat")
    in_htlc = args.get("incoming_htlc_id")
    out_htlc = args.get("outgoing_htlc_id")
    return ForwardOp(
        ForwardRecord(
            timestamp_ns=_int(args, "timestamp_ns", 0),
            chan_id_in=_scid(args, "chan_id_in"),
            chan_id_out=_scid(args, "chan_id_out"),
            amt_in_msat=amt_in,
            amt_out_msat=amt_out,
            fee_msat=amt_in - amt_out,
            incoming_htlc_id=None if in_htlc is None else _int(args, "incoming_htlc_id"),
            outgoing_htlc_id=None if out_htlc is None else _int(args, "outgoing_htlc_id"),
        )
    )


def _drop_op(args: Mapping[str, Any]) -> DropOp:
    code = str(args.get("code", "UNAVAILABLE")).upper()
    if code not in STATUS_CODES or code == "OK":
        raise ScriptError(f"code must be a gRPC status name other than OK, got {code!r}")
    return DropOp(code, str(args.get("details", "server shutting down")))


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Op]] = {
    "channel": _channel_op,
    "forwarding_event": _forward_op,
    "wait_subscribers": lambda a: WaitOp(_count(a, "count"), _number(a, "timeout_s", 60.0)),
    "sleep": lambda a: SleepOp(_number(a, "seconds", required=True)),
    "drop_streams": _drop_op,
    "replay": lambda a: ReplayOp(_count(a, "count")),
    "traffic": lambda a: TrafficOp(_number(a, "seconds", required=True), _number(a, "rate", 20.0)),
}


def apply_channel_op(node: NodeState, op: ChannelOp, now_ns: int) -> Channel:
    """Create the channel (with defaults) or update the given fields of an existing one."""
    values = dict(op.fields)
    chan = node.channels.get(op.chan_id)
    created = chan is None
    if chan is None:
        chan = default_channel(op.chan_id, node.seed, values.get("capacity_sat", 1_000_000))
        local = values.get("local_balance_sat")
        remote = values.get("remote_balance_sat")
        if local is not None and remote is None:
            values["remote_balance_sat"] = max(0, chan.capacity_sat - local)
        if remote is not None and local is None:
            values["local_balance_sat"] = max(0, chan.capacity_sat - remote)
        node.channels[op.chan_id] = chan
    ours, peer = chan.ours, chan.peer
    for name, value in values.items():
        if name in _POLICY_FIELDS:
            ours = replace(ours, **{name: value})
        elif name.startswith("peer_") and name != "peer_alias":
            peer = replace(peer, **{name.removeprefix("peer_"): value})
        elif name == "active":
            chan.set_online(value, now_ns)
        elif name.endswith("_balance_sat"):
            setattr(chan, name.replace("_balance_sat", "_msat"), value * 1000)
        else:
            setattr(chan, name, value)
    now_s = now_ns // 1_000_000_000
    chan.peer = replace(peer, last_update_s=peer.last_update_s or now_s)
    ours = replace(ours, last_update_s=now_s)
    if created:
        chan.ours = ours
    else:
        chan.set_ours(ours, now_ns)
    return chan
