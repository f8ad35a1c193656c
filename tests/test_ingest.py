"""Recording batches: attempts, clusters and rollups derived in the same transaction."""

import itertools
from collections.abc import Sequence
from dataclasses import replace

import pytest
from conftest import StoreAt, plain_rows
from daemonproc import ATTEMPTS_SCID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.exc import DataError

from lnflow.analysis.classify import FailureClass
from lnflow.attempts import Outcome
from lnflow.domain import EventKind, EventType, FailureDetail, HtlcEvent, NodeInfo, WireFailure
from lnflow.store.db import open_engine
from lnflow.store.engines import DbUrl, StoreLocation
from lnflow.store.ingest import Ingestor
from lnflow.store.writer import StoreWriter

pytestmark = pytest.mark.engines("sqlite", "postgresql")

S = 1_000_000_000
T0 = 1_700_000_000 * S
NODE = NodeInfo("03" + "cd" * 32, "bob", "0.18.3-beta", "regtest", 1, True)
IN, OUT = 111 << 40, 222 << 40


def ev(
    kind: EventKind,
    htlc: int,
    t: int,
    *,
    out: int = OUT,
    out_htlc: int = 0,
    amt_in: int | None = None,
    amt_out: int | None = None,
    **kw: object,
) -> HtlcEvent:
    return HtlcEvent(
        timestamp_ns=T0 + t * S,
        kind=kind,
        event_type=int(EventType.UNKNOWN if kind is EventKind.FINAL else EventType.FORWARD),
        incoming_channel_id=IN,
        incoming_htlc_id=htlc,
        outgoing_channel_id=0 if kind is EventKind.FINAL else out,
        outgoing_htlc_id=0 if kind is EventKind.FINAL else out_htlc,
        incoming_amt_msat=amt_in,
        outgoing_amt_msat=amt_out,
        **kw,  # type: ignore[arg-type]
    )


def forward(h: int, t: int) -> HtlcEvent:
    return ev(EventKind.FORWARD, h, t, out_htlc=h, amt_in=1_001_000, amt_out=1_000_000)


def settle(h: int, t: int) -> HtlcEvent:
    return ev(EventKind.SETTLE, h, t, out_htlc=h)


def fwd_fail(h: int, t: int) -> HtlcEvent:
    return ev(EventKind.FORWARD_FAIL, h, t, out_htlc=h)


def final(h: int, t: int, settled: bool) -> HtlcEvent:
    return ev(EventKind.FINAL, h, t, settled=settled, offchain=True)


def link_fail(h: int, t: int, fee_msat: int = 2_000, amt: int = 500_000) -> HtlcEvent:
    return ev(
        EventKind.LINK_FAIL,
        h,
        t,
        amt_in=amt + fee_msat,
        amt_out=amt,
        wire_failure=int(WireFailure.TEMPORARY_CHANNEL_FAILURE),
        failure_detail=int(FailureDetail.INSUFFICIENT_BALANCE),
        failure_string="insufficient bandwidth to route htlc",
    )


class Store:
    def __init__(self, where: StoreLocation, max_span_s: int | None = None) -> None:
        self.max_span_ns = max_span_s * S if max_span_s is not None else None
        self.path = where
        self.engine = open_engine(self.path)
        writer = StoreWriter(self.engine)
        self.node_id = writer.upsert_node(NODE, 1)
        self.session = writer.open_session(self.node_id, T0, "0.18.3-beta")
        self.ingestor = self.restart()

    def restart(self) -> Ingestor:
        self.ingestor = Ingestor(
            self.engine,
            self.node_id,
            attempt_timeout_ns=60 * S,
            attempt_linger_ns=5 * S,
            dedup_window_ns=60 * S,
            cluster_max_span_ns=self.max_span_ns,
        )
        return self.ingestor

    def feed(self, events: list[HtlcEvent], now_s: int = 0) -> None:
        self.ingestor.ingest(self.session, events, T0 + now_s * S)

    def q(self, sql: str) -> list[tuple[object, ...]]:
        return plain_rows(self.path, self.engine, sql)

    def outcomes(self) -> dict[int, int]:
        return dict(self.q("SELECT incoming_htlc_id, outcome FROM forward_attempts"))  # type: ignore[arg-type]


