"""Raw rows for ``lnflowctl export``: a header and a stream of plain tuples.

Conventions of every export:

- channel ids are unsigned 64-bit integers, each followed by its ``BxTxO`` form
  (``*_scid`` columns); HTLC ids are unsigned too;
- every time is given twice: integer nanoseconds (``*_ns``) and an ISO-8601 UTC string
  with nanoseconds (``2026-01-02T03:04:05.123456789Z``);
- enums are lowercase labels (``link_fail``, ``fee_insufficient``); a number this code
  does not know is given as its decimal string;
- missing values are None; money is integer msat (or sat where the name says so).

Rows are streamed in time order (the ledger: per node, then in time order), read in
chunks of :data:`_CHUNK` rows by their order key, each chunk in its own short read:
iterate them while ``conn`` is open. No read stays open while the consumer is slow
(``lnflowctl export | less`` left waiting): a read held open would pin the store's
WAL, which then grows for as long as the daemon writes.

:func:`csv_cell` turns a value into its CSV cell (see its docstring); JSON lines keep
the values exact.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, Table, func, select, tuple_

from lnflow.domain import (
    NS_PER_S,
    EventKind,
    EventType,
    FailureClass,
    FailureDetail,
    Outcome,
    WireFailure,
    format_scid,
    from_signed64,
)
from lnflow.store.schema import (
    analysis_runs,
    channel_refs,
    forward_attempts,
    forwards,
    htlc_events,
    nodes,
    opportunities,
)
from lnflow.text import printable

__all__ = ["EXPORTABLE", "csv_cell", "export_rows", "iso_utc"]

EXPORTABLE = ("events", "attempts", "forwards", "opportunities")

_CHUNK = 1000


def iso_utc(ts_ns: int | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` (UTC, nanoseconds); None stays None."""
    if ts_ns is None:
        return None
    seconds, nanos = divmod(ts_ns, NS_PER_S)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def _label(kind: type[enum.IntEnum], value: int | None) -> str | None:
    if value is None:
        return None
    try:
        return kind(value).name.lower()
    except ValueError:
        return str(value)


def _chan(value: int) -> tuple[int, str]:
    unsigned = from_signed64(value)
    return unsigned, format_scid(unsigned)


def _uint(value: int | None) -> int | None:
    return None if value is None else from_signed64(value)


# Each export: its header, its query (in time order) and the row converter.
_Row = Any
_Export = tuple[tuple[str, ...], Callable[[int], Select[Any]], Callable[[_Row], tuple[object, ...]]]


def _with_scids(t: Table) -> Select[Any]:
    """Rows of ``t`` (htlc_events, forward_attempts) with the SCIDs of their channel refs
    as ``incoming_channel_id`` / ``outgoing_channel_id`` (0: none on that side)."""
    into, out = channel_refs.alias("into"), channel_refs.alias("out")
    return select(
        t,
        func.coalesce(into.c.chan_id, 0).label("incoming_channel_id"),
        func.coalesce(out.c.chan_id, 0).label("outgoing_channel_id"),
    ).select_from(
        t.outerjoin(into, into.c.id == t.c.incoming_chan_ref).outerjoin(
            out, out.c.id == t.c.outgoing_chan_ref
        )
    )


def _events_query(since_ns: int) -> Select[Any]:
    t = htlc_events
    # no time index on the largest table: rows come in recording order (id), one scan
    return _with_scids(t).where(t.c.timestamp_ns >= since_ns).order_by(t.c.id)


def _event(r: _Row) -> tuple[object, ...]:
    return (
        r.id,
        r.timestamp_ns,
        iso_utc(r.timestamp_ns),
        _label(EventKind, r.kind),
        _label(EventType, r.event_type),
        *_chan(r.incoming_channel_id),
        from_signed64(r.incoming_htlc_id),
        *_chan(r.outgoing_channel_id),
        from_signed64(r.outgoing_htlc_id),
        r.incoming_amt_msat,
        r.outgoing_amt_msat,
        r.incoming_timelock,
        r.outgoing_timelock,
        _label(WireFailure, r.wire_failure),
        _label(FailureDetail, r.failure_detail),
        r.failure_string,
        r.settled,
        r.offchain,
        r.session_id,
    )


