"""lnflowctl's analytics commands on real stores of both engines, and the JSON contract."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import query

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import (
    Action,
    AnalysisReport,
    ClassStats,
    Confidence,
    Gap,
    Opportunity,
    RebalanceMove,
)
from lnflow.cli import ctl
from lnflow.cli.commands import ctl_analysis_settings, parse_since
from lnflow.cli.jsondoc import ReportFileError, report_from_doc, report_to_doc
from lnflow.domain import (
    ChannelInfo,
    ChannelSample,
    EventKind,
    EventType,
    FailureDetail,
    ForwardRecord,
    HtlcEvent,
    NodeInfo,
    RoutingPolicy,
    WireFailure,
    format_scid,
)
from lnflow.kinds import Outcome
from lnflow.store import db
from lnflow.store.db import open_engine
from lnflow.store.engines import DbUrl, StoreLocation
from lnflow.store.ingest import Ingestor
from lnflow.store.writer import StoreWriter

S = 1_000_000_000
NODE = NodeInfo("02" + "ab" * 32, "alice", "0.18.3-beta commit=v0.18.3-beta", "regtest", 1, True)
CHAN_A = (800_000 << 40) | (12 << 16)  # liquidity failures: rebalance_outbound
BIG = (16_000_123 << 40) | (7 << 16) | 1  # an alias SCID >= 2**63: fee failures
IN1 = (800_100 << 40) | (1 << 16)
IN2 = (800_200 << 40) | (2 << 16) | 1
PEER_A = "03" + "a1" * 32
PEER_BIG = "02" + "b2" * 32
COMMANDS = (
    "status",
    "nodes",
    "opportunities",
    "analyze",
    "monitor",
    "report",
    "trend",
    "whatif",
    "export",
    "alerts",
    "policy",
)
OPPORTUNITY_KEYS = [
    "rank",
    "channel_id",
    "scid",
    "peer_pubkey",
    "peer_alias",
    "failures",
    "clusters",
    "successes",
    "failure_rate",
    "missed_msat",
    "missed_raw_msat",
    "missed_sats",
    "potential_monthly_sats",
    "urgency_score",
    "confidence",
    "recommended_action",
    "reason",
    "estimated",
    "by_class",
    "capacity_sat",
    "local_balance_sat",
    "outbound_fee_ppm",
]
TOP_KEYS = [
    "window_hours",
    "generated_at",
    "since",
    "until",
    "opportunities",
    "rebalance_plan",
    "gaps",
    "node",
    "observed_hours",
]


# --------------------------------------------------------------------------- a store


def _policy(ppm: int, max_htlc_msat: int) -> RoutingPolicy:
    return RoutingPolicy(1000, ppm, 80, 1000, max_htlc_msat, False, 0)


def _sample(chan: int, peer: str, alias: str, local: int, ppm: int = 100) -> ChannelSample:
    capacity = 2_000_000
    info = ChannelInfo(
        chan_id=chan,
        remote_pubkey=peer,
        channel_point=f"{chan:064x}:0",
        capacity_sat=capacity,
        local_balance_sat=local,
        remote_balance_sat=capacity - local,
        local_reserve_sat=20_000,
        remote_reserve_sat=20_000,
        active=True,
        private=False,
        peer_alias=alias,
        uptime_s=1000,
        lifetime_s=1000,
    )
    policy = _policy(ppm, 1_900_000_000)
    return ChannelSample(info=info, ours=policy, peer=policy, peer_alias=alias)


def _link_fail(
    htlc: int, ts_ns: int, out: int, inc: int, amt: int, fee: int, wire: int, detail: int
) -> HtlcEvent:
    return HtlcEvent(
        timestamp_ns=ts_ns,
        kind=EventKind.LINK_FAIL,
        event_type=int(EventType.FORWARD),
        incoming_channel_id=inc,
        incoming_htlc_id=htlc,
        outgoing_channel_id=out,
        outgoing_htlc_id=0,
        incoming_amt_msat=amt + fee,
        outgoing_amt_msat=amt,
        incoming_timelock=900,
        outgoing_timelock=860,
        wire_failure=int(wire),
        failure_detail=int(detail),
    )


@dataclasses.dataclass
class Store:
    path: StoreLocation
    node_id: int
    now_ns: int

    @property
    def db(self) -> str:
        """The store as ``--db`` takes it."""
        return self.path.secret if isinstance(self.path, DbUrl) else str(self.path)

    def write_snapshot(self, report: AnalysisReport, *, table: bool = False) -> None:
        """Save ``report`` as a run; ``table``: with its rendered table, as lnflowd does."""
        from lnflow.cli.render import table_to_save
        from lnflow.store.snapshots import SnapshotWriter

        engine = open_engine(self.path)
        try:
            saved = table_to_save(report) if table else None
            SnapshotWriter(engine).write_run(self.node_id, report, 12, saved)
        finally:
            engine.dispose()

    def execute(self, sql: str, **params: object) -> None:
        from sqlalchemy import text

        engine = open_engine(self.path)
        try:
            with engine.begin() as conn:
                conn.execute(text(sql), params)
        finally:
            engine.dispose()


def build_store(path: StoreLocation, *, gap: bool = True, running: bool = True) -> Store:
    """Two channels with failures 20 minutes ago, forwards, and (optionally) a stream gap."""
    now = time.time_ns()
    t0 = now - 20 * 60 * S
    engine = open_engine(path)
    writer = StoreWriter(engine)
    node_id = writer.upsert_node(NODE, t0 - 3600 * S)
    writer.daemon_started(now - 3600 * S, heartbeat_interval_s=5)
    writer.daemon_state(
        now if running else now - 3600 * S,
        node_id=node_id,
        lnd_alias=NODE.alias,
        lnd_version=NODE.version,
        lnd_network=NODE.network,
        lnd_state="connected",
        stream_state="connected",
    )
    samples = [
        _sample(CHAN_A, PEER_A, "alice-peer", 50_000),
        _sample(BIG, PEER_BIG, "", 1_000_000, ppm=2000),
        _sample(IN1, "03" + "c3" * 32, "carol", 1_900_000),
        _sample(IN2, "03" + "d4" * 32, "dave", 1_000_000),
    ]
    writer.record_channel_samples(node_id, t0 - 1800 * S, samples)
    if gap:
        first = writer.open_session(node_id, t0 - 600 * S, "0.18.3-beta")
        writer.close_session(first, t0 - 300 * S, "lnd unreachable")
    session = writer.open_session(node_id, t0 - 240 * S, "0.18.3-beta")
    ingestor = Ingestor(
        engine,
        node_id,
        attempt_timeout_ns=600 * S,
        attempt_linger_ns=10 * S,
        dedup_window_ns=60 * S,
        cluster_max_span_ns=600 * S,
    )
    liquidity = (WireFailure.TEMPORARY_CHANNEL_FAILURE, FailureDetail.INSUFFICIENT_BALANCE)
    fee = (WireFailure.FEE_INSUFFICIENT, FailureDetail.NO_DETAIL)
    events = []
    for i in range(5):  # 5 clusters on CHAN_A: 100 sats each
        inc = IN1 if i % 2 else IN2
        events.append(
            _link_fail(i, t0 + i * 120 * S, CHAN_A, inc, 400_000_000 + i, 100_000, *liquidity)
        )
    for i in range(4):  # 4 clusters on BIG: 150 sats each, at 1000 ppm offered
        inc = IN1 if i % 2 else IN2
        events.append(
            _link_fail(10 + i, t0 + i * 120 * S + S, BIG, inc, 150_000_000, 150_000, *fee)
        )
    ingestor.ingest(session, events, t0 + 600 * S)
    writer.insert_forwards(
        node_id,
        [
            ForwardRecord(t0 + k * S, IN1, CHAN_A, 1_000_100 + k, 1_000_000, 100 + k)
            for k in range(2)
        ],
    )
    engine.dispose()
    return Store(path, node_id, now)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Store]:
    """One store the module's read-only tests share, on each engine (on PostgreSQL a
    database of the session's cluster, which the store's first opening migrates)."""
    if request.param == "sqlite":
        yield build_store(tmp_path_factory.mktemp("ctl") / "lnflow.db")
        return
    server = request.getfixturevalue("pg_server")
    url = DbUrl(server.create_db())
    yield build_store(url)
    server.drop_db(url.secret)


both_engines = pytest.mark.engines("sqlite", "postgresql")
StoreAt = Callable[[str], StoreLocation]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = ctl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- JSON contract


def _report(**overrides: Any) -> AnalysisReport:
    opp = Opportunity(
        rank=1,
        channel_id=(1 << 64) - 3,  # above 2^63: must stay exact
        peer_pubkey=PEER_BIG,
        peer_alias="",
        failures=12,
        clusters=7,
        successes=3,
        failure_rate=0.8,
        missed_msat=1_234_567,
        missed_raw_msat=2_000_001,
        potential_monthly_msat=37_037_010,
        urgency_score=71,
        confidence=Confidence.MEDIUM,
        recommended_action=Action.LOWER_FEES,
        reason="80% of missed fees were fee failures; lower to 700 ppm",
        estimated=False,
        by_class={
            FailureClass.FEE: ClassStats(10, 1_600_000),
            FailureClass.LIQUIDITY: ClassStats(2, 400_001),
        },
        capacity_sat=5_000_000,
        local_balance_sat=2_500_000,
        outbound_fee_ppm=1000,
        suggested_fee_ppm=700,
    )
    inbound = dataclasses.replace(
        opp,
        rank=2,
        channel_id=CHAN_A,
        peer_alias="alice-peer",
        failures=0,
        clusters=0,
        failure_rate=0.0,
        confidence=Confidence.LOW,
        recommended_action=Action.REBALANCE_INBOUND,
        estimated=True,
        by_class={},
        outbound_fee_ppm=None,
        suggested_fee_ppm=None,
        suggested_amount_sat=400_000,
    )
    base = AnalysisReport(
        since_ns=1_764_000_000 * S,
        until_ns=1_764_086_400 * S,
        hours=24,
        generated_ns=1_764_086_401 * S,
        opportunities=(opp, inbound),
        rebalance_plan=(RebalanceMove(CHAN_A, (IN1, (1 << 64) - 1), 250_000, 640),),
        gaps=(Gap(1_764_010_000 * S, 1_764_010_060 * S), Gap(1_764_080_000 * S, None)),
        node_failures=40,
        node_missed_msat=3_000_000,
        node_missed_raw_msat=3_250_000,
    )
    return dataclasses.replace(base, **overrides)


def test_json_document_round_trips_exactly() -> None:
    report = _report()
    doc = report_to_doc(report)
    text = json.dumps(doc)
    assert report_from_doc(json.loads(text)) == report
    assert report_to_doc(report_from_doc(json.loads(text))) == doc


def test_json_document_keys_in_a_stable_order() -> None:
    doc = report_to_doc(_report())
    assert list(doc) == TOP_KEYS
    fee, inbound = doc["opportunities"]
    assert list(fee) == [*OPPORTUNITY_KEYS, "suggested_fee_ppm"]
    assert list(inbound) == [*OPPORTUNITY_KEYS, "suggested_amount_sat"]  # no null suggestions
    assert list(fee["by_class"]) == [cls.label for cls in FailureClass]
    assert fee["by_class"]["fee"] == {"failures": 10, "missed_msat": 1_600_000}
    assert fee["by_class"]["policy"] == {"failures": 0, "missed_msat": 0}
    assert list(doc["rebalance_plan"][0]) == [
        "target_channel_id",
        "target_scid",
        "source_channel_ids",
        "source_scids",
        "amount_sat",
        "max_cost_ppm",
    ]
    assert doc["gaps"] == [
        {"from": "2025-11-24T18:46:40Z", "to": "2025-11-24T18:47:40Z"},
        {"from": "2025-11-25T14:13:20Z", "to": None},
    ]
    assert doc["node"] == {
        "failures": 40,
        "missed_msat": 3_000_000,
        "missed_raw_msat": 3_250_000,
        "unknown_amount": 0,
        "rejected": 0,
    }
    assert doc["generated_at"] == "2025-11-25T16:00:01Z"


def test_json_numbers_channel_ids_and_sats() -> None:
    doc = report_to_doc(_report())
    text = json.dumps(doc)
    assert '"channel_id": 18446744073709551613' in text  # exact, not a float
    fee = json.loads(text)["opportunities"][0]
    assert fee["scid"] == format_scid((1 << 64) - 3)
    assert fee["missed_sats"] == 1234.567
    assert fee["potential_monthly_sats"] == 37037.01
    assert fee["recommended_action"] == "lower_fees" and fee["confidence"] == "medium"
    plan = doc["rebalance_plan"][0]
    assert plan["source_channel_ids"] == [IN1, (1 << 64) - 1]
    assert plan["source_scids"] == [format_scid(IN1), format_scid((1 << 64) - 1)]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.pop("node"), "node"),
        (lambda d: d.update(window_hours="24"), "window_hours"),
        (lambda d: d.update(since="yesterday"), "since"),
        (lambda d: d["opportunities"][0].update(recommended_action="panic"), "recommended"),
        (lambda d: d["opportunities"][0].update(channel_id=1 << 64), "opportunities[0].channel"),
        (lambda d: d["opportunities"][0].update(failures=-1), "opportunities[0].failures"),
        (lambda d: d["opportunities"][1]["by_class"].pop("fee"), "by_class.fee"),
        (lambda d: d["rebalance_plan"][0].update(source_channel_ids=["x"]), "source_channel"),
        (lambda d: d["gaps"].append("soon"), "gaps[2]"),
    ],
    ids=[
        "missing",
        "string-for-int",
        "bad-time",
        "bad-action",
        "chan-too-big",
        "negative",
        "class-missing",
        "bad-source",
        "bad-gap",
    ],
)
def test_report_from_doc_names_what_is_wrong(mutate: Any, path: str) -> None:
    doc = report_to_doc(_report())
    mutate(doc)
    with pytest.raises(ReportFileError) as err:
        report_from_doc(doc, source="saved.json")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("saved.json is not an lnflow analysis report")
    assert path in message


def test_not_an_object_is_rejected() -> None:
    with pytest.raises(ReportFileError, match="expected an object"):
        report_from_doc([1, 2], source="x.json")


# --------------------------------------------------------------------------- analyze


def test_analyze_prints_the_seed_table(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--db", store.db, "analyze", "--hours", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "MISSED ROUTING OPPORTUNITIES"
    assert lines[2].startswith("window: 3 h, ")
    assert "generated" in lines[2]
    assert lines[3] == "node: 9 local failures, 1,100.00 sats missed on all channels"
    assert lines[4].startswith("WARNING: the HTLC stream was down for 60 s in 1 span")
    header = next(line for line in lines if line.startswith("Rank"))
    columns = [c.strip() for c in header.split("  ") if c.strip()]
    assert columns == [
        "Rank",
        "Channel",
        "Peer",
        "Failures",
        "Missed Revenue",
        "Potential/Month",
        "Urgency",
        "Recommendation",
    ]
    rows = {line.split()[1]: line for line in lines if line[:1].isdigit()}
    a, big = rows[format_scid(CHAN_A)], rows[format_scid(BIG)]
    assert "alice-peer" in a and "500.00 sats" in a and "Rebalance Outbound" in a
    # 500 sats in 3 h → 120,000 sats a month
    assert "120,000 sats" in a
    assert PEER_BIG[:16] + "…" in big and "600.00 sats" in big and "Lower Fees" in big
    reasons = [line for line in lines if line.lstrip().startswith("↳ ")]
    assert len(reasons) == 2


def test_analyze_json_is_the_documented_object(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--db", store.db, "analyze", "--hours", "3", "--json")
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == TOP_KEYS
    assert doc["window_hours"] == 3
    by_chan = {o["channel_id"]: o for o in doc["opportunities"]}
    assert set(by_chan) == {CHAN_A, BIG}
    big = by_chan[BIG]
    assert big["scid"] == format_scid(BIG)
    assert big["failures"] == 4 and big["clusters"] == 4
    assert big["missed_msat"] == 600_000 and big["missed_sats"] == 600.0
    assert big["recommended_action"] == "lower_fees"
    assert "suggested_fee_ppm" in big and "suggested_amount_sat" not in big
    a = by_chan[CHAN_A]
    assert a["successes"] == 2 and a["recommended_action"] == "rebalance_outbound"
    assert a["by_class"]["liquidity"] == {"failures": 5, "missed_msat": 500_000}
    assert [list(o)[: len(OPPORTUNITY_KEYS)] for o in doc["opportunities"]] == [
        OPPORTUNITY_KEYS
    ] * 2
    assert len(doc["gaps"]) == 1 and doc["gaps"][0]["to"] is not None
    # failures 2 min apart: each its own cluster, deduplicated = raw
    assert doc["node"] == {
        "failures": 9,
        "missed_msat": 1_100_000,
        "missed_raw_msat": 1_100_000,
        "unknown_amount": 0,
        "rejected": 0,
    }


def test_report_renders_a_saved_file_like_analyze(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "opportunities.json"
    code, table, _ = run(
        capsys, "--db", store.db, "analyze", "--hours", "3", "--output", str(saved)
    )
    assert code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["opportunities.json"]  # no temp file left
    doc = json.loads(saved.read_text())
    assert list(doc) == TOP_KEYS
    code, rendered, _ = run(capsys, "report", str(saved))
    assert code == 0
    assert rendered == table
    code, again, _ = run(capsys, "report", str(saved), "--json")
    assert json.loads(again) == doc


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ("{not json", "is not JSON"),
        ('{"window_hours": 1}', "is not an lnflow analysis report"),
    ],
    ids=["missing", "not-json", "not-a-report"],
)
def test_report_of_a_bad_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run(capsys, "report", str(path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("lnflowctl: error: ")
    assert expected in err


def test_thresholds_from_flags_config_and_environment(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    db = ["--db", store.db]

    def channels(*extra: str) -> set[int]:
        code, out, err = run(capsys, *db, "analyze", "--hours", "3", "--json", *extra)
        assert code == 0, err
        return {o["channel_id"] for o in json.loads(out)["opportunities"]}

    assert channels("--min-failures", "5") == {CHAN_A}
    assert channels("--min-missed-sats", "550") == {BIG}
    config = tmp_path / "lnflow.toml"
    config.write_text("[analysis]\nmin_failure_count = 5\n")
    assert channels("--config", str(config)) == {CHAN_A}
    assert channels("--config", str(config), "--min-failures", "4") == {CHAN_A, BIG}
    monkeypatch.setenv("LNFLOW_ANALYSIS__MIN_MISSED_SATS", "550")
    assert channels() == {BIG}
    config.write_text('[analysis]\nmin_failure_count = "many"\n')
    code, _, err = run(capsys, *db, "analyze", "--config", str(config))
    assert code == 2 and err.count("\n") == 1
    assert "'analysis.min_failure_count': must be a whole number from 1 to" in err


def test_settings_defaults_without_config() -> None:
    from lnflow.analysis.model import AnalysisSettings

    args = argparse.Namespace(config=None, min_failures=None, min_missed_sats=None)
    assert ctl_analysis_settings(args) == AnalysisSettings()


@both_engines
def test_analyze_of_a_store_without_a_node(
    store_at: StoreAt, capsys: pytest.CaptureFixture[str]
) -> None:
    path = store_at("empty.db")
    open_engine(path).dispose()
    where = path.secret if isinstance(path, DbUrl) else str(path)
    code, out, err = run(capsys, "--db", where, "analyze")
    assert code == 3 and out == ""
    assert "has no node yet" in err and err.count("\n") == 1


# a file that is not there: SQLite alone (tests/test_pg_store.py: an unreachable server)
def test_missing_store_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--db", str(tmp_path / "nope.db"), "opportunities")
    assert code == 3 and err.count("\n") == 1 and "no store at" in err


# --------------------------------------------------------------------------- opportunities


@both_engines
def test_opportunities_before_the_first_snapshot(
    store_at: StoreAt, capsys: pytest.CaptureFixture[str]
) -> None:
    st = build_store(store_at("s.db"))
    code, out, _ = run(capsys, "--db", st.db, "opportunities")
    assert code == 0
    assert out.strip() == (
        "lnflowctl: no analysis yet: lnflowd writes one every 10 min; "
        "run `lnflowctl analyze` for a fresh one"
    )
    code, out, err = run(capsys, "--db", st.db, "opportunities", "--json")
    assert code == 0 and json.loads(out) is None and "no analysis yet" in err


def test_opportunities_of_a_store_before_the_snapshot_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store an older lnflowd left at revision 0002 is one line, exit 3, untouched
    (SQLite alone: the file's bytes, and the driver's own words, are compared)."""
    from lnflow.store.db import upgrade

    path = tmp_path / "old.db"
    engine = open_engine(path, migrate=False)
    upgrade(engine, path, "0002")
    engine.dispose()
    before = path.read_bytes()
    code, out, err = run(capsys, "--db", str(path), "opportunities")
    assert code == 3 and out == "" and err.count("\n") == 1
    assert "no such table: analysis_runs" in err and "start lnflowd to upgrade it" in err
    assert path.read_bytes() == before


