"""Guard rails on policy changes (lnflow.policy.guards), and the cooldown read from a
real store's history on either engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from conftest import STORE_NODE, RealStore
from hypothesis import given
from hypothesis import strategies as st

from lnflow.domain import LndVersion
from lnflow.policy import (
    ChangeRecord,
    EdgePolicy,
    GuardSettings,
    PolicyChange,
    PolicyDecision,
    Strategy,
    apply_guards,
    fee_deltas,
)
from lnflow.policy.engine import read_evidence
from lnflow.store.engines import plain_connection
from lnflow.store.policy_history import PolicyValues, insert_change, next_run_id

HOUR_NS = 3_600 * 1_000_000_000
NOW_NS = 1_800_000_000 * 1_000_000_000
LND = LndVersion(0, 18, 3, "0.18.3-beta")
OURS = EdgePolicy(
    fee_base_msat=1_000,
    fee_rate_ppm=500,
    time_lock_delta=40,
    min_htlc_msat=1_000,
    max_htlc_msat=500_000_000,
    inbound_fee_base_msat=0,
    inbound_fee_rate_ppm=-50,
)


def dec(chan_id: int = 1, change: PolicyChange | None = None, **kw: Any) -> PolicyDecision:
    return PolicyDecision(
        chan_id=chan_id,
        peer_pubkey="02" + "ab" * 32,
        sections=("s",),
        strategy=Strategy.STATIC,
        before=OURS,
        change=change if change is not None else PolicyChange(fee_ppm=400),
        reason="[s] static: fee_ppm 500 → 400",
        **kw,
    )


def version(text: str) -> LndVersion:
    major, minor, patch = (int(p) for p in text.split("."))
    return LndVersion(major, minor, patch, f"{text}-beta")


# (id, decision changes, history as hours ago, lnd version, refusal or None when kept)
GUARDS = [
    ("kept", {}, (), "0.18.3", None),
    ("inbound-ppm-old-lnd", {"change": PolicyChange(inbound_fee_ppm=-10)}, (), "0.17.5",
     "inbound fees need lnd 0.18 or newer (the node runs 0.17.5)"),
    ("inbound-base-old-lnd", {"change": PolicyChange(fee_ppm=1, inbound_base_fee_msat=-1)}, (),
     "0.17.0", "inbound fees need lnd 0.18 or newer (the node runs 0.17.0)"),
    ("inbound-0.18", {"change": PolicyChange(inbound_fee_ppm=-10)}, (), "0.18.0", None),
    # charge-lnd compares version parts one by one and would refuse 1.0.0
    ("inbound-1.0", {"change": PolicyChange(inbound_fee_ppm=-10)}, (), "1.0.0", None),
    ("outbound-old-lnd", {}, (), "0.12.1", None),
    ("disable-old-lnd", {"change": PolicyChange(disabled=True)}, (), "0.12.1",
     "disabling a channel needs lnd 0.13 or newer (the node runs 0.12.1)"),
    ("enable-old-lnd", {"change": PolicyChange(disabled=False)}, (), "0.12.1",
     "enabling a channel needs lnd 0.13 or newer (the node runs 0.12.1)"),
    ("disable-0.13", {"change": PolicyChange(disabled=True)}, (), "0.13.0", None),
    ("below-min-bound", {"min_fee_ppm": 401}, (), "0.18.3",
     "fee_ppm 400 is below the section's min_fee_ppm 401"),
    ("at-min-bound", {"min_fee_ppm": 400}, (), "0.18.3", None),
    ("above-max-bound", {"max_fee_ppm": 399}, (), "0.18.3",
     "fee_ppm 400 is above the section's max_fee_ppm 399"),
    ("at-max-bound", {"max_fee_ppm": 400, "min_fee_ppm": 0}, (), "0.18.3", None),
    ("bounds-without-fee-change", {"change": PolicyChange(base_fee_msat=0), "max_fee_ppm": 1},
     (), "0.18.3", None),
    ("stream-gap", {"stream_gap_s": 31 * 60}, (), "0.18.3",
     "the latest analysis window has a 31 min stream gap (max_gap_minutes 30):"
     " its evidence is incomplete"),
    ("stream-gap-at-limit", {"stream_gap_s": 30 * 60}, (), "0.18.3", None),
    ("cooldown", {}, (23,), "0.18.3", "changed 23 h ago (min_hours_between_changes 24)"),
    ("cooldown-over", {}, (24,), "0.18.3", None),
    ("cooldown-latest-change-counts", {}, (100, 2, 50), "0.18.3",
     "changed 2 h ago (min_hours_between_changes 24)"),
    ("first-refusal-wins", {"stream_gap_s": 3_600, "change": PolicyChange(inbound_fee_ppm=-1)},
     (1,), "0.17.0", "inbound fees need lnd 0.18"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "hours_ago", "lnd", "refusal"), [g[1:] for g in GUARDS], ids=[g[0] for g in GUARDS]
)
def test_guard(
    changes: dict[str, Any], hours_ago: tuple[int, ...], lnd: str, refusal: str | None
) -> None:
    decision = dec(**changes)
    history = [ChangeRecord(1, NOW_NS - h * HOUR_NS) for h in hours_ago]
    plan = apply_guards(
        [decision], history, GuardSettings(), now_ns=NOW_NS, lnd_version=version(lnd)
    )
    if refusal is None:
        assert plan.changes == (decision,) and plan.refusals == ()
    else:
        assert plan.changes == ()
        (refused,) = plan.refusals
        assert refused.decision == decision
        assert refused.reason.startswith(refusal)
        assert "\n" not in refused.reason


def test_other_channels_history_does_not_cool_this_one() -> None:
    plan = apply_guards(
        [dec(chan_id=1)], [ChangeRecord(2, NOW_NS)], GuardSettings(), now_ns=NOW_NS, lnd_version=LND
    )
    assert len(plan.changes) == 1


def test_settings_change_the_limits() -> None:
    settings = GuardSettings(min_hours_between_changes=0, max_gap_minutes=120)
    plan = apply_guards(
        [dec(stream_gap_s=90 * 60)],
        [ChangeRecord(1, NOW_NS)],
        settings,
        now_ns=NOW_NS,
        lnd_version=LND,
    )
    assert len(plan.changes) == 1


def test_decisions_without_a_change_are_neither_kept_nor_refused() -> None:
    plan = apply_guards(
        [dec(change=PolicyChange(), stream_gap_s=10**6)],
        [],
        GuardSettings(),
        now_ns=NOW_NS,
        lnd_version=version("0.10.0"),
    )
    assert plan.changes == () and plan.refusals == ()


def test_max_channels_per_run_keeps_the_most_urgent() -> None:
    decisions = [
        dec(chan_id=1, urgency=10),
        dec(chan_id=2, urgency=80),
        dec(chan_id=3, urgency=10),
        dec(chan_id=4, urgency=50),
        dec(chan_id=5, urgency=99, stream_gap_s=10**6),  # refused: does not take a place
    ]
    plan = apply_guards(
        decisions,
        [],
        GuardSettings(max_channels_per_run=3),
        now_ns=NOW_NS,
        lnd_version=LND,
    )
    assert [d.chan_id for d in plan.changes] == [2, 4, 1]  # ties keep their order
    assert [(r.decision.chan_id, r.reason) for r in plan.refusals] == [
        (5, plan.refusals[0].reason),
        (3, "max_channels_per_run 3 reached"),
    ]
    assert "stream gap" in plan.refusals[0].reason


def test_default_settings() -> None:
    assert GuardSettings() == GuardSettings(
        min_hours_between_changes=24, max_channels_per_run=10, max_gap_minutes=30
    )


# --------------------------------------------------------------------------- fee deltas

# (id, arguments, (fee_ppm, inbound_fee_ppm)); our policy: 500 ppm, inbound 0 msat / -50 ppm
DELTAS = [
    ("no-targets", {}, (None, None)),
    ("fee-change", {"fee_ppm": 400}, (400, None)),
    ("fee-same", {"fee_ppm": 500}, (None, None)),
    ("fee-below-delta", {"fee_ppm": 491, "min_fee_ppm_delta": 10}, (None, None)),
    ("fee-at-delta", {"fee_ppm": 510, "min_fee_ppm_delta": 10}, (510, None)),
    ("inbound-change", {"inbound_fee_ppm": -100}, (None, -100)),
    ("inbound-same", {"inbound_fee_ppm": -50}, (None, None)),
    ("inbound-below-delta", {"inbound_fee_ppm": -45, "min_inbound_fee_ppm_delta": 10},
     (None, None)),
    ("inbound-at-delta", {"inbound_fee_ppm": -40, "min_inbound_fee_ppm_delta": 10}, (None, -40)),
    ("inbound-zero-always", {"inbound_fee_ppm": 0, "min_inbound_fee_ppm_delta": 100}, (None, 0)),
    ("inbound-base-change-advances", {"inbound_fee_ppm": -45, "inbound_base_fee_msat": -1,
     "min_inbound_fee_ppm_delta": 10}, (None, -45)),
    ("inbound-base-same-no-advance", {"inbound_fee_ppm": -45, "inbound_base_fee_msat": 0,
     "min_inbound_fee_ppm_delta": 10}, (None, None)),
    ("level-with-new-fee", {"fee_ppm": 800, "inbound_level_ppm": 300}, (800, -500)),
    ("level-with-kept-fee", {"fee_ppm": 505, "min_fee_ppm_delta": 10, "inbound_level_ppm": 300},
     (None, -200)),
    ("level-above-fee", {"fee_ppm": 200, "inbound_level_ppm": 300}, (200, 0)),
    ("level-over-inbound", {"inbound_fee_ppm": -1, "inbound_level_ppm": 450}, (None, None)),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), [d[1:] for d in DELTAS], ids=[d[0] for d in DELTAS])
def test_fee_deltas(args: dict[str, Any], expected: tuple[int | None, int | None]) -> None:
    full: dict[str, Any] = {
        "fee_ppm": None,
        "inbound_fee_ppm": None,
        "inbound_base_fee_msat": None,
        "inbound_level_ppm": None,
        "min_fee_ppm_delta": 0,
        "min_inbound_fee_ppm_delta": 0,
    } | args
    assert fee_deltas(OURS, **full) == expected


# --------------------------------------------------------------------------- invariants


@given(
    urgencies=st.lists(st.integers(0, 100), max_size=30),
    cooled=st.sets(st.integers(0, 29)),
    limit=st.integers(0, 12),
)
def test_plan_partitions_the_changes(urgencies: list[int], cooled: set[int], limit: int) -> None:
    decisions = [dec(chan_id=i, urgency=u) for i, u in enumerate(urgencies)]
    history = [ChangeRecord(i, NOW_NS - HOUR_NS) for i in cooled]
    plan = apply_guards(
        decisions,
        history,
        GuardSettings(max_channels_per_run=limit),
        now_ns=NOW_NS,
        lnd_version=LND,
    )
    kept = [d.chan_id for d in plan.changes]
    refused = [r.decision.chan_id for r in plan.refusals]
    assert sorted(kept + refused) == list(range(len(urgencies)))
    assert len(kept) <= limit
    assert not set(kept) & cooled
    assert [d.urgency for d in plan.changes] == sorted(
        (d.urgency for d in plan.changes), reverse=True
    )
    eligible = [d for d in decisions if d.chan_id not in cooled]
    assert len(kept) == min(limit, len(eligible))


# --------------------------------------------------------------------------- the store's history

BIG = (1 << 63) | (900_000 << 40) | 5  # a chan_id stored as a negative signed 64-bit integer


def _change(db: Any, node_id: int, chan_id: int, result: str, hours_ago: int) -> None:
    insert_change(
        db,
        node_id=node_id,
        run_id=next_run_id(db),
        created_ns=NOW_NS - hours_ago * HOUR_NS,
        chan_id=chan_id,
        section="s",
        strategy="static",
        before=PolicyValues(fee_ppm=500),
        after=PolicyValues(fee_ppm=400),
        snapshot_run_id=None,
        reason="r",
        result=result,
        applied_ns=None if result in ("planned", "failed") else NOW_NS - hours_ago * HOUR_NS,
    )


@pytest.mark.engines("sqlite", "postgresql")
def test_cooldown_counts_from_the_changes_lnd_took_in_the_store(
    open_store: Callable[..., RealStore],
) -> None:
    """The cooldown reads the store's history, on either engine: changes lnd took
    (applied, rolled back, reverted) cool a channel, planned and failed ones do not, nor
    another node's change of the same channel id."""
    store = open_store()
    other = store.writer.upsert_node(replace(STORE_NODE, pubkey="03" + "cd" * 32), 1)
    with store.engine.begin() as conn:
        db = plain_connection(conn)
        _change(db, store.node_id, 1, "applied", 2)
        _change(db, store.node_id, 2, "failed", 1)
        _change(db, store.node_id, 2, "planned", 1)
        _change(db, other, 2, "applied", 1)
        _change(db, store.node_id, BIG, "applied", 30)
        _change(db, store.node_id, BIG, "rolled_back", 5)
        _change(db, store.node_id, 3, "reverted", 25)
    with store.engine.connect() as conn:
        evidence = read_evidence(
            plain_connection(conn), STORE_NODE.pubkey, [1, 2, 3, BIG], frozenset(), now_ns=NOW_NS
        )
    assert evidence.last_change_ns == {
        1: NOW_NS - 2 * HOUR_NS,
        BIG: NOW_NS - 5 * HOUR_NS,
        3: NOW_NS - 25 * HOUR_NS,
    }
    history = [ChangeRecord(c, ns) for c, ns in evidence.last_change_ns.items()]
    decisions = [dec(chan_id=c) for c in (1, 2, 3, BIG)]
    plan = apply_guards(decisions, history, GuardSettings(), now_ns=NOW_NS, lnd_version=LND)
    assert [d.chan_id for d in plan.changes] == [2, 3]
    assert {r.decision.chan_id: r.reason for r in plan.refusals} == {
        1: "changed 2 h ago (min_hours_between_changes 24)",
        BIG: "changed 5 h ago (min_hours_between_changes 24)",
    }
