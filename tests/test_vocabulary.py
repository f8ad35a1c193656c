"""One word, one place: the failure classes, outcomes and states of lnflow.domain are the
only spelling of those concepts; the store's columns, the stored values, metrics labels,
export columns and display abbreviations all derive from them."""

from collections.abc import Callable, Iterator
from fractions import Fraction

import pytest
from daemonproc import query
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import inspect

from lnflow.analysis.classify import FailureClass as RulesFailureClass
from lnflow.analysis.opportunities import percentile as opportunities_percentile
from lnflow.attempts import Outcome as AttemptsOutcome
from lnflow.cli.render import CLASS_ABBREV, msat_as_sats
from lnflow.domain import (
    FAILURE_CLASS_NAMES,
    NS_PER_S,
    DaemonState,
    EventKind,
    EventType,
    FailureClass,
    FailureDetail,
    HtlcEvent,
    NodeInfo,
    Outcome,
    StreamState,
    WireFailure,
    nearest_rank,
    percentile,
    sats_text,
    to_signed64,
    wrap_signed64,
)
from lnflow.store.db import open_engine
from lnflow.store.engines import DbUrl, StoreLocation
from lnflow.store.export import export_rows
from lnflow.store.ingest import Ingestor
from lnflow.store.queries import liveness
from lnflow.store.rollups import CLASS_COLUMNS, class_index
from lnflow.store.writer import StoreWriter
from lnflowd.metrics import _class_label

T0 = 1_700_000_000 * NS_PER_S
NODE = NodeInfo("02" + "ab" * 32, "alice", "0.18.3-beta commit=v0.18.3-beta", "regtest", 100, True)
# the tables holding one (failures, missed) column pair per failure class
PER_CLASS_TABLES = (
    "failure_channel_hourly",
    "failure_channel_6h",
    "failure_channel_daily",
    "failure_channel_weekly",
    "opportunities",
)


@pytest.fixture
def store(
    store_at: Callable[[str], StoreLocation],
) -> Iterator[tuple[StoreLocation, StoreWriter]]:
    """A migrated store (every Alembic revision applied), on each engine for the tests
    marked ``both_engines``."""
    path = store_at("lnflow.db")
    engine = open_engine(path)
    yield path, StoreWriter(engine)
    engine.dispose()


both_engines = pytest.mark.engines("sqlite", "postgresql")


def test_the_failure_class_is_re_exported_where_the_rules_are() -> None:
    assert RulesFailureClass is FailureClass
    assert AttemptsOutcome is Outcome


def test_each_class_names_its_columns_labels_and_abbreviation() -> None:
    labels = [c.label for c in FailureClass]
    assert tuple(labels) == FAILURE_CLASS_NAMES
    assert len(set(labels)) == len({c.abbrev for c in FailureClass}) == len(FailureClass)
    for cls in FailureClass:
        assert cls.label == cls.name.lower()
        assert (cls.failures_column, cls.missed_column) == CLASS_COLUMNS[class_index(cls)]
        assert CLASS_ABBREV[cls.label] == cls.abbrev
        assert _class_label(int(cls)) == cls.label


@pytest.mark.parametrize("stored", [0, 7, 99, -1], ids=["zero", "next", "far", "negative"])
def test_a_class_number_newer_than_the_code_reads_as_other(stored: int) -> None:
    assert FailureClass.of_stored(stored) is FailureClass.OTHER
    assert class_index(stored) == class_index(FailureClass.OTHER)
    assert _class_label(stored) == "other"


@both_engines
@pytest.mark.parametrize("table", PER_CLASS_TABLES)
def test_every_class_has_its_columns_in_the_migrated_store(
    store: tuple[StoreLocation, StoreWriter], table: str
) -> None:
    path, _ = store
    engine = open_engine(path)
    columns = {c["name"] for c in inspect(engine).get_columns(table)}
    engine.dispose()
    wanted = {col for cls in FailureClass for col in (cls.failures_column, cls.missed_column)}
    assert wanted <= columns
    # and no class the code no longer knows
    stray = {c for c in columns if c.endswith("_failures") and c != "failures"}
    assert stray == {cls.failures_column for cls in FailureClass}


def _raw_state(path: StoreLocation) -> tuple[str, str, str, str]:
    """The states as stored, each with the type the engine reports for its value."""
    typeof = "pg_typeof({})::text" if isinstance(path, DbUrl) else "typeof({})"
    ((lnd, lnd_type, stream, stream_type),) = query(
        path,
        f"SELECT lnd_state, {typeof.format('lnd_state')}, stream_state,"
        f" {typeof.format('stream_state')} FROM daemon_state",
    )
    # a PostgreSQL text column's declared type: varchar (SQLAlchemy's String)
    return lnd, _TEXT.get(lnd_type, lnd_type), stream, _TEXT.get(stream_type, stream_type)


_TEXT = {"character varying": "text"}


@both_engines
def test_the_states_a_new_daemon_writes_are_the_enums_values(
    store: tuple[StoreLocation, StoreWriter],
) -> None:
    path, writer = store
    writer.daemon_started(T0, 30)
    assert _raw_state(path) == ("connecting", "text", "idle", "text")
    writer.daemon_stopped(T0 + NS_PER_S)
    assert _raw_state(path)[2] == "stopped"


