"""Forward attempts: lnd's HTLC events paired into one record per incoming forward.

A sans-I/O state machine in the manner of h11: :class:`AttemptTracker` is fed
:class:`~lnflow.domain.HtlcEvent` records and time (``now_ns``) and returns
:class:`Attempt` snapshots; it never reads a clock or does I/O.

An attempt is keyed by its incoming circuit ``(incoming_channel_id,
incoming_htlc_id)``. Which events belong to one:

* ``event_type`` FORWARD events of kind FORWARD, SETTLE, FORWARD_FAIL and
  LINK_FAIL; SEND and RECEIVE events never do.
* FINAL events (``event_type`` UNKNOWN, incoming circuit only) join the attempt
  with their incoming key, and create one only if none is tracked. A FINAL for
  an incoming key recently seen on a RECEIVE event (an invoice, e.g. the last
  hop of our own rebalance) is ignored instead of becoming a bogus attempt.

Outcome rules, whatever order the events arrive in (the table is
``_TRANSITIONS`` below; phases are the outcomes plus EXPIRED):

* SETTLE, or FINAL settled=True → SETTLED
* LINK_FAIL (failed at our node) → FAILED_LOCAL, with its failure class
* FORWARD_FAIL (a later hop failed) → FAILED_DOWNSTREAM
* FORWARD_FAIL with no FORWARD seen and outgoing_htlc_id 0 → REJECTED_LOCAL:
  the HTLC was failed back before it was ever added to an outgoing channel,
  with no reason given. In lnd only an HTLC interceptor (circuitbreaker,
  ``requireinterceptor``, the interceptor's near-expiry auto-fail) does that;
  lnd emits FORWARD before FORWARD_FAIL on one stream, so a forward that did
  leave us is never mistaken for it. Should a FORWARD still arrive later, the
  attempt becomes FAILED_DOWNSTREAM, as it would have in stream order.
* FORWARD and FINAL settled=False only record facts.
* The first definitive outcome is kept; a contradicting later event (settle
  after a link fail, which lnd does not produce) changes nothing.
* Pending longer than ``timeout_ns`` (since the earliest event timestamp) the
  attempt expires: FAILED_DOWNSTREAM when a FORWARD and a FINAL settled=False
  were seen (the HTLC left us, then failed back); FAILED_LOCAL of class OTHER
  with an unknown missed fee, dated by its FINAL, when a FINAL settled=False
  was all there was (a malformed onion: lnd fails it back with no link-fail
  event); else UNRESOLVED. Expiry is an inference, not a verdict: a definitive
  event arriving later still decides it (a local failure is counted once).

Merging is idempotent, so a replayed event is a no-op and ``feed`` returns
None: timestamps merge by minimum (``first_seen_ns``; ``resolved_ns`` is the
earliest event that proves the outcome, or ``now_ns`` for an expiry; a local
failure's is the LINK_FAIL that decided it, where the recorder counts it), amounts
and the failure by "first known". Amounts of 0 count as unknown: that is
proto3's default: lnd leaves the outgoing amount 0 on incoming-side link
failures (onion errors and the like) and every amount 0 on HTLC_ADD_FAILED
(mailbox) failures. The missed fee of a local failure with an unknown amount
is unknown (None), never 0.

Memory: an attempt is dropped ``linger_ns`` after it resolved (kept meanwhile so
late FINAL events and replays merge into it), a pending one becomes resolved
after ``timeout_ns``, and RECEIVE keys are kept ``linger_ns`` + 60 s. So
what is held is bounded by the events of the last ``timeout_ns + linger_ns``
(plus the time between ``expire`` calls): about 0.4 KB per attempt in CPython. A lone
FINAL settled=False (a malformed onion, or a forward whose other events came before
we started) is the one kind that routinely waits the whole timeout, so until another
event joins it or it expires it is held as two integers in a time-ordered dict instead
of a full record: at a busy node those are most of what is held for longer than
``linger_ns``, and scattered long-lived records keep the allocator's pages from being
reused.
"""

from __future__ import annotations

import enum
import heapq
from collections import Counter
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

from lnflow.analysis.classify import classify, missed_fee_msat
from lnflow.domain import NS_PER_S, EventKind, EventType, FailureClass, HtlcEvent, Outcome

