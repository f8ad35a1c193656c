"""Typed async client for the lnd RPCs lnflow uses (gRPC over TLS + macaroon).

The gRPC itself runs in a child process, the lnd gateway (:mod:`lnflow.lnd.gateway`),
so grpc never loads in this process: requests go to it serialized, answers come back
as lnd's bytes and are parsed here with the generated protobuf classes. Everything
returned is a :mod:`lnflow.domain` record; every failure is an
:class:`lnflow.errors.LndError` chained to the :class:`~lnflow.lnd.errors.RpcFailure`
the gateway reported.
"""

from __future__ import annotations

import weakref
from types import TracebackType
from typing import Any

from lnflow.domain import (
    ChannelEdge,
    ChannelInfo,
    FailedPolicyUpdate,
    FeeReportEntry,
    ForwardingPage,
    LndVersion,
    NodeInfo,
)
from lnflow.errors import LndError, LndRpcError

from . import convert
from ._proto import lightning_pb2, router_pb2, verrpc_pb2
from .credentials import LndCredentials
from .errors import RpcFailure, classify, from_rpc_error, is_not_found
from .gateway import GatewayConfig, GatewayProcess
from .stream import HtlcStream

__all__ = ["CHANNEL_OPTIONS", "LndClient", "stream_options"]

# The gateway's own gRPC client (lnflow/lnd/_http2.py) reads the keepalive times from
# these options (grpc's names, grpc's meaning); the rest it meets by construction: lnd's
# 200 MiB limit, a new connection on the next call (no backoff), a fixed 64 KiB window.
# lncli and lnd use 200 MiB (MaxGrpcMsgSize); grpc's default of 4 MiB is too small for
# ListChannels / ForwardingHistory on big nodes. lnd refuses client pings more often than
# every 5 s; 30 s keeps NAT state alive without tripping that limit. grpc's reconnect
# backoff grows to 2 min by default: capped at 0.5 s, a node that comes back is reached
# by the next probe (the daemon's pace, not grpc's).
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 200 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 500),
)

# The HTLC stream's keepalive, by lnd version. lnd >= 0.17 allows client pings every 5 s;
# before, grpc-go's default policy counts a ping less than 5 min after the previous one
# as a strike (reset only when lnd sends something) and ends the connection with GOAWAY
# "too_many_pings" on the third: a quiet stream must ping less often than that (at 30 s
# it was cut after 2 min). After two pings without client data grpc slows to one a
# minute unless max_pings_without_data is 0; with 0 the chosen interval holds. A frozen
# lnd is found by probes on the other connection (lnflow.recording), never by pings.
STREAM_KEEPALIVE_S = 30.0  # lnd >= 0.17
OLD_LND_KEEPALIVE_S = 360.0  # lnd < 0.17 (or not known): 6 min > 5 min, never a strike
KEEPALIVE_TIMEOUT_S = 20.0


# The stream's HTTP/2 flow-control window stays at its initial 64 KiB. grpc grows it by
# probing the bandwidth-delay product (BDP pings) to several MB on a fast link; the
# gateway reads at most MAX_UNACKED batches ahead of the daemon, so when the daemon
# falls behind, grpc buffers the whole window of lnd's messages behind them: +7 MB of
# the gateway's RSS in a 15 s stall at 6 000 events/s (bench/README.md). With the window
# fixed, lnd holds its own backlog, as it does for any slow subscriber.
STREAM_WINDOW = (("grpc.http2.bdp_probe", 0),)


def stream_options(version: LndVersion | None, scale: float = 1.0) -> tuple[tuple[str, Any], ...]:
    """Channel options of the HTLC stream for this lnd version.

    ``scale`` divides the keepalive times (tests prove the 15-minute case against a
    simulator whose ping policy is scaled alike).
    """
    every_s = (
        STREAM_KEEPALIVE_S
        if version is not None and version.has_ping_policy
        else OLD_LND_KEEPALIVE_S
    )
    keepalive = (
        ("grpc.keepalive_time_ms", max(1, round(every_s * 1000 / scale))),
        ("grpc.keepalive_timeout_ms", max(1, round(KEEPALIVE_TIMEOUT_S * 1000 / scale))),
        ("grpc.http2.max_pings_without_data", 0),
    )
    skip = {name for name, _ in keepalive}
    return tuple(o for o in CHANNEL_OPTIONS if o[0] not in skip) + keepalive + STREAM_WINDOW


_LIGHTNING = "/lnrpc.Lightning/"
_GET_VERSION = "/verrpc.Versioner/GetVersion"
_UPDATE_CHAN_STATUS = "/routerrpc.Router/UpdateChanStatus"


