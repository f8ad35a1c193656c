from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnflow.analysis import FailureClass
from lnflow.attempts import _TRANSITIONS, Attempt, AttemptTracker, Outcome, _Phase, _Signal
from lnflow.domain import EventKind, EventType, FailureDetail, HtlcEvent, WireFailure

S = 1_000_000_000
TIMEOUT = 60 * S
LINGER = 300 * S
T0 = 1_700_000_000 * S

IN_CHAN = 800_000 << 40
OUT_CHAN = 810_000 << 40
IN_HTLC = 7
OUT_HTLC = 3
IN_AMT = 1_001_500
OUT_AMT = 1_000_000
FEE = IN_AMT - OUT_AMT

Event = Callable[[int], HtlcEvent]


def ev(
    kind: EventKind,
    ts: int,
    *,
    event_type: int = EventType.FORWARD,
    in_chan: int = IN_CHAN,
    in_htlc: int = IN_HTLC,
    out_chan: int = OUT_CHAN,
    out_htlc: int = OUT_HTLC,
    in_amt: int | None = None,
    out_amt: int | None = None,
    wire: int | None = None,
    detail: int | None = None,
    settled: bool | None = None,
) -> HtlcEvent:
    return HtlcEvent(
        timestamp_ns=ts,
        kind=kind,
        event_type=event_type,
        incoming_channel_id=in_chan,
        incoming_htlc_id=in_htlc,
        outgoing_channel_id=out_chan,
        outgoing_htlc_id=out_htlc,
        incoming_amt_msat=in_amt,
        outgoing_amt_msat=out_amt,
        wire_failure=wire,
        failure_detail=detail,
        failure_string="x" if kind == EventKind.LINK_FAIL else None,
        settled=settled,
        offchain=True if settled is not None else None,
    )


def _no_info(kw: dict[str, Any]) -> None:
    """Settle, forward-fail and final events carry no amounts."""
    kw.pop("in_amt", None)
    kw.pop("out_amt", None)


def forward(ts: int = T0, **kw: Any) -> HtlcEvent:
    kw.setdefault("in_amt", IN_AMT)
    kw.setdefault("out_amt", OUT_AMT)
    return ev(EventKind.FORWARD, ts, **kw)


def settle(ts: int = T0 + S, **kw: Any) -> HtlcEvent:
    _no_info(kw)
    return ev(EventKind.SETTLE, ts, **kw)


def forward_fail(ts: int = T0 + S, **kw: Any) -> HtlcEvent:
    _no_info(kw)
    return ev(EventKind.FORWARD_FAIL, ts, **kw)


def link_fail(
    ts: int = T0 + S,
    wire: int = WireFailure.TEMPORARY_CHANNEL_FAILURE,
    detail: int = FailureDetail.INSUFFICIENT_BALANCE,
    **kw: Any,
) -> HtlcEvent:
    kw.setdefault("out_htlc", 0)
    kw.setdefault("in_amt", IN_AMT)
    kw.setdefault("out_amt", OUT_AMT)
    return ev(EventKind.LINK_FAIL, ts, wire=wire, detail=detail, **kw)


def final(settled: bool, ts: int = T0 + 2 * S, **kw: Any) -> HtlcEvent:
    _no_info(kw)
    kw.setdefault("event_type", EventType.UNKNOWN)
    kw.setdefault("out_chan", 0)
    kw.setdefault("out_htlc", 0)
    return ev(EventKind.FINAL, ts, settled=settled, **kw)


def attempt(**overrides: object) -> Attempt:
    """The attempt of the default circuit, with the given fields replaced."""
    fields: dict[str, object] = {
        "incoming_channel_id": IN_CHAN,
        "incoming_htlc_id": IN_HTLC,
        "outgoing_channel_id": OUT_CHAN,
        "outgoing_htlc_id": OUT_HTLC,
        "first_seen_ns": T0,
        "resolved_ns": T0 + S,
        "incoming_amt_msat": IN_AMT,
        "outgoing_amt_msat": OUT_AMT,
        "outcome": Outcome.SETTLED,
        "failure_class": None,
        "wire_failure": None,
        "failure_detail": None,
        "missed_fee_msat": 0,
        "final_settled": None,
    }
    fields.update(overrides)
    return Attempt(**fields)  # type: ignore[arg-type]


