"""The weekly failure rollups (0022): each row the sum of its week's days after the
ingest, the backfill and pruning, and a window read from whole weeks exactly what the
days give."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import RealStore
from daemonproc import link_fail
from sqlalchemy import inspect
from test_channel_rollups import _rows

from lnflow.domain import FailureDetail, NodeInfo, WireFailure
from lnflow.store import db
from lnflow.store.read.failures import window_failures
from lnflow.store.read.window import EMPTY, Span, span_of, window_for
from lnflow.store.retention import RETAINED, Pruner
from lnflow.store.rollups import CLASS_COLUMNS
from lnflow.store.schema import failure_channel_daily, failure_channel_weekly
from lnflow.store.writer import NS_PER_HOUR

pytestmark = pytest.mark.engines("sqlite", "postgresql")

S = 1_000_000_000
H = NS_PER_HOUR
DAY = 24 * H
T0 = 480_000 * H + 17 * 60 * S  # day 20 000 (day 1 of week 2 857), 00:17
NODE = NodeInfo("02" + "dd" * 32, "dave", "0.18.3-beta", "regtest", 1, True)
OUTS = (11 << 40, 12 << 40, (1 << 63) + 5)
INS = (21 << 40, 22 << 40, 23 << 40, (1 << 64) - 3)
CLASSES = (
    (WireFailure.TEMPORARY_CHANNEL_FAILURE, FailureDetail.INSUFFICIENT_BALANCE),
    (WireFailure.TEMPORARY_CHANNEL_FAILURE, FailureDetail.HTLC_EXCEEDS_MAX),
    (WireFailure.FEE_INSUFFICIENT, FailureDetail.NO_DETAIL),
)
COUNTERS = ("clusters", "missed_dedup_msat", *(c for pair in CLASS_COLUMNS for c in pair))
SPAN_DAYS = 40


def _record(store: RealStore, batch: int) -> None:
    """Local failures over 40 days: every 5 h 7 min, on 3 outgoing channels, from 1 to 4
    incoming channels a week (a channel whose week mixes days of 1 and of 2 incoming
    channels tests the merged summary), ingested ``batch`` at a time."""
    ingestor = store.ingestor()
    session = store.open_session(T0)
    events = []
    ts = T0
    for htlc in range(SPAN_DAYS * 24 * 60 // 307):
        out = OUTS[htlc % 3]
        inc = INS[(htlc // 7) % (1 + (htlc // 50) % 4)]
        wire, detail = CLASSES[htlc % 5 % 3]
        events.append(
            link_fail(htlc, ts, out, inc, 50_000 + htlc, 10 + htlc % 400, wire=wire, detail=detail)
        )
        ts += 307 * 60 * S
    for i in range(0, len(events), batch):
        part = events[i : i + batch]
        ingestor.ingest(session, part, part[-1].timestamp_ns)


def _weeks_of(days: dict[tuple[int, ...], dict[str, Any]]) -> dict[tuple[int, ...], dict[str, Any]]:
    """The daily rows merged per week, in Python: sums, first and last hour, and the
    incoming summary (a day without incoming_many had exactly {lo, hi})."""
    weeks: dict[tuple[int, ...], dict[str, Any]] = {}
    ids: dict[tuple[int, ...], set[int]] = {}
    for (node, day, out), row in sorted(days.items()):
        key = (node, day // 7, out)
        week = weeks.get(key)
        if week is None:
            weeks[key] = dict(row)
            ids[key] = {row["incoming_lo"], row["incoming_hi"]}
            continue
        for name in COUNTERS:
            week[name] += row[name]
        week["first_hour"] = min(week["first_hour"], row["first_hour"])
        week["last_hour"] = max(week["last_hour"], row["last_hour"])
        week["incoming_lo"] = min(week["incoming_lo"], row["incoming_lo"])
        week["incoming_hi"] = max(week["incoming_hi"], row["incoming_hi"])
        week["incoming_many"] = week["incoming_many"] or row["incoming_many"]
        ids[key] |= {row["incoming_lo"], row["incoming_hi"]}
    for key, week in weeks.items():
        week["incoming_many"] = bool(week["incoming_many"] or len(ids[key]) >= 3)
    return weeks


class DaysOnly(Span):
    """A span whose failures are read from the days alone, no week (the read before the
    weekly rollups)."""

    def failure_params(self) -> dict[str, int]:
        return self.range_params() | {"w0": EMPTY[0], "w1": EMPTY[1], "f0": 1, "f1": 0}


def _days_only(span: Span) -> Span:
    return DaysOnly(span.days, span.blocks, span.hours, span.parts)


@pytest.fixture(params=[1, 13], ids=["batch1", "batch13"])
def recorded(request: pytest.FixtureRequest, open_store: Callable[..., RealStore]) -> RealStore:
    store = open_store(node=NODE)
    _record(store, request.param)
    return store


def test_weekly_rows_are_the_sum_of_their_days_after_ingest_and_backfill(
    recorded: RealStore,
) -> None:
    days = _rows(recorded.engine, failure_channel_daily)
    weeks = _rows(recorded.engine, failure_channel_weekly)
    assert len({week for _, week, _ in weeks}) >= 6  # 40 days: 6 or 7 weeks
    assert any(row["incoming_many"] for row in weeks.values())
    assert any(not row["incoming_many"] for row in weeks.values())
    assert weeks == _weeks_of(days)

    # down to 0021: the table goes; up again: the backfill sums the same rows
    db.downgrade(recorded.engine, "0021")
    assert "failure_channel_weekly" not in inspect(recorded.engine).get_table_names()
    db.upgrade(recorded.engine, recorded.path)
    assert _rows(recorded.engine, failure_channel_weekly) == weeks


def _windows() -> Iterator[tuple[int, int]]:
    """(until_ns, hours): windows of 1 to 5 whole weeks, ends on and off the hour."""
    for hours in (200, 500, 720, 900):
        for k in range(0, 9):
            until = T0 + SPAN_DAYS * DAY - k * (DAY + 3 * H + 17 * 60 * S) - (k % 2) * 34 * S
            yield until, hours


def test_a_window_of_whole_weeks_reads_what_its_days_give(recorded: RealStore) -> None:
    with_weeks = 0
    with recorded.engine.connect() as conn:
        for until, hours in _windows():
            span = span_of(*window_for(until, hours))
            params = span.failure_params()
            with_weeks += params["w0"] <= params["w1"]
            got = window_failures(conn, recorded.node_id, span)
            assert got.by_channel
            assert got == window_failures(conn, recorded.node_id, _days_only(span)), (until, hours)
    assert with_weeks >= 25


def test_pruning_sums_the_week_holding_the_cutoff_again_from_its_days_left(
    recorded: RealStore,
) -> None:
    ttl = {spec.setting: 0 for spec in RETAINED} | {"rollups_days": 30}
    # the cutoff: day 20 010, the 5th day of week 2 858 (days 20 006 to 20 012)
    now = T0 + 40 * DAY + 5 * H
    cutoff_day = (now - 30 * DAY) // DAY
    assert cutoff_day == 20_010 and cutoff_day % 7 == 4
    report = Pruner(recorded.engine, ttl).prune(now, batch_rows=2, max_batches=1_000)
    assert report.complete

    days = _rows(recorded.engine, failure_channel_daily)
    weeks = _rows(recorded.engine, failure_channel_weekly)
    assert min(day for _, day, _ in days) == cutoff_day
    assert min(week for _, week, _ in weeks) == 2_858
    assert min(row["first_hour"] for row in weeks.values()) == cutoff_day * 24
    # week 2 857's rows expired, week 2 858's summed again from days 20 010 to 20 012
    assert weeks == _weeks_of(days)
    assert report.expired["failure_channel_weekly"] == 2 * len(OUTS)

    # a window over the partial week reads what the days left give
    with recorded.engine.connect() as conn:
        for until, hours in _windows():
            span = span_of(*window_for(until, hours))
            got = window_failures(conn, recorded.node_id, span)
            assert got == window_failures(conn, recorded.node_id, _days_only(span))

    # nothing left to do at the next prune
    again = Pruner(recorded.engine, ttl).prune(now, batch_rows=7, max_batches=1_000)
    assert "failure_channel_weekly" not in again.expired
    assert _rows(recorded.engine, failure_channel_weekly) == weeks
