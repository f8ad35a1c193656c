"""The opportunities table lnflowd rendered when it saved its latest snapshot.

``lnflowctl opportunities`` is the operator's glance at the node. Rebuilding a run of
5,000 opportunities as records and rendering them cost more than the whole command may
take, so lnflowd renders the table's body once, when it saves the run
(:func:`lnflow.cli.render.opportunities_body`), and keeps the text on that run
(``analysis_runs.table_text``, migration 0021; older runs lose theirs). The command then
prints the title, with the snapshot's age, and that text: it imports neither the
analysis nor its records.

The text is tagged with :data:`TABLE_FORMAT`, a fingerprint of the source of the modules
that render it. A text from another renderer (lnflowd not yet restarted after an upgrade,
or one built from other sources), a run saved without one or before 0021 is not used:
the command renders the run from its rows, as it always did. So the saved text is only
ever what this code would print.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from lnflow.store.engines import PlainDb, column_names
from lnflow.text import printable

from .timefmt import ago, iso

__all__ = ["TABLE_FORMAT", "saved_table_lines", "title_lines"]

_LNFLOW = Path(__file__).resolve().parent.parent
# every module whose code shapes the saved text
_RENDERERS = ("cli/render.py", "cli/saved_table.py", "cli/timefmt.py", "domain.py", "text.py")


def _fingerprint() -> str | None:
    digest = hashlib.blake2b(digest_size=12)
    try:
        for name in _RENDERERS:
            digest.update((_LNFLOW / name).read_bytes())
    except OSError:  # installed without sources: never trust a saved text
        return None
    return digest.hexdigest()


#: the renderer's fingerprint; None when its sources cannot be read
TABLE_FORMAT = _fingerprint()


def title_lines(
    hours: int, since_ns: int, until_ns: int, generated_ns: int, now_ns: int | None
) -> list[str]:
    """The opportunities table's title: its window and when the run was generated, with
    the run's age at ``now_ns`` when given."""
    generated = iso(generated_ns)
    if now_ns is not None:
        generated = f"{generated} ({ago(generated_ns, now_ns)})"
    return [
        "MISSED ROUTING OPPORTUNITIES",
        "",
        f"window: {hours} h, {iso(since_ns)} to {iso(until_ns)}; generated {generated}",
    ]


def saved_table_lines(db: PlainDb, node_id: int | None, now_ns: int) -> list[str] | None:
    """The latest run's table (of ``node_id`` if given) from its saved text, every line
    made printable; None when that run has no text this renderer wrote (or no run)."""
    if TABLE_FORMAT is None or "table_text" not in column_names(db, "analysis_runs"):
        return None
    where = "" if node_id is None else " WHERE node_id = ?"
    params: Sequence[int] = () if node_id is None else (node_id,)
    run = db.execute(
        "SELECT hours, since_ns, until_ns, generated_ns, table_format, table_text"
        f" FROM analysis_runs{where} ORDER BY generated_ns DESC, id DESC LIMIT 1",
        params,
    ).fetchone()
    if run is None:
        return None
    hours, since_ns, until_ns, generated_ns, table_format, text = run
    if table_format != TABLE_FORMAT or text is None:
        return None
    lines = title_lines(hours, since_ns, until_ns, generated_ns, now_ns)
    lines += (printable(line) for line in text.split("\n"))
    return lines
