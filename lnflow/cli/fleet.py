"""Several nodes in one store: the fleet ranking of ``opportunities --all-nodes`` /
``analyze --all-nodes`` (``lnflowctl nodes`` is :mod:`lnflow.cli.nodes`).

The fleet ranking puts every node's opportunities in one list, ranked as one node's
are (most urgent first, then the most missed), with the node each belongs to. Node
aliases come from lnd's GetInfo: hostile text, made printable on the terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from lnflow.analysis.model import AnalysisReport, Opportunity
from lnflow.store.status_read import NodeRow

from .jsondoc import JsonObject, opportunity_to_doc, report_to_doc
from .nodes import node_doc
from .render import (
    OPPORTUNITY_COLUMNS,
    OPPORTUNITY_RIGHT,
    ago,
    iso,
    msat_as_sats,
    opportunity_row,
    opportunity_table,
    peer_label,
)

__all__ = [
    "FleetEntry",
    "fleet_doc",
    "fleet_lines",
    "fleet_ranking",
    "node_label",
]

_NODE_WIDTH = 20


class FleetEntry(NamedTuple):
    """One of the fleet's opportunities: its node, and its rank among all nodes'."""

    rank: int
    node: NodeRow
    opportunity: Opportunity


def node_label(node: NodeRow, width: int = _NODE_WIDTH) -> str:
    """The node's alias, else the start of its pubkey (printable, cut to ``width``)."""
    return peer_label(node.alias, node.pubkey, width)


def fleet_ranking(reports: Sequence[tuple[NodeRow, AnalysisReport | None]]) -> list[FleetEntry]:
    """Every node's opportunities, ranked together: most urgent first, then the most
    missed, then by node (first seen first) and the node's own rank."""
    found = [
        (node, o) for node, report in reports if report is not None for o in report.opportunities
    ]
    found.sort(key=lambda p: (-p[1].urgency_score, -p[1].missed_msat, p[0].id, p[1].rank))
    return [FleetEntry(i, node, o) for i, (node, o) in enumerate(found, start=1)]


# the single node's table with a Node column after the rank
_COLUMNS = (OPPORTUNITY_COLUMNS[0], "Node", *OPPORTUNITY_COLUMNS[1:])
_RIGHT = (OPPORTUNITY_RIGHT[0], False, *OPPORTUNITY_RIGHT[1:])


def _summary(node: NodeRow, report: AnalysisReport | None, now_ns: int | None) -> str:
    name = f"{node_label(node)} ({node.pubkey[:16]}…)"
    if report is None:
        return f"{name}: no analysis yet"
    generated = iso(report.generated_ns) or ""
    if now_ns is not None:
        generated += f" ({ago(report.generated_ns, now_ns)})"
    gaps = len(report.gaps)
    return (
        f"{name}: {report.hours} h to {iso(report.until_ns)}, generated {generated}; "
        f"{report.node_failures:,} local failures, "
        f"{msat_as_sats(report.node_missed_msat)} sats missed"
        + (f"; {gaps} stream gap{'s' if gaps != 1 else ''}" if gaps else "")
    )


def fleet_lines(
    reports: Sequence[tuple[NodeRow, AnalysisReport | None]], *, now_ns: int | None = None
) -> list[str]:
    """The fleet's opportunities table: a line per node, then the ranking with a Node
    column and each opportunity's reason."""
    lines = [f"MISSED ROUTING OPPORTUNITIES, ALL NODES ({len(reports)})", ""]
    lines += [_summary(node, report, now_ns) for node, report in reports]
    lines.append("")
    ranked = fleet_ranking(reports)
    if not ranked:
        lines.append("No channel of any node lost enough to be reported.")
        return lines
    rows = [[str(e.rank), node_label(e.node), *opportunity_row(e.opportunity)[1:]] for e in ranked]
    lines += opportunity_table([e.opportunity for e in ranked], rows, _COLUMNS, _RIGHT)
    return lines


def fleet_doc(reports: Sequence[tuple[NodeRow, AnalysisReport | None]]) -> JsonObject:
    """``--all-nodes --json`` (docs/json.md): each node with its report's document less
    its opportunities (None before its first analysis), then every node's
    opportunities ranked together, each naming its node."""
    nodes = []
    for node, report in reports:
        doc: JsonObject | None = None
        if report is not None:
            doc = report_to_doc(report)
            del doc["opportunities"]
        nodes.append({**node_doc(node), "report": doc})
    return {
        "nodes": nodes,
        "opportunities": [
            {
                "fleet_rank": e.rank,
                "node_pubkey": e.node.pubkey,
                "node_alias": e.node.alias,
                **opportunity_to_doc(e.opportunity),
            }
            for e in fleet_ranking(reports)
        ],
    }