@both_engines
def test_opportunities_shows_the_latest_snapshot(
    store_at: StoreAt, capsys: pytest.CaptureFixture[str]
) -> None:
    st = build_store(store_at("s.db"))
    older = dataclasses.replace(_report(), generated_ns=st.now_ns - 1200 * S)
    latest = dataclasses.replace(_report(), generated_ns=st.now_ns - 600 * S, hours=6)
    st.write_snapshot(older)
    st.write_snapshot(latest)
    code, out, _ = run(capsys, "--db", st.db, "opportunities", "--json")
    assert code == 0
    assert json.loads(out) == report_to_doc(latest)
    code, out, _ = run(capsys, "opportunities", "--db", st.db)  # options after, too
    assert code == 0
    assert "window: 6 h" in out and "(10 min ago)" in out
    assert "WARNING: the HTLC stream was down" in out and "(still down)" in out
    assert "~1,234.57 sats" in out  # the estimated one is marked
    assert "REBALANCE PLAN" in out
    assert f"move 250,000 sats into {format_scid(CHAN_A)} from {format_scid(IN1)}" in out


@both_engines
def test_opportunities_prints_the_saved_table_as_the_run_renders(
    store_at: StoreAt, capsys: pytest.CaptureFixture[str]
) -> None:
    """lnflowd saves each run's table with it; the command prints that text, and the same
    text as it renders from the run's rows when there is none it may use."""
    st = build_store(store_at("s.db"))
    report = _report()
    hostile = dataclasses.replace(
        report.opportunities[0], peer_alias="\x1b[2Jevil\u202epeer", reason="why\x07 not"
    )
    report = dataclasses.replace(report, opportunities=(hostile, *report.opportunities[1:]))
    st.write_snapshot(dataclasses.replace(report, generated_ns=st.now_ns - 1200 * S), table=True)
    st.write_snapshot(
        dataclasses.replace(report, generated_ns=st.now_ns - 600 * S, hours=6), table=True
    )
    # only the latest run keeps its text
    assert query(st.path, "SELECT hours FROM analysis_runs WHERE table_text IS NOT NULL") == [(6,)]
    code, saved, _ = run(capsys, "--db", st.db, "opportunities")
    assert code == 0
    assert "window: 6 h" in saved and "(10 min ago)" in saved and "REBALANCE PLAN" in saved
    assert "\x1b" not in saved and "\u202e" not in saved and "\x07" not in saved
    assert "\\x1b[2Jevil" in saved
    for table_format, text in (("another renderer", "tampered"), (None, None)):
        st.execute(
            "UPDATE analysis_runs SET table_format = :f, table_text = :t"
            " WHERE table_text IS NOT NULL OR table_format IS NOT NULL",
            f=table_format,
            t=text,
        )
        code, rendered, _ = run(capsys, "--db", st.db, "opportunities")
        assert code == 0 and rendered == saved


