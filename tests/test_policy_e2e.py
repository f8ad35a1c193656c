"""The policy engine end to end: lnflowd policy check/plan/apply/rollback against the
simulated node over real gRPC, with a real store; the node's policy is read back over
gRPC after every step and the recorded history is checked row by row."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, db_arg, query, run_lnflowctl, run_lnflowd, sim_flags
from simnode import SimNode, make_channel

from lnflow.domain import format_scid, from_signed64
from lnflow.errors import MacaroonMissingError, MacaroonRejectedError
from lnflow.lnd import LndClient
from lnflow.lnd._proto import lightning_pb2, lightning_pb2_grpc, router_pb2, router_pb2_grpc
from lnflow.lnd.credentials import LndCredentials
from lnflow.policy import GuardSettings, Rules, load_rules
from lnflow.policy.engine import Plan, apply_plan, gather
from lnflow.store import db as store_db
from lnflow.store.engines import StoreLocation

pytestmark = pytest.mark.e2e  # starts the simulated node, lnflowd or lnflowctl

A = "800000x1x0"  # the channel the rules change
B = "800001x2x1"
C = "800002x3x0"
A_ID = (800000 << 40) | (1 << 16)
B_ID = (800001 << 40) | (2 << 16) | 1
C_ID = (800002 << 40) | (3 << 16)

SCRIPT = [
    {"op": "channel", "chan_id": A, "fee_rate_ppm": 1000, "fee_base_msat": 500,
     "time_lock_delta": 60},
    {"op": "channel", "chan_id": B, "fee_rate_ppm": 300},
    {"op": "channel", "chan_id": C, "fee_rate_ppm": 200},
]  # fmt: skip

RULES = """\
[lower]
chan.id = 800000x1x0
strategy = static
fee_ppm = 700
base_fee_msat = 500
max_htlc_msat = 400_000_000

[default]
strategy = ignore
"""


def _policy(sim: SimNode, chan_id: int) -> Any:
    """Our policy of the channel as the node reports it (GetChanInfo), plus the
    FeeReport and ListChannels figures that must agree with it."""
    channel = make_channel(sim, "readonly")
    try:
        stub = lightning_pb2_grpc.LightningStub(channel)  # type: ignore[no-untyped-call]
        me = stub.GetInfo(lightning_pb2.GetInfoRequest()).identity_pubkey
        edge = stub.GetChanInfo(lightning_pb2.ChanInfoRequest(chan_id=chan_id))
        ours = edge.node1_policy if edge.node1_pub == me else edge.node2_policy
        fees = {f.chan_id: f for f in stub.FeeReport(lightning_pb2.FeeReportRequest()).channel_fees}
        assert fees[chan_id].fee_per_mil == ours.fee_rate_milli_msat
        assert fees[chan_id].base_fee_msat == ours.fee_base_msat
        listed = {
            c.chan_id: c for c in stub.ListChannels(lightning_pb2.ListChannelsRequest()).channels
        }
        assert listed[chan_id].local_constraints.min_htlc_msat == ours.min_htlc
        return ours
    finally:
        channel.close()


def _flags(
    sim: SimNode, tmp_path: Path, macaroon: str = "admin", db: StoreLocation | None = None
) -> list[str]:
    return [
        *sim_flags(sim),
        "--policy-macaroonpath",
        str(sim.macaroon_path(macaroon)),
        "--db",
        db_arg(tmp_path / "lnflow.db" if db is None else db),
        "--rules",
        str(tmp_path / "policies.conf"),
    ]


@pytest.fixture
def sim(tmp_path: Path) -> Any:
    with SimNode(tmp_path / "lnd", script=SCRIPT, lnd_version="0.18.3") as node:
        yield node


def _connections(sim_log: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """From the simulated node's log: each client connection's first unary call's
    macaroon, and every write call as (method, connection, macaroon)."""
    first = {
        peer: name
        for peer, name in re.findall(
            r"unary calls from (\S+), the first: \S+ with the (\w+)", sim_log
        )
    }
    writes = re.findall(r"write (\S+) from (\S+) with the (\w+) macaroon", sim_log)
    return first, writes


def _timeless(history: str) -> list[dict[str, Any]]:
    """``lnflowctl policy history --json`` without the clock's fields."""
    return [
        {k: v for k, v in row.items() if k not in ("created", "applied")}
        for row in json.loads(history)
    ]


