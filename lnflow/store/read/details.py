"""The raw failure details a :class:`~lnflow.analysis.model.DetailRequest` names, fetched
in a few batched statements and returned as :class:`~lnflow.analysis.model.DetailFacts`.

The failures are those the window's counts describe: local failures with
``since_ns <= resolved_ns < until_ns`` and a known amount, read from the partial covering
index ``ix_forward_attempts_local`` (one index range per channel and class). A channel's
failures recorded under its other ids (:mod:`lnflow.store.channel_ids`) count for it;
our fee history is kept under the channel's own id.

Amount percentiles are nearest ranks (:mod:`lnflow.analysis.ranks`), exact either way:

- in windows shorter than :data:`RANK_IN_SQL_FROM_HOURS` the amounts are read (one
  statement for all channels of a class) and ranked here, unless a channel may have
  more than :data:`RANK_IN_SQL_FROM_AMOUNTS` of them (its failures of the class bound
  its amounts): those are counted, and ranked in SQL when the count is that large;
- longer windows count the amounts (one statement: each channel's failures of the class
  in the window less those with no amount; the failures are the summary's, from the
  rollups, when the window starts after the node's retention horizon, so every raw
  failure the rollups count is still kept; else counted) and walk
  ``ix_forward_attempts_local_amount`` to each rank from the nearer end, without the
  time and node checks when the channel has no failure of the class outside the window
  and the store records this node alone; a channel with other ids has its amounts read
  and ranked here.

Fee offers and our fee history come in one statement each for all fee channels.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    ScalarSelect,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    select,
)

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import AmountRequest, DetailFacts, DetailRequest, FeePoint
from lnflow.analysis.ranks import nearest_rank, percentiles_of
from lnflow.domain import from_signed64, to_signed64
from lnflow.store.read.channels import has_policy, sample_of
from lnflow.store.read.speed import rows
from lnflow.store.read.sql import FAILED_LOCAL, ref_of, starts_after_horizon, unindexed
from lnflow.store.rollups import NS_PER_HOUR
from lnflow.store.schema import (
    channel_refs,
    channel_samples,
    channels,
    forward_attempts,
    nodes,
)

__all__ = ["RANK_IN_SQL_FROM_AMOUNTS", "RANK_IN_SQL_FROM_HOURS", "fetch_details"]

#: Shorter windows rank a channel's amounts of a class in SQL too when there are more
#: than this many: reading them would hold them all in memory at once (a busy hour may
#: hold a million failures).
RANK_IN_SQL_FROM_AMOUNTS = 20_000
#: From this window length on, amounts are ranked in SQL rather than read and sorted
#: here. Reading costs per amount in the window; ranking walks up to half the channel's
#: retained amounts of the class, in window or not, at a fraction of the cost per row:
#: with attempts kept 30 days (the default) it pays from about a week.
RANK_IN_SQL_FROM_HOURS = 7 * 24

_attempt = forward_attempts
_out_ref = channel_refs.alias("out_ref")
_in_ref = channel_refs.alias("in_ref")
# The failures of one class of several channels (SCIDs ``outs``) in [since, until) with a
# known amount, each with the SCID of its ref
_of_channels = (
    _out_ref.c.node_id == bindparam("node"),
    _out_ref.c.chan_id.in_(bindparam("outs", expanding=True)),
    _attempt.c.outgoing_chan_ref == _out_ref.c.id,
    _attempt.c.failure_class == bindparam("cls"),
    _attempt.c.resolved_ns >= bindparam("since"),
    _attempt.c.resolved_ns < bindparam("until"),
    _attempt.c.outcome == FAILED_LOCAL,
    _attempt.c.outgoing_amt_msat.is_not(None),
    unindexed(_attempt.c.node_id) == bindparam("node"),
)
# each channel's amounts as one text "a,b,c", parsed by json.loads: one row per channel
# for tens of thousands of values
_AMOUNTS = (
    select(
        _out_ref.c.chan_id.label("out"),
        func.aggregate_strings(cast(_attempt.c.outgoing_amt_msat, String), ",").label("amounts"),
    )
    .where(*_of_channels)
    .group_by(_out_ref.c.chan_id)
)
# Per channel of a class: its failures in [since, until) (``n``) less those with no
# amount (``unknown``), and whether it has any failure of the class outside the window
# (``outside``). ``n`` reads ix_forward_attempts_local up to resolved_ns alone: naming
# the amount or node_id there makes SQLite decode each entry further (about twice the
# time); the few failures with no amount are sought on ix_forward_attempts_local_amount
# (amount NULL, the time bounds unindexed); ``outside`` is one seek each way (and one
# for a time of NULL). The node check is left out where every attempt is the node's
# (:func:`_one_node`).
_ref = _out_ref.c.id


def _class_counts(node_checked: bool, from_rollups: bool) -> Select[Any]:
    def of_channel(*where: ColumnElement[bool], what: Any = None) -> Select[Any]:
        node = (unindexed(_attempt.c.node_id) == bindparam("node"),) if node_checked else ()
        return (
            select(func.count() if what is None else what)
            .where(_attempt.c.outgoing_chan_ref == _ref)
            .where(_attempt.c.failure_class == bindparam("cls"))
            .where(*where)
            .where(_attempt.c.outcome == FAILED_LOCAL, *node)
        )

    in_window = (
        _attempt.c.resolved_ns >= bindparam("since"),
        _attempt.c.resolved_ns < bindparam("until"),
    )
    unknown = of_channel(
        _attempt.c.outgoing_amt_msat.is_(None),
        unindexed(_attempt.c.resolved_ns) >= bindparam("since"),
        unindexed(_attempt.c.resolved_ns) < bindparam("until"),
    )
    one = _attempt.c.outgoing_chan_ref
    before = of_channel(_attempt.c.resolved_ns < bindparam("since"), what=one)
    after = of_channel(_attempt.c.resolved_ns >= bindparam("until"), what=one)
    unresolved = of_channel(_attempt.c.resolved_ns.is_(None), what=one)
    # from the rollups: the window's failures of the class are the summary's (``n`` 0)
    n = literal_column("0") if from_rollups else of_channel(*in_window).scalar_subquery()
    return select(
        _out_ref.c.chan_id.label("out"),
        n.label("n"),
        unknown.scalar_subquery().label("unknown"),
        case((before.exists() | after.exists() | unresolved.exists(), 1), else_=0).label("outside"),
    ).where(
        _out_ref.c.node_id == bindparam("node"),
        _out_ref.c.chan_id.in_(bindparam("outs", expanding=True)),
    )


_COUNTS = {
    (checked, from_rollups): _class_counts(checked, from_rollups)
    for checked in (True, False)
    for from_rollups in (True, False)
}
# a channel's fee offers: its FEE_INSUFFICIENT failures, each with its incoming channel's
# SCID (0 for none), whose inbound fee lnd added to ours
_OFFERS = (
    select(
        _out_ref.c.chan_id.label("out"),
        _attempt.c.missed_fee_msat,
        _attempt.c.outgoing_amt_msat,
        func.coalesce(_in_ref.c.chan_id, 0).label("incoming"),
    )
    .select_from(_out_ref)
    .join(_attempt, _attempt.c.outgoing_chan_ref == _out_ref.c.id)
    .outerjoin(_in_ref, _in_ref.c.id == _attempt.c.incoming_chan_ref)
    .where(*_of_channels)
)


# The k-th smallest amount of one channel's failures of a class, on
# ix_forward_attempts_local_amount (the time bounds unindexed, so the planner walks the
# index that gives the amount order rather than sort the window's amounts). A channel
# with no failure of the class outside the window, on a store of one node, is walked
# without the time and node checks (the same entries; each one not decoded further).
def _walk(slot: int, checked: bool, desc: bool) -> ScalarSelect[Any]:
    stmt = (
        select(_attempt.c.outgoing_amt_msat)
        .where(_attempt.c.outgoing_chan_ref == ref_of(bindparam(f"out{slot}")))
        .where(_attempt.c.failure_class == bindparam("cls"))
        .where(_attempt.c.outgoing_amt_msat.is_not(None))
    )
    if checked:
        stmt = stmt.where(
            unindexed(_attempt.c.resolved_ns) >= bindparam("since"),
            unindexed(_attempt.c.resolved_ns) < bindparam("until"),
        )
    stmt = stmt.where(_attempt.c.outcome == FAILED_LOCAL)
    if checked:
        stmt = stmt.where(unindexed(_attempt.c.node_id) == bindparam("node"))
    amount = _attempt.c.outgoing_amt_msat
    stmt = stmt.order_by(amount.desc() if desc else amount)
    return stmt.limit(1).offset(bindparam(f"skip{slot}")).scalar_subquery()


#: walks run as the columns of one statement (one row): hundreds of channels' ranks in a
#: few statements instead of one each
_WALKS_PER_STATEMENT = 32


@functools.cache
def _walks(slots: int, checked: bool, desc: bool) -> Select[Any]:
    """``slots`` walks of one class, in one direction, as one row."""
    return select(*(_walk(i, checked, desc).label(f"k{i}") for i in range(slots)))


def _one_node(conn: Connection, node_id: int) -> bool:
    """Whether the store records node ``node_id`` alone: every attempt is then its own
    (``forward_attempts.node_id`` is a foreign key to ``nodes``)."""
    lowest, highest = conn.execute(select(func.min(nodes.c.id), func.max(nodes.c.id))).one()
    return bool(lowest == highest == node_id)


# Our fee policy from the history's start: each channel's last sample with a policy at or
# before it (the policy then in force; else the first after it, one seek per channel),
# then each change of policy, found in SQL: from a sample, the first later sample (by
# ts_ns) whose policy differs is one range of ix_channel_samples_chan_state filtered in
# the index and stopped at its first match, so only the few changes (and the samples
# sharing their ts_ns) come back, not every sample of the history. The rows are in
# channel, then sample order; a superset of the changes that holds the history's first
# sample, whose repeats _Reader.fee_histories drops, exactly as when it read every sample.
_before = channel_samples.alias("before")
_policy_start = (
    select(_before.c.ts_ns)
    .where(sample_of(_before, bindparam("node"), channels.c.chan_id))
    .where(_before.c.ts_ns <= bindparam("start"))
    .where(has_policy(_before))
    .order_by(_before.c.ts_ns.desc(), _before.c.id.desc())
    .limit(1)
    .scalar_subquery()
)
_starts = (
    select(
        channels.c.chan_id,
        func.coalesce(_policy_start, bindparam("start")).label("from_ns"),
    )
    .where(channels.c.node_id == bindparam("node"))
    .where(channels.c.chan_id.in_(bindparam("chans", expanding=True)))
    .cte("starts")
)
_first = channel_samples.alias("first_policy")
_first_ts = (
    select(_first.c.ts_ns)
    .where(sample_of(_first, bindparam("node"), _starts.c.chan_id))
    .where(_first.c.ts_ns >= _starts.c.from_ns, _first.c.ts_ns <= bindparam("until"))
    .where(has_policy(_first))
    .order_by(_first.c.ts_ns)
    .limit(1)
    .scalar_subquery()
)


def _policy_at(samples: Any, chan_id: Any, ts_ns: Any) -> Any:
    """The condition: a sample of the node's channel ``chan_id`` at ``ts_ns`` with a policy."""
    return and_(
        sample_of(samples, bindparam("node"), chan_id),
        samples.c.ts_ns == ts_ns,
        has_policy(samples),
    )


