"""One analysis of the store: the function lnflowd, lnflowctl and the facades run.

It opens one read connection, reads the window's summary, asks the analysis what
details its recommendations need (:func:`lnflow.analysis.plan`), fetches exactly those,
and closes the connection before anything is decided (:func:`lnflow.analysis.decide`):
no connection outlives the fetch. Both reads run in the connection's one transaction,
so they see one state of the store (SQLite's WAL snapshot).
"""

from __future__ import annotations

from sqlalchemy import Engine

from lnflow.analysis.model import AnalysisReport, AnalysisSettings
from lnflow.analysis.steps import decide, plan
from lnflow.store.channel_ids import alias_map
from lnflow.store.read.details import fetch_details
from lnflow.store.read.speed import collector_paused
from lnflow.store.read.summary import load_summary

__all__ = ["analyze_store"]


def analyze_store(
    engine: Engine,
    node_id: int,
    *,
    until_ns: int,
    hours: int,
    settings: AnalysisSettings,
    generated_ns: int | None = None,
) -> AnalysisReport:
    """The analysis of the ``hours`` before ``until_ns`` (``generated_ns``: when, by
    default ``until_ns``). Blocking: run it off an event loop."""
    now_ns = until_ns if generated_ns is None else generated_ns
    with collector_paused():  # see .speed
        with engine.connect() as conn:
            aliases = alias_map(conn, node_id)
            summary = load_summary(
                conn, node_id, aliases, until_ns=until_ns, hours=hours, settings=settings
            )
            request = plan(summary, settings)
            facts = fetch_details(conn, node_id, request, aliases)
        return decide(summary, facts, settings, now_ns)
