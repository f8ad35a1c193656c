"""lnflow.lnd: credential resolution, protobuf conversion, error mapping, and the
client against a small in-process TLS gRPC server (not the simulated node)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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
from lnflow.errors import (
    CertificateMissingError,
    ConfigError,
    LndError,
    LndRpcError,
    MacaroonMissingError,
    MacaroonRejectedError,
    NodeUnreachableError,
    TlsMismatchError,
)
from lnflow.lnd import HtlcStream, LndClient, LndCredentials, convert
from lnflow.lnd import gateway as gateway_module
from lnflow.lnd._proto import (
    lightning_pb2,
    lightning_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    verrpc_pb2,
    verrpc_pb2_grpc,
)
from lnflow.lnd.errors import RpcFailure, classify

TEST_TIMEOUT_S = 30.0
ALIAS_SCID = (16_000_000 << 40) | (1 << 16) | 1  # lnd alias range: >= 2**63
assert ALIAS_SCID >= 1 << 63
OUR_PUBKEY = "02" + "11" * 32
PEER_PUBKEY = "03" + "22" * 32
MACAROON = b"\x02\x01\x03lnd\x02\xf8\x01macaroon-bytes"


def run(body: Callable[[], Awaitable[None]], timeout_s: float = TEST_TIMEOUT_S) -> None:
    """Run one async test body on a fresh loop, bounded by a timeout."""

    async def bounded() -> None:
        await asyncio.wait_for(body(), timeout_s)

    asyncio.run(bounded())


# =========================================================================== credentials


def test_resolve_defaults_follow_lncli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    creds = LndCredentials.resolve()
    lnd = tmp_path / ".lnd"
    assert creds == LndCredentials(
        rpcserver="localhost:10009",
        tlscertpath=lnd / "tls.cert",
        macaroonpath=lnd / "data/chain/bitcoin/mainnet/readonly.macaroon",
        network="mainnet",
    )


def test_resolve_overrides(tmp_path: Path) -> None:
    creds = LndCredentials.resolve(
        lnddir=tmp_path / "lnd",
        network="regtest",
        rpcserver="10.0.0.2:10019",
        tlscertpath=tmp_path / "other.cert",
        macaroonpath=str(tmp_path / "x.macaroon"),
    )
    assert creds.rpcserver == "10.0.0.2:10019"
    assert creds.tlscertpath == tmp_path / "other.cert"
    assert creds.macaroonpath == tmp_path / "x.macaroon"
    assert creds.network == "regtest"


def test_resolve_network_and_lnddir_pick_the_macaroon_folder(tmp_path: Path) -> None:
    creds = LndCredentials.resolve(lnddir=tmp_path, network="signet")
    assert creds.tlscertpath == tmp_path / "tls.cert"
    assert creds.macaroonpath == tmp_path / "data/chain/bitcoin/signet/readonly.macaroon"


def test_resolve_expands_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    creds = LndCredentials.resolve(lnddir="~/node", tlscertpath="~/c/tls.cert")
    assert creds.tlscertpath == tmp_path / "c/tls.cert"
    assert creds.macaroonpath.is_relative_to(tmp_path / "node")


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        pytest.param((), "readonly.macaroon", id="none-present-reports-readonly"),
        pytest.param(("readonly.macaroon", "admin.macaroon"), "readonly.macaroon", id="readonly"),
        pytest.param(("admin.macaroon", "charge-lnd.macaroon"), "admin.macaroon", id="admin"),
        pytest.param(("charge-lnd.macaroon",), "charge-lnd.macaroon", id="charge-lnd"),
    ],
)
def test_resolve_macaroon_fallback(tmp_path: Path, present: tuple[str, ...], expected: str) -> None:
    folder = tmp_path / "data/chain/bitcoin/mainnet"
    folder.mkdir(parents=True)
    for name in present:
        (folder / name).write_bytes(MACAROON)
    assert LndCredentials.resolve(lnddir=tmp_path).macaroonpath == folder / expected


def test_resolve_explicit_macaroon_has_no_fallback(tmp_path: Path) -> None:
    folder = tmp_path / "data/chain/bitcoin/mainnet"
    folder.mkdir(parents=True)
    (folder / "admin.macaroon").write_bytes(MACAROON)
    creds = LndCredentials.resolve(lnddir=tmp_path, macaroonpath=tmp_path / "mine.macaroon")
    assert creds.macaroonpath == tmp_path / "mine.macaroon"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("node.lan", "node.lan:10009"),
        ("node.lan:10010", "node.lan:10010"),
        ("[::1]:10009", "[::1]:10009"),
        ("", "localhost:10009"),
    ],
)
def test_resolve_rpcserver_port(given: str, expected: str) -> None:
    assert LndCredentials.resolve(rpcserver=given).rpcserver == expected


def test_resolve_rejects_unknown_network() -> None:
    with pytest.raises(ConfigError, match="unknown network 'mainet'"):
        LndCredentials.resolve(network="mainet")


def test_load_returns_pem_and_macaroon_hex(tmp_path: Path, certs: Certs) -> None:
    creds = write_credentials(tmp_path, 1, certs.node.cert_pem, MACAROON)
    assert creds.load() == (certs.node.cert_pem, MACAROON.hex())


def test_load_missing_cert(tmp_path: Path) -> None:
    creds = LndCredentials.resolve(lnddir=tmp_path)
    with pytest.raises(CertificateMissingError) as info:
        creds.load()
    assert str(info.value) == (
        f"TLS certificate not found at {tmp_path / 'tls.cert'}: "
        "pass --tlscertpath or --lnddir pointing at lnd's directory"
    )


def test_load_missing_macaroon(tmp_path: Path, certs: Certs) -> None:
    (tmp_path / "tls.cert").write_bytes(certs.node.cert_pem)
    creds = LndCredentials.resolve(lnddir=tmp_path)
    with pytest.raises(MacaroonMissingError) as info:
        creds.load()
    path = tmp_path / "data/chain/bitcoin/mainnet/readonly.macaroon"
    assert str(info.value) == (
        f"macaroon not found at {path}: pass --macaroonpath or set --network (now 'mainnet')"
    )


def test_load_cert_not_pem(tmp_path: Path) -> None:
    creds = write_credentials(tmp_path, 1, b"\x30\x82binary DER", MACAROON)
    with pytest.raises(TlsMismatchError, match="is not a PEM certificate"):
        creds.load()


def test_load_empty_macaroon(tmp_path: Path, certs: Certs) -> None:
    creds = write_credentials(tmp_path, 1, certs.node.cert_pem, b"")
    with pytest.raises(MacaroonMissingError, match="is empty"):
        creds.load()


# =========================================================================== conversions


def _info(in_amt: int = 1_000_500, out_amt: int = 1_000_000) -> router_pb2.HtlcInfo:
    return router_pb2.HtlcInfo(
        incoming_timelock=800_144,
        outgoing_timelock=800_104,
        incoming_amt_msat=in_amt,
        outgoing_amt_msat=out_amt,
    )


_KEY: dict[str, Any] = {
    "incoming_channel_id": ALIAS_SCID,
    "incoming_htlc_id": 7,
    "outgoing_channel_id": (1 << 64) - 1,
    "outgoing_htlc_id": 9,
    "timestamp_ns": 1_700_000_000_123_456_789,
}
_AMOUNTS: dict[str, Any] = {
    "incoming_amt_msat": 1_000_500,
    "outgoing_amt_msat": 1_000_000,
    "incoming_timelock": 800_144,
    "outgoing_timelock": 800_104,
}

HTLC_CASES = [
    pytest.param(
        router_pb2.HtlcEvent(
            **_KEY, event_type=3, forward_event=router_pb2.ForwardEvent(info=_info())
        ),
        HtlcEvent(kind=EventKind.FORWARD, event_type=3, **_KEY, **_AMOUNTS),
        id="forward",
    ),
    pytest.param(
        router_pb2.HtlcEvent(**_KEY, event_type=3, forward_event=router_pb2.ForwardEvent()),
        HtlcEvent(kind=EventKind.FORWARD, event_type=3, **_KEY),
        id="forward-without-info",
    ),
    pytest.param(
        router_pb2.HtlcEvent(
            **_KEY, event_type=3, forward_fail_event=router_pb2.ForwardFailEvent()
        ),
        HtlcEvent(kind=EventKind.FORWARD_FAIL, event_type=3, **_KEY),
        id="forward-fail",
    ),
    pytest.param(
        router_pb2.HtlcEvent(
            **_KEY, event_type=3, settle_event=router_pb2.SettleEvent(preimage=b"\x01" * 32)
        ),
        HtlcEvent(kind=EventKind.SETTLE, event_type=3, **_KEY),
        id="settle",
    ),
    pytest.param(
        router_pb2.HtlcEvent(
            **_KEY,
            event_type=3,
            link_fail_event=router_pb2.LinkFailEvent(
                info=_info(), wire_failure=15, failure_detail=6, failure_string="insufficient bal"
            ),
        ),
        HtlcEvent(
            kind=EventKind.LINK_FAIL,
            event_type=3,
            **_KEY,
            **_AMOUNTS,
            wire_failure=15,
            failure_detail=6,
            failure_string="insufficient bal",
        ),
        id="link-fail",
    ),
    pytest.param(
        router_pb2.HtlcEvent(
            **_KEY,
            event_type=2,
            link_fail_event=router_pb2.LinkFailEvent(wire_failure=1, failure_detail=19),
        ),
        HtlcEvent(
            kind=EventKind.LINK_FAIL,
            event_type=2,
            **_KEY,
            wire_failure=1,
            failure_detail=19,
            failure_string="",
        ),
        id="link-fail-without-info-empty-string",
    ),
    pytest.param(
        router_pb2.HtlcEvent(
            **_KEY,
            event_type=7,
            link_fail_event=router_pb2.LinkFailEvent(
                info=_info(), wire_failure=4242, failure_detail=99, failure_string="new"
            ),
        ),
        HtlcEvent(
            kind=EventKind.LINK_FAIL,
            event_type=7,
            **_KEY,
            **_AMOUNTS,
            wire_failure=4242,
            failure_detail=99,
            failure_string="new",
        ),
        id="link-fail-unknown-enum-numbers",
    ),
    pytest.param(
        router_pb2.HtlcEvent(
            incoming_channel_id=ALIAS_SCID,
            incoming_htlc_id=7,
            timestamp_ns=5,
            final_htlc_event=router_pb2.FinalHtlcEvent(settled=True, offchain=False),
        ),
        HtlcEvent(
            timestamp_ns=5,
            kind=EventKind.FINAL,
            event_type=0,
            incoming_channel_id=ALIAS_SCID,
            incoming_htlc_id=7,
            outgoing_channel_id=0,
            outgoing_htlc_id=0,
            settled=True,
            offchain=False,
        ),
        id="final",
    ),
    pytest.param(
        router_pb2.HtlcEvent(timestamp_ns=42, subscribed_event=router_pb2.SubscribedEvent()),
        StreamSubscribed(timestamp_ns=42),
        id="subscribed",
    ),
    pytest.param(
        router_pb2.HtlcEvent(**_KEY, event_type=1),
        HtlcEvent(kind=EventKind.UNKNOWN, event_type=1, **_KEY),
        id="no-variant",
    ),
    pytest.param(
        # A oneof member newer than our protos (field 13, empty message) arrives as
        # an unknown field: no variant set.
        router_pb2.HtlcEvent.FromString(
            router_pb2.HtlcEvent(**_KEY, event_type=3).SerializeToString() + b"\x6a\x00"
        ),
        HtlcEvent(kind=EventKind.UNKNOWN, event_type=3, **_KEY),
        id="future-variant",
    ),
]


@pytest.mark.parametrize(("msg", "expected"), HTLC_CASES)
def test_htlc_event(msg: router_pb2.HtlcEvent, expected: HtlcEvent | StreamSubscribed) -> None:
    got = convert.htlc_event(msg)
    assert got == expected
    if isinstance(got, HtlcEvent):
        assert type(got.event_type) is int
        assert got.wire_failure is None or type(got.wire_failure) is int
        assert got.failure_detail is None or type(got.failure_detail) is int


@pytest.mark.parametrize(
    ("incoming", "outgoing"),
    [
        pytest.param({}, {}, id="unset"),
        pytest.param({"incoming_htlc_id": 0}, {"outgoing_htlc_id": 0}, id="zero-but-set"),
        pytest.param({"incoming_htlc_id": 12}, {}, id="only-incoming"),
    ],
)
def test_forward_record_optional_htlc_ids(
    incoming: dict[str, int], outgoing: dict[str, int]
) -> None:
    ev = lightning_pb2.ForwardingEvent(
        timestamp=1_700_000_000,
        chan_id_in=ALIAS_SCID,
        chan_id_out=42,
        amt_in=1000,
        amt_out=999,
        fee=1,
        fee_msat=1_500,
        amt_in_msat=1_000_500,
        amt_out_msat=999_000,
        timestamp_ns=1_700_000_000_000_000_001,
        **incoming,
        **outgoing,
    )
    assert convert.forward_record(ev) == ForwardRecord(
        timestamp_ns=1_700_000_000_000_000_001,
        chan_id_in=ALIAS_SCID,
        chan_id_out=42,
        amt_in_msat=1_000_500,
        amt_out_msat=999_000,
        fee_msat=1_500,
        incoming_htlc_id=incoming.get("incoming_htlc_id"),
        outgoing_htlc_id=outgoing.get("outgoing_htlc_id"),
    )


def test_forward_record_from_old_lnd_uses_seconds_and_sats() -> None:
    ev = lightning_pb2.ForwardingEvent(
        timestamp=1_600_000_000, chan_id_in=1, chan_id_out=2, amt_in=1001, amt_out=1000, fee=1
    )
    rec = convert.forward_record(ev)
    assert (rec.timestamp_ns, rec.amt_in_msat, rec.amt_out_msat, rec.fee_msat) == (
        1_600_000_000_000_000_000,
        1_001_000,
        1_000_000,
        1_000,
    )


def test_forwarding_page() -> None:
    resp = lightning_pb2.ForwardingHistoryResponse(
        forwarding_events=[lightning_pb2.ForwardingEvent(timestamp_ns=n) for n in (1, 2)],
        last_offset_index=12,
    )
    page = convert.forwarding_page(resp)
    assert [e.timestamp_ns for e in page.events] == [1, 2]
    assert page.last_offset_index == 12


def _channel(**extra: Any) -> lightning_pb2.Channel:
    return lightning_pb2.Channel(
        active=True,
        remote_pubkey=PEER_PUBKEY,
        channel_point="ab" * 32 + ":1",
        chan_id=ALIAS_SCID,
        capacity=2_000_000,
        local_balance=1_200_000,
        remote_balance=790_000,
        local_chan_reserve_sat=11,
        remote_chan_reserve_sat=12,
        private=True,
        peer_alias="peer",
        uptime=3_000,
        lifetime=3_600,
        **extra,
    )


@pytest.mark.parametrize(
    ("extra", "reserves"),
    [
        pytest.param(
            {
                "local_constraints": lightning_pb2.ChannelConstraints(chan_reserve_sat=20_000),
                "remote_constraints": lightning_pb2.ChannelConstraints(chan_reserve_sat=20_001),
            },
            (20_000, 20_001),
            id="constraints",
        ),
        pytest.param({}, (11, 12), id="deprecated-fields"),
    ],
)
def test_channel_info_reserves(extra: dict[str, Any], reserves: tuple[int, int]) -> None:
    assert convert.channel_info(_channel(**extra)) == ChannelInfo(
        chan_id=ALIAS_SCID,
        remote_pubkey=PEER_PUBKEY,
        channel_point="ab" * 32 + ":1",
        capacity_sat=2_000_000,
        local_balance_sat=1_200_000,
        remote_balance_sat=790_000,
        local_reserve_sat=reserves[0],
        remote_reserve_sat=reserves[1],
        active=True,
        private=True,
        peer_alias="peer",
        uptime_s=3_000,
        lifetime_s=3_600,
    )


def _policy(ppm: int) -> lightning_pb2.RoutingPolicy:
    return lightning_pb2.RoutingPolicy(
        time_lock_delta=80,
        min_htlc=1_000,
        fee_base_msat=1_000,
        fee_rate_milli_msat=ppm,
        disabled=False,
        max_htlc_msat=990_000_000,
        last_update=1_700_000_000,
    )


def test_channel_edge_policies() -> None:
    edge = lightning_pb2.ChannelEdge(
        channel_id=ALIAS_SCID,
        chan_point="cd" * 32 + ":0",
        node1_pub=OUR_PUBKEY,
        node2_pub=PEER_PUBKEY,
        capacity=5_000_000,
        node1_policy=_policy(250),
    )
    got = convert.channel_edge(edge)
    assert got == ChannelEdge(
        chan_id=ALIAS_SCID,
        chan_point="cd" * 32 + ":0",
        node1_pubkey=OUR_PUBKEY,
        node2_pubkey=PEER_PUBKEY,
        capacity_sat=5_000_000,
        node1_policy=RoutingPolicy(
            fee_base_msat=1_000,
            fee_rate_ppm=250,
            time_lock_delta=80,
            min_htlc_msat=1_000,
            max_htlc_msat=990_000_000,
            disabled=False,
            last_update_s=1_700_000_000,
        ),
        node2_policy=None,
    )


def test_node_info_and_fee_report() -> None:
    resp = lightning_pb2.GetInfoResponse(
        identity_pubkey=OUR_PUBKEY,
        alias="me",
        version="0.18.3-beta commit=v0.18.3-beta",
        chains=[lightning_pb2.Chain(chain="bitcoin", network="testnet4")],
        block_height=900_000,
        synced_to_chain=True,
    )
    assert convert.node_info(resp) == NodeInfo(
        pubkey=OUR_PUBKEY,
        alias="me",
        version="0.18.3-beta commit=v0.18.3-beta",
        network="testnet4",
        block_height=900_000,
        synced_to_chain=True,
    )
    assert convert.node_info(lightning_pb2.GetInfoResponse()).network == ""
    fee = lightning_pb2.ChannelFeeReport(
        chan_id=ALIAS_SCID, channel_point="x:0", base_fee_msat=1, fee_per_mil=321, fee_rate=3e-4
    )
    assert convert.fee_report_entry(fee) == FeeReportEntry(ALIAS_SCID, "x:0", 1, 321)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.9.2-beta commit=v0.9.2-beta", LndVersion(0, 9, 2, "0.9.2-beta")),
        ("0.18.3-beta.rc1 commit=v0.18.3-beta.rc1-5-gabc", LndVersion(0, 18, 3, "0.18.3-beta.rc1")),
        ("garbage", None),
    ],
)
def test_version_from_string(text: str, expected: LndVersion | None) -> None:
    assert convert.version_from_string(text) == expected


# =========================================================================== error mapping

CREDS = LndCredentials(
    rpcserver="localhost:10009",
    tlscertpath=Path("/x/tls.cert"),
    macaroonpath=Path("/x/readonly.macaroon"),
    network="mainnet",
)

# Exact details strings grpcio 1.85 reported in experiments (see lnflow/lnd/errors.py).
WRONG_CERT = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:33513: Tls "
    "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:"
    "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: self signed certificate: OK"
)
HOST_NOT_IN_CERT = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:39721: Custom "
    "verification check failed with error: UNAUTHENTICATED: Hostname Verification Check failed."
)
PLAINTEXT_PORT = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:42855: Tls "
    "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL routines:"
    "OPENSSL_internal:WRONG_VERSION_NUMBER: Invalid certificate verification context: OK"
)
BAD_ROOTS = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:33513: "
    "Failed to create security handshaker."
)
# a frozen lnd (SIGSTOP) at start-up, once grpc's 20 s connect attempt gives up
HANDSHAKE_CUT = (
    "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:46405: "
    "Handshake read failed (Endpoint closing)"
)
REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:52867: "
    "Failed to connect to remote host: Connection refused"
)
NO_DNS = (
    "errors resolving nonexistent.invalid:10009: [field:hostname lookup error:address lookup "
    "failed for nonexistent.invalid:10009: Domain name not found]"
)
SIG_MISMATCH = "verification failed: signature mismatch after caveat verification"


@pytest.mark.parametrize(
    ("code", "details", "kwargs", "error", "fragments"),
    [
        pytest.param(
            "UNKNOWN",
            SIG_MISMATCH,
            {},
            MacaroonRejectedError,
            [
                "LND rejected the macaroon /x/readonly.macaroon (verification failed",
                "--macaroonpath",
            ],
            id="signature-mismatch",
        ),
        pytest.param(
            "UNKNOWN",
            "expected 1 macaroon, got 0",
            {},
            MacaroonRejectedError,
            ["rejected the macaroon"],
            id="no-macaroon-sent",
        ),
        pytest.param(
            "UNAUTHENTICATED",
            "bad token",
            {},
            MacaroonRejectedError,
            ["rejected the macaroon"],
            id="unauthenticated",
        ),
        pytest.param(
            "UNKNOWN",
            "permission denied",
            {"method": "UpdateChannelPolicy"},
            MacaroonRejectedError,
            ["lacks offchain:write", "admin.macaroon"],
            id="permission-denied-write",
        ),
        pytest.param(
            "PERMISSION_DENIED",
            "permission denied",
            {"method": "ListChannels"},
            MacaroonRejectedError,
            ["LND refused ListChannels", "lacks offchain:read"],
            id="permission-denied-code",
        ),
        pytest.param(
            "UNAVAILABLE",
            WRONG_CERT,
            {},
            TlsMismatchError,
            [
                "TLS handshake with localhost:10009 failed: tls.cert at /x/tls.cert does not "
                "match the node's certificate (CERTIFICATE_VERIFY_FAILED: self signed "
                "certificate); point --tlscertpath at the node's tls.cert"
            ],
            id="wrong-cert",
        ),
        pytest.param(
            "UNAVAILABLE",
            HOST_NOT_IN_CERT,
            {},
            TlsMismatchError,
            ["does not list 'localhost'", "tlsextraip"],
            id="host-not-in-cert",
        ),
        pytest.param(
            "UNAVAILABLE",
            PLAINTEXT_PORT,
            {},
            TlsMismatchError,
            ["does not speak TLS (WRONG_VERSION_NUMBER", "gRPC port"],
            id="not-tls",
        ),
        pytest.param(
            "UNAVAILABLE",
            BAD_ROOTS,
            {},
            TlsMismatchError,
            ["not a usable certificate"],
            id="unusable-cert",
        ),
        pytest.param(
            "UNAVAILABLE",
            REFUSED,
            {},
            NodeUnreachableError,
            [
                "cannot reach LND at localhost:10009 (Failed to connect to remote host: "
                "Connection refused): is lnd running and is --rpcserver right?"
            ],
            id="refused",
        ),
        pytest.param(
            "UNAVAILABLE",
            NO_DNS,
            {},
            NodeUnreachableError,
            ["(cannot resolve host: Domain name not found)"],
            id="dns",
        ),
        pytest.param(
            "UNAVAILABLE",
            "Cancelling all calls",
            {"established": True},
            NodeUnreachableError,
            ["lost the connection to LND at localhost:10009 (Cancelling all calls)"],
            id="lost",
        ),
        pytest.param(
            "DEADLINE_EXCEEDED",
            "Deadline Exceeded",
            {"connecting": True, "timeout_s": 2.5},
            NodeUnreachableError,
            ["cannot reach LND at localhost:10009 (no answer within 2.5s)"],
            id="deadline-while-connecting",
        ),
        pytest.param(
            "DEADLINE_EXCEEDED",
            "Deadline Exceeded",
            {"connecting": False, "timeout_s": 3},
            NodeUnreachableError,
            ["LND at localhost:10009 timed out: GetInfo got no answer within 3s", "frozen"],
            id="deadline-while-connected",
        ),
        pytest.param(
            "UNAVAILABLE",
            HANDSHAKE_CUT,
            {},
            NodeUnreachableError,
            ["timed out", "did not answer the TLS handshake (Handshake read failed"],
            id="tls-handshake-timeout",
        ),
        pytest.param(
            "UNKNOWN",
            "wallet locked, unlock it to enable full RPC access",
            {},
            NodeUnreachableError,
            ["is not ready (wallet locked", "lncli unlock"],
            id="wallet-locked",
        ),
        pytest.param(
            "RESOURCE_EXHAUSTED",
            "Received message larger than max (5000000 vs. 4194304)",
            {"method": "ListChannels"},
            LndRpcError,
            ["LND ListChannels failed with RESOURCE_EXHAUSTED: Received message larger"],
            id="other",
        ),
        pytest.param(
            "UNKNOWN",
            "open /home/lnd/x: permission denied",
            {},
            LndRpcError,
            ["failed with UNKNOWN"],
            id="fs-permission-is-not-macaroon",
        ),
    ],
)
def test_classify(
    code: str, details: str, kwargs: dict[str, Any], error: type[LndError], fragments: list[str]
) -> None:
    kwargs = {"method": "GetInfo", **kwargs}
    err = classify(code, details, credentials=CREDS, **kwargs)
    assert type(err) is error
    text = str(err)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text


# =========================================================================== transport


@dataclass(frozen=True)
class CertPair:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Certs:
    node: CertPair  # SANs like lnd's: localhost, 127.0.0.1, ::1
    other: CertPair  # another node's certificate
    localhost_only: CertPair


def make_cert(dns: Iterable[str] = ("localhost",), ips: Iterable[str] = ()) -> CertPair:
    """A self-signed ECDSA certificate shaped like lnd's tls.cert."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lnd autogenerated cert"),
            x509.NameAttribute(NameOID.COMMON_NAME, "testnode"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return CertPair(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs(
        node=make_cert(ips=("127.0.0.1", "::1")),
        other=make_cert(ips=("127.0.0.1", "::1")),
        localhost_only=make_cert(),
    )


def write_credentials(
    folder: Path, port: int, cert_pem: bytes, macaroon: bytes, host: str = "localhost"
) -> LndCredentials:
    (folder / "tls.cert").write_bytes(cert_pem)
    (folder / "test.macaroon").write_bytes(macaroon)
    return LndCredentials.resolve(
        rpcserver=f"{host}:{port}",
        tlscertpath=folder / "tls.cert",
        macaroonpath=folder / "test.macaroon",
        network="regtest",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StreamScript:
    """What the fake SubscribeHtlcEvents does: send events, then end or hold."""

    events: list[router_pb2.HtlcEvent] = field(default_factory=list)
    abort: tuple[grpc.StatusCode, str] | None = None
    hold: bool = False


@dataclass
class FakeLnd:
    """Just enough of lnd, with its macaroon check and error answers."""

    macaroon_hex: str = MACAROON.hex()
    denied: set[str] = field(default_factory=set)
    version: str = "0.18.3-beta"
    stream: StreamScript = field(default_factory=StreamScript)
    forwards: list[lightning_pb2.ForwardingEvent] = field(default_factory=list)
    subscribers: int = 0
    sent: int = 0  # stream messages grpc took from the fake (it asks for the next once sent)
    hold_get_info: asyncio.Event | None = None  # GetInfo answers once it is set
    get_info_asked: asyncio.Event = field(default_factory=asyncio.Event)

    async def auth(self, context: Any, method: str) -> None:
        values = [v for k, v in context.invocation_metadata() if k == "macaroon"]
        if len(values) != 1:
            await context.abort(grpc.StatusCode.UNKNOWN, f"expected 1 macaroon, got {len(values)}")
        if values[0] != self.macaroon_hex:
            await context.abort(grpc.StatusCode.UNKNOWN, SIG_MISMATCH)
        if method in self.denied:
            await context.abort(grpc.StatusCode.UNKNOWN, "permission denied")


class FakeLightning(lightning_pb2_grpc.LightningServicer):
    def __init__(self, node: FakeLnd) -> None:
        self.node = node

    async def GetInfo(self, request: Any, context: Any) -> lightning_pb2.GetInfoResponse:
        await self.node.auth(context, "GetInfo")
        self.node.get_info_asked.set()
        if self.node.hold_get_info is not None:
            await self.node.hold_get_info.wait()
        return lightning_pb2.GetInfoResponse(
            identity_pubkey=OUR_PUBKEY,
            alias="fake",
            version=f"{self.node.version} commit=v{self.node.version}",
            chains=[lightning_pb2.Chain(chain="bitcoin", network="regtest")],
            block_height=321,
            synced_to_chain=True,
        )

    async def ListChannels(self, request: Any, context: Any) -> lightning_pb2.ListChannelsResponse:
        await self.node.auth(context, "ListChannels")
        assert request.peer_alias_lookup
        return lightning_pb2.ListChannelsResponse(channels=[_channel()])

    async def FeeReport(self, request: Any, context: Any) -> lightning_pb2.FeeReportResponse:
        await self.node.auth(context, "FeeReport")
        fee = lightning_pb2.ChannelFeeReport(chan_id=ALIAS_SCID, channel_point="x:1", fee_per_mil=7)
        return lightning_pb2.FeeReportResponse(channel_fees=[fee])

    async def GetChanInfo(self, request: Any, context: Any) -> lightning_pb2.ChannelEdge:
        await self.node.auth(context, "GetChanInfo")
        if request.chan_id == 1:  # lnd >= 0.18 style
            await context.abort(grpc.StatusCode.NOT_FOUND, "edge not found")
        if request.chan_id == 2:  # older lnd: a plain error
            await context.abort(grpc.StatusCode.UNKNOWN, "edge not found")
        return lightning_pb2.ChannelEdge(
            channel_id=request.chan_id,
            node1_pub=OUR_PUBKEY,
            node2_pub=PEER_PUBKEY,
            node2_policy=_policy(100),
        )

    async def GetNodeInfo(self, request: Any, context: Any) -> lightning_pb2.NodeInfo:
        await self.node.auth(context, "GetNodeInfo")
        assert not request.include_channels
        if request.pub_key != PEER_PUBKEY:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unable to find node")
        return lightning_pb2.NodeInfo(node=lightning_pb2.LightningNode(alias="peer-alias"))

    async def ForwardingHistory(
        self, request: Any, context: Any
    ) -> lightning_pb2.ForwardingHistoryResponse:
        await self.node.auth(context, "ForwardingHistory")
        window = [
            f
            for f in self.node.forwards
            if f.timestamp_ns >= request.start_time * 10**9
            and (request.end_time == 0 or f.timestamp_ns <= request.end_time * 10**9)
        ]
        page = window[request.index_offset : request.index_offset + request.num_max_events]
        return lightning_pb2.ForwardingHistoryResponse(
            forwarding_events=page, last_offset_index=request.index_offset + len(page)
        )


class FakeVersioner(verrpc_pb2_grpc.VersionerServicer):
    def __init__(self, node: FakeLnd) -> None:
        self.node = node

    async def GetVersion(self, request: Any, context: Any) -> verrpc_pb2.Version:
        await self.node.auth(context, "GetVersion")
        major, minor, patch = (int(p) for p in self.node.version.split("-")[0].split("."))
        return verrpc_pb2.Version(
            version=self.node.version, app_major=major, app_minor=minor, app_patch=patch
        )


class FakeRouter(router_pb2_grpc.RouterServicer):
    def __init__(self, node: FakeLnd) -> None:
        self.node = node

    async def SubscribeHtlcEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await self.node.auth(context, "SubscribeHtlcEvents")
        self.node.subscribers += 1
        script = self.node.stream
        for event in script.events:
            yield event
            self.node.sent += 1
        if script.abort is not None:
            await context.abort(*script.abort)
        if script.hold:
            await asyncio.Event().wait()


@asynccontextmanager
async def serving(
    node: FakeLnd, pair: CertPair | None, *, versioner: bool = True
) -> AsyncIterator[int]:
    """Run the fake on 127.0.0.1 (TLS with ``pair``, or plaintext); yields the port."""
    server = grpc.aio.server()
    lightning_pb2_grpc.add_LightningServicer_to_server(FakeLightning(node), server)
    router_pb2_grpc.add_RouterServicer_to_server(FakeRouter(node), server)
    if versioner:
        verrpc_pb2_grpc.add_VersionerServicer_to_server(FakeVersioner(node), server)
    if pair is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        tls = grpc.ssl_server_credentials([(pair.key_pem, pair.cert_pem)])
        port = server.add_secure_port("127.0.0.1:0", tls)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


@pytest.mark.e2e
def test_check_returns_domain_records(tmp_path: Path, certs: Certs) -> None:
    async def body() -> None:
        async with serving(FakeLnd(), certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                info, version = await lnd.check()
        assert info == NodeInfo(
            pubkey=OUR_PUBKEY,
            alias="fake",
            version="0.18.3-beta commit=v0.18.3-beta",
            network="regtest",
            block_height=321,
            synced_to_chain=True,
        )
        assert version == LndVersion(0, 18, 3, "0.18.3-beta")

    run(body)


@pytest.mark.e2e
def test_get_version_without_versioner_parses_getinfo(tmp_path: Path, certs: Certs) -> None:
    async def body() -> None:
        async with serving(FakeLnd(version="0.9.2-beta"), certs.node, versioner=False) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                assert await lnd.get_version() == LndVersion(0, 9, 2, "0.9.2-beta")

    run(body)


@pytest.mark.e2e
def test_unary_rpcs_return_domain_records(tmp_path: Path, certs: Certs) -> None:
    node = FakeLnd(
        forwards=[
            lightning_pb2.ForwardingEvent(
                timestamp_ns=(1_000 + i) * 10**9, chan_id_in=ALIAS_SCID, amt_in_msat=i
            )
            for i in range(5)
        ]
    )

    async def body() -> None:
        async with serving(node, certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                channels = await lnd.list_channels()
                fees = await lnd.fee_report()
                edge = await lnd.get_chan_info(ALIAS_SCID)
                missing_new = await lnd.get_chan_info(1)
                missing_old = await lnd.get_chan_info(2)
                alias = await lnd.get_node_alias(PEER_PUBKEY)
                unknown = await lnd.get_node_alias(OUR_PUBKEY)
                pages: list[ForwardingPage] = []
                offset = 0
                while True:
                    page = await lnd.forwarding_history(
                        start_time_s=1_001, index_offset=offset, num_max_events=2
                    )
                    pages.append(page)
                    if not page.events:
                        break
                    offset = page.last_offset_index

        assert channels == [convert.channel_info(_channel())]
        assert fees == [FeeReportEntry(ALIAS_SCID, "x:1", 0, 7)]
        assert edge is not None
        assert edge.chan_id == ALIAS_SCID
        assert edge.policies_for(OUR_PUBKEY) == (None, convert.routing_policy(_policy(100)))
        assert missing_new is None
        assert missing_old is None
        assert alias == "peer-alias"
        assert unknown is None
        assert [[e.amt_in_msat for e in p.events] for p in pages] == [[1, 2], [3, 4], []]
        assert [p.last_offset_index for p in pages] == [2, 4, 4]

    run(body)


@pytest.mark.e2e
def test_wrong_macaroon_is_rejected(tmp_path: Path, certs: Certs) -> None:
    async def body() -> None:
        async with serving(FakeLnd(), certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, b"another node")
            async with LndClient(creds, timeout_s=5) as lnd:
                with pytest.raises(MacaroonRejectedError) as info:
                    await lnd.check()
        assert str(info.value) == (
            f"LND rejected the macaroon {creds.macaroonpath} ({SIG_MISMATCH}): "
            "use the macaroon of this node and network (--macaroonpath)"
        )
        assert isinstance(info.value.__cause__, RpcFailure)

    run(body)


@pytest.mark.e2e
def test_missing_permission_is_named(tmp_path: Path, certs: Certs) -> None:
    async def body() -> None:
        async with serving(FakeLnd(denied={"ListChannels"}), certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                await lnd.get_info()
                with pytest.raises(MacaroonRejectedError, match="lacks offchain:read"):
                    await lnd.list_channels()

    run(body)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("server_cert", "host", "fragment"),
    [
        pytest.param("other", "localhost", "does not match the node's certificate", id="wrong"),
        pytest.param("localhost_only", "127.0.0.1", "does not list '127.0.0.1'", id="host"),
        pytest.param(None, "localhost", "does not speak TLS", id="plaintext"),
    ],
)
def test_tls_failures(
    tmp_path: Path, certs: Certs, server_cert: str | None, host: str, fragment: str
) -> None:
    pair = None if server_cert is None else getattr(certs, server_cert)
    # The client trusts certs.node except in the host case, where it trusts the server's
    # own certificate, which does not list the address dialled.
    trusted = certs.localhost_only if server_cert == "localhost_only" else certs.node

    async def body() -> None:
        async with serving(FakeLnd(), pair) as port:
            creds = write_credentials(tmp_path, port, trusted.cert_pem, MACAROON, host=host)
            async with LndClient(creds, timeout_s=5) as lnd:
                with pytest.raises(TlsMismatchError) as info:
                    await lnd.get_info()
        assert fragment in str(info.value)
        assert str(creds.tlscertpath) in str(info.value) or server_cert is None
        assert isinstance(info.value.__cause__, RpcFailure)

    run(body)


@pytest.mark.e2e
def test_closed_port_is_unreachable(tmp_path: Path, certs: Certs) -> None:
    port = free_port()

    async def body() -> None:
        creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
        async with LndClient(creds, timeout_s=5) as lnd:
            with pytest.raises(NodeUnreachableError) as info:
                await lnd.get_info()
        assert str(info.value) == (
            f"cannot reach LND at localhost:{port} (Failed to connect to remote host: "
            "Connection refused): is lnd running and is --rpcserver right?"
        )

    run(body)


@pytest.mark.e2e
def test_silent_peer_times_out_as_unreachable(tmp_path: Path, certs: Certs) -> None:
    """A port that accepts TCP but never completes TLS: deadline while connecting."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]

        async def body() -> None:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=0.5) as lnd:
                with pytest.raises(NodeUnreachableError, match=r"no answer within 0\.5s"):
                    await lnd.get_info()

        run(body)


@pytest.mark.e2e
def test_gateway_killed_fails_the_pending_call_and_the_next_call_starts_another(
    tmp_path: Path, certs: Certs
) -> None:
    async def body() -> None:
        node = FakeLnd()
        async with serving(node, certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                await lnd.get_info()
                first = lnd.gateway_pid
                assert first is not None
                node.hold_get_info = asyncio.Event()
                node.get_info_asked.clear()
                pending = asyncio.create_task(lnd.get_info())
                await node.get_info_asked.wait()  # the call is in the gateway
                os.kill(first, signal.SIGKILL)
                with pytest.raises(LndRpcError) as info:
                    await pending
                assert str(info.value) == (
                    "the lnd gateway process exited unexpectedly (status -9)"
                )
                node.hold_get_info = None
                assert (await lnd.get_info()).alias == "fake"
                assert lnd.gateway_pid not in (None, first)
                stream = lnd.subscribe_htlc_events()  # streams run in the new one too
                assert await collect(stream) == []

    run(body)


@pytest.mark.e2e
def test_gateway_stuck_is_replaced_after_the_call_deadline(
    tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway alive but answering nothing (stopped here) is killed once a call
    outlives its deadline and grace; the next call runs in a new one."""
    monkeypatch.setattr(gateway_module, "ANSWER_GRACE_S", 0.5)

    async def body() -> None:
        node = FakeLnd()
        async with serving(node, certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=1) as lnd:
                await lnd.get_info()
                first = lnd.gateway_pid
                assert first is not None
                os.kill(first, signal.SIGSTOP)
                with pytest.raises(LndRpcError, match=r"did not answer \S*GetInfo within 1\.5s"):
                    await lnd.get_info()
                assert (await lnd.get_info()).alias == "fake"
                assert lnd.gateway_pid not in (None, first)
                assert await _reaped(first)  # killed, not left stopped

    run(body)


async def _reaped(pid: int, within_s: float = 10.0) -> bool:
    """The process is gone (killed and reaped) within ``within_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.05)
    return False


def test_missing_files_raise_before_connecting(tmp_path: Path) -> None:
    async def body() -> None:
        creds = LndCredentials.resolve(lnddir=tmp_path)
        async with LndClient(creds) as lnd:
            await lnd.get_info()

    with pytest.raises(CertificateMissingError):
        run(body)


# --------------------------------------------------------------------------- stream

STREAM_EVENTS = [
    router_pb2.HtlcEvent(timestamp_ns=1, subscribed_event=router_pb2.SubscribedEvent()),
    router_pb2.HtlcEvent(**_KEY, event_type=3, forward_event=router_pb2.ForwardEvent(info=_info())),
    router_pb2.HtlcEvent(
        **_KEY,
        event_type=3,
        link_fail_event=router_pb2.LinkFailEvent(info=_info(), wire_failure=12, failure_detail=1),
    ),
    router_pb2.HtlcEvent(**_KEY, event_type=3, settle_event=router_pb2.SettleEvent()),
    router_pb2.HtlcEvent(
        incoming_channel_id=ALIAS_SCID,
        incoming_htlc_id=7,
        final_htlc_event=router_pb2.FinalHtlcEvent(settled=True, offchain=True),
    ),
]


async def collect(stream: HtlcStream) -> list[HtlcEvent | StreamSubscribed]:
    return [event async for event in stream]


@pytest.mark.e2e
def test_stream_yields_domain_events_and_ends_on_ok(tmp_path: Path, certs: Certs) -> None:
    node = FakeLnd(stream=StreamScript(events=STREAM_EVENTS))

    async def body() -> None:
        async with serving(node, certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                stream = lnd.subscribe_htlc_events()
                await stream.wait_connected(5)
                events = await collect(stream)
        assert events == [convert.htlc_event(m) for m in STREAM_EVENTS]
        assert isinstance(events[0], StreamSubscribed)
        assert [e.kind for e in events[1:] if isinstance(e, HtlcEvent)] == [
            EventKind.FORWARD,
            EventKind.LINK_FAIL,
            EventKind.SETTLE,
            EventKind.FINAL,
        ]
        assert stream.received == len(STREAM_EVENTS)

    run(body)


@pytest.mark.e2e
def test_stream_many_events_arrive_in_order(tmp_path: Path, certs: Certs) -> None:
    events = [
        router_pb2.HtlcEvent(incoming_htlc_id=i, forward_fail_event=router_pb2.ForwardFailEvent())
        for i in range(2_000)
    ]
    node = FakeLnd(stream=StreamScript(events=events))

    async def body() -> None:
        async with serving(node, certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                got = await collect(lnd.subscribe_htlc_events())
        assert [e.incoming_htlc_id for e in got if isinstance(e, HtlcEvent)] == list(range(2_000))

    run(body)


@pytest.mark.e2e
def test_unary_calls_are_answered_while_a_stream_is_not_read(tmp_path: Path, certs: Certs) -> None:
    """The stream's batches wait in the gateway (grpc's flow control), not in the pipe
    the unary answers share: a reader that falls behind holds back only its stream."""
    events = [
        router_pb2.HtlcEvent(incoming_htlc_id=i, forward_fail_event=router_pb2.ForwardFailEvent())
        for i in range(20_000)
    ]
    node = FakeLnd(stream=StreamScript(events=events, hold=True))

    async def body() -> None:
        async with serving(node, certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                stream = lnd.subscribe_htlc_events()
                await stream.wait_connected(5)
                for _ in range(20):  # the stream is not read meanwhile
                    assert (await lnd.get_info()).alias == "fake"
                    await lnd.probe(5)
                got = []
                async for event in stream:
                    assert isinstance(event, HtlcEvent)
                    got.append(event.incoming_htlc_id)
                    if len(got) == len(events):
                        stream.cancel()
        assert got == list(range(20_000))

    run(body)


@pytest.mark.e2e
def test_stream_not_read_holds_lnd_back_within_the_initial_window(
    tmp_path: Path, certs: Certs
) -> None:
    """A reader that stops reading holds lnd back: the gateway takes the batches it may
    send ahead (MAX_UNACKED) and grpc's initial flow-control window of lnd's messages,
    no more. grpc's bandwidth probing would widen the window of a busy stream to
    megabytes and buffer that much of lnd's stream in the gateway."""
    failure = "x" * 200  # ~250 B a message, as lnd's link failures with their text
    events = [
        router_pb2.HtlcEvent(
            incoming_htlc_id=i,
            link_fail_event=router_pb2.LinkFailEvent(info=_info(), failure_string=failure),
        )
        for i in range(100_000)  # 60 000 read busy, then more than the widened window holds
    ]
    size = len(events[0].SerializeToString())
    ahead = 16 * 512  # the batches the gateway sends ahead (MAX_UNACKED x MAX_BATCH)
    slack = (512 * 1024) // size  # the window, the pipe, the batch being filled
    node = FakeLnd(stream=StreamScript(events=events, hold=True))

    async def body() -> None:
        async with serving(node, certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                stream = lnd.subscribe_htlc_events()
                last = -1
                async for event in stream:  # a busy stream first: grpc probes and widens
                    assert isinstance(event, HtlcEvent)
                    last = event.incoming_htlc_id
                    if last == 60_000:
                        break
                # then nothing is read until lnd stops being able to send
                sent, still = -1, 0
                while still < 10:
                    await asyncio.sleep(0.1)
                    sent, still = node.sent, (still + 1 if node.sent == sent else 0)
                held = sent - stream.received
                assert held <= ahead + slack, (held, ahead, slack)
                got = []
                async for event in stream:  # and the rest arrives, in order
                    assert isinstance(event, HtlcEvent)
                    got.append(event.incoming_htlc_id)
                    if got[-1] == len(events) - 1:
                        stream.cancel()
        assert got == list(range(last + 1, len(events)))

    run(body, timeout_s=120)  # 100 000 messages through grpc: ~15 s on a loaded machine


@pytest.mark.e2e
def test_stream_unavailable_abort_raises_mapped_error(tmp_path: Path, certs: Certs) -> None:
    script = StreamScript(
        events=STREAM_EVENTS[:2], abort=(grpc.StatusCode.UNAVAILABLE, "lnd is shutting down")
    )

    async def body() -> None:
        async with serving(FakeLnd(stream=script), certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                stream = lnd.subscribe_htlc_events()
                got = []
                with pytest.raises(NodeUnreachableError) as info:
                    async for event in stream:
                        got.append(event)
        assert len(got) == 2
        assert str(info.value) == (
            f"lost the connection to LND at localhost:{port} (lnd is shutting down): "
            "lnd stopped or restarted; is lnd running?"
        )
        assert isinstance(info.value.__cause__, RpcFailure)

    run(body)


@pytest.mark.e2e
def test_stream_other_error_names_code_and_details(tmp_path: Path, certs: Certs) -> None:
    detail = "unknown fail resolution"
    script = StreamScript(abort=(grpc.StatusCode.UNKNOWN, detail))

    async def body() -> None:
        async with serving(FakeLnd(stream=script), certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                with pytest.raises(LndRpcError) as info:
                    await collect(lnd.subscribe_htlc_events())
        assert str(info.value) == f"LND SubscribeHtlcEvents failed with UNKNOWN: {detail}"

    run(body)


@pytest.mark.e2e
def test_wait_connected_quiet_stream_then_cancel(tmp_path: Path, certs: Certs) -> None:
    """lnd < 0.16 sends nothing until the first event: a live call counts as connected."""

    async def body() -> None:
        node = FakeLnd(stream=StreamScript(hold=True))
        async with serving(node, certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                stream = lnd.subscribe_htlc_events()
                await stream.wait_connected(0.3)
                assert not stream.established
                assert node.subscribers == 1
                stream.cancel()
                assert await collect(stream) == []

    run(body)


@pytest.mark.e2e
def test_wait_connected_after_subscribed_event(tmp_path: Path, certs: Certs) -> None:
    async def body() -> None:
        node = FakeLnd(stream=StreamScript(events=STREAM_EVENTS[:1], hold=True))
        async with serving(node, certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, MACAROON)
            async with LndClient(creds, timeout_s=5) as lnd:
                stream = lnd.subscribe_htlc_events()
                await stream.wait_connected(5)
                assert stream.established
                assert await anext(stream) == StreamSubscribed(timestamp_ns=1)
                reader = asyncio.create_task(collect(stream))
                await asyncio.sleep(0.05)
            # closing the client ends the stream quietly
            assert await reader == []

    run(body)


@pytest.mark.e2e
def test_wait_connected_raises_when_call_fails(tmp_path: Path, certs: Certs) -> None:
    async def body() -> None:
        creds = write_credentials(tmp_path, free_port(), certs.node.cert_pem, MACAROON)
        async with LndClient(creds, timeout_s=5) as lnd:
            stream = lnd.subscribe_htlc_events()
            with pytest.raises(NodeUnreachableError, match="Connection refused") as info:
                await stream.wait_connected(5)
            assert isinstance(info.value.__cause__, RpcFailure)
            with pytest.raises(NodeUnreachableError):
                await collect(stream)

        async with serving(FakeLnd(), certs.node) as port:
            creds = write_credentials(tmp_path, port, certs.node.cert_pem, b"wrong")
            async with LndClient(creds, timeout_s=5) as lnd:
                with pytest.raises(MacaroonRejectedError):
                    await lnd.subscribe_htlc_events().wait_connected(5)

    run(body)


def test_routing_policy_reads_our_inbound_fee() -> None:
    """lnd >= 0.18 sends the inbound fee as int32 fields 9 and 10, usually negative."""
    wire = lightning_pb2.RoutingPolicy(
        fee_base_msat=1_000,
        fee_rate_milli_msat=200,
        inbound_fee_base_msat=-25,
        inbound_fee_rate_milli_msat=-150,
    ).SerializeToString()
    policy = convert.routing_policy(lightning_pb2.RoutingPolicy.FromString(wire))
    assert (policy.fee_base_msat, policy.fee_rate_ppm) == (1_000, 200)
    assert (policy.inbound_fee_base_msat, policy.inbound_fee_rate_ppm) == (-25, -150)
    before_018 = convert.routing_policy(lightning_pb2.RoutingPolicy(fee_base_msat=1))
    assert (before_018.inbound_fee_base_msat, before_018.inbound_fee_rate_ppm) == (0, 0)