def run(
    events: Sequence[HtlcEvent], expire_at: int | None = None, tracker: AttemptTracker | None = None
) -> tuple[AttemptTracker, dict[tuple[int, int], Attempt]]:
    """Feed events (then expire once); the latest state of every attempt seen."""
    tracker = tracker or AttemptTracker(TIMEOUT, LINGER)
    latest: dict[tuple[int, int], Attempt] = {}
    for event in events:
        changed = tracker.feed(event)
        if changed is not None:
            latest[changed.key] = changed
    if expire_at is not None:
        for expired in tracker.expire(expire_at):
            latest[expired.key] = expired
    return tracker, latest


def only(latest: dict[tuple[int, int], Attempt]) -> Attempt:
    assert len(latest) == 1
    return next(iter(latest.values()))


AFTER_TIMEOUT = T0 + TIMEOUT + 1

FAILED_LOCAL = attempt(
    first_seen_ns=T0 + S,
    outcome=Outcome.FAILED_LOCAL,
    outgoing_htlc_id=0,
    failure_class=FailureClass.LIQUIDITY,
    wire_failure=WireFailure.TEMPORARY_CHANNEL_FAILURE,
    failure_detail=FailureDetail.INSUFFICIENT_BALANCE,
    missed_fee_msat=FEE,
)

# a lone FINAL settled=False at T0, expired: a malformed onion, failed at the FINAL's
# time (not the wall clock's)
MALFORMED = attempt(
    outgoing_channel_id=0,
    outgoing_htlc_id=0,
    resolved_ns=T0,
    incoming_amt_msat=None,
    outgoing_amt_msat=None,
    outcome=Outcome.FAILED_LOCAL,
    failure_class=FailureClass.OTHER,
    missed_fee_msat=None,
    final_settled=False,
)

# ------------------------------------------------------------------ every ordering


def _orderings(**events: HtlcEvent) -> list[pytest.ParameterSet]:
    return [
        pytest.param([events[name] for name in order], id="-".join(order))
        for order in itertools.permutations(events)
    ]


@pytest.mark.parametrize(
    "events", _orderings(forward=forward(), settle=settle(), final=final(settled=True))
)
def test_forward_settle_final_in_any_order_is_settled(events: list[HtlcEvent]) -> None:
    tracker, latest = run(events)
    assert only(latest) == attempt(final_settled=True)
    assert (tracker.pending, tracker.tracked) == (0, 1)
    assert tracker.expire(AFTER_TIMEOUT) == []


@pytest.mark.parametrize(
    "events",
    _orderings(forward=forward(), forward_fail=forward_fail(), final=final(settled=False)),
)
def test_forward_fail_final_in_any_order_is_failed_downstream(events: list[HtlcEvent]) -> None:
    tracker, latest = run(events)
    assert only(latest) == attempt(outcome=Outcome.FAILED_DOWNSTREAM, final_settled=False)
    assert tracker.pending == 0


@pytest.mark.parametrize("events", _orderings(link_fail=link_fail(), final=final(settled=False)))
def test_link_fail_final_without_forward_is_failed_local(events: list[HtlcEvent]) -> None:
    tracker, latest = run(events)
    assert only(latest) == replace(FAILED_LOCAL, final_settled=False)
    assert tracker.pending == 0


# ------------------------------------------------------------------ outcomes by scenario


@pytest.mark.parametrize(
    ("events", "before_expiry", "after_expiry"),
    [
        ([link_fail()], FAILED_LOCAL, None),
        (
            [forward()],
            attempt(resolved_ns=None, outcome=Outcome.PENDING),
            attempt(resolved_ns=AFTER_TIMEOUT, outcome=Outcome.UNRESOLVED),
        ),
        (
            [forward(), final(settled=False)],
            attempt(resolved_ns=None, outcome=Outcome.PENDING, final_settled=False),
            attempt(
                resolved_ns=AFTER_TIMEOUT,
                outcome=Outcome.FAILED_DOWNSTREAM,
                final_settled=False,
            ),
        ),
        (
            [final(settled=True, ts=T0)],
            attempt(
                outgoing_channel_id=0,
                outgoing_htlc_id=0,
                resolved_ns=T0,
                incoming_amt_msat=None,
                outgoing_amt_msat=None,
                final_settled=True,
            ),
            None,
        ),
        (
            [final(settled=False, ts=T0)],
            replace(
                MALFORMED,
                resolved_ns=None,
                outcome=Outcome.PENDING,
                failure_class=None,
                missed_fee_msat=0,
            ),
            MALFORMED,
        ),
        (
            [forward(), settle()],
            attempt(),
            None,
        ),
    ],
    ids=[
        "link-fail-alone",
        "forward-alone-unresolved",
        "forward-final-failed-is-downstream",
        "final-settled-alone",
        "final-failed-alone-is-a-malformed-onion",
        "settled-no-final",
    ],
)
def test_expiry(
    events: list[HtlcEvent], before_expiry: Attempt, after_expiry: Attempt | None
) -> None:
    tracker, latest = run(events)
    assert only(latest) == before_expiry
    assert tracker.expire(T0 + TIMEOUT) == []  # pending exactly the timeout: not longer
    expired = tracker.expire(AFTER_TIMEOUT)
    assert expired == ([after_expiry] if after_expiry is not None else [])
    assert (tracker.pending, tracker.tracked) == (0, 1)
    assert tracker.expire(AFTER_TIMEOUT + 1) == []


