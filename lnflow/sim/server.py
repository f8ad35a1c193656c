"""The gRPC side of the simulated node: lnd's RPCs over a NodeState, and the macaroon check.

Only the RPCs lnflow uses are served (DESIGN §2); anything else is
UNIMPLEMENTED. Handlers are registered by hand so SubscribeHtlcEvents can send
the pre-serialized bytes the hub shares between subscribers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NoReturn

import grpc

from lnflow.domain import ForwardRecord
from lnflow.lnd._proto import lightning_pb2 as ln
from lnflow.lnd._proto import router_pb2, verrpc_pb2
from lnflow.sim.events import SimEvent
from lnflow.sim.hub import Drop, EventLog, Hub, Outgoing
from lnflow.sim.state import (
    ALIAS_SCID_BLOCK,
    NS,
    Channel,
    NodeState,
    Policy,
    PolicyError,
    PolicyUpdate,
    StatusError,
)

__all__ = ["MacaroonInterceptor", "SimServicer", "rpc_handlers"]

WRITE_METHODS = frozenset(
    {"/lnrpc.Lightning/UpdateChannelPolicy", "/routerrpc.Router/UpdateChanStatus"}
)
_MISMATCH = "verification failed: signature mismatch after caveat verification"
_DAY_NS = 86_400 * NS
_NO_NODE = "unable to find node"  # lnd's graph error for a node it has no announcement of

log = logging.getLogger("lnflow.sim")


def _identity(data: bytes) -> bytes:
    return data


# --------------------------------------------------------------------------- auth


class MacaroonInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """lnd's check: exactly one ``macaroon`` metadata value, the hex of a known macaroon.

    It also logs each client connection the first time it makes a unary call (``unary
    calls from <peer>``: its address, the call and the macaroon's name) and every write
    call (``write <method> from <peer> with the <name> macaroon``), so a test can tell
    which calls shared a connection.
    """

    def __init__(self, macaroons: dict[str, bytes]) -> None:
        self._names = {data: name for name, data in macaroons.items()}
        self._peers: set[str] = set()

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        values = [v for k, v in details.invocation_metadata or () if k == "macaroon"]
        if len(values) != 1:
            return _deny(
                handler, grpc.StatusCode.UNAUTHENTICATED, f"expected 1 macaroon, got {len(values)}"
            )
        try:
            name = self._names.get(bytes.fromhex(str(values[0])))
        except ValueError:
            return _deny(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "unable to decode macaroon: encoding/hex: invalid byte",
            )
        if name is None:
            return _deny(handler, grpc.StatusCode.UNAUTHENTICATED, _MISMATCH)
        if details.method in WRITE_METHODS and name != "admin":
            return _deny(handler, grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        if handler.unary_unary is None:
            return handler
        return self._watched(handler, details.method, name)

    def _watched(self, handler: Any, method: str, name: str) -> Any:
        behaviour, peers, write = handler.unary_unary, self._peers, method in WRITE_METHODS

        async def call(request: Any, context: Any) -> Any:
            peer = context.peer()
            if peer not in peers:
                peers.add(peer)
                log.info("unary calls from %s, the first: %s with the %s macaroon",
                         peer, method, name)  # fmt: skip
            if write:
                log.info("write %s from %s with the %s macaroon", method, peer, name)
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _deny(handler: Any, code: Any, message: str) -> Any:
    async def abort(request: Any, context: Any) -> None:
        await context.abort(code, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(abort, **kwargs)
    return grpc.unary_unary_rpc_method_handler(abort, **kwargs)


# --------------------------------------------------------------------------- RPCs


class SimServicer:
    """The served RPCs, with lnd's semantics (as in lnd-api.md, the LND fact sheet)."""

    def __init__(self, node: NodeState, hub: Hub, event_log: EventLog | None = None) -> None:
        self.node = node
        self.hub = hub
        self.event_log = event_log

    # ---- verrpc / info

    async def get_version(self, request: Any, context: Any) -> Any:
        v = self.node.version
        return verrpc_pb2.Version(
            commit=f"v{v.version}",
            commit_hash=self._commit_hash(),
            version=v.version,
            app_major=v.major,
            app_minor=v.minor,
            app_patch=v.patch,
            app_pre_release=v.version.partition("-")[2],
            build_tags=["autopilotrpc", "signrpc", "walletrpc", "chainrpc", "invoicesrpc"],
            go_version="go1.22.6",
        )

    async def get_info(self, request: Any, context: Any) -> Any:
        node, now = self.node, time.time_ns()
        active = sum(1 for c in node.channels.values() if c.online)
        height = node.block_height(now)
        return ln.GetInfoResponse(
            identity_pubkey=node.pubkey,
            alias=node.alias,
            num_active_channels=active,
            num_inactive_channels=len(node.channels) - active,
            num_peers=len({c.remote_pubkey for c in node.channels.values() if c.online}),
            block_height=height,
            block_hash=hashlib.sha256(f"block/{height}".encode()).hexdigest(),
            synced_to_chain=True,
            synced_to_graph=True,
            testnet=node.network == "testnet",
            uris=[f"{node.pubkey}@127.0.0.1:9735"],
            best_header_timestamp=now // NS,
            version=f"{node.version.version} commit=v{node.version.version}",
            commit_hash=self._commit_hash(),
            chains=[ln.Chain(chain="bitcoin", network=node.network)],
            color="#3399ff",
        )

    def _commit_hash(self) -> str:
        return hashlib.sha1(self.node.version.version.encode()).hexdigest()

    # ---- channels and policies

    async def list_channels(self, request: Any, context: Any) -> Any:
        now = time.time_ns()
        peer = request.peer.hex()
        channels = [
            self._channel_message(c, now, request.peer_alias_lookup)
            for c in self.node.channels.values()
            if not (request.active_only and not c.online)
            and not (request.inactive_only and c.online)
            and not (request.public_only and c.private)
            and not (request.private_only and not c.private)
            and not (peer and c.remote_pubkey != peer)
        ]
        return ln.ListChannelsResponse(channels=channels)

    def _channel_message(self, c: Channel, now: int, alias_lookup: bool) -> Any:
        node = self.node
        alias_scid = c.chan_id >> 40 >= ALIAS_SCID_BLOCK
        return ln.Channel(
            active=c.online,
            remote_pubkey=c.remote_pubkey,
            channel_point=c.channel_point,
            chan_id=c.chan_id,
            capacity=c.capacity_sat,
            local_balance=c.local_msat // 1000,
            remote_balance=c.remote_msat // 1000,
            unsettled_balance=c.unsettled_msat // 1000,
            total_satoshis_sent=c.sent_msat // 1000,
            total_satoshis_received=c.received_msat // 1000,
            num_updates=c.num_updates,
            csv_delay=144,
            private=c.private,
            initiator=c.initiator,
            chan_status_flags="ChanStatusDefault",
            local_chan_reserve_sat=c.local_reserve_sat,
            remote_chan_reserve_sat=c.remote_reserve_sat,
            lifetime=max(0, now - node.start_ns) // NS,
            uptime=c.uptime_ns(node.start_ns, now) // NS,
            local_constraints=self._constraints(c, c.local_reserve_sat, c.ours),
            remote_constraints=self._constraints(c, c.remote_reserve_sat, c.peer),
            alias_scids=list(c.alias_scids) or ([c.chan_id] if alias_scid else []),
            zero_conf=alias_scid or bool(c.zero_conf_confirmed_scid),
            zero_conf_confirmed_scid=c.zero_conf_confirmed_scid,
            peer_alias=self._peer_alias(c) if alias_lookup and node.at_least(0, 16) else "",
        )

    @staticmethod
    def _peer_alias(c: Channel) -> str:
        """lnd puts the lookup error into the field for a peer missing from its graph."""
        return c.peer_alias if c.announced else f"unable to lookup peer alias: {_NO_NODE}"

    @staticmethod
    def _constraints(c: Channel, reserve_sat: int, policy: Policy) -> Any:
        return ln.ChannelConstraints(
            csv_delay=144,
            chan_reserve_sat=reserve_sat,
            dust_limit_sat=354,
            max_pending_amt_msat=c.capacity_sat * 990,
            min_htlc_msat=policy.min_htlc_msat,
            max_accepted_htlcs=483,
        )

    async def fee_report(self, request: Any, context: Any) -> Any:
        node, now = self.node, time.time_ns()
        inbound = node.at_least(0, 18)
        fees = [
            ln.ChannelFeeReport(
                chan_id=c.chan_id,
                channel_point=c.channel_point,
                base_fee_msat=c.ours.fee_base_msat,
                fee_per_mil=c.ours.fee_rate_ppm,
                fee_rate=c.ours.fee_rate_ppm / 1_000_000,
                inbound_base_fee_msat=c.ours.inbound_fee_base_msat if inbound else 0,
                inbound_fee_per_mil=c.ours.inbound_fee_rate_ppm if inbound else 0,
            )
            for c in node.channels.values()
        ]
        return ln.FeeReportResponse(
            channel_fees=fees,
            day_fee_sum=node.forwards.fee_sum_msat(now - _DAY_NS) // 1000,
            week_fee_sum=node.forwards.fee_sum_msat(now - 7 * _DAY_NS) // 1000,
            month_fee_sum=node.forwards.fee_sum_msat(now - 30 * _DAY_NS) // 1000,
        )

    async def get_chan_info(self, request: Any, context: Any) -> Any:
        chan = self.node.channel_by_graph_id(request.chan_id) if request.chan_id else None
        by_point = not request.chan_id and request.chan_point and self.node.at_least(0, 18, 3)
        if chan is None and by_point:
            txid, _, index = request.chan_point.partition(":")
            chan = self.node.channel_by_point(txid, int(index or 0))
        if chan is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, "edge not found")
        return self._edge(chan)

    def _edge(self, chan: Channel) -> Any:
        ours, theirs = self._policy(chan.ours), self._policy(chan.peer)
        we_are_node1 = self.node.pubkey < chan.remote_pubkey
        return ln.ChannelEdge(
            channel_id=chan.zero_conf_confirmed_scid or chan.chan_id,
            chan_point=chan.channel_point,
            last_update=max(chan.ours.last_update_s, chan.peer.last_update_s),
            node1_pub=self.node.pubkey if we_are_node1 else chan.remote_pubkey,
            node2_pub=chan.remote_pubkey if we_are_node1 else self.node.pubkey,
            capacity=chan.capacity_sat,
            node1_policy=ours if we_are_node1 else theirs,
            node2_policy=theirs if we_are_node1 else ours,
        )

    def _policy(self, p: Policy) -> Any:
        inbound = self.node.at_least(0, 18)
        return ln.RoutingPolicy(
            time_lock_delta=p.time_lock_delta,
            min_htlc=p.min_htlc_msat,
            fee_base_msat=p.fee_base_msat,
            fee_rate_milli_msat=p.fee_rate_ppm,
            disabled=p.disabled,
            max_htlc_msat=p.max_htlc_msat,
            last_update=p.last_update_s,
            inbound_fee_base_msat=p.inbound_fee_base_msat if inbound else 0,
            inbound_fee_rate_milli_msat=p.inbound_fee_rate_ppm if inbound else 0,
        )

    async def get_node_info(self, request: Any, context: Any) -> Any:
        node, pubkey = self.node, request.pub_key.lower()
        alias = node.peer_alias(pubkey)
        if alias is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, _NO_NODE)
        if pubkey == node.pubkey:
            shared = list(node.channels.values())
        else:
            shared = [c for c in node.channels.values() if c.remote_pubkey == pubkey]
        extra = 0 if pubkey == node.pubkey else int(pubkey[2:6], 16) % 40  # the rest of the graph
        return ln.NodeInfo(
            node=ln.LightningNode(
                last_update=node.start_ns // NS,
                pub_key=pubkey,
                alias=alias,
                addresses=[ln.NodeAddress(network="tcp", addr="127.0.0.1:9735")],
                color="#3399ff",
            ),
            num_channels=len(shared) + extra,
            total_capacity=sum(c.capacity_sat for c in shared) + extra * 2_000_000,
            channels=[self._edge(c) for c in shared] if request.include_channels else [],
        )

    async def update_channel_policy(self, request: Any, context: Any) -> Any:
        node, now = self.node, time.time_ns()
        scope = request.WhichOneof("scope")
        targets: list[Channel] = []
        missing: tuple[str, int] | None = None
        if scope == "global" and getattr(request, "global"):
            targets = list(node.channels.values())
        elif scope == "chan_point":
            point = request.chan_point
            txid = point.funding_txid_str or point.funding_txid_bytes[::-1].hex()
            chan = node.channel_by_point(txid, point.output_index)
            if chan is None:
                missing = (txid, point.output_index)
            else:
                targets = [chan]
        else:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "unknown scope")
        inbound = None
        if request.HasField("inbound_fee") and node.at_least(0, 18):
            inbound = (request.inbound_fee.base_fee_msat, request.inbound_fee.fee_rate_ppm)
        update = PolicyUpdate(
            base_fee_msat=request.base_fee_msat,
            fee_rate=request.fee_rate,
            fee_rate_ppm=request.fee_rate_ppm,
            time_lock_delta=request.time_lock_delta,
            max_htlc_msat=request.max_htlc_msat,
            min_htlc_msat=request.min_htlc_msat if request.min_htlc_msat_specified else None,
            inbound_fee=inbound,
        )
        try:
            failed = node.update_policy(update, targets, now)
        except PolicyError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        failures = [
            _failed_update(c.channel_point, ln.UPDATE_FAILURE_INVALID_PARAMETER, err)
            for c, err in failed
        ]
        if missing:
            failures.append(
                _failed_update(
                    f"{missing[0]}:{missing[1]}", ln.UPDATE_FAILURE_NOT_FOUND, "not found"
                )
            )
        return ln.PolicyUpdateResponse(failed_updates=failures)

    async def update_chan_status(self, request: Any, context: Any) -> Any:
        """lnd answers a refusal with a plain error (UNKNOWN), as router_server.go does."""
        if not self.node.at_least(0, 13):
            await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "unknown method")
        point = request.chan_point
        txid = point.funding_txid_str or point.funding_txid_bytes[::-1].hex()
        chan = self.node.channel_by_point(txid, point.output_index)
        action = _STATUS_ACTIONS.get(request.action, str(request.action))
        try:
            self.node.update_status(chan, action, time.time_ns())
        except StatusError as exc:
            await _abort(context, grpc.StatusCode.UNKNOWN, str(exc))
        return router_pb2.UpdateChanStatusResponse()

    # ---- forwarding history

    async def forwarding_history(self, request: Any, context: Any) -> Any:
        node, now = self.node, time.time_ns()
        end_ns = request.end_time * NS if request.end_time else now
        filters = node.at_least(0, 20)
        records = node.forwards.query(
            start_ns=request.start_time * NS,
            end_ns=end_ns,
            offset=request.index_offset,
            limit=request.num_max_events or 100,
            incoming=list(request.incoming_chan_ids) if filters else (),
            outgoing=list(request.outgoing_chan_ids) if filters else (),
        )
        lookup = request.peer_alias_lookup and node.at_least(0, 16)
        return ln.ForwardingHistoryResponse(
            forwarding_events=[self._forward_message(r, lookup) for r in records],
            last_offset_index=request.index_offset + len(records),
        )

    def _forward_message(self, r: ForwardRecord, alias_lookup: bool) -> Any:
        msg = ln.ForwardingEvent(
            timestamp=r.timestamp_ns // NS,
            chan_id_in=r.chan_id_in,
            chan_id_out=r.chan_id_out,
            amt_in=r.amt_in_msat // 1000,
            amt_out=r.amt_out_msat // 1000,
            fee=r.fee_msat // 1000,
            fee_msat=r.fee_msat,
            amt_in_msat=r.amt_in_msat,
            amt_out_msat=r.amt_out_msat,
        )
        if self.node.at_least(0, 13):
            msg.timestamp_ns = r.timestamp_ns  # before 0.13 only whole seconds
        if alias_lookup:
            # lnd's texts, the missing space in the second one included
            alias_in = self.node.alias_of_channel(r.chan_id_in)
            alias_out = self.node.alias_of_channel(r.chan_id_out)
            msg.peer_alias_in = (
                f"unable to lookup peer alias: {_NO_NODE}" if alias_in is None else alias_in
            )
            msg.peer_alias_out = (
                f"unable to lookup peeralias: {_NO_NODE}" if alias_out is None else alias_out
            )
        if self.node.at_least(0, 19, 2):
            if r.incoming_htlc_id is not None:
                msg.incoming_htlc_id = r.incoming_htlc_id
            if r.outgoing_htlc_id is not None:
                msg.outgoing_htlc_id = r.outgoing_htlc_id
        return msg

    # ---- HTLC events

    async def subscribe_htlc_events(self, request: Any, context: Any) -> None:
        # lnd < 0.16 sends nothing, not even the response headers, until the first
        # event (router_server.go); from 0.16 the SubscribedEvent goes out at once
        sub = self.hub.subscribe()
        log = self.event_log
        try:
            if self.node.at_least(0, 16):
                await context.send_initial_metadata(())
                marker = Outgoing(SimEvent(kind="subscribed", event_type=0))
                await context.write(marker.payload)
                if log:
                    log.written(sub.number, marker)
            while True:
                batch = await sub.queue.get()
                if isinstance(batch, Drop):
                    await context.abort(getattr(grpc.StatusCode, batch.code), batch.details)
                    return
                for item in batch:
                    await context.write(item.payload)
                    if log:
                        log.written(sub.number, item)
                sub.written(len(batch), self.hub)
        finally:
            self.hub.unsubscribe(sub)


