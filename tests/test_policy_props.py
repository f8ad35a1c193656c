"""Invariants of the effects and what-if arithmetic, on generated records."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lnflow.analysis.classify import FailureClass
from lnflow.policy.effects import dedup_missed
from lnflow.policy.recorded import LocalFailure, PolicyPoint, SettledForward
from lnflow.policy.whatif import replay

A = (850_000 << 40) | (1 << 16)
IN1 = 860_000 << 40
END = 1_000


@st.composite
def failures(draw: st.DrawFn) -> list[LocalFailure]:
    """Failures in [0, END) in time order, in a few clusters (or none)."""
    times = sorted(draw(st.lists(st.integers(0, END - 1), max_size=30)))
    result = []
    for i, ts in enumerate(times):
        cluster = draw(st.none() | st.integers(1, 5))
        amount = draw(st.sampled_from([1_000_000, 2_000_000, 600_000_000]))
        offered = draw(st.integers(0, 700_000))
        cls = draw(st.sampled_from([FailureClass.FEE, FailureClass.MAX_HTLC]))
        result.append(LocalFailure(i, ts, cls, cluster, IN1, amount + offered, amount, offered))
    return result


@given(failures(), st.integers(0, END), st.integers(0, END))
def test_dedup_missed_adds_up_over_adjacent_windows(fs: list[LocalFailure], a: int, b: int) -> None:
    lo, mid = sorted((a, b))
    whole = dedup_missed(fs, lo, END)
    first, second = dedup_missed(fs, lo, mid), dedup_missed(fs, mid, END)
    assert first[0] + second[0] == whole[0]  # no payment counted twice, none lost
    assert first[1] + second[1] == whole[1]
    raw = sum(f.missed_fee_msat for f in fs if lo <= f.resolved_ns)
    assert whole[0] <= raw


@given(
    failures(),
    st.lists(st.integers(0, END - 1), max_size=5),
    st.integers(0, 3_000),
    st.integers(0, 3_000),
    st.none() | st.integers(1, 10**9),
)
def test_a_lower_rate_never_recovers_fewer_payments(
    fs: list[LocalFailure], forward_times: list[int], p1: int, p2: int, max_htlc: int | None
) -> None:
    low, high = sorted((p1, p2))
    forwards = [SettledForward(t, IN1, A, 1_002_000, 1_000_000, 2_000) for t in forward_times]
    points = [PolicyPoint(-1, 400_000, 1_000, 1_000, 500_000_000)]

    def at(ppm: int) -> tuple[int, int, int]:
        w = replay(
            chan_id=A,
            chan_ids=frozenset({A}),
            since_ns=0,
            until_ns=END,
            hours=1,
            forwards=forwards,
            failures=fs,
            points=points,
            fee_ppm=ppm,
            max_htlc_msat=max_htlc,
            served_window_s=0,
        )
        total = w.fee_failures_recovered + w.max_htlc_failures_recovered
        assert total + w.served_anyway <= w.fee_clusters + w.max_htlc_clusters
        assert w.fee_clusters <= w.fee_failures and w.max_htlc_clusters <= w.max_htlc_failures
        assert w.fees_after_msat >= 0
        return total, w.fee_clusters, w.max_htlc_clusters

    (rec_low, *clusters_low), (rec_high, *clusters_high) = at(low), at(high)
    assert clusters_low == clusters_high  # the replay does not change what was recorded
    assert rec_low >= rec_high
