"""Several nodes in one store (DESIGN §6): two simulated nodes, each recorded by its own
lnflowd into one store, read back per node exactly as each reads from a store of its
own; `lnflowctl --node`, `nodes` and `--all-nodes` on that store.

Each node runs the same scripted events alone (a store of its own) and into the shared
store, one daemon after the other. The events are dated 40 minutes before the daemons'
clock, so `analyze --hours 1` sees all of them in every run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from daemonproc import Daemon, query, run_lnflowctl
from simnode import SimNode

from lnflow.sim.state import derive_pubkey

pytestmark = pytest.mark.e2e  # every test here starts a process

S = 1_000_000_000
A = (830_000 << 40) | (1 << 16)  # liquidity-starved outbound channel
B = (830_001 << 40) | (2 << 16)  # too expensive
C = (830_002 << 40) | (3 << 16)  # an incoming channel
BASE_NS = (time.time_ns() // S - 40 * 60) * S
# node aliases come from lnd: hostile text (an escape sequence, a newline)
HOSTILE = "beta\x1b[31m\nnode"


class Sim(NamedTuple):
    name: str
    seed: int
    alias: str
    scale: int  # the amounts of its failures: the two nodes rank differently

    @property
    def pubkey(self) -> str:
        return derive_pubkey(self.seed, "node")


ALPHA = Sim("alpha", 1, "alpha", 1)
BETA = Sim("beta", 2, HOSTILE, 3)


def _fail(htlc: int, t_s: int, out: int, amt: int, fee: int, wire: str, detail: str) -> Any:
    return {
        "event": "link_fail",
        "timestamp_ns": BASE_NS + t_s * S,
        "incoming_channel_id": C,
        "incoming_htlc_id": htlc,
        "outgoing_channel_id": out,
        "incoming_amt_msat": amt + fee,
        "outgoing_amt_msat": amt,
        "incoming_timelock": 900,
        "outgoing_timelock": 860,
        "wire_failure": wire,
        "failure_detail": detail,
    }


def _script(sim: Sim) -> tuple[list[dict[str, Any]], int]:
    """The node's script and the HTLC events it sends."""
    setup: list[dict[str, Any]] = [
        {"op": "channel", "chan_id": A, "peer_alias": "alice", "local_balance_sat": 50_000},
        {"op": "channel", "chan_id": B, "peer_alias": "bob", "fee_rate_ppm": 1_000},
        {"op": "channel", "chan_id": C, "peer_alias": "carol", "local_balance_sat": 900_000},
        {
            "op": "forwarding_event",
            "timestamp_ns": BASE_NS + 5 * S,
            "chan_id_in": C,
            "chan_id_out": A,
            "amt_in_msat": 100_050_000,
            "amt_out_msat": 100_000_000,
        },
        {"op": "wait_subscribers", "count": 1},
    ]
    liq = ("TEMPORARY_CHANNEL_FAILURE", "INSUFFICIENT_BALANCE")
    fee = ("FEE_INSUFFICIENT", "NO_DETAIL")
    events = []
    htlc = 0
    for burst in range(2):  # retry bursts on A: 5 tries 20 s apart
        for k in range(5):
            htlc += 1
            amt = 300_000_000 * sim.scale
            events.append(_fail(htlc, 200 * burst + 20 * k, A, amt, 100_000 + 7_000 * k, *liq))
    for k in range(4):
        htlc += 1
        amt = 100_000_000 * (4 - sim.scale)  # alpha loses more on B, beta on A
        events.append(_fail(htlc, 30 + 70 * k, B, amt, 60_000 + 1_000 * k, *fee))
    events.sort(key=lambda e: e["timestamp_ns"])
    return setup + events, len(events)


def _record(sim: Sim, tmp: Path, db: Path) -> None:
    """Run the node's script through its own daemon into ``db`` until all of it is stored."""
    script, n_events = _script(sim)
    args = ["--seed", str(sim.seed), "--alias", sim.alias]
    with SimNode(tmp / f"lnd-{sim.name}", script=script, args=args) as node, Daemon(node, db) as d:
        d.wait_for(
            lambda c: (
                c.execute(
                    "SELECT (SELECT count(*) FROM htlc_events WHERE node_id = n.id),"
                    " (SELECT count(*) FROM forwards WHERE node_id = n.id),"
                    " (SELECT count(DISTINCT chan_id) FROM channel_samples WHERE node_id = n.id)"
                    " FROM nodes AS n WHERE n.pubkey = ?",
                    (sim.pubkey,),
                ).fetchone()
                == (n_events, 1, 3)
            ),
            timeout=90,
        )
        assert d.stop() == 0


