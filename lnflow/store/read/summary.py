"""The window's summary (:class:`~lnflow.analysis.model.AnalysisSummary`) from the store.

Failures per channel and class (:mod:`.failures`), settled forwards and inbound fees
(:mod:`.ledger`), our channels (:mod:`.channels`), the stream's gaps and observed time,
each channel's figures under its other ids folded in (:mod:`lnflow.store.channel_ids`).
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from lnflow.analysis.model import AnalysisSettings, AnalysisSummary
from lnflow.store.channel_ids import fold_counts, fold_failures
from lnflow.store.queries import observed_ns, stream_gaps
from lnflow.store.read.channels import channel_states
from lnflow.store.read.failures import unknown_and_rejected, window_failures
from lnflow.store.read.ledger import inbound_baselines, ledger_window, successes_out
from lnflow.store.read.window import span_of, window_for
from lnflow.store.rollups import NS_PER_HOUR
from lnflow.store.schema import daemon_state, nodes

__all__ = ["load_summary", "node_id_of"]


def node_id_of(conn: Connection) -> int | None:
    """The node this store records: the daemon's, else the only ``nodes`` row, else None."""
    recorded = conn.scalar(
        select(daemon_state.c.node_id)
        .where(daemon_state.c.node_id.is_not(None))
        .order_by(daemon_state.c.heartbeat_ns.desc())
        .limit(1)
    )
    if recorded is not None:
        return int(recorded)
    ids = conn.scalars(select(nodes.c.id).limit(2)).all()
    return int(ids[0]) if len(ids) == 1 else None


def load_summary(
    conn: Connection,
    node_id: int,
    aliases: dict[int, int],
    *,
    until_ns: int,
    hours: int,
    settings: AnalysisSettings,
) -> AnalysisSummary:
    """The figures of the window of :func:`~.window.window_for` (``aliases``: our channels'
    other ids, :func:`lnflow.store.channel_ids.alias_map`)."""
    since_ns, until_ns = window_for(until_ns, hours)
    window = span_of(since_ns, until_ns)
    baseline = span_of(since_ns - settings.baseline_days * 24 * NS_PER_HOUR, since_ns)
    forwards = ledger_window(conn, node_id, window)
    failures = window_failures(conn, node_id, window)
    unknown_amount, node_rejected = unknown_and_rejected(
        conn, node_id, since_ns, until_ns, (window, failures)
    )
    channels = channel_states(conn, node_id, since_ns, until_ns, settings.inbound_ratio)
    inbound = inbound_baselines(ledger_window(conn, node_id, baseline), forwards)
    return AnalysisSummary(
        since_ns=since_ns,
        until_ns=until_ns,
        hours=hours,
        channels=channels,
        failures=fold_failures(failures.by_channel, aliases),
        successes=fold_counts(successes_out(forwards), aliases),
        inbound=inbound,
        gaps=tuple(stream_gaps(conn, since_ns, until_ns, node_id)),
        observed_ns=observed_ns(conn, node_id, since_ns, until_ns),
        node_failures=failures.failures,
        node_missed_msat=failures.missed_dedup_msat,
        unknown_amount=unknown_amount,
        node_rejected=node_rejected,
        node_missed_raw_msat=failures.missed_raw_msat,
    )
