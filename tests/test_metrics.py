"""The /metrics endpoint end to end: the real lnflowd against the simulated node, scraped
over HTTP, every metric family compared with the store's own figures; a restart
continues the counters from the store; promtool accepts the scrape and the contrib
rules; a real Prometheus scrapes lnflowd and answers for a lnflow series."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, query
from promtools import Prometheus, free_port, need, samples, scrape
from simnode import SimNode

from lnflow.analysis.classify import FailureClass
from lnflow.attempts import Outcome
from lnflow.config import load_settings
from lnflow.domain import EventKind, EventType, from_signed64
from lnflow.errors import ConfigError
from lnflow.store.engines import DbUrl, StoreLocation
from lnflow.store.schema import metadata

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "contrib" / "prometheus" / "lnflow.rules.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "lnflow.json"
RULE_TESTS = ROOT / "tests" / "prometheus" / "lnflow.rules.test.yml"
NS = 1_000_000_000
Figures = dict[str, dict[tuple[tuple[str, str], ...], float]]

# Families compared with the store exactly (counters and gauges).
COMPARED = (
    "lnflow_htlc_events_total",
    "lnflow_forward_attempts_total",
    "lnflow_local_failures_total",
    "lnflow_failure_clusters_total",
    "lnflow_missed_fees_msat_total",
    "lnflow_missed_fees_dedup_msat_total",
    "lnflow_forwards_total",
    "lnflow_fees_earned_msat_total",
    "lnflow_stream_sessions_total",
    "lnflow_stream_connected",
    "lnflow_store_rows",
    "lnflow_opportunity_urgency_score",
    "lnflow_opportunity_missed_msat",
    "lnflow_opportunity_potential_monthly_sats",
    "lnflow_channel_local_balance_ratio",
    "lnflow_channel_active",
    "lnflow_policy_changes_total",
)
# Counters that a restart must continue (not restart from zero).
CONTINUED = COMPARED[:8]


def _type_label(number: int) -> str:
    try:
        return EventType(number).name.lower()
    except ValueError:
        return str(number)


def store_figures(db: StoreLocation, *, connected: bool) -> Figures:
    """What the metrics must show, computed from the store with plain SQL."""
    fig: Figures = defaultdict(dict)
    ours = {from_signed64(c) for (c,) in query(db, "SELECT chan_id FROM channels")}

    def chan(signed: int) -> str:
        scid = from_signed64(signed)
        return str(scid) if scid in ours else "other"

    for kind, etype, n in query(
        db, "SELECT kind, event_type, count(*) FROM htlc_events GROUP BY kind, event_type"
    ):
        labels = (("event", EventKind(kind).label), ("event_type", _type_label(etype)))
        fig["lnflow_htlc_events_total"][labels] = n
    by_outcome = dict(query(db, "SELECT outcome, count(*) FROM forward_attempts GROUP BY 1"))
    for outcome in Outcome:
        if outcome is not Outcome.PENDING:
            fig["lnflow_forward_attempts_total"][(("outcome", outcome.label),)] = by_outcome.get(
                int(outcome), 0
            )
    failures: dict[tuple[tuple[str, str], ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for out, cls, n, c, raw, dedup in query(
        db,
        "SELECT outgoing_channel_id, failure_class, sum(failures), sum(clusters),"
        " sum(missed_raw_msat), sum(missed_dedup_msat) FROM failure_rollups_hourly"
        " GROUP BY 1, 2",
    ):
        labels = (("chan_out", chan(out)), ("failure_class", FailureClass(cls).label))
        for i, v in enumerate((n, c, raw, dedup)):
            failures[labels][i] += v
    for i, name in enumerate(
        (
            "lnflow_local_failures_total",
            "lnflow_failure_clusters_total",
            "lnflow_missed_fees_msat_total",
            "lnflow_missed_fees_dedup_msat_total",
        )
    ):
        fig[name] = {labels: values[i] for labels, values in failures.items()}
    for out, n, fee in query(
        db, "SELECT chan_id_out, count(*), sum(fee_msat) FROM forwards GROUP BY 1"
    ):
        labels = (("chan_out", chan(out)),)
        fwd = fig["lnflow_forwards_total"]
        fees = fig["lnflow_fees_earned_msat_total"]
        fwd[labels] = fwd.get(labels, 0) + n
        fees[labels] = fees.get(labels, 0) + fee
    fig["lnflow_stream_sessions_total"][()] = query(db, "SELECT count(*) FROM stream_sessions")[0][
        0
    ]
    fig["lnflow_stream_connected"][()] = 1.0 if connected else 0.0
    for table in metadata.tables:
        fig["lnflow_store_rows"][(("table", table),)] = query(db, f"SELECT count(*) FROM {table}")[
            0
        ][0]
    for chan_id, peer, action, urgency, missed, monthly in query(
        db,
        "SELECT channel_id, peer_pubkey, recommended_action, urgency_score, missed_msat,"
        " potential_monthly_msat FROM opportunities"
        " WHERE run_id = (SELECT max(id) FROM analysis_runs)",
    ):
        labels = tuple(
            sorted({"chan_id": str(from_signed64(chan_id)), "peer": peer, "action": action}.items())
        )
        fig["lnflow_opportunity_urgency_score"][labels] = urgency
        fig["lnflow_opportunity_missed_msat"][labels] = missed
        fig["lnflow_opportunity_potential_monthly_sats"][labels] = monthly / 1000
    for chan_id, peer, local, remote, active in query(
        db,
        "SELECT s.chan_id, c.remote_pubkey, s.local_balance_sat, s.remote_balance_sat, s.active"
        " FROM channel_samples s JOIN channels c ON c.chan_id = s.chan_id"
        " WHERE c.closed_ns IS NULL AND s.ts_ns ="
        " (SELECT max(ts_ns) FROM channel_samples x WHERE x.chan_id = s.chan_id)",
    ):
        labels = (("chan_id", str(from_signed64(chan_id))), ("peer", peer))
        fig["lnflow_channel_local_balance_ratio"][labels] = local / (local + remote)
        fig["lnflow_channel_active"][labels] = 1.0 if active else 0.0
    results = dict(query(db, "SELECT result, count(*) FROM policy_changes GROUP BY result"))
    for result in ("planned", "applied", "failed", "rolled_back", "reverted"):
        fig["lnflow_policy_changes_total"][(("result", result),)] = results.get(result, 0)
    return fig


def differences(got: Figures, want: Figures) -> dict[str, Any]:
    return {
        name: {"metrics": got.get(name, {}), "store": want.get(name, {})}
        for name in COMPARED
        if got.get(name, {}) != want.get(name, {})
    }


def settle(
    port: int, db: StoreLocation, *, connected: bool, timeout: float = 30
) -> tuple[str, Figures]:
    """Scrape until the metrics equal the store (the refresh job runs every 0.5 s, the
    analysis every 10 s); fails with the differences otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = scrape(port)
        except OSError as exc:  # the daemon is starting
            text, diff = "", {"scrape": str(exc)}
        else:
            got = samples(text)
            diff = differences(got, store_figures(db, connected=connected))
        if not diff:
            return text, got
        if time.monotonic() > deadline:
            raise AssertionError(json.dumps(diff, indent=1, default=str)[:6000])
        time.sleep(0.3)


