"""The simulated node's state: identity, channels, policies and the forwarding log.

Plain data and pure functions; no I/O and no clock (times are passed in). The
traffic model, the script runner and the gRPC server all work on one
:class:`NodeState`.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lnflow.domain import ForwardRecord, LndVersion

__all__ = [
    "ALIAS_SCID_BLOCK",
    "EDGE_NOT_FOUND",
    "ENABLE_INACTIVE",
    "MIN_TIME_LOCK_DELTA",
    "Channel",
    "ForwardLog",
    "NodeState",
    "Policy",
    "PolicyError",
    "PolicyUpdate",
    "StatusError",
    "derive_pubkey",
    "make_scid",
    "model_channels",
    "parse_version",
]

NS = 1_000_000_000
ALIAS_SCID_BLOCK = 16_000_000  # lnd's alias SCIDs start here (all >= 2^63)
MIN_TIME_LOCK_DELTA = 18
BASE_BLOCK_HEIGHT = 880_000  # block height at sim start; one block per 600 s after


def make_scid(block: int, tx: int, out: int) -> int:
    return (block << 40) | (tx << 16) | out


def derive_pubkey(seed: int, label: str) -> str:
    """A real compressed secp256k1 public key (66 hex chars), deterministic in seed+label."""
    digest = hashlib.sha256(f"lnflow-sim/{seed}/{label}".encode()).digest()
    secret = int.from_bytes(digest, "big") % (2**255) + 1
    key = ec.derive_private_key(secret, ec.SECP256K1())
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint).hex()


_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.]+))?$")


def parse_version(text: str) -> LndVersion:
    """``0.18.3`` or ``0.18.3-beta`` -> LndVersion(0, 18, 3, "0.18.3-beta")."""
    match = _VERSION.match(text.strip())
    if not match:
        raise ValueError(f"'{text}' is not an lnd version like 0.18.3 or 0.18.3-beta")
    major, minor, patch = (int(g) for g in match.groups()[:3])
    pre = match.group(4) or "beta"
    return LndVersion(major, minor, patch, f"{major}.{minor}.{patch}-{pre}")


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class Policy:
    """One direction of a channel's routing policy (lnd's RoutingPolicy)."""

    fee_base_msat: int = 1000
    fee_rate_ppm: int = 100
    time_lock_delta: int = 80
    min_htlc_msat: int = 1000
    max_htlc_msat: int = 0
    disabled: bool = False
    inbound_fee_base_msat: int = 0
    inbound_fee_rate_ppm: int = 0
    last_update_s: int = 0

    def fee_msat(self, amt_out_msat: int) -> int:
        return self.fee_base_msat + amt_out_msat * self.fee_rate_ppm // 1_000_000


@dataclass(frozen=True, slots=True)
class PolicyUpdate:
    """The decoded fields of an UpdateChannelPolicy request."""

    base_fee_msat: int
    fee_rate: float
    fee_rate_ppm: int
    time_lock_delta: int
    max_htlc_msat: int = 0
    min_htlc_msat: int | None = None
    inbound_fee: tuple[int, int] | None = None  # (base msat, ppm)


class PolicyError(ValueError):
    """A request lnd would reject as a whole (the RPC fails)."""


class StatusError(ValueError):
    """An UpdateChanStatus request lnd refuses (its chanstatus manager's words)."""


# netann/chan_status_manager.go and graph/db/errors.go
ENABLE_INACTIVE = "unable to enable channel which is not currently active"
EDGE_NOT_FOUND = "edge not found"


# --------------------------------------------------------------------------- channels


@dataclass(slots=True)
class Channel:
    """One open channel. Mutable: balances move as HTLCs resolve.

    Balances are msat; lnd reports them in sat (truncated). ``local_msat`` and
    ``remote_msat`` exclude HTLCs in flight (``unsettled_msat``), like lnd.
    """

    chan_id: int
    remote_pubkey: str
    peer_alias: str
    channel_point: str
    capacity_sat: int
    local_msat: int
    remote_msat: int
    local_reserve_sat: int
    remote_reserve_sat: int
    ours: Policy
    peer: Policy
    private: bool = False
    initiator: bool = True
    announced: bool = True  # the peer's node announcement is in our graph
    # lnd >= 0.15.1: the channel's alias SCIDs; a zero-conf channel that confirmed keeps
    # its alias as chan_id and has its graph edge under the real SCID
    alias_scids: tuple[int, ...] = ()
    zero_conf_confirmed_scid: int = 0
    online: bool = True
    unsettled_msat: int = 0
    next_in_htlc: int = 0  # the peer's next add index (our incoming HTLC ids)
    next_out_htlc: int = 0  # our next add index (outgoing HTLC ids)
    sent_msat: int = 0
    received_msat: int = 0
    num_updates: int = 0
    offline_since_ns: int = 0
    offline_total_ns: int = 0
    offline_until_ns: int = 0  # traffic model: end of the current offline period
    previous_ours: Policy | None = None  # what stale senders still believe
    ours_changed_ns: int = 0
    # UpdateChanStatus DISABLE: lnd's chanstatus manager keeps the channel disabled
    # (no automatic enable when the peer reconnects) until ENABLE or AUTO
    manually_disabled: bool = False
    demand_in: float = 1.0  # traffic model weights
    demand_out: float = 1.0

    @property
    def spendable_msat(self) -> int:
        """What an outgoing HTLC may take: local balance above our reserve."""
        return self.local_msat - self.local_reserve_sat * 1000

    @property
    def peer_spendable_msat(self) -> int:
        return self.remote_msat - self.remote_reserve_sat * 1000

    def set_online(self, online: bool, now_ns: int) -> None:
        if online == self.online:
            return
        if online:
            self.offline_total_ns += max(0, now_ns - self.offline_since_ns)
        else:
            self.offline_since_ns = now_ns
        self.online = online

    def uptime_ns(self, since_ns: int, now_ns: int) -> int:
        offline = self.offline_total_ns
        if not self.online:
            offline += max(0, now_ns - self.offline_since_ns)
        return max(0, now_ns - since_ns - offline)

    def set_ours(self, policy: Policy, now_ns: int) -> None:
        if (policy.fee_base_msat, policy.fee_rate_ppm) != (
            self.ours.fee_base_msat,
            self.ours.fee_rate_ppm,
        ):
            self.previous_ours = self.ours
            self.ours_changed_ns = now_ns
        self.ours = policy


def default_channel(chan_id: int, seed: int, capacity_sat: int = 1_000_000) -> Channel:
    """A channel with lnd-like defaults; the script's channel op starts from this."""
    pubkey = derive_pubkey(seed, f"peer/{chan_id}")
    reserve = max(354, capacity_sat // 100)
    max_htlc = (capacity_sat - reserve) * 1000
    txid = hashlib.sha256(f"lnflow-sim/funding/{chan_id}".encode()).hexdigest()
    return Channel(
        chan_id=chan_id,
        remote_pubkey=pubkey,
        peer_alias=f"peer-{pubkey[2:8]}",
        channel_point=f"{txid}:{chan_id & 0xFFFF}",
        capacity_sat=capacity_sat,
        local_msat=capacity_sat * 500,
        remote_msat=capacity_sat * 500,
        local_reserve_sat=reserve,
        remote_reserve_sat=reserve,
        ours=Policy(max_htlc_msat=max_htlc),
        peer=Policy(fee_base_msat=1000, fee_rate_ppm=1, max_htlc_msat=max_htlc),
    )


_ADJECTIVES = ("amber", "brisk", "cobalt", "dusky", "ember", "frosty", "golden", "hazel")
_NOUNS = ("falcon", "harbor", "lantern", "meadow", "orchid", "quarry", "summit", "willow")
_CAPACITIES_SAT = (1_000_000, 2_000_000, 3_000_000, 5_000_000, 10_000_000)


def model_channels(count: int, seed: int) -> list[Channel]:
    """The default channel set: real-looking SCIDs, the last one an alias SCID (>= 2^63)."""
    rng = random.Random(f"channels/{seed}")
    channels = []
    for i in range(count):
        if i == count - 1 and count > 1:
            scid = make_scid(ALIAS_SCID_BLOCK + rng.randrange(250_000), 0, 1)
        else:
            scid = make_scid(
                800_000 + rng.randrange(70_000), rng.randrange(1, 3000), rng.randrange(3)
            )
        capacity = rng.choice(_CAPACITIES_SAT)
        chan = default_channel(scid, seed, capacity)
        chan.peer_alias = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{i}"
        chan.private = scid >> 40 >= ALIAS_SCID_BLOCK
        ratio = rng.uniform(0.1, 0.9)
        usable = capacity * 1000
        chan.local_msat = int(usable * ratio)
        chan.remote_msat = usable - chan.local_msat
        full_max = (capacity - chan.local_reserve_sat) * 1000
        max_htlc = full_max if rng.random() < 0.75 else min(full_max, 200_000_000)
        chan.ours = Policy(
            fee_base_msat=rng.choice((0, 1000)),
            fee_rate_ppm=rng.choice((50, 100, 250, 500, 800, 1200)),
            time_lock_delta=80,
            max_htlc_msat=max_htlc,
        )
        chan.peer = Policy(
            fee_base_msat=rng.choice((0, 1000)),
            fee_rate_ppm=rng.randrange(0, 2000),
            time_lock_delta=rng.choice((40, 80, 144)),
            max_htlc_msat=full_max,
        )
        chan.demand_in = rng.lognormvariate(0, 0.8)
        chan.demand_out = rng.lognormvariate(0, 0.8)
        chan.initiator = rng.random() < 0.6
        channels.append(chan)
    return channels


# --------------------------------------------------------------------------- forwarding log


class ForwardLog:
    """lnd's forwarding log: settled forwards keyed by a unique ``timestamp_ns``."""

    def __init__(self) -> None:
        self._keys: list[int] = []
        self._records: list[ForwardRecord] = []

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[ForwardRecord]:
        return iter(self._records)

    def append(self, record: ForwardRecord) -> ForwardRecord:
        """Store a record; a timestamp already taken is bumped by 1 ns (as lnd does)."""
        ts = record.timestamp_ns
        keys = self._keys
        if keys and ts <= keys[-1]:
            pos = bisect.bisect_left(keys, ts)
            while pos < len(keys) and keys[pos] == ts:
                ts += 1
                pos += 1
            if ts != record.timestamp_ns:
                record = replace(record, timestamp_ns=ts)
            keys.insert(pos, ts)
            self._records.insert(pos, record)
            return record
        keys.append(ts)
        self._records.append(record)
        return record

    def query(
        self,
        start_ns: int,
        end_ns: int,
        offset: int,
        limit: int,
        incoming: Sequence[int] = (),
        outgoing: Sequence[int] = (),
    ) -> list[ForwardRecord]:
        """lnd's ``Query``: ascending, ``start_ns <= key <= end_ns``, skip ``offset`` matches.

        Like lnd's cursor, the skip steps over the records one by one from the first key
        at or after ``start_ns`` (a seek), so paging by ``index_offset`` alone costs what
        it costs on a real node: quadratic in the length of the window.
        """
        pos = bisect.bisect_left(self._keys, start_ns)
        stop = bisect.bisect_right(self._keys, end_ns)
        if not incoming and not outgoing:
            first = pos
            skip = offset
            while skip and first < stop:  # lnd: recordsToSkip--, cursor.Next()
                skip -= 1
                first += 1
            return self._records[first : min(stop, first + limit)]
        ins, outs = set(incoming), set(outgoing)
        matches = (
            r
            for r in itertools.islice(self._records, pos, stop)
            if (not ins or r.chan_id_in in ins) and (not outs or r.chan_id_out in outs)
        )
        return list(itertools.islice(matches, offset, offset + limit))

    def fee_sum_msat(self, since_ns: int) -> int:
        pos = bisect.bisect_left(self._keys, since_ns)
        return sum(r.fee_msat for r in self._records[pos:])


# --------------------------------------------------------------------------- node


@dataclass(slots=True)
class NodeState:
    """Everything the RPCs report, in one place."""

    seed: int
    version: LndVersion
    alias: str
    network: str
    start_ns: int
    pubkey: str = ""
    channels: dict[int, Channel] = field(default_factory=dict)
    forwards: ForwardLog = field(default_factory=ForwardLog)

    def __post_init__(self) -> None:
        if not self.pubkey:
            self.pubkey = derive_pubkey(self.seed, "node")

    def at_least(self, major: int, minor: int, patch: int = 0) -> bool:
        return self.version.triple >= (major, minor, patch)

    def block_height(self, now_ns: int) -> int:
        return BASE_BLOCK_HEIGHT + max(0, now_ns - self.start_ns) // (600 * NS)

    def peer_alias(self, pubkey: str) -> str | None:
        if pubkey == self.pubkey:
            return self.alias
        for chan in self.channels.values():
            if chan.remote_pubkey == pubkey and chan.announced:
                return chan.peer_alias
        return None

    def alias_of_channel(self, chan_id: int) -> str | None:
        """The peer's alias ("" for an unknown channel); None when the peer's node is
        missing from the graph."""
        chan = self.channels.get(chan_id)
        if chan is None:
            return ""
        return chan.peer_alias if chan.announced else None

    def channel_by_graph_id(self, scid: int) -> Channel | None:
        """The channel whose graph edge is under ``scid`` (GetChanInfo): a confirmed
        zero-conf channel's edge is under its real SCID only."""
        chan = self.channels.get(scid)
        if chan is not None:
            return None if chan.zero_conf_confirmed_scid else chan
        for chan in self.channels.values():
            if chan.zero_conf_confirmed_scid == scid:
                return chan
        return None

    def channel_by_point(self, txid: str, output_index: int) -> Channel | None:
        wanted = f"{txid}:{output_index}"
        for chan in self.channels.values():
            if chan.channel_point == wanted:
                return chan
        return None

    def update_policy(
        self, update: PolicyUpdate, targets: Sequence[Channel], now_ns: int
    ) -> list[tuple[Channel, str]]:
        """Apply UpdateChannelPolicy to targets; returns (channel, error) per failed channel.

        Raises PolicyError for requests lnd rejects outright.
        """
        if update.fee_rate and update.fee_rate_ppm:
            raise PolicyError("fee_rate and fee_rate_ppm are mutually exclusive")
        if update.fee_rate and update.fee_rate < 1e-6:
            raise PolicyError(f"fee rate of {update.fee_rate} is too small, min fee rate is 1e-06")
        if update.time_lock_delta < MIN_TIME_LOCK_DELTA:
            raise PolicyError(
                f"time lock delta of {update.time_lock_delta} is too small, "
                f"minimum supported is {MIN_TIME_LOCK_DELTA}"
            )
        if update.inbound_fee and max(update.inbound_fee) > 0:
            raise PolicyError("positive values for inbound fee are not supported")
        ppm = update.fee_rate_ppm or round(update.fee_rate * 1_000_000)
        failed = []
        for chan in targets:
            max_htlc = update.max_htlc_msat or chan.ours.max_htlc_msat
            if max_htlc > chan.capacity_sat * 1000:
                failed.append((chan, "max htlc amount exceeds channel capacity"))
                continue
            inbound = update.inbound_fee or (
                chan.ours.inbound_fee_base_msat,
                chan.ours.inbound_fee_rate_ppm,
            )
            new = replace(
                chan.ours,
                fee_base_msat=update.base_fee_msat,
                fee_rate_ppm=ppm,
                time_lock_delta=update.time_lock_delta,
                max_htlc_msat=max_htlc,
                min_htlc_msat=(
                    chan.ours.min_htlc_msat
                    if update.min_htlc_msat is None
                    else update.min_htlc_msat
                ),
                inbound_fee_base_msat=inbound[0],
                inbound_fee_rate_ppm=inbound[1],
                last_update_s=now_ns // NS,
            )
            chan.set_ours(new, now_ns)
        return failed

    def update_status(self, chan: Channel | None, action: str, now_ns: int) -> None:
        """UpdateChanStatus as lnd's chanstatus manager does it (``enable``, ``disable``,
        ``auto``); raises StatusError with lnd's words when it refuses.

        DISABLE announces the channel disabled and marks it manually disabled, so the
        automatic enable on reconnect leaves it alone; ENABLE needs the peer online and
        clears the mark; AUTO clears the mark only, the channel staying disabled until
        lnd enables it (when the peer reconnects).
        """
        if chan is None:
            raise StatusError(EDGE_NOT_FOUND)
        if action == "disable":
            if not chan.ours.disabled:
                chan.ours = replace(chan.ours, disabled=True, last_update_s=now_ns // NS)
            chan.manually_disabled = True
        elif action == "enable":
            if not chan.online:
                raise StatusError(ENABLE_INACTIVE)
            if chan.ours.disabled:
                chan.ours = replace(chan.ours, disabled=False, last_update_s=now_ns // NS)
            chan.manually_disabled = False
        elif action == "auto":
            chan.manually_disabled = False
        else:
            raise StatusError(f"unrecognized ChannelStatusAction {action}")
