"""Running the policy engine against a node: gather, plan, apply, roll back (DESIGN §9).

The pure core (``rules``, ``evaluate``, ``guards``) decides; this module fetches what it
reads and carries out what it decides:

* :func:`gather` reads lnd (GetInfo, ListChannels, GetChanInfo, FeeReport, GetNodeInfo)
  and the store (the latest snapshot, forwards per period, stream gaps, the change
  history) into one :class:`ChannelState` per channel;
* :func:`make_plan` evaluates the rules and puts every change through the guard rails;
* :func:`apply_plan` writes each change to the history as ``planned``, sends it with
  ``UpdateChannelPolicy`` (re-sending the unchanged fields from the current policy, as
  charge-lnd does) and records lnd's answer: ``applied``, or ``failed`` with lnd's
  ``failed_updates`` error. When lnd goes away mid-run, the change in flight and every
  later one are recorded ``failed`` with the reason, so the history says exactly what
  lnd took;
* :func:`rollback` restores the recorded "before" values of applied changes.

Enabling and disabling (``disable``, and re-enabling a channel we had disabled) goes
through ``Router.UpdateChanStatus``: DISABLE, which lnd keeps until told otherwise, and
ENABLE after any fee change of the same change. ENABLE on a channel whose peer went
offline meanwhile is refused by lnd; then AUTO hands it back to lnd, which enables it
when the peer returns (charge-lnd does the same). lnd < 0.13 has no UpdateChanStatus:
the guard refuses such a change in the plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lnflow.analysis.model import Opportunity
from lnflow.domain import (
    ChannelEdge,
    ChannelInfo,
    FeeReportEntry,
    LndVersion,
    NodeInfo,
    RoutingPolicy,
    to_signed64,
)
from lnflow.errors import LndError, LnflowError, MacaroonRejectedError
from lnflow.lnd import LndClient
from lnflow.store import policy_history as history
from lnflow.store.engines import PlainDb, PlainWriter
from lnflow.store.policy_history import PolicyValues
from lnflow.store.snapshot_read import latest_report, latest_run_id

from .evaluate import evaluate
from .guards import ChangeRecord, GuardSettings, Refusal, apply_guards
from .model import (
    ChannelActivity,
    ChannelState,
    EdgePolicy,
    PeerNode,
    PendingHtlc,
    PolicyChange,
    PolicyDecision,
)
from .rules import Rules

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = [
    "ApplyReport",
    "Evidence",
    "NodeReading",
    "Plan",
    "PolicyPermissionError",
    "apply_plan",
    "bake_command",
    "gather",
    "make_plan",
    "plan_doc",
    "read_evidence",
    "read_node",
    "rollback",
    "with_whatif",
]

_NS = 1_000_000_000


class PolicyPermissionError(LnflowError):
    """The macaroon may read but not change policies (no offchain:write)."""


def bake_command(path: str | Path) -> str:
    return f"lncli bakemacaroon info:read offchain:read offchain:write --save_to={path}"


def _permission_line(macaroon: Path, exc: Exception | None = None) -> str:
    rpc = "UpdateChanStatus" if "UpdateChanStatus" in str(exc) else "UpdateChannelPolicy"
    return (
        f"LND refused {rpc}: the macaroon {macaroon} lacks offchain:write:"
        f" bake a policy macaroon with `{bake_command('policy.macaroon')}`"
        " and set [policy] macaroonpath to it"
    )


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class NodeReading:
    """What lnd says about the node and its channels, at one moment."""

    info: NodeInfo
    version: LndVersion
    channels: tuple[ChannelInfo, ...]
    edges: Mapping[int, ChannelEdge | None]
    fees: Mapping[int, FeeReportEntry]
    peers: Mapping[str, tuple[int, int] | None]  # pubkey -> (channels, capacity sat)


async def read_node(lnd: LndClient) -> NodeReading:
    info, version = await lnd.check()
    channels = tuple(await lnd.list_channels())
    edges = {c.chan_id: await lnd.get_chan_info(c.chan_id) for c in channels}
    fees = {f.chan_id: f for f in await lnd.fee_report()}
    peers = {p: await lnd.get_node_stats(p) for p in {c.remote_pubkey for c in channels}}
    return NodeReading(info, version, channels, edges, fees, peers)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the store says: the latest snapshot, forwards per period, the history."""

    node_id: int | None = None
    snapshot_run_id: int | None = None
    opportunities: Mapping[int, Opportunity] | None = None
    stream_gap_s: int = 0  # longest gap of the latest analysis window
    activity: Mapping[int, Mapping[int, ChannelActivity]] | None = None  # chan -> period
    last_change_ns: Mapping[int, int] | None = None