def daemon_env(port: int) -> dict[str, str]:
    return {
        "LNFLOW_METRICS__LISTEN": f"127.0.0.1:{port}",
        "LNFLOW_METRICS__REFRESH_S": "0.5",
        "LNFLOW_METRICS__STORE_REFRESH_S": "0.5",
        "LNFLOW_ANALYSIS__INTERVAL_S": "10",
        # report channels from the first failure, so the snapshot gauges have rows
        "LNFLOW_ANALYSIS__MIN_FAILURE_COUNT": "1",
        "LNFLOW_ANALYSIS__MIN_MISSED_SATS": "0",
        "LNFLOW_LEDGER__SYNC_INTERVAL_S": "5",
    }


def count(conn: Any, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0])


def names_used(text: str) -> set[str]:
    """lnflow_* metric names an expression file refers to (histogram series by family)."""
    found = set(re.findall(r"\blnflow_[a-z_]+", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in found}


@pytest.mark.timeout(240)
@pytest.mark.e2e
@pytest.mark.engines("sqlite", "postgresql")
def test_every_family_equals_the_store_and_survives_a_restart(
    tmp_path: Path, store_at: Callable[[str], StoreLocation]
) -> None:
    port = free_port()
    db = store_at("lnflow.db")
    sim = SimNode(tmp_path / "lnd", args=("--rate", "300", "--seed", "11", "--history", "40"))
    with sim:
        d = Daemon(sim, db, env=daemon_env(port)).start()
        try:
            d.wait_for(
                lambda c: (
                    count(c, "SELECT count(*) FROM analysis_runs") >= 1
                    and count(c, "SELECT count(*) FROM failure_rollups_hourly") > 0
                    and count(c, "SELECT count(*) FROM htlc_events") > 300
                    and count(c, "SELECT count(*) FROM forwards") > 40
                ),
                timeout=90,
            )
            live = samples(scrape(port))
            assert live["lnflow_stream_connected"][()] == 1.0
            sim.stop()  # the store stops changing; the metrics must catch up with it
            d.wait_for(
                lambda c: (
                    count(c, "SELECT count(*) FROM stream_sessions WHERE ended_ns IS NULL") == 0
                )
            )
            before_scrape = time.time_ns()
            text, got = settle(port, db, connected=False)
            after_scrape = time.time_ns()
        finally:
            d.stop()

    # the families are not empty: the simulated traffic has failures of several classes
    assert len(got["lnflow_local_failures_total"]) >= 2
    assert got["lnflow_opportunity_urgency_score"]
    assert sum(got["lnflow_fees_earned_msat_total"].values()) > 0
    # histograms: every analysis run of this daemon, every batch it wrote
    runs = query(db, "SELECT count(*), sum(duration_ms) FROM analysis_runs")[0]
    assert got["lnflow_analysis_duration_seconds_count"][()] == runs[0]
    assert got["lnflow_analysis_duration_seconds_sum"][()] == pytest.approx(runs[1] / 1000)
    assert got["lnflow_store_batch_write_duration_seconds_count"][()] > 0
    # age of the newest event, as lnd stamped it, at the moment of the scrape
    newest_ns = query(db, "SELECT max(timestamp_ns) FROM htlc_events")[0][0]
    age = got["lnflow_htlc_last_event_age_seconds"][()]
    assert (before_scrape - newest_ns) / NS <= age <= (after_scrape - newest_ns) / NS
    assert got["lnflow_ingest_lag_seconds"][()] >= 0
    assert got["lnflow_store_size_bytes"][()] > 0
    if not isinstance(db, DbUrl):
        assert sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    assert got["lnflow_store_budget_bytes"][()] == 0
    (lnd_version,) = {v for (v,) in query(db, "SELECT lnd_version FROM stream_sessions")}
    ((labels, one),) = got["lnflow_build_info"].items()
    assert one == 1 and dict(labels)["lnd_version"] == lnd_version

    # the contrib rules and dashboard only use families the endpoint serves
    served = {re.sub(r"_(bucket|sum|count|total|created|info)$", "", n) for n in got} | set(got)
    for path in (RULES, DASHBOARD):
        unknown = names_used(path.read_text()) - served
        assert not unknown, f"{path.name} uses {unknown}"

    # restart (lnd back, no traffic): the counters continue from the store's totals
    sim2 = SimNode(tmp_path / "lnd", port=sim.port, args=("--rate", "0", "--seed", "11"))
    with sim2, Daemon(sim2, db, env=daemon_env(port)):
        _, again = settle(port, db, connected=True)
    for name in CONTINUED:
        if name != "lnflow_forward_attempts_total":  # pending ones were marked unresolved
            assert again[name] == got[name], name
    assert sum(again["lnflow_forward_attempts_total"].values()) >= sum(
        got["lnflow_forward_attempts_total"].values()
    )

    # promtool lints the real scrape (last: skipped only where promtool is missing)
    promtool = need("promtool")
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.e2e
def test_contrib_rules_pass_promtool() -> None:
    promtool = need("promtool")
    out = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 5 rules found" in out.stdout


@pytest.mark.e2e
def test_each_alert_fires_on_its_condition_only() -> None:
    """promtool's rule unit tests: every alert fires on the series that should fire it
    and stays quiet on its near misses (urgency 79, no budget, inactive channels, ...)."""
    promtool = need("promtool")
    out = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_takes_its_data_source_from_a_variable() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for p in board["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:9109", ("127.0.0.1", 9109)),
        ("[::1]:9109", ("::1", 9109)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("", None),
        ("  ", None),
    ],
    ids=["ipv4", "ipv6", "any", "off", "blank-off"],
)
def test_listen_address_parses(text: str, parsed: tuple[str, int] | None) -> None:
    settings = load_settings(overrides={"metrics": {"listen": text}})
    assert settings.metrics.address == parsed


