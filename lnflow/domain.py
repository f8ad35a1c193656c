"""Domain records: plain frozen dataclasses and enums, no I/O.

Every other layer speaks in these types. Units are in the names (``_msat``,
``_sat``, ``_ns``, ``_s``); money is always an integer. SCIDs are unsigned
64-bit integers here; only the store maps them to signed 64-bit.

One word, one place: the failure class, a forward attempt's outcome and the
daemon's and stream's states are enums here, and every table column, metric
label, export column and display abbreviation derives from them. Their stored
values (ints for classes and outcomes, strings for states) are the enum values,
so rows and JSON read back into members unchanged. Time units and the few
number helpers every layer needs (signed 64-bit mapping, nearest-rank
percentile, sats on display) are defined here once.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

# the two enums the store counts by live in lnflow.kinds (standard library only, for
# lnflowctl status); they are part of this vocabulary
from lnflow.kinds import EventKind, Outcome

if TYPE_CHECKING:
    from fractions import Fraction

__all__ = [
    "FAILURE_CLASS_NAMES",
    "MSAT_PER_SAT",
    "NS_PER_DAY",
    "NS_PER_HOUR",
    "NS_PER_S",
    "ChannelEdge",
    "ChannelInfo",
    "ChannelSample",
    "DaemonState",
    "EventKind",
    "EventType",
    "FailedPolicyUpdate",
    "FailureClass",
    "FailureDetail",
    "FeeReportEntry",
    "ForwardRecord",
    "ForwardingPage",
    "HtlcEvent",
    "LndVersion",
    "NodeInfo",
    "Outcome",
    "RejectedForward",
    "RoutingPolicy",
    "StreamState",
    "StreamSubscribed",
    "WireFailure",
    "format_scid",
    "from_signed64",
    "nearest_rank",
    "parse_scid",
    "percentile",
    "sats_text",
    "to_signed64",
    "wrap_signed64",
]

_U64 = 1 << 64
_I63 = 1 << 63

# --------------------------------------------------------------------------- units

NS_PER_S = 1_000_000_000
NS_PER_HOUR = 3_600 * NS_PER_S
NS_PER_DAY = 24 * NS_PER_HOUR
MSAT_PER_SAT = 1_000


def sats_text(msat: int, decimals: int | None = None) -> str:
    """Sats for display from msat (the store keeps exact msat).

    ``decimals`` None: exact, whole sats without decimals (``1,234.567``, ``1,234``);
    else rounded to that many places (``1,234.57`` for 2).
    """
    if decimals is not None:
        return f"{msat / MSAT_PER_SAT:,.{decimals}f}"
    sats, rest = divmod(msat, MSAT_PER_SAT)
    if rest == 0:
        return f"{sats:,}"
    return f"{sats:,}.{rest:03d}".rstrip("0")


def nearest_rank(count: int, p: float | Fraction) -> int:
    """The 1-based nearest rank of ``p`` percent among ``count`` values: ⌈p·count/100⌉,
    at least 1 (p0 is the smallest value)."""
    if isinstance(p, int):
        rank = -(-p * count // 100)
    else:  # exactly, as the binary value of a float (imported here: lnflowctl's start-up)
        from fractions import Fraction

        rank = math.ceil(Fraction(p) * count / 100)
    return max(rank, 1)


def percentile(values: Iterable[int], p: float | Fraction) -> int:
    """Nearest-rank percentile: the smallest value with at least ``p`` % of values at or below.

    ``p`` is in [0, 100]; p50 is the median (for an even count, the lower middle).
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    ordered: Sequence[int] = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    return ordered[nearest_rank(len(ordered), p) - 1]


# --------------------------------------------------------------------------- SCIDs


def wrap_signed64(value: int) -> int:
    """:func:`to_signed64` without its range check, for hot paths holding uint64s."""
    return value - _U64 if value >= _I63 else value


def to_signed64(value: int) -> int:
    """Map an unsigned 64-bit integer onto SQLite's signed INTEGER range."""
    if not 0 <= value < _U64:
        raise ValueError(f"not a uint64: {value}")
    return wrap_signed64(value)


def from_signed64(value: int) -> int:
    """Inverse of :func:`to_signed64`."""
    return value + _U64 if value < 0 else value


def format_scid(scid: int) -> str:
    """``BxTxO`` form of a short channel id (block x tx index x output)."""
    return f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}"


_SCID_PARTS = re.compile(r"^(\d+)[x:](\d+)[x:](\d+)$")


