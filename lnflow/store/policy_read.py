"""One channel's recorded window, read for the policy engine's what-if and effects.

Reads only; nothing here reads a clock. The records are those of
:mod:`lnflow.policy.recorded`; the arithmetic on them is pure
(:mod:`lnflow.policy.whatif`, :mod:`lnflow.policy.effects`).

A channel counts with its other ids (alias SCIDs, a zero-conf channel's confirmed
SCID: :mod:`lnflow.store.channel_ids`), as in the analysis. Local failures are read
from the raw attempts (``forward_attempts``, kept ``[retention] attempts_days``, 30 by
default), by their LINK_FAIL time (``resolved_ns``), like the analysis' raw reads;
settled forwards from the ledger by ``timestamp_ns``; windows are ``[since, until)``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, func, or_, select

from lnflow.analysis.classify import FailureClass
from lnflow.attempts import Outcome
from lnflow.domain import from_signed64, to_signed64
from lnflow.policy.recorded import LocalFailure, PolicyPoint, SettledForward
from lnflow.store.channel_ids import alias_map
from lnflow.store.read import failure_class_of
from lnflow.store.schema import (
    channel_refs,
    channel_samples,
    daemon_state,
    failure_clusters,
    forward_attempts,
    forwards,
)

__all__ = [
    "channel_ids",
    "latest_point",
    "local_failures",
    "policy_points",
    "recorded_until_ns",
    "settled_forwards",
]

_FAILED_LOCAL = int(Outcome.FAILED_LOCAL)
_ALL_CLASSES = tuple(FailureClass)


def channel_ids(conn: Connection, node_id: int, chan_id: int) -> frozenset[int]:
    """The channel's id and every other id the store holds for it (unsigned)."""
    aliases = alias_map(conn, node_id)
    owner = aliases.get(chan_id, chan_id)
    return frozenset({owner, chan_id} | {scid for scid, of in aliases.items() if of == owner})


def _refs(conn: Connection, node_id: int, chan_ids: Iterable[int]) -> list[int]:
    r = channel_refs
    return [
        int(ref)
        for ref in conn.scalars(
            select(r.c.id)
            .where(r.c.node_id == node_id)
            .where(r.c.chan_id.in_(sorted(to_signed64(c) for c in chan_ids)))
        )
    ]


def local_failures(
    conn: Connection,
    node_id: int,
    chan_ids: Collection[int],
    since_ns: int,
    until_ns: int,
    *,
    classes: Collection[FailureClass] = _ALL_CLASSES,
) -> list[LocalFailure]:
    """Local failures out of the channel of these classes resolved in the window, and the
    earlier members (resolved before ``since_ns``, any class) of their demand clusters,
    in recording order. The earlier members tell how much of a cluster's missed fee the
    window's members added (DESIGN §4)."""
    refs = _refs(conn, node_id, chan_ids)
    if not refs:
        return []
    fa = forward_attempts
    inc = channel_refs.alias("inc")
    columns = (
        fa.c.id,
        fa.c.resolved_ns,
        fa.c.failure_class,
        fa.c.cluster_id,
        func.coalesce(inc.c.chan_id, 0),
        fa.c.incoming_amt_msat,
        fa.c.outgoing_amt_msat,
        fa.c.missed_fee_msat,
    )
    base = (
        select(*columns)
        .select_from(fa.outerjoin(inc, inc.c.id == fa.c.incoming_chan_ref))
        .where(fa.c.outgoing_chan_ref.in_(refs))
        .where(fa.c.outcome == _FAILED_LOCAL)
        .where(fa.c.node_id == node_id)
    )
    in_window = (
        base.where(fa.c.failure_class.in_(sorted(int(c) for c in classes)))
        .where(fa.c.resolved_ns >= since_ns)
        .where(fa.c.resolved_ns < until_ns)
    )
    rows = list(conn.execute(in_window.order_by(fa.c.id)))
    clusters = {int(row[3]) for row in rows if row[3] is not None}
    earlier: list[Sequence[Any]] = []
    if clusters:
        # a cluster's members all failed from its first_ns on: read the channel's
        # failures from the earliest of those up to the window, keep the members (the
        # clusters are named by a subquery: thousands of ids as parameters cost more)
        fc = failure_clusters
        first = conn.scalar(
            select(func.min(fc.c.first_ns))
            .where(fc.c.node_id == node_id)
            .where(fc.c.id.in_(in_window.with_only_columns(fa.c.cluster_id).scalar_subquery()))
        )
        if first is not None and first < since_ns:
            earlier = [
                row
                for row in conn.execute(
                    base.where(fa.c.failure_class.in_([int(c) for c in _ALL_CLASSES]))
                    .where(fa.c.resolved_ns >= first)
                    .where(fa.c.resolved_ns < since_ns)
                    .order_by(fa.c.id)
                )
                if row[3] in clusters
            ]
    return [_failure(row) for row in (*earlier, *rows)]