@pytest.mark.e2e
def test_opportunities_from_the_saved_table_imports_no_analysis(tmp_path: Path) -> None:
    """The saved table is printed without the analysis's modules and records: they
    are most of the time a large run takes to render."""
    store = build_store(tmp_path / "s.db")
    store.write_snapshot(_report(), table=True)
    script = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from lnflow.cli.ctl import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["--db", {store.db!r}, "opportunities"])
        assert code == 0, code
        loaded = [m for m in sys.modules if m.startswith(("lnflow.analysis", "sqlalchemy"))]
        assert not loaded, loaded
        assert "lnflow.cli.commands" not in sys.modules
        print(out.getvalue(), end="")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("MISSED ROUTING OPPORTUNITIES\n")
    assert "REBALANCE PLAN" in out.stdout


# --------------------------------------------------------------------------- trend


def test_trend_by_bxtxo_and_decimal_id(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", store.db]
    code, by_scid, _ = run(capsys, *db, "trend", format_scid(CHAN_A), "--days", "2")
    assert code == 0
    code, by_int, _ = run(capsys, *db, "trend", str(CHAN_A), "--days", "2")
    assert by_int == by_scid
    lines = by_scid.splitlines()
    assert lines[0].startswith(f"channel {format_scid(CHAN_A)} ({CHAN_A}), daily, last ")
    header = [c.strip() for c in lines[2].split("  ") if c.strip()]
    assert header == [
        "Day",
        "Forwards",
        "Fees (sats)",
        "Failures",
        "Missed (sats)",
        "Urgency",
        "Local ratio",
    ]
    days = lines[4:]
    assert len(days) in (1, 2)  # cut to the days the store holds (today, maybe yesterday)
    # the failures were 20 to 12 minutes ago: in one UTC day, or split by midnight
    busy = [d for d in days if "(liq" in d]
    if len(busy) == 1:
        assert "5 (liq 5)" in busy[0] and "500.000" in busy[0]
    code, out, _ = run(capsys, *db, "trend", format_scid(CHAN_A), "--days", "2", "--json")
    series = json.loads(out)["series"]
    assert sum(d["failures"] for d in series) == 5
    assert sum(d["missed_msat"] for d in series) == 500_000
    code, out, _ = run(capsys, *db, "trend", format_scid(BIG), "--days", "2", "--json")
    doc = json.loads(out)
    assert doc["channel_id"] == BIG and doc["scid"] == format_scid(BIG)
    assert doc["days_requested"] == 2 and doc["days"] == len(doc["series"]) == len(days)
    failed = [d for d in doc["series"] if d["failures"]]
    assert sum(d["failures"] for d in failed) == 4
    assert sum(d["failures_by_class"]["fee"] for d in failed) == 4
    assert sum(d["missed_msat"] for d in failed) == 600_000
    assert 0.5 in [d["local_ratio"] for d in doc["series"]]


@pytest.mark.e2e
def test_unknown_channel_is_one_line_without_traceback(store: Store) -> None:
    for channel, expected in (
        ("1x2x3", "channel 1x2x3 (1099511758851) is not in the store"),
        ("nonsense", "'nonsense' is not a channel id"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "lnflow.cli.ctl", "--db", store.db, "trend", channel],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.count("\n") == 1, out.stderr
        assert "Traceback" not in out.stderr and expected in out.stderr
    assert "lnflowctl opportunities" in out.stderr or "channel id" in out.stderr


# --------------------------------------------------------------------------- export


def test_export_csv_and_jsonl(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", store.db]
    code, out, _ = run(capsys, *db, "export", "--what", "attempts")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 9
    big = [r for r in rows if r["outgoing_scid"] == format_scid(BIG)]
    assert len(big) == 4 and {r["outgoing_channel_id"] for r in big} == {str(BIG)}
    assert {r["failure_class"] for r in big} == {"fee"}
    code, out, _ = run(capsys, *db, "export", "--what", "attempts", "--format", "jsonl")
    objs = [json.loads(line) for line in out.splitlines()]
    assert len(objs) == 9 and list(objs[0]) == list(rows[0])
    assert {o["outgoing_channel_id"] for o in objs} == {CHAN_A, BIG}  # exact integers
    code, out2, _ = run(capsys, *db, "export", "--what", "attempts", "--json")
    assert out2 == out
    code, out, _ = run(capsys, *db, "export", "--what", "forwards", "--since", "1h")
    assert len(list(csv.DictReader(io.StringIO(out)))) == 2
    code, out, _ = run(capsys, *db, "export", "--what", "forwards", "--since", "2m")
    assert list(csv.DictReader(io.StringIO(out))) == []
    code, out, _ = run(capsys, *db, "export", "--what", "events", "--since", "2000-01-01")
    assert len(list(csv.DictReader(io.StringIO(out)))) == 9
    code, out, err = run(capsys, *db, "export", "--what", "events", "--since", "last week")
    assert code == 2 and out == "" and err.count("\n") == 1 and "--since 'last week'" in err


@pytest.mark.parametrize(
    ("text", "ago_s"),
    [("90s", 90), ("30m", 1800), ("24h", 86_400), ("7d", 604_800), ("2w", 1_209_600)],
)
def test_since_durations(text: str, ago_s: int) -> None:
    now = 1_800_000_000 * S
    assert parse_since(text, now) == now - ago_s * S


def test_since_times() -> None:
    assert parse_since(None, 5) == 0
    assert parse_since("2026-01-02T03:04:05Z", 0) == 1_767_323_045 * S
    assert parse_since("2026-01-02T04:04:05+01:00", 0) == 1_767_323_045 * S
    assert parse_since("2026-01-02T03:04:05", 0) == 1_767_323_045 * S  # UTC without a zone


# --------------------------------------------------------------------------- monitor


@both_engines
@pytest.mark.e2e
def test_monitor_prints_live_lines_then_the_analysis(
    store_at: StoreAt, capsys: pytest.CaptureFixture[str]
) -> None:
    st = build_store(store_at("s.db"), running=False)
    code, out, err = run(
        capsys,
        "--db",
        st.db,
        "monitor",
        "--duration",
        "0.0005",  # 1.8 s
        "--interval",
        "0.1",
        "--min-failures",
        "1",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"monitoring {st.path} for 0.0005 h, a line every 0.1 s")
    live = [line for line in lines[1:] if "events," in line]
    assert len(live) >= 2
    assert all("lnflowd is not running" in line for line in live)
    assert "0 events, 0 local failures; missed so far 0.00 sats" in live[0]
    assert "MISSED ROUTING OPPORTUNITIES" in lines
    assert any(line.startswith("window: 1 h, ") for line in lines)


@both_engines
@pytest.mark.e2e
def test_monitor_stops_on_ctrl_c_and_analyzes(store_at: StoreAt) -> None:
    st = build_store(store_at("s.db"))
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "lnflow.cli.ctl", "--db", st.db),
            *("monitor", "--interval", "0.2", "--min-failures", "1"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("monitoring ")
        assert "events," in proc.stdout.readline()  # one live line: the loop is running
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped; analyzing the monitored period ..." in out
    assert "MISSED ROUTING OPPORTUNITIES" in out and "Traceback" not in err


@both_engines
def test_monitor_json_lines(store_at: StoreAt, capsys: pytest.CaptureFixture[str]) -> None:
    st = build_store(store_at("s.db"), gap=False)
    code, out, _ = run(
        capsys,
        "--db",
        st.db,
        "--json",
        "monitor",
        "--duration",
        "0.00005",
        "--interval",
        "0.1",
    )
    assert code == 0
    docs = [json.loads(line) for line in out.splitlines()]
    assert list(docs[-1]) == TOP_KEYS
    assert list(docs[0]) == [
        "at",
        "events",
        "failures",
        "failures_by_class",
        "missed_msat",
        "missed_raw_msat",
        "daemon_running",
        "stream_connected",
    ]


# --------------------------------------------------------------------------- the CLI itself


def _subcommands() -> dict[str, tuple[argparse.ArgumentParser, str]]:
    parser = ctl._parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {a.dest: a.help or "" for a in action._choices_actions}
    return {name: (sub, helps.get(name, "")) for name, sub in action.choices.items()}


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    subs = _subcommands()
    assert tuple(subs) == COMMANDS
    for name, (sub, help_line) in subs.items():
        assert help_line.strip(), f"{name} has no one-line help"
        assert (sub.description or "").strip(), f"{name} has no description"
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and action.help.strip(), f"{name} {action.dest} lacks help"
        with pytest.raises(SystemExit) as done:
            ctl.main([name, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: lnflowctl {name}")
    with pytest.raises(SystemExit):
        ctl.main(["--help"])
    listing = capsys.readouterr().out
    for name in COMMANDS:
        assert name in listing


@pytest.mark.e2e
def test_opportunities_reads_without_sqlalchemy(tmp_path: Path) -> None:
    """The quick look at the node stays quick: SQLAlchemy alone costs ~150 ms to import."""
    store = build_store(tmp_path / "s.db")
    store.write_snapshot(_report())
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from lnflow.cli.ctl import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["--db", {store.db!r}, "opportunities", "--json"])
        assert code == 0, code
        assert "sqlalchemy" not in sys.modules and "pydantic" not in sys.modules
        print(len(json.loads(out.getvalue())["opportunities"]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(_report().opportunities))


@pytest.mark.e2e
def test_status_reads_kept_counts_without_sqlalchemy(store: Store) -> None:
    """status reads the counts kept as rows are written (no scan of the event tables),
    on SQLite through sqlite3 alone: its time stays flat as the store grows. (On
    PostgreSQL its plain reader connects through SQLAlchemy's engine.)"""
    on_file = not isinstance(store.path, DbUrl)
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from lnflow.cli.ctl import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["--db", {store.db!r}, "status", "--json"])
        assert code == 0, code
        assert {on_file!r} is False or "sqlalchemy" not in sys.modules
        assert "lnflow.analysis" not in sys.modules
        print(out.getvalue())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout)["counts"]
    kinds = dict(query(store.path, "SELECT kind, count(*) FROM htlc_events GROUP BY kind"))
    outcomes = dict(
        query(store.path, "SELECT outcome, count(*) FROM forward_attempts GROUP BY outcome")
    )
    ((ledger,),) = query(store.path, "SELECT count(*) FROM forwards")
    assert counts["htlc_events"] == {
        kind.label: kinds.get(int(kind), 0) for kind in EventKind if kind is not EventKind.UNKNOWN
    }
    assert counts["attempts"] == {o.label: outcomes.get(int(o), 0) for o in Outcome}
    assert counts["forwards"] == ledger == 2
    assert counts["htlc_events"]["link_fail"] == 9


@both_engines
def test_status_of_a_store_from_before_kept_counts_counts_its_rows(
    store_at: StoreAt, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store lnflowd has not upgraded yet (0017) still shows exact counts."""
    built = build_store(store_at("s.db"))
    code, want, _ = run(capsys, "--db", built.db, "status", "--json")
    assert code == 0
    engine = open_engine(built.path)
    db.downgrade(engine, "0017")
    engine.dispose()
    code, got, err = run(capsys, "--db", built.db, "status", "--json")
    assert (code, err) == (0, "")
    assert json.loads(got)["counts"] == json.loads(want)["counts"]


@pytest.mark.e2e
def test_no_command_imports_grpc(store: Store, tmp_path: Path) -> None:
    saved = tmp_path / "saved.json"
    db = store.db
    script = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from lnflow.cli.ctl import main
        runs = [
            ["--db", {db!r}, "status"],
            ["--db", {db!r}, "nodes"],
            ["--db", {db!r}, "opportunities"],
            ["--db", {db!r}, "analyze", "--hours", "2", "--output", {str(saved)!r}],
            ["--db", {db!r}, "monitor", "--duration", "0.00003", "--interval", "0.05"],
            ["report", {str(saved)!r}],
            ["--db", {db!r}, "trend", {format_scid(CHAN_A)!r}],
            ["--db", {db!r}, "whatif", {format_scid(CHAN_A)!r}, "--fee-ppm", "1",
             "--base-fee-msat", "0"],
            ["--db", {db!r}, "export", "--what", "events"],
            ["--db", {db!r}, "alerts"],
            ["--db", {db!r}, "policy", "effects"],
        ]
        for argv in runs:
            with contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
            assert code == 0, (argv, code)
            assert "grpc" not in sys.modules, argv
            assert "prometheus_client" not in sys.modules, argv
        print("ok", len(runs))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ok {len(COMMANDS)}"


def test_docs_json_md_documents_every_field() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "json.md").read_text()
    rows = {line.split("|")[1].strip() for line in docs.splitlines() if line.startswith("| `")}
    documented = {name.strip("`") for row in rows for name in row.split(", ")}
    doc = report_to_doc(_report())
    opp_keys = {k for o in doc["opportunities"] for k in o}
    wanted = (
        (set(doc) - {"node"})  # documented as node.failures, node.missed_msat, ...
        | opp_keys
        | {"suggested_max_htlc_msat"}
        | set(doc["rebalance_plan"][0])
        | {"gaps[].from", "gaps[].to"}
        | {f"node.{key}" for key in doc["node"]}
    )
    assert wanted <= documented, sorted(wanted - documented)


def test_a_report_saved_before_node_raw_totals_reads_back() -> None:
    """Files written before node.missed_raw_msat existed: the deduplicated sum stands in."""
    doc = report_to_doc(_report())
    del doc["node"]["missed_raw_msat"]
    report = report_from_doc(json.loads(json.dumps(doc)))
    assert (report.node_missed_msat, report.node_missed_raw_msat) == (3_000_000, 3_000_000)


@pytest.mark.parametrize("state_dir", [None, "/srv/lnflow-state"])
@pytest.mark.parametrize(
    "argv",
    [["status"], ["--db", "~/x.db", "status"], ["--db", "/a/b.db", "opportunities"], ["alerts"]],
)
def test_without_a_config_the_store_is_the_one_the_settings_loader_names(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], state_dir: str | None
) -> None:
    """status skips pydantic when nothing is to be layered: it must land on the same store."""
    from lnflow.cli import ctl
    from lnflow.cli.commands import ctl_settings

    for name in list(os.environ):
        if name.upper().startswith("LNFLOW_"):
            monkeypatch.delenv(name)
    if state_dir is None:
        monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    else:
        monkeypatch.setenv("STATE_DIRECTORY", state_dir)
    args = ctl._parser().parse_args(argv)
    assert ctl._store_path(args) == ctl_settings(args).store.path