@pytest.mark.parametrize(
    ("wire", "detail", "expected"),
    [
        (WireFailure.FEE_INSUFFICIENT, FailureDetail.NO_DETAIL, FailureClass.FEE),
        (WireFailure.UNKNOWN_NEXT_PEER, FailureDetail.NO_DETAIL, FailureClass.AVAILABILITY),
        (
            WireFailure.TEMPORARY_CHANNEL_FAILURE,
            FailureDetail.HTLC_EXCEEDS_MAX,
            FailureClass.MAX_HTLC,
        ),
        (4242, 4242, FailureClass.OTHER),
    ],
    ids=["fee", "availability", "max-htlc", "unknown-numbers-kept"],
)
def test_link_fail_records_its_class(wire: int, detail: int, expected: FailureClass) -> None:
    _, latest = run([link_fail(wire=wire, detail=detail)])
    got = only(latest)
    assert (got.failure_class, got.wire_failure, got.failure_detail) == (expected, wire, detail)
    assert got.missed_fee_msat == FEE


def test_incoming_side_link_fail_has_no_outgoing_side_and_an_unknown_missed_fee() -> None:
    # lnd: onion errors fail on the incoming link; outgoing fields and amount are 0
    event = link_fail(
        wire=WireFailure.INVALID_ONION_HMAC,
        detail=FailureDetail.ONION_DECODE,
        out_chan=0,
        out_htlc=0,
        out_amt=0,
    )
    _, latest = run([event])
    got = only(latest)
    assert got.outcome is Outcome.FAILED_LOCAL
    assert got.failure_class is FailureClass.OTHER
    assert (got.outgoing_channel_id, got.outgoing_amt_msat, got.missed_fee_msat) == (0, None, None)
    assert got.incoming_amt_msat == IN_AMT


def test_fee_below_zero_is_no_missed_fee() -> None:
    _, latest = run([link_fail(in_amt=OUT_AMT - 1)])
    assert only(latest).missed_fee_msat == 0


@pytest.mark.parametrize(
    "events",
    _orderings(link_fail=link_fail(in_amt=0, out_amt=0), forward=forward(ts=T0 + S, out_htlc=0)),
)
def test_amounts_from_whichever_event_carries_them(events: list[HtlcEvent]) -> None:
    _, latest = run(events)
    assert only(latest) == FAILED_LOCAL


@pytest.mark.parametrize(
    "events",
    _orderings(link_fail=link_fail(out_chan=OUT_CHAN + 1), forward=forward(ts=T0 + S, out_htlc=0)),
)
def test_the_used_channel_beats_the_requested_one(events: list[HtlcEvent]) -> None:
    # non-strict forwarding: FORWARD names the channel used, LINK_FAIL the one requested
    _, latest = run(events)
    assert only(latest).outgoing_channel_id == OUT_CHAN


# ------------------------------------------------------------------ replays and ignores


REPLAY_SCENARIOS = {
    "settled": [forward(), settle(), final(settled=True)],
    "failed-local": [link_fail(), final(settled=False)],
    "failed-downstream": [forward(), forward_fail(), final(settled=False)],
    "final-first": [final(settled=True, ts=T0), forward(), settle()],
    "pending": [forward(), final(settled=False)],
}


@pytest.mark.parametrize("events", list(REPLAY_SCENARIOS.values()), ids=list(REPLAY_SCENARIOS))
def test_replays_are_no_ops(events: list[HtlcEvent]) -> None:
    tracker = AttemptTracker(TIMEOUT, LINGER)
    for event in events:
        tracker.feed(event)
        assert tracker.feed(event) is None  # immediate replay
    counts = (tracker.pending, tracker.tracked)
    for event in [*events, *reversed(events)]:  # replay of the whole stream
        assert tracker.feed(event) is None
    assert (tracker.pending, tracker.tracked) == counts