class Fleet(NamedTuple):
    shared: Path  # both nodes
    alone: dict[str, Path]  # each node in a store of its own


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    tmp = tmp_path_factory.mktemp("fleet")
    alone = {}
    for sim in (ALPHA, BETA):
        alone[sim.name] = tmp / f"{sim.name}.db"
        _record(sim, tmp / sim.name, alone[sim.name])
        _record(sim, tmp / "shared", tmp / "shared.db")
    return Fleet(tmp / "shared.db", alone)


def ctl(db: Path, *args: str) -> tuple[int, str, str]:
    return run_lnflowctl("--db", str(db), *args, timeout=60)


def ctl_json(db: Path, *args: str) -> Any:
    code, out, err = ctl(db, *args, "--json")
    assert code == 0, err
    return json.loads(out)


# about the run's clock (the stream sessions of each run end at other times)
CLOCK_KEYS = ("generated_at", "since", "until", "observed_hours")


def _timeless(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in CLOCK_KEYS}
    out["gaps"] = len(doc["gaps"])  # one per session ended: the node's own
    return out


@pytest.mark.parametrize("sim", [ALPHA, BETA], ids=["alpha", "beta"])
def test_each_node_of_a_shared_store_analyzes_as_in_a_store_of_its_own(
    fleet: Fleet, sim: Sim
) -> None:
    shared = ctl_json(fleet.shared, "--node", sim.pubkey, "analyze", "--hours", "1")
    alone = ctl_json(fleet.alone[sim.name], "analyze", "--hours", "1")
    assert alone["opportunities"], "the scenario reports channels"
    assert _timeless(shared) == _timeless(alone)
    assert len(shared["gaps"]) == 1  # its own stream session only


def test_a_node_is_named_by_alias_or_by_pubkey(fleet: Fleet) -> None:
    by_alias = ctl_json(fleet.shared, "--node", "alpha", "analyze", "--hours", "1")
    by_key = ctl_json(fleet.shared, "analyze", "--hours", "1", "--node", ALPHA.pubkey.upper())
    assert _timeless(by_alias) == _timeless(by_key)
    beta = ctl_json(fleet.shared, "--node", HOSTILE, "analyze", "--hours", "1")
    assert _timeless(beta) != _timeless(by_alias)
    # a store of one node needs no --node, and takes its name
    one = ctl_json(fleet.alone["alpha"], "--node", "alpha", "analyze", "--hours", "1")
    assert _timeless(one) == _timeless(by_alias)


@pytest.mark.parametrize("command", [["analyze"], ["status"], ["trend", str(A)], ["alerts"]])
def test_several_nodes_and_none_named_is_one_line_listing_them(
    fleet: Fleet, command: list[str]
) -> None:
    code, out, err = ctl(fleet.shared, *command)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--node" in err and ALPHA.pubkey in err and BETA.pubkey in err
    assert "\x1b" not in err  # the hostile alias, escaped


def test_an_unknown_node_is_one_line_naming_lnflowctl_nodes(fleet: Fleet) -> None:
    code, out, err = ctl(fleet.shared, "--node", "gamma", "opportunities")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "gamma" in err and "lnflowctl nodes" in err
    code, _, err = ctl(fleet.shared, "--node", "alpha", "opportunities", "--all-nodes")
    assert code == 2 and err.count("\n") == 1


def test_nodes_lists_each_node_with_its_daemon_and_stream(fleet: Fleet) -> None:
    doc = ctl_json(fleet.shared, "nodes")
    assert [(n["pubkey"], n["alias"]) for n in doc] == [
        (ALPHA.pubkey, ALPHA.alias),
        (BETA.pubkey, BETA.alias),
    ]
    for n in doc:
        assert n["network"] == "regtest"
        assert n["daemon"]["running"] is False and n["daemon"]["stopped_at"] is not None
        assert n["stream"]["connected"] is False
        assert n["stream"]["sessions"] == 1  # its own, not the other node's
        assert n["stream"]["gaps"] == 1
    code, out, err = ctl(fleet.shared, "nodes")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["Node", "Pubkey", "Network", "Daemon", "Stream"]
    assert len(lines) == 4 and "\x1b" not in out
    assert ALPHA.pubkey in lines[2] and BETA.pubkey in lines[3]
    assert "stopped" in lines[2] and "stopped" in lines[3]