_EVENTS: _Export = (
    (
        "id",
        "timestamp_ns",
        "timestamp",
        "kind",
        "event_type",
        "incoming_channel_id",
        "incoming_scid",
        "incoming_htlc_id",
        "outgoing_channel_id",
        "outgoing_scid",
        "outgoing_htlc_id",
        "incoming_amt_msat",
        "outgoing_amt_msat",
        "incoming_timelock",
        "outgoing_timelock",
        "wire_failure",
        "failure_detail",
        "failure_string",
        "settled",
        "offchain",
        "session_id",
    ),
    _events_query,
    _event,
)


def _attempts_query(since_ns: int) -> Select[Any]:
    t = forward_attempts
    return _with_scids(t).where(t.c.first_seen_ns >= since_ns).order_by(t.c.id)


def _attempt(r: _Row) -> tuple[object, ...]:
    return (
        r.id,
        r.first_seen_ns,
        iso_utc(r.first_seen_ns),
        r.resolved_ns,
        iso_utc(r.resolved_ns),
        *_chan(r.incoming_channel_id),
        from_signed64(r.incoming_htlc_id),
        *_chan(r.outgoing_channel_id),
        from_signed64(r.outgoing_htlc_id),
        r.incoming_amt_msat,
        r.outgoing_amt_msat,
        _label(Outcome, r.outcome),
        _label(FailureClass, r.failure_class),
        _label(WireFailure, r.wire_failure),
        _label(FailureDetail, r.failure_detail),
        r.missed_fee_msat,
        r.final_settled,
        r.cluster_id,
    )


_ATTEMPTS: _Export = (
    (
        "id",
        "first_seen_ns",
        "first_seen",
        "resolved_ns",
        "resolved",
        "incoming_channel_id",
        "incoming_scid",
        "incoming_htlc_id",
        "outgoing_channel_id",
        "outgoing_scid",
        "outgoing_htlc_id",
        "incoming_amt_msat",
        "outgoing_amt_msat",
        "outcome",
        "failure_class",
        "wire_failure",
        "failure_detail",
        "missed_fee_msat",
        "final_settled",
        "cluster_id",
    ),
    _attempts_query,
    _attempt,
)


def _forwards_query(since_ns: int) -> Select[Any]:
    t = forwards
    # node first: the ledger's key (node_id, timestamp_ns) then serves range and order
    return (
        select(t)
        .where(t.c.node_id.in_(select(nodes.c.id)))
        .where(t.c.timestamp_ns >= since_ns)
        .order_by(t.c.node_id, t.c.timestamp_ns)
    )


def _forward(r: _Row) -> tuple[object, ...]:
    return (
        r.id,
        r.timestamp_ns,
        iso_utc(r.timestamp_ns),
        *_chan(r.chan_id_in),
        *_chan(r.chan_id_out),
        r.amt_in_msat,
        r.amt_out_msat,
        r.fee_msat,
        _uint(r.incoming_htlc_id),
        _uint(r.outgoing_htlc_id),
    )


_FORWARDS: _Export = (
    (
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
    ),
    _forwards_query,
    _forward,
)

_CLASS_COLUMNS = tuple(
    col for cls in FailureClass for col in (cls.failures_column, cls.missed_column)
)
_OPPORTUNITY_VALUES = (
    "peer_pubkey",
    "peer_alias",
    "failures",
    "clusters",
    "successes",
    "failure_rate",
    "missed_msat",
    "missed_raw_msat",
    "potential_monthly_msat",
    "urgency_score",
    "confidence",
    "recommended_action",
    "reason",
    "estimated",
    "capacity_sat",
    "local_balance_sat",
    "outbound_fee_ppm",
    "suggested_fee_ppm",
    "suggested_amount_sat",
    "suggested_max_htlc_msat",
    *_CLASS_COLUMNS,
)


def _opportunities_query(since_ns: int) -> Select[Any]:
    o, r = opportunities, analysis_runs
    return (
        select(o, r.c.since_ns, r.c.until_ns, r.c.hours)
        .join_from(o, r, o.c.run_id == r.c.id)
        .where(o.c.generated_ns >= since_ns)
        .order_by(o.c.generated_ns, o.c.run_id, o.c.rank)
    )


