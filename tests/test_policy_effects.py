"""Measured effects of a policy change and the revert verdict (lnflow.policy.effects),
the measures read from a store on each engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from policystore import (
    IN1,
    IN2,
    LIQUIDITY,
    MAX_HTLC,
    T0,
    A,
    B,
    H,
    S,
    Store,
    make_store,
)

from lnflow.analysis.classify import FailureClass
from lnflow.policy.effects import (
    Effects,
    Verdict,
    WindowEffects,
    dedup_missed,
    measure,
    verdict,
    window_effects,
    window_ns,
)
from lnflow.policy.recorded import LocalFailure, SettledForward
from lnflow.store.engines import StoreLocation

FEE_C, LIQ_C = FailureClass.FEE, FailureClass.LIQUIDITY


def lf(ts: int, fee: int, cluster: int | None, cls: FailureClass = FEE_C) -> LocalFailure:
    return LocalFailure(
        attempt_id=ts,
        resolved_ns=ts,
        failure_class=cls,
        cluster_id=cluster,
        incoming_chan_id=IN1,
        incoming_amt_msat=1_000_000 + fee,
        outgoing_amt_msat=1_000_000,
        missed_fee_msat=fee,
    )


# --------------------------------------------------------------------------- dedup


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        pytest.param([], (0, 0), id="empty"),
        pytest.param([lf(10, 100, 1), lf(20, 150, 1)], (150, 1), id="retry-counted-once"),
        pytest.param([lf(10, 150, 1), lf(20, 100, 1)], (150, 1), id="smaller-retry-adds-nothing"),
        pytest.param([lf(5, 200, 1), lf(20, 260, 1)], (60, 0), id="straddling-adds-its-growth"),
        pytest.param([lf(5, 300, 1), lf(20, 260, 1)], (0, 0), id="straddling-below-earlier"),
        pytest.param([lf(10, 100, 1), lf(12, 300, 2)], (400, 2), id="two-clusters"),
        pytest.param([lf(10, 70, None), lf(11, 70, None)], (140, 0), id="unclustered-each-own"),
        pytest.param([lf(10, 100, 1), lf(100, 500, 1)], (100, 1), id="member-after-window-out"),
        pytest.param([lf(5, 100, 1)], (0, 0), id="only-before-window"),
    ],
)
def test_dedup_missed(failures: list[LocalFailure], expected: tuple[int, int]) -> None:
    assert dedup_missed(failures, 10, 100) == expected


def test_window_effects_counts_out_and_in_with_other_ids() -> None:
    alias = (16_000_000 << 40) | 1
    ids = frozenset({A, alias})
    forwards = [
        SettledForward(10, IN1, A, 1_001_000, 1_000_000, 1_000),
        SettledForward(11, IN1, alias, 1_002_000, 1_000_000, 2_000),  # out under the alias
        SettledForward(12, A, B, 1_000_500, 1_000_000, 500),  # in via A
        SettledForward(13, IN1, B, 1_009_999, 1_000_000, 9_999),  # not A
        SettledForward(100, IN1, A, 1_007_777, 1_000_000, 7_777),  # after the window
    ]
    failures = [lf(10, 100, 1), lf(20, 150, 1), lf(30, 300, 2, LIQ_C), lf(100, 1, 3)]
    got = window_effects(10, 100, ids, failures, forwards, observed_ns=90)
    assert (got.forwards_out, got.fees_out_msat) == (2, 3_000)
    assert (got.forwards_in, got.fees_in_msat) == (1, 500)
    assert got.failures == 3
    assert got.failures_by_class == {
        "liquidity": 1,
        "max_htlc": 0,
        "fee": 2,
        "availability": 0,
        "policy": 0,
        "other": 0,
    }
    assert (got.missed_raw_msat, got.missed_msat, got.clusters) == (550, 450, 2)
    assert got.observed_ns == 90


@pytest.mark.parametrize(
    ("hours", "expected"),
    [(1, H), (0.5, H // 2), (72, 72 * H), (1e-12, 4)],
)
def test_window_ns(hours: float, expected: int) -> None:
    assert window_ns(hours) == expected


@pytest.mark.parametrize("hours", [0, -1, float("nan"), float("inf"), 1e-20])
def test_window_ns_refuses(hours: float) -> None:
    with pytest.raises(ValueError, match="hours must be a number above 0"):
        window_ns(hours)


# --------------------------------------------------------------------------- verdict


def win(forwards: int, fees: int) -> WindowEffects:
    return WindowEffects(
        since_ns=0,
        until_ns=1,
        forwards_out=forwards,
        fees_out_msat=fees,
        forwards_in=0,
        fees_in_msat=0,
        failures=0,
        failures_by_class={},
        clusters=0,
        missed_msat=0,
        missed_raw_msat=0,
    )


def effects(before: WindowEffects, after: WindowEffects, complete: bool = True) -> Effects:
    return Effects(A, 10, 72, before, after, complete, 20 if complete else 5)


@pytest.mark.parametrize(
    ("before", "after", "complete", "threshold", "min_forwards", "revert", "says"),
    [
        pytest.param(win(10, 1_000), win(8, 799), True, 20, 10, True, "down 20.1%", id="over"),
        pytest.param(win(10, 1_000), win(8, 800), True, 20, 10, False, "down 20.0%", id="at"),
        pytest.param(win(9, 1_000), win(0, 0), True, 20, 10, False, "fewer than", id="min-1"),
        pytest.param(win(10, 1_000), win(0, 0), True, 20, 10, True, "down 100.0%", id="min"),
        pytest.param(win(0, 0), win(0, 0), True, 20, 0, False, "no fees earned", id="empty"),
        pytest.param(win(0, 0), win(0, 0), True, 20, 10, False, "fewer than", id="empty-min"),
        pytest.param(win(50, 9_000), win(0, 0), False, 20, 10, False, "not judged yet", id="inc"),
        pytest.param(win(10, 1_000), win(30, 5_000), True, 20, 10, False, "up 400.0%", id="up"),
        pytest.param(win(10, 1_000), win(10, 1_000), True, 0, 10, False, "unchanged", id="same"),
        pytest.param(win(10, 1_000), win(10, 999), True, 0, 10, True, "down 0.1%", id="zero"),
        pytest.param(win(10, 3), win(10, 2), True, 33.3, 1, True, "33.3%", id="exact-fraction"),
        pytest.param(win(10, 3), win(10, 2), True, 100 / 3, 1, False, "within", id="at-third"),
    ],
)
def test_verdict(
    before: WindowEffects,
    after: WindowEffects,
    complete: bool,
    threshold: float,
    min_forwards: int,
    revert: bool,
    says: str,
) -> None:
    got = verdict(
        effects(before, after, complete), threshold_percent=threshold, min_forwards=min_forwards
    )
    assert isinstance(got, Verdict)
    assert got.revert is revert
    assert says in got.reason
    assert "\n" not in got.reason


def test_verdict_names_the_figures() -> None:
    got = verdict(effects(win(12, 6_000), win(1, 1_000)), threshold_percent=20, min_forwards=10)
    assert got.revert
    assert got.reason == (
        "revert: fees earned out 6 → 1 sats (12 → 1 forwards) over 72 h, down 83.3%, more than 20%"
    )


@pytest.mark.parametrize(
    ("threshold", "min_forwards"), [(-1, 10), (float("nan"), 10), (20, -1), (True, 10)]
)
def test_verdict_refuses_bad_settings(threshold: float, min_forwards: int) -> None:
    with pytest.raises(ValueError):
        verdict(
            effects(win(1, 1), win(1, 1)), threshold_percent=threshold, min_forwards=min_forwards
        )


# --------------------------------------------------------------------------- store

pytestmark = pytest.mark.engines("sqlite", "postgresql")  # the tests reading a store

AT = T0 + 10 * H  # the change; windows of 2 h: [8 h, 10 h) and [10 h, 12 h)


@pytest.fixture
def store(store_at: Callable[[str], StoreLocation]) -> Iterator[Store]:
    with make_store(store_at("s.db")) as st:
        yield st


def _record(st: Store) -> None:
    st.forward(T0 + 7 * H, fee=7_777)  # before both windows
    st.forward(T0 + 8 * H, fee=1_000)
    st.forward(T0 + 8 * H + 1, fee=2_000)
    st.forward(T0 + 9 * H, fee=3_000)
    st.forward(T0 + 9 * H + 5, inc=A, out=B, fee=500)  # in via A
    st.forward(T0 + 9 * H + 6, out=B, fee=9_999)  # not A
    st.forward(T0 + 11 * H, fee=1_000)
    st.forward(T0 + 12 * H, fee=5_555)  # after both windows
    # before: a fee failure retried once (one cluster), a liquidity failure
    st.fail(T0 + 8 * H + 10 * S, fee=100)
    st.fail(T0 + 8 * H + 20 * S, fee=150)
    st.fail(T0 + 9 * H, inc=IN2, amount=3_000_000, fee=300, how=LIQUIDITY)
    # a cluster across the change: 200 before, raised to 260 after
    st.fail(AT - 30 * S, fee=200)
    st.fail(AT + 10 * S, fee=260)
    # after: a max_htlc failure; one on B; one after the window
    st.fail(T0 + 11 * H, inc=IN2, amount=5_000_000, fee=400, how=MAX_HTLC)
    st.fail(T0 + 11 * H + 1, out=B, fee=999)
    st.fail(T0 + 12 * H + S, fee=888)


def test_measure_reads_both_windows(store: Store) -> None:
    _record(store)
    with store.reading() as conn:
        got = measure(conn, node_id=store.node_id, chan_id=A, at_ns=AT, hours=2, now_ns=T0 + 12 * H)
    b, a = got.before, got.after
    assert (b.since_ns, b.until_ns, a.since_ns, a.until_ns) == (
        T0 + 8 * H,
        AT,
        AT,
        T0 + 12 * H,
    )
    assert (b.forwards_out, b.fees_out_msat, b.forwards_in, b.fees_in_msat) == (3, 6_000, 1, 500)
    assert (a.forwards_out, a.fees_out_msat, a.forwards_in, a.fees_in_msat) == (1, 1_000, 0, 0)
    assert (b.failures, b.failures_by_class["fee"], b.failures_by_class["liquidity"]) == (4, 3, 1)
    assert (a.failures, a.failures_by_class["fee"], a.failures_by_class["max_htlc"]) == (2, 1, 1)
    assert (b.missed_raw_msat, b.missed_msat, b.clusters) == (750, 650, 3)
    assert (a.missed_raw_msat, a.missed_msat, a.clusters) == (660, 460, 1)
    assert got.complete and got.as_of_ns == T0 + 12 * H
    assert b.observed_ns == 2 * H  # the session opened long before and is still open
    assert got.fees_out_change_msat == -5_000
    assert verdict(got, threshold_percent=20, min_forwards=3).revert
    assert not verdict(got, threshold_percent=20, min_forwards=4).revert


def test_measure_incomplete_until_the_window_ends(store: Store) -> None:
    _record(store)
    with store.reading() as conn:
        early = measure(
            conn, node_id=store.node_id, chan_id=A, at_ns=AT, hours=2, now_ns=T0 + 11 * H
        )
        unknown = measure(conn, node_id=store.node_id, chan_id=A, at_ns=AT, hours=2)
    assert not early.complete
    assert early.after.observed_ns == H  # observed up to now only
    assert not unknown.complete and unknown.as_of_ns is None  # the daemon never ran
    assert not verdict(early, threshold_percent=20, min_forwards=1).revert
    store.heartbeat(T0 + 12 * H - 1)
    with store.reading() as conn:
        beat = measure(conn, node_id=store.node_id, chan_id=A, at_ns=AT, hours=2)
    assert not beat.complete and beat.as_of_ns == T0 + 12 * H - 1
    store.heartbeat(T0 + 12 * H)
    with store.reading() as conn:
        done = measure(conn, node_id=store.node_id, chan_id=A, at_ns=AT, hours=2)
    assert done.complete
    assert verdict(done, threshold_percent=20, min_forwards=1).revert


def test_measure_counts_the_channels_other_ids(store: Store) -> None:
    alias = (16_000_000 << 40) | 7
    store.sample(T0, aliases=(alias,))
    store.fail(AT + H, out=alias, fee=321)
    store.forward(AT + H, out=alias, fee=4_000)
    with store.reading() as conn:
        got = measure(conn, node_id=store.node_id, chan_id=A, at_ns=AT, hours=2, now_ns=AT + 2 * H)
    assert (got.after.forwards_out, got.after.fees_out_msat) == (1, 4_000)
    assert (got.after.failures, got.after.missed_msat) == (1, 321)


def test_measure_of_an_empty_channel(store: Store) -> None:
    with store.reading() as conn:
        got = measure(
            conn, node_id=store.node_id, chan_id=A, at_ns=AT, hours=72, now_ns=AT + 72 * H
        )
    assert got.before == WindowEffects(
        AT - 72 * H,
        AT,
        0,
        0,
        0,
        0,
        0,
        dict.fromkeys((c.label for c in FailureClass), 0),
        0,
        0,
        0,
        observed_ns=got.before.observed_ns,
    )
    assert got.complete
    assert verdict(got, threshold_percent=20, min_forwards=0) == Verdict(
        False,
        "kept: no fees earned before the change to fall from; fees earned out 0 → 0 sats "
        "(0 → 0 forwards) over 72 h",
    )