def parse_scid(text: str) -> int:
    """Parse a channel id given as decimal, ``BxTxO`` or ``B:T:O``.

    Raises ValueError with a message fit for a one-line CLI error.
    """
    text = text.strip()
    if text.isdigit():
        value = int(text)
        if value >= _U64:
            raise ValueError(f"channel id {text} does not fit in 64 bits")
        return value
    match = _SCID_PARTS.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a channel id: use a decimal SCID or BLOCKxTXxOUTPUT")
    block, tx, out = (int(g) for g in match.groups())
    if block >= 1 << 24 or tx >= 1 << 24 or out >= 1 << 16:
        raise ValueError(f"'{text}' is out of range for a short channel id")
    return (block << 40) | (tx << 16) | out


# --------------------------------------------------------------------------- enums


class EventType(enum.IntEnum):
    """lnd's ``HtlcEvent.EventType``; stored as a plain int (unknown numbers kept)."""

    UNKNOWN = 0
    SEND = 1
    RECEIVE = 2
    FORWARD = 3


class FailureDetail(enum.IntEnum):
    """lnd's ``routerrpc.FailureDetail``."""

    UNKNOWN = 0
    NO_DETAIL = 1
    ONION_DECODE = 2
    LINK_NOT_ELIGIBLE = 3
    ON_CHAIN_TIMEOUT = 4
    HTLC_EXCEEDS_MAX = 5
    INSUFFICIENT_BALANCE = 6
    INCOMPLETE_FORWARD = 7
    HTLC_ADD_FAILED = 8
    FORWARDS_DISABLED = 9
    INVOICE_CANCELED = 10
    INVOICE_UNDERPAID = 11
    INVOICE_EXPIRY_TOO_SOON = 12
    INVOICE_NOT_OPEN = 13
    MPP_INVOICE_TIMEOUT = 14
    ADDRESS_MISMATCH = 15
    SET_TOTAL_MISMATCH = 16
    SET_TOTAL_TOO_LOW = 17
    SET_OVERPAID = 18
    UNKNOWN_INVOICE = 19
    INVALID_KEYSEND = 20
    MPP_IN_PROGRESS = 21
    CIRCULAR_ROUTE = 22
    INVOICE_ALREADY_SETTLED = 23
    HTLC_INVOICE_TYPE_MISMATCH = 24
    AMP_ERROR = 25
    AMP_RECONSTRUCTION = 26
    EXTERNAL_VALIDATION_FAILED = 27


class WireFailure(enum.IntEnum):
    """lnd's ``lnrpc.Failure.FailureCode`` (lnd's own numbers, not BOLT #4 codes)."""

    RESERVED = 0
    INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS = 1
    INCORRECT_PAYMENT_AMOUNT = 2
    FINAL_INCORRECT_CLTV_EXPIRY = 3
    FINAL_INCORRECT_HTLC_AMOUNT = 4
    FINAL_EXPIRY_TOO_SOON = 5
    INVALID_REALM = 6
    EXPIRY_TOO_SOON = 7
    INVALID_ONION_VERSION = 8
    INVALID_ONION_HMAC = 9
    INVALID_ONION_KEY = 10
    AMOUNT_BELOW_MINIMUM = 11
    FEE_INSUFFICIENT = 12
    INCORRECT_CLTV_EXPIRY = 13
    CHANNEL_DISABLED = 14
    TEMPORARY_CHANNEL_FAILURE = 15
    REQUIRED_NODE_FEATURE_MISSING = 16
    REQUIRED_CHANNEL_FEATURE_MISSING = 17
    UNKNOWN_NEXT_PEER = 18
    TEMPORARY_NODE_FAILURE = 19
    PERMANENT_NODE_FAILURE = 20
    PERMANENT_CHANNEL_FAILURE = 21
    EXPIRY_TOO_FAR = 22
    MPP_TIMEOUT = 23
    INVALID_ONION_PAYLOAD = 24
    INVALID_ONION_BLINDING = 25
    INTERNAL_FAILURE = 997
    UNKNOWN_FAILURE = 998
    UNREADABLE_FAILURE = 999


class FailureClass(enum.IntEnum):
    """Why our node failed a forward (DESIGN §4); the value is the rule's precedence
    (:func:`lnflow.analysis.classify.classify`) and the number stored.

    Each member carries its words: ``label`` (JSON, metrics, CSV), ``abbrev`` (compact
    cells: "liq 3, fee 2") and the rollup and opportunity columns ``failures_column`` and
    ``missed_column``. A new class is one line here (plus its Alembic revision adding
    the columns, and its rule in ``classify``).
    """

    label: str
    abbrev: str
    failures_column: str
    missed_column: str

    # (abbrev defaults only for the type checker: FailureClass(3) looks a member up)
    def __new__(cls, value: int, abbrev: str = "") -> FailureClass:
        member = int.__new__(cls, value)
        member._value_ = value
        return member

    def __init__(self, value: int, abbrev: str = "") -> None:
        # plain attributes, not properties: labels are looked up per event and report line
        self.label = self.name.lower()
        self.abbrev = abbrev
        self.failures_column = f"{self.label}_failures"
        self.missed_column = f"{self.label}_missed_msat"

    LIQUIDITY = 1, "liq"
    MAX_HTLC = 2, "max"
    FEE = 3, "fee"
    AVAILABILITY = 4, "avail"
    POLICY = 5, "pol"
    OTHER = 6, "oth"

    @classmethod
    def of_stored(cls, value: int) -> FailureClass:
        """The class of a stored number; numbers this code does not know are OTHER."""
        try:
            return cls(value)
        except ValueError:
            return cls.OTHER