@both_engines
@pytest.mark.parametrize(
    ("lnd", "stream"),
    [(d, s) for d, s in zip(DaemonState, list(StreamState)[: len(DaemonState)], strict=True)]
    + [(DaemonState.CONNECTED, s) for s in StreamState],
    ids=lambda v: str(v),
)
def test_a_stored_state_reads_back_as_its_member(
    store: tuple[StoreLocation, StoreWriter], lnd: DaemonState, stream: StreamState
) -> None:
    path, writer = store
    writer.daemon_started(T0, 30)
    writer.daemon_state(T0, lnd_state=lnd, stream_state=stream)
    raw_lnd, lnd_type, raw_stream, stream_type = _raw_state(path)
    assert (lnd_type, stream_type) == ("text", "text")
    assert DaemonState(raw_lnd) is lnd
    assert StreamState(raw_stream) is stream
    engine = open_engine(path)
    with engine.connect() as conn:
        status = liveness(conn, T0)
    engine.dispose()
    assert status.stream.state == stream
    assert status.stream.connected == (stream is StreamState.CONNECTED)


def _event(kind: EventKind, htlc: int, t: int, **extra: int) -> HtlcEvent:
    return HtlcEvent(
        timestamp_ns=T0 + t * NS_PER_S,
        kind=kind,
        event_type=int(EventType.FORWARD),
        incoming_channel_id=100,
        incoming_htlc_id=htlc,
        outgoing_channel_id=200,
        outgoing_htlc_id=htlc,
        **extra,
    )


@both_engines
def test_stored_outcomes_read_back_through_the_enum(
    store: tuple[StoreLocation, StoreWriter],
) -> None:
    path, writer = store
    node_id = writer.upsert_node(NODE, 1)
    session = writer.open_session(node_id, T0, "0.18.3-beta")
    amounts = {"incoming_amt_msat": 1_001_000, "outgoing_amt_msat": 1_000_000}
    events = [
        _event(EventKind.FORWARD, 1, 0, **amounts),
        _event(EventKind.SETTLE, 1, 1),
        _event(EventKind.FORWARD, 2, 2, **amounts),
        _event(EventKind.FORWARD_FAIL, 2, 3),
        _event(
            EventKind.LINK_FAIL,
            3,
            4,
            wire_failure=int(WireFailure.TEMPORARY_CHANNEL_FAILURE),
            failure_detail=int(FailureDetail.INSUFFICIENT_BALANCE),
            **amounts,
        ),
    ]
    engine = open_engine(path)
    ingestor = Ingestor(
        engine,
        node_id,
        attempt_timeout_ns=600 * NS_PER_S,
        attempt_linger_ns=0,
        dedup_window_ns=60 * NS_PER_S,
        cluster_max_span_ns=None,
    )
    ingestor.ingest(session, events, T0 + 3600 * NS_PER_S)
    engine.dispose()
    stored = dict(query(path, "SELECT incoming_htlc_id, outcome FROM forward_attempts"))
    assert {htlc: Outcome(v) for htlc, v in stored.items()} == {
        1: Outcome.SETTLED,
        2: Outcome.FAILED_DOWNSTREAM,
        3: Outcome.FAILED_LOCAL,
    }
    engine = open_engine(path)
    with engine.connect() as conn:
        header, rows = export_rows(conn, "attempts", 0)
        exported = [dict(zip(header, row, strict=True)) for row in rows]
    engine.dispose()
    assert {r["incoming_htlc_id"]: r["outcome"] for r in exported} == {
        htlc: Outcome(v).label for htlc, v in stored.items()
    }
    assert {r["failure_class"] for r in exported} == {None, FailureClass.LIQUIDITY.label}


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("count", "p", "rank"),
    [(10, 50, 5), (10, 90, 9), (9, 50, 5), (1, 99, 1), (5, 0, 1), (5, 100, 5), (3, 0.5, 1)],
    ids=["even-median", "p90", "odd-median", "one", "p0", "p100", "float"],
)
def test_nearest_rank(count: int, p: float, rank: int) -> None:
    assert nearest_rank(count, p) == rank


@given(
    st.lists(st.integers(0, 10**12), min_size=1, max_size=50),
    st.integers(0, 100) | st.fractions(0, 100) | st.floats(0, 100),
)
def test_percentile_is_one_rule(values: list[int], p: int | Fraction | float) -> None:
    got = percentile(values, p)
    assert got in values
    assert sum(v <= got for v in values) * 100 >= p * len(values)
    assert got == opportunities_percentile(values, p)


@pytest.mark.parametrize(
    ("msat", "decimals", "text"),
    [
        (1_234_567, None, "1,234.567"),
        (1_234_000, None, "1,234"),
        (1_234_500, None, "1,234.5"),
        (1, None, "0.001"),
        (1_234_567, 2, "1,234.57"),
        (1_234_567, 0, "1,235"),
        (999, 3, "0.999"),
    ],
)
def test_sats_text(msat: int, decimals: int | None, text: str) -> None:
    assert sats_text(msat, decimals) == text
    if decimals is not None:
        assert msat_as_sats(msat, decimals) == text


@given(st.integers(0, 2**64 - 1))
def test_the_unchecked_signed64_mapping_is_the_checked_one(value: int) -> None:
    assert wrap_signed64(value) == to_signed64(value)
