"""Channels as ListChannels and the graph show them on real nodes: peer aliases that
cannot be looked up, alias SCIDs and zero-conf channels that confirmed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from daemonproc import Daemon, db_arg, query
from simnode import SimNode

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import ChannelFailures, ClassStats
from lnflow.domain import to_signed64
from lnflow.store.channel_ids import fold_counts, fold_failures
from lnflow.store.engines import StoreLocation

CHAN_A = (810_000 << 40) | (1 << 16)
CHAN_B = (810_001 << 40) | (2 << 16) | 1


def sampled(d: Daemon, channels: int) -> None:
    d.wait_for(
        lambda c: c.execute("SELECT count(*) FROM channel_samples").fetchone()[0] >= channels,
        timeout=90,
    )


@pytest.mark.e2e
@pytest.mark.engines("sqlite", "postgresql")
def test_an_alias_lookup_error_is_never_stored_as_the_peer_alias(
    store_at: Callable[[str], StoreLocation], tmp_path: Path
) -> None:
    """lnd >= 0.16 with peer_alias_lookup writes "unable to lookup peer alias: ..." for a
    peer whose node announcement it lacks; that falls back as an empty alias would."""
    script = [
        {"op": "channel", "chan_id": CHAN_A, "peer_alias": "known-peer"},
        {"op": "channel", "chan_id": CHAN_B, "peer_alias": "hidden", "announced": False},
    ]
    db = store_at("s.db")
    with SimNode(tmp_path / "lnd", script=script) as sim, Daemon(sim, db) as d:
        sampled(d, 2)
        assert d.stop() == 0
    aliases = dict(query(db, "SELECT chan_id, peer_alias FROM channels"))
    assert aliases == {to_signed64(CHAN_A): "known-peer", to_signed64(CHAN_B): ""}


ALIAS_Z = (16_000_123 << 40) | 1  # lnd's alias range (>= 2^63): the channel's chan_id
REAL_Z = (820_000 << 40) | (7 << 16)  # where its graph edge moved when it confirmed


def link_fail(htlc: int, out: int, fee: int, wire: str) -> dict[str, object]:
    return {
        "event": "link_fail",
        "incoming_channel_id": CHAN_A,
        "incoming_htlc_id": htlc,
        "outgoing_channel_id": out,
        "incoming_amt_msat": 50_000_000 + htlc + fee,
        "outgoing_amt_msat": 50_000_000 + htlc,
        "incoming_timelock": 900,
        "outgoing_timelock": 860,
        "wire_failure": wire,
        "failure_detail": "NO_DETAIL",
    }


@pytest.mark.e2e
@pytest.mark.engines("sqlite", "postgresql")
def test_a_zero_conf_channel_is_one_channel_under_all_its_ids(
    store_at: Callable[[str], StoreLocation], tmp_path: Path
) -> None:
    """A confirmed zero-conf channel: ListChannels names it by its alias, the graph by its
    real SCID; failures come under both (fee checks under the real SCID, a peer offline
    under the alias). Its policy is found, and its opportunity counts every failure."""
    script = [
        {"op": "channel", "chan_id": CHAN_A, "peer_alias": "alice"},
        {
            "op": "channel",
            "chan_id": ALIAS_Z,
            "peer_alias": "zed",
            "alias_scids": [ALIAS_Z],
            "zero_conf_confirmed_scid": REAL_Z,
            "fee_rate_ppm": 700,
        },
        {
            "op": "forwarding_event",
            "chan_id_in": CHAN_A,
            "chan_id_out": REAL_Z,
            "amt_in_msat": 1_001_000,
            "amt_out_msat": 1_000_000,
        },
        {"op": "wait_subscribers", "count": 1},
        link_fail(1, REAL_Z, 200_000, "FEE_INSUFFICIENT"),
        link_fail(2, REAL_Z, 210_000, "FEE_INSUFFICIENT"),
        link_fail(3, ALIAS_Z, 220_000, "UNKNOWN_NEXT_PEER"),
        link_fail(4, ALIAS_Z, 230_000, "UNKNOWN_NEXT_PEER"),
    ]
    db = store_at("s.db")
    with SimNode(tmp_path / "lnd", script=script) as sim, Daemon(sim, db) as d:
        d.wait_for(
            lambda c: (
                c.execute(
                    "SELECT (SELECT count(*) FROM forward_attempts WHERE outcome = 2),"
                    " (SELECT count(*) FROM forwards), (SELECT count(*) FROM channel_samples)"
                ).fetchone()
                >= (4, 1, 2)
            ),
            timeout=90,
        )
        out = subprocess.run(
            [sys.executable, "-m", "lnflow.cli.ctl", "--db", db_arg(db), "analyze", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert d.stop() == 0
    assert query(db, "SELECT scid, chan_id, confirmed FROM channel_aliases") == [
        (to_signed64(REAL_Z), to_signed64(ALIAS_Z), 1)
    ]
    policies = query(
        db, "SELECT fee_rate_ppm FROM channel_samples WHERE chan_id = ?", to_signed64(ALIAS_Z)
    )
    assert policies and all(ppm == 700 for (ppm,) in policies)  # GetChanInfo(REAL_Z)
    doc = json.loads(out.stdout)
    (opp,) = doc["opportunities"]
    assert opp["channel_id"] == ALIAS_Z
    assert opp["peer_alias"] == "zed"
    assert (opp["failures"], opp["successes"]) == (4, 1)
    assert opp["missed_raw_msat"] == 200_000 + 210_000 + 220_000 + 230_000
    assert opp["by_class"]["fee"] == {"failures": 2, "missed_msat": 410_000}
    assert opp["by_class"]["availability"] == {"failures": 2, "missed_msat": 450_000}
    assert doc["node"]["failures"] == 4


def failures_of(chan: int, n: int, raw: int, incoming: int, first: int) -> ChannelFailures:
    return ChannelFailures(
        chan_id=chan,
        failures=n,
        clusters=n,
        missed_raw_msat=raw,
        missed_dedup_msat=raw,
        incoming_channels=incoming,
        first_failure_ns=first,
        last_failure_ns=first + 10,
        by_class={FailureClass.FEE: ClassStats(n, raw)},
    )


def test_folding_adds_a_channels_other_ids_into_it() -> None:
    aliases = {REAL_Z: ALIAS_Z}
    by_id = {
        REAL_Z: failures_of(REAL_Z, 2, 300, 2, 50),
        ALIAS_Z: failures_of(ALIAS_Z, 1, 100, 1, 40),
        CHAN_A: failures_of(CHAN_A, 5, 900, 3, 10),
    }
    folded = fold_failures(by_id, aliases)
    assert folded[CHAN_A] == by_id[CHAN_A]
    assert folded[ALIAS_Z] == ChannelFailures(
        chan_id=ALIAS_Z,
        failures=3,
        clusters=3,
        missed_raw_msat=400,
        missed_dedup_msat=400,
        incoming_channels=2,  # the larger count: a lower bound
        first_failure_ns=40,
        last_failure_ns=60,
        by_class={FailureClass.FEE: ClassStats(3, 400)},
    )
    assert set(folded) == {CHAN_A, ALIAS_Z}
    assert fold_counts({REAL_Z: 2, ALIAS_Z: 1, CHAN_A: 4}, aliases) == {CHAN_A: 4, ALIAS_Z: 3}