#: the labels in class order (the store's column prefixes)
FAILURE_CLASS_NAMES = tuple(c.label for c in FailureClass)


class StreamState(enum.StrEnum):
    """The HTLC event stream's state (``daemon_state.stream_state``; stored as the text)."""

    IDLE = "idle"  # not subscribed yet
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    UNREACHABLE = "unreachable"
    UNSUPPORTED = "unsupported"  # lnd too old for HTLC events
    STOPPED = "stopped"


class DaemonState(enum.StrEnum):
    """lnflowd's connection to lnd (``daemon_state.lnd_state``; stored as the text)."""

    STARTING = "starting"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    UNREACHABLE = "unreachable"
    ERROR = "error"


# --------------------------------------------------------------------------- records


@dataclass(slots=True, unsafe_hash=True)  # not frozen, see below
class HtlcEvent:
    """One lnd ``HtlcEvent`` (SubscribedEvent excepted, see :class:`StreamSubscribed`).

    Channel and HTLC ids are unsigned; enum fields are plain ints so numbers
    newer than this code survive. Fields a variant does not carry are None.

    Treated as immutable (change a copy with ``dataclasses.replace``; equal events
    hash alike), but not ``frozen``: one is built per streamed event, and a frozen
    dataclass's ``__init__`` sets each of the 16 fields through ``object.__setattr__``,
    about 6 x the time of a plain slots ``__init__`` (bench/README.md, issue 13).
    """

    timestamp_ns: int
    kind: EventKind
    event_type: int
    incoming_channel_id: int
    incoming_htlc_id: int
    outgoing_channel_id: int
    outgoing_htlc_id: int
    incoming_amt_msat: int | None = None
    outgoing_amt_msat: int | None = None
    incoming_timelock: int | None = None
    outgoing_timelock: int | None = None
    wire_failure: int | None = None
    failure_detail: int | None = None
    failure_string: str | None = None
    settled: bool | None = None
    offchain: bool | None = None

    @property
    def key(self) -> tuple[int, int, int, int, int]:
        """Identity across stream replays: (kind, in chan, in htlc, out chan, out htlc).

        Not for SEND link fails (own payments failing at the first hop): lnd gives them
        all the key (kind, 0, 0, chan, 0); the store tells them apart by timestamp.
        """
        return (
            int(self.kind),
            self.incoming_channel_id,
            self.incoming_htlc_id,
            self.outgoing_channel_id,
            self.outgoing_htlc_id,
        )


@dataclass(frozen=True, slots=True)
class StreamSubscribed:
    """lnd >= 0.16 sends this first on every subscription: events flow from here on."""

    timestamp_ns: int