# the samples at the history's first ts_ns
_points = (
    select(
        _starts.c.chan_id,
        channel_samples.c.ts_ns,
        channel_samples.c.id,
        channel_samples.c.fee_base_msat,
        channel_samples.c.fee_rate_ppm,
    )
    .select_from(_starts)
    .join(channel_samples, _policy_at(channel_samples, _starts.c.chan_id, _first_ts))
    .cte("points", recursive=True)
)
# from each point, the samples at the first later ts_ns with another policy
_point = _points.alias("point")
_next = channel_samples.alias("later")
_at = channel_samples.alias("changed")
_next_ts = (
    select(_next.c.ts_ns)
    .where(sample_of(_next, bindparam("node"), _point.c.chan_id))
    .where(_next.c.ts_ns > _point.c.ts_ns, _next.c.ts_ns <= bindparam("until"))
    .where(has_policy(_next))
    .where(
        (_next.c.fee_base_msat != _point.c.fee_base_msat)
        | (_next.c.fee_rate_ppm != _point.c.fee_rate_ppm)
    )
    .order_by(_next.c.ts_ns)
    .limit(1)
    .scalar_subquery()
)
_points = _points.union(
    select(_point.c.chan_id, _at.c.ts_ns, _at.c.id, _at.c.fee_base_msat, _at.c.fee_rate_ppm)
    .select_from(_point)
    .join(_at, _policy_at(_at, _point.c.chan_id, _next_ts))
)
_FEE_SAMPLES = (
    select(
        _starts.c.chan_id,
        _points.c.ts_ns,
        _points.c.fee_base_msat,
        _points.c.fee_rate_ppm,
    )
    .select_from(_starts)
    .outerjoin(_points, _points.c.chan_id == _starts.c.chan_id)
    .order_by(_starts.c.chan_id, _points.c.ts_ns, _points.c.id)
)


