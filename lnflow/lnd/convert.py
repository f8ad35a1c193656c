"""Pure conversions from lnd's protobuf messages to :mod:`lnflow.domain` records.

No I/O and no grpc here. Integers stay as on the wire: SCIDs and HTLC ids are
unsigned, enum fields are plain ints so numbers newer than our protos survive.
The exception: an HTLC event amount or timestamp (uint64 on the wire) of 2^63 or
more, which no msat amount or time can be and the store cannot hold, reads as
unknown (amount None, timestamp 0) and is logged with the event's identity.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import structlog

from lnflow.domain import (
    NS_PER_S,
    ChannelEdge,
    ChannelInfo,
    EventKind,
    FeeReportEntry,
    ForwardingPage,
    ForwardRecord,
    HtlcEvent,
    LndVersion,
    NodeInfo,
    RejectedForward,
    RoutingPolicy,
    StreamSubscribed,
)
from lnflow.lnd._proto import lightning_pb2, router_pb2, verrpc_pb2

__all__ = [
    "channel_edge",
    "channel_info",
    "fee_report_entry",
    "forward_record",
    "forwarding_page",
    "htlc_event",
    "lnd_version",
    "node_info",
    "routing_policy",
    "version_from_string",
]

_FORWARD = EventKind.FORWARD
_FORWARD_FAIL = EventKind.FORWARD_FAIL
_SETTLE = EventKind.SETTLE
_LINK_FAIL = EventKind.LINK_FAIL
_FINAL = EventKind.FINAL
_UNKNOWN = EventKind.UNKNOWN
_I63 = 1 << 63

log = structlog.get_logger("lnflow.lnd")
_htlc_values_out_of_range = itertools.count(1)

# The variants without payload; the others are handled inline below.
_BARE_KINDS = {"forward_fail_event": _FORWARD_FAIL, "settle_event": _SETTLE}


def htlc_event(msg: router_pb2.HtlcEvent) -> HtlcEvent | StreamSubscribed:
    """One ``routerrpc.HtlcEvent`` as a domain event; values out of range read as unknown."""
    ev = _htlc_event(msg)
    if isinstance(ev, StreamSubscribed):
        return ev if ev.timestamp_ns < _I63 else StreamSubscribed(timestamp_ns=0)
    if (ev.timestamp_ns | (ev.incoming_amt_msat or 0) | (ev.outgoing_amt_msat or 0)) >= _I63:
        return _without_out_of_range(ev)
    return ev


def _without_out_of_range(ev: HtlcEvent) -> HtlcEvent:
    fields = {
        name: value
        for name in ("timestamp_ns", "incoming_amt_msat", "outgoing_amt_msat")
        if (value := getattr(ev, name)) is not None and value >= _I63
    }
    count = next(_htlc_values_out_of_range)
    if count <= 10 or count % 1000 == 0:  # lnd sending these at all is a bug; no flood
        log.warning(
            "htlc_value_out_of_range",
            fields=fields,
            kind=ev.kind.label,
            incoming_channel_id=ev.incoming_channel_id,
            incoming_htlc_id=ev.incoming_htlc_id,
            outgoing_channel_id=ev.outgoing_channel_id,
            outgoing_htlc_id=ev.outgoing_htlc_id,
            events_so_far=count,
            kept_as="unknown",
        )
    changes: dict[str, int | None] = {name: None for name in fields}
    if "timestamp_ns" in fields:
        changes["timestamp_ns"] = 0
    return dataclasses.replace(ev, **changes)  # type: ignore[arg-type]


def _htlc_event(msg: router_pb2.HtlcEvent) -> HtlcEvent | StreamSubscribed:
    """One ``routerrpc.HtlcEvent`` as a domain event (hot path: keep it flat).

    Amounts and timelocks come from ``info`` for the variants that carry it
    (forward, link fail); failure fields only for link fails; settled/offchain
    only for final events. A oneof newer than our protos becomes ``UNKNOWN``.
    """
    which = msg.WhichOneof("event")
    if which == "forward_event":
        fwd = msg.forward_event
        if fwd.HasField("info"):
            info = fwd.info
            return HtlcEvent(
                timestamp_ns=msg.timestamp_ns,
                kind=_FORWARD,
                event_type=msg.event_type,
                incoming_channel_id=msg.incoming_channel_id,
                incoming_htlc_id=msg.incoming_htlc_id,
                outgoing_channel_id=msg.outgoing_channel_id,
                outgoing_htlc_id=msg.outgoing_htlc_id,
                incoming_amt_msat=info.incoming_amt_msat,
                outgoing_amt_msat=info.outgoing_amt_msat,
                incoming_timelock=info.incoming_timelock,
                outgoing_timelock=info.outgoing_timelock,
            )
        kind = _FORWARD
    elif which == "link_fail_event":
        fail = msg.link_fail_event
        if fail.HasField("info"):
            info = fail.info
            return HtlcEvent(
                timestamp_ns=msg.timestamp_ns,
                kind=_LINK_FAIL,
                event_type=msg.event_type,
                incoming_channel_id=msg.incoming_channel_id,
                incoming_htlc_id=msg.incoming_htlc_id,
                outgoing_channel_id=msg.outgoing_channel_id,
                outgoing_htlc_id=msg.outgoing_htlc_id,
                incoming_amt_msat=info.incoming_amt_msat,
                outgoing_amt_msat=info.outgoing_amt_msat,
                incoming_timelock=info.incoming_timelock,
                outgoing_timelock=info.outgoing_timelock,
                wire_failure=fail.wire_failure,
                failure_detail=fail.failure_detail,
                failure_string=fail.failure_string,
            )
        return HtlcEvent(
            timestamp_ns=msg.timestamp_ns,
            kind=_LINK_FAIL,
            event_type=msg.event_type,
            incoming_channel_id=msg.incoming_channel_id,
            incoming_htlc_id=msg.incoming_htlc_id,
            outgoing_channel_id=msg.outgoing_channel_id,
            outgoing_htlc_id=msg.outgoing_htlc_id,
            wire_failure=fail.wire_failure,
            failure_detail=fail.failure_detail,
            failure_string=fail.failure_string,
        )
    elif which == "final_htlc_event":
        final = msg.final_htlc_event
        return HtlcEvent(
            timestamp_ns=msg.timestamp_ns,
            kind=_FINAL,
            event_type=msg.event_type,
            incoming_channel_id=msg.incoming_channel_id,
            incoming_htlc_id=msg.incoming_htlc_id,
            outgoing_channel_id=msg.outgoing_channel_id,
            outgoing_htlc_id=msg.outgoing_htlc_id,
            settled=final.settled,
            offchain=final.offchain,
        )
    elif which == "subscribed_event":
        return StreamSubscribed(timestamp_ns=msg.timestamp_ns)
    else:
        kind = _BARE_KINDS.get(which, _UNKNOWN) if which is not None else _UNKNOWN
    return HtlcEvent(
        timestamp_ns=msg.timestamp_ns,
        kind=kind,
        event_type=msg.event_type,
        incoming_channel_id=msg.incoming_channel_id,
        incoming_htlc_id=msg.incoming_htlc_id,
        outgoing_channel_id=msg.outgoing_channel_id,
        outgoing_htlc_id=msg.outgoing_htlc_id,
    )


_NS = NS_PER_S
_I63 = 1 << 63


def forward_record(ev: lightning_pb2.ForwardingEvent, timestamp_ns: int = 0) -> ForwardRecord:
    """A settled forward; msat fields fall back to the sat ones on lnd that lacks them.

    ``timestamp_ns`` replaces lnd's when given (the ledger key of a record from lnd < 0.13,
    see :func:`forwarding_page`).
    """
    return ForwardRecord(
        timestamp_ns=timestamp_ns or ev.timestamp_ns or ev.timestamp * _NS,
        chan_id_in=ev.chan_id_in,
        chan_id_out=ev.chan_id_out,
        amt_in_msat=ev.amt_in_msat or ev.amt_in * 1000,
        amt_out_msat=ev.amt_out_msat or ev.amt_out * 1000,
        fee_msat=ev.fee_msat or ev.fee * 1000,
        incoming_htlc_id=ev.incoming_htlc_id if ev.HasField("incoming_htlc_id") else None,
        outgoing_htlc_id=ev.outgoing_htlc_id if ev.HasField("outgoing_htlc_id") else None,
    )


def _out_of_range(record: ForwardRecord) -> str | None:
    """Why the store (signed 64-bit integers) cannot hold the record, or None.

    SCIDs are exempt: the store maps them onto the signed range (alias SCIDs >= 2^63).
    """
    for name in ("timestamp_ns", "amt_in_msat", "amt_out_msat", "fee_msat"):
        value: int = getattr(record, name)
        if value >= _I63:
            return f"{name} {value} is beyond the store's signed 64-bit range"
    for name in ("incoming_htlc_id", "outgoing_htlc_id"):
        htlc_id: int | None = getattr(record, name)
        if htlc_id is not None and htlc_id >= _I63:
            return f"{name} {htlc_id} is beyond the store's signed 64-bit range"
    return None


def forwarding_page(
    resp: lightning_pb2.ForwardingHistoryResponse,
    *,
    start_time_s: int = 0,
    index_offset: int = 0,
) -> ForwardingPage:
    """One page, with a ledger key for every record and the ones the store cannot hold
    set apart in ``rejected``.

    lnd >= 0.13 keys each record by its unique ``timestamp_ns``. Older lnd reports whole
    seconds only, so a record's key is synthesised as ``second * 10^9 + its rank among
    that second's records in lnd's order`` (lnd's log is ordered by its hidden ns key,
    the same on every query). Exact when ``index_offset`` skips only records of the
    ``start_time_s`` second (the window starts at that second's first record), which is
    how :class:`lnflow.recording.LedgerSync` pages; a record of a later second is ranked
    among the records of its second on this page, all of which the page then holds.
    """
    events: list[ForwardRecord] = []
    rejected: list[RejectedForward] = []
    rank_second, rank = start_time_s, index_offset
    last_second = tail = 0
    for ev in resp.forwarding_events:
        second = ev.timestamp_ns // _NS if ev.timestamp_ns else ev.timestamp
        if tail and second == last_second:
            tail += 1
        else:
            last_second, tail = second, 1
        key = 0
        if not ev.timestamp_ns:
            if second != rank_second:
                rank_second, rank = second, 0
            key = second * _NS + rank
            rank += 1
        record = forward_record(ev, key)
        reason = _out_of_range(record)
        if reason is None:
            events.append(record)
        else:
            rejected.append(
                RejectedForward(
                    timestamp_s=ev.timestamp,
                    timestamp_ns=ev.timestamp_ns,
                    chan_id_in=ev.chan_id_in,
                    chan_id_out=ev.chan_id_out,
                    amt_in_msat=record.amt_in_msat,
                    amt_out_msat=record.amt_out_msat,
                    fee_msat=record.fee_msat,
                    reason=reason,
                )
            )
    return ForwardingPage(
        events=tuple(events),
        last_offset_index=resp.last_offset_index,
        rejected=tuple(rejected),
        last_second_s=last_second,
        last_second_count=tail,
    )


def node_info(resp: lightning_pb2.GetInfoResponse) -> NodeInfo:
    return NodeInfo(
        pubkey=resp.identity_pubkey,
        alias=resp.alias,
        version=resp.version,
        network=resp.chains[0].network if resp.chains else "",
        block_height=resp.block_height,
        synced_to_chain=resp.synced_to_chain,
    )


def lnd_version(resp: verrpc_pb2.Version) -> LndVersion:
    return LndVersion(
        major=resp.app_major,
        minor=resp.app_minor,
        patch=resp.app_patch,
        version=resp.version,
    )


_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def version_from_string(text: str) -> LndVersion | None:
    """Parse GetInfo's ``"0.9.2-beta commit=v0.9.2-beta"`` (for lnd without verrpc)."""
    version = text.split(" commit=", 1)[0].strip()
    match = _VERSION.match(version)
    if match is None:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return LndVersion(major=major, minor=minor, patch=patch, version=version)


# With peer_alias_lookup, lnd puts its lookup error into peer_alias for a peer whose node
# announcement it lacks (rpcserver.go); that text is no alias.
_ALIAS_LOOKUP_FAILED = "unable to lookup peer"


def channel_info(ch: lightning_pb2.Channel) -> ChannelInfo:
    """Reserves from the constraints (lnd >= 0.11), else the deprecated fields 20/21.

    A failed alias lookup reads as an empty alias (the caller falls back to GetNodeInfo).
    """
    local_reserve = (
        ch.local_constraints.chan_reserve_sat
        if ch.HasField("local_constraints")
        else ch.local_chan_reserve_sat
    )
    remote_reserve = (
        ch.remote_constraints.chan_reserve_sat
        if ch.HasField("remote_constraints")
        else ch.remote_chan_reserve_sat
    )
    return ChannelInfo(
        chan_id=ch.chan_id,
        remote_pubkey=ch.remote_pubkey,
        channel_point=ch.channel_point,
        capacity_sat=ch.capacity,
        local_balance_sat=ch.local_balance,
        remote_balance_sat=ch.remote_balance,
        local_reserve_sat=local_reserve,
        remote_reserve_sat=remote_reserve,
        active=ch.active,
        private=ch.private,
        peer_alias="" if ch.peer_alias.startswith(_ALIAS_LOOKUP_FAILED) else ch.peer_alias,
        uptime_s=ch.uptime,
        lifetime_s=ch.lifetime,
        alias_scids=tuple(ch.alias_scids),
        confirmed_scid=ch.zero_conf_confirmed_scid,
        initiator=ch.initiator,
        commit_fee_sat=ch.commit_fee,
        pending_htlcs=tuple((h.incoming, h.amount, h.expiration_height) for h in ch.pending_htlcs),
        min_htlc_floor_msat=(
            ch.local_constraints.min_htlc_msat if ch.HasField("local_constraints") else 0
        ),
        max_pending_msat=(
            ch.local_constraints.max_pending_amt_msat if ch.HasField("local_constraints") else 0
        ),
    )


def fee_report_entry(fee: lightning_pb2.ChannelFeeReport) -> FeeReportEntry:
    return FeeReportEntry(
        chan_id=fee.chan_id,
        channel_point=fee.channel_point,
        base_fee_msat=fee.base_fee_msat,
        fee_rate_ppm=fee.fee_per_mil,
    )


def routing_policy(policy: lightning_pb2.RoutingPolicy) -> RoutingPolicy:
    """``fee_rate_milli_msat`` is, despite its name, parts per million."""
    return RoutingPolicy(
        fee_base_msat=policy.fee_base_msat,
        fee_rate_ppm=policy.fee_rate_milli_msat,
        time_lock_delta=policy.time_lock_delta,
        min_htlc_msat=policy.min_htlc,
        max_htlc_msat=policy.max_htlc_msat,
        disabled=policy.disabled,
        last_update_s=policy.last_update,
        inbound_fee_base_msat=policy.inbound_fee_base_msat,
        inbound_fee_rate_ppm=policy.inbound_fee_rate_milli_msat,
    )


def channel_edge(edge: lightning_pb2.ChannelEdge) -> ChannelEdge:
    """A policy lnd has not seen yet (unset message) is None, not a zero policy."""
    return ChannelEdge(
        chan_id=edge.channel_id,
        chan_point=edge.chan_point,
        node1_pubkey=edge.node1_pub,
        node2_pubkey=edge.node2_pub,
        capacity_sat=edge.capacity,
        node1_policy=routing_policy(edge.node1_policy) if edge.HasField("node1_policy") else None,
        node2_policy=routing_policy(edge.node2_policy) if edge.HasField("node2_policy") else None,
    )
