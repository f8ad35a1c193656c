"""Reading analysis snapshots back over a plain DB-API connection (no SQLAlchemy import).

``lnflowctl opportunities`` runs on every operator's glance at the node, so on a SQLite
store it reads the latest run through the standard library alone; on PostgreSQL through
psycopg (:class:`lnflow.store.engines.PlainDb`). :mod:`lnflow.store.snapshots` (the
writer) exposes the same readers for SQLAlchemy connections by handing them the driver
connection, so there is one reading code path. Rows are unpacked by position: the
engines' rows share no access by name.
"""

from __future__ import annotations

from typing import Any

from lnflow.analysis.model import (
    Action,
    AnalysisReport,
    ClassStats,
    Confidence,
    Gap,
    Opportunity,
    RebalanceMove,
)
from lnflow.domain import FailureClass, from_signed64, to_signed64
from lnflow.store.engines import PlainDb, column_names

__all__ = ["latest_report", "latest_run_id", "report_of", "urgency_history"]

_CLASS_COLUMNS = tuple((cls, cls.failures_column, cls.missed_column) for cls in FailureClass)


# a run's columns, in the order report_of unpacks them; the last two came with 0014 and
# later (a store not yet upgraded reads the deduplicated sum and no observed time)
_RUN = (
    "since_ns, until_ns, hours, generated_ns, node_failures, node_missed_msat,"
    " node_unknown_amount, node_rejected"
)


def latest_run_id(db: PlainDb, node_id: int | None = None) -> int | None:
    """The newest run (by generated_ns, then id), of ``node_id`` if given."""
    where = "" if node_id is None else " WHERE node_id = ?"
    params = () if node_id is None else (node_id,)
    row = db.execute(
        f"SELECT id FROM analysis_runs{where} ORDER BY generated_ns DESC, id DESC LIMIT 1", params
    ).fetchone()
    return int(row[0]) if row is not None else None


def latest_report(db: PlainDb, node_id: int | None = None) -> AnalysisReport | None:
    """The newest run's report, rebuilt whole; None when no run was saved yet."""
    run_id = latest_run_id(db, node_id)
    return report_of(db, run_id) if run_id is not None else None


def report_of(db: PlainDb, run_id: int) -> AnalysisReport | None:
    """The report saved as run ``run_id`` (None if there is no such run)."""
    have = column_names(db, "analysis_runs")
    raw_sum = "node_missed_raw_msat" if "node_missed_raw_msat" in have else "node_missed_msat"
    observed = "observed_ns" if "observed_ns" in have else "NULL"
    run = db.execute(
        f"SELECT {_RUN}, {raw_sum}, {observed} FROM analysis_runs WHERE id = ?", (run_id,)
    ).fetchone()
    if run is None:
        return None
    (
        since_ns,
        until_ns,
        hours,
        generated_ns,
        node_failures,
        node_missed_msat,
        node_unknown_amount,
        node_rejected,
        node_missed_raw_msat,
        observed_ns,
    ) = run
    gaps = tuple(
        Gap(from_ns, to_ns)
        for from_ns, to_ns in db.execute(
            "SELECT from_ns, to_ns FROM run_gaps WHERE run_id = ? ORDER BY position", (run_id,)
        )
    )
    opps = tuple(map(_opportunity, db.execute(_OPPORTUNITIES, (run_id,))))
    plan = tuple(
        RebalanceMove(
            target_channel_id=from_signed64(target),
            source_channel_ids=tuple(int(s) for s in sources.split(",") if s),
            amount_sat=amount_sat,
            max_cost_ppm=max_cost_ppm,
        )
        for target, sources, amount_sat, max_cost_ppm in db.execute(
            "SELECT target_channel_id, source_channel_ids, amount_sat, max_cost_ppm"
            " FROM rebalance_moves WHERE run_id = ? ORDER BY position",
            (run_id,),
        )
    )
    return AnalysisReport(
        since_ns=since_ns,
        until_ns=until_ns,
        hours=hours,
        generated_ns=generated_ns,
        opportunities=opps,
        rebalance_plan=plan,
        gaps=gaps,
        node_failures=node_failures,
        node_missed_msat=node_missed_msat,
        node_unknown_amount=node_unknown_amount,
        node_rejected=node_rejected,
        node_missed_raw_msat=node_missed_raw_msat,
        observed_ns=observed_ns,
    )