@pytest.mark.engines("sqlite", "postgresql")
def test_plan_apply_history_and_rollback(
    sim: SimNode, tmp_path: Path, store_engine: str, store_at: Callable[[str], StoreLocation]
) -> None:
    history = _plan_apply_history_and_rollback(sim, tmp_path, store_at("lnflow.db"))
    if store_engine == "postgresql":
        # the same steps into a SQLite file (the node is as it was: the rollback restored
        # it) leave the same history, field by field
        on_file = _plan_apply_history_and_rollback(sim, tmp_path, tmp_path / "file.db")
        assert history == on_file
        assert [r["result"] for r in history] == ["applied", "rolled_back"]


def _plan_apply_history_and_rollback(
    sim: SimNode, tmp_path: Path, db: StoreLocation
) -> list[dict[str, Any]]:
    """check, plan, apply, a refused change, rollback; the store's history (timeless)."""
    (tmp_path / "policies.conf").write_text(RULES)
    flags = _flags(sim, tmp_path, db=db)
    code, out, err = run_lnflowd("policy", "check", *flags)
    assert (code, err) == (0, "")
    assert "1 section(s), 1 final, with [default]: ok" in out

    # plan: read-only, names the section, before → after, and changes nothing
    code, out, err = run_lnflowd("policy", "plan", "--json", *flags)
    assert code == 0, err
    doc = json.loads(out)
    assert [c["chan_id"] for c in doc["changes"]] == [A_ID]
    fields = doc["changes"][0]["fields"]
    assert fields["fee_ppm"] == {"before": 1000, "after": 700}
    assert fields["max_htlc_msat"]["after"] == 400_000_000
    assert "base_fee_msat" not in fields  # unchanged: not a change
    assert _policy(sim, A_ID).fee_rate_milli_msat == 1000
    assert (isinstance(db, Path) and not db.exists()) or query(
        db, "SELECT count(*) FROM policy_changes"
    ) == [(0,)]

    # apply: the node has the new fee and max_htlc; what the rules left alone was
    # re-sent from the current policy (time_lock_delta 60, base fee 500)
    code, out, err = run_lnflowd("policy", "apply", "--yes", *flags)
    assert code == 0, (out, err)
    assert "applied, 0 failed" in out
    ours = _policy(sim, A_ID)
    assert (ours.fee_rate_milli_msat, ours.max_htlc_msat) == (700, 400_000_000)
    assert (ours.fee_base_msat, ours.time_lock_delta) == (500, 60)
    assert _policy(sim, B_ID).fee_rate_milli_msat == 300
    rows = query(
        db,
        "SELECT id, run_id, chan_id, section, strategy, before_fee_ppm, after_fee_ppm,"
        " before_time_lock_delta, after_time_lock_delta, after_base_fee_msat, result,"
        " error, applied_ns IS NOT NULL FROM policy_changes",
    )
    assert len(rows) == 1
    change_id, run_id = rows[0][0], rows[0][1]
    assert rows[0][2:] == (A_ID, "lower", "static", 1000, 700, 60, None, None, "applied", None, 1)

    # the same rules again: nothing left to change
    code, out, err = run_lnflowd("policy", "plan", *flags)
    assert code == 0 and "0 change(s), 0 refused, 3 unchanged" in out
    # another fee within the cooldown is refused, and nothing is recorded or sent
    (tmp_path / "policies.conf").write_text(RULES.replace("fee_ppm = 700", "fee_ppm = 650"))
    code, out, err = run_lnflowd("policy", "apply", "--yes", *flags)
    assert code == 0, err
    assert "refused: changed 0 h ago (min_hours_between_changes 24)" in out
    assert query(db, "SELECT count(*) FROM policy_changes") == [(1,)]

    code, out, err = run_lnflowctl("--db", db_arg(db), "policy", "history")
    assert code == 0, err
    assert "fee_ppm 1000 → 700" in out and "applied" in out

    # rollback restores what the change set, and says so in the history
    code, out, err = run_lnflowd("policy", "rollback", str(change_id), *flags)
    assert code == 0, (out, err)
    ours = _policy(sim, A_ID)
    assert ours.fee_rate_milli_msat == 1000
    rows = query(
        db,
        "SELECT strategy, before_fee_ppm, after_fee_ppm, after_time_lock_delta, result,"
        " undoes_id FROM policy_changes WHERE id > ?",
        change_id,
    )
    assert rows == [("rollback", 700, 1000, None, "rolled_back", change_id)]
    code, out, err = run_lnflowd("policy", "rollback", "--run", str(run_id + 1), *flags)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "has no applied change" in err

    code, out, err = run_lnflowctl("--db", db_arg(db), "policy", "history", "--channel", B)
    assert code == 0 and "no policy change" in out
    code, out, err = run_lnflowctl("--db", db_arg(db), "policy", "history", "--json")
    assert code == 0, err
    return _timeless(out)