def test_replay_after_expiry_is_a_no_op() -> None:
    tracker, _ = run([forward(), final(settled=False)], expire_at=AFTER_TIMEOUT)
    assert tracker.feed(forward()) is None
    assert tracker.feed(final(settled=False)) is None


@pytest.mark.parametrize(
    "event_type", [EventType.SEND, EventType.RECEIVE, 99], ids=["send", "receive", "unknown-99"]
)
@pytest.mark.parametrize(
    "kind",
    [EventKind.FORWARD, EventKind.SETTLE, EventKind.FORWARD_FAIL, EventKind.LINK_FAIL],
    ids=["forward", "settle", "forward_fail", "link_fail"],
)
def test_send_and_receive_events_are_ignored(event_type: int, kind: EventKind) -> None:
    tracker = AttemptTracker(TIMEOUT, LINGER)
    assert tracker.feed(ev(kind, T0, event_type=event_type, in_amt=IN_AMT, out_amt=0)) is None
    assert (tracker.pending, tracker.tracked) == (0, 0)


@pytest.mark.parametrize(
    "event",
    [
        ev(EventKind.UNKNOWN, T0),  # a oneof variant newer than this code
        final(settled=True, event_type=EventType.RECEIVE),
        final(settled=True, event_type=EventType.SEND),
        ev(EventKind.FINAL, T0, event_type=EventType.UNKNOWN, settled=None),
    ],
    ids=["unknown-kind", "final-of-receive-type", "final-of-send-type", "final-without-verdict"],
)
def test_events_without_forward_meaning_are_ignored(event: HtlcEvent) -> None:
    tracker = AttemptTracker(TIMEOUT, LINGER)
    assert tracker.feed(event) is None
    assert tracker.tracked == 0


def test_final_of_a_received_htlc_makes_no_attempt() -> None:
    # our own rebalance arriving: RECEIVE settle, then FINAL with event_type UNKNOWN
    tracker = AttemptTracker(TIMEOUT, LINGER)
    assert tracker.feed(settle(T0, event_type=EventType.RECEIVE, out_chan=0, out_htlc=0)) is None
    assert tracker.feed(final(settled=True)) is None
    assert tracker.tracked == 0
    # the receive key is remembered for timeout + linger, then forgotten
    tracker.expire(T0 + TIMEOUT + LINGER)
    assert tracker.feed(final(settled=True)) is None
    tracker.expire(T0 + TIMEOUT + LINGER + 1)
    assert tracker.feed(final(settled=True)) is not None


def test_failed_invoice_final_is_no_malformed_onion() -> None:
    # an invoice HTLC we failed: RECEIVE link fail, then FINAL(false) with no other event
    tracker = AttemptTracker(TIMEOUT, LINGER)
    receive_fail = link_fail(
        T0,
        event_type=EventType.RECEIVE,
        wire=WireFailure.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS,
        detail=FailureDetail.UNKNOWN_INVOICE,
        out_chan=0,
    )
    assert tracker.feed(receive_fail) is None
    assert tracker.feed(final(settled=False, ts=T0 + 1)) is None
    assert tracker.expire(AFTER_TIMEOUT) == []
    assert tracker.tracked == 0


# ------------------------------------------------------------------ late events, memory


@pytest.mark.parametrize(
    ("events", "late", "expected"),
    [
        (
            [forward(), settle()],
            final(settled=True),
            attempt(final_settled=True),
        ),
        (
            [link_fail()],
            final(settled=False),
            replace(FAILED_LOCAL, final_settled=False),
        ),
        (
            [forward(), forward_fail()],
            final(settled=False),
            attempt(outcome=Outcome.FAILED_DOWNSTREAM, final_settled=False),
        ),
    ],
    ids=["settled", "failed-local", "failed-downstream"],
)
def test_late_final_merges_into_the_resolved_attempt(
    events: list[HtlcEvent], late: HtlcEvent, expected: Attempt
) -> None:
    tracker, _ = run(events, expire_at=T0 + LINGER)
    assert tracker.feed(late) == expected
    assert (tracker.pending, tracker.tracked) == (0, 1)


