"""The traffic model: payments arriving at a routing node, and what lnd makes of them.

Pure and deterministic: every decision comes from one seeded ``random.Random``
and time is passed in, so the same calls give the same events. The model
mutates the :class:`~lnflow.sim.state.NodeState` it is given (balances, HTLC
counters, the forwarding log) and returns the HTLC events lnd would emit.

Outcomes follow the state, checked in the simulated lnd version's order
(docs/lnd-versions.md): the node-wide reject flag, a circular route, the peer
(offline: its link is gone, UNKNOWN_NEXT_PEER; back online but its link not
ready yet: LINK_NOT_ELIGIBLE), then the outgoing policy and the balance — lnd
>= 0.18 checks the fee first, older versions after the balance. A disabled
policy does not stop forwarding (lnd only stops announcing the channel), but
senders do not route over a channel we disabled by hand (UpdateChanStatus
DISABLE): its announcement says so, and new payments and retries leave it. The
automatic disable of an offline peer's channel comes too late for senders to
notice; lnd's automatic enable on reconnect leaves a manual disable alone.

Shapes lnd produces that carry less than a full LINK_FAIL: an HTLC interceptor
failing an HTLC (FORWARD_FAIL with no FORWARD, outgoing htlc id 0), a malformed
onion (only a FINAL settled=false, so nothing before lnd 0.16), and the
outgoing link's mailbox failing the add (HTLC_ADD_FAILED, or a bare
TEMPORARY_CHANNEL_FAILURE for dust exposure) with all-zero amounts.

A forward resolves a little later: settle (balances move, a ledger record is
written) or forward-fail (a later hop failed; probes always do). Senders
retry local failures within seconds with the same amount.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import random
from dataclasses import dataclass, replace

from lnflow.domain import EventType, ForwardRecord, WireFailure
from lnflow.domain import FailureDetail as Detail
from lnflow.sim.events import SimEvent
from lnflow.sim.state import NS, Channel, NodeState, Policy

__all__ = ["GOSSIP_DELAY_S", "TrafficModel", "TrafficParams", "preload_history"]

# seconds after our policy changed during which stale senders still pay the old fee
GOSSIP_DELAY_S = 120.0

FORWARD = int(EventType.FORWARD)
RECEIVE = int(EventType.RECEIVE)
SEND = int(EventType.SEND)
UNKNOWN = int(EventType.UNKNOWN)
_MAX_MISSES = 20  # consecutive arrivals that found no incoming channel: stop this tick
OUTGOING_CLTV_REJECT_DELTA = 13  # lnd: an outgoing expiry this close to the tip is too soon
MAX_OUTGOING_CLTV_EXPIRY = 2016  # lnd: ...and this far above it too far

# failure_string of detailed link errors (htlcswitch FailureDetail.FailureString)
_DETAIL_TEXT = {
    Detail.INSUFFICIENT_BALANCE: "insufficient bandwidth to route htlc",
    Detail.HTLC_EXCEEDS_MAX: "htlc exceeds maximum policy amount",
    Detail.LINK_NOT_ELIGIBLE: "link not eligible",
    Detail.FORWARDS_DISABLED: "node configured to disallow forwards",
    Detail.CIRCULAR_ROUTE: "same incoming and outgoing channel",
    Detail.HTLC_ADD_FAILED: "could not add downstream htlc",
    Detail.UNKNOWN_INVOICE: "invoice not found",
}


# a sender does not retry the same amount after these (it splits or picks another route)
_NOT_RETRIED = frozenset({int(WireFailure.INCORRECT_CLTV_EXPIRY), int(WireFailure.EXPIRY_TOO_SOON)})


@dataclass(frozen=True, slots=True)
class TrafficParams:
    """Shares are per payment attempt unless stated otherwise."""

    probe_share: float = 0.15  # forwards that are probes: always fail downstream
    downstream_fail_share: float = 0.12  # real payments failing at a later hop
    cheap_sender_share: float = 0.03  # senders offering less than our fee
    stale_sender_share: float = 0.5  # senders still using our previous fee...
    gossip_delay_s: float = GOSSIP_DELAY_S  # ...for this long after it changed
    cltv_fail_share: float = 0.01  # wrong or too-close timelocks
    onion_fail_share: float = 0.004  # malformed onion: lnd sends only FINAL(settled=false)
    intercept_share: float = 0.003  # an HTLC interceptor fails it before forwarding
    add_failed_share: float = 0.003  # the outgoing link's mailbox cannot add it
    dust_share: float = 0.001  # ...because of dust exposure
    link_ready_s: float = 5.0  # after a peer reconnects, its link is not eligible yet
    reject_htlc: bool = False  # lnd's node-wide rejecthtlc: every forward is refused
    circular_share: float = 0.002
    receive_share: float = 0.02  # payments to us (some for unknown invoices)...
    send_share: float = 0.02  # ...and by us, so neither drains the channels
    retry_share: float = 0.6  # local failures the sender retries
    max_attempts: int = 4
    retry_s: tuple[float, float] = (0.3, 5.0)
    offline_per_hour: float = 30.0  # offline periods starting per hour, whole node
    offline_s: tuple[float, float] = (20.0, 120.0)
    median_amount_sat: float = 50_000.0
    amount_sigma: float = 1.3
    resolve_s: tuple[float, float] = (0.05, 2.0)


@dataclass(slots=True)  # not frozen: see SimEvent (never mutated either)
class _Attempt:
    """A payment trying to go out over ``out_id`` (new or a retry)."""

    out_id: int
    amt_out_msat: int
    attempt: int
    in_id: int = 0  # 0: pick one
    probe: bool = False
    knows_fee: bool = False  # the sender has our current policy (after FEE_INSUFFICIENT)


@dataclass(slots=True)  # not frozen: see SimEvent (never mutated either)
class _Resolution:
    in_id: int
    in_htlc: int
    out_id: int
    out_htlc: int
    amt_in_msat: int
    amt_out_msat: int
    settle: bool


class TrafficModel:
    """Produces lnd's HTLC events for a node's channels (see module doc)."""

    def __init__(self, node: NodeState, seed: int, params: TrafficParams | None = None) -> None:
        self.node = node
        self.params = params or TrafficParams()
        self._rng = random.Random(f"traffic/{seed}")
        self._seed = seed
        self._queue: list[tuple[int, int, _Attempt | _Resolution]] = []
        self._seq = itertools.count()
        self._last_ns: int | None = None
        self._market: dict[int, Policy] = {}  # chan_id -> our policy when first seen
        self._budget = 0.0
        self._chans: list[Channel] = []
        self._cum_in: list[float] = []
        self._cum_out: list[float] = []
        self._preimages = itertools.count()
        self._rate = -1.0
        self._clock = 0
        self._log_median = math.log(self.params.median_amount_sat)
        self._fee_first = node.at_least(0, 18)
        self._link_ready_ns: dict[int, int] = {}  # channel -> when its link is eligible

    @property
    def in_flight(self) -> int:
        """HTLCs still to resolve plus retries still to come."""
        return len(self._queue)

    def channels_changed(self) -> None:
        """Channels were added or their weights changed (script channel op)."""
        self._chans = []

    def cancel_retries(self) -> None:
        """Senders give up: only the HTLCs in flight remain to resolve."""
        self._queue = [entry for entry in self._queue if isinstance(entry[2], _Resolution)]
        heapq.heapify(self._queue)

    # ------------------------------------------------------------------ driving

    def advance(self, now_ns: int, rate: float) -> list[SimEvent]:
        """Events for the time since the previous call, ``rate`` events/s on average."""
        elapsed_s = 0.0 if self._last_ns is None else max(0, now_ns - self._last_ns) / NS
        self._last_ns = now_ns
        self._refresh_channels()
        if rate != self._rate:
            self._rate = rate
            self._scale_amounts(rate)
        self._update_availability(now_ns, elapsed_s)
        out: list[SimEvent] = []
        while self._queue and self._queue[0][0] <= now_ns:
            _, _, item = heapq.heappop(self._queue)
            if isinstance(item, _Resolution):
                self._resolve(item, now_ns, out)
            else:
                self._attempt(item, now_ns, out)
        self._budget += self._poisson(rate * elapsed_s)
        misses = 0
        while len(out) < self._budget and misses < _MAX_MISSES:
            before = len(out)
            self._new_payment(now_ns, out)
            misses = misses + 1 if len(out) == before else 0
        # Nothing could route (e.g. fewer than two channels): do not bank the budget.
        self._budget = 0.0 if misses >= _MAX_MISSES else self._budget - len(out)
        return out

    def _poisson(self, lam: float) -> float:
        if lam <= 0:
            return 0.0
        if lam > 30:
            return max(0.0, round(self._rng.gauss(lam, math.sqrt(lam))))
        limit, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self._rng.random()
            if p <= limit:
                return float(k)
            k += 1

    def _refresh_channels(self) -> None:
        if self._chans and len(self._chans) == len(self.node.channels):
            return
        self._rate = -1.0  # rescale amounts to the new capacity
        self._chans = list(self.node.channels.values())
        self._cum_in = list(itertools.accumulate(c.demand_in for c in self._chans))
        self._cum_out = list(itertools.accumulate(c.demand_out for c in self._chans))

    def _pick(self, cum: list[float]) -> Channel:
        x = self._rng.random() * cum[-1]
        return self._chans[min(bisect.bisect_right(cum, x), len(cum) - 1)]

    def _update_availability(self, now_ns: int, elapsed_s: float) -> None:
        p = self.params
        for chan in self._chans:
            if chan.online or not chan.offline_until_ns:
                continue
            if now_ns >= chan.offline_until_ns:
                chan.offline_until_ns = 0
                chan.set_online(True, now_ns)
                self._link_ready_ns[chan.chan_id] = now_ns + int(p.link_ready_s * NS)
                if not chan.manually_disabled:
                    chan.ours = replace(chan.ours, disabled=False)
            elif not chan.ours.disabled and now_ns >= (
                chan.offline_since_ns + (chan.offline_until_ns - chan.offline_since_ns) // 2
            ):
                chan.ours = replace(chan.ours, disabled=True)  # lnd disables after a while
        chance = p.offline_per_hour * elapsed_s / 3600
        if self._chans and self._rng.random() < chance:
            chan = self._rng.choice(self._chans)
            if chan.online:
                chan.set_online(False, now_ns)
                chan.offline_until_ns = now_ns + int(self._rng.uniform(*p.offline_s) * NS)

    def _later(
        self, now_ns: int, bounds: tuple[float, float], item: _Attempt | _Resolution
    ) -> None:
        due = now_ns + int(self._rng.uniform(*bounds) * NS)
        heapq.heappush(self._queue, (due, next(self._seq), item))

    # ------------------------------------------------------------------ arrivals

    def _amount_msat(self) -> int:
        sat = self._rng.lognormvariate(self._log_median, self.params.amount_sigma)
        return max(1000, int(sat * 1000))

    def _scale_amounts(self, rate: float) -> None:
        """Shrink the amounts at high rates so HTLCs in flight hold <= ~5% of capacity.

        In flight ~ rate/3 payments per second x ~1 s until they resolve; the mean of
        the lognormal amounts is median x exp(sigma^2 / 2).
        """
        p = self.params
        total_sat = sum(c.capacity_sat for c in self._chans)
        in_flight = max(1.0, rate / 3 * sum(p.resolve_s) / 2)
        mean_factor = math.exp(p.amount_sigma**2 / 2)
        median = min(p.median_amount_sat, 0.05 * total_sat / in_flight / mean_factor)
        self._log_median = math.log(max(10.0, median))

    def _new_payment(self, now_ns: int, out: list[SimEvent]) -> None:
        if len(self._chans) < 2:
            return
        rng, p = self._rng, self.params
        roll = rng.random()
        if roll < p.receive_share:
            self._receive(now_ns, out)
            return
        if roll < p.receive_share + p.send_share:
            self._send(now_ns, out)
            return
        target = self._pick(self._cum_out)
        probe = rng.random() < p.probe_share
        self._attempt(_Attempt(target.chan_id, self._amount_msat(), 1, probe=probe), now_ns, out)

    def _incoming(self, exclude: int, amt_msat: int) -> Channel | None:
        for _ in range(8):
            chan = self._pick(self._cum_in)
            if chan.chan_id != exclude and chan.online and chan.peer_spendable_msat >= amt_msat:
                return chan
        return None

    def _offered_fee(self, chan: Channel, attempt: _Attempt, now_ns: int) -> int:
        rng, p = self._rng, self.params
        required = chan.ours.fee_msat(attempt.amt_out_msat)
        if attempt.knows_fee:
            return required
        recent = now_ns - chan.ours_changed_ns < p.gossip_delay_s * NS
        if chan.previous_ours and recent and rng.random() < p.stale_sender_share:
            return chan.previous_ours.fee_msat(attempt.amt_out_msat)
        if rng.random() < p.cheap_sender_share:
            # a sender whose budget is below the fee the channel asked when the model
            # first saw it: it offers its budget and fails (FEE_INSUFFICIENT) while our
            # fee is above it, and pays our fee once the fee comes down to the budget
            market = self._market.setdefault(chan.chan_id, chan.ours)
            budget = int(market.fee_msat(attempt.amt_out_msat) * rng.uniform(0.2, 0.9))
            return min(required, budget)
        return required

    def _attempt(self, attempt: _Attempt, now_ns: int, out: list[SimEvent]) -> None:
        rng, p, node = self._rng, self.params, self.node
        target = node.channels.get(attempt.out_id)
        if target is None or target.manually_disabled:
            return  # senders do not route over a channel announced disabled
        fee = self._offered_fee(target, attempt, now_ns)
        amt_in = attempt.amt_out_msat + fee
        source = node.channels.get(attempt.in_id)
        if source is None or not source.online or source.peer_spendable_msat < amt_in:
            source = self._incoming(target.chan_id, amt_in)
        if source is None:
            return
        if rng.random() < p.circular_share and target.online:
            source = target
        in_htlc = source.next_in_htlc
        source.next_in_htlc += 1
        height = node.block_height(now_ns)
        out_lock = height + rng.randrange(40, 2000)
        in_lock = out_lock + target.ours.time_lock_delta
        roll = rng.random()
        if roll < p.onion_fail_share:
            out.append(self._final(source.chan_id, in_htlc, False, now_ns))  # malformed onion
            return
        roll -= p.onion_fail_share
        if roll < p.intercept_share:
            self._intercepted(source, in_htlc, target, attempt, now_ns, out)
            return
        roll -= p.intercept_share
        if roll < p.cltv_fail_share:
            if rng.random() < 0.5:
                in_lock = out_lock + rng.randrange(1, max(2, target.ours.time_lock_delta))
            else:
                out_lock, in_lock = height + 2, height + 2 + target.ours.time_lock_delta
        failure = _check_forward(
            source,
            target,
            amt_in,
            attempt.amt_out_msat,
            in_lock,
            out_lock,
            height,
            fee_first=self._fee_first,
            link_ready=self._link_ready_ns.get(target.chan_id, 0) <= now_ns,
            reject_htlc=p.reject_htlc,
        )
        out_htlc, kind, wire, detail, text = 0, "forward", 0, 0, ""
        mailbox = None
        if failure is None:
            add_roll = rng.random()
            if add_roll < p.add_failed_share:
                mailbox = failure = _fail(
                    WireFailure.TEMPORARY_CHANNEL_FAILURE, Detail.HTLC_ADD_FAILED
                )
            elif add_roll < p.add_failed_share + p.dust_share:
                mailbox = failure = _plain(
                    WireFailure.TEMPORARY_CHANNEL_FAILURE, "TemporaryChannelFailure"
                )
        if failure is None:
            out_htlc = target.next_out_htlc
            target.next_out_htlc += 1
        else:
            kind, (wire, detail, text) = "link_fail", failure
        if mailbox is not None:  # lnd's mailbox FailAdd: every amount and timelock 0
            out.append(
                SimEvent(
                    kind="link_fail",
                    event_type=FORWARD,
                    incoming_channel_id=source.chan_id,
                    incoming_htlc_id=in_htlc,
                    outgoing_channel_id=target.chan_id,
                    timestamp_ns=self._stamp(now_ns),
                    wire_failure=wire,
                    failure_detail=detail,
                    failure_string=text,
                )
            )
        else:
            out.append(
                SimEvent(
                    kind=kind,
                    event_type=FORWARD,
                    incoming_channel_id=source.chan_id,
                    incoming_htlc_id=in_htlc,
                    outgoing_channel_id=target.chan_id,
                    outgoing_htlc_id=out_htlc,
                    timestamp_ns=self._stamp(now_ns),
                    incoming_amt_msat=amt_in,
                    outgoing_amt_msat=attempt.amt_out_msat,
                    incoming_timelock=in_lock,
                    outgoing_timelock=out_lock,
                    wire_failure=wire,
                    failure_detail=detail,
                    failure_string=text,
                )
            )
        if failure is None:
            self._lock(source, target, amt_in, attempt.amt_out_msat)
            settle = not attempt.probe and rng.random() >= p.downstream_fail_share
            resolution = _Resolution(
                source.chan_id,
                in_htlc,
                target.chan_id,
                out_htlc,
                amt_in,
                attempt.amt_out_msat,
                settle,
            )
            self._later(now_ns, p.resolve_s, resolution)
            return
        out.append(self._final(source.chan_id, in_htlc, False, now_ns))
        retryable = detail != Detail.HTLC_EXCEEDS_MAX and wire not in _NOT_RETRIED
        if retryable and attempt.attempt < p.max_attempts and rng.random() < p.retry_share:
            retry = _Attempt(
                target.chan_id,
                attempt.amt_out_msat,
                attempt.attempt + 1,
                in_id=source.chan_id if rng.random() < 0.7 else 0,
                probe=attempt.probe,
                knows_fee=attempt.knows_fee or wire == WireFailure.FEE_INSUFFICIENT,
            )
            self._later(now_ns, p.retry_s, retry)

    @staticmethod
    def _lock(source: Channel, target: Channel, amt_in: int, amt_out: int) -> None:
        """The HTLCs are added: their amounts leave the balances until they resolve."""
        source.remote_msat -= amt_in
        source.unsettled_msat += amt_in
        target.local_msat -= amt_out
        target.unsettled_msat += amt_out
        source.num_updates += 1
        target.num_updates += 1

    def _intercepted(
        self,
        source: Channel,
        in_htlc: int,
        target: Channel,
        attempt: _Attempt,
        now_ns: int,
        out: list[SimEvent],
    ) -> None:
        """An HTLC interceptor fails the HTLC before the switch forwards it.

        lnd resolves it on the incoming link with the requested next hop and no
        outgoing htlc id: a FORWARD_FAIL that no FORWARD preceded.
        """
        out.append(
            SimEvent(
                kind="forward_fail",
                event_type=FORWARD,
                incoming_channel_id=source.chan_id,
                incoming_htlc_id=in_htlc,
                outgoing_channel_id=target.chan_id,
                timestamp_ns=self._stamp(now_ns),
            )
        )
        out.append(self._final(source.chan_id, in_htlc, False, now_ns))
        p = self.params
        if attempt.attempt < p.max_attempts and self._rng.random() < p.retry_share:
            self._later(now_ns, p.retry_s, replace(attempt, attempt=attempt.attempt + 1))

    def _send(self, now_ns: int, out: list[SimEvent]) -> None:
        """A payment of our own: SEND events keyed by the outgoing HTLC only."""
        amt = self._amount_msat()
        for _ in range(8):
            chan = self._pick(self._cum_out)
            if chan.online and not chan.ours.disabled and chan.spendable_msat >= amt:
                break
        else:
            return
        out_htlc = chan.next_out_htlc
        chan.next_out_htlc += 1
        chan.local_msat -= amt
        chan.unsettled_msat += amt
        chan.num_updates += 1
        out.append(
            SimEvent(
                kind="forward",
                event_type=SEND,
                outgoing_channel_id=chan.chan_id,
                outgoing_htlc_id=out_htlc,
                timestamp_ns=self._stamp(now_ns),
                outgoing_amt_msat=amt,
                outgoing_timelock=self.node.block_height(now_ns) + self._rng.randrange(40, 1000),
            )
        )
        settle = self._rng.random() >= self.params.downstream_fail_share
        self._later(
            now_ns, self.params.resolve_s, _Resolution(0, 0, chan.chan_id, out_htlc, 0, amt, settle)
        )

    def _receive(self, now_ns: int, out: list[SimEvent]) -> None:
        amt = self._amount_msat()
        source = self._incoming(0, amt)
        if source is None:
            return
        in_htlc = source.next_in_htlc
        source.next_in_htlc += 1
        lock = self.node.block_height(now_ns) + 80
        base = SimEvent(
            kind="settle",
            event_type=RECEIVE,
            incoming_channel_id=source.chan_id,
            incoming_htlc_id=in_htlc,
            timestamp_ns=self._stamp(now_ns),
        )
        if self._rng.random() < 0.25:  # rare: replace() is fine here
            out.append(
                replace(
                    base,
                    kind="link_fail",
                    incoming_amt_msat=amt,
                    incoming_timelock=lock,
                    wire_failure=int(WireFailure.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS),
                    failure_detail=int(Detail.UNKNOWN_INVOICE),
                    failure_string=_DETAIL_TEXT[Detail.UNKNOWN_INVOICE],
                )
            )
            out.append(self._final(source.chan_id, in_htlc, False, now_ns))
            return
        source.remote_msat -= amt
        source.local_msat += amt
        source.received_msat += amt
        source.num_updates += 1
        out.append(replace(base, preimage=self._preimage()))
        out.append(self._final(source.chan_id, in_htlc, True, now_ns))

    # ------------------------------------------------------------------ resolutions

    def _resolve(self, res: _Resolution, now_ns: int, out: list[SimEvent]) -> None:
        source = self.node.channels.get(res.in_id)  # None for our own payments
        target = self.node.channels.get(res.out_id)
        if target is None or (source is None and res.in_id):
            return
        target.unsettled_msat -= res.amt_out_msat
        target.num_updates += 1
        stamp = self._stamp(now_ns)
        out.append(
            SimEvent(
                kind="settle" if res.settle else "forward_fail",
                event_type=FORWARD if source else SEND,
                incoming_channel_id=res.in_id,
                incoming_htlc_id=res.in_htlc,
                outgoing_channel_id=res.out_id,
                outgoing_htlc_id=res.out_htlc,
                timestamp_ns=stamp,
                preimage=self._preimage() if res.settle else b"",
            )
        )
        if res.settle:
            target.remote_msat += res.amt_out_msat
            target.sent_msat += res.amt_out_msat
        else:
            target.local_msat += res.amt_out_msat
        if source is None:
            return
        source.unsettled_msat -= res.amt_in_msat
        source.num_updates += 1
        if res.settle:
            source.local_msat += res.amt_in_msat
            source.received_msat += res.amt_in_msat
            self.node.forwards.append(
                ForwardRecord(
                    timestamp_ns=stamp,
                    chan_id_in=res.in_id,
                    chan_id_out=res.out_id,
                    amt_in_msat=res.amt_in_msat,
                    amt_out_msat=res.amt_out_msat,
                    fee_msat=res.amt_in_msat - res.amt_out_msat,
                    incoming_htlc_id=res.in_htlc,
                    outgoing_htlc_id=res.out_htlc,
                )
            )
        else:
            source.remote_msat += res.amt_in_msat
        out.append(self._final(res.in_id, res.in_htlc, res.settle, now_ns))

    def _final(self, chan_id: int, htlc_id: int, settled: bool, now_ns: int) -> SimEvent:
        return SimEvent(
            kind="final",
            event_type=UNKNOWN,
            incoming_channel_id=chan_id,
            incoming_htlc_id=htlc_id,
            timestamp_ns=self._stamp(now_ns),
            settled=settled,
            offchain=True,
        )

    def _stamp(self, now_ns: int) -> int:
        """Event time: now, but strictly increasing like lnd's per-event clock readings."""
        self._clock = now_ns if now_ns > self._clock else self._clock + 1
        return self._clock

    def _preimage(self) -> bytes:
        return hashlib.sha256(f"preimage/{self._seed}/{next(self._preimages)}".encode()).digest()