SEQUENCES = {
    "settle in order": ([forward(1, 0), settle(1, 1), final(1, 2, True)], Outcome.SETTLED),
    "final first": ([final(1, 2, True), settle(1, 1), forward(1, 0)], Outcome.SETTLED),
    "settle before forward": ([settle(1, 1), forward(1, 0)], Outcome.SETTLED),
    "downstream": ([forward(1, 0), fwd_fail(1, 1), final(1, 2, False)], Outcome.FAILED_DOWNSTREAM),
    "downstream reversed": (
        [final(1, 2, False), fwd_fail(1, 1), forward(1, 0)],
        Outcome.FAILED_DOWNSTREAM,
    ),
    "local without forward": ([link_fail(1, 0), final(1, 1, False)], Outcome.FAILED_LOCAL),
    "local, final first": ([final(1, 1, False), link_fail(1, 0)], Outcome.FAILED_LOCAL),
    "forward only": ([forward(1, 0)], Outcome.PENDING),
}


@pytest.mark.parametrize(("events", "outcome"), SEQUENCES.values(), ids=SEQUENCES.keys())
@pytest.mark.parametrize("batching", ["one batch", "one event per batch"])
def test_sequences_resolve_whatever_the_order(
    store_at: StoreAt, events: list[HtlcEvent], outcome: Outcome, batching: str
) -> None:
    store = Store(store_at("s.db"))
    batches = [events] if batching == "one batch" else [[e] for e in events]
    for batch in batches:
        store.feed(batch)
    for batch in batches:  # a replay of everything changes nothing
        store.feed(batch)
    assert store.outcomes() == {1: int(outcome)}
    assert store.q("SELECT count(*) FROM htlc_events") == [(len(events),)]


def test_unresolved_after_the_timeout(store_at: StoreAt) -> None:
    store = Store(store_at("s.db"))
    store.feed([forward(1, 0), forward(2, 0), settle(2, 1)])
    store.feed([], now_s=61)
    assert store.outcomes() == {1: int(Outcome.UNRESOLVED), 2: int(Outcome.SETTLED)}


def test_rollups_match_the_attempts_and_replays_after_a_restart_count_nothing(
    store_at: StoreAt,
) -> None:
    store = Store(store_at("s.db"))
    # a retry burst (same incoming channel, within the window): one cluster, missed = max
    burst = [link_fail(h, h, fee_msat=1_000 * h) for h in range(1, 5)]
    later = [link_fail(10, 600, fee_msat=7_000)]  # outside the window: its own cluster
    store.feed(burst + later)
    expected = (5, 2, 1_000 + 2_000 + 3_000 + 4_000 + 7_000, 4_000 + 7_000)
    sums = (
        "SELECT sum(failures), sum(clusters), sum(missed_raw_msat), sum(missed_dedup_msat) "
        "FROM failure_rollups_hourly"
    )
    assert store.q(sums) == [expected]
    assert store.q("SELECT count(*), sum(missed_fee_msat) FROM failure_clusters") == [(2, 11_000)]
    assert store.q(
        "SELECT count(*), sum(missed_fee_msat) FROM forward_attempts WHERE outcome = 2"
    ) == [(5, expected[2])]

    store.restart()  # new process: empty memory, replayed stream
    store.feed(burst + later)
    assert store.q(sums) == [expected]
    # the second cluster was reopened: a retry 1 s after its failure joins it
    store.feed([link_fail(11, 601, fee_msat=9_000)])
    assert store.q("SELECT id, members, missed_fee_msat FROM failure_clusters WHERE id = 2") == [
        (2, 2, 9_000)
    ]
    store.feed([link_fail(12, 700, fee_msat=1_000)])  # outside the window: a new one
    assert store.q("SELECT max(id) FROM failure_clusters") == [(3,)]  # new ids continue