class _Reader:
    """The statements of one request, on one connection."""

    def __init__(
        self,
        conn: Connection,
        node_id: int,
        request: DetailRequest,
        aliases: Mapping[int, int],
    ) -> None:
        self.conn = conn
        self.window = {"node": node_id, "since": request.since_ns, "until": request.until_ns}
        self.request = request
        # each channel's other ids (unsigned), by the channel's id
        other_ids: dict[int, list[int]] = {}
        for scid, owner in sorted(aliases.items()):
            if scid != owner:
                other_ids.setdefault(owner, []).append(scid)
        self.other_ids = other_ids

    def ids_of(self, chan_ids: Iterable[int]) -> dict[int, int]:
        """Signed store id -> the channel it counts for, of these channels and their aliases."""
        return {
            to_signed64(scid): chan
            for chan in chan_ids
            for scid in (chan, *self.other_ids.get(chan, ()))
        }

    def _params(self, cls: FailureClass, ids: Mapping[int, int]) -> dict[str, object]:
        return self.window | {"cls": int(cls), "outs": sorted(ids)}

    @functools.cached_property
    def one_node(self) -> bool:
        return _one_node(self.conn, self.window["node"])

    @functools.cached_property
    def counts_from_rollups(self) -> bool:
        """Whether the window starts after the node's retention horizon: every raw failure
        in it is kept and every rollup period it covers too, so a channel's failures of a
        class in it are the summary's count (a failure's rollup hour is its
        ``resolved_ns``'s, so the summary counts exactly the rows ranked here)."""
        return starts_after_horizon(self.conn, self.window["node"], self.window["since"])

    def counts(
        self, cls: FailureClass, chan_ids: Sequence[int], failures: Mapping[int, int] | None
    ) -> dict[int, tuple[int, bool]]:
        """How many known amounts each channel's failures of the class have (no aliases),
        and whether they may be walked without checks (none outside the window, one node).
        ``failures``: each channel's failures of the class in the window, as the summary
        counted them from the rollups; used when :attr:`counts_from_rollups`, else (or
        None) the raw rows are counted."""
        ids = self.ids_of(chan_ids)
        rolled = failures is not None and self.counts_from_rollups
        stmt = _COUNTS[(not self.one_node, rolled)]
        found = {
            ids[out]: (
                (failures[ids[out]] if failures is not None and rolled else int(n)) - int(unknown),
                self.one_node and not outside,
            )
            for out, n, unknown, outside in self.conn.execute(stmt, self._params(cls, ids)).all()
        }
        return {chan: found.get(chan, (0, False)) for chan in chan_ids}

    def amounts(self, cls: FailureClass, chan_ids: Sequence[int]) -> dict[int, list[int]]:
        """Each channel's known amounts of the class (its other ids' included), sorted."""
        ids = self.ids_of(chan_ids)
        result: dict[int, list[int]] = {chan: [] for chan in chan_ids}
        found = self.conn.execute(_AMOUNTS, self._params(cls, ids)).all()
        if not found:
            return result
        # every row's text in one json.loads (a call per row cost more than its parse)
        texts = [amounts for _, amounts in found]
        for (out, _), values in zip(found, json.loads(f"[[{'],['.join(texts)}]]"), strict=True):
            held = result[ids[out]]
            if held:  # a channel's other id
                held.extend(values)
            else:
                result[ids[out]] = values
        for values in result.values():
            values.sort()
        return result

    def ranked(
        self,
        cls: FailureClass,
        counted: Mapping[int, tuple[int, bool]],
        percents: Mapping[int, Sequence[int]],
        per_statement: int,
    ) -> dict[int, dict[int, int]]:
        """Nearest ranks of each channel's amounts of the class (``counted``: how many it
        has, and whether they are walked without checks), walked in SQL from the nearer
        end, up to ``per_statement`` walks in one statement."""
        # (channel, percent, skip) of each walk, by (checked, descending)
        walks: dict[tuple[bool, bool], list[tuple[int, int, int]]] = {}
        for chan, (count, bare) in counted.items():
            for p in percents[chan] if count else ():
                k = nearest_rank(count, p)
                desc = k > count - k + 1
                walks.setdefault((not bare, desc), []).append(
                    (chan, p, count - k if desc else k - 1)
                )
        result: dict[int, dict[int, int]] = {chan: {} for chan in counted}
        for (checked, desc), todo in sorted(walks.items()):
            for at in range(0, len(todo), per_statement):
                part = todo[at : at + per_statement]
                params = self.window | {"cls": int(cls)}
                for i, (chan, _, skip) in enumerate(part):
                    params[f"out{i}"] = to_signed64(chan)
                    params[f"skip{i}"] = skip
                (found,) = rows(self.conn, _walks(len(part), checked, desc), params)
                if None in found:
                    raise _CountAboveRows  # counted from rollups that disagree with the rows
                for (chan, p, _), value in zip(part, found, strict=True):
                    result[chan][p] = int(value)
        # each channel's percents in the order asked
        return {
            chan: {p: result[chan][p] for p in percents[chan] if p in result[chan]}
            for chan in result
        }

    def offers(self, chan_ids: Sequence[int]) -> dict[int, tuple[tuple[int, int, int], ...]]:
        """(missed fee, amount, incoming channel) of each channel's fee failures."""
        ids = self.ids_of(chan_ids)
        found: dict[int, list[tuple[int, int, int]]] = {chan: [] for chan in chan_ids}
        result = self.conn.execute(_OFFERS, self._params(FailureClass.FEE, ids))
        # (the columns unpacked by name: a busy channel has thousands of offers)
        for out, missed_fee_msat, amount_msat, incoming in result.all():
            found[ids[out]].append((missed_fee_msat, amount_msat, from_signed64(incoming)))
        return {chan: tuple(offers) for chan, offers in found.items()}

    def fee_histories(self, chan_ids: Sequence[int]) -> dict[int, tuple[FeePoint, ...]]:
        """Our fee policy on each channel: the one in force at the start, then its changes."""
        params = {
            "node": self.window["node"],
            "start": self.request.history_from_ns,
            "until": self.request.until_ns,
            "chans": sorted(to_signed64(chan) for chan in chan_ids),
        }
        histories: dict[int, tuple[FeePoint, ...]] = {chan: () for chan in chan_ids}
        # rows in channel, then sample order, one with no sample (None) for a channel
        # that has none: keep each channel's first sample and those whose policy differs
        # from the sample before
        points: list[FeePoint] = []
        last_chan = last_policy = None
        for chan_id, ts_ns, fee_base_msat, fee_rate_ppm in self.conn.execute(
            _FEE_SAMPLES, params
        ).all():
            if chan_id != last_chan:
                if last_chan is not None:
                    histories[from_signed64(last_chan)] = tuple(points)
                points, last_chan, last_policy = [], chan_id, None
            if ts_ns is not None and (fee_base_msat, fee_rate_ppm) != last_policy:
                points.append(FeePoint(ts_ns, fee_base_msat, fee_rate_ppm))
                last_policy = (fee_base_msat, fee_rate_ppm)
        if last_chan is not None:
            histories[from_signed64(last_chan)] = tuple(points)
        return histories