def _node_id(db: PlainDb, pubkey: str) -> int | None:
    row = db.execute("SELECT id FROM nodes WHERE pubkey = ?", (pubkey,)).fetchone()
    return None if row is None else int(row[0])


def _activity(db: PlainDb, node_id: int, since_ns: int) -> dict[int, dict[str, int]]:
    per: dict[int, dict[str, int]] = {}
    for chan, n, msat, fee in db.execute(
        "SELECT chan_id_out, count(*), sum(amt_out_msat), sum(fee_msat) FROM forwards"
        " WHERE node_id = ? AND timestamp_ns >= ? GROUP BY chan_id_out",
        (node_id, since_ns),
    ):
        got = per.setdefault(chan, {})
        got.update(htlcs_out=n, sats_out=msat // 1000, fees_out_msat=fee)
    for chan, n, msat in db.execute(
        "SELECT chan_id_in, count(*), sum(amt_in_msat) FROM forwards"
        " WHERE node_id = ? AND timestamp_ns >= ? GROUP BY chan_id_in",
        (node_id, since_ns),
    ):
        got = per.setdefault(chan, {})
        got.update(htlcs_in=n, sats_in=msat // 1000)
    return per


def read_evidence(
    db: PlainDb | None,
    pubkey: str,
    chan_ids: Sequence[int],
    periods_s: frozenset[int],
    *,
    now_ns: int,
) -> Evidence:
    """The store's evidence for the node ``pubkey`` (empty when it has none yet)."""
    node_id = None if db is None else _node_id(db, pubkey)
    if db is None or node_id is None:
        empty = {c: {p: ChannelActivity() for p in periods_s} for c in chan_ids}
        return Evidence(node_id=node_id, activity=empty)
    report = latest_report(db, node_id)
    opps = {o.channel_id: o for o in report.opportunities} if report else {}
    gap_s = 0
    if report is not None:
        for gap in report.gaps:
            end = report.until_ns if gap.to_ns is None else min(gap.to_ns, report.until_ns)
            gap_s = max(gap_s, (end - max(gap.from_ns, report.since_ns)) // _NS)
    activity: dict[int, dict[int, ChannelActivity]] = {c: {} for c in chan_ids}
    for period in periods_s:
        per = _activity(db, node_id, now_ns - period * _NS)
        for chan in chan_ids:
            activity[chan][period] = ChannelActivity(**per.get(to_signed64(chan), {}))
    return Evidence(
        node_id=node_id,
        snapshot_run_id=latest_run_id(db, node_id),
        opportunities=opps,
        stream_gap_s=gap_s,
        activity=activity,
        last_change_ns=history.last_changed_ns(db, node_id),
    )


def _edge(p: RoutingPolicy | None) -> EdgePolicy | None:
    if p is None:
        return None
    return EdgePolicy(
        fee_base_msat=p.fee_base_msat,
        fee_rate_ppm=p.fee_rate_ppm,
        time_lock_delta=p.time_lock_delta,
        min_htlc_msat=p.min_htlc_msat,
        max_htlc_msat=p.max_htlc_msat,
        disabled=p.disabled,
        inbound_fee_base_msat=p.inbound_fee_base_msat,
        inbound_fee_rate_ppm=p.inbound_fee_rate_ppm,
    )


def channel_states(node: NodeReading, evidence: Evidence) -> list[ChannelState]:
    """One :class:`ChannelState` per open channel (pure)."""
    states = []
    for c in node.channels:
        edge = node.edges.get(c.chan_id)
        ours, peer = edge.policies_for(node.info.pubkey) if edge else (None, None)
        our_edge = _edge(ours)
        fee = node.fees.get(c.chan_id)
        if our_edge is not None and fee is not None:  # FeeReport: lnd's own record of our fee
            our_edge = replace(
                our_edge, fee_base_msat=fee.base_fee_msat, fee_rate_ppm=fee.fee_rate_ppm
            )
        stats = node.peers.get(c.remote_pubkey)
        states.append(
            ChannelState(
                chan_id=c.chan_id,
                peer_pubkey=c.remote_pubkey,
                capacity_sat=c.capacity_sat,
                local_balance_sat=c.local_balance_sat,
                remote_balance_sat=c.remote_balance_sat,
                initiator=c.initiator,
                private=c.private,
                active=c.active,
                ours=our_edge,
                peer=_edge(peer),
                commit_fee_sat=c.commit_fee_sat,
                pending_htlcs=tuple(PendingHtlc(*h) for h in c.pending_htlcs),
                min_htlc_floor_msat=c.min_htlc_floor_msat,
                max_htlc_ceiling_msat=c.max_pending_msat or None,
                peer_node=PeerNode(*stats) if stats else None,
                activity=(evidence.activity or {}).get(c.chan_id, {}),
                opportunity=(evidence.opportunities or {}).get(c.chan_id),
                stream_gap_s=evidence.stream_gap_s,
            )
        )
    return states


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class Plan:
    made_ns: int
    node: NodeReading
    evidence: Evidence
    decisions: tuple[PolicyDecision, ...]  # every channel's
    changes: tuple[PolicyDecision, ...]  # to apply, most urgent first
    refusals: tuple[Refusal, ...]
    # chan_id -> (fees per month before, after) msat: the what-if estimate of each change
    # of fee or max_htlc (lnflow.policy.whatif), where the store has the channel's window
    whatif: Mapping[int, tuple[int, int]] = field(default_factory=dict)

    def channel_point(self, chan_id: int) -> str:
        return next(c.channel_point for c in self.node.channels if c.chan_id == chan_id)


def make_plan(
    rules: Rules,
    node: NodeReading,
    evidence: Evidence,
    *,
    guards: GuardSettings,
    analysis_window_s: int,
    max_fee_step_percent: int,
    now_ns: int,
) -> Plan:
    decisions = evaluate(
        rules,
        channel_states(node, evidence),
        block_height=node.info.block_height,
        analysis_window_s=analysis_window_s,
        max_fee_step_percent=max_fee_step_percent,
    )
    records = [ChangeRecord(c, ns) for c, ns in (evidence.last_change_ns or {}).items()]
    guarded = apply_guards(decisions, records, guards, now_ns=now_ns, lnd_version=node.version)
    return Plan(
        made_ns=now_ns,
        node=node,
        evidence=evidence,
        decisions=decisions,
        changes=guarded.changes,
        refusals=guarded.refusals,
    )


async def gather(
    lnd: LndClient,
    db: PlainDb | None,
    rules: Rules,
    *,
    guards: GuardSettings,
    analysis_window_s: int,
    max_fee_step_percent: int,
    now_ns: int | None = None,
) -> Plan:
    """Read lnd and the store, then plan (nothing is written)."""
    node = await read_node(lnd)
    now = time.time_ns() if now_ns is None else now_ns
    evidence = read_evidence(
        db,
        node.info.pubkey,
        [c.chan_id for c in node.channels],
        rules.activity_periods_s(analysis_window_s),
        now_ns=now,
    )
    return make_plan(
        rules,
        node,
        evidence,
        guards=guards,
        analysis_window_s=analysis_window_s,
        max_fee_step_percent=max_fee_step_percent,
        now_ns=now,
    )


def with_whatif(plan: Plan, conn: Connection, *, hours: float) -> Plan:
    """The plan with the what-if estimate of every change of fee or max_htlc."""
    from .whatif import estimate

    node_id = plan.evidence.node_id
    if node_id is None:
        return plan
    got: dict[int, tuple[int, int]] = {}
    for d in plan.changes:
        c = d.change
        if c.fee_ppm is None and c.base_fee_msat is None and c.max_htlc_msat is None:
            continue
        try:
            w = estimate(
                conn,
                node_id=node_id,
                chan_id=d.chan_id,
                fee_ppm=c.fee_ppm,
                base_fee_msat=c.base_fee_msat,
                max_htlc_msat=c.max_htlc_msat,
                hours=hours,
                now_ns=plan.made_ns,
            )
        except LnflowError:
            continue  # e.g. nothing recorded for the channel: no estimate
        got[d.chan_id] = (w.fees_month_before_msat, w.fees_month_after_msat)
    return replace(plan, whatif=got)


def _before(p: EdgePolicy) -> PolicyValues:
    return PolicyValues(
        base_fee_msat=p.fee_base_msat,
        fee_ppm=p.fee_rate_ppm,
        min_htlc_msat=p.min_htlc_msat,
        max_htlc_msat=p.max_htlc_msat,
        time_lock_delta=p.time_lock_delta,
        inbound_base_fee_msat=p.inbound_fee_base_msat,
        inbound_fee_ppm=p.inbound_fee_rate_ppm,
        disabled=p.disabled,
    )


def _after(c: PolicyChange) -> PolicyValues:
    return PolicyValues(
        base_fee_msat=c.base_fee_msat,
        fee_ppm=c.fee_ppm,
        min_htlc_msat=c.min_htlc_msat,
        max_htlc_msat=c.max_htlc_msat,
        time_lock_delta=c.time_lock_delta,
        inbound_base_fee_msat=c.inbound_base_fee_msat,
        inbound_fee_ppm=c.inbound_fee_ppm,
        disabled=c.disabled,
    )


def _change_doc(d: PolicyDecision) -> dict[str, Any]:
    assert d.before is not None
    before, after = _before(d.before), _after(d.change)
    return {
        "chan_id": d.chan_id,
        "peer_pubkey": d.peer_pubkey,
        "sections": list(d.sections),
        "strategy": d.strategy.value if d.strategy else None,
        "fields": {
            name: {"before": getattr(before, name), "after": getattr(after, name)}
            for name in history.FIELDS
            if getattr(after, name) is not None
        },
        "reason": d.reason,
    }


def plan_doc(plan: Plan) -> dict[str, Any]:
    """The plan as JSON (``lnflowd policy plan --json``)."""
    return {
        "node": plan.node.info.pubkey,
        "lnd_version": plan.node.version.version,
        "snapshot_run_id": plan.evidence.snapshot_run_id,
        "changes": [
            {
                **_change_doc(d),
                "whatif_month_msat": (
                    {"before": plan.whatif[d.chan_id][0], "after": plan.whatif[d.chan_id][1]}
                    if d.chan_id in plan.whatif
                    else None
                ),
            }
            for d in plan.changes
        ],
        "refused": [{**_change_doc(r.decision), "refused": r.reason} for r in plan.refusals],
        "unchanged": [
            {"chan_id": d.chan_id, "reason": d.reason} for d in plan.decisions if not d.changed
        ],
    }


def record_planned(
    db: PlainWriter, plan: Plan, node_id: int, *, run_id: int | None = None
) -> tuple[int, list[int]]:
    """Write the plan's changes as ``planned`` (one run) and commit; (run id, change ids)."""
    run = history.next_run_id(db) if run_id is None else run_id
    ids = []
    for d in plan.changes:
        assert d.before is not None
        ids.append(
            history.insert_change(
                db,
                node_id=node_id,
                run_id=run,
                created_ns=plan.made_ns,
                chan_id=d.chan_id,
                section=", ".join(d.sections),
                strategy=d.strategy.value if d.strategy else "",
                before=_before(d.before),
                after=_after(d.change),
                snapshot_run_id=plan.evidence.snapshot_run_id,
                reason=d.reason,
                whatif=plan.whatif.get(d.chan_id),
            )
        )
    db.commit()
    return run, ids


# --------------------------------------------------------------------------- applying


@dataclass(frozen=True, slots=True)
class Outcome:
    change_id: int
    chan_id: int
    result: str  # applied, failed
    error: str | None


@dataclass(frozen=True, slots=True)
class ApplyReport:
    run_id: int
    outcomes: tuple[Outcome, ...]
    stopped: str | None  # one line when lnd went away or refused the macaroon

    @property
    def applied(self) -> int:
        return sum(o.result == "applied" for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(o.result == "failed" for o in self.outcomes)


_POLICY_FIELDS = tuple(name for name in history.FIELDS if name != "disabled")
_ENABLE_INACTIVE = "not currently active"  # lnd's ErrEnableInactiveChan


async def _send(lnd: LndClient, point: str, before: EdgePolicy, after: PolicyValues) -> str | None:
    """UpdateChannelPolicy for the policy fields set, then UpdateChanStatus when the
    change enables or disables; None when lnd took it all, else lnd's refusal line."""
    sent_policy = any(getattr(after, name) is not None for name in _POLICY_FIELDS)
    if sent_policy:
        error = await _send_policy(lnd, point, before, after)
        if error is not None:
            return error
    if after.disabled is None:
        return None
    if after.disabled:
        error = await lnd.update_chan_status(point, "disable")
    else:
        error = await lnd.update_chan_status(point, "enable")
        if error is not None and _ENABLE_INACTIVE in error:
            error = await lnd.update_chan_status(point, "auto")  # lnd enables it once back
    if error is not None and sent_policy:  # the history must not hide what lnd took
        return f"UpdateChannelPolicy applied, UpdateChanStatus refused: {error}"
    return error


async def _send_policy(
    lnd: LndClient, point: str, before: EdgePolicy, after: PolicyValues
) -> str | None:
    """One UpdateChannelPolicy; None when lnd took it, else lnd's failed_updates line."""
    inbound = None
    if after.inbound_base_fee_msat is not None or after.inbound_fee_ppm is not None:
        inbound = (
            before.inbound_fee_base_msat
            if after.inbound_base_fee_msat is None
            else after.inbound_base_fee_msat,
            before.inbound_fee_rate_ppm if after.inbound_fee_ppm is None else after.inbound_fee_ppm,
        )
    failed = await lnd.update_channel_policy(
        point,
        base_fee_msat=before.fee_base_msat if after.base_fee_msat is None else after.base_fee_msat,
        fee_rate_ppm=before.fee_rate_ppm if after.fee_ppm is None else after.fee_ppm,
        time_lock_delta=(
            before.time_lock_delta if after.time_lock_delta is None else after.time_lock_delta
        ),
        max_htlc_msat=after.max_htlc_msat or 0,
        min_htlc_msat=after.min_htlc_msat,
        inbound=inbound,
    )
    if not failed:
        return None
    return "; ".join(f"{f.reason}: {f.error}" for f in failed)


async def _send_all(
    lnd: LndClient,
    db: PlainWriter,
    run_id: int,
    jobs: Sequence[tuple[int, int, str, EdgePolicy, PolicyValues]],  # id, chan, point, ...
    *,
    success: str,
    on_result: Callable[[Outcome], None] | None,
) -> ApplyReport:
    outcomes: list[Outcome] = []
    stopped: str | None = None
    for change_id, chan_id, point, before, after in jobs:
        if stopped is not None:
            error: str | None = f"not sent: {stopped}"
        else:
            try:
                error = await _send(lnd, point, before, after)
            except MacaroonRejectedError as exc:
                stopped = (
                    _permission_line(lnd.credentials.macaroonpath, exc)
                    if "offchain:write" in str(exc)
                    else str(exc)
                )
                error = stopped
            except LndError as exc:
                stopped = f"lnd went away mid-run: {exc}"
                error = f"not known to be applied: {exc}"
        result = success if error is None else "failed"
        history.set_result(
            db,
            change_id,
            result,
            error=error,
            applied_ns=time.time_ns() if error is None else None,
        )
        db.commit()
        outcome = Outcome(change_id, chan_id, result, error)
        outcomes.append(outcome)
        if on_result is not None:
            on_result(outcome)
    return ApplyReport(run_id, tuple(outcomes), stopped)


async def apply_plan(
    plan: Plan,
    lnd: LndClient,
    db: PlainWriter,
    node_id: int,
    *,
    on_result: Callable[[Outcome], None] | None = None,
) -> ApplyReport:
    """Record the plan's changes as planned, send them one by one, record each answer."""
    run_id, ids = record_planned(db, plan, node_id)
    jobs = []
    for change_id, d in zip(ids, plan.changes, strict=True):
        assert d.before is not None
        jobs.append(
            (change_id, d.chan_id, plan.channel_point(d.chan_id), d.before, _after(d.change))
        )
    return await _send_all(lnd, db, run_id, jobs, success="applied", on_result=on_result)


async def rollback(
    lnd: LndClient,
    db: PlainWriter,
    *,
    change_ids: Sequence[int] = (),
    run_id: int | None = None,
    result: str = "rolled_back",
    why: str | None = None,
    on_result: Callable[[Outcome], None] | None = None,
) -> ApplyReport:
    """Restore the "before" values of applied changes (by id, or every one of a run).

    Each restore is a change of its own (``rolled_back``, or ``reverted`` for the
    automatic revert) naming the change it undoes; only the fields the change set are
    restored. Raises :class:`LnflowError` naming what cannot be rolled back.
    """
    if run_id is not None:
        rows = history.changes(db, run_id=run_id, results=("applied",))
        if not rows:
            raise LnflowError(f"run {run_id} has no applied change: see lnflowctl policy history")
    else:
        rows = history.changes(db, ids=change_ids)
        missing = set(change_ids) - {r.id for r in rows}
        if missing:
            raise LnflowError(
                f"no policy change {min(missing)}: see lnflowctl policy history for the ids"
            )
        for row in rows:
            if row.result != "applied":
                raise LnflowError(
                    f"policy change {row.id} was {row.result}, not applied: nothing to roll back"
                )
    node = await read_node(lnd)
    here = _node_id(db, node.info.pubkey)
    for row in rows:  # a store may hold several nodes' history (PostgreSQL)
        if row.node_id != here:
            raise LnflowError(
                f"policy change {row.id} was made on another node than the lnd connected to:"
                " roll it back with that node's lnd"
            )
    points = {c.chan_id: c.channel_point for c in node.channels}
    now = time.time_ns()
    run = history.next_run_id(db)
    jobs = []
    for row in rows:
        edge = node.edges.get(row.chan_id)
        ours = _edge(edge.policies_for(node.info.pubkey)[0]) if edge else None
        if row.chan_id not in points or ours is None:
            raise LnflowError(
                f"channel {row.chan_id} of change {row.id} is no longer open: nothing to roll back"
            )
        restore = PolicyValues(
            **{
                name: getattr(row.before, name)
                for name in history.FIELDS
                if getattr(row.after, name) is not None
            }
        )
        change_id = history.insert_change(
            db,
            node_id=row.node_id,
            run_id=run,
            created_ns=now,
            chan_id=row.chan_id,
            section="",
            strategy="rollback" if result == "rolled_back" else "revert",
            before=_before(ours),
            after=restore,
            snapshot_run_id=None,
            reason=f"restores change {row.id} (run {row.run_id})" + (f": {why}" if why else ""),
            undoes_id=row.id,
        )
        jobs.append((change_id, row.chan_id, points[row.chan_id], ours, restore))
    db.commit()
    return await _send_all(lnd, db, run, jobs, success=result, on_result=on_result)