# Outcome: lnflow.domain's, re-exported
__all__ = ["Attempt", "AttemptTracker", "LiveAttempt", "Outcome"]


@dataclass(slots=True, unsafe_hash=True)  # treated as immutable; not frozen: see HtlcEvent
class Attempt:
    """One incoming forward as far as it is known.

    ``outgoing_channel_id`` is the channel the HTLC went out on (FORWARD,
    SETTLE, FORWARD_FAIL), else the one a LINK_FAIL names (the requested next
    hop, possibly not our channel); 0 if none is known. ``missed_fee_msat`` is
    0 unless the outcome is FAILED_LOCAL, and None (unknown) for a local
    failure whose incoming or outgoing amount lnd did not give;
    ``final_settled`` is lnd's FINAL verdict on the incoming HTLC (None if not
    seen, e.g. lnd < 0.16).
    """

    incoming_channel_id: int
    incoming_htlc_id: int
    outgoing_channel_id: int
    outgoing_htlc_id: int
    first_seen_ns: int
    resolved_ns: int | None
    incoming_amt_msat: int | None
    outgoing_amt_msat: int | None
    outcome: Outcome
    failure_class: FailureClass | None
    wire_failure: int | None
    failure_detail: int | None
    missed_fee_msat: int | None
    final_settled: bool | None

    @property
    def key(self) -> tuple[int, int]:
        """(incoming_channel_id, incoming_htlc_id)."""
        return (self.incoming_channel_id, self.incoming_htlc_id)


# --------------------------------------------------------------------------- the table


class _Signal(enum.IntEnum):
    """What an event says about an attempt (FINAL split by its verdict)."""

    FORWARD = 1
    SETTLE = 2
    FORWARD_FAIL = 3
    LINK_FAIL = 4
    FINAL_SETTLED = 5
    FINAL_FAILED = 6
    REJECTED = 7  # FORWARD_FAIL with no FORWARD seen and outgoing_htlc_id 0


class _Phase(enum.IntEnum):
    PENDING = 0
    SETTLED = 1
    FAILED_LOCAL = 2
    FAILED_DOWNSTREAM = 3
    EXPIRED = 4  # timed out; outcome inferred from the facts, see _Track.outcome()
    REJECTED_LOCAL = 5


_P = _Phase
_S = _Signal

# (phase, signal) → next phase. Anything not definitive keeps the phase; a
# decided phase keeps its first outcome whatever comes next.
_TRANSITIONS: dict[tuple[_Phase, _Signal], _Phase] = {
    (_P.PENDING, _S.FORWARD): _P.PENDING,
    (_P.PENDING, _S.FINAL_FAILED): _P.PENDING,
    (_P.PENDING, _S.SETTLE): _P.SETTLED,
    (_P.PENDING, _S.FINAL_SETTLED): _P.SETTLED,
    (_P.PENDING, _S.LINK_FAIL): _P.FAILED_LOCAL,
    (_P.PENDING, _S.FORWARD_FAIL): _P.FAILED_DOWNSTREAM,
    (_P.PENDING, _S.REJECTED): _P.REJECTED_LOCAL,
    (_P.EXPIRED, _S.FORWARD): _P.EXPIRED,
    (_P.EXPIRED, _S.FINAL_FAILED): _P.EXPIRED,
    (_P.EXPIRED, _S.SETTLE): _P.SETTLED,
    (_P.EXPIRED, _S.FINAL_SETTLED): _P.SETTLED,
    (_P.EXPIRED, _S.LINK_FAIL): _P.FAILED_LOCAL,
    (_P.EXPIRED, _S.FORWARD_FAIL): _P.FAILED_DOWNSTREAM,
    (_P.EXPIRED, _S.REJECTED): _P.REJECTED_LOCAL,
    # a FORWARD after the fail proves the HTLC did leave us (stream order would
    # have said FAILED_DOWNSTREAM); nothing else changes a rejection
    (_P.REJECTED_LOCAL, _S.FORWARD): _P.FAILED_DOWNSTREAM,
    **{
        (_P.REJECTED_LOCAL, signal): _P.REJECTED_LOCAL
        for signal in _Signal
        if signal is not _S.FORWARD
    },
    **{
        (decided, signal): decided
        for decided in (_P.SETTLED, _P.FAILED_LOCAL, _P.FAILED_DOWNSTREAM)
        for signal in _Signal
    },
}