def _client(sim: SimNode, macaroon: str) -> LndClient:
    return LndClient(
        LndCredentials.resolve(
            lnddir=sim.lnddir,
            network=sim.network,
            rpcserver=sim.rpcserver,
            macaroonpath=sim.macaroon_path(macaroon),
        ),
        timeout_s=5,
    )


async def _plan(sim: SimNode, db: sqlite3.Connection, rules: Rules) -> Plan:
    """The engine's plan of ``rules`` for the simulated node, read-only, default guards."""
    async with _client(sim, "readonly") as reader:
        return await gather(
            reader, db, rules, guards=GuardSettings(), analysis_window_s=86_400,
            max_fee_step_percent=25,
        )  # fmt: skip


def _history_db(tmp_path: Path) -> sqlite3.Connection:
    path = tmp_path / "lnflow.db"
    store_db.open_engine(path).dispose()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO nodes (pubkey, alias, network, first_seen_ns) VALUES ('n', '', '', 0)")
    db.commit()
    return db


def test_rollback_refuses_another_nodes_change(sim: SimNode, tmp_path: Path) -> None:
    """A store may hold several nodes' history: a change another node made is not
    rolled back through this node's lnd (one line, nothing recorded or sent)."""
    from lnflow.store.policy_history import PolicyValues, insert_change

    db = _history_db(tmp_path)  # node 'n': not the simulated node
    change_id = insert_change(
        db, node_id=1, run_id=1, created_ns=1, chan_id=A_ID, section="s", strategy="static",
        before=PolicyValues(fee_ppm=1000), after=PolicyValues(fee_ppm=1), snapshot_run_id=None,
        reason="r", result="applied", applied_ns=1,
    )  # fmt: skip
    db.commit()
    db.close()
    (tmp_path / "policies.conf").write_text(RULES)
    code, out, err = run_lnflowd("policy", "rollback", str(change_id), *_flags(sim, tmp_path))
    assert (code, out) == (1, "") and err.count("\n") == 1, err
    assert f"policy change {change_id} was made on another node" in err
    assert query(tmp_path / "lnflow.db", "SELECT count(*) FROM policy_changes") == [(1,)]
    assert _policy(sim, A_ID).fee_rate_milli_msat == 1000


THREE = """\
[all]
strategy = static
fee_ppm = 150
"""


def test_refused_update_is_recorded_per_channel(sim: SimNode, tmp_path: Path) -> None:
    """lnd's failed_updates for one channel: that change is failed with lnd's words,
    the others applied."""
    (tmp_path / "policies.conf").write_text(THREE)
    rules = load_rules(tmp_path / "policies.conf")
    db = _history_db(tmp_path)

    async def run() -> Any:
        plan = await _plan(sim, db, rules)
        # above the capacity: lnd refuses this one channel in failed_updates
        too_big = [
            replace(d, change=replace(d.change, max_htlc_msat=2_000_000_000))
            if d.chan_id == B_ID
            else d
            for d in plan.changes
        ]
        async with _client(sim, "admin") as writer:
            return await apply_plan(replace(plan, changes=tuple(too_big)), writer, db, 1)

    report = asyncio.run(run())
    assert (report.applied, report.failed, report.stopped) == (2, 1, None)
    rows = dict(
        (chan, (result, error))
        for chan, result, error in db.execute("SELECT chan_id, result, error FROM policy_changes")
    )
    assert rows[A_ID] == ("applied", None) and rows[C_ID] == ("applied", None)
    assert rows[B_ID] == (
        "failed",
        "UPDATE_FAILURE_INVALID_PARAMETER: max htlc amount exceeds channel capacity",
    )
    assert _policy(sim, B_ID).fee_rate_milli_msat == 300
    assert _policy(sim, C_ID).fee_rate_milli_msat == 150
    db.close()