def test_nodes_and_status_of_a_node_read_without_sqlalchemy(fleet: Fleet) -> None:
    """The glances at the store stay quick: no SQLAlchemy, no analysis imported."""
    script = f"""
import contextlib, io, sys
from lnflow.cli.ctl import main
for argv in (["nodes"], ["--node", "alpha", "status"], ["status", "--node", {BETA.pubkey!r}]):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--db", {str(fleet.shared)!r}, *argv]) == 0, argv
    assert "sqlalchemy" not in sys.modules and "lnflow.analysis" not in sys.modules, argv
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr


def test_status_of_one_node_counts_its_rows(fleet: Fleet) -> None:
    for sim in (ALPHA, BETA):
        shared = ctl_json(fleet.shared, "--node", sim.alias, "status")
        alone = ctl_json(fleet.alone[sim.name], "status")
        assert shared["lnd"]["pubkey"] == sim.pubkey
        assert shared["counts"] == alone["counts"]
        assert shared["stream"]["sessions"] == alone["stream"]["sessions"] == 1


def _no_ids(csv_text: str) -> list[str]:
    return [r.split(",", 1)[1].rsplit(",", 1)[0] for r in csv_text.splitlines()[1:]]


def test_export_of_one_node_holds_its_rows(fleet: Fleet) -> None:
    for sim in (ALPHA, BETA):
        code, out, err = ctl(fleet.shared, "--node", sim.pubkey, "export", "--what", "attempts")
        assert code == 0, err
        code, own, err = ctl(fleet.alone[sim.name], "export", "--what", "attempts")
        assert code == 0, err
        # the same attempts, their row and cluster ids aside (the shared store numbers
        # both nodes' rows and clusters)
        assert out.splitlines()[0].split(",")[-1] == "cluster_id"
        assert _no_ids(out) == _no_ids(own) and len(_no_ids(own)) == 14


def _rank_key(o: dict[str, Any], node: int) -> tuple[int, int, int, int]:
    return (-o["urgency_score"], -o["missed_msat"], node, o["rank"])


def test_all_nodes_ranks_the_fleets_opportunities_together(fleet: Fleet) -> None:
    doc = ctl_json(fleet.shared, "analyze", "--hours", "1", "--all-nodes")
    alone = {
        s.pubkey: ctl_json(fleet.alone[s.name], "analyze", "--hours", "1") for s in (ALPHA, BETA)
    }
    assert [(n["pubkey"], n["alias"]) for n in doc["nodes"]] == [
        (ALPHA.pubkey, ALPHA.alias),
        (BETA.pubkey, BETA.alias),
    ]
    for n in doc["nodes"]:
        own = _timeless(alone[n["pubkey"]])
        del own["opportunities"]
        assert _timeless(n["report"]) == own
    expected = sorted(
        (
            {"node_pubkey": key, **o}
            for i, key in enumerate((ALPHA.pubkey, BETA.pubkey))
            for o in alone[key]["opportunities"]
        ),
        key=lambda o: _rank_key(o, 0 if o["node_pubkey"] == ALPHA.pubkey else 1),
    )
    got = doc["opportunities"]
    assert [o["fleet_rank"] for o in got] == list(range(1, len(expected) + 1))
    assert {o["node_alias"] for o in got} == {ALPHA.alias, BETA.alias}
    assert [{k: v for k, v in o.items() if k not in ("fleet_rank", "node_alias")} for o in got] == (
        expected
    )
    # both nodes appear among the first ranks: the ranking interleaves them
    assert {o["node_pubkey"] for o in got[:2]} == {ALPHA.pubkey, BETA.pubkey}

    code, out, err = ctl(fleet.shared, "analyze", "--hours", "1", "--all-nodes")
    assert code == 0, err
    assert "\x1b" not in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Rank"))
    assert lines[header].split()[:4] == ["Rank", "Node", "Channel", "Peer"]
    rows = [line for line in lines[header + 2 :] if line[:1].isdigit()]
    assert len(rows) == len(expected)
    assert rows[0].split()[1] == (
        "alpha" if expected[0]["node_pubkey"] == ALPHA.pubkey else "beta\\x1b[31m\\nnode"
    )


def test_opportunities_all_nodes_shows_each_nodes_latest_snapshot(fleet: Fleet) -> None:
    doc = ctl_json(fleet.shared, "opportunities", "--all-nodes")
    assert [n["pubkey"] for n in doc["nodes"]] == [ALPHA.pubkey, BETA.pubkey]
    for n in doc["nodes"]:
        code, out, err = ctl(fleet.shared, "--node", n["pubkey"], "opportunities", "--json")
        assert code == 0, err
        own = json.loads(out)
        if own is None:
            assert n["report"] is None
            continue
        del own["opportunities"]
        assert n["report"] == own


def test_the_shared_store_keeps_one_daemon_row_per_node(fleet: Fleet) -> None:
    rows = query(
        fleet.shared,
        "SELECT n.pubkey, count(*) FROM daemon_state d JOIN nodes n ON n.id = d.node_id"
        " GROUP BY n.pubkey ORDER BY n.id",
    )
    assert rows == [(ALPHA.pubkey, 1), (BETA.pubkey, 1)]
    assert query(fleet.shared, "SELECT count(*) FROM daemon_state WHERE node_id IS NULL") == [(0,)]
