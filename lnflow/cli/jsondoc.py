"""The JSON contract of ``analyze --json`` / ``opportunities --json`` (docs/json.md).

:func:`report_to_doc` is the only place that turns an :class:`AnalysisReport`
into the documented object, and :func:`report_from_doc` the only place that
reads one back (``lnflowctl report FILE``): a document survives
``report_to_doc(report_from_doc(doc)) == doc``. Keys are emitted in a fixed
order; channel ids are exact integers (uint64, also above 2^63); money is
integer msat, with ``*_sats`` convenience numbers beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from lnflow.analysis.model import (
    Action,
    AnalysisReport,
    ClassStats,
    Confidence,
    Gap,
    Opportunity,
    RebalanceMove,
)
from lnflow.domain import MSAT_PER_SAT, NS_PER_HOUR, NS_PER_S, FailureClass, format_scid
from lnflow.errors import ReportFileError

from .render import iso

__all__ = ["ReportFileError", "parse_iso_ns", "report_from_doc", "report_to_doc"]

# A JSON object as json.dumps takes it; it never leaves the CLI layer.
JsonObject = dict[str, Any]

_E = TypeVar("_E", Action, Confidence)
_U64 = 1 << 64
# The largest count or amount a report may hold: what the store can (signed 64-bit).
# A bigger number, or an inf or nan, is no report lnflow wrote, and would overflow
# the arithmetic of the rendering.
_MAX_INT = (1 << 63) - 1

_SUGGESTIONS = ("suggested_fee_ppm", "suggested_amount_sat", "suggested_max_htlc_msat")


# --------------------------------------------------------------------------- writing


def report_to_doc(report: AnalysisReport) -> JsonObject:
    """The documented JSON object for one analysis report (docs/json.md)."""
    return {
        "window_hours": report.hours,
        "generated_at": iso(report.generated_ns),
        "since": iso(report.since_ns),
        "until": iso(report.until_ns),
        "opportunities": [opportunity_to_doc(o) for o in report.opportunities],
        "rebalance_plan": [_move_doc(m) for m in report.rebalance_plan],
        "gaps": [{"from": iso(g.from_ns), "to": iso(g.to_ns)} for g in report.gaps],
        "node": {
            "failures": report.node_failures,
            "missed_msat": report.node_missed_msat,
            "unknown_amount": report.node_unknown_amount,
            "rejected": report.node_rejected,
            "missed_raw_msat": report.node_missed_raw_msat,
        },
        "observed_hours": None
        if report.observed_ns is None
        else round(report.observed_ns / NS_PER_HOUR, 4),
    }


def opportunity_to_doc(o: Opportunity) -> JsonObject:
    """One opportunity as the report document holds it."""
    doc: JsonObject = {
        "rank": o.rank,
        "channel_id": o.channel_id,
        "scid": format_scid(o.channel_id),
        "peer_pubkey": o.peer_pubkey,
        "peer_alias": o.peer_alias,
        "failures": o.failures,
        "clusters": o.clusters,
        "successes": o.successes,
        "failure_rate": o.failure_rate,
        "missed_msat": o.missed_msat,
        "missed_raw_msat": o.missed_raw_msat,
        "missed_sats": o.missed_msat / MSAT_PER_SAT,
        "potential_monthly_sats": o.potential_monthly_msat / MSAT_PER_SAT,
        "urgency_score": o.urgency_score,
        "confidence": o.confidence.value,
        "recommended_action": o.recommended_action.value,
        "reason": o.reason,
        "estimated": o.estimated,
        "by_class": _by_class_doc(o.by_class),
        "capacity_sat": o.capacity_sat,
        "local_balance_sat": o.local_balance_sat,
        "outbound_fee_ppm": o.outbound_fee_ppm,
    }
    for key in _SUGGESTIONS:
        value = getattr(o, key)
        if value is not None:
            doc[key] = value
    return doc


def _by_class_doc(by_class: Mapping[FailureClass, ClassStats]) -> JsonObject:
    doc: JsonObject = {}
    for cls in FailureClass:
        stats = by_class.get(cls)
        doc[cls.label] = {
            "failures": stats.failures if stats else 0,
            "missed_msat": stats.missed_msat if stats else 0,
        }
    return doc


def _move_doc(m: RebalanceMove) -> JsonObject:
    return {
        "target_channel_id": m.target_channel_id,
        "target_scid": format_scid(m.target_channel_id),
        "source_channel_ids": list(m.source_channel_ids),
        "source_scids": [format_scid(c) for c in m.source_channel_ids],
        "amount_sat": m.amount_sat,
        "max_cost_ppm": m.max_cost_ppm,
    }


# --------------------------------------------------------------------------- reading


def parse_iso_ns(text: str) -> int:
    """Unix ns of an ISO-8601 time; without a zone it is taken as UTC. Raises ValueError."""
    from datetime import UTC

    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000


class _Reader:
    """Typed access to a parsed JSON document; errors name the offending path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, expected: str) -> ReportFileError:
        return ReportFileError(
            f"{self.source} is not an lnflow analysis report ({path}: expected {expected}): "
            "give a file written by `lnflowctl analyze --output`"
        )

    def obj(self, value: object, path: str) -> Mapping[str, object]:
        if not isinstance(value, dict):
            raise self.fail(path, "an object")
        return value

    def field(self, obj: Mapping[str, object], key: str, path: str) -> object:
        if key not in obj:
            raise self.fail(f"{path}.{key}" if path else key, "a value, it is missing")
        return obj[key]

    def int_(self, obj: Mapping[str, object], key: str, path: str, *, lo: int = 0) -> int:
        value = self.field(obj, key, path)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= _MAX_INT:
            raise self.fail(_join(path, key), f"an integer from {lo} to {_MAX_INT}")
        return value

    def opt_int(self, obj: Mapping[str, object], key: str, path: str) -> int | None:
        if obj.get(key) is None:
            return None
        return self.int_(obj, key, path)

    def chan(self, value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _U64:
            raise self.fail(path, "a channel id (uint64 integer)")
        return value

    def chan_field(self, obj: Mapping[str, object], key: str, path: str) -> int:
        return self.chan(self.field(obj, key, path), _join(path, key))

    def num(self, obj: Mapping[str, object], key: str, path: str) -> float:
        value = self.field(obj, key, path)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not -_MAX_INT <= value <= _MAX_INT  # also refuses nan and inf
        ):
            raise self.fail(_join(path, key), "a finite number")
        return float(value)

    def str_(self, obj: Mapping[str, object], key: str, path: str) -> str:
        value = self.field(obj, key, path)
        if not isinstance(value, str):
            raise self.fail(_join(path, key), "a string")
        return value

    def bool_(self, obj: Mapping[str, object], key: str, path: str) -> bool:
        value = self.field(obj, key, path)
        if not isinstance(value, bool):
            raise self.fail(_join(path, key), "true or false")
        return value

    def list_(self, obj: Mapping[str, object], key: str, path: str) -> list[object]:
        value = self.field(obj, key, path)
        if not isinstance(value, list):
            raise self.fail(_join(path, key), "a list")
        return value

    def time(self, obj: Mapping[str, object], key: str, path: str) -> int:
        value = self.field(obj, key, path)
        if isinstance(value, str):
            try:
                return parse_iso_ns(value)
            except ValueError:
                pass
        raise self.fail(_join(path, key), "an ISO-8601 time")

    def opt_time(self, obj: Mapping[str, object], key: str, path: str) -> int | None:
        return None if obj.get(key) is None else self.time(obj, key, path)

    def enum(self, obj: Mapping[str, object], key: str, path: str, kind: type[_E]) -> _E:
        value = self.str_(obj, key, path)
        try:
            return kind(value)
        except ValueError:
            raise self.fail(
                _join(path, key), "one of " + ", ".join(m.value for m in kind)
            ) from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def report_from_doc(doc: object, *, source: str = "the report") -> AnalysisReport:
    """Read back a document written by :func:`report_to_doc`; raises :class:`ReportFileError`.

    Times come back at the document's precision (whole seconds); ``by_class`` holds
    the classes with failures or missed fees, as the analysis produces it.
    """
    r = _Reader(source)
    top = r.obj(doc, "the document")
    node = r.obj(r.field(top, "node", ""), "node")
    opps = tuple(
        _opportunity(r, r.obj(item, f"opportunities[{i}]"), f"opportunities[{i}]")
        for i, item in enumerate(r.list_(top, "opportunities", ""))
    )
    plan = tuple(
        _move(r, r.obj(item, f"rebalance_plan[{i}]"), f"rebalance_plan[{i}]")
        for i, item in enumerate(r.list_(top, "rebalance_plan", ""))
    )
    gaps = []
    for i, item in enumerate(r.list_(top, "gaps", "")):
        path = f"gaps[{i}]"
        g = r.obj(item, path)
        gaps.append(Gap(from_ns=r.time(g, "from", path), to_ns=r.opt_time(g, "to", path)))
    return AnalysisReport(
        since_ns=r.time(top, "since", ""),
        until_ns=r.time(top, "until", ""),
        hours=r.int_(top, "window_hours", "", lo=1),
        generated_ns=r.time(top, "generated_at", ""),
        opportunities=opps,
        rebalance_plan=plan,
        gaps=tuple(gaps),
        node_failures=r.int_(node, "failures", "node"),
        node_missed_msat=r.int_(node, "missed_msat", "node"),
        node_unknown_amount=r.opt_int(node, "unknown_amount", "node") or 0,
        node_rejected=r.opt_int(node, "rejected", "node") or 0,
        # (absent from reports saved before it existed: their raw sum is not known)
        node_missed_raw_msat=(
            r.int_(node, "missed_raw_msat", "node")
            if "missed_raw_msat" in node
            else r.int_(node, "missed_msat", "node")
        ),
        observed_ns=_observed(r, top),
    )


