"""Failed-amount percentiles of windows ranked with the rollups' failure counts, after
retention deleted older attempts (migration 0023's horizon): a window starting after the
node's horizon takes each channel's count from the summary, one reaching back before it
counts the raw rows kept; both rank exactly the raw rows kept, checked one row at a time.

Recorded through the real ingest, pruned by the real :class:`Pruner` (its TTL and its
size budget), read as the analysis reads.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import StoreAt
from daemonproc import ATTEMPTS_SCID, link_fail
from sqlalchemy import inspect, select, text
from test_analysis_queries import (
    IN1,
    IN2,
    IN3,
    LIQ,
    NODE,
    PERCENTS,
    A,
    B,
    E,
    RawTruth,
    Store,
    amounts_of,
    fetch,
    load,
    make_ingestor,
    recorded,
)

import lnflow.store.read.details as read_details
from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import ClassStats, DetailRequest
from lnflow.analysis.ranks import percentile
from lnflow.config import RetentionSettings
from lnflow.domain import FailureDetail, ForwardRecord, from_signed64
from lnflow.store import db
from lnflow.store.db import open_engine
from lnflow.store.retention import Pruner
from lnflow.store.schema import (
    failure_channel_6h,
    failure_channel_daily,
    failure_channel_hourly,
    failure_channel_weekly,
    forward_attempts,
    retention_horizons,
)
from lnflow.store.writer import NS_PER_HOUR, StoreWriter

pytestmark = pytest.mark.engines("sqlite", "postgresql")

S = 1_000_000_000
H = NS_PER_HOUR
DAY = 24 * H
TTL = {
    name: int(value)
    for name, value in RetentionSettings().model_dump().items()
    if name.endswith("_days")
}
CLASSES = (FailureClass.LIQUIDITY, FailureClass.MAX_HTLC)
OUTS = (A, B, E)


@pytest.fixture
def store(store_at: StoreAt) -> Iterator[Store]:
    engine = open_engine(store_at("s.db"))
    writer = StoreWriter(engine)
    yield Store(engine, writer, writer.upsert_node(NODE, 1))
    engine.dispose()


def record(s: Store, pruner: Pruner, days: int, no_channel: float = 0.0) -> tuple[int, int]:
    """``days`` of liquidity and max_htlc failures (a few with no amount), recorded in
    batches as the daemon records them, with a prune run's recording mark every hour of
    recording; returns (first, last) failure time. ``no_channel``: the share of failures
    lnd named no outgoing channel and no amount for."""
    rng = random.Random(11)
    t0 = 700_000 * H + 17 * 60 * S
    session = s.writer.open_session(s.node_id, t0, "0.18.3-beta")
    ingestor = make_ingestor(s)
    events, ts = [], t0
    max_htlc = {"detail": FailureDetail.HTLC_EXCEEDS_MAX}
    for htlc in range(days * 60):
        ts += rng.randrange(1, 48) * 60 * S
        amount = rng.choice((0, 150_000, 250_000, 350_000, 450_000, 550_000, 650_000))
        kind = LIQ if rng.random() < 0.7 else max_htlc
        out = rng.choice(OUTS)
        if no_channel and rng.random() < no_channel:
            out, amount = 0, 0
        events.append(link_fail(htlc, ts, out, rng.choice((IN1, IN2, IN3)), amount, 9, **kind))
    last_mark = 0
    for i in range(0, len(events), 5):
        batch = events[i : i + 5]
        now = batch[-1].timestamp_ns
        ingestor.ingest(session, batch, now)
        if now - last_mark >= H:
            pruner.mark(now)
            last_mark = now
    return t0, ts


def horizon(s: Store) -> int | None:
    h = retention_horizons
    with s.engine.connect() as conn:
        return conn.scalar(select(h.c.deleted_through_ns).where(h.c.node_id == s.node_id))


def check_windows(s: Store, windows: list[tuple[int, int]]) -> None:
    """Each window's percentiles, asked with the summary's counts as the analysis asks,
    equal the nearest ranks of the raw rows kept."""
    truth = RawTruth.read(s)
    for until, hours in windows:
        since = until - hours * H
        inp = load(s, until, hours)
        asked = [
            (out, cls, inp.failures[out].by_class.get(cls, ClassStats(0, 0)).failures)
            if out in inp.failures
            else (out, cls, 0)
            for out in OUTS
            for cls in CLASSES
        ]
        facts = fetch(s, DetailRequest(since, until, until, amounts_of(*asked)))
        for out in OUTS:
            for cls in CLASSES:
                amounts = sorted(truth.amounts(out, cls, since, until))
                expected = tuple(percentile(amounts, p) for p in PERCENTS) if amounts else ()
                assert facts.amount_percentiles(out, cls, PERCENTS) == expected, (
                    until,
                    hours,
                    out,
                    cls,
                )


def windows_around(mark: int, first: int, end: int) -> tuple[list, list]:  # type: ignore[type-arg]
    """(windows starting after ``mark``, windows reaching back to or before it), long
    and short, ending on the hour, mid-hour and at the data's end."""
    after = [(end + H, hours) for hours in (24, 48)] + [
        (end - 20 * 60 * S - 34 * S, 30),
        (mark + 170 * H, 169),
        (mark + 1 + 200 * H, 200),
    ]
    back = end + 30 * 60 * S
    before = [(end + H, (end - first) // H + 2), (back, (back - mark) // H + 1)]
    before += [(mark + 168 * H, 168), (mark + 1 + 200 * H, 201), (mark + 5 * H, 240)]
    assert all(until - hours * H > mark for until, hours in after)
    assert all(until - hours * H <= mark for until, hours in before)
    return after, before


@pytest.mark.parametrize("amounts_in_sql", [3, read_details.RANK_IN_SQL_FROM_AMOUNTS])
def test_windows_after_expired_attempts_rank_exactly(
    store: Store,
    amounts_in_sql: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Attempts expired by their TTL (rollups kept): windows on either side of the
    horizon rank exactly the raw rows kept."""
    monkeypatch.setattr(read_details, "RANK_IN_SQL_FROM_AMOUNTS", amounts_in_sql)
    pruner = Pruner(store.engine, {**TTL, "attempts_days": 10})
    first, end = record(store, pruner, days=20)
    assert horizon(store) is None
    report = pruner.prune(end + H, 200, 1000)
    assert report.expired["forward_attempts"] > 0 and report.complete
    mark = horizon(store)
    assert mark is not None and first < mark < end - 9 * DAY
    after, before = windows_around(mark, first, end)
    check_windows(store, after + before)


def test_windows_after_attempts_dropped_for_the_size_budget_rank_exactly(
    store: Store,
) -> None:
    """The size budget drops the oldest raw rows: events, then attempts. Two batches of
    attempts dropped, windows on either side of the horizon rank exactly."""
    keep = dict.fromkeys(TTL, 0)  # no TTL: the budget alone deletes
    pruner = Pruner(store.engine, keep, max_db_mb=1)  # less than the store
    first, end = record(store, pruner, days=20)
    # a ledger larger than the budget (never dropped): the store stays over it
    ledger = [ForwardRecord(first - DAY + i, IN1, A, 2_000, 1_000, 1) for i in range(20_000)]
    store.writer.insert_forwards(store.node_id, ledger)
    batches = 0
    while batches < 2:
        step = pruner.prune_step(end + H, 150)
        assert step.cause == "size"
        batches += step.table == forward_attempts.name
    mark = horizon(store)
    assert mark is not None and first < mark < end - 9 * DAY
    after, before = windows_around(mark, first, end)
    check_windows(store, after + before)


def test_rollups_pruned_before_the_attempts_count_the_raw_rows(store: Store) -> None:
    """Rollups kept shorter than the attempts: the horizon covers the pruned periods, so
    windows reaching into them count the raw rows kept and still rank exactly."""
    pruner = Pruner(store.engine, {**TTL, "rollups_days": 8, "attempts_days": 400})
    first, end = record(store, pruner, days=20)
    pruner.prune(end + H, 500, 1000)
    with store.engine.connect() as conn:
        kept = conn.scalar(select(forward_attempts.c.id).limit(1))
    assert kept is not None  # no attempt deleted, only rollups
    mark = horizon(store)
    assert mark is not None and first < mark < end - 7 * DAY
    after, before = windows_around(mark, first, end)
    check_windows(store, after + before)


def test_rollups_counting_more_than_the_rows_kept_fall_back_to_counting_them(
    store: Store,
) -> None:
    """Attempts deleted by hand, not by retention (no horizon): the rollups count more
    failures than the rows hold, a walk finds no amount at its rank, and the class is
    counted from the rows instead: no error, the raw rows' ranks."""
    pruner = Pruner(store.engine, dict.fromkeys(TTL, 0))
    _, end = record(store, pruner, days=10)
    a = forward_attempts
    liquidity = a.c.failure_class == int(FailureClass.LIQUIDITY)
    with store.engine.begin() as conn:
        kept = conn.scalars(select(a.c.id).where(liquidity).order_by(a.c.id.desc()).limit(3))
        conn.execute(a.delete().where(liquidity, a.c.id.not_in(list(kept))))
    assert horizon(store) is None
    check_windows(store, [(end + H, 240), (end + H, 200)])


# -- the failures with no amount (0025) -------------------------------------------------


def unknown_of(s: Store, since: int, until: int) -> Counter[int]:
    """The window's local failures with no amount per outgoing channel (0: none), one raw
    row at a time."""
    with s.engine.connect() as conn:
        found = conn.execute(
            text(
                f"SELECT outgoing_channel_id, resolved_ns, outgoing_amt_msat FROM {ATTEMPTS_SCID}"
                " WHERE outcome = 2"
            )
        ).all()
    return Counter(
        from_signed64(out) for out, ts, amount in found if amount is None and since <= ts < until
    )


def _time_params(parameters: Any) -> list[int]:
    values = parameters.values() if isinstance(parameters, dict) else parameters
    return sorted(v for v in values if isinstance(v, int) and v > 10**15)


def check_unknown(s: Store, after: list[tuple[int, int]], before: list[tuple[int, int]]) -> None:
    """Each window's failures with no amount per outgoing channel are the raw rows'; those
    starting after the horizon count raw rows of their partial hours only (the rest from
    the rollups), the others the whole window."""
    for windows, from_rollups in ((after, True), (before, False)):
        for until, hours in windows:
            since = until - hours * H
            with recorded(s.engine) as statements:
                inp = load(s, until, hours)
            assert inp.unknown_amount == unknown_of(s, since, until), (until, hours)
            ranges = [
                _time_params(params)
                for statement, params in statements
                if "outgoing_amt_msat IS NULL" in statement
            ]
            if from_rollups:
                assert all(hi - lo <= H for lo, hi in ranges), (until, hours, ranges)
            else:
                assert ranges == [[since, until]], (until, hours, ranges)


def test_failures_with_no_amount_count_from_rollups_after_the_horizon_only(
    store: Store,
) -> None:
    """Attempts expired by their TTL (rollups kept, so they count more failures with no
    amount than the raw rows before the horizon): windows after it sum the rollups,
    windows reaching back to it count the raw rows kept; both equal the raw rows kept,
    failures with no outgoing channel (0) included."""
    pruner = Pruner(store.engine, {**TTL, "attempts_days": 10})
    first, end = record(store, pruner, days=20, no_channel=0.1)
    # before any retention (no horizon) every window is summed from the rollups
    check_unknown(store, [(end + H, 24), (end - 20 * 60 * S - 34 * S, 400)], [])
    assert unknown_of(store, first, end + 1)[0] > 0  # some with no outgoing channel
    report = pruner.prune(end + H, 200, 1000)
    assert report.expired["forward_attempts"] > 0 and report.complete
    mark = horizon(store)
    assert mark is not None and first < mark < end - 9 * DAY
    after, before = windows_around(mark, first, end)
    check_unknown(store, after, before)
    # what the rollups count before the horizon is more than the rows kept: the raw count
    # of the windows reaching back to it is no copy of the rollups'
    assert unknown_of(store, first, end + 1) != _rolled_unknown(store)


_FAILURE_CHANNEL = (
    failure_channel_hourly,
    failure_channel_6h,
    failure_channel_daily,
    failure_channel_weekly,
)


def _rolled_unknown(s: Store) -> Counter[int]:
    """Per outgoing channel, the failures with no amount the hourly rollups count."""
    t = failure_channel_hourly.c
    with s.engine.connect() as conn:
        found = conn.execute(select(t.outgoing_channel_id, t.unknown_amount)).all()
    rolled: Counter[int] = Counter()
    for out, n in found:
        rolled[from_signed64(out)] += n
    return +rolled


def _rollup_rows(s: Store) -> dict[str, list[tuple[Any, ...]]]:
    with s.engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in _FAILURE_CHANNEL
        }


def test_0025_fills_the_counts_from_the_attempts_and_drops_them_again(
    store_at: StoreAt,
) -> None:
    """Upgraded to 0025 from 0024, a store's rollups count the failures with no amount as
    the recorder counted them, for every period whose attempts are kept; windows on either
    side of the horizon read them as before. Downgrading drops the column."""
    where = store_at("m.db")
    engine = open_engine(where)
    try:
        writer = StoreWriter(engine)
        s = Store(engine, writer, writer.upsert_node(NODE, 1))
        pruner = Pruner(engine, {**TTL, "attempts_days": 10})
        first, end = record(s, pruner, days=20, no_channel=0.1)
        recorded_rows = _rollup_rows(s)
        assert sum(n for *_, n in recorded_rows[failure_channel_weekly.name]) > 0
        db.downgrade(engine, "0024")
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns(failure_channel_daily.name)}
        assert "unknown_amount" not in columns and "clusters" in columns
        db.upgrade(engine, where)
        assert _rollup_rows(s) == recorded_rows  # every attempt kept: the same counts
        pruner.prune(end + H, 200, 1000)
        mark = horizon(s)
        assert mark is not None
        pruned_rows = _rollup_rows(s)
        db.downgrade(engine, "0024")
        db.upgrade(engine, where)
        # periods whose attempts retention deleted count fewer now, all at or before the
        # horizon; every later period counts the same
        mark_hour = mark // H
        refilled = _rollup_rows(s)
        hourly = failure_channel_hourly.name
        assert refilled[hourly] != pruned_rows[hourly]
        assert [r for r in refilled[hourly] if r[1] > mark_hour] == [
            r for r in pruned_rows[hourly] if r[1] > mark_hour
        ]
        after, before = windows_around(mark, first, end)
        check_unknown(s, after, before)
    finally:
        engine.dispose()
