"""``lnflowctl nodes``: the nodes a store records, each with its daemon and stream.

Read through plain sqlite3 (:mod:`lnflow.store.status_read`) and rendered without the
analysis or SQLAlchemy imports, as ``status`` is: a glance stays quick. Aliases come
from lnd's GetInfo: hostile text, made printable on the terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lnflow.store.status_read import Liveness, NodeRow
from lnflow.text import printable

from .timefmt import ago, iso

__all__ = ["node_doc", "nodes_doc", "nodes_lines"]


def node_doc(node: NodeRow) -> dict[str, Any]:
    return {"pubkey": node.pubkey, "alias": node.alias, "network": node.network}


def _columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns: header, a rule, the rows (cells made printable first, so an
    escape sequence or newline can neither forge a row nor shift the columns)."""
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), "─" * (sum(widths) + 2 * (len(widths) - 1)), *map(line, rows)]


def _daemon_text(live: Liveness, now_ns: int) -> str:
    d = live.daemon
    if d.running:
        return f"running (pid {d.pid}, heartbeat {ago(d.heartbeat_ns, now_ns)})"
    if d.stopped_ns is not None:
        return f"stopped {ago(d.stopped_ns, now_ns)}"
    if d.heartbeat_ns is not None:
        return f"not responding (last heartbeat {ago(d.heartbeat_ns, now_ns)})"
    return "never ran"


def _stream_text(live: Liveness) -> str:
    s = live.stream
    text = "connected" if s.connected else f"not connected ({s.state or 'idle'})"
    if s.gaps:
        text += f", {len(s.gaps)} gap{'s' if len(s.gaps) != 1 else ''}"
    return text


def nodes_lines(nodes: Sequence[tuple[NodeRow, Liveness]], now_ns: int) -> list[str]:
    """``lnflowctl nodes``: one row per node with its daemon and stream."""
    if not nodes:
        return ["no node recorded yet: lnflowd has not reached lnd (see `lnflowctl status`)"]
    rows = [
        [
            printable(n.alias) or "-",
            n.pubkey,
            n.network,
            _daemon_text(live, now_ns),
            _stream_text(live),
        ]
        for n, live in nodes
    ]
    return _columns(("Node", "Pubkey", "Network", "Daemon", "Stream"), rows)


def nodes_doc(nodes: Sequence[tuple[NodeRow, Liveness]]) -> list[dict[str, Any]]:
    """``lnflowctl nodes --json`` (docs/json.md)."""
    return [
        {
            **node_doc(n),
            "daemon": {
                "running": live.daemon.running,
                "pid": live.daemon.pid,
                "started_at": iso(live.daemon.started_ns),
                "heartbeat_at": iso(live.daemon.heartbeat_ns),
                "stopped_at": iso(live.daemon.stopped_ns),
                "lnd_state": live.daemon.lnd_state,
            },
            "stream": {
                "connected": live.stream.connected,
                "state": live.stream.state,
                "connected_since": iso(live.stream.connected_since_ns),
                "sessions": live.stream.sessions,
                "gaps": len(live.stream.gaps),
            },
        }
        for n, live in nodes
    ]
