"""What-if estimates of a proposed policy (lnflow.policy.whatif) and `lnflowctl whatif`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from daemonproc import db_arg, run_lnflowctl
from policystore import IN1, IN2, MAX_HTLC, T0, A, B, H, S, Store, make_store

from lnflow.analysis.classify import FailureClass
from lnflow.domain import format_scid
from lnflow.policy.recorded import LocalFailure, PolicyPoint, SettledForward
from lnflow.policy.whatif import PolicyUnknownError, WhatIf, estimate, fee_msat, replay
from lnflow.store.engines import StoreLocation

FEE_C, MAX_C, LIQ_C = FailureClass.FEE, FailureClass.MAX_HTLC, FailureClass.LIQUIDITY
M = 1_000_000  # an amount of 1,000,000 msat
NOW = [PolicyPoint(-1, 5_000_000, 1_000, 1_000, 500_000_000)]  # 1000 msat + 1000 ppm


def fw(ts: int, fee: int, amount: int = M, out: int = A) -> SettledForward:
    return SettledForward(ts, IN1, out, amount + fee, amount, fee)


def lf(
    ts: int,
    offered: int,
    amount: int = M,
    cluster: int | None = None,
    cls: FailureClass = FEE_C,
) -> LocalFailure:
    return LocalFailure(ts, ts, cls, cluster, IN1, amount + offered, amount, offered)


def run(
    forwards: Sequence[SettledForward] = (),
    failures: Sequence[LocalFailure] = (),
    points: Sequence[PolicyPoint] = tuple(NOW),
    **proposal: Any,
) -> WhatIf:
    return replay(
        chan_id=A,
        chan_ids=frozenset({A}),
        since_ns=0,
        until_ns=H,
        hours=1,
        forwards=forwards,
        failures=failures,
        points=points,
        **proposal,
    )


def test_fee_msat_is_lnds_integer_formula() -> None:
    assert fee_msat(1_000, 1_000, 1_000_000) == 2_000
    assert fee_msat(0, 1, 999_999) == 0  # rounded down
    assert fee_msat(0, 700, 123_456_789) == 86_419


# one row per edge: (records, proposal, expected fields)
CASES: list[Any] = [
    pytest.param((), (), {}, {"fees_month_before_msat": 0, "fees_month_after_msat": 0}, id="empty"),
    pytest.param(
        [fw(10, 2_000)],
        (),
        {"fee_ppm": 500},
        {
            "fees_before_msat": 2_000,
            "fees_after_msat": 1_500,
            "fees_month_before_msat": 1_440_000,
            "fees_month_after_msat": 1_080_000,
            "forwards": 1,
            "forwards_repriced": 1,
            "repriced_delta_msat": -500,
        },
        id="forward-repriced",
    ),
    pytest.param(
        [fw(10, 2_000)],
        (),
        {},
        {"fees_after_msat": 2_000, "forwards_repriced": 0, "fee_rate_ppm": 1_000},
        id="current-policy-changes-nothing",
    ),
    pytest.param(
        [fw(10, 2_100)], (), {"fee_ppm": 600}, {"fees_after_msat": 1_700}, id="overpayment-kept"
    ),
    pytest.param(
        [fw(10, 2_000, out=B), fw(H, 2_000), fw(-1, 2_000)],
        (),
        {"fee_ppm": 1},
        {"forwards": 0, "fees_before_msat": 0, "fees_after_msat": 0},
        id="other-channel-and-outside-window",
    ),
    pytest.param(
        [fw(10, 2_000, amount=600_000_000)],
        (),
        {"max_htlc_msat": 500_000_000},
        {"forwards_over_max_htlc": 1, "lost_fees_msat": 2_000, "fees_after_msat": 0},
        id="forward-above-lowered-max-lost",
    ),
    pytest.param(
        (),
        [lf(10, 1_500)],
        {"fee_ppm": 500},
        {
            "fee_failures": 1,
            "fee_clusters": 1,
            "fee_failures_recovered": 1,
            "recovered_fees_msat": 1_500,
            "fees_after_msat": 1_500,
            "fees_month_after_msat": 1_080_000,
        },
        id="fee-failure-recovered-exactly-at-fee",
    ),
    pytest.param(
        (),
        [lf(10, 1_500)],
        {"fee_ppm": 501},
        {"fee_failures_recovered": 0, "fees_after_msat": 0},
        id="fee-failure-one-ppm-short",
    ),
    pytest.param(
        (),
        [lf(10, 1_500)],
        {"fee_ppm": 2_000},
        {"fee_failures_recovered": 0, "fees_after_msat": 0},
        id="higher-rate-recovers-none",
    ),
    pytest.param(
        (),
        [lf(10, 1_200, cluster=7), lf(20, 1_400, cluster=7), lf(30, 1_450, cluster=7)],
        {"fee_ppm": 400},
        {
            "fee_failures": 3,
            "fee_clusters": 1,
            "fee_failures_recovered": 1,
            "recovered_fees_msat": 1_400,
        },
        id="retries-count-once-first-passing-member",
    ),
    pytest.param(
        (),
        [lf(10, 1_500), lf(11, 1_500)],
        {"fee_ppm": 500},
        {"fee_clusters": 2, "fee_failures_recovered": 2, "recovered_fees_msat": 3_000},
        id="unclustered-each-a-payment",
    ),
    pytest.param(
        [fw(20 * S, 2_000)],
        [lf(10 * S, 1_500, cluster=1)],
        {"fee_ppm": 500},
        {"served_anyway": 1, "fee_failures_recovered": 0, "fees_after_msat": 1_500},
        id="settled-on-retry-not-recovered-twice",
    ),
    pytest.param(
        [fw(71 * S, 2_000)],
        [lf(10 * S, 1_500, cluster=1)],
        {"fee_ppm": 500},
        {"served_anyway": 0, "fee_failures_recovered": 1, "fees_after_msat": 3_000},
        id="forward-after-served-window-is-another-payment",
    ),
    pytest.param(
        [fw(20 * S, 2_000, amount=M + 1)],
        [lf(10 * S, 1_500, cluster=1)],
        {"fee_ppm": 500},
        {"served_anyway": 0, "fee_failures_recovered": 1},
        id="forward-of-another-amount-is-another-payment",
    ),
    pytest.param(
        (),
        [lf(10, 601_000, amount=600_000_000, cls=MAX_C)],
        {"max_htlc_msat": 700_000_000},
        {
            "max_htlc_failures": 1,
            "max_htlc_clusters": 1,
            "max_htlc_failures_recovered": 1,
            "recovered_fees_msat": 601_000,
            "max_htlc_msat": 700_000_000,
        },
        id="max-htlc-failure-fits-raised-max",
    ),
    pytest.param(
        (),
        [lf(10, 601_000, amount=600_000_000, cls=MAX_C)],
        {"max_htlc_msat": 599_999_999},
        {"max_htlc_failures_recovered": 0},
        id="max-htlc-failure-still-above",
    ),
    pytest.param(
        (),
        [lf(10, 601_000, amount=600_000_000, cls=MAX_C)],
        {"max_htlc_msat": 700_000_000, "fee_ppm": 2_000},
        {"max_htlc_failures_recovered": 0},
        id="max-htlc-failure-must-cover-the-new-fee",
    ),
    pytest.param(
        (),
        [lf(10, 601_000, amount=600_000_000, cls=MAX_C)],
        {"max_htlc_msat": 700_000_000, "_points": [PolicyPoint(-1, 599_999, 1_000, 1_000, 5)]},
        {"max_htlc_failures_recovered": 0, "short_of_balance": 1},
        id="max-htlc-failure-short-of-balance",
    ),
    pytest.param(
        (),
        [
            lf(10, 601_000, amount=600_000_000, cls=MAX_C),
            lf(
                2 * H // 3,
                601_000,
                amount=600_000_000,
                cls=MAX_C,
            ),
        ],
        {
            "max_htlc_msat": 700_000_000,
            "_points": [
                PolicyPoint(-1, 100, 1_000, 1_000, 5),
                PolicyPoint(H // 2, 600_000, 1_000, 1_000, 5),
            ],
        },
        {"max_htlc_failures_recovered": 1, "short_of_balance": 1, "max_htlc_clusters": 2},
        id="balance-of-the-sample-in-force",
    ),
    pytest.param(
        (),
        [lf(10, 9_999, cls=LIQ_C), lf(-1, 9_999), lf(H, 9_999)],
        {"fee_ppm": 0},
        {"fee_failures": 0, "fee_clusters": 0, "recovered_fees_msat": 0},
        id="other-classes-and-outside-window-not-replayed",
    ),
    pytest.param(
        [fw(50, 3_000)],
        (),
        {
            "fee_ppm": 1_000,
            "_points": [
                PolicyPoint(-1, 5_000_000, 1_000, 2_000, None),
                PolicyPoint(100, 5_000_000, 1_000, 1_000, None),
            ],
        },
        {"fees_after_msat": 2_000, "forwards_repriced": 1, "current_fee_rate_ppm": 1_000},
        id="repriced-from-the-policy-then",
    ),
    pytest.param(
        [fw(10, 2_000)],
        (),
        {"fee_ppm": 10, "base_fee_msat": 0, "_points": []},
        {"fees_after_msat": 10, "current_fee_rate_ppm": None, "max_htlc_msat": None},
        id="no-samples-full-proposal",
    ),
]


@pytest.mark.parametrize(("forwards", "failures", "proposal", "expected"), CASES)
def test_replay(
    forwards: Sequence[SettledForward],
    failures: Sequence[LocalFailure],
    proposal: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    proposal = dict(proposal)
    points = proposal.pop("_points", NOW)
    got = run(forwards, failures, points, **proposal)
    for key, value in expected.items():
        assert getattr(got, key) == value, key


def test_monthly_rounds_half_up_over_fractional_hours() -> None:
    # 1 msat over 1.5 h: 480 msat a month exactly; 3 msat over 7 h: 308.571… -> 309
    one = replay(
        chan_id=A,
        chan_ids=frozenset({A}),
        since_ns=0,
        until_ns=3 * H // 2,
        hours=1.5,
        forwards=[fw(1, 1)],
        failures=(),
        points=NOW,
    )
    assert one.fees_month_before_msat == 480
    seven = replay(
        chan_id=A,
        chan_ids=frozenset({A}),
        since_ns=0,
        until_ns=7 * H,
        hours=7,
        forwards=[fw(1, 3)],
        failures=(),
        points=NOW,
    )
    assert seven.fees_month_before_msat == 309


@pytest.mark.parametrize("proposal", [{}, {"fee_ppm": 10}, {"base_fee_msat": 0}])
def test_unknown_policy_needs_both_fee_fields(proposal: dict[str, int]) -> None:
    with pytest.raises(PolicyUnknownError, match="give both --fee-ppm and --base-fee-msat"):
        run([fw(10, 2_000)], (), [], **proposal)


@pytest.mark.parametrize(
    "proposal",
    [{"fee_ppm": -1}, {"base_fee_msat": 2**32}, {"max_htlc_msat": 0}, {"fee_ppm": True}],
)
def test_out_of_range_proposal_refused(proposal: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be a whole number"):
        run(**proposal)


# --------------------------------------------------------------------------- store

pytestmark = pytest.mark.engines("sqlite", "postgresql")  # the tests reading a store

NOW_NS = T0 + 10 * H


@pytest.fixture
def store(store_at: Callable[[str], StoreLocation]) -> Iterator[Store]:
    with make_store(store_at("s.db")) as st:
        yield st


@pytest.fixture
def db(store: Store, store_at: Callable[[str], StoreLocation]) -> str:
    """``--db`` of the test's store."""
    return db_arg(store_at("s.db"))