class _CountAboveRows(Exception):
    """A walk found no amount at its rank: the count came from rollups that count more
    failures than the rows hold (a store edited by hand, or events lnd does not send)."""


def _percentiles(
    reader: _Reader,
    cls: FailureClass,
    requests: Sequence[AmountRequest],
    short: bool,
    from_rollups: bool = True,
) -> dict[int, dict[int, int]]:
    """Each requested channel's percentiles of its failed amounts of the class
    (``from_rollups``: counted from the summary's failures where the window allows)."""
    percents = {r.chan_id: r.percents for r in requests}
    to_read: list[int] = []
    to_count: list[int] = []
    for r in requests:
        few = short and r.failures <= RANK_IN_SQL_FROM_AMOUNTS
        (to_read if few or r.chan_id in reader.other_ids else to_count).append(r.chan_id)
    to_rank: dict[int, tuple[int, bool]] = {}
    if to_count:
        failures = {r.chan_id: r.failures for r in requests} if from_rollups else None
        for chan, (n, bare) in reader.counts(cls, to_count, failures).items():
            if short and n <= RANK_IN_SQL_FROM_AMOUNTS:
                to_read.append(chan)
            else:
                to_rank[chan] = (n, bare)
    result: dict[int, dict[int, int]] = {}
    if to_read:
        for chan, ordered in reader.amounts(cls, to_read).items():
            ranked = percentiles_of(ordered, percents[chan])
            result[chan] = dict(zip(percents[chan], ranked, strict=True)) if ranked else {}
    if to_rank:
        # a short window ranks in SQL only the rare channel with very many amounts: one
        # walk a statement
        per_statement = 1 if short else _WALKS_PER_STATEMENT
        result.update(reader.ranked(cls, to_rank, percents, per_statement))
    return result