def test_lnd_going_away_mid_apply_says_what_was_applied(sim: SimNode, tmp_path: Path) -> None:
    (tmp_path / "policies.conf").write_text(THREE)
    rules = load_rules(tmp_path / "policies.conf")
    db = _history_db(tmp_path)

    async def run() -> Any:
        plan = await _plan(sim, db, rules)
        async with _client(sim, "admin") as writer:
            # lnd stops once the first change is through
            return await apply_plan(
                plan, writer, db, 1, on_result=lambda o: sim.stop() if o.result else None
            )

    report = asyncio.run(run())
    assert report.applied == 1 and report.failed == 2
    assert report.stopped is not None and report.stopped.startswith("lnd went away mid-run")
    assert "\n" not in report.stopped
    rows = db.execute("SELECT result, error FROM policy_changes ORDER BY id").fetchall()
    assert rows[0] == ("applied", None)
    assert rows[1][0] == "failed" and rows[1][1].startswith("not known to be applied: ")
    assert rows[2][0] == "failed" and rows[2][1].startswith("not sent: lnd went away")
    db.close()


def _channels(sim: SimNode) -> list[int]:
    channel = make_channel(sim, "readonly")
    try:
        stub = lightning_pb2_grpc.LightningStub(channel)  # type: ignore[no-untyped-call]
        return [c.chan_id for c in stub.ListChannels(lightning_pb2.ListChannelsRequest()).channels]
    finally:
        channel.close()


@pytest.mark.timeout(400)
@pytest.mark.engines("sqlite", "postgresql")
def test_daemon_applies_measures_and_reverts_a_change_that_cut_the_fees(
    tmp_path: Path, store_at: Callable[[str], StoreLocation]
) -> None:
    """[policy] mode = apply: the daemon applies the rules (every fee down to 1 ppm and
    no base fee), measures each change over the evaluate_hours before and after it, and
    with revert_if_worse restores the old fees, recording the figures; into a SQLite
    file or a PostgreSQL database alike."""
    rules = tmp_path / "policies.conf"
    rules.write_text("[cheap]\nstrategy = static\nfee_ppm = 1\nbase_fee_msat = 0\n")
    # senders learn the new fee at once (no stale senders paying the old one), so fees
    # earned out of every channel fall with it and every change is judged worse
    args = ("--rate", "60", "--seed", "5", "--channels", "3", "--gossip-delay", "0")
    with SimNode(tmp_path / "lnd", args=args, lnd_version="0.18.3") as sim:
        config = tmp_path / "lnflow.toml"
        config.write_text(
            "[ledger]\nsync_interval_s = 5\n"
            "[policy]\n"
            f'file = "{rules}"\nmode = "apply"\ninterval_s = 20\n'
            f'macaroonpath = "{sim.macaroon_path("admin")}"\n'
            "max_gap_minutes = 527040\nevaluate_hours = 0.01\n"
            "revert_if_worse = true\nmin_forwards_to_judge = 1\n"
        )
        chans = _channels(sim)
        old = {c: _policy(sim, c) for c in chans}
        db = store_at("lnflow.db")
        with Daemon(sim, db, args=["--config", str(config)], log=tmp_path / "d.log") as d:
            d.wait_for(
                lambda c: (
                    c.execute(
                        "SELECT count(*) FROM policy_changes WHERE result = 'applied'"
                    ).fetchone()[0]
                    == len(chans)
                ),
                timeout=90,
            )
            for chan in chans:
                ours = _policy(sim, chan)
                assert (ours.fee_rate_milli_msat, ours.fee_base_msat) == (1, 0)
            d.wait_for(
                lambda c: (
                    c.execute(
                        "SELECT count(*) FROM policy_changes WHERE result = 'reverted'"
                    ).fetchone()[0]
                    == len(chans)
                ),
                timeout=150,
            )
        for chan in chans:
            ours = _policy(sim, chan)
            assert ours.fee_rate_milli_msat == old[chan].fee_rate_milli_msat
            assert ours.fee_base_msat == old[chan].fee_base_msat
        applied = query(
            db,
            "SELECT id, chan_id, forwards_before, fees_out_before_msat, fees_out_after_msat,"
            " verdict FROM policy_changes WHERE strategy = 'static' ORDER BY id",
        )
        applied = [(i, from_signed64(c), *rest) for i, c, *rest in applied]
        assert sorted(r[1] for r in applied) == sorted(chans)
        for _, _, forwards, before, after, why in applied:
            assert forwards >= 1 and after * 100 < before * 80
            assert why.startswith("revert: fees earned out")
        reverted = query(
            db,
            "SELECT undoes_id, before_fee_ppm, after_fee_ppm, reason, verdict FROM"
            " policy_changes WHERE result = 'reverted' ORDER BY undoes_id",
        )
        assert [r[0] for r in reverted] == [r[0] for r in applied]
        for (_, chan, *_), (_, now, restored, reason, why) in zip(applied, reverted, strict=True):
            assert (now, restored) == (1, old[chan].fee_rate_milli_msat)
            assert "revert: fees earned out" in reason and why.startswith("revert:")
        sim_log = sim.log()
        code, out, err = run_lnflowctl("--db", db_arg(db), "policy", "effects", "--hours", "0.01")
        assert code == 0, err
        assert out.count("revert: fees earned out") == len(chans)
        # every write (the applies and the reverts, runs apart) came with the policy
        # (admin) macaroon on one connection that the daemon opened with its read-only
        # one: its own, through its lnd gateway, not a connection of the job's
        first, writes = _connections(sim_log)
        assert len(writes) == 2 * len(chans)
        peers = {peer for _, peer, _ in writes}
        assert len(peers) == 1 and {name for *_, name in writes} == {"admin"}, writes
        assert first[peers.pop()] == "readonly", first
        # each change applied and each revert is one alert (recorded even with no target)
        titles = query(db, "SELECT title FROM alerts WHERE kind = 'policy_change'")
        assert sorted(t for (t,) in titles) == sorted(
            f"policy change {result} on {format_scid(chan)}"
            for chan in chans
            for result in ("applied", "reverted")
        )


