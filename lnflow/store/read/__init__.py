"""The analysis' read side: the window's summary and the failure details, from the store.

=====================  ===================================================================
module                 what it reads
=====================  ===================================================================
:mod:`.window`         nothing: the window and how it splits over the rollups (pure)
:mod:`.sql`            nothing: SQL pieces the statements share
:mod:`.failures`       local failures per outgoing channel and class, node totals
:mod:`.ledger`         settled forwards: successes out, fees in (window and baseline)
:mod:`.channels`       our channels' states from their samples
:mod:`.summary`        all of the above as one :class:`~lnflow.analysis.model.AnalysisSummary`
:mod:`.details`        the details a :class:`~lnflow.analysis.model.DetailRequest` names
:mod:`.service`        :func:`analyze_store`: one connection, summary → plan → fetch →
                       (closed) → decide
:mod:`.speed`          nothing: the only speed measures (statements compiled once, the
                       collector paused for one analysis), measured in bench/README.md
=====================  ===================================================================

Reads only; nothing here writes or reads a clock.
"""

from lnflow.store.read.details import (
    RANK_IN_SQL_FROM_AMOUNTS,
    RANK_IN_SQL_FROM_HOURS,
    fetch_details,
)
from lnflow.store.read.failures import failure_class_of
from lnflow.store.read.service import analyze_store
from lnflow.store.read.summary import load_summary, node_id_of
from lnflow.store.read.window import window_for

__all__ = [
    "RANK_IN_SQL_FROM_AMOUNTS",
    "RANK_IN_SQL_FROM_HOURS",
    "analyze_store",
    "failure_class_of",
    "fetch_details",
    "load_summary",
    "node_id_of",
    "window_for",
]