def test_pending_at_restart_becomes_unresolved_then_a_late_failure_decides(
    store_at: StoreAt,
) -> None:
    store = Store(store_at("s.db"))
    store.feed([forward(1, 0)])
    store.restart()
    assert store.ingestor.expire_stale_attempts(T0 + 5 * S) == 1
    assert store.outcomes() == {1: int(Outcome.UNRESOLVED)}
    store.feed([fwd_fail(1, 3)])
    assert store.outcomes() == {1: int(Outcome.FAILED_DOWNSTREAM)}


def test_replays_and_duplicates_inside_a_batch_are_stored_and_counted_once(
    store_at: StoreAt,
) -> None:
    """A batch mixing replays of stored events, an event twice and new ones stores and
    counts each event once, in the batch's order; PostgreSQL writes the batch in one
    statement per table, SQLite row by row: the same rows and counts on both."""
    store = Store(store_at("s.db"))
    first = [forward(1, 0), link_fail(2, 1), link_fail(3, 2)]
    assert store.ingestor.ingest(store.session, first, T0).new_events == 3
    again = [
        forward(1, 0),  # replays
        link_fail(2, 1),
        link_fail(4, 3),  # new, twice in the batch
        settle(1, 4),
        link_fail(4, 3),
        final(2, 5, False),
        link_fail(3, 2),  # a replay after the new ones
        final(4, 6, False),
    ]
    result = store.ingestor.ingest(store.session, again, T0 + 10 * S)
    assert result.new_events == 4
    assert result.events_by_type == {
        (EventKind.LINK_FAIL, int(EventType.FORWARD)): 1,
        (EventKind.SETTLE, int(EventType.FORWARD)): 1,
        (EventKind.FINAL, int(EventType.UNKNOWN)): 2,
    }
    assert result.local_failures == 1  # htlc 4: 2 and 3 were counted by the first batch
    assert store.q(
        f"SELECT incoming_htlc_id, kind, (timestamp_ns - {T0}) / {S} FROM htlc_events ORDER BY id"
    ) == [
        (1, int(EventKind.FORWARD), 0),
        (2, int(EventKind.LINK_FAIL), 1),
        (3, int(EventKind.LINK_FAIL), 2),
        (4, int(EventKind.LINK_FAIL), 3),
        (1, int(EventKind.SETTLE), 4),
        (2, int(EventKind.FINAL), 5),
        (4, int(EventKind.FINAL), 6),
    ]
    stored = "SELECT kind, count(*) FROM htlc_events GROUP BY kind"
    counted = "SELECT value, n FROM row_counts WHERE table_name = 'htlc_events' AND n <> 0"
    assert sorted(store.q(counted)) == sorted(store.q(stored))
    assert store.outcomes() == {
        1: int(Outcome.SETTLED),
        2: int(Outcome.FAILED_LOCAL),
        3: int(Outcome.FAILED_LOCAL),
        4: int(Outcome.FAILED_LOCAL),
    }
    by_outcome = "SELECT outcome, count(*) FROM forward_attempts GROUP BY outcome"
    kept = "SELECT value, n FROM row_counts WHERE table_name = 'forward_attempts' AND n <> 0"
    assert sorted(store.q(kept)) == sorted(store.q(by_outcome))
    assert _rollup_failures(store) == 3
    # the same batch once more changes nothing
    assert store.ingestor.ingest(store.session, again, T0 + 20 * S).new_events == 0
    assert _rollup_failures(store) == 3
    assert sorted(store.q(counted)) == sorted(store.q(stored))


def scids(store: Store) -> list[tuple[object, ...]]:
    """Each stored event's (htlc id, incoming SCID, outgoing SCID), SCIDs unsigned."""
    rows = store.q(
        "SELECT e.incoming_htlc_id, coalesce(ri.chan_id, 0), coalesce(ro.chan_id, 0)"
        " FROM htlc_events e LEFT JOIN channel_refs ri ON ri.id = e.incoming_chan_ref"
        " LEFT JOIN channel_refs ro ON ro.id = e.outgoing_chan_ref ORDER BY e.id"
    )
    return [(h, c_in % (1 << 64), c_out % (1 << 64)) for h, c_in, c_out in rows]  # type: ignore[operator]


