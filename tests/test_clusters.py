from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnflow.clusters import ClusterAssigner, ClusterUpdate

S = 1_000_000_000
WINDOW = 60 * S
T0 = 1_700_000_000 * S

OUT_A = 810_000 << 40
OUT_B = 820_000 << 40
IN_1 = 800_001 << 40
IN_2 = 800_002 << 40


class Failure(NamedTuple):
    out_chan: int
    in_chan: int
    amount_msat: int
    missed_msat: int
    ts_ns: int


def feed(failures: list[Failure], first_id: int = 1) -> list[ClusterUpdate]:
    assigner = ClusterAssigner(WINDOW, first_id=first_id)
    return [assigner.assign(*f) for f in failures]


@pytest.mark.parametrize(
    ("second", "joins"),
    [
        (Failure(OUT_A, IN_1, 2_000_000, 500, T0 + S), True),
        (Failure(OUT_A, IN_2, 1_000_000, 500, T0 + S), True),
        (Failure(OUT_A, IN_1, 1_000_000, 500, T0 + WINDOW), True),
        (Failure(OUT_A, IN_2, 2_000_000, 500, T0 + S), False),
        (Failure(OUT_A, IN_1, 1_000_000, 500, T0 + WINDOW + 1), False),
        (Failure(OUT_B, IN_1, 1_000_000, 500, T0 + S), False),
        (Failure(OUT_A, IN_1, 1_000_001, 500, T0 + S), True),
        (Failure(OUT_A, IN_2, 1_000_001, 500, T0 + S), False),
    ],
    ids=[
        "same-incoming-channel",
        "same-amount",
        "at-the-window-edge",
        "neither-shared",
        "after-the-window",
        "other-outgoing-channel",
        "amount-off-by-one-same-incoming",
        "amount-off-by-one-other-incoming",
    ],
)
def test_joining(second: Failure, joins: bool) -> None:
    first, update = feed([Failure(OUT_A, IN_1, 1_000_000, 300, T0), second])
    assert first == ClusterUpdate(1, True, 1, 300, 300)
    if joins:
        assert update == ClusterUpdate(1, False, 2, 500, 200)
    else:
        assert update == ClusterUpdate(2, True, 1, 500, 500)


def test_window_counts_from_the_last_member() -> None:
    updates = feed(
        [
            Failure(OUT_A, IN_1, 1_000_000, 100, T0),
            Failure(OUT_A, IN_1, 1_000_000, 100, T0 + WINDOW),
            Failure(OUT_A, IN_1, 1_000_000, 100, T0 + 2 * WINDOW),
        ]
    )
    assert [(u.cluster_id, u.members) for u in updates] == [(1, 1), (1, 2), (1, 3)]


def test_sharing_with_any_member_not_just_the_first() -> None:
    updates = feed(
        [
            Failure(OUT_A, IN_1, 1_000_000, 100, T0),
            Failure(OUT_A, IN_1, 2_000_000, 100, T0 + S),  # joins by incoming
            Failure(OUT_A, IN_2, 2_000_000, 100, T0 + 2 * S),  # joins by the 2nd's amount
            Failure(OUT_A, IN_2, 3_000_000, 100, T0 + 3 * S),  # joins by the 3rd's incoming
        ]
    )
    assert [u.cluster_id for u in updates] == [1, 1, 1, 1]


def test_a_new_cluster_replaces_the_open_one() -> None:
    updates = feed(
        [
            Failure(OUT_A, IN_1, 1_000_000, 100, T0),
            Failure(OUT_A, IN_2, 2_000_000, 100, T0 + S),  # opens cluster 2
            Failure(OUT_A, IN_1, 1_000_000, 100, T0 + 2 * S),  # cluster 1 is closed
        ]
    )
    assert [(u.cluster_id, u.is_new) for u in updates] == [(1, True), (2, True), (3, True)]


def test_channels_have_separate_open_clusters() -> None:
    updates = feed(
        [
            Failure(OUT_A, IN_1, 1_000_000, 100, T0),
            Failure(OUT_B, IN_1, 1_000_000, 100, T0 + S),
            Failure(OUT_A, IN_1, 1_000_000, 100, T0 + 2 * S),
            Failure(OUT_B, IN_2, 1_000_000, 100, T0 + 3 * S),
        ]
    )
    assert [u.cluster_id for u in updates] == [1, 2, 1, 2]


def test_missed_is_the_largest_member_and_deltas_add_up_to_it() -> None:
    updates = feed(
        [
            Failure(OUT_A, IN_1, 1_000_000, 300, T0),
            Failure(OUT_A, IN_1, 1_000_000, 200, T0 + S),
            Failure(OUT_A, IN_1, 1_000_000, 700, T0 + 2 * S),
            Failure(OUT_A, IN_1, 1_000_000, 700, T0 + 3 * S),
            Failure(OUT_A, IN_1, 1_000_000, 900, T0 + 4 * S),
        ]
    )
    assert [u.missed_fee_msat for u in updates] == [300, 300, 700, 700, 900]
    assert [u.missed_delta_msat for u in updates] == [300, 0, 400, 0, 200]
    assert sum(u.missed_delta_msat for u in updates) == updates[-1].missed_fee_msat
    assert [u.members for u in updates] == [1, 2, 3, 4, 5]


def test_ids_continue_from_first_id() -> None:
    assigner = ClusterAssigner(WINDOW, first_id=41)
    assert assigner.next_id == 41
    assert assigner.assign(OUT_A, IN_1, 1, 0, T0).cluster_id == 41
    assert assigner.assign(OUT_B, IN_1, 1, 0, T0).cluster_id == 42
    assert assigner.next_id == 43


