"""Recording end to end: the real lnflowd against the simulated node over real gRPC into
a real store, through the things that go wrong in production: lnd restarting under the
stream, a ledger too long for one page, the daemon killed mid-write, old lnd versions, and
HTLC events arriving out of order or twice. Each runs on both engines: a SQLite file, and
a PostgreSQL database the daemon records into."""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import ATTEMPTS_SCID, EVENTS_SCID, Daemon, db_arg, query, run_lnflowctl, stored
from simnode import SimNode, make_channel

from lnflow.analysis.classify import FailureClass
from lnflow.attempts import Outcome
from lnflow.domain import EventKind, to_signed64
from lnflow.lnd._proto import lightning_pb2, lightning_pb2_grpc, router_pb2, router_pb2_grpc
from lnflow.store.engines import DbUrl, StoreLocation
from lnflow.store.writer import NS_PER_HOUR

NS = 1_000_000_000
CHAN_A = (810_000 << 40) | (1 << 16)
CHAN_B = (810_001 << 40) | (2 << 16) | 1
CHAN_C = (810_002 << 40) | (3 << 16)
T_MEM = 1_764_000_000 * NS

pytestmark = pytest.mark.engines("sqlite", "postgresql")
StoreAt = Callable[[str], StoreLocation]

EVENT_KEY = (
    "node_id, kind, incoming_channel_id, incoming_htlc_id, outgoing_channel_id, outgoing_htlc_id"
)


def count(conn: Any, table: str, where: str = "") -> int:
    sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
    return int(conn.execute(sql).fetchone()[0])


def count_rows(db: StoreLocation, table: str) -> int:
    return int(query(db, f"SELECT count(*) FROM {table}")[0][0])


def ev(
    kind: str, cin: int, hin: int, cout: int = 0, hout: int = 0, **fields: Any
) -> dict[str, Any]:
    """A script event line (docs/sim-script.md)."""
    return {
        "event": kind,
        "incoming_channel_id": cin,
        "incoming_htlc_id": hin,
        "outgoing_channel_id": cout,
        "outgoing_htlc_id": hout,
        **fields,
    }


def link_fail(
    cin: int, hin: int, cout: int, amt_in: int, amt_out: int, wire: str, detail: str, **kw: Any
) -> dict[str, Any]:
    return ev(
        "link_fail",
        cin,
        hin,
        cout,
        0,
        incoming_amt_msat=amt_in,
        outgoing_amt_msat=amt_out,
        incoming_timelock=880_180,
        outgoing_timelock=880_100,
        wire_failure=wire,
        failure_detail=detail,
        **kw,
    )


def forward(
    cin: int, hin: int, cout: int, hout: int, amt_in: int, amt_out: int, **kw: Any
) -> dict[str, Any]:
    return ev(
        "forward",
        cin,
        hin,
        cout,
        hout,
        incoming_amt_msat=amt_in,
        outgoing_amt_msat=amt_out,
        incoming_timelock=880_180,
        outgoing_timelock=880_100,
        **kw,
    )


def stamped(lines: list[dict[str, Any]], start_ns: int) -> list[dict[str, Any]]:
    """Give the events explicit, increasing timestamps (1 ms apart), so a line sent
    again is the same event."""
    out, ts = [], start_ns
    for line in lines:
        if "event" in line and "timestamp_ns" not in line:
            ts += 1_000_000
            line = {**line, "timestamp_ns": ts}
        out.append(line)
    return out


