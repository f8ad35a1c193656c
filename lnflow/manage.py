"""lnd-manageJ adapter: a few read-only GETs, typed (lnd-api.md §6).

lnd-manageJ is optional enrichment (aliases, fee and flow reports); lnflow
needs nothing from it. Its JSON carries most amounts as strings
(``"capacitySat": "1000000"``): they are parsed into ints here, and channel ids
(``"BxTxO"``) into unsigned SCIDs. Only GETs are made, and never under
``/api/payments/`` (some of those endpoints pay). HTTP and parsing failures
become :class:`ManageError`, chained to the original.

    async with LndManageClient("http://127.0.0.1:8081") as manage:
        alias = await manage.get_node_alias(pubkey)
        details = await manage.get_channel_details(chan_id)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from lnflow.domain import format_scid, parse_scid
from lnflow.errors import ManageError

__all__ = [
    "DEFAULT_MANAGE_URL",
    "ChannelBalance",
    "ChannelDetails",
    "ChannelFeeReport",
    "ChannelOverview",
    "ChannelPolicies",
    "LndManageClient",
    "ManageError",
    "Policy",
]

DEFAULT_MANAGE_URL = "http://127.0.0.1:8081"
_FORBIDDEN_PREFIX = "/api/payments"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ChannelOverview:
    """``/api/channel/{id}/``: the basic channel facts."""

    channel_id: int
    channel_point: str
    remote_pubkey: str
    capacity_sat: int
    open_height: int
    total_sent_sat: int
    total_received_sat: int
    active: bool
    private: bool
    closed: bool
    status: str  # OPEN, FORCE_CLOSING, WAITING_CLOSE, CLOSED
    open_initiator: str  # LOCAL, REMOTE, UNKNOWN


@dataclass(frozen=True, slots=True)
class ChannelBalance:
    """``/api/channel/{id}/balance`` (available = max(0, balance − reserve))."""

    local_balance_sat: int
    local_reserve_sat: int
    local_available_sat: int
    remote_balance_sat: int
    remote_reserve_sat: int
    remote_available_sat: int


@dataclass(frozen=True, slots=True)
class Policy:
    fee_rate_ppm: int
    base_fee_msat: int
    inbound_fee_rate_ppm: int
    inbound_base_fee_msat: int
    enabled: bool
    time_lock_delta: int
    min_htlc_msat: int
    max_htlc_msat: int


@dataclass(frozen=True, slots=True)
class ChannelPolicies:
    local: Policy
    remote: Policy


@dataclass(frozen=True, slots=True)
class ChannelFeeReport:
    """Fees from forwards out of (earned) and into (sourced) the channel."""

    earned_msat: int
    sourced_msat: int


@dataclass(frozen=True, slots=True)
class ChannelDetails:
    """``/api/channel/{id}/details``: the basic facts plus balance, policies, fees."""

    channel_id: int
    channel_point: str
    remote_pubkey: str
    remote_alias: str
    capacity_sat: int
    active: bool
    closed: bool
    balance: ChannelBalance
    policies: ChannelPolicies
    fee_report: ChannelFeeReport
    warnings: tuple[str, ...]


# --------------------------------------------------------------------------- parsing


class _Json:
    """Typed reads of one JSON object; a missing or malformed field is a ManageError."""

    def __init__(self, obj: object, where: str) -> None:
        if not isinstance(obj, dict):
            raise ManageError(f"lnd-manageJ {where}: expected a JSON object")
        self._obj: Mapping[str, object] = obj
        self._where = where

    def _get(self, key: str) -> object:
        try:
            return self._obj[key]
        except KeyError:
            raise ManageError(f"lnd-manageJ {self._where}: no '{key}' in the answer") from None

    def int_(self, key: str, default: int | None = None) -> int:
        """A number given as a JSON number or a numeric string (lnd-manageJ does both)."""
        if default is not None and self._obj.get(key) is None:
            return default
        value = self._get(key)
        if isinstance(value, bool):
            raise self._bad(key, value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise self._bad(key, value) from None
        raise self._bad(key, value)

    def str_(self, key: str, default: str | None = None) -> str:
        if default is not None and self._obj.get(key) is None:
            return default
        value = self._get(key)
        if not isinstance(value, str):
            raise self._bad(key, value)
        return value

    def bool_(self, key: str, default: bool | None = None) -> bool:
        if default is not None and self._obj.get(key) is None:
            return default
        value = self._get(key)
        if isinstance(value, str) and value in ("true", "false"):
            return value == "true"
        if not isinstance(value, bool):
            raise self._bad(key, value)
        return value

    def chan(self, key: str) -> int:
        text = self.str_(key)
        try:
            return parse_scid(text)
        except ValueError:
            raise self._bad(key, text) from None

    def sub(self, key: str) -> _Json:
        return _Json(self._get(key), f"{self._where}.{key}")

    def list_(self, key: str) -> list[object]:
        value = self._obj.get(key) or []
        if not isinstance(value, list):
            raise self._bad(key, value)
        return value

    def _bad(self, key: str, value: object) -> ManageError:
        return ManageError(f"lnd-manageJ {self._where}: unexpected {key} {value!r}")


def _channel_info(j: _Json) -> ChannelOverview:
    status = j.sub("status")
    return ChannelOverview(
        channel_id=j.chan("channelIdCompact"),
        channel_point=j.str_("channelPoint"),
        remote_pubkey=j.str_("remotePubkey"),
        capacity_sat=j.int_("capacitySat"),
        open_height=j.int_("openHeight", 0),
        total_sent_sat=j.int_("totalSentSat", 0),
        total_received_sat=j.int_("totalReceivedSat", 0),
        active=status.bool_("active", False),
        private=status.bool_("private", False),
        closed=status.bool_("closed", False),
        status=status.str_("openClosed", ""),
        open_initiator=j.str_("openInitiator", "UNKNOWN"),
    )


def _balance(j: _Json) -> ChannelBalance:
    return ChannelBalance(
        local_balance_sat=j.int_("localBalanceSat"),
        local_reserve_sat=j.int_("localReserveSat", 0),
        local_available_sat=j.int_("localAvailableSat", 0),
        remote_balance_sat=j.int_("remoteBalanceSat"),
        remote_reserve_sat=j.int_("remoteReserveSat", 0),
        remote_available_sat=j.int_("remoteAvailableSat", 0),
    )


def _policy(j: _Json) -> Policy:
    return Policy(
        fee_rate_ppm=j.int_("feeRatePpm"),
        base_fee_msat=j.int_("baseFeeMilliSat", 0),
        inbound_fee_rate_ppm=j.int_("inboundFeeRatePpm", 0),
        inbound_base_fee_msat=j.int_("inboundBaseFeeMilliSat", 0),
        enabled=j.bool_("enabled", True),
        time_lock_delta=j.int_("timeLockDelta", 0),
        min_htlc_msat=j.int_("minHtlcMilliSat", 0),
        max_htlc_msat=j.int_("maxHtlcMilliSat", 0),
    )


def _policies(j: _Json) -> ChannelPolicies:
    return ChannelPolicies(local=_policy(j.sub("local")), remote=_policy(j.sub("remote")))


def _fee_report(j: _Json) -> ChannelFeeReport:
    return ChannelFeeReport(
        earned_msat=j.int_("earnedMilliSat", 0), sourced_msat=j.int_("sourcedMilliSat", 0)
    )


def _details(j: _Json) -> ChannelDetails:
    info = _channel_info(j)
    return ChannelDetails(
        channel_id=info.channel_id,
        channel_point=info.channel_point,
        remote_pubkey=info.remote_pubkey,
        remote_alias=j.str_("remoteAlias", ""),
        capacity_sat=info.capacity_sat,
        active=info.active,
        closed=info.closed,
        balance=_balance(j.sub("balance")),
        policies=_policies(j.sub("policies")),
        fee_report=_fee_report(j.sub("feeReport")),
        warnings=tuple(str(w) for w in j.list_("warnings")),
    )


# --------------------------------------------------------------------------- client


def _channel_path(chan_id: int | str) -> str:
    """Channels go into paths as ``BxTxO``: Java's long cannot take SCIDs ≥ 2^63."""
    scid = chan_id if isinstance(chan_id, int) else parse_scid(chan_id)
    return format_scid(scid)


