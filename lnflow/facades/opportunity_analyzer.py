"""``OpportunityAnalyzer``: the seed's analysis API over what an HTLCMonitor recorded.

It runs the same analysis as ``lnflowctl analyze`` (DESIGN §5) on the
monitor's store and hands back :class:`MissedOpportunity` records carrying the
seed's attribute names. lnd-manageJ, when given, only fills in peer aliases
lnd did not know; if it is unreachable the aliases stay empty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from lnflow.analysis.model import Action, AnalysisReport, AnalysisSettings, Opportunity
from lnflow.domain import FailureClass, format_scid
from lnflow.errors import LnflowError

from .htlc_monitor import HTLCMonitor

__all__ = ["AliasSource", "MissedOpportunity", "OpportunityAnalyzer"]

log = logging.getLogger("lnflow.facades")


class AliasSource(Protocol):
    """What the analyzer uses from :class:`lnflow.manage.LndManageClient`."""

    async def get_node_alias(self, pubkey: str) -> str: ...


@dataclass(frozen=True, slots=True)
class MissedOpportunity:
    """One ranked opportunity under the seed's names.

    ``channel_id`` is the channel as ``BxTxO`` (as the seed and lnd-manageJ show
    it), ``chan_id`` the uint64 SCID; ``recommended_action`` is one of
    rebalance_outbound, rebalance_inbound, lower_fees, increase_capacity,
    raise_max_htlc, investigate; ``opportunity`` is the full analysis record.
    """

    rank: int
    channel_id: str
    chan_id: int
    peer_alias: str
    peer_pubkey: str
    total_failures: int
    liquidity_failures: int
    fee_failures: int
    failure_rate: float
    missed_revenue_sats: float
    potential_monthly_revenue_sats: float
    current_capacity_sats: int
    current_local_balance: int
    current_outbound_fee_ppm: int  # 0 when unknown
    recommended_action: Action
    reason: str
    urgency_score: int
    confidence: str
    estimated: bool
    suggested_fee_ppm: int | None
    suggested_amount_sat: int | None
    suggested_max_htlc_msat: int | None
    opportunity: Opportunity

    @classmethod
    def from_opportunity(cls, o: Opportunity, peer_alias: str | None = None) -> MissedOpportunity:
        def failures(c: FailureClass) -> int:
            stats = o.by_class.get(c)
            return stats.failures if stats else 0

        return cls(
            rank=o.rank,
            channel_id=format_scid(o.channel_id),
            chan_id=o.channel_id,
            peer_alias=peer_alias if peer_alias is not None else o.peer_alias,
            peer_pubkey=o.peer_pubkey,
            total_failures=o.failures,
            liquidity_failures=failures(FailureClass.LIQUIDITY),
            fee_failures=failures(FailureClass.FEE),
            failure_rate=o.failure_rate,
            missed_revenue_sats=o.missed_sats,
            potential_monthly_revenue_sats=o.potential_monthly_sats,
            current_capacity_sats=o.capacity_sat,
            current_local_balance=o.local_balance_sat,
            current_outbound_fee_ppm=o.outbound_fee_ppm or 0,
            recommended_action=o.recommended_action,
            reason=o.reason,
            urgency_score=o.urgency_score,
            confidence=o.confidence.value,
            estimated=o.estimated,
            suggested_fee_ppm=o.suggested_fee_ppm,
            suggested_amount_sat=o.suggested_amount_sat,
            suggested_max_htlc_msat=o.suggested_max_htlc_msat,
            opportunity=o,
        )


class OpportunityAnalyzer:
    """Ranks the channels losing routing revenue in the monitor's store.

    ``min_opportunity_sats``: the least missed revenue (sats, deduplicated) to
    report, together with the monitor's ``min_missed_sats`` (the larger wins)
    and ``min_failure_count``; ``analysis_window_hours``: the window, ending now.
    """

    def __init__(
        self,
        htlc_monitor: HTLCMonitor,
        lnd_manage_client: AliasSource | None = None,
        min_opportunity_sats: int = 100,
        analysis_window_hours: int = 24,
    ) -> None:
        if analysis_window_hours < 1:
            raise ValueError("analysis_window_hours must be at least 1")
        self.monitor = htlc_monitor
        self.manage = lnd_manage_client
        self.min_opportunity_sats = min_opportunity_sats
        self.analysis_window_hours = analysis_window_hours
        #: the report behind the last :meth:`analyze_opportunities` call
        self.last_report: AnalysisReport | None = None

    @property
    def settings(self) -> AnalysisSettings:
        return AnalysisSettings(
            min_failure_count=self.monitor.min_failure_count,
            min_missed_sats=max(self.monitor.min_missed_sats, self.min_opportunity_sats),
        )

    async def analyze_opportunities(self) -> list[MissedOpportunity]:
        """Every opportunity of the window, most urgent first."""
        report = await self.monitor.analysis_report(self.analysis_window_hours, self.settings)
        self.last_report = report
        return [
            MissedOpportunity.from_opportunity(o, await self._alias(o))
            for o in report.opportunities
        ]

    async def get_fee_opportunities(self) -> list[MissedOpportunity]:
        """The channels whose failures say our fee is too high (``lower_fees``)."""
        return [
            o
            for o in await self.analyze_opportunities()
            if o.recommended_action is Action.LOWER_FEES
        ]

    async def _alias(self, o: Opportunity) -> str | None:
        if o.peer_alias or self.manage is None:
            return None
        try:
            alias = await self.manage.get_node_alias(o.peer_pubkey)
        except LnflowError as exc:
            log.info("no alias from lnd-manageJ for %s: %s", o.peer_pubkey, exc)
            return None
        return alias if alias and alias != o.peer_pubkey else None