class LndClient:
    """One connection to lnd. Use as ``async with LndClient(creds) as lnd: ...``.

    The gateway process starts on first use (reading the certificate and macaroon
    then, so missing files raise :class:`CertificateMissingError` /
    :class:`MacaroonMissingError`); if it dies, pending calls fail with an
    :class:`LndRpcError` and the next call starts a new one. Unary calls fail fast
    (no wait for readiness) with a deadline of ``timeout_s``.

    :meth:`with_macaroon` gives a client holding another macaroon of the same node that
    calls through this client's gateway process: no process or connection of its own.
    """

    def __init__(
        self, credentials: LndCredentials, *, timeout_s: float = 15.0, keepalive_scale: float = 1.0
    ) -> None:
        self.credentials = credentials
        self.timeout_s = timeout_s
        #: lnd's version once :meth:`get_version` answered (picks the stream's keepalive)
        self.version: LndVersion | None = None
        self._keepalive_scale = keepalive_scale
        self._gateway: GatewayProcess | None = None
        self._streams: weakref.WeakSet[HtlcStream] = weakref.WeakSet()
        self._via: LndClient | None = None  # whose gateway process this client calls through
        self._macaroon_hex: str | None = None  # sent with each call when _via is set

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> LndClient:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop open streams (they end quietly) and stop the gateway process."""
        for stream in list(self._streams):
            stream.cancel()
        for stream in list(self._streams):
            await stream.aclose()
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            await gateway.close()

    def with_macaroon(self, credentials: LndCredentials) -> LndClient:
        """A client with ``credentials``' macaroon that calls through this client's
        gateway process (which must outlive it): the policy engine's writes beside the
        recorder. Its macaroon file is read now (a missing one raises
        :class:`MacaroonMissingError`); ``credentials`` must name this client's node and
        certificate. Closing it stops only its own streams."""
        mine = self.credentials
        if (credentials.rpcserver, credentials.tlscertpath) != (mine.rpcserver, mine.tlscertpath):
            raise ValueError(
                f"{credentials.rpcserver} with {credentials.tlscertpath} is not the node this "
                f"client reaches ({mine.rpcserver} with {mine.tlscertpath})"
            )
        _, macaroon_hex = credentials.load()
        client = LndClient(
            credentials, timeout_s=self.timeout_s, keepalive_scale=self._keepalive_scale
        )
        client.version = self.version
        client._via = self._via or self
        client._macaroon_hex = macaroon_hex
        return client

    def _open(self) -> GatewayProcess:
        """The gateway process; a new one when there is none or it died."""
        if self._via is not None:
            return self._via._open()
        gateway = self._gateway
        if gateway is None or gateway.gone is not None:
            cert, macaroon_hex = self.credentials.load()
            config = GatewayConfig(self.credentials.rpcserver, cert, macaroon_hex, CHANNEL_OPTIONS)
            gateway = self._gateway = GatewayProcess(config)
        return gateway

    @property
    def gateway_pid(self) -> int | None:
        """The gateway process's pid (None before it started)."""
        owner = self._via or self
        return owner._gateway.pid if owner._gateway is not None else None

    # ------------------------------------------------------------------ plumbing

    def _error(self, exc: RpcFailure, method: str, *, timeout_s: float | None = None) -> LndError:
        return from_rpc_error(
            exc,
            method=method,
            credentials=self.credentials,
            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
        )

    async def _rpc(self, path: str, request: Any, timeout_s: float | None = None) -> bytes:
        """One unary RPC's serialized answer: deadline ``timeout_s``, fail fast while
        disconnected; raises :class:`RpcFailure` for lnd's (or grpc's) refusal."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        gateway = self._open()
        return await gateway.unary(path, request.SerializeToString(), timeout, self._macaroon_hex)

    async def _call(self, method: str, request: Any, response: Any) -> Any:
        """``/lnrpc.Lightning/<method>``, parsed as ``response``."""
        try:
            data = await self._rpc(_LIGHTNING + method, request)
        except RpcFailure as exc:
            raise self._error(exc, method) from exc
        return response.FromString(data)

    async def _call_or_none(self, method: str, request: Any, response: Any, *not_found: str) -> Any:
        """Like :meth:`_call`, but None when lnd says the object does not exist."""
        try:
            data = await self._rpc(_LIGHTNING + method, request)
        except RpcFailure as exc:
            if is_not_found(exc, *not_found):
                return None
            raise self._error(exc, method) from exc
        return response.FromString(data)

    # ------------------------------------------------------------------ RPCs

    async def get_info(self) -> NodeInfo:
        resp = await self._call(
            "GetInfo", lightning_pb2.GetInfoRequest(), lightning_pb2.GetInfoResponse
        )
        return convert.node_info(resp)

    async def get_version(self) -> LndVersion:
        """lnd's version from verrpc; on lnd without verrpc, parsed from GetInfo."""
        try:
            data = await self._rpc(_GET_VERSION, verrpc_pb2.VersionRequest())
        except RpcFailure as exc:
            if exc.code != "UNIMPLEMENTED":
                raise self._error(exc, "GetVersion") from exc
            info = await self.get_info()
            version = convert.version_from_string(info.version)
            if version is None:
                raise LndRpcError(
                    f"LND has no Versioner service and GetInfo's version '{info.version}' "
                    "cannot be parsed: upgrade lnd to 0.10 or newer"
                ) from exc
            self.version = version
            return version
        self.version = convert.lnd_version(verrpc_pb2.Version.FromString(data))
        return self.version

    async def probe(self, timeout_s: float) -> None:
        """Prove lnd answers: one GetVersion with a short deadline (any answer counts).

        Raises :class:`NodeUnreachableError` when it does not answer within
        ``timeout_s`` (frozen, overloaded) or cannot be reached, and the mapped
        :class:`LndError` for a refusal (e.g. a macaroon no longer accepted).
        """
        try:
            await self._rpc(_GET_VERSION, verrpc_pb2.VersionRequest(), timeout_s)
        except RpcFailure as exc:
            if exc.code != "UNIMPLEMENTED":  # lnd without verrpc: still an answer
                raise self._error(exc, "GetVersion", timeout_s=timeout_s) from exc

    async def check(self) -> tuple[NodeInfo, LndVersion]:
        """GetInfo then GetVersion: proves address, certificate and macaroon work."""
        info = await self.get_info()
        return info, await self.get_version()

    async def list_channels(self) -> list[ChannelInfo]:
        """Open channels, with the peer's alias (lnd >= 0.16; empty before)."""
        resp = await self._call(
            "ListChannels",
            lightning_pb2.ListChannelsRequest(peer_alias_lookup=True),
            lightning_pb2.ListChannelsResponse,
        )
        return [convert.channel_info(ch) for ch in resp.channels]

    async def fee_report(self) -> list[FeeReportEntry]:
        resp = await self._call(
            "FeeReport", lightning_pb2.FeeReportRequest(), lightning_pb2.FeeReportResponse
        )
        return [convert.fee_report_entry(fee) for fee in resp.channel_fees]

    async def get_chan_info(self, chan_id: int) -> ChannelEdge | None:
        """The graph edge of a channel; None when lnd does not know it (e.g. closed)."""
        resp = await self._call_or_none(
            "GetChanInfo",
            lightning_pb2.ChanInfoRequest(chan_id=chan_id),
            lightning_pb2.ChannelEdge,
            "edge not found",
        )
        return None if resp is None else convert.channel_edge(resp)

    async def get_node_stats(self, pubkey: str) -> tuple[int, int] | None:
        """(channels, total capacity in sat) of a node in lnd's graph; None: not known."""
        resp = await self._call_or_none(
            "GetNodeInfo",
            lightning_pb2.NodeInfoRequest(pub_key=pubkey, include_channels=False),
            lightning_pb2.NodeInfo,
            "unable to find node",
            "node not found",
        )
        return None if resp is None else (int(resp.num_channels), int(resp.total_capacity))

    async def get_node_alias(self, pubkey: str) -> str | None:
        """The node's announced alias (may be empty); None when lnd has never seen it."""
        resp = await self._call_or_none(
            "GetNodeInfo",
            lightning_pb2.NodeInfoRequest(pub_key=pubkey, include_channels=False),
            lightning_pb2.NodeInfo,
            "unable to find node",
            "node not found",
        )
        return None if resp is None else str(resp.node.alias)

    async def forwarding_history(
        self,
        *,
        start_time_s: int,
        end_time_s: int = 0,
        index_offset: int = 0,
        num_max_events: int = 10_000,
    ) -> ForwardingPage:
        """One page of settled forwards in [start, end] (seconds; end 0 = now).

        lnd walks ``index_offset`` records from ``start_time_s`` on every call: page by
        advancing ``start_time_s`` (see :class:`lnflow.recording.LedgerSync`), with an
        offset only into the start second (the contract of
        :func:`lnflow.lnd.convert.forwarding_page` for lnd < 0.13).
        """
        resp = await self._call(
            "ForwardingHistory",
            lightning_pb2.ForwardingHistoryRequest(
                start_time=start_time_s,
                end_time=end_time_s,
                index_offset=index_offset,
                num_max_events=num_max_events,
            ),
            lightning_pb2.ForwardingHistoryResponse,
        )
        return convert.forwarding_page(resp, start_time_s=start_time_s, index_offset=index_offset)

    async def update_channel_policy(
        self,
        channel_point: str,
        *,
        base_fee_msat: int,
        fee_rate_ppm: int,
        time_lock_delta: int,
        max_htlc_msat: int = 0,
        min_htlc_msat: int | None = None,
        inbound: tuple[int, int] | None = None,
    ) -> list[FailedPolicyUpdate]:
        """``UpdateChannelPolicy`` for one channel (needs offchain:write).

        lnd always applies base fee, rate and time_lock_delta: pass the current values
        for those left as they are (as charge-lnd does). ``max_htlc_msat`` 0 and
        ``min_htlc_msat`` None keep them; ``inbound`` (base msat, ppm) is lnd >= 0.18
        only, None keeps it. The rate goes as fee_rate_ppm on lnd >= 0.14.2 (exact), as
        the fee_rate fraction before. Returns lnd's failed_updates (empty: applied).
        """
        txid, _, index = channel_point.rpartition(":")
        request = lightning_pb2.PolicyUpdateRequest(
            chan_point=lightning_pb2.ChannelPoint(funding_txid_str=txid, output_index=int(index)),
            base_fee_msat=base_fee_msat,
            time_lock_delta=time_lock_delta,
            max_htlc_msat=max_htlc_msat,
            min_htlc_msat=min_htlc_msat or 0,
            min_htlc_msat_specified=min_htlc_msat is not None,
        )
        if self.version is not None and self.version.triple < (0, 14, 2):
            request.fee_rate = fee_rate_ppm / 1_000_000
        else:
            request.fee_rate_ppm = fee_rate_ppm
        if inbound is not None:
            request.inbound_fee.base_fee_msat, request.inbound_fee.fee_rate_ppm = inbound
        resp = await self._call("UpdateChannelPolicy", request, lightning_pb2.PolicyUpdateResponse)
        return [
            FailedPolicyUpdate(
                channel_point=(
                    f"{f.outpoint.txid_str or f.outpoint.txid_bytes[::-1].hex()}"
                    f":{f.outpoint.output_index}"
                ),
                reason=lightning_pb2.UpdateFailure.Name(f.reason),
                error=f.update_error,
            )
            for f in resp.failed_updates
        ]

    async def update_chan_status(self, channel_point: str, action: str) -> str | None:
        """``Router.UpdateChanStatus`` (lnd >= 0.13, needs offchain:write).

        ``action`` is ``enable``, ``disable`` or ``auto``. lnd keeps a manual disable
        until ENABLE or AUTO; ENABLE on a channel whose peer is offline is refused, AUTO
        hands the channel back to lnd, which enables it once the peer is back. Returns
        None when lnd took it, else lnd's refusal in its own words (e.g. "edge not
        found"); a connection or macaroon problem raises the mapped :class:`LndError`.
        """
        txid, _, index = channel_point.rpartition(":")
        request = router_pb2.UpdateChanStatusRequest(
            chan_point=lightning_pb2.ChannelPoint(funding_txid_str=txid, output_index=int(index)),
            action=action.upper(),
        )
        try:
            await self._rpc(_UPDATE_CHAN_STATUS, request)
        except RpcFailure as exc:
            error = self._error(exc, "UpdateChanStatus")
            if type(error) is LndRpcError and exc.code == "UNKNOWN":
                return str(exc.details or "refused")  # lnd's answer for this channel
            raise error from exc
        return None

    def prepare_stream(self) -> None:
        """Start the gateway process now, e.g. while waiting to reconnect (call from a
        running event loop), so the next call or stream need not wait for it."""
        self._open()

    def subscribe_htlc_events(self) -> HtlcStream:
        """Start ``SubscribeHtlcEvents`` (call from a running event loop).

        The call runs in the gateway process (see :mod:`lnflow.lnd.stream`), on a
        channel of its own with the stream's keepalive; use
        :meth:`HtlcStream.wait_connected` to learn early that it failed.
        :meth:`close` stops every open stream.
        """
        gateway = self._open()  # missing certificate / macaroon files raise here
        options = stream_options(self.version, self._keepalive_scale)
        credentials = self.credentials

        def map_error(code: str, details: str, established: bool, connecting: bool) -> LndError:
            return classify(
                code,
                details,
                method="SubscribeHtlcEvents",
                credentials=credentials,
                connecting=connecting,
                established=established,
            )

        stream = HtlcStream(gateway, options, map_error, self._macaroon_hex)
        self._streams.add(stream)
        return stream