def _record(st: Store) -> None:
    """A 2-hour window before NOW_NS on A: 1000 msat + 1000 ppm, 5,000,000 sats local."""
    st.sample(T0)  # in force at the window's start
    st.sample(NOW_NS - H)  # the same policy again
    st.forward(NOW_NS - 90 * 60 * S, fee=2_000)
    st.forward(NOW_NS - 30 * 60 * S, fee=2_000)
    st.forward(NOW_NS - 30 * 60 * S + 1, out=B, fee=9_000)
    # fee failures: a retried payment offering 1,200 then 1,400 msat (one cluster), and
    # two payments offering 1,700 and 600 msat from other senders
    st.fail(NOW_NS - 100 * 60 * S, fee=1_200)
    st.fail(NOW_NS - 100 * 60 * S + 20 * S, fee=1_400)
    st.fail(NOW_NS - 60 * 60 * S, inc=IN2, amount=M + 1, fee=1_700)
    st.fail(NOW_NS - 20 * 60 * S, inc=IN2, amount=M + 2, fee=600)
    # a max_htlc failure of 600,000 sats offering our fee
    st.fail(NOW_NS - 10 * 60 * S, amount=600_000_000, fee=601_000, how=MAX_HTLC)
    st.fail(NOW_NS - 3 * H, fee=5_000)  # before the window