def test_events_name_channels_by_ref_and_read_back_as_scids(store_at: StoreAt) -> None:
    store = Store(store_at("s.db"))
    big = (1 << 64) - (1 << 40)  # above 2**63: stored signed in channel_refs
    store.feed([forward(1, 0), final(1, 1, True)])
    store.feed([ev(EventKind.FORWARD, 2, 2, out=big, out_htlc=2), forward(3, 3)])
    assert scids(store) == [(1, IN, OUT), (1, IN, 0), (2, IN, big), (3, IN, OUT)]
    # one ref per channel, whichever side named it; lnd's 0 has none
    refs = store.q("SELECT chan_id FROM channel_refs ORDER BY id")
    assert sorted(c % (1 << 64) for (c,) in refs) == sorted([IN, OUT, big])  # type: ignore[operator]
    assert max(r for (r,) in store.q("SELECT outgoing_chan_ref FROM htlc_events")) <= 3  # type: ignore[type-var]
    store.restart()  # refs are read back, not numbered again
    store.feed([forward(4, 4), forward(3, 3)])  # 3 is a replay
    assert scids(store)[-1] == (4, IN, OUT)
    assert len(store.q("SELECT id FROM channel_refs")) == 3


def test_unknown_values_are_stored_as_null_and_flags_as_booleans(store_at: StoreAt) -> None:
    """What the driver binds for None and for bools (on SQLite through lnflow's adapters)."""
    where = store_at("s.db")
    store = Store(where)
    store.feed([forward(1, 0), final(1, 1, True), final(2, 2, False), settle(3, 3)])
    rows = store.q(
        "SELECT incoming_htlc_id, wire_failure IS NULL, failure_string IS NULL,"
        " incoming_amt_msat IS NULL, settled IS NULL, offchain IS NULL,"
        " CASE WHEN settled THEN 1 WHEN NOT settled THEN 0 END"
        " FROM htlc_events ORDER BY id"
    )
    assert [tuple(int(v) if v is not None else None for v in r) for r in rows] == [  # type: ignore[call-overload]
        (1, 1, 1, 0, 1, 1, None),
        (1, 1, 1, 1, 0, 0, 1),
        (2, 1, 1, 1, 0, 0, 0),
        (3, 1, 1, 1, 1, 1, None),
    ]
    if not isinstance(where, DbUrl):  # SQLite keeps a bool as the integer 1 or 0
        assert store.q(
            "SELECT typeof(settled), settled, typeof(offchain), typeof(wire_failure)"
            " FROM htlc_events WHERE kind = 5 ORDER BY id"
        ) == [("integer", 1, "integer", "null"), ("integer", 0, "integer", "null")]


def test_refs_of_a_failed_batch_are_not_reused(store_at: StoreAt) -> None:
    """A batch that fails rolls its new refs back: the next batch must not trust them."""
    store = Store(store_at("s.db"))
    a, b = 333 << 40, 444 << 40
    store.feed([forward(1, 0)])
    bad = ev(EventKind.FORWARD, 2, 1, out=a, amt_in=1 << 70)  # too big for 64 bits: fails
    with pytest.raises((OverflowError, DataError)):  # SQLite's driver, PostgreSQL's server
        store.feed([bad])
    # b now takes the id a had in the failed transaction; a gets a new one
    store.feed([ev(EventKind.FORWARD, 3, 2, out=b, out_htlc=3)])
    store.feed([ev(EventKind.FORWARD, 4, 3, out=a, out_htlc=4)])
    assert scids(store) == [(1, IN, OUT), (3, IN, b), (4, IN, a)]


