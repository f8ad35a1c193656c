"""Daily channel trends and raw exports, read from real stores on both engines."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from conftest import RealStore
from samples import balance_sample
from sqlalchemy import Engine, insert, select

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import (
    Action,
    AnalysisReport,
    ClassStats,
    Confidence,
    Opportunity,
)
from lnflow.domain import (
    EventKind,
    EventType,
    FailureDetail,
    ForwardRecord,
    HtlcEvent,
    NodeInfo,
    WireFailure,
    format_scid,
    to_signed64,
)
from lnflow.store.export import EXPORTABLE, export_rows, iso_utc
from lnflow.store.ingest import Ingestor
from lnflow.store.schema import channel_refs, failure_rollups_hourly, htlc_events
from lnflow.store.snapshots import SnapshotWriter
from lnflow.store.trend import NS_PER_DAY, TrendDay, channel_known, channel_trend
from lnflow.store.writer import NS_PER_HOUR, StoreWriter

S = 1_000_000_000
H = NS_PER_HOUR
NODE = NodeInfo("02" + "aa" * 32, "alice", "0.18.3-beta", "regtest", 1, True)
DAY0 = 20_400  # 2025-11-08 (days since 1970-01-01, UTC)
D0 = DAY0 * NS_PER_DAY
UNTIL = D0 + 10 * H  # trends end 10:00 UTC on DAY0
A = (850_000 << 40) | (1 << 16)
BIG = (1 << 64) - 3  # an alias SCID above 2^63
IN1, IN2 = 860_000 << 40, 870_000 << 40
X = (700_000 << 40) | 9  # foreign: seen only as a failure's next hop
CLASSES = [cls.label for cls in FailureClass]

pytestmark = pytest.mark.engines("sqlite", "postgresql")


@dataclasses.dataclass
class Store:
    engine: Engine
    writer: StoreWriter
    node_id: int
    session: int
    ingestor: Ingestor

    def fail(self, htlc: int, ts_ns: int, out: int, inc: int, fee: int, **kw: int) -> None:
        ev = HtlcEvent(
            timestamp_ns=ts_ns,
            kind=EventKind.LINK_FAIL,
            event_type=int(EventType.FORWARD),
            incoming_channel_id=inc,
            incoming_htlc_id=htlc,
            outgoing_channel_id=out,
            outgoing_htlc_id=0,
            incoming_amt_msat=1_000_000 + fee,
            outgoing_amt_msat=1_000_000,
            wire_failure=kw.get("wire", int(WireFailure.TEMPORARY_CHANNEL_FAILURE)),
            failure_detail=kw.get("detail", int(FailureDetail.INSUFFICIENT_BALANCE)),
        )
        self.ingestor.ingest(self.session, [ev], ts_ns)

    def sample(self, ts_ns: int, chan: int, local: int, remote: int) -> None:
        self.writer.record_channel_samples(
            self.node_id, ts_ns, [balance_sample(chan, local, remote)]
        )


@pytest.fixture
def store(open_store: Callable[..., RealStore]) -> Store:
    s = open_store(node=NODE)
    session = s.open_session(D0 - 10 * NS_PER_DAY, "0.18.3-beta")
    return Store(s.engine, s.writer, s.node_id, session, s.ingestor())


def opportunity(chan: int, urgency: int) -> Opportunity:
    return Opportunity(
        rank=1,
        channel_id=chan,
        peer_pubkey="03" + "bb" * 32,
        peer_alias="bob",
        failures=4,
        clusters=2,
        successes=1,
        failure_rate=0.8,
        missed_msat=150_000,
        missed_raw_msat=250_000,
        potential_monthly_msat=4_500_000,
        urgency_score=urgency,
        confidence=Confidence.LOW,
        recommended_action=Action.REBALANCE_OUTBOUND,
        reason="3 of 4 failures lacked outbound liquidity",
        estimated=False,
        by_class={FailureClass.LIQUIDITY: ClassStats(4, 250_000)},
        capacity_sat=1_000_000,
        local_balance_sat=1_000,
        outbound_fee_ppm=100,
        suggested_amount_sat=499_000,
    )


def snapshot(s: Store, ts_ns: int, *opps: Opportunity) -> None:
    report = AnalysisReport(ts_ns - 24 * H, ts_ns, 24, ts_ns, tuple(opps), ())
    SnapshotWriter(s.engine).write_run(s.node_id, report, 3)


def day(
    label: str,
    *,
    by_class: dict[str, int] | None = None,
    forwards: int = 0,
    fees_msat: int = 0,
    missed_msat: int = 0,
    missed_raw_msat: int = 0,
    urgency: int | None = None,
    local_ratio: float | None = None,
) -> TrendDay:
    failures = dict.fromkeys(CLASSES, 0) | (by_class or {})
    return TrendDay(
        day=label,
        forwards=forwards,
        fees_msat=fees_msat,
        failures_by_class=failures,
        failures=sum(failures.values()),
        missed_msat=missed_msat,
        missed_raw_msat=missed_raw_msat,
        urgency=urgency,
        local_ratio=local_ratio,
    )


# -- trend -----------------------------------------------------------------------------


def test_trend_has_one_entry_per_day_empty_days_included(store: Store) -> None:
    d3, d2 = D0 - 3 * NS_PER_DAY, D0 - 2 * NS_PER_DAY
    # forwards out of A (in via A does not count), one before the series, one after until
    store.writer.insert_forwards(
        store.node_id,
        [
            ForwardRecord(d3 - 1, IN1, A, 1, 1, 999),
            ForwardRecord(d3 + 1 * H, IN1, A, 1, 1, 10),
            ForwardRecord(d3 + 5 * H, IN2, A, 1, 1, 20),
            ForwardRecord(d3 + 6 * H, A, IN2, 1, 1, 40),
            ForwardRecord(D0 + 9 * H, IN1, A, 1, 1, 5),
            ForwardRecord(D0 + 11 * H, IN1, A, 1, 1, 7),
        ],
    )
    # failures: a cluster of two on day -3 (missed 3 000, raw 5 000) and a fee failure
    store.fail(1, d3 + 2 * H, A, IN1, 2_000)
    store.fail(2, d3 + 2 * H + 10 * S, A, IN1, 3_000)
    store.fail(3, d2 + 4 * H, A, IN2, 700, wire=int(WireFailure.FEE_INSUFFICIENT), detail=1)
    store.fail(4, d2 + 5 * H, X, IN2, 800)  # another channel
    with store.engine.begin() as conn:  # a class number newer than this code counts as other
        conn.execute(
            insert(failure_rollups_hourly).values(
                node_id=store.node_id,
                hour=d2 // H + 7,
                outgoing_channel_id=to_signed64(A),
                incoming_channel_id=to_signed64(IN1),
                failure_class=9,
                failures=2,
                clusters=1,
                missed_raw_msat=60,
                missed_dedup_msat=50,
            )
        )
    # local ratio: the day's last sample
    store.sample(d3 + 1 * H, A, 200_000, 800_000)
    store.sample(d3 + 20 * H, A, 400_000, 600_000)
    store.sample(D0 + 2 * H, A, 500_000, 500_000)
    store.sample(D0 + 11 * H, A, 900_000, 100_000)  # after until
    # urgency: the day's last snapshot listing A
    snapshot(store, d3 + 3 * H, opportunity(A, 50))
    snapshot(store, d3 + 23 * H, opportunity(A, 60))
    snapshot(store, d2 + 8 * H, opportunity(BIG, 10))  # without A
    snapshot(store, D0 + 1 * H, opportunity(A, 70))
    snapshot(store, D0 + 12 * H, opportunity(A, 99))  # after until

    with store.engine.connect() as conn:
        trend = channel_trend(conn, A, until_ns=UNTIL, days=4)

    assert trend == [
        day(
            "2025-11-05",
            forwards=2,
            fees_msat=30,
            by_class={"liquidity": 2},
            missed_msat=3_000,
            missed_raw_msat=5_000,
            urgency=60,
            local_ratio=0.4,
        ),
        day(
            "2025-11-06",
            by_class={"fee": 1, "other": 2},
            missed_msat=750,
            missed_raw_msat=760,
        ),
        day("2025-11-07"),
        day("2025-11-08", forwards=1, fees_msat=5, urgency=70, local_ratio=0.5),
    ]


def test_trend_of_an_unknown_channel_is_all_empty_days(store: Store) -> None:
    with store.engine.connect() as conn:
        trend = channel_trend(conn, BIG, until_ns=D0, days=2)  # until at midnight
        with pytest.raises(ValueError, match="days"):
            channel_trend(conn, BIG, until_ns=D0, days=0)
    assert trend == [day("2025-11-06"), day("2025-11-07")]


def test_channel_known_from_channels_failures_or_forwards(store: Store) -> None:
    store.sample(D0, A, 1, 1)
    store.fail(1, D0, X, IN1, 100)
    store.writer.insert_forwards(store.node_id, [ForwardRecord(D0, BIG, IN2, 1, 1, 1)])
    with store.engine.connect() as conn:
        known = {chan: channel_known(conn, chan) for chan in (A, X, IN1, BIG, IN2, 12345)}
    assert known == {A: True, X: True, IN1: True, BIG: True, IN2: True, 12345: False}
    # either trace of a forward is enough: the per-channel day rollup, or the ledger once
    # the rollups are pruned (the ledger is kept forever)
    for table in ("forwards", "forward_channel_daily"):
        with store.engine.begin() as conn:
            saved = conn.exec_driver_sql(f"SELECT * FROM {table}").all()
            conn.exec_driver_sql(f"DELETE FROM {table}")
            assert channel_known(conn, BIG) and channel_known(conn, IN2)
            conn.exec_driver_sql("DELETE FROM forward_rollups_hourly")
            conn.exec_driver_sql("DELETE FROM forward_channel_hourly")
            assert channel_known(conn, BIG) and channel_known(conn, IN2)
            conn.rollback()
        assert saved
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM forwards")
        conn.exec_driver_sql("DELETE FROM forward_channel_daily")
        assert not channel_known(conn, BIG) and not channel_known(conn, IN2)
        conn.rollback()


# -- export ----------------------------------------------------------------------------


def test_iso_strings_are_utc_with_nanoseconds() -> None:
    assert iso_utc(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert iso_utc(0) == "1970-01-01T00:00:00.000000000Z"
    assert iso_utc(None) is None


def _export(s: Store, what: str, since_ns: int) -> tuple[list[str], list[dict[str, object]]]:
    with s.engine.connect() as conn:
        header, rows = export_rows(conn, what, since_ns)
        assert iter(rows) is rows  # a stream, not a list
        return header, [dict(zip(header, row, strict=True)) for row in rows]


def test_export_events(store: Store) -> None:
    store.fail(7, D0 - 1, A, BIG, 100)  # before since
    store.fail(8, D0 + 5, A, BIG, 200)
    with store.engine.begin() as conn:  # enum numbers newer than this code are kept
        big_ref = conn.scalar(
            select(channel_refs.c.id).where(channel_refs.c.chan_id == to_signed64(BIG))
        )
        conn.execute(
            insert(htlc_events).values(
                node_id=store.node_id,
                session_id=store.session,
                timestamp_ns=D0 + 6,
                kind=9,
                event_type=7,
                incoming_chan_ref=big_ref,
                incoming_htlc_id=to_signed64((1 << 64) - 1),
                outgoing_chan_ref=0,
                outgoing_htlc_id=0,
                wire_failure=4242,
                failure_detail=77,
            )
        )
    header, rows = _export(store, "events", D0)
    assert header[:5] == ["id", "timestamp_ns", "timestamp", "kind", "event_type"]
    assert [r["timestamp_ns"] for r in rows] == [D0 + 5, D0 + 6]
    first, odd = rows
    assert first["timestamp"] == iso_utc(D0 + 5)
    assert (first["kind"], first["event_type"]) == ("link_fail", "forward")
    assert (first["incoming_channel_id"], first["incoming_scid"]) == (BIG, format_scid(BIG))
    assert (first["outgoing_channel_id"], first["outgoing_scid"]) == (A, "850000x1x0")
    assert first["incoming_htlc_id"] == 8
    assert (first["wire_failure"], first["failure_detail"]) == (
        "temporary_channel_failure",
        "insufficient_balance",
    )
    assert (first["incoming_amt_msat"], first["outgoing_amt_msat"]) == (1_000_200, 1_000_000)
    assert (odd["kind"], odd["event_type"], odd["wire_failure"], odd["failure_detail"]) == (
        "9",
        "7",
        "4242",
        "77",
    )
    assert odd["incoming_htlc_id"] == (1 << 64) - 1


def test_export_attempts(store: Store) -> None:
    store.fail(8, D0 + 5, BIG, IN1, 200, wire=int(WireFailure.FEE_INSUFFICIENT), detail=1)
    header, rows = _export(store, "attempts", 0)
    assert "first_seen" in header and "resolved" in header
    (row,) = rows
    assert (row["outgoing_channel_id"], row["outgoing_scid"]) == (BIG, format_scid(BIG))
    assert (row["outcome"], row["failure_class"]) == ("failed_local", "fee")
    assert (row["wire_failure"], row["failure_detail"]) == ("fee_insufficient", "no_detail")
    assert (row["first_seen_ns"], row["first_seen"]) == (D0 + 5, iso_utc(D0 + 5))
    assert row["missed_fee_msat"] == 200


def test_export_forwards(store: Store) -> None:
    store.writer.insert_forwards(
        store.node_id,
        [ForwardRecord(D0 - 1, A, BIG, 2, 1, 1), ForwardRecord(D0, BIG, A, 1_001, 1_000, 1)],
    )
    header, rows = _export(store, "forwards", D0)
    assert header == [
        "id",
        "timestamp_ns",
        "timestamp",
        "chan_id_in",
        "scid_in",
        "chan_id_out",
        "scid_out",
        "amt_in_msat",
        "amt_out_msat",
        "fee_msat",
        "incoming_htlc_id",
        "outgoing_htlc_id",
    ]
    (row,) = rows
    assert (row["chan_id_in"], row["scid_in"], row["chan_id_out"]) == (BIG, format_scid(BIG), A)
    assert (row["timestamp_ns"], row["timestamp"], row["fee_msat"]) == (D0, iso_utc(D0), 1)


def test_export_opportunities(store: Store) -> None:
    snapshot(store, D0 - 1, opportunity(A, 40))
    snapshot(store, D0 + 60 * S, opportunity(BIG, 65))
    header, rows = _export(store, "opportunities", D0)
    assert header[:9] == [
        "run_id",
        "generated_ns",
        "generated",
        "since_ns",
        "until_ns",
        "hours",
        "rank",
        "channel_id",
        "scid",
    ]
    assert header[-2:] == ["other_failures", "other_missed_msat"]
    (row,) = rows
    assert (row["channel_id"], row["scid"]) == (BIG, format_scid(BIG))
    assert (row["generated_ns"], row["generated"]) == (D0 + 60 * S, iso_utc(D0 + 60 * S))
    assert (row["confidence"], row["recommended_action"]) == ("low", "rebalance_outbound")
    assert (row["urgency_score"], row["failure_rate"], row["estimated"]) == (65, 0.8, False)
    assert (row["liquidity_failures"], row["liquidity_missed_msat"]) == (4, 250_000)
    assert (row["fee_failures"], row["fee_missed_msat"]) == (None, None)


@pytest.mark.parametrize("what", EXPORTABLE)
def test_every_export_of_an_empty_store_is_a_header_alone(store: Store, what: str) -> None:
    header, rows = _export(store, what, 0)
    assert header and len(set(header)) == len(header) and rows == []


def test_unknown_export_names_the_choices(store: Store) -> None:
    with store.engine.connect() as conn, pytest.raises(ValueError, match="events, attempts"):
        export_rows(conn, "channels", 0)
