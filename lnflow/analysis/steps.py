"""The analysis around one fetch from the store: plan, then (the store fetches), decide.

As faraday's ``recommend``: the store is asked once for everything the decision needs and
closed before the decision runs, on plain records.

1. :func:`plan` looks at the window's summary (counts per channel and class, channel
   states) and names the details the recommendations will use: the failed amounts'
   percentiles of each reported channel whose liquidity or max_htlc class decides, the
   fee offers and our fee history of each whose fee class decides
   (:func:`~lnflow.analysis.opportunities.deciding_class`); nothing for any other.
2. The store answers that :class:`~lnflow.analysis.model.DetailRequest` with
   :class:`~lnflow.analysis.model.DetailFacts` (:func:`lnflow.store.read.fetch_details`).
3. :func:`decide` ranks and recommends (:func:`~lnflow.analysis.opportunities.analyze`)
   on the summary and the facts.

Pure: no I/O, no clock (``now_ns`` is passed in).
"""

from __future__ import annotations

from .classify import FailureClass
from .model import (
    AmountRequest,
    AnalysisInput,
    AnalysisReport,
    AnalysisSettings,
    AnalysisSummary,
    DetailFacts,
    DetailRequest,
)
from .opportunities import AMOUNT_PERCENTS, analyze, deciding_class, reported

__all__ = ["decide", "plan"]

_NS_PER_HOUR = 3_600 * 1_000_000_000


def plan(summary: AnalysisSummary, settings: AnalysisSettings) -> DetailRequest:
    """The details :func:`decide` will read for this summary, and nothing else."""
    amounts: list[AmountRequest] = []
    fee_channels: list[int] = []
    for channel, failures in reported(summary.channels, summary.failures, settings):
        cls = deciding_class(failures)
        if cls is FailureClass.FEE:
            fee_channels.append(channel.chan_id)
        elif cls is not None and cls in AMOUNT_PERCENTS:
            stats = failures.by_class[cls]
            amounts.append(
                AmountRequest(channel.chan_id, cls, AMOUNT_PERCENTS[cls], stats.failures)
            )
    return DetailRequest(
        since_ns=summary.since_ns,
        until_ns=summary.until_ns,
        history_from_ns=summary.since_ns - settings.gossip_grace_h * _NS_PER_HOUR,
        amounts=tuple(amounts),
        fee_channels=tuple(fee_channels),
    )


def decide(
    summary: AnalysisSummary, facts: DetailFacts, settings: AnalysisSettings, now_ns: int
) -> AnalysisReport:
    """The report of the window: opportunities ranked, the rebalance plan, the node totals."""
    inp = AnalysisInput(
        since_ns=summary.since_ns,
        until_ns=summary.until_ns,
        hours=summary.hours,
        channels=summary.channels,
        failures=summary.failures,
        successes=summary.successes,
        inbound=summary.inbound,
        details=facts,
        gaps=summary.gaps,
        node_failures=summary.node_failures,
        node_missed_msat=summary.node_missed_msat,
        unknown_amount=summary.unknown_amount,
        node_rejected=summary.node_rejected,
        node_missed_raw_msat=summary.node_missed_raw_msat,
        observed_ns=summary.observed_ns,
    )
    return analyze(inp, settings, now_ns)