# The outcome each definitive signal proves; a second proof of the current
# outcome (FINAL settled=True after SETTLE) may move resolved_ns earlier, except a
# local failure's: the recorder counts it (rollup hour, cluster) at the LINK_FAIL that
# decided it, and that stays its time whatever else comes.
_PROVES: dict[_Signal, _Phase] = {
    _S.SETTLE: _P.SETTLED,
    _S.FINAL_SETTLED: _P.SETTLED,
    _S.LINK_FAIL: _P.FAILED_LOCAL,
    _S.FORWARD_FAIL: _P.FAILED_DOWNSTREAM,
    _S.REJECTED: _P.REJECTED_LOCAL,
}

_SIGNAL_OF_KIND: dict[int, _Signal] = {
    EventKind.FORWARD: _S.FORWARD,
    EventKind.SETTLE: _S.SETTLE,
    EventKind.FORWARD_FAIL: _S.FORWARD_FAIL,
    EventKind.LINK_FAIL: _S.LINK_FAIL,
}

# Events that name the circuit the HTLC really used (a LINK_FAIL names the
# requested next hop, which non-strict forwarding may have replaced).
_CARRIES_CIRCUIT = frozenset({_S.FORWARD, _S.SETTLE, _S.FORWARD_FAIL})
_FINALS = frozenset({_S.FINAL_SETTLED, _S.FINAL_FAILED})

_RECEIVE_GRACE_NS = 60 * NS_PER_S
_HTLC_BITS = 64  # a lone FINAL's key packed into one int: channel << 64 | htlc id
_HTLC_MASK = (1 << _HTLC_BITS) - 1
_FINAL = int(EventKind.FINAL)
_TYPE_FORWARD = int(EventType.FORWARD)
_TYPE_RECEIVE = int(EventType.RECEIVE)
_FINAL_TYPES = frozenset({int(EventType.UNKNOWN), _TYPE_FORWARD})

_PHASE_OUTCOME = {
    _P.PENDING: Outcome.PENDING,
    _P.SETTLED: Outcome.SETTLED,
    _P.FAILED_LOCAL: Outcome.FAILED_LOCAL,
    _P.FAILED_DOWNSTREAM: Outcome.FAILED_DOWNSTREAM,
    _P.REJECTED_LOCAL: Outcome.REJECTED_LOCAL,
}


class _Track:
    """Mutable per-attempt state; :class:`Attempt` is its public snapshot."""

    __slots__ = (
        "circuit_actual",
        "failure_class",
        "failure_detail",
        "final_settled",
        "first_seen_ns",
        "forwarded",
        "incoming_amt_msat",
        "key",
        "outgoing_amt_msat",
        "outgoing_channel_id",
        "outgoing_htlc_id",
        "phase",
        "resolved_ns",
        "wire_failure",
    )

    def __init__(self, key: tuple[int, int], ts_ns: int) -> None:
        self.key = key
        self.first_seen_ns = ts_ns
        self.phase = _P.PENDING
        self.resolved_ns: int | None = None
        self.outgoing_channel_id = 0
        self.outgoing_htlc_id = 0
        self.circuit_actual = False
        self.incoming_amt_msat: int | None = None
        self.outgoing_amt_msat: int | None = None
        self.failure_class: FailureClass | None = None
        self.wire_failure: int | None = None
        self.failure_detail: int | None = None
        self.final_settled: bool | None = None
        self.forwarded = False

    def outcome(self) -> Outcome:
        if self.phase is _P.EXPIRED:
            if self.final_settled is False:
                return Outcome.FAILED_DOWNSTREAM if self.forwarded else Outcome.FAILED_LOCAL
            return Outcome.UNRESOLVED
        return _PHASE_OUTCOME[self.phase]

    @staticmethod
    def from_state(state: tuple[Any, ...]) -> _Track:
        track = _Track.__new__(_Track)
        for name, value in zip(_Track.__slots__, state, strict=True):
            setattr(track, name, value)
        return track

    @property
    def incoming_channel_id(self) -> int:
        return self.key[0]

    def missed_fee(self, outcome: Outcome) -> int | None:
        """The snapshot's ``missed_fee_msat`` for ``outcome`` (this track's)."""
        if outcome is not Outcome.FAILED_LOCAL:
            return 0
        if self.incoming_amt_msat is None or self.outgoing_amt_msat is None:
            return None
        return missed_fee_msat(self.incoming_amt_msat, self.outgoing_amt_msat)

    def snapshot(self) -> Attempt:
        outcome = self.outcome()
        return Attempt(
            incoming_channel_id=self.key[0],
            incoming_htlc_id=self.key[1],
            outgoing_channel_id=self.outgoing_channel_id,
            outgoing_htlc_id=self.outgoing_htlc_id,
            first_seen_ns=self.first_seen_ns,
            resolved_ns=self.resolved_ns,
            incoming_amt_msat=self.incoming_amt_msat,
            outgoing_amt_msat=self.outgoing_amt_msat,
            outcome=outcome,
            failure_class=self.failure_class,
            wire_failure=self.wire_failure,
            failure_detail=self.failure_detail,
            missed_fee_msat=self.missed_fee(outcome),
            final_settled=self.final_settled,
        )