def test_expire_drops_clusters_closed_at_the_newest_event_time() -> None:
    assigner = ClusterAssigner(WINDOW)
    assigner.assign(OUT_A, IN_1, 1_000_000, 100, T0)
    assigner.assign(OUT_B, IN_1, 1_000_000, 100, T0 + 10 * S)
    assigner.advance(T0 + WINDOW)
    assert assigner.expire() == 0  # idle exactly the window: still joinable
    assigner.advance(T0 + WINDOW + 1)
    assert assigner.expire() == 1
    assert assigner.open_clusters == 1
    # the dropped cluster could not have been joined anyway
    assert assigner.assign(OUT_A, IN_1, 1_000_000, 100, T0 + WINDOW + 1).is_new
    assert assigner.assign(OUT_B, IN_1, 1_000_000, 100, T0 + WINDOW + 1).is_new is False


def test_the_clock_is_the_newest_event_and_never_goes_back() -> None:
    assigner = ClusterAssigner(WINDOW)
    assigner.assign(OUT_A, IN_1, 1_000_000, 100, T0)
    assigner.advance(T0 + 2 * WINDOW)
    assigner.advance(T0 + S)  # an older event (another subscription, lnd's clock stepping back)
    assert assigner.latest_ns == T0 + 2 * WINDOW
    # dated within the window of the cluster's last failure, but the cluster closed when
    # the clock passed it: held in memory or not, it is not joined
    assert assigner.assign(OUT_A, IN_1, 1_000_000, 100, T0 + S).is_new


def test_restore_reopens_a_cluster_with_its_members() -> None:
    before = ClusterAssigner(WINDOW)
    first = [
        Failure(OUT_A, IN_1, 1_000_000, 300, T0),
        Failure(OUT_A, IN_2, 1_000_000, 500, T0 + S),
    ]
    for f in first:
        before.assign(*f)
    after = ClusterAssigner(WINDOW, first_id=2)
    after.restore(
        OUT_A,
        1,
        first_ns=T0,
        last_ns=T0 + S,
        members=2,
        missed_fee_msat=500,
        incoming_channel_ids=[IN_1, IN_2],
        amounts_msat=[1_000_000],
    )
    nxt = Failure(OUT_A, IN_2, 7_000_000, 900, T0 + 30 * S)
    assert after.assign(*nxt) == before.assign(*nxt) == ClusterUpdate(1, False, 3, 900, 400)
    assert after.next_id == before.next_id == 2


def test_rejects_negative_window() -> None:
    with pytest.raises(ValueError):
        ClusterAssigner(-1)


failures = st.lists(
    st.builds(
        Failure,
        out_chan=st.sampled_from([OUT_A, OUT_B]),
        in_chan=st.sampled_from([IN_1, IN_2, IN_2 + 1]),
        amount_msat=st.sampled_from([1_000_000, 2_000_000, 5_000_000]),
        missed_msat=st.integers(0, 10**6),
        ts_ns=st.integers(T0, T0 + 10 * WINDOW),
    ),
    max_size=60,
).map(lambda fs: sorted(fs, key=lambda f: f.ts_ns))


@given(failures, st.integers(1, 10**9))
def test_deltas_sum_to_cluster_maxima_and_never_exceed_raw(
    fs: list[Failure], first_id: int
) -> None:
    updates = feed(fs, first_id=first_id)
    maxima: dict[int, int] = {}
    members: dict[int, int] = {}
    for f, u in zip(fs, updates, strict=True):
        maxima[u.cluster_id] = max(maxima.get(u.cluster_id, 0), f.missed_msat)
        members[u.cluster_id] = members.get(u.cluster_id, 0) + 1
        assert u.missed_fee_msat == maxima[u.cluster_id]
        assert u.members == members[u.cluster_id]
        assert u.is_new == (u.members == 1)
    deduplicated = sum(u.missed_delta_msat for u in updates)
    assert deduplicated == sum(maxima.values())
    assert deduplicated <= sum(f.missed_msat for f in fs)
    assert sorted(maxima) == list(range(first_id, first_id + len(maxima)))


def test_max_span_closes_a_cluster_that_keeps_being_joined() -> None:
    assigner = ClusterAssigner(window_ns=60 * S, max_span_ns=300 * S)
    ids = [assigner.assign(1, 7, 1_000, 10, t * 50 * S).cluster_id for t in range(8)]
    # every failure is within the window of the previous one, same incoming channel;
    # the cluster closes once 300 s from its first failure are exceeded
    assert ids[:7] == [ids[0]] * 7 and ids[7] != ids[0]


@given(failures, st.lists(st.integers(0, 60), max_size=10), st.integers(0, 3))
def test_expiring_at_any_point_changes_no_assignment(
    fs: list[Failure], cuts: list[int], shuffle_seed: int
) -> None:
    """Memory is freed by event time only: where batches end never splits a cluster."""
    # out of order by a few events, as two subscriptions may deliver them
    fs = fs[shuffle_seed:] + fs[:shuffle_seed]
    assigner = ClusterAssigner(WINDOW, max_span_ns=5 * WINDOW)
    reference = ClusterAssigner(WINDOW, max_span_ns=5 * WINDOW)
    expected = [reference.assign(*f) for f in fs]
    got = []
    for i, f in enumerate(fs):
        got.append(assigner.assign(*f))
        if i in cuts:
            assigner.expire()
    assert got == expected