def test_estimate_from_a_real_store(store: Store) -> None:
    _record(store)
    with store.reading() as conn:
        low = estimate(conn, node_id=store.node_id, chan_id=A, fee_ppm=400, hours=2, now_ns=NOW_NS)
        high = estimate(
            conn, node_id=store.node_id, chan_id=A, fee_ppm=1_500, hours=2, now_ns=NOW_NS
        )
        both = estimate(
            conn,
            node_id=store.node_id,
            chan_id=A,
            fee_ppm=400,
            max_htlc_msat=700_000_000,
            hours=2,
            now_ns=NOW_NS,
        )
    assert (low.current_fee_base_msat, low.current_fee_rate_ppm) == (1_000, 1_000)
    assert low.current_max_htlc_msat == 990_000_000
    assert (low.fee_failures, low.fee_clusters) == (4, 3)
    # at 1,400 msat per 1,000,000: the retried payment (on its retry) and 1,700 pass
    assert low.fee_failures_recovered == 2
    # the max_htlc failure: 600,000 sats fit the current 990,000-sat max_htlc (it failed
    # under another one) and its offer covers 1000 + 400 × 600 = 241,000 msat
    assert (low.max_htlc_failures, low.max_htlc_clusters) == (1, 1)
    assert low.max_htlc_failures_recovered == 1
    assert low.recovered_fees_msat == 1_400 + 1_400 + 241_000
    assert low.forwards == 2 and low.forwards_repriced == 2
    assert low.repriced_delta_msat == -1_200
    assert low.fees_before_msat == 4_000
    assert low.fees_after_msat == 2_800 + 243_800
    assert low.fees_month_before_msat == 4_000 * 360  # 2 h of a 720 h month
    assert low.fees_month_after_msat == 246_600 * 360
    assert both.max_htlc_failures_recovered == 1
    # 1,500 ppm: nothing offered 2,500 msat per 1,000,000, nor 901,000 on 600,000 sats
    assert high.fee_failures_recovered == high.max_htlc_failures_recovered == 0
    assert high.fees_after_msat == 2 * 2_500