#: the tracker's own record of an attempt, as :meth:`AttemptTracker.feed_live` returns it
LiveAttempt = _Track


def _lone_track(key: tuple[int, int], first_seen_ns: int) -> _Track:
    """The record of an attempt of which only a FINAL settled=False is known."""
    track = _Track(key, first_seen_ns)
    track.final_settled = False
    return track


_DEADLINE_KEY = itemgetter(0, 1)
_Entry = tuple[int, tuple[int, int]]  # a heap's (deadline_ns, key)


class _HeapUndo:
    """How to put a heap back as it was at a savepoint without copying it each time:
    the entries pushed and popped since.

    Entries are (deadline, key) tuples, so equal entries are equal values, and what
    every later pop returns depends on the heap's contents alone, not on the order of
    its list: giving the contents back is enough. A heap replaced meanwhile (compacted)
    keeps a copy of its contents at the savepoint instead.
    """

    __slots__ = ("contents", "popped", "pushed")

    def __init__(self) -> None:
        self.pushed: list[_Entry] = []
        self.popped: list[_Entry] = []
        self.contents: list[_Entry] | None = None

    def before(self, heap: list[_Entry]) -> list[_Entry]:
        """The heap as it was at the savepoint, given the heap now."""
        if self.contents is not None:
            return list(self.contents)
        # now = then + pushed - popped, so then = now - (pushed - popped) + (popped -
        # pushed), each difference keeping its positive counts; both are about one
        # batch's entries, the heap ~100 000: only the heap is walked, once
        pushed, popped = Counter(self.pushed), Counter(self.popped)
        drop, add = pushed - popped, popped - pushed
        if not drop:
            then = list(heap)
        else:
            then = []
            for entry in heap:
                if drop.get(entry, 0) > 0:
                    drop[entry] -= 1
                else:
                    then.append(entry)
        if add:
            then.extend(add.elements())
        heapq.heapify(then)
        return then

    def replacing(self, heap: list[_Entry]) -> None:
        """``heap`` is about to be replaced by another list."""
        if self.contents is None:
            self.contents = self.before(heap)


# a track's fields in __slots__ order: what savepoint() keeps of a track before its first
# change in a batch (one C call per event; _Track.from_state rebuilds it on rollback)
_TRACK_STATE = attrgetter(*_Track.__slots__)


# --------------------------------------------------------------------------- tracker