def fetch_details(
    conn: Connection, node_id: int, request: DetailRequest, aliases: Mapping[int, int]
) -> DetailFacts:
    """The details ``request`` names, of node ``node_id``; ``aliases`` maps our channels'
    other ids to their channel (:func:`lnflow.store.channel_ids.alias_map`)."""
    reader = _Reader(conn, node_id, request, aliases)
    short = request.until_ns - request.since_ns < RANK_IN_SQL_FROM_HOURS * NS_PER_HOUR
    by_class: dict[FailureClass, list[AmountRequest]] = {}
    for r in request.amounts:
        by_class.setdefault(r.failure_class, []).append(r)
    percentiles: dict[tuple[int, FailureClass], dict[int, int]] = {}
    for cls, requests in sorted(by_class.items()):
        try:
            found = _percentiles(reader, cls, requests, short)
        except _CountAboveRows:  # never on a store only lnflow wrote: count the rows
            found = _percentiles(reader, cls, requests, short, from_rollups=False)
        percentiles.update({(chan, cls): ranked for chan, ranked in found.items()})
    fee_channels = list(dict.fromkeys(request.fee_channels))
    return DetailFacts(
        percentiles=percentiles,
        offers=reader.offers(fee_channels) if fee_channels else {},
        fee_histories=reader.fee_histories(fee_channels) if fee_channels else {},
    )