def attempt_scids(store: Store) -> list[tuple[object, ...]]:
    """Each attempt's (htlc id, incoming SCID, outgoing SCID, outcome), SCIDs unsigned."""
    rows = store.q(
        f"SELECT incoming_htlc_id, incoming_channel_id, outgoing_channel_id, outcome"
        f" FROM {ATTEMPTS_SCID} ORDER BY id"
    )
    return [(h, c_in % (1 << 64), c_out % (1 << 64), o) for h, c_in, c_out, o in rows]  # type: ignore[operator]


def test_attempts_name_channels_by_the_events_refs(store_at: StoreAt) -> None:
    store = Store(store_at("s.db"))
    big = (1 << 64) - (1 << 40)  # above 2**63: stored signed in channel_refs
    store.feed([forward(1, 0), final(1, 2, True), settle(1, 1)])
    store.feed([link_fail(2, 3), ev(EventKind.FORWARD, 3, 4, out=big, out_htlc=3)])
    store.feed([final(4, 5, False)])  # no outgoing channel known (yet)
    assert attempt_scids(store) == [
        (1, IN, OUT, int(Outcome.SETTLED)),
        (2, IN, OUT, int(Outcome.FAILED_LOCAL)),
        (3, IN, big, int(Outcome.PENDING)),
        (4, IN, 0, int(Outcome.PENDING)),
    ]
    # the refs the events got, nothing more; 0 (no channel) stays 0
    assert len(store.q("SELECT id FROM channel_refs")) == 3
    assert store.q("SELECT outgoing_chan_ref FROM forward_attempts WHERE incoming_htlc_id = 4") == [
        (0,)
    ]
    # the key still deduplicates: a later event of attempt 4 names its outgoing channel
    store.feed([link_fail(4, 4)])
    assert attempt_scids(store)[-1] == (4, IN, OUT, int(Outcome.FAILED_LOCAL))
    assert len(store.q("SELECT id FROM forward_attempts")) == 4
    # the failures' demand cluster names its outgoing channel by the same ref
    assert store.q(
        "SELECT r.chan_id FROM failure_clusters c JOIN channel_refs r ON r.id = c.outgoing_chan_ref"
    ) == [(OUT,)]


def test_an_attempt_whose_channel_has_no_ref_gets_one(store_at: StoreAt) -> None:
    """The tracker may hold an attempt whose events were in a batch that failed (its
    refs rolled back): writing the attempt later numbers its channels again."""
    store = Store(store_at("s.db"))
    c = 555 << 40
    store.ingestor.tracker.feed(ev(EventKind.FORWARD, 7, 0, out=c, out_htlc=7))
    store.feed([forward(1, 100)], now_s=100)  # 7 has been pending for longer than 60 s
    assert attempt_scids(store) == [
        (1, IN, OUT, int(Outcome.PENDING)),
        (7, IN, c, int(Outcome.UNRESOLVED)),
    ]


def _send_link_fail(t: int) -> HtlcEvent:
    # lnd: an own payment failing at the first hop has no incoming side and no htlc id
    return HtlcEvent(
        timestamp_ns=T0 + t,
        kind=EventKind.LINK_FAIL,
        event_type=int(EventType.SEND),
        incoming_channel_id=0,
        incoming_htlc_id=0,
        outgoing_channel_id=OUT,
        outgoing_htlc_id=0,
        outgoing_amt_msat=50_000_000,
        wire_failure=int(WireFailure.TEMPORARY_CHANNEL_FAILURE),
        failure_detail=int(FailureDetail.INSUFFICIENT_BALANCE),
        failure_string="insufficient bandwidth to route htlc",
    )


@pytest.mark.parametrize("batching", ["one batch", "one event per batch"])
def test_own_payments_failing_at_the_first_hop_are_all_kept(
    store_at: StoreAt, batching: str
) -> None:
    store = Store(store_at("s.db"))
    sends = [_send_link_fail(t) for t in (1, 2, 3)]
    batches = [sends] if batching == "one batch" else [[e] for e in sends]
    new = [store.ingestor.ingest(store.session, b, T0).new_events for b in batches]
    assert sum(new) == 3
    # a replay of them (same events, same times) still adds nothing
    assert store.ingestor.ingest(store.session, [*sends, sends[0]], T0).new_events == 0
    assert store.q(f"SELECT timestamp_ns - {T0}, event_type FROM htlc_events ORDER BY id") == [
        (1, 1),
        (2, 1),
        (3, 1),
    ]
    assert store.outcomes() == {}  # own payments are no forwards