class LndManageClient:
    """Read-only client for lnd-manageJ's REST API.

    Use as ``async with LndManageClient(url) as manage: ...`` (or call
    :meth:`close`). ``transport`` is for tests (``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_MANAGE_URL,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout_s,
            transport=transport,
            headers={"Accept": "application/json, text/plain"},
        )

    async def __aenter__(self) -> LndManageClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # -- plumbing ------------------------------------------------------------------------

    async def _get(self, path: str) -> httpx.Response:
        if path.startswith(_FORBIDDEN_PREFIX):
            raise ValueError(f"{path}: lnflow never calls lnd-manageJ's payment endpoints")
        try:
            resp = await self._http.get(path)
        except httpx.HTTPError as exc:
            raise ManageError(
                f"lnd-manageJ at {self.base_url} did not answer GET {path} ({exc!r}): "
                "is it running? check --manage-url"
            ) from exc
        if resp.status_code != 200:
            raise ManageError(
                f"lnd-manageJ at {self.base_url} answered GET {path} with HTTP "
                f"{resp.status_code}: check --manage-url and that lnd-manageJ is synced"
            )
        return resp

    async def _json(self, path: str) -> Any:
        resp = await self._get(path)
        try:
            return resp.json()
        except ValueError as exc:
            raise ManageError(f"lnd-manageJ GET {path}: the answer is not JSON") from exc

    async def _object(self, path: str) -> _Json:
        return _Json(await self._json(path), f"GET {path}")

    # -- status --------------------------------------------------------------------------

    async def is_synced_to_chain(self) -> bool:
        """False also when lnd-manageJ cannot reach lnd."""
        return await self._json("/api/status/synced-to-chain") is True

    async def get_block_height(self) -> int:
        value = await self._json("/api/status/block-height")
        return _Json({"height": value}, "GET /api/status/block-height").int_("height")

    async def get_open_channels(self) -> list[int]:
        """SCIDs of the open channels."""
        j = await self._object("/api/status/open-channels")
        return [_Json({"c": c}, "open-channels").chan("c") for c in j.list_("channels")]

    # -- channels ------------------------------------------------------------------------

    async def get_channel_info(self, chan_id: int | str) -> ChannelOverview:
        # the trailing slash matters: Spring Boot 3 does not match the path without it
        return _channel_info(await self._object(f"/api/channel/{_channel_path(chan_id)}/"))

    async def get_channel_balance(self, chan_id: int | str) -> ChannelBalance:
        return _balance(await self._object(f"/api/channel/{_channel_path(chan_id)}/balance"))

    async def get_channel_policies(self, chan_id: int | str) -> ChannelPolicies:
        return _policies(await self._object(f"/api/channel/{_channel_path(chan_id)}/policies"))

    async def get_channel_fee_report(self, chan_id: int | str) -> ChannelFeeReport:
        path = f"/api/channel/{_channel_path(chan_id)}/fee-report"
        return _fee_report(await self._object(path))

    async def get_channel_details(self, chan_id: int | str) -> ChannelDetails:
        return _details(await self._object(f"/api/channel/{_channel_path(chan_id)}/details"))

    # -- nodes ---------------------------------------------------------------------------

    async def get_node_alias(self, pubkey: str) -> str:
        """The node's alias (lnd-manageJ answers plain text; the pubkey if it knows none)."""
        resp = await self._get(f"/api/node/{pubkey}/alias")
        return resp.text.strip()