@pytest.mark.parametrize("text", ["9109", "localhost", ":9109", "host:0", "host:70000", "h:x"])
def test_bad_listen_address_is_refused_with_the_settings(text: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.listen.*host:port"):
        load_settings(overrides={"metrics": {"listen": text}})


@pytest.mark.timeout(180)
@pytest.mark.e2e
def test_a_real_prometheus_scrapes_lnflowd(tmp_path: Path) -> None:
    need("prometheus")
    port = free_port()
    sim = SimNode(tmp_path / "lnd", args=("--rate", "100", "--seed", "5"))
    with (
        sim,
        Daemon(sim, tmp_path / "lnflow.db", env=daemon_env(port)) as d,
        Prometheus(tmp_path / "prom", [f"127.0.0.1:{port}"]) as prom,
    ):
        d.wait_for(lambda c: count(c, "SELECT count(*) FROM htlc_events") > 0)
        up = prom.wait_for('up{job="lnflow"} == 1')
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{port}"
        found = prom.wait_for('sum(lnflow_htlc_events_total{job="lnflow"}) > 0')
        assert float(found[0]["value"][1]) > 0
        built = prom.wait_for("lnflow_build_info")
        assert built[0]["metric"]["version"]


@pytest.mark.timeout(120)
@pytest.mark.e2e
def test_a_taken_port_leaves_recording_running(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sim = SimNode(tmp_path / "lnd", args=("--rate", "50", "--seed", "3"))
        with sim, Daemon(sim, tmp_path / "lnflow.db", env=daemon_env(port)) as d:
            d.wait_for(lambda c: count(c, "SELECT count(*) FROM htlc_events") > 0)
            (problem,) = d.events("metrics_unavailable")
            assert problem["listen"] == f"127.0.0.1:{port}"