def _rollup_failures(store: Store) -> int:
    return int(store.q("SELECT coalesce(sum(failures), 0) FROM failure_rollups_hourly")[0][0])  # type: ignore[arg-type]


@pytest.mark.parametrize("batching", ["one batch", "one event per batch"])
def test_a_failure_is_stored_in_the_hour_its_rollups_count_it(
    store_at: StoreAt, batching: str
) -> None:
    """A second LINK_FAIL of the same forward (another outgoing channel, so no replay)
    dated before the one that decided it, across an hour boundary: the stored
    ``resolved_ns`` stays in the hour the rollups counted the failure in, however the
    events were batched (the analysis ranks the raw rows with the rollups' counts)."""
    store = Store(store_at("s.db"))
    boundary_s = 3_600 - (T0 // S) % 3_600  # T0 + boundary_s starts an hour
    deciding = link_fail(1, boundary_s + 5)
    earlier = replace(link_fail(1, boundary_s - 5), outgoing_channel_id=OUT + 1)
    events = [deciding, earlier]
    for batch in [events] if batching == "one batch" else [[e] for e in events]:
        store.feed(batch)
    assert store.q("SELECT count(*) FROM htlc_events") == [(2,)]
    ((resolved_ns,),) = store.q("SELECT resolved_ns FROM forward_attempts")
    hour = int(resolved_ns) // (3_600 * S)  # type: ignore[call-overload]
    assert store.q("SELECT hour, failures FROM failure_rollups_hourly") == [(hour, 1)]
    assert store.q("SELECT hour, liquidity_failures FROM failure_channel_hourly") == [(hour, 1)]
    assert resolved_ns == deciding.timestamp_ns  # the event that decided it


def test_a_malformed_onion_counts_once_as_a_local_failure(store_at: StoreAt) -> None:
    store = Store(store_at("s.db"))
    store.feed([final(1, 0, False)])  # lnd sends nothing else for a malformed onion
    assert store.outcomes() == {1: int(Outcome.PENDING)}
    store.feed([], now_s=61)
    store.feed([], now_s=62)
    assert store.outcomes() == {1: int(Outcome.FAILED_LOCAL)}
    ((cls, missed, amt_out, resolved),) = store.q(
        "SELECT failure_class, missed_fee_msat, outgoing_amt_msat, resolved_ns"
        " FROM forward_attempts"
    )
    assert (cls, missed, amt_out, resolved) == (int(FailureClass.OTHER), 0, None, T0)
    assert _rollup_failures(store) == 1


@pytest.mark.engines("sqlite")  # SQLite's query plans
def test_an_expired_malformed_onion_is_looked_up_by_its_key(store_at: StoreAt) -> None:
    """Whether the store holds an outcome for a malformed onion that expires is one seek
    on the attempts' key per attempt, not a walk over the node's every attempt (which
    cost ~1 s a batch on a store of 2 M attempts)."""
    store = Store(store_at("s.db"))
    store.feed([e for h in range(2, 50) for e in (forward(h, 0), settle(h, 1))])
    # malformed onions expiring in one batch (SQLite's plan for the OR changes at three)
    store.feed([final(h, 2, False) for h in (1, 50, 51, 52, 53)])
    looked_up: list[tuple[str, object]] = []

    def record(
        conn: object, cursor: object, statement: str, parameters: object, *_: object
    ) -> None:
        if "outcome" in statement and statement.lstrip().upper().startswith("SELECT"):
            looked_up.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        store.feed([], now_s=63)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    outcomes = store.outcomes()
    assert [outcomes[h] for h in (1, 50, 51, 52, 53)] == [int(Outcome.FAILED_LOCAL)] * 5
    assert _rollup_failures(store) == 5
    assert looked_up
    with store.engine.connect() as conn:
        plan = [
            row[3]
            for statement, parameters in looked_up
            for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        ]
    on_attempts = [line for line in plan if "forward_attempts" in line]
    assert on_attempts, plan
    assert all("incoming_htlc_id=?" in line for line in on_attempts), plan


def test_a_final_after_a_restart_is_no_second_failure(store_at: StoreAt) -> None:
    store = Store(store_at("s.db"))
    store.feed([link_fail(1, 0)])
    store.restart()  # the daemon restarted between lnd's LINK_FAIL and its FINAL
    store.feed([final(1, 1, False)])
    store.feed([], now_s=62)
    assert store.outcomes() == {1: int(Outcome.FAILED_LOCAL)}
    assert store.q("SELECT failure_class FROM forward_attempts") == [(int(FailureClass.LIQUIDITY),)]
    assert _rollup_failures(store) == 1


# --------------------------------------------------------------------------- event time

IN2, OUT2 = 333 << 40, 444 << 40


def fail_via(h: int, t: float, *, inc: int = IN, out: int = OUT, amt: int = 500_000) -> HtlcEvent:
    """A local failure ``t`` seconds after T0 (fractions allowed)."""
    e = link_fail(h, 0, fee_msat=1_000 + h, amt=amt)
    return replace(
        e,
        timestamp_ns=T0 + int(t * S),
        incoming_channel_id=inc,
        outgoing_channel_id=out,
    )


# Retry bursts on two channels, with settled forwards between them, 45 to 75 s apart
# (each joins the cluster before it), one burst longer than the 600 s span, and one
# failure dated earlier than the one before it (another subscription's order).
SCRIPT: list[HtlcEvent] = []
for i in range(24):
    SCRIPT.append(fail_via(100 + i, 45 * i, amt=500_000 + (i % 2)))
    if i % 3 == 0:
        SCRIPT += [forward(200 + i, 45 * i + 1), settle(200 + i, 45 * i + 2)]
    SCRIPT.append(
        fail_via(300 + i, 45 * i + 7 + 30 * (i >= 12), inc=IN2 if i % 4 else IN, out=OUT2)
    )
SCRIPT.append(fail_via(400, 45 * 23 - 20))  # out of order by 20 s
SCRIPT.append(fail_via(401, 45 * 23 + 200))  # after the window: its own cluster

DERIVED = {
    "clusters": "SELECT c.id, r.chan_id, first_ns, last_ns, members, missed_fee_msat"
    " FROM failure_clusters c JOIN channel_refs r ON r.id = c.outgoing_chan_ref ORDER BY c.id",
    "attempts": "SELECT incoming_htlc_id, outcome, cluster_id FROM forward_attempts"
    " ORDER BY incoming_htlc_id",
    "rollups": "SELECT * FROM failure_rollups_hourly ORDER BY 1, 2, 3, 4, 5",
    "per channel": "SELECT * FROM failure_channel_hourly ORDER BY 1, 2, 3",
}


def derived(store: Store) -> dict[str, list[tuple[object, ...]]]:
    return {name: store.q(sql) for name, sql in DERIVED.items()}


def record(
    where: StoreLocation, cuts: Sequence[int], *, restart_at: frozenset[int], lag_s: int
) -> dict[str, list[tuple[object, ...]]]:
    """SCRIPT fed in batches ending at ``cuts``, the daemon restarted after the batches in
    ``restart_at``, each batch recorded ``lag_s`` after its last event (wall clock)."""
    store = Store(where, max_span_s=600)
    bounds = [0, *sorted(set(cuts)), len(SCRIPT)]
    for n, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        batch = SCRIPT[lo:hi]
        if batch:
            last_s = (max(e.timestamp_ns for e in batch) - T0) // S
            store.feed(batch, now_s=last_s + lag_s)
        if n in restart_at:
            store.restart()
    return derived(store)


@pytest.fixture(scope="module")
def one_stream(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[object, ...]]]:
    return record(tmp_path_factory.mktemp("one") / "s.db", [], restart_at=frozenset(), lag_s=0)