@pytest.mark.parametrize(
    ("late", "expected"),
    [
        (settle(), attempt()),
        (final(settled=True), attempt(resolved_ns=T0 + 2 * S, final_settled=True)),
        (
            final(settled=False),
            attempt(
                resolved_ns=AFTER_TIMEOUT, outcome=Outcome.FAILED_DOWNSTREAM, final_settled=False
            ),
        ),
        (
            link_fail(out_htlc=OUT_HTLC),
            replace(FAILED_LOCAL, first_seen_ns=T0, outgoing_htlc_id=OUT_HTLC),
        ),
        (forward_fail(), attempt(outcome=Outcome.FAILED_DOWNSTREAM)),
    ],
    ids=["settle", "final-settled", "final-failed", "link-fail", "forward-fail"],
)
def test_late_evidence_overrules_an_expiry(late: HtlcEvent, expected: Attempt) -> None:
    tracker, latest = run([forward()], expire_at=AFTER_TIMEOUT)
    assert only(latest).outcome is Outcome.UNRESOLVED
    assert tracker.feed(late) == expected
    assert tracker.tracked == 1


@pytest.mark.parametrize(
    ("first", "contradiction"),
    [
        (link_fail(), settle()),
        (link_fail(), forward_fail()),
        (settle(), link_fail()),
        (forward_fail(), final(settled=True)),
    ],
    ids=[
        "settle-after-link-fail",
        "forward-fail-after-link-fail",
        "link-fail-after-settle",
        "final-settled-after-forward-fail",
    ],
)
def test_first_outcome_is_kept(first: HtlcEvent, contradiction: HtlcEvent) -> None:
    tracker, latest = run([first])
    before = only(latest)
    after = tracker.feed(contradiction)
    got = after if after is not None else before
    assert got.outcome is before.outcome
    assert got.resolved_ns == before.resolved_ns
    assert got.failure_class == before.failure_class


def test_a_local_failure_keeps_the_time_of_the_link_fail_that_decided_it() -> None:
    """A second LINK_FAIL (another outgoing channel: no replay) dated earlier proves
    nothing new: the failure was counted at the first, and that stays its time."""
    tracker, latest = run([link_fail(T0 + 2 * S)])
    assert only(latest).resolved_ns == T0 + 2 * S
    tracker.feed(link_fail(T0 + S, out_chan=OUT_CHAN + 1))
    assert tracker.decided is False
    got = tracker.feed(final(False, T0 + 3 * S))
    assert got is not None
    assert (got.resolved_ns, got.outgoing_channel_id) == (T0 + 2 * S, OUT_CHAN)


def test_resolved_attempts_are_forgotten_after_linger() -> None:
    tracker, _ = run([forward(), settle(), link_fail(in_htlc=8), forward(in_htlc=9)])
    assert (tracker.pending, tracker.tracked) == (1, 3)
    expired = tracker.expire(AFTER_TIMEOUT)
    assert [a.incoming_htlc_id for a in expired] == [9]
    tracker.expire(T0 + S + LINGER)  # resolved exactly linger ago: kept
    assert (tracker.pending, tracker.tracked) == (0, 3)
    tracker.expire(T0 + S + LINGER + 1)
    assert tracker.tracked == 1  # the expired one lingers from its expiry
    tracker.expire(AFTER_TIMEOUT + LINGER + 1)
    assert tracker.tracked == 0
    # once forgotten, a replay starts a fresh attempt (the store merges by key)
    assert tracker.feed(settle()) == attempt(
        outgoing_channel_id=OUT_CHAN,
        incoming_amt_msat=None,
        outgoing_amt_msat=None,
        first_seen_ns=T0 + S,
    )


def test_earlier_event_moves_first_seen_and_the_timeout() -> None:
    tracker = AttemptTracker(TIMEOUT, LINGER)
    tracker.feed(final(settled=False, ts=T0 + 10 * S))
    got = tracker.feed(forward(ts=T0))
    assert got is not None and got.first_seen_ns == T0
    assert [a.outcome for a in tracker.expire(AFTER_TIMEOUT)] == [Outcome.FAILED_DOWNSTREAM]


def test_counts() -> None:
    tracker = AttemptTracker(TIMEOUT, LINGER)
    tracker.feed(forward(in_htlc=1))
    tracker.feed(forward(in_htlc=2))
    assert (tracker.pending, tracker.tracked) == (2, 2)
    tracker.feed(settle(in_htlc=1))
    assert (tracker.pending, tracker.tracked) == (1, 2)
    assert len(tracker.expire(AFTER_TIMEOUT)) == 1
    assert (tracker.pending, tracker.tracked) == (0, 2)


