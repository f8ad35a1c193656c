"""Analysis snapshots: each run's report saved, the latest read back whole (DESIGN §6).

A run is one ``analysis_runs`` row plus its ``run_gaps``, ``opportunities`` and
``rebalance_moves``, written in one transaction. :func:`latest_report` rebuilds an
:class:`~lnflow.analysis.model.AnalysisReport` equal to the one written: channel ids go
back to unsigned, ``by_class`` keeps exactly the classes it had (a class absent from the
mapping is stored as NULLs, a class with zeros as zeros), gaps and moves keep their
order, floats are stored as REAL (double precision, so they come back exact).

Older runs are the urgency history (:func:`urgency_history`); retention expires them
after ``runs_days``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Row, insert, select

from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import (
    Action,
    AnalysisReport,
    ClassStats,
    Confidence,
    Gap,
    Opportunity,
    RebalanceMove,
)
from lnflow.domain import from_signed64, to_signed64
from lnflow.store.schema import analysis_runs, opportunities, rebalance_moves, run_gaps

__all__ = ["SnapshotWriter", "latest_report", "latest_run_id", "report_of", "urgency_history"]


class SnapshotWriter:
    """Saves analysis runs. Synchronous: the daemon calls it on the store thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def write_run(self, node_id: int, report: AnalysisReport, duration_ms: int) -> int:
        """Store ``report`` as one run (one transaction); returns the run's id."""
        generated = report.generated_ns
        with self._engine.begin() as conn:
            key = conn.execute(
                insert(analysis_runs).values(
                    node_id=node_id,
                    generated_ns=generated,
                    since_ns=report.since_ns,
                    until_ns=report.until_ns,
                    hours=report.hours,
                    duration_ms=duration_ms,
                    opportunities=len(report.opportunities),
                    node_failures=report.node_failures,
                    node_missed_msat=report.node_missed_msat,
                )
            ).inserted_primary_key
            assert key is not None
            run_id = int(key[0])
            if report.gaps:
                conn.execute(
                    insert(run_gaps),
                    [
                        {
                            "run_id": run_id,
                            "position": i,
                            "generated_ns": generated,
                            "from_ns": gap.from_ns,
                            "to_ns": gap.to_ns,
                        }
                        for i, gap in enumerate(report.gaps)
                    ],
                )
            if report.opportunities:
                conn.execute(
                    insert(opportunities),
                    [_opportunity_row(run_id, generated, o) for o in report.opportunities],
                )
            if report.rebalance_plan:
                conn.execute(
                    insert(rebalance_moves),
                    [
                        {
                            "run_id": run_id,
                            "position": i,
                            "generated_ns": generated,
                            "target_channel_id": to_signed64(move.target_channel_id),
                            "source_channel_ids": ",".join(map(str, move.source_channel_ids)),
                            "amount_sat": move.amount_sat,
                            "max_cost_ppm": move.max_cost_ppm,
                        }
                        for i, move in enumerate(report.rebalance_plan)
                    ],
                )
            return run_id


def _opportunity_row(run_id: int, generated_ns: int, o: Opportunity) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": run_id,
        "rank": o.rank,
        "generated_ns": generated_ns,
        "channel_id": to_signed64(o.channel_id),
        "peer_pubkey": o.peer_pubkey,
        "peer_alias": o.peer_alias,
        "failures": o.failures,
        "clusters": o.clusters,
        "successes": o.successes,
        "failure_rate": o.failure_rate,
        "missed_msat": o.missed_msat,
        "missed_raw_msat": o.missed_raw_msat,
        "potential_monthly_msat": o.potential_monthly_msat,
        "urgency_score": o.urgency_score,
        "confidence": o.confidence.value,
        "recommended_action": o.recommended_action.value,
        "reason": o.reason,
        "estimated": o.estimated,
        "capacity_sat": o.capacity_sat,
        "local_balance_sat": o.local_balance_sat,
        "outbound_fee_ppm": o.outbound_fee_ppm,
        "suggested_fee_ppm": o.suggested_fee_ppm,
        "suggested_amount_sat": o.suggested_amount_sat,
        "suggested_max_htlc_msat": o.suggested_max_htlc_msat,
    }
    for cls in FailureClass:
        stats = o.by_class.get(cls)
        row[f"{cls.label}_failures"] = stats.failures if stats else None
        row[f"{cls.label}_missed_msat"] = stats.missed_msat if stats else None
    return row