def test_policy_manager_plans_applies_and_rolls_back(sim: SimNode, tmp_path: Path) -> None:
    """The seed's PolicyManager runs the same code as lnflowd policy."""
    from lnflow import PolicyManager

    (tmp_path / "policies.conf").write_text(RULES)
    manager = PolicyManager(
        config_file=tmp_path / "policies.conf",
        lnd_grpc_host=sim.rpcserver,
        lnd_dir=sim.lnddir,
        network=sim.network,
        macaroon_path=sim.macaroon_path("readonly"),
        policy_macaroon_path=sim.macaroon_path("admin"),
        db_path=tmp_path / "lnflow.db",
    )
    plan = asyncio.run(manager.plan())
    assert [(d.chan_id, d.change.fee_ppm) for d in plan.changes] == [(A_ID, 700)]
    report = asyncio.run(manager.apply(plan))
    assert (report.applied, report.failed, report.stopped) == (1, 0, None)
    assert _policy(sim, A_ID).fee_rate_milli_msat == 700
    undone = asyncio.run(manager.rollback(report.outcomes[0].change_id))
    assert (undone.applied, undone.failed) == (0, 0)  # "applied" counts applies only
    assert [o.result for o in undone.outcomes] == ["rolled_back"]
    assert _policy(sim, A_ID).fee_rate_milli_msat == 1000
    assert query(tmp_path / "lnflow.db", "SELECT result FROM policy_changes ORDER BY id") == [
        ("applied",),
        ("rolled_back",),
    ]


def test_inbound_fees_are_refused_before_lnd_0_18(tmp_path: Path) -> None:
    (tmp_path / "policies.conf").write_text(
        "[discount]\nchan.id = 800000x1x0\nstrategy = static\nfee_ppm = 1000\n"
        "inbound_fee_ppm = -200\n"
    )
    with SimNode(tmp_path / "lnd", script=SCRIPT, lnd_version="0.17.5") as old:
        code, out, err = run_lnflowd("policy", "plan", *_flags(old, tmp_path))
        assert code == 0, err
        assert "refused: inbound fees need lnd 0.18 or newer (the node runs 0.17.5)" in out
        assert "0 change(s), 1 refused" in out
        code, out, err = run_lnflowd("policy", "apply", "--yes", *_flags(old, tmp_path))
        assert code == 0 and "0 change(s), 1 refused" in out
    assert not (tmp_path / "lnflow.db").exists()


