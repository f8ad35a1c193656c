"""The per-channel rollups (hourly, 6-hourly, daily; failures weekly too), kept in the
writers' transactions.

:class:`FailureChannelBatch` and :class:`ForwardChannelBatch` add up one batch in
memory; ``rows()`` gives one row per (period, channel) and table (hour, 6-hour block,
UTC day, and for failures week of 7 days), written with the upserts built here, which
add the counters to a stored row (and merge the incoming channel summary, see
:mod:`lnflow.store.schema`). A block, a day or a week is always the sum of its hours:
all tables get the same contributions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Integer,
    Select,
    Table,
    and_,
    case,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.sql.dml import Insert

from lnflow.domain import NS_PER_HOUR, FailureClass, to_signed64
from lnflow.store.db import BulkStatement, dialect_insert

__all__ = [
    "BLOCK_HOURS",
    "CLASS_COLUMNS",
    "DAYS_PER_WEEK",
    "FAILURE_COUNTERS",
    "NS_PER_HOUR",
    "ChannelRollupUpserts",
    "FailureChannelBatch",
    "ForwardChannelBatch",
    "class_index",
    "failure_channel_upsert",
    "failure_weeks_of_days",
    "forward_channel_upsert",
]

HOURS_PER_DAY = 24
#: hours per block of the 6-hour rollups (block = hour // BLOCK_HOURS; 4 blocks a UTC day)
BLOCK_HOURS = 6
#: days per week of the weekly failure rollups (week = day // DAYS_PER_WEEK, from the epoch)
DAYS_PER_WEEK = 7

_Rows = list[dict[str, Any]]

#: (failures, missed_msat) column names of each class, in class order 1..6
CLASS_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (cls.failures_column, cls.missed_column) for cls in FailureClass
)
_OTHER = len(CLASS_COLUMNS) - 1
#: the per-channel failure rollups' columns that add up (a block, day or week: its hours')
FAILURE_COUNTERS: tuple[str, ...] = (
    "clusters",
    "missed_dedup_msat",
    *(c for pair in CLASS_COLUMNS for c in pair),
    "unknown_amount",
)


def class_index(failure_class: int) -> int:
    """Position in :data:`CLASS_COLUMNS` of a stored class number (unknown: other)."""
    return failure_class - 1 if 1 <= failure_class <= _OTHER else _OTHER


def _least(a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((a <= b, a), else_=b)


def _greatest(a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((a >= b, a), else_=b)


def failure_channel_upsert(engine: Engine, table: Table) -> Insert:
    """Add a batch's row to the stored one: counters add, the incoming summary merges.

    Two periods' incoming sets, each known exactly unless ``incoming_many``, have at
    least 3 distinct members together when either had, or when one of their bounds lies
    strictly between the merged smallest and largest id.
    """
    stmt = dialect_insert(engine, table)
    t, ex = table.c, stmt.excluded
    counters = [*FAILURE_COUNTERS]
    lo = _least(t.incoming_lo, ex.incoming_lo)
    hi = _greatest(t.incoming_hi, ex.incoming_hi)
    inside = [
        and_(v > lo, v < hi) for v in (t.incoming_lo, t.incoming_hi, ex.incoming_lo, ex.incoming_hi)
    ]
    set_: dict[str, Any] = {name: t[name] + ex[name] for name in counters}
    set_ |= {
        "incoming_lo": lo,
        "incoming_hi": hi,
        "incoming_many": case((or_(t.incoming_many, ex.incoming_many, *inside), True), else_=False),
    }
    for first, last in (("first_hour", "last_hour"), ("first_ns", "last_ns")):
        if first in t:
            set_ |= {first: _least(t[first], ex[first]), last: _greatest(t[last], ex[last])}
    key = [c.name for c in table.primary_key.columns]
    return stmt.on_conflict_do_update(index_elements=key, set_=set_)


def forward_channel_upsert(engine: Engine, table: Table) -> Insert:
    stmt = dialect_insert(engine, table)
    counters = ("forwards_out", "fee_out_msat", "forwards_in", "fee_in_msat")
    key = [c.name for c in table.primary_key.columns]
    return stmt.on_conflict_do_update(
        index_elements=key, set_={name: table.c[name] + stmt.excluded[name] for name in counters}
    )


class ChannelRollupUpserts:
    """One kind's per-channel rollup upserts, per hour, 6-hour block and UTC day (and
    week, for failures).

    ``write`` takes a batch's ``rows(node_id)`` (hourly, block, daily and weekly rows,
    in the order of ``tables``; one row per key) and adds them to the tables in the
    caller's transaction, each table's rows in one
    :class:`~lnflow.store.db.BulkStatement` (compiled for the rows' columns when first
    written).
    """

    def __init__(
        self,
        engine: Engine,
        upsert: Callable[[Engine, Table], Insert],
        tables: tuple[Table, ...],
    ) -> None:
        self._engine = engine
        self._statements = tuple(upsert(engine, table) for table in tables)
        self._bulk: list[BulkStatement | None] = [None] * len(tables)

    def write(self, conn: Connection, rows: tuple[_Rows, ...]) -> None:
        assert len(rows) == len(self._statements)
        for i, period_rows in enumerate(rows):
            if not period_rows:
                continue
            bulk = self._bulk[i]
            if bulk is None:
                bulk = BulkStatement(self._engine, self._statements[i], tuple(period_rows[0]))
                self._bulk[i] = bulk
            bulk.execute_mappings(conn, period_rows)


class _FailureSums:
    __slots__ = (
        "clusters",
        "dedup",
        "first_hour",
        "first_ns",
        "incoming",
        "last_hour",
        "last_ns",
        "per_class",
        "unknown",
    )

    def __init__(self, hour: int, ts_ns: int = 0) -> None:
        self.clusters = 0
        self.dedup = 0
        self.unknown = 0
        self.per_class = [0] * (2 * len(CLASS_COLUMNS))
        self.incoming: set[int] = set()
        self.first_hour = hour
        self.last_hour = hour
        self.first_ns = ts_ns
        self.last_ns = ts_ns


class FailureChannelBatch:
    """One batch's local failures per (hour, outgoing channel); ids as recorded (uint64)."""

    def __init__(self) -> None:
        self._hours: dict[tuple[int, int], _FailureSums] = {}

    def __bool__(self) -> bool:
        return bool(self._hours)

    def add(
        self,
        ts_ns: int,
        outgoing: int,
        incoming: int,
        failure_class: int,
        missed_raw_msat: int,
        new_cluster: bool,
        missed_dedup_msat: int,
        unknown_amount: bool,
    ) -> None:
        """One local failure at ``ts_ns`` (its LINK_FAIL time, which picks the hour);
        ``unknown_amount``: lnd gave no outgoing amount for it."""
        hour = ts_ns // NS_PER_HOUR
        sums = self._hours.get((hour, outgoing))
        if sums is None:
            sums = self._hours[(hour, outgoing)] = _FailureSums(hour, ts_ns)
        elif ts_ns < sums.first_ns:
            sums.first_ns = ts_ns
        elif ts_ns > sums.last_ns:
            sums.last_ns = ts_ns
        i = 2 * class_index(failure_class)
        sums.per_class[i] += 1
        sums.per_class[i + 1] += missed_raw_msat
        sums.clusters += new_cluster
        sums.dedup += missed_dedup_msat
        sums.unknown += unknown_amount
        sums.incoming.add(to_signed64(incoming))

    def rows(self, node_id: int) -> tuple[_Rows, _Rows, _Rows, _Rows]:
        """(hourly rows, 6-hour block rows, daily rows, weekly rows)."""
        hourly = [
            _failure_row(node_id, "hour", h, out, s)
            | {"first_ns": s.first_ns, "last_ns": s.last_ns}
            for (h, out), s in self._hours.items()
        ]
        return (
            hourly,
            self._periods(node_id, "block", BLOCK_HOURS),
            self._periods(node_id, "day", HOURS_PER_DAY),
            self._periods(node_id, "week", DAYS_PER_WEEK * HOURS_PER_DAY),
        )

    def _periods(self, node_id: int, period: str, hours: int) -> _Rows:
        """Rows per period of ``hours`` hours, with their first and last hour."""
        periods: dict[tuple[int, int], _FailureSums] = {}
        for (hour, out), sums in self._hours.items():
            acc = periods.get((hour // hours, out))
            if acc is None:
                acc = periods[(hour // hours, out)] = _FailureSums(hour)
            acc.clusters += sums.clusters
            acc.dedup += sums.dedup
            acc.unknown += sums.unknown
            acc.per_class = [a + b for a, b in zip(acc.per_class, sums.per_class, strict=True)]
            acc.incoming |= sums.incoming
            acc.first_hour = min(acc.first_hour, hour)
            acc.last_hour = max(acc.last_hour, hour)
        return [
            _failure_row(node_id, period, p, out, s)
            | {"first_hour": s.first_hour, "last_hour": s.last_hour}
            for (p, out), s in periods.items()
        ]


def failure_weeks_of_days(daily: Table, weekly: Table) -> Select[Any]:
    """The weekly rows summed from ``daily``'s rows, per (node, week, channel), in
    ``weekly``'s column order; the caller picks the days (WHERE) it sums.

    Merged as the upsert merges them: counters add, first and last hour are the
    smallest and largest, the incoming summary as in :func:`failure_channel_upsert`
    (each day without ``incoming_many`` had exactly {incoming_lo, incoming_hi}: the week
    had 3 or more distinct ids iff a day had ``incoming_many``, 3 or more distinct lo or
    hi exist, or one lies strictly between the smallest lo and the largest hi).
    """
    d = daily.c
    lo, hi = func.min(d.incoming_lo), func.max(d.incoming_hi)
    max_lo, min_hi = func.max(d.incoming_lo), func.min(d.incoming_hi)
    many = or_(
        func.max(case((d.incoming_many, 1), else_=0)) == 1,
        func.count(d.incoming_lo.distinct()) >= 3,
        func.count(d.incoming_hi.distinct()) >= 3,
        and_(max_lo > lo, max_lo < hi),
        and_(min_hi > lo, min_hi < hi),
    )
    week = d.day // literal_column(str(DAYS_PER_WEEK), Integer)
    columns: dict[str, ColumnElement[Any]] = {
        "node_id": d.node_id,
        "week": week,
        "outgoing_channel_id": d.outgoing_channel_id,
        "incoming_lo": lo,
        "incoming_hi": hi,
        "incoming_many": case((many, True), else_=False),
        "first_hour": func.min(d.first_hour),
        "last_hour": func.max(d.last_hour),
    }
    for name in FAILURE_COUNTERS:
        columns[name] = func.sum(d[name])
    return select(*(columns[c.name].label(c.name) for c in weekly.columns)).group_by(
        d.node_id, week, d.outgoing_channel_id
    )


def _failure_row(
    node_id: int, period: str, value: int, out: int, s: _FailureSums
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "node_id": node_id,
        period: value,
        "outgoing_channel_id": to_signed64(out),
        "clusters": s.clusters,
        "missed_dedup_msat": s.dedup,
        "incoming_lo": min(s.incoming),
        "incoming_hi": max(s.incoming),
        "incoming_many": len(s.incoming) >= 3,
        "unknown_amount": s.unknown,
    }
    for (n_col, m_col), i in zip(CLASS_COLUMNS, range(0, 2 * len(CLASS_COLUMNS), 2), strict=True):
        row[n_col] = s.per_class[i]
        row[m_col] = s.per_class[i + 1]
    return row


class ForwardChannelBatch:
    """Settled forwards per (hour, channel), out of it and in via it; ids as recorded."""

    def __init__(self) -> None:
        self._hours: dict[tuple[int, int], list[int]] = {}

    def add(self, hour: int, chan_in: int, chan_out: int, fee_msat: int) -> None:
        out = self._hours.setdefault((hour, chan_out), [0, 0, 0, 0])
        out[0] += 1
        out[1] += fee_msat
        inc = self._hours.setdefault((hour, chan_in), [0, 0, 0, 0])
        inc[2] += 1
        inc[3] += fee_msat

    def rows(self, node_id: int) -> tuple[_Rows, _Rows, _Rows]:
        """(hourly rows, 6-hour block rows, daily rows)."""
        blocks: dict[tuple[int, int], list[int]] = {}
        days: dict[tuple[int, int], list[int]] = {}
        for (hour, chan), sums in self._hours.items():
            block = blocks.setdefault((hour // BLOCK_HOURS, chan), [0, 0, 0, 0])
            day = days.setdefault((hour // HOURS_PER_DAY, chan), [0, 0, 0, 0])
            for i, v in enumerate(sums):
                block[i] += v
                day[i] += v

        def row(period: str, value: int, chan: int, s: list[int]) -> dict[str, Any]:
            return {
                "node_id": node_id,
                period: value,
                "chan_id": to_signed64(chan),
                "forwards_out": s[0],
                "fee_out_msat": s[1],
                "forwards_in": s[2],
                "fee_in_msat": s[3],
            }

        return (
            [row("hour", h, c, s) for (h, c), s in self._hours.items()],
            [row("block", b, c, s) for (b, c), s in blocks.items()],
            [row("day", d, c, s) for (d, c), s in days.items()],
        )
