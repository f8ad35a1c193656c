"""The read side's two speed measures, in one place (figures: bench/README.md, "The read
side's speed measures").

1. :func:`rows` runs a statement compiled once per dialect. Executing a construct
   through ``Connection.execute`` derives its cache key on every execution, a walk of
   the whole statement tree: the summary's largest statements are unions of a dozen
   selects, and a long window ranks each channel's amounts with small statements run
   hundreds of times. Here the SQL text and its parameter order come from one
   ``compile()`` and run with ``Connection.exec_driver_sql``: the same SQL on the same
   connection (its events fire), rows still named. Statements with an expanding (IN
   list) parameter are not for this function: they go through ``Connection.execute``.
2. :func:`collector_paused` holds off Python's cyclic garbage collector while an
   analysis runs. An analysis allocates tens of thousands of short-lived rows and
   records and creates no reference cycles, yet whenever the collector's allocation
   thresholds fill up it walks young objects, and now and then the whole heap. The
   pause lasts one analysis (:func:`~.service.analyze_store`), nests, and restores the
   collector as it found it; while it lasts no thread's cycles are collected, which
   only defers that work. Reference counting frees everything as before.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias

from sqlalchemy import CompoundSelect, Connection, Row, Select

from lnflow.store.engines import positional_dialect

__all__ = ["AnyRow", "collector_paused", "rows"]

#: a row of any number of columns (unpacked by position, or read by name)
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

_Statement = Select[Any] | CompoundSelect[Any]
# per (statement, dialect): the statement (kept alive, so its id stays its own), the SQL
# text, its parameter names in order and the values compiled into it (LIMIT 1)
_COMPILED: dict[tuple[int, str], tuple[_Statement, str, tuple[str, ...], dict[str, Any]]] = {}


def rows(conn: Connection, stmt: _Statement, params: Mapping[str, Any]) -> Sequence[AnyRow]:
    """All rows of ``stmt`` with ``params``, the statement compiled once per dialect."""
    key = (id(stmt), conn.dialect.name)
    compiled = _COMPILED.get(key)
    if compiled is None or compiled[0] is not stmt:
        done = stmt.compile(dialect=positional_dialect(conn.dialect))
        constants = {name: value for name, value in done.params.items() if value is not None}
        compiled = _COMPILED[key] = (stmt, done.string, tuple(done.positiontup or ()), constants)
    _, sql, names, constants = compiled
    values = tuple(params[name] if name in params else constants[name] for name in names)
    return conn.exec_driver_sql(sql, values).all()


class _CollectorPause:
    """Nested pauses of the cyclic garbage collector, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def enter(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def leave(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._was_enabled:
                gc.enable()


_PAUSE = _CollectorPause()


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the block runs (one analysis)."""
    _PAUSE.enter()
    try:
        yield
    finally:
        _PAUSE.leave()
