"""The seed's programmatic API (HTLCMonitor, OpportunityAnalyzer, AsyncLNDgRPCClient,
LndManageClient) over real gRPC against the simulated node, and the example script."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from simnode import SimNode

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import (
    Action,
    AnalysisReport,
    AnalysisSettings,
    ClassStats,
    Confidence,
    Opportunity,
)
from lnflow.domain import format_scid
from lnflow.errors import CertificateMissingError
from lnflow.manage import ManageError

REPO = Path(__file__).resolve().parent.parent
OUT_FEE = (800_001 << 40) | (2 << 16) | 1
OUT_LIQ = (800_002 << 40) | (3 << 16)
INS = [(810_000 + i) << 40 for i in range(4)]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LNFLOW_")}


# --------------------------------------------------------------------------- import cost


@pytest.mark.e2e
def test_import_lnflow_is_light_and_names_load_lazily() -> None:
    script = (
        "import sys, lnflow\n"
        "heavy = [m for m in ('grpc', 'sqlalchemy', 'httpx', 'pydantic') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from lnflow import HTLCMonitor, OpportunityAnalyzer, LndManageClient\n"
        "assert 'grpc' not in sys.modules\n"
        "from lnflow import AsyncLNDgRPCClient\n"
        "assert 'grpc' not in sys.modules  # gRPC runs in the client's gateway process\n"
        "from lnflow.lnd import LndClient\n"
        "assert issubclass(AsyncLNDgRPCClient, LndClient)\n"
        "try:\n"
        "    lnflow.NoSuchThing\n"
        "except AttributeError:\n"
        "    print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --------------------------------------------------------------------------- grpc client


def test_grpc_client_resolves_paths_like_lncli(tmp_path: Path) -> None:
    from lnflow import AsyncLNDgRPCClient

    client = AsyncLNDgRPCClient(lnd_dir=tmp_path, network="regtest", server="127.0.0.1")
    creds = client.credentials
    assert creds.rpcserver == "127.0.0.1:10009"
    assert creds.tlscertpath == tmp_path / "tls.cert"
    assert creds.macaroonpath == tmp_path / "data/chain/bitcoin/regtest/readonly.macaroon"
    explicit = AsyncLNDgRPCClient(
        macaroon_path=tmp_path / "m.macaroon", tls_cert_path=tmp_path / "c.pem"
    )
    assert explicit.credentials.macaroonpath == tmp_path / "m.macaroon"
    assert explicit.credentials.tlscertpath == tmp_path / "c.pem"

    async def enter() -> None:
        async with client:
            pass

    with pytest.raises(CertificateMissingError, match="TLS certificate not found"):
        asyncio.run(enter())


# --------------------------------------------------------------------------- opportunity records


def _opportunity(**overrides: Any) -> Opportunity:
    base = Opportunity(
        rank=1,
        channel_id=OUT_FEE,
        peer_pubkey="02" + "cd" * 32,
        peer_alias="",
        failures=7,
        clusters=5,
        successes=3,
        failure_rate=0.7,
        missed_msat=1_500_500,
        missed_raw_msat=1_800_000,
        potential_monthly_msat=45_015_000,
        urgency_score=55,
        confidence=Confidence.MEDIUM,
        recommended_action=Action.LOWER_FEES,
        reason="fees",
        estimated=False,
        by_class={
            FailureClass.FEE: ClassStats(5, 1_500_000),
            FailureClass.LIQUIDITY: ClassStats(2, 1),
        },
        capacity_sat=1_000_000,
        local_balance_sat=400_000,
        outbound_fee_ppm=None,
        suggested_fee_ppm=350,
    )
    return dataclasses.replace(base, **overrides)


def test_missed_opportunity_has_the_seed_names() -> None:
    from lnflow.facades.opportunity_analyzer import MissedOpportunity

    opp = MissedOpportunity.from_opportunity(_opportunity())
    assert opp.channel_id == format_scid(OUT_FEE) and opp.chan_id == OUT_FEE
    assert opp.recommended_action == "lower_fees"
    assert opp.potential_monthly_revenue_sats == 45_015.0
    assert opp.missed_revenue_sats == 1500.5
    assert opp.urgency_score == 55
    assert opp.total_failures == 7 and opp.fee_failures == 5 and opp.liquidity_failures == 2
    assert opp.current_outbound_fee_ppm == 0  # unknown policy: a number all the same
    assert opp.current_capacity_sats == 1_000_000 and opp.current_local_balance == 400_000
    assert opp.suggested_fee_ppm == 350 and opp.opportunity.missed_msat == 1_500_500


class _FakeMonitor:
    min_failure_count = 3
    min_missed_sats = 100

    def __init__(self, report: AnalysisReport) -> None:
        self.report = report
        self.calls: list[tuple[int | None, AnalysisSettings | None]] = []

    async def analysis_report(
        self, hours: int | None = None, settings: AnalysisSettings | None = None
    ) -> AnalysisReport:
        self.calls.append((hours, settings))
        return self.report


class _Aliases:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.asked: list[str] = []

    async def get_node_alias(self, pubkey: str) -> str:
        self.asked.append(pubkey)
        if self.fail:
            raise ManageError("lnd-manageJ at http://127.0.0.1:8081 did not answer")
        return "carol"


def test_analyzer_thresholds_window_and_alias_enrichment() -> None:
    from lnflow import OpportunityAnalyzer

    named = _opportunity(rank=2, channel_id=OUT_LIQ, peer_alias="dave")
    named = dataclasses.replace(named, recommended_action=Action.REBALANCE_OUTBOUND)
    report = AnalysisReport(0, 3600, 1, 3600, (_opportunity(), named), ())
    monitor = _FakeMonitor(report)
    aliases = _Aliases()
    analyzer = OpportunityAnalyzer(
        monitor,  # type: ignore[arg-type]
        aliases,
        min_opportunity_sats=250,
        analysis_window_hours=6,
    )
    opps = asyncio.run(analyzer.analyze_opportunities())
    assert [o.peer_alias for o in opps] == ["carol", "dave"]
    assert aliases.asked == ["02" + "cd" * 32]  # only the one lnd had no alias for
    assert monitor.calls == [(6, AnalysisSettings(min_failure_count=3, min_missed_sats=250))]
    assert analyzer.last_report is report
    fees = asyncio.run(analyzer.get_fee_opportunities())
    assert [o.channel_id for o in fees] == [format_scid(OUT_FEE)]
    offline = OpportunityAnalyzer(monitor, _Aliases(fail=True))  # type: ignore[arg-type]
    assert [o.peer_alias for o in asyncio.run(offline.analyze_opportunities())] == ["", "dave"]


# --------------------------------------------------------------------------- against the sim


def _channel(chan: int, alias: str, **fields: Any) -> dict[str, Any]:
    return {"op": "channel", "chan_id": format_scid(chan), "peer_alias": alias, **fields}


def _link_fail(htlc: int, out: int, inc: int, amt: int, fee: int, wire: str, detail: str) -> Any:
    return {
        "event": "link_fail",
        "incoming_channel_id": format_scid(inc),
        "incoming_htlc_id": htlc,
        "outgoing_channel_id": format_scid(out),
        "incoming_amt_msat": amt + fee,
        "outgoing_amt_msat": amt,
        "incoming_timelock": 900,
        "outgoing_timelock": 860,
        "wire_failure": wire,
        "failure_detail": detail,
    }


def _script() -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = [
        _channel(OUT_FEE, "fee-peer", fee_rate_ppm=2000, local_balance_sat=500_000),
        _channel(OUT_LIQ, "liq-peer", local_balance_sat=20_000),
        *(_channel(c, f"in-{i}", local_balance_sat=100_000) for i, c in enumerate(INS)),
        {
            "op": "forwarding_event",
            "timestamp_ns": time.time_ns() - 600 * 1_000_000_000,
            "chan_id_in": format_scid(INS[0]),
            "chan_id_out": format_scid(OUT_LIQ),
            "amt_in_msat": 1_001_000,
            "amt_out_msat": 1_000_000,
        },
        {"op": "wait_subscribers", "count": 1, "timeout_s": 30},
    ]
    for i, inc in enumerate(INS):  # four demand clusters each: distinct senders and amounts
        lines.append(
            _link_fail(i, OUT_FEE, inc, 150_000_000 + i, 150_000, "FEE_INSUFFICIENT", "NO_DETAIL")
        )
        lines.append(
            _link_fail(
                100 + i,
                OUT_LIQ,
                inc,
                400_000_000 + i,
                200_000,
                "TEMPORARY_CHANNEL_FAILURE",
                "INSUFFICIENT_BALANCE",
            )
        )
    return lines


@pytest.mark.timeout(90)
@pytest.mark.e2e
def test_monitor_records_and_the_analyzer_ranks(tmp_path: Path) -> None:
    from lnflow import AsyncLNDgRPCClient, HTLCMonitor, LndManageClient, OpportunityAnalyzer

    async def scenario(sim: SimNode) -> tuple[Any, ...]:
        async with (
            AsyncLNDgRPCClient(
                lnd_dir=sim.lnddir, server=sim.rpcserver, network=sim.network
            ) as grpc_client,
            LndManageClient("http://127.0.0.1:1") as manage,  # nothing listens: aliases only
        ):
            monitor = HTLCMonitor(grpc_client, db_path=tmp_path / "monitor.db")
            await monitor.start_monitoring()
            assert monitor.running
            deadline = time.monotonic() + 30
            while monitor.events_recorded < 8 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await monitor.stop_monitoring()
            assert not monitor.running
            analyzer = OpportunityAnalyzer(monitor, manage)
            opps = await analyzer.analyze_opportunities()
            fees = await analyzer.get_fee_opportunities()
            recorded = monitor.events_recorded
            await monitor.close()
            return opps, fees, recorded

    with SimNode(tmp_path / "lnd", script=_script()) as sim:
        opps, fees, recorded = asyncio.run(scenario(sim))
    assert recorded == 8
    by_chan = {o.channel_id: o for o in opps}
    assert set(by_chan) == {format_scid(OUT_FEE), format_scid(OUT_LIQ)}
    fee = by_chan[format_scid(OUT_FEE)]
    assert fee.recommended_action == "lower_fees" and fee.peer_alias == "fee-peer"
    assert fee.total_failures == 4 and fee.fee_failures == 4
    assert fee.missed_revenue_sats == 600.0
    assert fee.current_outbound_fee_ppm == 2000
    assert fee.potential_monthly_revenue_sats == 600.0 * 720 / 24
    liq = by_chan[format_scid(OUT_LIQ)]
    assert liq.recommended_action == "rebalance_outbound" and liq.liquidity_failures == 4
    assert [o.channel_id for o in fees] == [format_scid(OUT_FEE)]
    assert sorted(o.rank for o in opps) == [1, 2]
    assert (tmp_path / "monitor.db").exists()  # a store the caller named is kept


@pytest.mark.timeout(90)
@pytest.mark.e2e
def test_example_script_runs_against_the_simulated_node(tmp_path: Path) -> None:
    with SimNode(tmp_path / "lnd", args=("--rate", "200")) as sim:
        out = subprocess.run(
            [
                sys.executable,
                str(REPO / "examples" / "htlc_monitoring.py"),
                "--lnd-dir",
                str(sim.lnddir),
                "--grpc-host",
                sim.rpcserver,
                "--network",
                sim.network,
                "--manage-url",
                "http://127.0.0.1:1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**_env(), "HTLC_MONITOR_SECONDS": "3"},
            check=False,
        )
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    count, seen = last.split(" opportunities, ")
    assert int(count) >= 0 and int(seen.split()[0]) > 0
    for block in out.stdout.strip().split("\n\n")[:-1]:
        head, potential, urgency = block.strip().splitlines()[:3]
        assert head.split(": ")[1] in {a.value for a in Action}
        assert potential.startswith("  Potential: ") and urgency.startswith("  Urgency: ")


# --------------------------------------------------------------------------- reconnects


class _FakeStream:
    """An HTLC stream at the network edge: yields items, then fails or idles until cancelled."""

    def __init__(self, items: list[Any], error: Exception | None = None) -> None:
        self.items = items
        self.error = error
        self.cancelled = False
        self.established = True
        self.received = 0

    def __aiter__(self) -> _FakeStream:
        return self

    async def __anext__(self) -> Any:
        if self.items:
            return self.items.pop(0)
        if self.error is not None:
            raise self.error
        while not self.cancelled:
            await asyncio.sleep(0.01)
        raise StopAsyncIteration

    async def wait_connected(self, timeout_s: float) -> None:
        return None

    def cancel(self) -> None:
        self.cancelled = True


class _FakeLnd:
    def __init__(self, *streams: _FakeStream) -> None:
        self.streams = list(streams)

    async def check(self) -> Any:
        from lnflow.domain import LndVersion, NodeInfo

        node = NodeInfo("02" + "ee" * 32, "fake", "0.18.3-beta", "regtest", 1, True)
        return node, LndVersion(0, 18, 3, "0.18.3-beta")

    def subscribe_htlc_events(self) -> _FakeStream:
        return self.streams.pop(0)

    async def probe(self, timeout_s: float) -> None:
        return None

    def prepare_stream(self) -> None:
        pass

    async def list_channels(self) -> list[Any]:
        return []

    async def get_chan_info(self, chan_id: int) -> None:
        return None

    async def get_node_alias(self, pubkey: str) -> None:
        return None

    async def forwarding_history(self, **kwargs: Any) -> Any:
        from lnflow.domain import ForwardingPage

        return ForwardingPage((), 0)


def _forward(htlc: int) -> Any:
    from lnflow.domain import EventKind, EventType, HtlcEvent

    return HtlcEvent(
        timestamp_ns=time.time_ns(),
        kind=EventKind.FORWARD,
        event_type=int(EventType.FORWARD),
        incoming_channel_id=INS[0],
        incoming_htlc_id=htlc,
        outgoing_channel_id=OUT_FEE,
        outgoing_htlc_id=htlc,
        incoming_amt_msat=1_001_000,
        outgoing_amt_msat=1_000_000,
    )


@pytest.mark.timeout(30)
def test_monitor_reconnects_after_lnd_restarts(tmp_path: Path) -> None:
    from lnflow import HTLCMonitor
    from lnflow.errors import NodeUnreachableError

    lnd = _FakeLnd(
        _FakeStream([_forward(1), _forward(2)], NodeUnreachableError("lnd restarting")),
        _FakeStream([_forward(2), _forward(3)]),  # 2 replayed after the restart
    )

    async def scenario() -> int:
        async with HTLCMonitor(lnd, db_path=tmp_path / "m.db") as monitor:  # type: ignore[arg-type]
            await monitor.start_monitoring()
            deadline = time.monotonic() + 10
            while monitor.events_recorded < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await monitor.stop_monitoring()
            return monitor.events_recorded

    assert asyncio.run(scenario()) == 3
    with sqlite3.connect(tmp_path / "m.db") as conn:
        reasons = [r for (r,) in conn.execute("SELECT end_reason FROM stream_sessions ORDER BY id")]
        (events,) = conn.execute("SELECT count(*) FROM htlc_events").fetchone()
    assert reasons == ["lnd unreachable: lnd restarting", "shutdown"]
    assert events == 3


@pytest.mark.timeout(30)
def test_monitor_raises_what_no_reconnect_can_fix(tmp_path: Path) -> None:
    from lnflow import HTLCMonitor
    from lnflow.errors import MacaroonRejectedError

    rejected = MacaroonRejectedError("macaroon rejected: use one of this node's macaroons")
    lnd = _FakeLnd(_FakeStream([_forward(1)], rejected))

    async def scenario() -> HTLCMonitor:
        monitor = HTLCMonitor(lnd, db_path=tmp_path / "m.db")  # type: ignore[arg-type]
        await monitor.start_monitoring()
        deadline = time.monotonic() + 10
        while monitor.failure is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with pytest.raises(MacaroonRejectedError):
            await monitor.stop_monitoring()
        await monitor.close()
        return monitor

    monitor = asyncio.run(scenario())
    assert monitor.events_recorded == 1  # what arrived before the failure is kept