class AttemptTracker:
    """Pairs HTLC events into forward attempts.

    ``timeout_ns``: how long an attempt may stay pending (from its earliest
    event) before :meth:`expire` gives up on it. ``linger_ns``: how long a
    resolved attempt is remembered so late events merge into it.
    """

    def __init__(self, timeout_ns: int, linger_ns: int) -> None:
        if timeout_ns <= 0:
            raise ValueError(f"timeout_ns must be positive, got {timeout_ns}")
        if linger_ns < 0:
            raise ValueError(f"linger_ns must not be negative, got {linger_ns}")
        self._timeout_ns = timeout_ns
        self._linger_ns = linger_ns
        self._tracks: dict[tuple[int, int], _Track] = {}
        self._pending = 0
        #: attempts resolved so far, indexed by the Outcome they first resolved with
        self.resolved = [0] * len(Outcome)
        # Min-heaps of (deadline_ns, key). Entries are hints, checked against the
        # track when popped, so stale ones (a track resolved, re-dated or gone)
        # cost nothing but their slot until their deadline.
        self._timeouts: list[tuple[int, tuple[int, int]]] = []
        self._lingers: list[tuple[int, tuple[int, int]]] = []
        # Incoming keys of RECEIVE events → forget-after deadline.
        self._receive_keys: dict[tuple[int, int], int] = {}
        self._receive_heap: list[tuple[int, tuple[int, int]]] = []
        # Lone FINAL settled=False records (see the module's docstring): packed key →
        # first_seen_ns, in insertion order, which is time order: one whose time is
        # before the newest one's (``_lone_newest``) gets a full record instead, so the
        # oldest are always first and expire() stops at the first that is not due.
        self._lone: dict[int, int] = {}
        self._lone_newest = 0
        # Since the last savepoint(): each track's state before its first change
        # (None: it did not exist), each lone record's time likewise, and the rest of
        # the state, for rollback().
        self._undo: dict[tuple[int, int], tuple[Any, ...] | None] | None = None
        self._lone_undo: dict[int, int | None] = {}
        # the two large heaps' changes since the savepoint (None: no savepoint yet)
        self._timeouts_undo: _HeapUndo | None = None
        self._lingers_undo: _HeapUndo | None = None
        self._saved: tuple[Any, ...] = ()
        #: whether the last :meth:`feed` decided its attempt's outcome (the event that
        #: makes a failure count, once)
        self.decided = False

    @property
    def pending(self) -> int:
        """Attempts still waiting for an outcome."""
        return self._pending

    @property
    def tracked(self) -> int:
        """Attempts held in memory (pending and lingering)."""
        return len(self._tracks) + len(self._lone)

    def feed(self, ev: HtlcEvent) -> Attempt | None:
        """Apply one event; the attempt's new state if it changed, else None."""
        track = self.feed_live(ev)
        return None if track is None else track.snapshot()

    def feed_live(self, ev: HtlcEvent) -> LiveAttempt | None:
        """:meth:`feed`, returning the tracker's own record of the attempt instead of a
        snapshot: it changes with the next event, so read it (``key``, ``outcome()``) or
        ``snapshot()`` it before feeding more. For a batch that needs only each
        attempt's last state, one snapshot per attempt instead of one per event.
        """
        key = (ev.incoming_channel_id, ev.incoming_htlc_id)
        if ev.kind == _FINAL:
            if ev.settled is None or ev.event_type not in _FINAL_TYPES:
                return None
            signal = _S.FINAL_SETTLED if ev.settled else _S.FINAL_FAILED
            track = self._tracks.get(key)
            if track is None and key in self._receive_keys:
                return None
        elif ev.event_type == _TYPE_FORWARD:
            found = _SIGNAL_OF_KIND.get(ev.kind)
            if found is None:
                return None
            signal = found
            track = self._tracks.get(key)
            if (
                signal is _S.FORWARD_FAIL
                and not ev.outgoing_htlc_id
                and (track is None or not track.forwarded)
            ):
                signal = _S.REJECTED
        else:
            if ev.event_type == _TYPE_RECEIVE:
                self._remember_receive(key, ev.timestamp_ns)
            return None

        ts = ev.timestamp_ns
        self.decided = False
        lone_ts = None
        if track is None and (self._lone or signal is _S.FINAL_FAILED):
            packed = key[0] << _HTLC_BITS | key[1]
            lone_ts = self._lone.get(packed)
            if signal is _S.FINAL_FAILED and not ev.incoming_amt_msat and not ev.outgoing_amt_msat:
                if lone_ts is None:
                    if ts >= self._lone_newest:
                        return self._add_lone(key, packed, ts)
                elif ts >= lone_ts:
                    return None  # nothing new: as a full record would have merged it
        if self._undo is not None and key not in self._undo:
            self._undo[key] = None if track is None else _TRACK_STATE(track)
        if lone_ts is not None:  # another event joins a lone FINAL: a full record now
            track = self._promote(key, packed, lone_ts)
        before = Outcome.PENDING if track is None else track.outcome()
        if track is None:
            track = _Track(key, ts)
            self._tracks[key] = track
            self._pending += 1
            new_deadline = True
            self._merge(track, ev, signal)
            changed = True
        else:
            # re-dated earlier, or a lone FINAL's first full record: a new timeout
            new_deadline = lone_ts is not None or ts < track.first_seen_ns
            changed = self._merge(track, ev, signal)

        phase = track.phase
        nxt = _TRANSITIONS[(phase, signal)]
        if nxt is not phase:
            if phase is _P.PENDING:
                self._pending -= 1
                self.resolved[_PHASE_OUTCOME[nxt]] += 1
            if phase is not _P.REJECTED_LOCAL:  # a late FORWARD: the fail's time stands
                track.resolved_ns = ts
            track.phase = nxt
            self.decided = track.outcome() is not before
            if nxt is _P.FAILED_LOCAL:
                track.wire_failure = ev.wire_failure
                track.failure_detail = ev.failure_detail
                track.failure_class = classify(ev.wire_failure, ev.failure_detail)
            entry = (ts + self._linger_ns, key)
            heapq.heappush(self._lingers, entry)
            if self._lingers_undo is not None:
                self._lingers_undo.pushed.append(entry)
            changed = True
        elif (
            _PROVES.get(signal) is phase
            and phase is not _P.FAILED_LOCAL  # counted at the event that decided it
            and track.resolved_ns is not None
            and ts < track.resolved_ns
        ):
            track.resolved_ns = ts
            changed = True

        if new_deadline and track.phase is _P.PENDING:
            entry = (track.first_seen_ns + self._timeout_ns, key)
            heapq.heappush(self._timeouts, entry)
            if self._timeouts_undo is not None:
                self._timeouts_undo.pushed.append(entry)
            if len(self._timeouts) > 2 * len(self._tracks) + 1024:  # amortised O(1)
                self._compact_timeouts()
        return track if changed else None

    def _add_lone(self, key: tuple[int, int], packed: int, ts: int) -> _Track:
        """A lone FINAL settled=False, held compactly; returns what its record would be."""
        if self._undo is not None and packed not in self._lone_undo:
            self._lone_undo[packed] = None
        self._lone[packed] = ts
        self._lone_newest = ts
        self._pending += 1
        return _lone_track(key, ts)

    def _promote(self, key: tuple[int, int], packed: int, first_seen_ns: int) -> _Track:
        """The full record of a lone FINAL (its key's undo entry is already taken)."""
        del self._lone[packed]
        if self._undo is not None and packed not in self._lone_undo:
            self._lone_undo[packed] = first_seen_ns
        track = self._tracks[key] = _lone_track(key, first_seen_ns)
        return track

    def _compact_timeouts(self) -> None:
        """Drop the hints of attempts that resolved long before their deadline.

        Most forwards resolve within milliseconds, so without this the heap would
        hold one entry per attempt of the last ``timeout_ns`` however few are pending.
        """
        timeout = self._timeout_ns
        if self._timeouts_undo is not None:
            self._timeouts_undo.replacing(self._timeouts)
        self._timeouts = [
            (track.first_seen_ns + timeout, key)
            for key, track in self._tracks.items()
            if track.phase is _P.PENDING
        ]
        heapq.heapify(self._timeouts)

    def expire(self, now_ns: int) -> list[Attempt]:
        """Give up on attempts pending longer than the timeout; forget old ones.

        Returns the attempts that expired now (UNRESOLVED; FAILED_DOWNSTREAM when
        a FORWARD and a FINAL settled=False were seen; FAILED_LOCAL, class OTHER,
        when only a FINAL settled=False was: a malformed onion). Resolved attempts
        older than ``linger_ns`` and stale RECEIVE keys are dropped.
        """
        # (deadline, key, attempt): the order a single heap of every pending attempt
        # would give them in
        expired: list[tuple[int, tuple[int, int], Attempt]] = []
        tracks = self._tracks
        timeout = self._timeout_ns
        heap = self._timeouts
        undo_t, undo_l = self._timeouts_undo, self._lingers_undo
        while heap and heap[0][0] < now_ns:
            entry = heapq.heappop(heap)
            if undo_t is not None:
                undo_t.popped.append(entry)
            deadline, key = entry
            track = tracks.get(key)
            if (
                track is None
                or track.phase is not _P.PENDING
                or track.first_seen_ns + timeout >= now_ns
            ):
                continue  # stale hint
            self._keep(key, track)
            track.phase = _P.EXPIRED
            track.resolved_ns = now_ns
            if track.final_settled is False and not track.forwarded:
                # a malformed onion: failed when its FINAL came, not when we gave up
                track.failure_class = FailureClass.OTHER
                track.resolved_ns = track.first_seen_ns
            self._pending -= 1
            self.resolved[track.outcome()] += 1
            entry = (now_ns + self._linger_ns, key)
            heapq.heappush(self._lingers, entry)
            if undo_l is not None:
                undo_l.pushed.append(entry)
            expired.append((deadline, key, track.snapshot()))
        if self._lone:
            lone_expired = self._expire_lone(now_ns)
            if lone_expired:  # ties (one deadline) go by key, as in one heap
                expired = sorted(expired + lone_expired, key=_DEADLINE_KEY)

        linger = self._linger_ns
        heap = self._lingers
        while heap and heap[0][0] < now_ns:
            entry = heapq.heappop(heap)
            if undo_l is not None:
                undo_l.popped.append(entry)
            key = entry[1]
            track = tracks.get(key)
            if track is None or track.resolved_ns is None:
                continue  # stale hint
            deadline = track.resolved_ns + linger
            if deadline < now_ns:
                self._keep(key, track)
                del tracks[key]
            else:  # resolved again later (an expiry overruled by a late event)
                entry = (deadline, key)
                heapq.heappush(heap, entry)
                if undo_l is not None:
                    undo_l.pushed.append(entry)

        receive_keys = self._receive_keys
        heap = self._receive_heap
        while heap and heap[0][0] < now_ns:
            _, key = heapq.heappop(heap)
            known = receive_keys.get(key)
            if known is not None and known < now_ns:
                del receive_keys[key]
        return [att for _, _, att in expired]

    def _expire_lone(self, now_ns: int) -> list[tuple[int, tuple[int, int], Attempt]]:
        """The lone FINALs due now, as expire() gives a full record up: a local failure
        of class OTHER dated by its FINAL, remembered ``linger_ns`` from now."""
        lone = self._lone
        due = []
        limit = now_ns - self._timeout_ns
        for packed, first_seen in lone.items():  # oldest first
            if first_seen >= limit:
                break
            due.append((packed, first_seen))
        out = []
        lingers = self._lingers
        linger_until = now_ns + self._linger_ns
        undo, lone_undo = self._undo, self._lone_undo
        for packed, first_seen in due:
            del lone[packed]
            key = (packed >> _HTLC_BITS, packed & _HTLC_MASK)
            if undo is not None:
                lone_undo.setdefault(packed, first_seen)
                undo.setdefault(key, None)
            track = self._tracks[key] = _lone_track(key, first_seen)
            track.phase = _P.EXPIRED
            track.failure_class = FailureClass.OTHER
            track.resolved_ns = first_seen
            entry = (linger_until, key)
            heapq.heappush(lingers, entry)
            if self._lingers_undo is not None:
                self._lingers_undo.pushed.append(entry)
            out.append((first_seen + self._timeout_ns, key, track.snapshot()))
        self._pending -= len(due)
        self.resolved[Outcome.FAILED_LOCAL] += len(due)
        return out

    # ------------------------------------------------------------------ savepoints

    def savepoint(self) -> None:
        """Remember the state now; :meth:`rollback` returns to it.

        For a store transaction that may fail after its events were fed: its retry
        must find the tracker as it was, or the events would read as replays. Cheap:
        a track is copied only when first changed, the two large heaps not at all
        (their pushes and pops are noted instead: at 20 000 events/s they hold ~100 000
        entries each, and copying them took ~1 ms a batch), the rest shallowly.
        """
        self._undo = {}
        self._lone_undo = {}
        self._timeouts_undo = _HeapUndo()
        self._lingers_undo = _HeapUndo()
        self._saved = (
            self._lone_newest,
            self._pending,
            dict(self._receive_keys),
            list(self._receive_heap),
            list(self.resolved),
        )

    def rollback(self) -> None:
        """Undo every feed and expire since :meth:`savepoint` (which stays in force)."""
        if self._undo is None:
            raise RuntimeError("rollback() without savepoint()")
        for key, before in self._undo.items():
            if before is None:
                self._tracks.pop(key, None)
            else:
                self._tracks[key] = _Track.from_state(before)
        if self._lone_undo:
            lone = self._lone
            for packed, before_ts in self._lone_undo.items():
                if before_ts is None:
                    lone.pop(packed, None)
                else:
                    lone[packed] = before_ts
            # back in time order (rare: a failed write), which re-insertion broke
            self._lone = dict(sorted(lone.items(), key=itemgetter(1)))
            self._lone_undo = {}
        (
            self._lone_newest,
            pending,
            receive_keys,
            receive_heap,
            resolved,
        ) = self._saved
        self._pending = pending
        self.resolved[:] = resolved  # in place: readers hold the list
        assert self._timeouts_undo is not None and self._lingers_undo is not None
        self._timeouts = self._timeouts_undo.before(self._timeouts)
        self._lingers = self._lingers_undo.before(self._lingers)
        self._timeouts_undo = _HeapUndo()
        self._lingers_undo = _HeapUndo()
        self._receive_keys = dict(receive_keys)
        self._receive_heap = list(receive_heap)
        self._undo = {}

    def _keep(self, key: tuple[int, int], track: _Track) -> None:
        if self._undo is not None and key not in self._undo:
            self._undo[key] = _TRACK_STATE(track)

    # ------------------------------------------------------------------ internals

    def _merge(self, track: _Track, ev: HtlcEvent, signal: _Signal) -> bool:
        """Fold the event's facts (not its outcome) into the track."""
        changed = False
        if ev.timestamp_ns < track.first_seen_ns:
            track.first_seen_ns = ev.timestamp_ns
            changed = True
        if signal is _S.REJECTED:  # names the requested next hop, like a LINK_FAIL
            if (
                not track.circuit_actual
                and not track.outgoing_channel_id
                and ev.outgoing_channel_id
            ):
                track.outgoing_channel_id = ev.outgoing_channel_id
                changed = True
        elif signal in _CARRIES_CIRCUIT:
            if signal is _S.FORWARD and not track.forwarded:
                track.forwarded = True
                if track.phase is _P.EXPIRED:  # may turn UNRESOLVED into FAILED_DOWNSTREAM
                    changed = True
            if not track.circuit_actual and ev.outgoing_channel_id:
                track.circuit_actual = True
                if (track.outgoing_channel_id, track.outgoing_htlc_id) != (
                    ev.outgoing_channel_id,
                    ev.outgoing_htlc_id,
                ):
                    track.outgoing_channel_id = ev.outgoing_channel_id
                    track.outgoing_htlc_id = ev.outgoing_htlc_id
                    changed = True
        elif signal is _S.LINK_FAIL:
            if (
                not track.circuit_actual
                and not track.outgoing_channel_id
                and ev.outgoing_channel_id
            ):
                track.outgoing_channel_id = ev.outgoing_channel_id
                track.outgoing_htlc_id = ev.outgoing_htlc_id
                changed = True
        elif signal in _FINALS and track.final_settled is None:  # the first verdict stands
            track.final_settled = signal is _S.FINAL_SETTLED
            changed = True
        if track.incoming_amt_msat is None and ev.incoming_amt_msat:
            track.incoming_amt_msat = ev.incoming_amt_msat
            changed = True
        if track.outgoing_amt_msat is None and ev.outgoing_amt_msat:
            track.outgoing_amt_msat = ev.outgoing_amt_msat
            changed = True
        return changed

    def _remember_receive(self, key: tuple[int, int], ts_ns: int) -> None:
        # lnd sends a received HTLC's FINAL right after its settle or fail event, so
        # the key is needed only briefly (not for the whole attempt timeout: at a busy
        # node that would hold every invoice HTLC of the last ten minutes).
        deadline = ts_ns + self._linger_ns + _RECEIVE_GRACE_NS
        known = self._receive_keys.get(key)
        if known is None or deadline > known:
            self._receive_keys[key] = deadline
            heapq.heappush(self._receive_heap, (deadline, key))
            if len(self._receive_heap) > 2 * len(self._receive_keys) + 1024:
                self._receive_heap = [(d, k) for k, d in self._receive_keys.items()]
                heapq.heapify(self._receive_heap)