@pytest.mark.parametrize(
    ("timeout", "linger"),
    [(0, 1), (-1, 1), (1, -1)],
    ids=["zero-timeout", "neg-timeout", "neg-linger"],
)
def test_rejects_bad_durations(timeout: int, linger: int) -> None:
    with pytest.raises(ValueError):
        AttemptTracker(timeout, linger)


def test_transition_table_is_complete() -> None:
    assert set(_TRANSITIONS) == set(itertools.product(_Phase, _Signal))


def test_outcome_labels() -> None:
    assert [o.label for o in Outcome] == [
        "pending",
        "settled",
        "failed_local",
        "failed_downstream",
        "unresolved",
        "rejected_local",
    ]


# ------------------------------------------------------------------ lnd's odd shapes


def test_forward_fail_without_forward_is_rejected_locally() -> None:
    # an HTLC interceptor failed it: FORWARD_FAIL naming the requested hop, htlc id 0
    _, latest = run([forward_fail(T0, out_htlc=0), final(False, T0 + 1)])
    got = only(latest)
    assert got.outcome is Outcome.REJECTED_LOCAL
    assert (got.outgoing_channel_id, got.outgoing_htlc_id) == (OUT_CHAN, 0)
    assert (got.resolved_ns, got.missed_fee_msat, got.failure_class) == (T0, 0, None)


@pytest.mark.parametrize(
    "events",
    _orderings(forward=forward(T0, out_htlc=0), forward_fail=forward_fail(T0 + S, out_htlc=0)),
)
def test_forward_fail_of_a_forwarded_first_htlc_is_downstream(events: list[HtlcEvent]) -> None:
    # outgoing htlc id 0 is also the first HTLC of a channel: the FORWARD decides
    _, latest = run(events)
    got = only(latest)
    assert (got.outcome, got.resolved_ns) == (Outcome.FAILED_DOWNSTREAM, T0 + S)


def test_forward_fail_with_an_outgoing_htlc_id_is_downstream_even_alone() -> None:
    _, latest = run([forward_fail(T0, out_htlc=5)])
    assert only(latest).outcome is Outcome.FAILED_DOWNSTREAM


@pytest.mark.parametrize(
    ("wire", "detail"),
    [
        (WireFailure.TEMPORARY_CHANNEL_FAILURE, FailureDetail.HTLC_ADD_FAILED),
        (WireFailure.TEMPORARY_CHANNEL_FAILURE, FailureDetail.NO_DETAIL),
    ],
    ids=["htlc-add-failed", "dust-exposure"],
)
def test_zero_amount_link_fail_is_liquidity_with_an_unknown_missed_fee(
    wire: int, detail: int
) -> None:
    # lnd's mailbox FailAdd: every amount and timelock 0, the chosen outgoing link named
    _, latest = run([link_fail(wire=wire, detail=detail, in_amt=0, out_amt=0, out_htlc=0)])
    got = only(latest)
    assert (got.outcome, got.failure_class) == (Outcome.FAILED_LOCAL, FailureClass.LIQUIDITY)
    assert (got.outgoing_channel_id, got.missed_fee_msat) == (OUT_CHAN, None)


def test_a_malformed_onion_counts_once_even_if_its_link_fail_comes_late() -> None:
    tracker = AttemptTracker(TIMEOUT, LINGER)
    tracker.feed(final(False, T0))
    (expired,) = tracker.expire(AFTER_TIMEOUT)
    assert (expired.outcome, expired.failure_class) == (Outcome.FAILED_LOCAL, FailureClass.OTHER)
    tracker.feed(link_fail(T0 - 1))
    assert tracker.decided is False  # already counted as a local failure


# ------------------------------------------------------------------ order independence

# scenario → (events for one attempt given its key and base time, outcome after expiry)
Scenario = Callable[[dict[str, int], int], list[HtlcEvent]]