def _failure(row: Sequence[Any]) -> LocalFailure:
    aid, resolved, cls, cluster, incoming, amt_in, amt_out, missed = row
    return LocalFailure(
        attempt_id=int(aid),
        resolved_ns=int(resolved),
        failure_class=failure_class_of(int(cls)),
        cluster_id=None if cluster is None else int(cluster),
        incoming_chan_id=from_signed64(int(incoming)),
        incoming_amt_msat=None if amt_in is None else int(amt_in),
        outgoing_amt_msat=None if amt_out is None else int(amt_out),
        missed_fee_msat=int(missed),
    )


def settled_forwards(
    conn: Connection, node_id: int, chan_ids: Collection[int], since_ns: int, until_ns: int
) -> list[SettledForward]:
    """Settled forwards of the ledger in the window, out of the channel or in via it."""
    ids = sorted(to_signed64(c) for c in chan_ids)
    fw = forwards
    rows = conn.execute(
        select(
            fw.c.timestamp_ns,
            fw.c.chan_id_in,
            fw.c.chan_id_out,
            fw.c.amt_in_msat,
            fw.c.amt_out_msat,
            fw.c.fee_msat,
        )
        .where(fw.c.node_id == node_id)
        .where(fw.c.timestamp_ns >= since_ns)
        .where(fw.c.timestamp_ns < until_ns)
        .where(or_(fw.c.chan_id_out.in_(ids), fw.c.chan_id_in.in_(ids)))
        .order_by(fw.c.timestamp_ns)
    )
    return [
        SettledForward(
            timestamp_ns=int(ts),
            chan_id_in=from_signed64(int(cin)),
            chan_id_out=from_signed64(int(cout)),
            amt_in_msat=int(amt_in),
            amt_out_msat=int(amt_out),
            fee_msat=int(fee),
        )
        for ts, cin, cout, amt_in, amt_out, fee in rows
    ]


_POINT = (
    channel_samples.c.ts_ns,
    channel_samples.c.local_balance_sat,
    channel_samples.c.fee_base_msat,
    channel_samples.c.fee_rate_ppm,
    channel_samples.c.max_htlc_msat,
)


def _opt(value: Any) -> int | None:
    return None if value is None else int(value)


def _point(row: Sequence[Any]) -> PolicyPoint:
    ts, local, base, ppm, max_htlc = row
    return PolicyPoint(
        ts_ns=int(ts),
        local_balance_sat=int(local),
        fee_base_msat=_opt(base),
        fee_rate_ppm=_opt(ppm),
        max_htlc_msat=_opt(max_htlc),
    )


def policy_points(
    conn: Connection, node_id: int, chan_id: int, since_ns: int, until_ns: int
) -> list[PolicyPoint]:
    """The channel's samples in time order: the last one at or before ``since_ns`` (the
    state in force at the start), then every one up to ``until_ns`` (exclusive)."""
    s = channel_samples
    chan = to_signed64(chan_id)
    of_chan = (s.c.node_id == node_id) & (s.c.chan_id == chan)
    first = conn.execute(
        select(*_POINT)
        .where(of_chan)
        .where(s.c.ts_ns <= since_ns)
        .order_by(s.c.ts_ns.desc(), s.c.id.desc())
        .limit(1)
    ).first()
    rest = conn.execute(
        select(*_POINT)
        .where(of_chan)
        .where(s.c.ts_ns > since_ns)
        .where(s.c.ts_ns < until_ns)
        .order_by(s.c.ts_ns, s.c.id)
    )
    points = [_point(first)] if first is not None else []
    points.extend(_point(row) for row in rest)
    return points


def latest_point(conn: Connection, node_id: int, chan_id: int) -> PolicyPoint | None:
    """The channel's newest sample (its policy now, as far as the store knows)."""
    s = channel_samples
    row = conn.execute(
        select(*_POINT)
        .where(s.c.node_id == node_id)
        .where(s.c.chan_id == to_signed64(chan_id))
        .order_by(s.c.ts_ns.desc(), s.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _point(row)


def recorded_until_ns(conn: Connection, node_id: int) -> int | None:
    """Up to when the daemon recorded this node: its newest heartbeat (None: never ran)."""
    value = conn.scalar(
        select(func.max(daemon_state.c.heartbeat_ns)).where(daemon_state.c.node_id == node_id)
    )
    return None if value is None else int(value)