_STATUS_ACTIONS = {
    router_pb2.ENABLE: "enable",
    router_pb2.DISABLE: "disable",
    router_pb2.AUTO: "auto",
}


def _failed_update(channel_point: str, reason: Any, error: str) -> Any:
    txid, _, index = channel_point.partition(":")
    try:
        txid_bytes = bytes.fromhex(txid)[::-1]
    except ValueError:
        txid_bytes = b""
    return ln.FailedUpdate(
        outpoint=ln.OutPoint(txid_bytes=txid_bytes, txid_str=txid, output_index=int(index)),
        reason=reason,
        update_error=error,
    )


async def _abort(context: Any, code: Any, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # it raises; this is for the type checker


def _unary(fn: Any, request_type: Any) -> Any:
    return grpc.unary_unary_rpc_method_handler(
        fn,
        request_deserializer=request_type.FromString,
        response_serializer=lambda msg: msg.SerializeToString(),
    )


def rpc_handlers(servicer: SimServicer) -> Iterable[Any]:
    """The generic handlers for lnrpc.Lightning, routerrpc.Router and verrpc.Versioner."""
    s = servicer
    lightning = {
        "GetInfo": _unary(s.get_info, ln.GetInfoRequest),
        "ListChannels": _unary(s.list_channels, ln.ListChannelsRequest),
        "FeeReport": _unary(s.fee_report, ln.FeeReportRequest),
        "GetChanInfo": _unary(s.get_chan_info, ln.ChanInfoRequest),
        "GetNodeInfo": _unary(s.get_node_info, ln.NodeInfoRequest),
        "ForwardingHistory": _unary(s.forwarding_history, ln.ForwardingHistoryRequest),
        "UpdateChannelPolicy": _unary(s.update_channel_policy, ln.PolicyUpdateRequest),
    }
    router = {
        "SubscribeHtlcEvents": grpc.unary_stream_rpc_method_handler(
            s.subscribe_htlc_events,
            request_deserializer=router_pb2.SubscribeHtlcEventsRequest.FromString,
            response_serializer=_identity,
        ),
        "UpdateChanStatus": _unary(s.update_chan_status, router_pb2.UpdateChanStatusRequest),
    }
    versioner = {"GetVersion": _unary(s.get_version, verrpc_pb2.VersionRequest)}
    return (
        grpc.method_handlers_generic_handler("lnrpc.Lightning", lightning),
        grpc.method_handlers_generic_handler("routerrpc.Router", router),
        grpc.method_handlers_generic_handler("verrpc.Versioner", versioner),
    )
