"""Writes to the store. Synchronous; the daemon calls it from one writer thread.

One transaction per call: a batch of events is either stored whole or not at
all, so a crash never leaves half a batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from lnflow.domain import HtlcEvent, NodeInfo, to_signed64
from lnflow.store.db import insert_ignoring_duplicates
from lnflow.store.schema import daemon_state, htlc_events, nodes, stream_sessions

__all__ = ["StoreWriter", "event_row"]


def event_row(node_id: int, session_id: int, ev: HtlcEvent) -> dict[str, Any]:
    """The ``htlc_events`` row for one domain event."""
    return {
        "node_id": node_id,
        "session_id": session_id,
        "timestamp_ns": ev.timestamp_ns,
        "kind": int(ev.kind),
        "event_type": ev.event_type,
        "incoming_channel_id": to_signed64(ev.incoming_channel_id),
        "incoming_htlc_id": to_signed64(ev.incoming_htlc_id),
        "outgoing_channel_id": to_signed64(ev.outgoing_channel_id),
        "outgoing_htlc_id": to_signed64(ev.outgoing_htlc_id),
        "incoming_amt_msat": ev.incoming_amt_msat,
        "outgoing_amt_msat": ev.outgoing_amt_msat,
        "incoming_timelock": ev.incoming_timelock,
        "outgoing_timelock": ev.outgoing_timelock,
        "wire_failure": ev.wire_failure,
        "failure_detail": ev.failure_detail,
        "failure_string": ev.failure_string,
        "settled": ev.settled,
        "offchain": ev.offchain,
    }


class StoreWriter:
    """All writes the daemon makes. Not thread-safe: use from one thread."""

    DAEMON_ROW = 1

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert_event = insert_ignoring_duplicates(engine, htlc_events)

    # -- node and daemon state ---------------------------------------------------------

    def upsert_node(self, info: NodeInfo, now_ns: int) -> int:
        """Return the node's id, creating its row on first sight."""
        with self._engine.begin() as conn:
            node_id = conn.scalar(select(nodes.c.id).where(nodes.c.pubkey == info.pubkey))
            if node_id is None:
                node_id = conn.execute(
                    insert(nodes).values(
                        pubkey=info.pubkey,
                        alias=info.alias,
                        network=info.network,
                        first_seen_ns=now_ns,
                    )
                ).inserted_primary_key
                assert node_id is not None
                node_id = node_id[0]
            else:
                conn.execute(
                    update(nodes)
                    .where(nodes.c.id == node_id)
                    .values(alias=info.alias, network=info.network)
                )
            return int(node_id)

    def daemon_started(self, now_ns: int, heartbeat_interval_s: int) -> None:
        values = {
            "pid": os.getpid(),
            "started_ns": now_ns,
            "heartbeat_ns": now_ns,
            "heartbeat_interval_s": heartbeat_interval_s,
            "stopped_ns": None,
            "lnd_state": "connecting",
            "stream_state": "idle",
            "last_error": None,
        }
        with self._engine.begin() as conn:
            exists = conn.scalar(select(func.count()).where(daemon_state.c.id == self.DAEMON_ROW))
            if exists:
                conn.execute(
                    update(daemon_state).where(daemon_state.c.id == self.DAEMON_ROW).values(values)
                )
            else:
                conn.execute(insert(daemon_state).values(id=self.DAEMON_ROW, **values))

    def daemon_state(self, now_ns: int, **values: Any) -> None:
        """Heartbeat plus any state columns (lnd_state, stream_state, node_id, ...)."""
        with self._engine.begin() as conn:
            conn.execute(
                update(daemon_state)
                .where(daemon_state.c.id == self.DAEMON_ROW)
                .values(heartbeat_ns=now_ns, **values)
            )

    def daemon_stopped(self, now_ns: int) -> None:
        self.daemon_state(now_ns, stopped_ns=now_ns, stream_state="stopped")

    # -- stream sessions -------------------------------------------------------------

    def open_session(self, node_id: int, now_ns: int, lnd_version: str) -> int:
        with self._engine.begin() as conn:
            result = conn.execute(
                insert(stream_sessions).values(
                    node_id=node_id, started_ns=now_ns, lnd_version=lnd_version
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def mark_subscribed(self, session_id: int, ts_ns: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(stream_sessions)
                .where(stream_sessions.c.id == session_id)
                .where(stream_sessions.c.subscribed_ns.is_(None))
                .values(subscribed_ns=ts_ns)
            )

    def close_session(self, session_id: int, now_ns: int, reason: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(stream_sessions)
                .where(stream_sessions.c.id == session_id)
                .where(stream_sessions.c.ended_ns.is_(None))
                .values(ended_ns=now_ns, end_reason=reason)
            )

    def close_dangling_sessions(self, now_ns: int) -> int:
        """Sessions left open by a crash end at the last heartbeat (or now)."""
        with self._engine.begin() as conn:
            last_beat = conn.scalar(
                select(daemon_state.c.heartbeat_ns).where(daemon_state.c.id == self.DAEMON_ROW)
            )
            result = conn.execute(
                update(stream_sessions)
                .where(stream_sessions.c.ended_ns.is_(None))
                .values(ended_ns=last_beat or now_ns, end_reason="daemon stopped unexpectedly")
            )
            return int(result.rowcount or 0)

    # -- events ----------------------------------------------------------------------

    def insert_events(self, node_id: int, session_id: int, events: Sequence[HtlcEvent]) -> int:
        """Store a batch in one transaction; returns how many were new (not replays)."""
        if not events:
            return 0
        rows = [event_row(node_id, session_id, ev) for ev in events]
        with self._engine.begin() as conn:
            result = conn.execute(self._insert_event, rows)
            return int(result.rowcount or 0)