def _check_forward(
    source: Channel,
    target: Channel,
    amt_in: int,
    amt_out: int,
    in_lock: int,
    out_lock: int,
    height: int,
    *,
    fee_first: bool = True,
    link_ready: bool = True,
    reject_htlc: bool = False,
) -> tuple[int, int, str] | None:
    """lnd's switch and link checks for a forward: (wire_failure, detail, string) or None.

    ``fee_first``: lnd >= 0.18 checks fee, min, max, expiry too soon, expiry too far,
    balance, CLTV delta; older versions min, max, too soon, too far, balance, then
    fee and CLTV delta. A disabled policy is not checked: lnd forwards anyway.
    """
    if reject_htlc:
        return _fail(WireFailure.CHANNEL_DISABLED, Detail.FORWARDS_DISABLED)
    if source.chan_id == target.chan_id:
        return _fail(WireFailure.TEMPORARY_CHANNEL_FAILURE, Detail.CIRCULAR_ROUTE)
    if not target.online:  # lnd removes a peer's links when it disconnects
        return _plain(WireFailure.UNKNOWN_NEXT_PEER, "UnknownNextPeer")
    if not link_ready:
        return _fail(WireFailure.UNKNOWN_NEXT_PEER, Detail.LINK_NOT_ELIGIBLE)
    policy = target.ours
    fee = (
        _plain(WireFailure.FEE_INSUFFICIENT, f"FeeInsufficient(htlc_amt=={amt_in} mSAT)")
        if amt_in - amt_out < policy.fee_msat(amt_out)
        else None
    )
    if fee_first and fee:
        return fee
    if amt_out < policy.min_htlc_msat:
        return _plain(WireFailure.AMOUNT_BELOW_MINIMUM, f"AmountBelowMinimum(amt={amt_out} mSAT)")
    if policy.max_htlc_msat and amt_out > policy.max_htlc_msat:
        return _fail(WireFailure.TEMPORARY_CHANNEL_FAILURE, Detail.HTLC_EXCEEDS_MAX)
    if out_lock <= height + OUTGOING_CLTV_REJECT_DELTA:
        return _plain(WireFailure.EXPIRY_TOO_SOON, "ExpiryTooSoon")
    if out_lock - height > MAX_OUTGOING_CLTV_EXPIRY:
        return _plain(WireFailure.EXPIRY_TOO_FAR, "ExpiryTooFar")
    if target.spendable_msat < amt_out:
        return _fail(WireFailure.TEMPORARY_CHANNEL_FAILURE, Detail.INSUFFICIENT_BALANCE)
    if fee:
        return fee
    if in_lock - out_lock < policy.time_lock_delta:
        return _plain(WireFailure.INCORRECT_CLTV_EXPIRY, f"IncorrectCltvExpiry(expiry={in_lock})")
    return None