def test_the_script_exercises_joins_spans_and_splits(
    one_stream: dict[str, list[tuple[object, ...]]],
) -> None:
    sizes = sorted(members for *_, members, _ in one_stream["clusters"])  # type: ignore[misc]
    assert len(sizes) >= 4 and sizes[-1] > 5 and sizes[0] == 1


CUTS = {
    "every event its own batch": (list(range(1, len(SCRIPT))), frozenset(), 0),
    "lnd's clock 1 h behind the daemon": (list(range(2, len(SCRIPT), 2)), frozenset(), 3_600),
    "daemon lagging 61 s": (list(range(1, len(SCRIPT), 3)), frozenset(), 61),
    "restart after every batch": (
        list(range(5, len(SCRIPT), 5)),
        frozenset(range(len(SCRIPT))),
        0,
    ),
    "restart inside a burst, clock ahead": ([17, 18, 40], frozenset({0, 2}), 7_200),
}


@pytest.mark.parametrize(("cuts", "restart_at", "lag_s"), CUTS.values(), ids=list(CUTS.keys()))
def test_same_events_same_clusters_however_cut(
    store_at: StoreAt,
    one_stream: dict[str, list[tuple[object, ...]]],
    cuts: list[int],
    restart_at: frozenset[int],
    lag_s: int,
) -> None:
    assert record(store_at("s.db"), cuts, restart_at=restart_at, lag_s=lag_s) == one_stream


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts=st.lists(st.integers(1, len(SCRIPT) - 1), max_size=8),
    restarts=st.frozensets(st.integers(0, 8), max_size=3),
    lag_s=st.sampled_from([0, 61, 3_600]),
)
def test_same_events_same_clusters_at_random_cuts(
    tmp_path_factory: pytest.TempPathFactory,
    one_stream: dict[str, list[tuple[object, ...]]],
    cuts: list[int],
    restarts: frozenset[int],
    lag_s: int,
) -> None:
    got = record(tmp_path_factory.mktemp("cut") / "s.db", cuts, restart_at=restarts, lag_s=lag_s)
    assert got == one_stream