def test_estimate_needs_the_policy_when_no_sample(store: Store) -> None:
    store.forward(NOW_NS - H, fee=2_000)
    with store.reading() as conn, pytest.raises(PolicyUnknownError):
        estimate(conn, node_id=store.node_id, chan_id=A, fee_ppm=1, hours=2, now_ns=NOW_NS)


# --------------------------------------------------------------------------- lnflowctl


@pytest.mark.e2e
def test_lnflowctl_whatif(store: Store, db: str) -> None:
    now = time.time_ns()  # lnflowctl replays the hours before its own clock
    store.sample(now - 2 * H)
    store.fail(now - H, fee=1_500)
    store.forward(now - H // 2, fee=2_000)
    code, out, err = run_lnflowctl("--db", db, "whatif", format_scid(A), "--fee-ppm", "500")
    assert code == 0, err
    assert "(an estimate)" in out
    assert "fee rate        1,000 ppm -> 500 ppm" in out
    assert "base fee        1,000 msat" in out
    assert "fee failures recovered       1 of 1 payments (1 attempt)" in out
    code, out, err = run_lnflowctl(
        "--db", db, "whatif", str(A), "--fee-ppm", "500", "--hours", "3", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["estimate"] is True and doc["scid"] == format_scid(A)
    assert doc["fee_failures_recovered"] == 1 and doc["fee_rate_ppm"] == 500
    assert doc["fees_before_msat"] == 2_000 and doc["fees_after_msat"] == 1_500 + 1_500
    assert doc["fees_month_before_msat"] == 2_000 * 240
    assert doc["fees_month_change_msat"] == 1_000 * 240
    code, out, err = run_lnflowctl("--db", db, "whatif", str(A), "--hours", "1e9")
    assert code == 2 and "must be a number of hours" in err and out == ""
    code, out, err = run_lnflowctl("--db", db, "whatif", str(A), "--fee-ppm", "-5")
    assert code == 2 and "--fee-ppm" in err


@pytest.mark.e2e
def test_lnflowctl_whatif_unknown_channel(store: Store, db: str) -> None:
    code, out, err = run_lnflowctl("--db", db, "whatif", "1x2x3", "--fee-ppm", "500")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "channel 1x2x3" in err and "not in the store" in err
    code, out, err = run_lnflowctl("--db", db, "whatif", "nonsense")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.e2e
def test_lnflowctl_whatif_without_a_policy_sample(store: Store, db: str) -> None:
    store.fail(time.time_ns() - H, fee=1_500)  # known channel, never sampled
    code, out, err = run_lnflowctl("--db", db, "whatif", str(A), "--fee-ppm", "500")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "give both --fee-ppm and --base-fee-msat" in err
    code, out, err = run_lnflowctl(
        "--db", db, "whatif", str(A), "--fee-ppm", "500", "--base-fee-msat", "0", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["fee_failures_recovered"] == 1  # 1,500 >= 0 + 500