SCENARIOS: dict[str, tuple[Scenario, Outcome]] = {
    "settled": (
        lambda k, t: [forward(t, **k), settle(t + 1, **k), final(True, t + 2, **k)],
        Outcome.SETTLED,
    ),
    "settled-no-final": (
        lambda k, t: [forward(t, **k), settle(t + 1, **k)],
        Outcome.SETTLED,
    ),
    "final-settled-only": (lambda k, t: [final(True, t, **k)], Outcome.SETTLED),
    "failed-local": (
        lambda k, t: [link_fail(t, **k), final(False, t + 1, **k)],
        Outcome.FAILED_LOCAL,
    ),
    "failed-local-no-final": (lambda k, t: [link_fail(t, **k)], Outcome.FAILED_LOCAL),
    "failed-downstream": (
        lambda k, t: [
            forward(t, **k),
            forward_fail(t + 1, **k),
            final(False, t + 2, **k),
        ],
        Outcome.FAILED_DOWNSTREAM,
    ),
    "forward-final-failed": (
        lambda k, t: [forward(t, **k), final(False, t + 1, **k)],
        Outcome.FAILED_DOWNSTREAM,
    ),
    "forward-only": (lambda k, t: [forward(t, **k)], Outcome.UNRESOLVED),
    "final-failed-only": (lambda k, t: [final(False, t, **k)], Outcome.FAILED_LOCAL),
    "rejected-by-interceptor": (
        lambda k, t: [forward_fail(t, out_htlc=0, **k), final(False, t + 1, **k)],
        Outcome.REJECTED_LOCAL,
    ),
    "failed-downstream-first-htlc": (
        lambda k, t: [forward(t, out_htlc=0, **k), forward_fail(t + 1, out_htlc=0, **k)],
        Outcome.FAILED_DOWNSTREAM,
    ),
}


@st.composite
def streams(
    draw: st.DrawFn,
) -> tuple[list[HtlcEvent], list[HtlcEvent], dict[tuple[int, int], Outcome]]:
    names = draw(st.lists(st.sampled_from(sorted(SCENARIOS)), min_size=1, max_size=8))
    canonical: list[HtlcEvent] = []
    expected: dict[tuple[int, int], Outcome] = {}
    for htlc_id, name in enumerate(names):
        build, outcome = SCENARIOS[name]
        in_chan = draw(st.sampled_from([IN_CHAN, IN_CHAN + 1, IN_CHAN + 2]))
        args = {
            "in_chan": in_chan,
            "in_htlc": htlc_id,
            "out_chan": draw(st.sampled_from([OUT_CHAN, OUT_CHAN + 1])),
            "out_amt": draw(st.integers(1, 10**9)),
        }
        args["in_amt"] = args["out_amt"] + draw(st.integers(0, 10**6))
        ts = T0 + draw(st.integers(0, 30 * S))
        canonical += build(args, ts)
        expected[(in_chan, htlc_id)] = outcome
    # sends and receives on other keys are noise
    canonical += [
        settle(T0, event_type=EventType.RECEIVE, in_htlc=1000, out_chan=0, out_htlc=0),
        forward(T0, event_type=EventType.SEND, in_chan=0, in_htlc=0),
    ]
    duplicates = draw(st.lists(st.sampled_from(canonical), max_size=len(canonical)))
    shuffled = draw(st.permutations(canonical + duplicates))
    return canonical, shuffled, expected


@given(streams())
def test_any_order_with_replays_gives_the_same_attempts(
    stream: tuple[list[HtlcEvent], list[HtlcEvent], dict[tuple[int, int], Outcome]],
) -> None:
    canonical, shuffled, expected = stream
    expire_at = T0 + 40 * S + TIMEOUT
    tracker_a, in_order = run(canonical, expire_at=expire_at)
    tracker_b, any_order = run(shuffled, expire_at=expire_at)
    assert {k: a.outcome for k, a in any_order.items()} == expected
    assert any_order == in_order  # every field, not just the outcome
    # one attempt per incoming forward: nothing counted twice, nothing left pending
    assert tracker_b.tracked == tracker_a.tracked == len(expected)
    assert tracker_b.pending == 0
    for a in any_order.values():
        if a.outcome is not Outcome.FAILED_LOCAL:
            assert a.missed_fee_msat == 0
        elif a.incoming_amt_msat is None or a.outgoing_amt_msat is None:
            assert a.missed_fee_msat is None  # unknown, never 0
        else:
            assert a.missed_fee_msat == a.incoming_amt_msat - a.outgoing_amt_msat


# ------------------------------------------------------------------ lone FINALs


def full_records_only(tracker: AttemptTracker) -> AttemptTracker:
    """The tracker as it was before lone FINALs were held compactly: a lone FINAL far in
    the future, on a key nothing else uses, makes every later one older than the newest,
    and such a one gets a full record."""
    tracker.feed(final(False, 2**62, in_chan=1, in_htlc=2**64 - 1))
    return tracker