def test_two_nodes_recording_in_turn_number_their_clusters_apart(store_at: StoreAt) -> None:
    """Two nodes' daemons writing one store in turn: each numbers new clusters past every
    cluster stored, so neither overwrites the other's (cluster ids are the store's)."""
    first = Store(store_at("s.db"))
    second_node = StoreWriter(first.engine).upsert_node(replace(NODE, pubkey="02" + "ee" * 32), 2)
    second = Ingestor(
        first.engine,
        second_node,
        attempt_timeout_ns=60 * S,
        attempt_linger_ns=5 * S,
        dedup_window_ns=60 * S,
        cluster_max_span_ns=None,
    )
    session = StoreWriter(first.engine).open_session(second_node, T0, "0.18.3-beta")
    first.feed([link_fail(1, 0, fee_msat=1_000)])  # both started on an empty store
    second.ingest(session, [link_fail(1, 0, fee_msat=7_000)], T0)
    first.feed([link_fail(2, 100, fee_msat=2_000)])  # a new cluster: past the window
    second.ingest(session, [link_fail(2, 100, fee_msat=9_000)], T0 + 100 * S)
    assert first.q("SELECT id, node_id, missed_fee_msat FROM failure_clusters ORDER BY id") == [
        (1, first.node_id, 1_000),
        (2, second_node, 7_000),
        (3, first.node_id, 2_000),
        (4, second_node, 9_000),
    ]
    assert first.q(
        "SELECT node_id, incoming_htlc_id, cluster_id FROM forward_attempts ORDER BY 3"
    ) == [(first.node_id, 1, 1), (second_node, 1, 2), (first.node_id, 2, 3), (second_node, 2, 4)]