def _opportunity(r: _Row) -> tuple[object, ...]:
    return (
        r.run_id,
        r.generated_ns,
        iso_utc(r.generated_ns),
        r.since_ns,
        r.until_ns,
        r.hours,
        r.rank,
        *_chan(r.channel_id),
        *(getattr(r, name) for name in _OPPORTUNITY_VALUES),
    )


_OPPORTUNITIES: _Export = (
    (
        "run_id",
        "generated_ns",
        "generated",
        "since_ns",
        "until_ns",
        "hours",
        "rank",
        "channel_id",
        "scid",
        *_OPPORTUNITY_VALUES,
    ),
    _opportunities_query,
    _opportunity,
)

_EXPORTS: dict[str, _Export] = {
    "events": _EVENTS,
    "attempts": _ATTEMPTS,
    "forwards": _FORWARDS,
    "opportunities": _OPPORTUNITIES,
}
assert tuple(_EXPORTS) == EXPORTABLE

# The columns each export is ordered by (a unique key): the next chunk starts after the
# last row's key.
_ORDER_KEYS: dict[str, tuple[str, ...]] = {
    "events": ("id",),
    "attempts": ("id",),
    "forwards": ("node_id", "timestamp_ns"),
    "opportunities": ("generated_ns", "run_id", "rank"),
}
assert tuple(_ORDER_KEYS) == EXPORTABLE


# Whose row it is: every export reads one node's rows when given one.
_NODE_OF: dict[str, Any] = {
    "events": htlc_events.c.node_id,
    "attempts": forward_attempts.c.node_id,
    "forwards": forwards.c.node_id,
    "opportunities": analysis_runs.c.node_id,
}
assert tuple(_NODE_OF) == EXPORTABLE


def export_rows(
    conn: Connection,
    what: str,
    since_ns: int,
    *,
    chunk: int = _CHUNK,
    node_id: int | None = None,
) -> tuple[list[str], Iterator[tuple[object, ...]]]:
    """The header and a row stream of ``what`` (one of :data:`EXPORTABLE`) since ``since_ns``,
    of ``node_id`` (None: of every node).

    The first chunk is read now (so a broken store fails here); later chunks are read
    as the stream is iterated, which must happen while ``conn`` is open.
    """
    try:
        header, query, convert = _EXPORTS[what]
    except KeyError:
        raise ValueError(f"cannot export '{what}': choose one of {', '.join(EXPORTABLE)}") from None
    base = query(since_ns)
    if node_id is not None:
        base = base.where(_NODE_OF[what] == node_id)
    keys = _ORDER_KEYS[what]
    order = [base.selected_columns[k] for k in keys]

    def read(after: tuple[Any, ...] | None) -> list[_Row]:
        q = base if after is None else base.where(tuple_(*order) > tuple_(*after))
        # fetched whole, then the read ends before any row is handed out
        rows = list(conn.execute(q.limit(chunk)))
        conn.rollback()
        return rows

    first = read(None)
    return list(header), _stream(first, read, keys, chunk, convert)


def _stream(
    rows: list[_Row],
    read: Callable[[tuple[Any, ...] | None], list[_Row]],
    keys: tuple[str, ...],
    chunk: int,
    convert: Callable[[_Row], tuple[object, ...]],
) -> Iterator[tuple[object, ...]]:
    while rows:
        for row in rows:
            yield convert(row)
        if len(rows) < chunk:
            return
        last = rows[-1]
        rows = read(tuple(getattr(last, k) for k in keys))


# A spreadsheet reads a text cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def csv_cell(value: object) -> object:
    """One CSV cell: None is empty, booleans ``true``/``false`` (as in JSON), bytes hex,
    numbers as they are; text (an alias, a failure string) is made printable
    (lnflow.text), and when it starts with ``= + - @`` it gets a leading ``'`` so that a
    spreadsheet shows it instead of evaluating it. A text that is a plain number
    (an unknown enum value such as ``-5``) is left as it is: it is no formula.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.hex()
    if not isinstance(value, str):
        return value
    text = printable(value)
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text