# A run's opportunities, their columns in the order _opportunity unpacks them (a tuple
# each: a run may list thousands, and sqlite3.Row's lookups by name cost more than that)
_OPPORTUNITIES = (
    "SELECT rank, channel_id, peer_pubkey, peer_alias, failures, clusters, successes,"
    " failure_rate, missed_msat, missed_raw_msat, potential_monthly_msat, urgency_score,"
    " confidence, recommended_action, reason, estimated, capacity_sat, local_balance_sat,"
    " outbound_fee_ppm, suggested_fee_ppm, suggested_amount_sat, suggested_max_htlc_msat, "
    + ", ".join(f"{failures}, {missed}" for _, failures, missed in _CLASS_COLUMNS)
    + " FROM opportunities WHERE run_id = ? ORDER BY rank"
)
_CLASSES = tuple(cls for cls, _, _ in _CLASS_COLUMNS)
_CONFIDENCE = {c.value: c for c in Confidence}
_ACTION = {a.value: a for a in Action}


def _opportunity(row: tuple[Any, ...]) -> Opportunity:
    (
        rank,
        channel_id,
        peer_pubkey,
        peer_alias,
        failures,
        clusters,
        successes,
        failure_rate,
        missed_msat,
        missed_raw_msat,
        potential_monthly_msat,
        urgency_score,
        confidence,
        action,
        reason,
        estimated,
        capacity_sat,
        local_balance_sat,
        outbound_fee_ppm,
        suggested_fee_ppm,
        suggested_amount_sat,
        suggested_max_htlc_msat,
        *class_columns,
    ) = row
    by_class: dict[FailureClass, ClassStats] = {}
    for cls, class_failures, class_missed in zip(
        _CLASSES, class_columns[0::2], class_columns[1::2], strict=True
    ):
        if class_failures is not None or class_missed is not None:
            by_class[cls] = ClassStats(class_failures or 0, class_missed or 0)
    return Opportunity(
        rank=rank,
        channel_id=from_signed64(channel_id),
        peer_pubkey=peer_pubkey,
        peer_alias=peer_alias,
        failures=failures,
        clusters=clusters,
        successes=successes,
        failure_rate=float(failure_rate),
        missed_msat=missed_msat,
        missed_raw_msat=missed_raw_msat,
        potential_monthly_msat=potential_monthly_msat,
        urgency_score=urgency_score,
        confidence=_CONFIDENCE.get(confidence) or Confidence(confidence),
        recommended_action=_ACTION.get(action) or Action(action),
        reason=reason,
        estimated=bool(estimated),
        by_class=by_class,
        capacity_sat=capacity_sat,
        local_balance_sat=local_balance_sat,
        outbound_fee_ppm=outbound_fee_ppm,
        suggested_fee_ppm=suggested_fee_ppm,
        suggested_amount_sat=suggested_amount_sat,
        suggested_max_htlc_msat=suggested_max_htlc_msat,
    )


def urgency_history(
    db: PlainDb, chan_id: int, since_ns: int, node_id: int | None = None
) -> list[tuple[int, int]]:
    """``(generated_ns, urgency_score)`` of the runs (of ``node_id`` if given) since
    ``since_ns`` listing the channel.

    Oldest first. A run in which the channel was not an opportunity has no entry.
    """
    of_node = (
        "" if node_id is None else " AND run_id IN (SELECT id FROM analysis_runs WHERE node_id = ?)"
    )
    rows = db.execute(
        "SELECT generated_ns, urgency_score FROM opportunities"
        f" WHERE channel_id = ? AND generated_ns >= ?{of_node} ORDER BY generated_ns, run_id",
        (to_signed64(chan_id), since_ns, *(() if node_id is None else (node_id,))),
    )
    return [(int(ts), int(score)) for ts, score in rows]