def test_a_lone_final_is_held_in_a_fraction_of_a_full_record() -> None:
    def held_per_final(tracker: AttemptTracker) -> float:
        finals = [final(False, T0 + i, in_htlc=10_000 + i) for i in range(5_000)]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for event in finals:
                tracker.feed_live(event)
            return (tracemalloc.get_traced_memory()[0] - before) / len(finals)
        finally:
            tracemalloc.stop()

    compact = held_per_final(AttemptTracker(TIMEOUT, LINGER))
    full = held_per_final(full_records_only(AttemptTracker(TIMEOUT, LINGER)))
    assert compact < 120 < 250 < full, (compact, full)


def test_lone_finals_expire_in_deadline_then_key_order_with_the_full_records() -> None:
    tracker = AttemptTracker(TIMEOUT, LINGER)
    tracker.feed(final(False, T0, in_htlc=3))  # held compactly
    tracker.feed(forward(T0, in_htlc=2))  # a full record, same deadline
    tracker.feed(final(False, T0 + 1, in_htlc=1))  # held compactly, a later deadline
    tracker.feed(final(False, T0 + 1, in_htlc=0))  # held after 1, expires before it
    tracker.feed(forward(T0 + 1, in_htlc=4))
    expired = tracker.expire(AFTER_TIMEOUT + 1)
    assert [(a.incoming_htlc_id, a.outcome) for a in expired] == [
        (2, Outcome.UNRESOLVED),
        (3, Outcome.FAILED_LOCAL),
        (0, Outcome.FAILED_LOCAL),
        (1, Outcome.FAILED_LOCAL),
        (4, Outcome.UNRESOLVED),
    ]
    assert (tracker.pending, tracker.tracked) == (0, 5)
    only_lone = AttemptTracker(TIMEOUT, LINGER)
    for htlc in (1, 0):
        only_lone.feed(final(False, T0, in_htlc=htlc))
    assert [a.incoming_htlc_id for a in only_lone.expire(AFTER_TIMEOUT)] == [0, 1]
    assert expired[1] == replace(MALFORMED, incoming_htlc_id=3)


def feed_all(tracker: AttemptTracker, events: list[HtlcEvent]) -> list[tuple[Attempt, bool] | None]:
    """Each event's change and whether it decided its attempt (said only of a change)."""
    fed: list[tuple[Attempt, bool] | None] = []
    for event in events:
        changed = tracker.feed(event)
        fed.append(None if changed is None else (changed, tracker.decided))
    return fed


@given(streams(), st.data())
def test_lone_finals_held_compactly_pair_like_full_records(
    stream: tuple[list[HtlcEvent], list[HtlcEvent], dict[tuple[int, int], Outcome]],
    data: st.DataObject,
) -> None:
    """Fed, expired, saved and rolled back alike, whichever way lone FINALs are held."""
    _, shuffled, _ = stream
    compact = AttemptTracker(TIMEOUT, LINGER)
    full = full_records_only(AttemptTracker(TIMEOUT, LINGER))
    now = T0
    chunks = data.draw(st.lists(st.integers(1, 4), min_size=len(shuffled)))
    first = 0
    for size in chunks:
        chunk = shuffled[first : first + size]
        first += size
        if not chunk:
            break
        now += data.draw(st.integers(0, TIMEOUT))
        rolled_back = data.draw(st.booleans())
        results = []
        for tracker in (compact, full):
            tracker.savepoint()
            fed = feed_all(tracker, chunk)
            got = (
                fed,
                tracker.expire(now),
                tracker.pending,
                tracker.tracked,
                list(tracker.resolved),
            )
            if rolled_back:  # a failed write: the retry must give the same again
                tracker.rollback()
                fed = feed_all(tracker, chunk)
                again = (fed, tracker.expire(now), tracker.pending, tracker.tracked)
                assert again == got[:4]
            results.append(got)
        (fed_c, expired_c, pending_c, tracked_c, resolved_c) = results[0]
        (fed_f, expired_f, pending_f, tracked_f, resolved_f) = results[1]
        assert fed_c == fed_f
        assert expired_c == expired_f
        # the full tracker holds one more: its far-future FINAL
        assert (pending_c + 1, tracked_c + 1, resolved_c) == (pending_f, tracked_f, resolved_f)
    end = now + 2 * TIMEOUT + LINGER
    assert compact.expire(end) == full.expire(end)
    assert compact.pending == full.pending - 1 == 0