# --------------------------------------------------------------------------- reading


def latest_run_id(conn: Connection, node_id: int | None = None) -> int | None:
    """The newest run (by generated_ns, then id), of ``node_id`` if given."""
    r = analysis_runs
    query = select(r.c.id).order_by(r.c.generated_ns.desc(), r.c.id.desc()).limit(1)
    if node_id is not None:
        query = query.where(r.c.node_id == node_id)
    run_id = conn.scalar(query)
    return int(run_id) if run_id is not None else None


def latest_report(conn: Connection, node_id: int | None = None) -> AnalysisReport | None:
    """The newest run's report, rebuilt whole; None when no run was saved yet."""
    run_id = latest_run_id(conn, node_id)
    return report_of(conn, run_id) if run_id is not None else None


def report_of(conn: Connection, run_id: int) -> AnalysisReport | None:
    """The report saved as run ``run_id`` (None if there is no such run)."""
    run = conn.execute(select(analysis_runs).where(analysis_runs.c.id == run_id)).first()
    if run is None:
        return None
    gaps = tuple(
        Gap(row.from_ns, row.to_ns)
        for row in conn.execute(
            select(run_gaps.c.from_ns, run_gaps.c.to_ns)
            .where(run_gaps.c.run_id == run_id)
            .order_by(run_gaps.c.position)
        )
    )
    opps = tuple(
        _opportunity(row)
        for row in conn.execute(
            select(opportunities)
            .where(opportunities.c.run_id == run_id)
            .order_by(opportunities.c.rank)
        )
    )
    m = rebalance_moves
    plan = tuple(
        RebalanceMove(
            target_channel_id=from_signed64(row.target_channel_id),
            source_channel_ids=tuple(int(s) for s in row.source_channel_ids.split(",") if s),
            amount_sat=row.amount_sat,
            max_cost_ppm=row.max_cost_ppm,
        )
        for row in conn.execute(select(m).where(m.c.run_id == run_id).order_by(m.c.position))
    )
    return AnalysisReport(
        since_ns=run.since_ns,
        until_ns=run.until_ns,
        hours=run.hours,
        generated_ns=run.generated_ns,
        opportunities=opps,
        rebalance_plan=plan,
        gaps=gaps,
        node_failures=run.node_failures,
        node_missed_msat=run.node_missed_msat,
    )


def _opportunity(row: Row[Any]) -> Opportunity:
    by_class: dict[FailureClass, ClassStats] = {}
    for cls in FailureClass:
        failures = getattr(row, f"{cls.label}_failures")
        missed = getattr(row, f"{cls.label}_missed_msat")
        if failures is not None or missed is not None:
            by_class[cls] = ClassStats(failures or 0, missed or 0)
    return Opportunity(
        rank=row.rank,
        channel_id=from_signed64(row.channel_id),
        peer_pubkey=row.peer_pubkey,
        peer_alias=row.peer_alias,
        failures=row.failures,
        clusters=row.clusters,
        successes=row.successes,
        failure_rate=float(row.failure_rate),
        missed_msat=row.missed_msat,
        missed_raw_msat=row.missed_raw_msat,
        potential_monthly_msat=row.potential_monthly_msat,
        urgency_score=row.urgency_score,
        confidence=Confidence(row.confidence),
        recommended_action=Action(row.recommended_action),
        reason=row.reason,
        estimated=bool(row.estimated),
        by_class=by_class,
        capacity_sat=row.capacity_sat,
        local_balance_sat=row.local_balance_sat,
        outbound_fee_ppm=row.outbound_fee_ppm,
        suggested_fee_ppm=row.suggested_fee_ppm,
        suggested_amount_sat=row.suggested_amount_sat,
        suggested_max_htlc_msat=row.suggested_max_htlc_msat,
    )


def urgency_history(conn: Connection, chan_id: int, since_ns: int) -> list[tuple[int, int]]:
    """``(generated_ns, urgency_score)`` of the runs since ``since_ns`` listing the channel.

    Oldest first. A run in which the channel was not an opportunity has no entry.
    """
    o = opportunities
    rows = conn.execute(
        select(o.c.generated_ns, o.c.urgency_score)
        .where(o.c.channel_id == to_signed64(chan_id))
        .where(o.c.generated_ns >= since_ns)
        .order_by(o.c.generated_ns, o.c.run_id)
    )
    return [(int(ts), int(score)) for ts, score in rows]
