"""LndManageClient against a fake lnd-manageJ (httpx.MockTransport: the network edge)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

from lnflow.domain import format_scid
from lnflow.manage import (
    DEFAULT_MANAGE_URL,
    ChannelBalance,
    ChannelFeeReport,
    LndManageClient,
    ManageError,
)

pytestmark = pytest.mark.timeout(20)

CHAN = (799_999 << 40) | (1234 << 16) | 1
ALIAS_SCID = (16_000_000 << 40) | (1 << 16)  # >= 2**63: Java's long cannot hold it
PUBKEY = "03" + "ab" * 32

BALANCE = {
    "localBalanceSat": "400000",
    "localReserveSat": "10000",
    "localAvailableSat": "390000",
    "remoteBalanceSat": "600000",
    "remoteReserveSat": "10000",
    "remoteAvailableSat": "590000",
}
POLICY = {
    "feeRatePpm": 250,
    "baseFeeMilliSat": "1000",
    "inboundFeeRatePpm": 0,
    "inboundBaseFeeMilliSat": "0",
    "enabled": True,
    "timeLockDelta": 40,
    "minHtlcMilliSat": "1000",
    "maxHtlcMilliSat": "990000000",
}
CHANNEL = {
    "channelIdShort": str(CHAN),
    "channelIdCompact": format_scid(CHAN),
    "channelIdCompactLnd": format_scid(CHAN).replace("x", ":"),
    "channelPoint": "ab" * 32 + ":1",
    "openHeight": 799_999,
    "remotePubkey": PUBKEY,
    "capacitySat": "1000000",
    "totalSentSat": "12345",
    "totalReceivedSat": "67890",
    "status": {"private": False, "active": True, "closed": False, "openClosed": "OPEN"},
    "openInitiator": "LOCAL",
    "numUpdates": 42,
}
DETAILS = {
    **CHANNEL,
    "remoteAlias": "bob",
    "balance": BALANCE,
    "policies": {"local": POLICY, "remote": {**POLICY, "feeRatePpm": 1, "enabled": False}},
    "feeReport": {"earnedMilliSat": "1500", "sourcedMilliSat": "250"},
    "warnings": ["Channel has accumulated 42 updates"],
}


def serve(routes: dict[str, Any], seen: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.method != "GET":
            return httpx.Response(405)
        body = routes.get(request.url.path)
        if body is None:
            return httpx.Response(404, text="Not Found")
        if isinstance(body, str):
            return httpx.Response(200, text=body, headers={"content-type": "text/plain"})
        return httpx.Response(200, content=json.dumps(body).encode())

    return httpx.MockTransport(handler)


def run(coro_fn: Callable[[LndManageClient], Coroutine[Any, Any, Any]], routes: dict[str, Any]):
    seen: list[str] = []

    async def main() -> Any:
        async with LndManageClient(transport=serve(routes, seen)) as client:
            return await coro_fn(client)

    return asyncio.run(main()), seen


def test_default_url_is_lnd_manage_default() -> None:
    assert DEFAULT_MANAGE_URL == "http://127.0.0.1:8081"
    assert LndManageClient().base_url == "http://127.0.0.1:8081"


def test_channel_details_parse_numeric_strings() -> None:
    path = f"/api/channel/{format_scid(CHAN)}/details"
    details, seen = run(lambda c: c.get_channel_details(CHAN), {path: DETAILS})
    assert seen == [path]
    assert details.channel_id == CHAN
    assert details.remote_alias == "bob" and details.remote_pubkey == PUBKEY
    assert details.capacity_sat == 1_000_000 and details.active and not details.closed
    assert details.balance == ChannelBalance(400_000, 10_000, 390_000, 600_000, 10_000, 590_000)
    assert details.policies.local.fee_rate_ppm == 250
    assert details.policies.local.max_htlc_msat == 990_000_000
    assert details.policies.remote.enabled is False
    assert details.fee_report == ChannelFeeReport(earned_msat=1500, sourced_msat=250)
    assert details.warnings == ("Channel has accumulated 42 updates",)


def test_basic_channel_info_uses_the_trailing_slash() -> None:
    path = f"/api/channel/{format_scid(CHAN)}/"
    info, seen = run(lambda c: c.get_channel_info(format_scid(CHAN)), {path: CHANNEL})
    assert seen == [path]
    assert info.channel_id == CHAN and info.status == "OPEN" and info.open_initiator == "LOCAL"
    assert info.total_sent_sat == 12_345 and info.open_height == 799_999


def test_alias_scids_go_into_paths_as_bxtxo() -> None:
    path = f"/api/channel/{format_scid(ALIAS_SCID)}/balance"
    balance, seen = run(lambda c: c.get_channel_balance(ALIAS_SCID), {path: BALANCE})
    assert seen == [path] and balance.local_balance_sat == 400_000


def test_policies_fee_report_status_and_alias() -> None:
    base = f"/api/channel/{format_scid(CHAN)}"
    routes = {
        f"{base}/policies": {"local": POLICY, "remote": POLICY},
        f"{base}/fee-report": {"earnedMilliSat": "7", "sourcedMilliSat": "0"},
        "/api/status/open-channels": {"channels": [format_scid(CHAN), format_scid(ALIAS_SCID)]},
        "/api/status/block-height": 880_000,
        "/api/status/synced-to-chain": True,
        f"/api/node/{PUBKEY}/alias": "bob 🐝\n",
    }

    async def calls(c: LndManageClient) -> tuple[Any, ...]:
        return (
            await c.get_channel_policies(CHAN),
            await c.get_channel_fee_report(CHAN),
            await c.get_open_channels(),
            await c.get_block_height(),
            await c.is_synced_to_chain(),
            await c.get_node_alias(PUBKEY),
        )

    (policies, fees, channels, height, synced, alias), _ = run(calls, routes)
    assert policies.remote.base_fee_msat == 1000
    assert fees.earned_msat == 7
    assert channels == [CHAN, ALIAS_SCID]
    assert height == 880_000 and synced is True
    assert alias == "bob 🐝"


def test_payment_endpoints_are_never_called() -> None:
    async def pay(c: LndManageClient) -> Any:
        return await c._get("/api/payments/pay-payment-request/lnbc1")

    with pytest.raises(ValueError, match="never calls"):
        run(pay, {})


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ({}, "answered GET /api/channel/799999x1234x1/details with HTTP 404"),
        ({"/api/channel/799999x1234x1/details": "<html>"}, "the answer is not JSON"),
        (
            {"/api/channel/799999x1234x1/details": {**DETAILS, "capacitySat": "lots"}},
            "unexpected capacitySat 'lots'",
        ),
        (
            {
                "/api/channel/799999x1234x1/details": {
                    k: v for k, v in DETAILS.items() if k != "balance"
                }
            },
            "no 'balance' in the answer",
        ),
    ],
    ids=["404", "not-json", "bad-number", "missing"],
)
def test_bad_answers_are_manage_errors(routes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ManageError) as err:
        run(lambda c: c.get_channel_details(CHAN), routes)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_unreachable_is_one_line_naming_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    async def main() -> None:
        async with LndManageClient(
            "http://127.0.0.1:1/", transport=httpx.MockTransport(refuse)
        ) as c:
            await c.get_node_alias(PUBKEY)

    with pytest.raises(ManageError) as err:
        asyncio.run(main())
    message = str(err.value)
    assert message.startswith("lnd-manageJ at http://127.0.0.1:1 did not answer GET /api/node/")
    assert "check --manage-url" in message
    assert isinstance(err.value.__cause__, httpx.ConnectError)
