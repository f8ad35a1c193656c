"""Human output of lnflowctl: aligned text tables and the number formats they use.

Everything here turns plain report records into lines of text; nothing reads
the store or the clock (``now_ns`` is passed in where an age is shown).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence

from lnflow.analysis.model import Action, AnalysisReport, Gap, Opportunity, RebalanceMove
from lnflow.domain import NS_PER_S, FailureClass, format_scid, sats_text
from lnflow.text import printable

from .saved_table import TABLE_FORMAT, title_lines
from .timefmt import ago, duration, iso

__all__ = [
    "ACTION_TITLES",
    "ago",
    "duration",
    "iso",
    "msat_as_sats",
    "opportunities_body",
    "opportunities_lines",
    "peer_label",
    "table",
    "table_to_save",
]

ACTION_TITLES: dict[Action, str] = {
    Action.REBALANCE_OUTBOUND: "Rebalance Outbound",
    Action.REBALANCE_INBOUND: "Rebalance Inbound",
    Action.LOWER_FEES: "Lower Fees",
    Action.INCREASE_CAPACITY: "Increase Capacity",
    Action.RAISE_MAX_HTLC: "Raise Max HTLC",
    Action.INVESTIGATE: "Investigate",
}

# Short class names for compact cells ("liq 3, fee 2"), by class label.
CLASS_ABBREV: dict[str, str] = {cls.label: cls.abbrev for cls in FailureClass}

_PEER_WIDTH = 20


def msat_as_sats(msat: int, decimals: int = 2) -> str:
    """``1,234.56`` sats from msat (display only: the store keeps exact msat)."""
    return sats_text(msat, decimals)


def peer_label(alias: str, pubkey: str, width: int = _PEER_WIDTH) -> str:
    """The peer's alias, else the start of its pubkey; cut to ``width`` with an ellipsis.

    Controls are escaped before the cut (lnflow.text), so no cut leaves a sequence open.
    """
    label = printable(alias.strip() or (pubkey[:16] + "…" if pubkey else "?"))
    return label if len(label) <= width else label[: width - 1] + "…"


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool] = ()
) -> list[str]:
    """Column-aligned lines: header, a rule, then the rows. ``right[i]``: right-align i.

    Cells are made printable (lnflow.text) before they are measured: a newline or an
    escape sequence in a cell can neither forge a row nor shift the columns.
    """
    body = [[printable(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    align = [i < len(right) and right[i] for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, align, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), "─" * (sum(widths) + 2 * (len(widths) - 1))]
    out.extend(line(row) for row in body)
    return out


def wrap(text: str, width: int, initial_indent: str, subsequent_indent: str) -> list[str]:
    """``textwrap.wrap(text, width, initial_indent=..., subsequent_indent=...,
    break_on_hyphens=False)``, line for line, found by slicing where textwrap walks word
    by word (~10× faster: ``opportunities`` wraps one reason per opportunity, thousands).

    Text with whitespace other than the space (tabs, newlines, other Unicode spaces: not
    :meth:`str.isprintable`), or indents as wide as the line, go to :func:`textwrap.wrap`.
    """
    if not text.isprintable() or width <= max(len(initial_indent), len(subsequent_indent)):
        return textwrap.wrap(
            text,
            width,
            initial_indent=initial_indent,
            subsequent_indent=subsequent_indent,
            break_on_hyphens=False,
        )
    # textwrap's chunks are the runs of spaces and the runs of anything else; a line
    # takes chunks while they fit, then the start of a chunk longer than a line, and
    # drops a run of spaces at its end (and one at its start, from the second line on)
    lines: list[str] = []
    end_of_text = len(text)
    pos = 0
    while pos < end_of_text:
        indent = subsequent_indent if lines else initial_indent
        room = width - len(indent)
        if lines and text[pos] == " ":
            pos = end_of_text - len(text[pos:].lstrip(" "))
            if pos == end_of_text:
                break
        # the longest run of whole chunks from pos that fits in room
        limit = pos + room
        if room < 1:
            end = pos
        elif limit >= end_of_text:
            end = end_of_text
        elif text[limit] == " ":  # end before the spaces at limit (and any just before it)
            end = pos + len(text[pos:limit].rstrip(" "))
        else:
            space = text.rfind(" ", pos, limit)
            end = space + 1 if space >= 0 else pos
        line = text[pos:end]
        trailing_spaces = bool(line) and line[-1] == " "
        pos = end
        if pos < end_of_text:
            # the next chunk: does it fit on a line of its own?
            if text[pos] == " ":
                chunk_len = end_of_text - pos - len(text[pos:].lstrip(" "))
            else:
                space = text.find(" ", pos)
                chunk_len = (space if space >= 0 else end_of_text) - pos
            if chunk_len > room:
                take = 1 if room < 1 else room - len(line)
                piece = text[pos : pos + take]
                pos += take
                if piece.strip(" "):
                    lines.append(indent + line + piece)
                    continue
                # textwrap drops that piece (empty or spaces), not the spaces before it
                trailing_spaces = False
        if trailing_spaces:
            line = line.rstrip(" ")
        if line:
            lines.append(indent + line)
    return lines


# --------------------------------------------------------------------------- opportunities

OPPORTUNITY_COLUMNS = (
    "Rank",
    "Channel",
    "Peer",
    "Failures",
    "Missed Revenue",
    "Potential/Month",
    "Urgency",
    "Recommendation",
)
OPPORTUNITY_RIGHT = (False, False, False, True, True, True, True, False)


def opportunity_row(o: Opportunity) -> list[str]:
    """An opportunity's cells under :data:`OPPORTUNITY_COLUMNS`."""
    mark = "~" if o.estimated else ""
    return [
        str(o.rank),
        format_scid(o.channel_id),
        peer_label(o.peer_alias, o.peer_pubkey),
        f"{o.failures:,}",
        f"{mark}{msat_as_sats(o.missed_msat)} sats",
        f"{mark}{msat_as_sats(o.potential_monthly_msat, 0)} sats",
        str(o.urgency_score),
        ACTION_TITLES.get(o.recommended_action, str(o.recommended_action)),
    ]