def jsonl(lines: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


def event_key(e: dict[str, Any]) -> tuple[int, ...]:
    return (
        int(EventKind[e["event"].upper()]),
        e["incoming_channel_id"],
        e["incoming_htlc_id"],
        e["outgoing_channel_id"],
        e["outgoing_htlc_id"],
    )


def status_json(db: StoreLocation) -> dict[str, Any]:
    status, out, err = run_lnflowctl("--db", db_arg(db), "status", "--json")
    assert (status, err) == (0, ""), err
    doc: dict[str, Any] = json.loads(out)
    return doc


def duplicate_keys(db: StoreLocation) -> list[tuple[Any, ...]]:
    return query(
        db,
        f"SELECT {EVENT_KEY}, count(*) FROM {EVENTS_SCID} GROUP BY {EVENT_KEY} HAVING count(*) > 1",
    )


# ------------------------------------------------------------------------- node restart


@pytest.mark.e2e
def test_node_restart_mid_stream_reconnects_records_the_gap_and_stores_replays_once(
    store_at: StoreAt,
    tmp_path: Path,
) -> None:
    t0 = time.time_ns() - 60 * NS
    first = stamped(
        [
            forward(CHAN_A, 1, CHAN_B, 1, 1_001_000, 1_000_000),
            ev("settle", CHAN_A, 1, CHAN_B, 1),
            forward(CHAN_A, 2, CHAN_B, 2, 2_002_000, 2_000_000),
            ev("forward_fail", CHAN_A, 2, CHAN_B, 2),
            link_fail(CHAN_C, 1, CHAN_B, 5_005_000, 5_000_000, "FEE_INSUFFICIENT", "NO_DETAIL"),
        ],
        t0,
    )
    new = stamped(
        [
            forward(CHAN_C, 2, CHAN_A, 1, 3_003_000, 3_000_000),
            ev("settle", CHAN_C, 2, CHAN_A, 1),
            ev("final", CHAN_C, 2, settled=True),
            link_fail(CHAN_A, 3, CHAN_C, 700_070, 700_000, "UNKNOWN_NEXT_PEER", "NO_DETAIL"),
        ],
        t0 + NS,
    )
    # after its restart lnd sends the last three events of before again, then new ones
    second = [{"op": "wait_subscribers", "count": 1}, *first[2:], *new]
    sent = {event_key(e) for e in first + new}
    assert len(sent) == 9

    db = store_at("s.db")
    script = [{"op": "wait_subscribers", "count": 1}, *first]
    with SimNode(tmp_path / "lnd", script=script) as sim, Daemon(sim, db) as d:
        d.wait_for(lambda c: count(c, "htlc_events") == len(first))
        assert sim.stop() == 0
        time.sleep(1.0)  # lnd is down: the daemon fails to reconnect and backs off
        (sim.lnddir / "script.jsonl").write_text(jsonl(second))
        sim.start()
        # The replays come before the new events on the same stream, so once the new
        # events are stored the replays have been through the store too.
        d.wait_for(lambda c: count(c, "htlc_events") >= len(sent), timeout=60)
        d.wait_for(lambda c: count(c, "stream_sessions", "subscribed_ns IS NOT NULL") == 2)
        status = status_json(db)
        assert d.stop() == 0

    assert count_rows(db, "htlc_events") == len(sent)
    assert duplicate_keys(db) == []
    stored = set(
        query(
            db,
            "SELECT kind, incoming_channel_id, incoming_htlc_id, outgoing_channel_id,"
            f" outgoing_htlc_id FROM {EVENTS_SCID}",
        )
    )
    assert stored == sent  # these channel ids are below 2**63: stored as they are
    per_session = dict(query(db, "SELECT session_id, count(*) FROM htlc_events GROUP BY 1"))
    assert per_session == {1: len(first), 2: len(new)}

    sessions = query(
        db, "SELECT id, started_ns, ended_ns, end_reason FROM stream_sessions ORDER BY id"
    )
    assert len(sessions) == 2
    (_, start1, end1, reason1), (_, start2, _end2, reason2) = sessions
    assert reason1 and reason1 != "shutdown" and "shutting down" in reason1
    assert reason2 == "shutdown"
    assert start1 < end1 and start2 - end1 >= NS  # lnd was down for at least a second

    stream = status["stream"]
    assert stream["connected"] is True
    assert stream["sessions"] == 2
    assert len(stream["gaps"]) == 1
    gap = stream["gaps"][0]
    assert set(gap) == {"from", "to"}
    assert gap["from"] is not None and gap["to"] is not None and gap["from"] <= gap["to"]
    counts = {k: v for k, v in status["counts"]["htlc_events"].items() if v}
    assert counts == {"forward": 3, "settle": 2, "forward_fail": 1, "link_fail": 2, "final": 1}
    # it found lnd unreachable at least once, kept probing on its own, and came back
    assert len(d.events("stream_reconnect_scheduled")) >= 2
    assert d.events("lnd_answering_again")


# ------------------------------------------------------------------------- ledger paging


def ledger_truth(sim: SimNode, page: int = 5000) -> list[int]:
    """Every forward's timestamp_ns the node serves, paging like a careful client."""
    channel = make_channel(sim, "readonly")
    try:
        stub = lightning_pb2_grpc.LightningStub(channel)
        stamps: list[int] = []
        offset = 0
        while True:
            resp = stub.ForwardingHistory(
                lightning_pb2.ForwardingHistoryRequest(
                    start_time=0, end_time=0, index_offset=offset, num_max_events=page
                ),
                timeout=30,
            )
            if not resp.forwarding_events:
                return stamps
            stamps += [f.timestamp_ns for f in resp.forwarding_events]
            offset = resp.last_offset_index
    finally:
        channel.close()


@pytest.fixture
def two_subscribers() -> Iterator[Any]:
    """Opens two HtlcEvents subscriptions on a node (the script's trigger), closes them."""
    opened: list[tuple[Any, Any]] = []

    def open_two(sim: SimNode) -> None:
        for _ in range(2):
            channel = make_channel(sim, "readonly")
            call = router_pb2_grpc.RouterStub(channel).SubscribeHtlcEvents(
                router_pb2.SubscribeHtlcEventsRequest()
            )
            opened.append((channel, call))
            next(call)  # the SubscribedEvent (lnd >= 0.16): the subscription is live

    yield open_two
    for channel, call in opened:
        call.cancel()
        channel.close()


@pytest.mark.e2e
def test_ledger_of_25000_forwards_is_paged_in_once_and_resumed_from_the_last_second(
    store_at: StoreAt, tmp_path: Path, two_subscribers: Any
) -> None:
    history = 25_000
    late_ns = time.time_ns() - 5 * NS  # newer than any preloaded record (>= 60 s old)
    script = [
        # no live events; one forward appears once two subscribers are connected, i.e.
        # once the test says so (the daemon alone is one subscriber)
        {"op": "wait_subscribers", "count": 2, "timeout_s": 3600},
        {
            "op": "forwarding_event",
            "timestamp_ns": late_ns,
            "chan_id_in": CHAN_A,
            "chan_id_out": CHAN_B,
            "amt_in_msat": 1_000_100,
            "amt_out_msat": 1_000_000,
        },
    ]
    db = store_at("s.db")
    env = {"LNFLOW_LEDGER__PAGE_SIZE": "1000"}
    args = ("--history", str(history))
    with SimNode(tmp_path / "lnd", script=script, args=args) as sim:
        truth = ledger_truth(sim)
        assert len(truth) == len(set(truth)) >= history
        with Daemon(sim, db, env=env) as d:
            d.wait_for(lambda c: count(c, "forwards") >= len(truth), timeout=90)
            assert d.stop() == 0
        stored, distinct, last_ns = query(
            db, "SELECT count(*), count(DISTINCT timestamp_ns), max(timestamp_ns) FROM forwards"
        )[0]
        assert stored == distinct == len(truth)
        assert {r[0] for r in query(db, "SELECT timestamp_ns FROM forwards")} == set(truth)
        (synced,) = d.events("ledger_synced")
        assert synced["new_forwards"] == len(truth)
        assert synced["pages"] == math.ceil(len(truth) / 1000)
        assert synced["from_s"] == 0
        rollup = query(db, "SELECT sum(forwards), sum(fee_msat) FROM forward_rollups_hourly")[0]
        assert rollup == query(db, "SELECT count(*), sum(fee_msat) FROM forwards")[0]

        # One new forward while the daemon is down; the restarted daemon must read from the
        # second of the newest stored forward: one page, one new record.
        two_subscribers(sim)
        deadline = time.monotonic() + 10
        while len(truth) == len(ledger_truth(sim)) and time.monotonic() < deadline:
            time.sleep(0.05)
        truth = ledger_truth(sim)
        assert late_ns in truth
        with Daemon(sim, db, env=env) as d:
            d.wait_for(lambda c: count(c, "forwards") == len(truth))
            assert d.stop() == 0
    first, second = d.events("ledger_synced")
    assert first == synced
    assert second["from_s"] == last_ns // NS
    assert second["pages"] == 1
    assert second["new_forwards"] == 1
    stored, distinct = query(db, "SELECT count(*), count(DISTINCT timestamp_ns) FROM forwards")[0]
    assert stored == distinct == len(truth)


# ------------------------------------------------------------------------- kill -9


@pytest.mark.e2e
def test_kill_9_mid_stream_leaves_a_sound_store_and_recording_resumes(
    store_at: StoreAt, tmp_path: Path
) -> None:
    db = store_at("s.db")
    args = ("--rate", "300", "--seed", "11", "--channels", "6")
    with SimNode(tmp_path / "lnd", args=args) as sim, Daemon(sim, db) as d:
        d.wait_for(lambda c: count(c, "htlc_events") > 400)
        assert d.kill() == -9
        before = count_rows(db, "htlc_events")
        d.start()
        d.wait_for(lambda c: count(c, "htlc_events") > before + 300)
        assert d.stop() == 0

    if not isinstance(db, DbUrl):  # SQLite's own checks of its file after the kill
        assert query(db, "PRAGMA integrity_check") == [("ok",)]
        assert query(db, "PRAGMA foreign_key_check") == []
    assert duplicate_keys(db) == []
    assert (
        query(
            db,
            "SELECT node_id, incoming_chan_ref, incoming_htlc_id FROM forward_attempts"
            " GROUP BY 1, 2, 3 HAVING count(*) > 1",
        )
        == []
    )
    sessions = query(
        db, "SELECT id, started_ns, ended_ns, end_reason FROM stream_sessions ORDER BY id"
    )
    assert len(sessions) == 2
    (id1, start1, end1, reason1), (id2, start2, end2, reason2) = sessions
    assert reason1 == "daemon stopped unexpectedly"
    assert start1 <= end1 <= start2 < end2
    assert reason2 == "shutdown"
    per_session = dict(query(db, "SELECT session_id, count(*) FROM htlc_events GROUP BY 1"))
    assert per_session[id1] >= before > 400  # what was committed before the kill is kept
    assert per_session[id2] > 300  # recording went on after the restart
    # what is derived from the events was committed with them, so it agrees with them
    failed_local = query(
        db,
        "SELECT count(*), coalesce(sum(missed_fee_msat), 0) FROM forward_attempts"
        " WHERE outcome = ?",
        int(Outcome.FAILED_LOCAL),
    )[0]
    rollups = query(
        db,
        "SELECT coalesce(sum(failures), 0), coalesce(sum(missed_raw_msat), 0)"
        " FROM failure_rollups_hourly",
    )[0]
    assert rollups == failed_local
    assert failed_local[0] > 0


@pytest.mark.e2e
def test_a_crashed_session_ends_no_earlier_than_the_events_it_stored(
    store_at: StoreAt, tmp_path: Path
) -> None:
    """Otherwise the gap reported after a crash covers time whose failures were seen."""
    db = store_at("s.db")
    args = ("--rate", "300", "--seed", "12", "--channels", "6")
    env = {"LNFLOW_RECORDER__HEARTBEAT_S": "60"}
    with SimNode(tmp_path / "lnd", args=args) as sim, Daemon(sim, db, env=env) as d:
        d.wait_for(lambda c: count(c, "htlc_events") > 300)
        assert d.kill() == -9
        d.start()
        d.wait_for(lambda c: count(c, "stream_sessions") == 2)
        assert d.stop() == 0
    ((ended, reason),) = query(db, "SELECT ended_ns, end_reason FROM stream_sessions WHERE id = 1")
    ((last_event,),) = query(db, "SELECT max(timestamp_ns) FROM htlc_events WHERE session_id = 1")
    assert reason == "daemon stopped unexpectedly"
    assert ended >= last_event, f"ended {(last_event - ended) / NS:.1f} s before its last event"


# ------------------------------------------------------------------------- lnd versions

VERSION_SCRIPT = [
    {"op": "wait_subscribers", "count": 1},
    forward(CHAN_A, 1, CHAN_B, 1, 1_001_000, 1_000_000),
    ev("settle", CHAN_A, 1, CHAN_B, 1),
    link_fail(CHAN_A, 2, CHAN_B, 2_002_000, 2_000_000, "TEMPORARY_CHANNEL_FAILURE", "NO_DETAIL"),
    ev("final", CHAN_A, 1, settled=True),  # skipped by the node before 0.16
]


@pytest.mark.parametrize(
    ("version", "events", "subscribed"),
    [("0.15.5", 3, False), ("0.18.3", 4, True)],
    ids=["0.15-no-subscribed-event", "0.18-subscribed-event"],
)
@pytest.mark.e2e
def test_stream_works_with_and_without_subscribed_event(
    store_at: StoreAt, tmp_path: Path, version: str, events: int, subscribed: bool
) -> None:
    db = store_at("s.db")
    barrier = forward(CHAN_A, 9, CHAN_B, 9, 1_001_000, 1_000_000)  # sent by every version
    script = stamped([*VERSION_SCRIPT, barrier], time.time_ns() - 10 * NS)
    with SimNode(tmp_path / "lnd", script=script, lnd_version=version) as sim, Daemon(sim, db) as d:
        d.wait_for(stored(script[-1]))  # so every event sent before it is through the store
        assert d.stop() == 0
    assert count_rows(db, "htlc_events") == events + 1
    ((subscribed_ns, lnd_version, reason),) = query(
        db, "SELECT subscribed_ns, lnd_version, end_reason FROM stream_sessions"
    )
    assert (subscribed_ns is not None) is subscribed
    assert lnd_version.startswith(version)
    assert reason == "shutdown"
    assert not d.events("live_failure_capture_off")


@pytest.mark.e2e
def test_lnd_without_htlc_events_syncs_the_ledger_and_says_capture_is_off(
    store_at: StoreAt, tmp_path: Path
) -> None:
    db = store_at("s.db")
    env = {"LNFLOW_RECORDER__HEARTBEAT_S": "1"}
    args = ("--history", "50", "--rate", "0")
    with (
        SimNode(tmp_path / "lnd", lnd_version="0.9.0", args=args) as sim,
        Daemon(sim, db, env=env) as d,
    ):
        d.wait_for(lambda c: count(c, "forwards") == 50)
        d.wait_for(lambda c: count(c, "channel_samples") > 0)
        # a few heartbeats later it is still up, still without a stream, and said so once
        started = query(db, "SELECT heartbeat_ns FROM daemon_state")[0][0]
        d.wait_for(
            lambda c: (
                c.execute("SELECT heartbeat_ns FROM daemon_state").fetchone()[0] > started + 2 * NS
            )
        )
        status = status_json(db)
        assert d.running()
        assert d.stop() == 0
    (warning,) = d.events("live_failure_capture_off")
    assert warning["level"] == "warning"
    assert "0.9.0" in warning["reason"]
    assert status["stream"]["connected"] is False
    assert status["stream"]["state"] == "unsupported"
    assert status["stream"]["sessions"] == 0
    assert status["daemon"]["running"] is True
    assert status["lnd"]["version"].startswith("0.9.0")
    assert status["counts"]["forwards"] == 50
    assert count_rows(db, "stream_sessions") == 0
    assert count_rows(db, "htlc_events") == 0
    assert count_rows(db, "forwards") == 50


# ------------------------------------------------------------------------- attempts

LIQ, MAX, FEE, AVAIL, POLICY, OTHER = (
    int(FailureClass.LIQUIDITY),
    int(FailureClass.MAX_HTLC),
    int(FailureClass.FEE),
    int(FailureClass.AVAILABILITY),
    int(FailureClass.POLICY),
    int(FailureClass.OTHER),
)
SETTLED, LOCAL, DOWNSTREAM = (
    int(Outcome.SETTLED),
    int(Outcome.FAILED_LOCAL),
    int(Outcome.FAILED_DOWNSTREAM),
)

BEFORE_DROP = [
    {"op": "wait_subscribers", "count": 1},
    # (A,1) out B, settled; lnd's final comes first, the forward last
    ev("final", CHAN_A, 1, settled=True),
    ev("settle", CHAN_A, 1, CHAN_B, 1),
    forward(CHAN_A, 1, CHAN_B, 1, 1_001_000, 1_000_000),
    # (A,2) liquidity at our node, no forward event; then lnd's final
    link_fail(
        CHAN_A,
        2,
        CHAN_B,
        2_002_000,
        2_000_000,
        "TEMPORARY_CHANNEL_FAILURE",
        "INSUFFICIENT_BALANCE",
        failure_string="insufficient bandwidth to route htlc",
    ),
    ev("final", CHAN_A, 2, settled=False),
    # (A,3) the sender retries the same amount with a higher fee: same demand cluster
    link_fail(
        CHAN_A, 3, CHAN_B, 2_003_000, 2_000_000, "TEMPORARY_CHANNEL_FAILURE", "INSUFFICIENT_BALANCE"
    ),
    # (C,1) fee too low, other incoming channel and amount: a new cluster on B
    link_fail(CHAN_C, 1, CHAN_B, 500_100, 500_000, "FEE_INSUFFICIENT", "NO_DETAIL"),
    # (A,4) failed downstream; the fail arrives before the forward
    ev("forward_fail", CHAN_A, 4, CHAN_C, 1),
    forward(CHAN_A, 4, CHAN_C, 1, 4_000_400, 4_000_000),
    ev("final", CHAN_A, 4, settled=False),
    # (A,5) peer offline, then (A,6) above max_htlc from the same incoming channel: one
    # cluster of two classes, its missed fee the larger one
    link_fail(CHAN_A, 5, CHAN_C, 3_000_300, 3_000_000, "UNKNOWN_NEXT_PEER", "NO_DETAIL"),
    link_fail(
        CHAN_A, 6, CHAN_C, 9_000_900, 9_000_000, "TEMPORARY_CHANNEL_FAILURE", "HTLC_EXCEEDS_MAX"
    ),
    # (B,1) bad timelock, and the sender paid less than it asked forward: missed fee 0
    link_fail(CHAN_B, 1, CHAN_C, 999_000, 1_000_000, "INCORRECT_CLTV_EXPIRY", "NO_DETAIL"),
    # (B,2) onion not decodable: no outgoing side at all
    link_fail(CHAN_B, 2, 0, 5_000, 0, "INVALID_ONION_HMAC", "ONION_DECODE"),
    # a payment to us, and its final: neither is a forward attempt
    ev("settle", CHAN_A, 7, event_type="RECEIVE"),
    ev("final", CHAN_A, 7, settled=True),
    # (C,2) out B settled; the settle arrives before the forward
    ev("settle", CHAN_C, 2, CHAN_B, 2),
    forward(CHAN_C, 2, CHAN_B, 2, 800_080, 800_000),
]
AFTER_DROP = [
    # lnd contradicting itself: a settle for a link-failed HTLC changes nothing
    ev("settle", CHAN_A, 2, CHAN_B, 0),
    # (C,3) liquidity on B from C: joins the fee cluster of (C,1) (same incoming channel)
    link_fail(CHAN_C, 3, CHAN_B, 700_070, 700_000, "TEMPORARY_CHANNEL_FAILURE",
              "INSUFFICIENT_BALANCE"),
]  # fmt: skip

# incoming key -> (outcome, class, missed_fee_msat, outgoing channel, final_settled)
EXPECTED_ATTEMPTS = {
    (CHAN_A, 1): (SETTLED, None, 0, CHAN_B, True),
    (CHAN_A, 2): (LOCAL, LIQ, 2_000, CHAN_B, False),
    (CHAN_A, 3): (LOCAL, LIQ, 3_000, CHAN_B, None),
    (CHAN_C, 1): (LOCAL, FEE, 100, CHAN_B, None),
    (CHAN_A, 4): (DOWNSTREAM, None, 0, CHAN_C, False),
    (CHAN_A, 5): (LOCAL, AVAIL, 300, CHAN_C, None),
    (CHAN_A, 6): (LOCAL, MAX, 900, CHAN_C, None),
    (CHAN_B, 1): (LOCAL, POLICY, 0, CHAN_C, None),
    (CHAN_B, 2): (LOCAL, OTHER, 0, 0, None),
    (CHAN_C, 2): (SETTLED, None, 0, CHAN_B, None),
    (CHAN_C, 3): (LOCAL, LIQ, 70, CHAN_B, None),
}

# (outgoing, incoming, class) -> failures, new clusters, missed raw, missed dedup (msat)
EXPECTED_ROLLUPS = {
    (CHAN_B, CHAN_A, LIQ): (2, 1, 5_000, 3_000),
    (CHAN_B, CHAN_C, FEE): (1, 1, 100, 100),
    (CHAN_B, CHAN_C, LIQ): (1, 0, 70, 0),
    (CHAN_C, CHAN_A, AVAIL): (1, 1, 300, 300),
    (CHAN_C, CHAN_A, MAX): (1, 0, 900, 600),
    (CHAN_C, CHAN_B, POLICY): (1, 1, 0, 0),
    (0, CHAN_B, OTHER): (1, 1, 0, 0),
}

# clusters: (outgoing, members, missed_fee_msat)
EXPECTED_CLUSTERS = sorted(
    [(CHAN_B, 2, 3_000), (CHAN_B, 2, 100), (CHAN_C, 2, 900), (CHAN_C, 1, 0), (0, 1, 0)]
)


@pytest.mark.e2e
def test_attempts_from_out_of_order_and_replayed_events(store_at: StoreAt, tmp_path: Path) -> None:
    db = store_at("s.db")
    t0 = time.time_ns() - 20 * NS
    before = stamped(BEFORE_DROP, t0)
    after = stamped(AFTER_DROP, t0 + 10 * NS)
    script = [
        *before,
        {"op": "sleep", "seconds": 0.3},
        {"op": "drop_streams", "code": "UNAVAILABLE", "details": "lnd is shutting down"},
        {"op": "wait_subscribers", "count": 1},
        {"op": "replay", "count": 12},  # lnd may replay after a restart
        *after,
    ]
    sent = {event_key(e) for e in before + after if "event" in e}
    with SimNode(tmp_path / "lnd", script=script) as sim, Daemon(sim, db) as d:
        d.wait_for(lambda c: count(c, "htlc_events") == len(sent))
        d.wait_for(lambda c: count(c, "stream_sessions") == 2)
        assert d.stop() == 0

    assert duplicate_keys(db) == []
    attempts = {
        (to_signed64(cin), hin): row
        for cin, hin, *row in query(
            db,
            "SELECT incoming_channel_id, incoming_htlc_id, outcome, failure_class,"
            f" missed_fee_msat, outgoing_channel_id, final_settled FROM {ATTEMPTS_SCID}",
        )
    }
    expected = {
        (to_signed64(c), h): [o, cls, fee, to_signed64(out), None if fs is None else int(fs)]
        for (c, h), (o, cls, fee, out, fs) in EXPECTED_ATTEMPTS.items()
    }
    assert attempts == expected

    rollups: dict[tuple[int, int, int], list[int]] = {}
    for out, inc, cls, *sums in query(
        db,
        "SELECT outgoing_channel_id, incoming_channel_id, failure_class, failures, clusters,"
        " missed_raw_msat, missed_dedup_msat FROM failure_rollups_hourly",
    ):
        acc = rollups.setdefault((out, inc, cls), [0, 0, 0, 0])
        for i, v in enumerate(sums):
            acc[i] += v
    assert rollups == {
        (to_signed64(out), to_signed64(inc), cls): list(sums)
        for (out, inc, cls), sums in EXPECTED_ROLLUPS.items()
    }
    fail_hours = {
        e["timestamp_ns"] // NS_PER_HOUR for e in before + after if e.get("event") == "link_fail"
    }
    assert {h for (h,) in query(db, "SELECT DISTINCT hour FROM failure_rollups_hourly")} == (
        fail_hours
    )

    clusters = sorted(
        (to_signed64(out) if out else 0, members, fee)
        for out, members, fee in query(
            db,
            "SELECT coalesce(r.chan_id, 0), members, missed_fee_msat FROM failure_clusters c"
            " LEFT JOIN channel_refs r ON r.id = c.outgoing_chan_ref",
        )
    )
    assert clusters == sorted((to_signed64(o), m, f) for o, m, f in EXPECTED_CLUSTERS)

    # the rollups add up to the attempts and the clusters they were derived from
    totals = query(
        db,
        "SELECT sum(failures), sum(clusters), sum(missed_raw_msat), sum(missed_dedup_msat)"
        " FROM failure_rollups_hourly",
    )[0]
    local = query(
        db,
        "SELECT count(*), sum(missed_fee_msat) FROM forward_attempts WHERE outcome = ?",
        LOCAL,
    )[0]
    cluster_sums = query(db, "SELECT count(*), sum(missed_fee_msat) FROM failure_clusters")[0]
    assert (totals[0], totals[2]) == local == (8, 6_370)
    assert (totals[1], totals[3]) == cluster_sums == (5, 4_000)


# ------------------------------------------------------------------------- memory


def test_attempt_tracker_memory_follows_the_attempts_it_holds() -> None:
    """What the recorder keeps per attempt must go when the attempt is forgotten
    (linger after its outcome), not when its timeout would have struck."""
    from lnflow.attempts import AttemptTracker
    from lnflow.domain import EventType, HtlcEvent

    per_s, seconds, linger_s = 250, 90, 10
    fwd = int(EventType.FORWARD)
    tracemalloc.start()
    try:
        tracker = AttemptTracker(timeout_ns=600 * NS, linger_ns=linger_s * NS)
        htlc = 0
        for second in range(seconds):
            base = T_MEM + second * NS
            for i in range(per_s):
                htlc += 1
                ts = base + i * (NS // per_s)
                for kind, dt in ((EventKind.FORWARD, 0), (EventKind.SETTLE, 50_000_000)):
                    tracker.feed(
                        HtlcEvent(ts + dt, kind, fwd, CHAN_A, htlc, CHAN_B, htlc, 1_001, 1_000)
                    )
            tracker.expire(base + NS)
        held = tracker.tracked
        traced, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held <= (linger_s + 2) * per_s
    # about 0.4 KB per attempt held (lnflow/attempts.py); 1 KB leaves room
    assert traced < 1024 * (linger_s + 2) * per_s, f"{traced / 2**20:.1f} MiB for {held} held"