@pytest.mark.timeout(400)
def test_opportunity_raises_max_htlc_from_the_snapshot_and_its_failures_stop(
    tmp_path: Path,
) -> None:
    """failures → plan → apply → fewer failures: the daemon records max_htlc failures,
    its snapshot suggests a max_htlc, the opportunity strategy applies it, and the
    channel's max_htlc failures drop in the same time after the change."""
    rules = tmp_path / "policies.conf"
    rules.write_text(
        "[evidence]\nlnflow.recommendation = raise_max_htlc\nstrategy = opportunity\n"
        "[default]\nstrategy = ignore\n"
    )
    args = ("--rate", "60", "--seed", "7", "--channels", "8")
    with SimNode(tmp_path / "lnd", args=args, lnd_version="0.18.3") as sim:
        config = tmp_path / "lnflow.toml"
        config.write_text(
            "[ledger]\nsync_interval_s = 5\n[analysis]\ninterval_s = 10\nwindow_hours = 1\n"
            f'[policy]\nfile = "{rules}"\nmax_gap_minutes = 60\n'
            f'macaroonpath = "{sim.macaroon_path("admin")}"\n'
        )
        db = tmp_path / "lnflow.db"
        # a suggestion from at least 8 max_htlc failures: from fewer, its nearest-rank
        # p90 is the largest of a handful of amounts, and the larger ones still to come
        # (the traffic's amounts have a long tail) can fail as often after the change
        wanted = (
            "SELECT channel_id, suggested_max_htlc_msat, run_id FROM opportunities"
            " WHERE recommended_action = 'raise_max_htlc' AND max_htlc_failures >= 8"
            " AND run_id = (SELECT max(id) FROM analysis_runs)"
        )
        with Daemon(sim, db, args=["--config", str(config)]) as d:
            d.wait_for(lambda c: bool(c.execute(wanted).fetchall()), timeout=90)
            code, out, err = run_lnflowd(
                "policy", "apply", "--yes", "--config", str(config), *sim_flags(sim),
                "--db", str(db),
            )  # fmt: skip
            assert code == 0, (out, err)
            rows = query(
                db,
                "SELECT chan_id, before_max_htlc_msat, after_max_htlc_msat, snapshot_run_id,"
                " applied_ns, result FROM policy_changes",
            )
            assert rows and all(r[5] == "applied" for r in rows)
            for signed, old, new, run, _, _ in rows:
                # the value the snapshot the plan read suggested
                assert query(
                    db,
                    "SELECT suggested_max_htlc_msat FROM opportunities"
                    " WHERE run_id = ? AND channel_id = ?",
                    run,
                    signed,
                ) == [(new,)]
                assert _policy(sim, from_signed64(signed)).max_htlc_msat == new > old
            applied_ns = rows[0][4]
            chan = from_signed64(rows[0][0])
            # the daemon records on for as long as it had recorded before the change
            recorded = query(db, "SELECT min(started_ns) FROM stream_sessions")[0][0]
            d.wait_for(
                lambda c: (
                    c.execute("SELECT max(first_seen_ns) FROM forward_attempts").fetchone()[0]
                    > 2 * applied_ns - recorded
                ),
                timeout=120,
            )
        span = applied_ns - recorded
        max_htlc_fails = (
            "SELECT count(*) FROM forward_attempts a JOIN channel_refs r"
            " ON r.id = a.outgoing_chan_ref WHERE r.chan_id = ? AND a.failure_class = 2"
            " AND a.first_seen_ns >= ? AND a.first_seen_ns < ?"
        )
        signed = rows[0][0]
        (before,) = query(db, max_htlc_fails, signed, applied_ns - span, applied_ns)[0]
        (after,) = query(db, max_htlc_fails, signed, applied_ns, applied_ns + span)[0]
        assert before > 0 and after < before, (chan, before, after)


def test_daemon_in_plan_mode_records_and_changes_nothing(sim: SimNode, tmp_path: Path) -> None:
    (tmp_path / "policies.conf").write_text(RULES)
    config = tmp_path / "lnflow.toml"
    config.write_text(
        f'[policy]\nfile = "{tmp_path / "policies.conf"}"\nmode = "plan"\ninterval_s = 10\n'
        "max_gap_minutes = 527040\n"
    )
    db = tmp_path / "lnflow.db"
    with Daemon(sim, db, args=["--config", str(config)]) as d:
        d.wait_for(
            lambda c: (
                c.execute("SELECT count(DISTINCT run_id) FROM policy_changes").fetchone()[0] >= 2
            ),
            timeout=60,
        )
    rows = query(db, "SELECT chan_id, before_fee_ppm, after_fee_ppm, result FROM policy_changes")
    assert {r for r in rows} == {(A_ID, 1000, 700, "planned")}
    assert _policy(sim, A_ID).fee_rate_milli_msat == 1000