def opportunity_table(
    opps: Sequence[Opportunity],
    rows: Sequence[list[str]],
    columns: Sequence[str],
    right: Sequence[bool],
) -> list[str]:
    """The table of ``rows`` (one per opportunity of ``opps``, in order), each followed
    by its opportunity's reason, wrapped at the table's width under the first column."""
    rendered = table(columns, rows, right)
    lines = list(rendered[:2])
    indent = " " * (max(len(columns[0]), *(len(r[0]) for r in rows)) + 2)
    width = max(len(rendered[1]), 80)  # reasons wrap at the table's width
    first, rest = f"{indent}↳ ", f"{indent}  "
    for o, text in zip(opps, rendered[2:], strict=True):
        lines.append(text)
        lines += wrap(printable(o.reason), width, first, rest)
    if any(o.estimated for o in opps):
        lines += ["", "~ estimated from the channel's earlier inbound fee pace"]
    return lines


def _gap_warning(gaps: Sequence[Gap], report: AnalysisReport) -> str:
    """One line: how long the HTLC stream was down inside the window."""

    # whole seconds, as the header shows them: a saved report renders the same line
    def sec(ns: int) -> int:
        return ns // NS_PER_S

    since, until = sec(report.since_ns), sec(report.until_ns)
    down = 0
    for g in gaps:
        start = max(sec(g.from_ns), since)
        end = min(sec(g.to_ns) if g.to_ns is not None else until, until)
        down += max(0, end - start) * NS_PER_S
    n = len(gaps)
    spans = f"{n} span{'s' if n != 1 else ''}"
    ongoing = " (still down)" if any(g.to_ns is None for g in gaps) else ""
    return (
        f"WARNING: the HTLC stream was down for {duration(down)} in {spans} of this window"
        f"{ongoing}: failures then went unseen, so missed revenue is a lower bound"
    )


#: below this share of its window observed, a report says so
OBSERVED_WARN_SHARE = 0.9


def _observed_warning(report: AnalysisReport) -> str | None:
    """One line when less than 90 % of the window was observed (the HTLC stream was
    connected): e.g. a store recorded for a minute, analysed over a day."""
    share = report.observed_share
    if share is None or share >= OBSERVED_WARN_SHARE or report.observed_ns is None:
        return None
    return (
        f"WARNING: only {duration(report.observed_ns)} ({share:.1%}) of this "
        f"{report.hours} h window was observed: lnflowd was not recording the rest, "
        "so failures and missed revenue are lower bounds"
    )


def _plan_lines(plan: Sequence[RebalanceMove]) -> list[str]:
    lines = ["", "REBALANCE PLAN", ""]
    for m in plan:
        sources = ", ".join(format_scid(c) for c in m.source_channel_ids) or "(no source found)"
        lines.append(
            f"  move {m.amount_sat:,} sats into {format_scid(m.target_channel_id)} from "
            f"{sources}; pay at most {m.max_cost_ppm:,} ppm"
        )
    return lines


def opportunities_lines(report: AnalysisReport, *, now_ns: int | None = None) -> list[str]:
    """The seed's opportunities table with a header, reasons, gap warning and plan.

    ``now_ns`` adds the snapshot's age to the header (``lnflowctl opportunities``).
    """
    return title_lines(
        report.hours, report.since_ns, report.until_ns, report.generated_ns, now_ns
    ) + opportunities_body(report)


def opportunities_body(report: AnalysisReport) -> list[str]:
    """:func:`opportunities_lines` after its title: everything that does not depend on
    the time it is shown. lnflowd saves it with each snapshot (:mod:`.saved_table`)."""
    lines = [
        f"node: {report.node_failures:,} local failures, "
        f"{msat_as_sats(report.node_missed_msat)} sats missed on all channels"
        + (
            f" ({report.node_unknown_amount:,} with unknown amount)"
            if report.node_unknown_amount
            else ""
        )
        + (
            f"; {report.node_rejected:,} rejected by an HTLC interceptor"
            if report.node_rejected
            else ""
        ),
    ]
    if report.gaps:
        lines.append(_gap_warning(report.gaps, report))
    observed = _observed_warning(report)
    if observed:
        lines.append(observed)
    lines.append("")
    opps = report.opportunities
    if not opps:
        lines.append("No channel lost enough in this window to be reported.")
        return lines
    rows = [opportunity_row(o) for o in opps]
    lines += opportunity_table(opps, rows, OPPORTUNITY_COLUMNS, OPPORTUNITY_RIGHT)
    if report.rebalance_plan:
        lines += _plan_lines(report.rebalance_plan)
    return lines


def table_to_save(report: AnalysisReport) -> tuple[str, str] | None:
    """``(format, text)`` of the report's table body, for lnflowd to save with the run
    (:mod:`.saved_table`); None when the renderer's sources cannot be fingerprinted."""
    if TABLE_FORMAT is None:
        return None
    return TABLE_FORMAT, "\n".join(opportunities_body(report))
