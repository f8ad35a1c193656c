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

from sqlalchemy import Connection, Engine, insert, update

from lnflow.analysis.model import AnalysisReport, Opportunity
from lnflow.domain import FailureClass, to_signed64
from lnflow.store import snapshot_read
from lnflow.store.engines import plain_connection
from lnflow.store.schema import analysis_runs, opportunities, rebalance_moves, run_gaps

__all__ = ["SnapshotWriter", "latest_report", "latest_run_id", "report_of", "urgency_history"]


class SnapshotWriter:
    """Saves analysis runs. Synchronous: the daemon calls it on the store thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def write_run(
        self,
        node_id: int,
        report: AnalysisReport,
        duration_ms: int,
        table: tuple[str, str] | None = None,
    ) -> int:
        """Store ``report`` as one run (one transaction); returns the run's id.

        ``table``: ``(format, text)``, the run's opportunities table as rendered for
        ``lnflowctl opportunities`` (lnflow.cli.saved_table). The node's earlier runs
        give theirs up: only the latest is shown.
        """
        generated = report.generated_ns
        table_format, table_text = table if table is not None else (None, None)
        with self._engine.begin() as conn:
            conn.execute(
                update(analysis_runs)
                .where(analysis_runs.c.node_id == node_id)
                .where(analysis_runs.c.table_text.is_not(None))
                .values(table_format=None, table_text=None)
            )
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
                    node_unknown_amount=report.node_unknown_amount,
                    node_rejected=report.node_rejected,
                    node_missed_raw_msat=report.node_missed_raw_msat,
                    observed_ns=report.observed_ns,
                    table_format=table_format,
                    table_text=table_text,
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
        row[cls.failures_column] = stats.failures if stats else None
        row[cls.missed_column] = stats.missed_msat if stats else None
    return row


# --------------------------------------------------------------------------- reading
# One implementation in lnflow.store.snapshot_read (plain DB-API, which lnflowctl
# opportunities uses without importing SQLAlchemy); these take a SQLAlchemy connection.


def latest_run_id(conn: Connection, node_id: int | None = None) -> int | None:
    """The newest run (by generated_ns, then id), of ``node_id`` if given."""
    return snapshot_read.latest_run_id(plain_connection(conn), node_id)


def latest_report(conn: Connection, node_id: int | None = None) -> AnalysisReport | None:
    """The newest run's report, rebuilt whole; None when no run was saved yet."""
    return snapshot_read.latest_report(plain_connection(conn), node_id)


def report_of(conn: Connection, run_id: int) -> AnalysisReport | None:
    """The report saved as run ``run_id`` (None if there is no such run)."""
    return snapshot_read.report_of(plain_connection(conn), run_id)


def urgency_history(
    conn: Connection, chan_id: int, since_ns: int, node_id: int | None = None
) -> list[tuple[int, int]]:
    """``(generated_ns, urgency_score)`` of the runs (of ``node_id`` if given) since
    ``since_ns`` listing the channel."""
    return snapshot_read.urgency_history(plain_connection(conn), chan_id, since_ns, node_id)