def test_daemon_refuses_to_start_on_a_bad_rules_file(sim: SimNode, tmp_path: Path) -> None:
    (tmp_path / "policies.conf").write_text("[x]\nstrategy = cost\n")
    config = tmp_path / "lnflow.toml"
    config.write_text(f'[policy]\nfile = "{tmp_path / "policies.conf"}"\nmode = "apply"\n')
    code, out, err = run_lnflowd(*sim_flags(sim), "--db", str(tmp_path / "s.db"),
                                 "--config", str(config))  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "policies.conf:2: [x] strategy" in err


DISABLE_RULES = """\
[off]
chan.id = 800001x2x1
strategy = disable

[default]
strategy = ignore
"""


def test_disable_goes_through_update_chan_status_and_rolls_back(
    sim: SimNode, tmp_path: Path
) -> None:
    (tmp_path / "policies.conf").write_text(DISABLE_RULES)
    flags = _flags(sim, tmp_path)
    code, out, err = run_lnflowd("policy", "plan", "--json", *flags)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["refused"] == []
    assert [(c["chan_id"], c["fields"]) for c in doc["changes"]] == [
        (B_ID, {"disabled": {"before": False, "after": True}})
    ]
    assert _policy(sim, B_ID).disabled is False

    code, out, err = run_lnflowd("policy", "apply", "--yes", *flags)
    assert code == 0, (out, err)
    assert "1 applied, 0 failed" in out
    ours = _policy(sim, B_ID)
    assert ours.disabled is True
    assert ours.fee_rate_milli_msat == 300  # the fee is left as it was
    assert _policy(sim, A_ID).disabled is False
    rows = query(
        tmp_path / "lnflow.db",
        "SELECT id, chan_id, strategy, before_disabled, after_disabled, after_fee_ppm,"
        " result, error FROM policy_changes",
    )
    assert len(rows) == 1
    change_id = rows[0][0]
    assert rows[0][1:] == (B_ID, "disable", 0, 1, None, "applied", None)

    # disabled by hand: the rules see it as unchanged now
    code, out, err = run_lnflowd("policy", "plan", *flags)
    assert code == 0 and "0 change(s), 0 refused, 3 unchanged" in out

    code, out, err = run_lnflowd("policy", "rollback", str(change_id), *flags)
    assert code == 0, (out, err)
    assert _policy(sim, B_ID).disabled is False
    rows = query(
        tmp_path / "lnflow.db",
        "SELECT strategy, before_disabled, after_disabled, after_fee_ppm, result, undoes_id"
        " FROM policy_changes WHERE id > ?",
        change_id,
    )
    assert rows == [("rollback", 1, 0, None, "rolled_back", change_id)]


def test_disable_with_a_read_only_macaroon_names_update_chan_status(
    sim: SimNode, tmp_path: Path
) -> None:
    (tmp_path / "policies.conf").write_text(DISABLE_RULES)
    code, _, err = run_lnflowd("policy", "apply", "--yes", *_flags(sim, tmp_path, "readonly"))
    assert code == 1 and err.count("\n") == 1
    assert "LND refused UpdateChanStatus" in err and "lacks offchain:write" in err
    assert _policy(sim, B_ID).disabled is False
    rows = query(tmp_path / "lnflow.db", "SELECT chan_id, result FROM policy_changes")
    assert rows == [(B_ID, "failed")]


def test_re_enabling_a_channel_whose_peer_is_offline_hands_it_back_to_lnd(
    tmp_path: Path,
) -> None:
    """lnd refuses ENABLE while the peer is offline; the rollback then sends AUTO (as
    charge-lnd does): the change is recorded rolled back and lnd keeps the channel
    disabled until the peer is back."""
    script = [*SCRIPT, {"op": "wait_subscribers"}, {"op": "channel", "chan_id": B, "active": False}]
    with SimNode(tmp_path / "lnd", script=script, lnd_version="0.18.3") as sim:
        (tmp_path / "policies.conf").write_text(DISABLE_RULES)
        flags = _flags(sim, tmp_path)
        code, out, err = run_lnflowd("policy", "apply", "--yes", *flags)
        assert code == 0 and "1 applied, 0 failed" in out, (out, err)
        change_id = query(tmp_path / "lnflow.db", "SELECT max(id) FROM policy_changes")[0][0]

        channel = make_channel(sim, "readonly")
        try:  # a subscriber lets the script go on: B's peer goes offline
            stub = lightning_pb2_grpc.LightningStub(channel)  # type: ignore[no-untyped-call]
            stream = router_pb2_grpc.RouterStub(channel).SubscribeHtlcEvents(  # type: ignore[no-untyped-call]
                router_pb2.SubscribeHtlcEventsRequest()
            )
            for _ in range(200):
                listed = stub.ListChannels(lightning_pb2.ListChannelsRequest()).channels
                if not {c.chan_id: c for c in listed}[B_ID].active:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the script did not take B's peer offline")
            stream.cancel()
        finally:
            channel.close()

        code, out, err = run_lnflowd("policy", "rollback", str(change_id), *flags)
        assert code == 0, (out, err)
        assert _policy(sim, B_ID).disabled is True  # until lnd sees the peer again
        rows = query(
            tmp_path / "lnflow.db",
            "SELECT before_disabled, after_disabled, result, error FROM policy_changes"
            " WHERE undoes_id = ?",
            change_id,
        )
        assert rows == [(1, 0, "rolled_back", None)]


