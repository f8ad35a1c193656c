"""Pure conversions from lnd's protobuf messages to :mod:`lnflow.domain` records.

No I/O and no grpc here. Integers stay as on the wire: SCIDs and HTLC ids are
unsigned, enum fields are plain ints so numbers newer than our protos survive.
"""

from __future__ import annotations

import re

from lnflow.domain import (
    ChannelEdge,
    ChannelInfo,
    EventKind,
    FeeReportEntry,
    ForwardingPage,
    ForwardRecord,
    HtlcEvent,
    LndVersion,
    NodeInfo,
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

# The variants without payload; the others are handled inline below.
_BARE_KINDS = {"forward_fail_event": _FORWARD_FAIL, "settle_event": _SETTLE}


def htlc_event(msg: router_pb2.HtlcEvent) -> HtlcEvent | StreamSubscribed:
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


def forward_record(ev: lightning_pb2.ForwardingEvent) -> ForwardRecord:
    """A settled forward; msat fields fall back to the sat ones on lnd that lacks them."""
    return ForwardRecord(
        timestamp_ns=ev.timestamp_ns or ev.timestamp * 1_000_000_000,
        chan_id_in=ev.chan_id_in,
        chan_id_out=ev.chan_id_out,
        amt_in_msat=ev.amt_in_msat or ev.amt_in * 1000,
        amt_out_msat=ev.amt_out_msat or ev.amt_out * 1000,
        fee_msat=ev.fee_msat or ev.fee * 1000,
        incoming_htlc_id=ev.incoming_htlc_id if ev.HasField("incoming_htlc_id") else None,
        outgoing_htlc_id=ev.outgoing_htlc_id if ev.HasField("outgoing_htlc_id") else None,
    )


def forwarding_page(resp: lightning_pb2.ForwardingHistoryResponse) -> ForwardingPage:
    return ForwardingPage(
        events=tuple(forward_record(ev) for ev in resp.forwarding_events),
        last_offset_index=resp.last_offset_index,
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


def channel_info(ch: lightning_pb2.Channel) -> ChannelInfo:
    """Reserves from the constraints (lnd >= 0.11), else the deprecated fields 20/21."""
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
        peer_alias=ch.peer_alias,
        uptime_s=ch.uptime,
        lifetime_s=ch.lifetime,
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