def _observed(r: _Reader, top: Mapping[str, object]) -> int | None:
    """``observed_hours`` back in ns; None in files from before it existed."""
    if top.get("observed_hours") is None:
        return None
    hours = r.num(top, "observed_hours", "")
    if not math.isfinite(hours) or hours < 0:
        raise r.fail("observed_hours", "a number of hours >= 0")
    return round(hours * NS_PER_HOUR)


def _opportunity(r: _Reader, o: Mapping[str, object], path: str) -> Opportunity:
    by_class_doc = r.obj(r.field(o, "by_class", path), f"{path}.by_class")
    by_class: dict[FailureClass, ClassStats] = {}
    for cls in FailureClass:
        cpath = f"{path}.by_class"
        stats = r.obj(r.field(by_class_doc, cls.label, cpath), f"{cpath}.{cls.label}")
        spath = f"{cpath}.{cls.label}"
        failures = r.int_(stats, "failures", spath)
        missed = r.int_(stats, "missed_msat", spath)
        if failures or missed:  # the analysis lists only the classes that occurred
            by_class[cls] = ClassStats(failures=failures, missed_msat=missed)
    return Opportunity(
        rank=r.int_(o, "rank", path, lo=1),
        channel_id=r.chan_field(o, "channel_id", path),
        peer_pubkey=r.str_(o, "peer_pubkey", path),
        peer_alias=r.str_(o, "peer_alias", path),
        failures=r.int_(o, "failures", path),
        clusters=r.int_(o, "clusters", path),
        successes=r.int_(o, "successes", path),
        failure_rate=r.num(o, "failure_rate", path),
        missed_msat=r.int_(o, "missed_msat", path),
        missed_raw_msat=r.int_(o, "missed_raw_msat", path),
        potential_monthly_msat=round(r.num(o, "potential_monthly_sats", path) * MSAT_PER_SAT),
        urgency_score=r.int_(o, "urgency_score", path),
        confidence=r.enum(o, "confidence", path, Confidence),
        recommended_action=r.enum(o, "recommended_action", path, Action),
        reason=r.str_(o, "reason", path),
        estimated=r.bool_(o, "estimated", path),
        by_class=by_class,
        capacity_sat=r.int_(o, "capacity_sat", path),
        local_balance_sat=r.int_(o, "local_balance_sat", path),
        outbound_fee_ppm=r.opt_int(o, "outbound_fee_ppm", path),
        suggested_fee_ppm=r.opt_int(o, "suggested_fee_ppm", path),
        suggested_amount_sat=r.opt_int(o, "suggested_amount_sat", path),
        suggested_max_htlc_msat=r.opt_int(o, "suggested_max_htlc_msat", path),
    )


def _move(r: _Reader, m: Mapping[str, object], path: str) -> RebalanceMove:
    sources = r.list_(m, "source_channel_ids", path)
    return RebalanceMove(
        target_channel_id=r.chan_field(m, "target_channel_id", path),
        source_channel_ids=tuple(
            r.chan(s, f"{path}.source_channel_ids[{i}]") for i, s in enumerate(sources)
        ),
        amount_sat=r.int_(m, "amount_sat", path),
        max_cost_ppm=r.int_(m, "max_cost_ppm", path),
    )