@pytest.mark.timeout(300)
def test_daemon_does_not_revert_a_disable_for_the_fees_it_stops(tmp_path: Path) -> None:
    """A disabled channel earns nothing out: the verdict says the fees fell, but with
    revert_if_worse the daemon keeps the channel disabled, as the rules asked."""
    rules = tmp_path / "policies.conf"
    args = ("--rate", "60", "--seed", "5", "--channels", "3", "--gossip-delay", "0")
    with SimNode(tmp_path / "lnd", args=args, lnd_version="0.18.3") as sim:
        chan = min(_channels(sim))
        rules.write_text(f"[off]\nchan.id = {format_scid(chan)}\nstrategy = disable\n")
        config = tmp_path / "lnflow.toml"
        config.write_text(
            "[ledger]\nsync_interval_s = 5\n"
            "[policy]\n"
            f'file = "{rules}"\nmode = "apply"\ninterval_s = 20\n'
            f'macaroonpath = "{sim.macaroon_path("admin")}"\n'
            "max_gap_minutes = 527040\nevaluate_hours = 0.01\n"
            "revert_if_worse = true\nmin_forwards_to_judge = 1\n"
        )
        db = tmp_path / "lnflow.db"
        with Daemon(sim, db, args=["--config", str(config)]) as d:
            d.wait_for(
                lambda c: (
                    c.execute(
                        "SELECT count(*) FROM policy_changes WHERE verdict IS NOT NULL"
                    ).fetchone()[0]
                    >= 1
                ),
                timeout=200,
            )
        assert _policy(sim, chan).disabled is True
        rows = query(
            db,
            "SELECT chan_id, strategy, after_disabled, result, verdict FROM policy_changes",
        )
        assert len(rows) == 1
        chan_id, strategy, after, result, why = rows[0]
        assert (from_signed64(chan_id), strategy, after, result) == (chan, "disable", 1, "applied")
        assert why.startswith("revert: fees earned out")
        assert why.endswith("not reverted: the change disabled the channel")


def test_a_client_with_another_macaroon_calls_through_the_same_gateway(
    sim: SimNode, tmp_path: Path
) -> None:
    """LndClient.with_macaroon: the policy macaroon's calls go through the read-only
    client's gateway process and connection, each call with its own macaroon (lnd
    refuses a call carrying two); a client of another node is refused."""

    async def body() -> None:
        async with _client(sim, "readonly") as reader:
            channel = (await reader.list_channels())[0]
            writer = reader.with_macaroon(_client(sim, "admin").credentials)
            with pytest.raises(MacaroonRejectedError, match="lacks offchain:write"):
                await reader.update_chan_status(channel.channel_point, "DISABLE")
            assert await writer.update_chan_status(channel.channel_point, "DISABLE") is None
            assert writer.gateway_pid == reader.gateway_pid is not None
            await writer.close()  # its own streams only: the reader's gateway stays
            assert (await reader.get_info()).pubkey
            other = replace(reader.credentials, rpcserver="127.0.0.1:1")
            with pytest.raises(ValueError, match="is not the node this client reaches"):
                reader.with_macaroon(other)
            missing = replace(reader.credentials, macaroonpath=tmp_path / "none.macaroon")
            with pytest.raises(MacaroonMissingError):
                reader.with_macaroon(missing)

    asyncio.run(body())
    first, writes = _connections(sim.log())
    assert [(m, name) for m, _, name in writes] == [("/routerrpc.Router/UpdateChanStatus", "admin")]
    assert first[writes[0][1]] == "readonly"