def _fail(wire: WireFailure, detail: Detail) -> tuple[int, int, str]:
    return int(wire), int(detail), _DETAIL_TEXT[detail]


def _plain(wire: WireFailure, text: str) -> tuple[int, int, str]:
    return int(wire), int(Detail.NO_DETAIL), text


def preload_history(node: NodeState, count: int, now_ns: int, seed: int) -> None:
    """Append ``count`` settled forwards spread over the 30 days before ``now_ns``."""
    chans = list(node.channels.values())
    if count <= 0 or len(chans) < 2:
        return
    rng = random.Random(f"history/{seed}")
    span = 30 * 86_400 * NS
    stamps = sorted(now_ns - span + rng.randrange(span - 60 * NS) for _ in range(count))
    weights_in = list(itertools.accumulate(c.demand_in for c in chans))
    weights_out = list(itertools.accumulate(c.demand_out for c in chans))
    cum_in = weights_in if weights_in[-1] > 0 else None  # all zero: uniform
    cum_out = weights_out if weights_out[-1] > 0 else None
    for ts in stamps:
        (source,) = rng.choices(chans, cum_weights=cum_in)
        (target,) = rng.choices(chans, cum_weights=cum_out)
        if source is target:
            target = chans[(chans.index(source) + 1) % len(chans)]
        amt_out = max(1000, int(rng.lognormvariate(math.log(30_000), 1.2) * 1000))
        fee = target.ours.fee_msat(amt_out)
        node.forwards.append(
            ForwardRecord(
                timestamp_ns=ts,
                chan_id_in=source.chan_id,
                chan_id_out=target.chan_id,
                amt_in_msat=amt_out + fee,
                amt_out_msat=amt_out,
                fee_msat=fee,
                incoming_htlc_id=source.next_in_htlc,
                outgoing_htlc_id=target.next_out_htlc,
            )
        )
        source.next_in_htlc += 1
        target.next_out_htlc += 1