@dataclass(frozen=True, slots=True)
class LndVersion:
    major: int
    minor: int
    patch: int
    version: str  # e.g. "0.18.3-beta"

    @property
    def triple(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def has_htlc_events(self) -> bool:
        """SubscribeHtlcEvents exists since lnd 0.10."""
        return self.triple >= (0, 10, 0)

    @property
    def has_subscribed_event(self) -> bool:
        """SubscribedEvent and FinalHtlcEvent exist since lnd 0.16."""
        return self.triple >= (0, 16, 0)

    @property
    def has_ping_policy(self) -> bool:
        """lnd sets a gRPC keepalive policy (client pings every 5 s allowed) since 0.17;
        before, grpc-go's default punishes client pings less than 5 min apart."""
        return self.triple >= (0, 17, 0)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    pubkey: str
    alias: str
    version: str  # GetInfo.version, e.g. "0.18.3-beta commit=v0.18.3-beta"
    network: str  # mainnet, testnet, signet, regtest, simnet
    block_height: int
    synced_to_chain: bool


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    chan_id: int
    remote_pubkey: str
    channel_point: str
    capacity_sat: int
    local_balance_sat: int
    remote_balance_sat: int
    local_reserve_sat: int
    remote_reserve_sat: int
    active: bool
    private: bool
    peer_alias: str
    uptime_s: int
    lifetime_s: int
    # other ids lnd may name the channel by (lnd >= 0.15.1): its alias SCIDs, and for a
    # zero-conf channel that confirmed, the real SCID its graph edge moved to (0: none).
    # chan_id, the id ListChannels reports, is the channel's id everywhere in lnflow.
    alias_scids: tuple[int, ...] = ()
    confirmed_scid: int = 0
    # what the policy engine's criteria and lnd's update checks read (lnflow.policy)
    initiator: bool = False
    commit_fee_sat: int = 0
    # (incoming, amount_sat, expiration_height) per HTLC in flight
    pending_htlcs: tuple[tuple[bool, int, int], ...] = ()
    min_htlc_floor_msat: int = 0  # local_constraints.min_htlc_msat
    max_pending_msat: int = 0  # local_constraints.max_pending_amt_msat; 0 = not known

    @property
    def other_ids(self) -> frozenset[int]:
        """Every id of the channel but ``chan_id``."""
        ids = {*self.alias_scids, self.confirmed_scid} - {0, self.chan_id}
        return frozenset(ids)

    @property
    def graph_id(self) -> int:
        """The id its graph edge (GetChanInfo) is under: the confirmed SCID if any."""
        return self.confirmed_scid or self.chan_id


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    fee_base_msat: int
    fee_rate_ppm: int
    time_lock_delta: int
    min_htlc_msat: int
    max_htlc_msat: int
    disabled: bool
    last_update_s: int
    # lnd >= 0.18: the fee charged (usually negative: a discount) on HTLCs coming in over
    # the channel, on top of the outgoing channel's fee; 0 before 0.18
    inbound_fee_base_msat: int = 0
    inbound_fee_rate_ppm: int = 0


@dataclass(frozen=True, slots=True)
class ChannelEdge:
    chan_id: int
    chan_point: str
    node1_pubkey: str
    node2_pubkey: str
    capacity_sat: int
    node1_policy: RoutingPolicy | None
    node2_policy: RoutingPolicy | None

    def policies_for(self, our_pubkey: str) -> tuple[RoutingPolicy | None, RoutingPolicy | None]:
        """(ours, the peer's) as lnd decides it: node1 is ours if node1_pubkey is us."""
        if self.node1_pubkey == our_pubkey:
            return self.node1_policy, self.node2_policy
        return self.node2_policy, self.node1_policy


@dataclass(frozen=True, slots=True)
class ChannelSample:
    """A channel's state at one moment: ListChannels plus both directions' policies."""

    info: ChannelInfo
    ours: RoutingPolicy | None
    peer: RoutingPolicy | None
    peer_alias: str


@dataclass(frozen=True, slots=True)
class FeeReportEntry:
    chan_id: int
    channel_point: str
    base_fee_msat: int
    fee_rate_ppm: int


@dataclass(frozen=True, slots=True)
class FailedPolicyUpdate:
    """One channel UpdateChannelPolicy did not update (PolicyUpdateResponse.failed_updates)."""

    channel_point: str  # txid:index
    reason: str  # UpdateFailure name, e.g. UPDATE_FAILURE_INVALID_PARAMETER
    error: str  # lnd's update_error


@dataclass(frozen=True, slots=True)
class ForwardRecord:
    """One settled forward from ``ForwardingHistory`` (the earned-fee ledger)."""

    timestamp_ns: int
    chan_id_in: int
    chan_id_out: int
    amt_in_msat: int
    amt_out_msat: int
    fee_msat: int
    incoming_htlc_id: int | None = None
    outgoing_htlc_id: int | None = None


@dataclass(frozen=True, slots=True)
class RejectedForward:
    """A ``ForwardingHistory`` record with a value the store cannot hold (or lnd never
    writes), kept out of the ledger; the fields say which record it was, as lnd sent it."""

    timestamp_s: int
    timestamp_ns: int  # 0 from lnd < 0.13
    chan_id_in: int
    chan_id_out: int
    amt_in_msat: int
    amt_out_msat: int
    fee_msat: int
    reason: str


@dataclass(frozen=True, slots=True)
class ForwardingPage:
    """One ``ForwardingHistory`` answer.

    ``events`` and ``rejected`` together are the records lnd returned; ``last_second_s``
    is the whole second of the last of them and ``last_second_count`` how many records at
    the end of the page share it (what a pager needs to go on from that second).
    """

    events: tuple[ForwardRecord, ...]
    last_offset_index: int
    rejected: tuple[RejectedForward, ...] = ()
    last_second_s: int = 0
    last_second_count: int = 0

    @property
    def size(self) -> int:
        """How many records lnd returned."""
        return len(self.events) + len(self.rejected)
