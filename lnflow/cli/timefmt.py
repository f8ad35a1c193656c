"""Times as lnflowctl prints them. Standard library only: ``lnflowctl status`` imports
this without the analysis (:mod:`lnflow.cli.render` re-exports it)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["ago", "duration", "iso"]


def iso(ts_ns: int | None) -> str | None:
    """ISO-8601 UTC with a Z, second precision; None stays None."""
    if ts_ns is None:
        return None
    dt = datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC)
    return dt.isoformat().replace("+00:00", "Z")


def duration(ns: int) -> str:
    """A span as ``45 s``, ``12 min``, ``3.5 h`` or ``2.0 d``."""
    secs = max(0, ns) // 1_000_000_000
    if secs < 120:
        return f"{secs} s"
    if secs < 7200:
        return f"{secs // 60} min"
    if secs < 172_800:
        return f"{secs / 3600:.1f} h"
    return f"{secs / 86_400:.1f} d"


def ago(ts_ns: int | None, now_ns: int) -> str:
    if ts_ns is None:
        return "never"
    return f"{duration(now_ns - ts_ns)} ago"
