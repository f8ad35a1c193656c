"""Writes to the store. Synchronous; the daemon calls it from one writer thread.

One transaction per call: a batch of events is either stored whole or not at
all, so a crash never leaves half a batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from lnflow.domain import (
    ChannelSample,
    DaemonState,
    ForwardRecord,
    NodeInfo,
    StreamState,
    from_signed64,
    to_signed64,
)
from lnflow.errors import StoreError
from lnflow.store.db import BulkStatement, upsert_adding
from lnflow.store.latest_sample import refresh_latest
from lnflow.store.rollups import (
    NS_PER_HOUR,
    ChannelRollupUpserts,
    ForwardChannelBatch,
    forward_channel_upsert,
)
from lnflow.store.sample_ratios import lower_ratios
from lnflow.store.schema import (
    channel_aliases,
    channel_samples,
    channels,
    daemon_state,
    forward_channel_6h,
    forward_channel_daily,
    forward_channel_hourly,
    forward_rollups_hourly,
    forwards,
    htlc_events,
    nodes,
    stream_sessions,
)

__all__ = ["DAEMON_HEARTBEAT_GRACE", "NS_PER_HOUR", "NodeTakenError", "StoreWriter"]

# A daemon counts as running while its heartbeat is younger than this many intervals
# (as `lnflowctl status` judges it: lnflow.store.status_read).
DAEMON_HEARTBEAT_GRACE = 3


class NodeTakenError(StoreError):
    """Another live lnflowd records the same node into the store."""


# what tells whether a daemon_state row is a running daemon's
_LIVENESS = (
    daemon_state.c.id,
    daemon_state.c.pid,
    daemon_state.c.heartbeat_ns,
    daemon_state.c.heartbeat_interval_s,
    daemon_state.c.stopped_ns,
)


_FORWARD_COLUMNS = (
    "node_id",
    "timestamp_ns",
    "chan_id_in",
    "chan_id_out",
    "amt_in_msat",
    "amt_out_msat",
    "fee_msat",
    "incoming_htlc_id",
    "outgoing_htlc_id",
)


class StoreWriter:
    """All writes the daemon makes. Not thread-safe: use from one thread."""

    def __init__(self, engine: Engine, *, exclusive: bool = True) -> None:
        self._engine = engine
        # the ledger's rows as tuples (a sync of a busy day is ~10^5 of them)
        self._insert_forwards = BulkStatement(engine, insert(forwards), _FORWARD_COLUMNS)
        # no other daemon writes the store (its file lock is held): rows that look live
        # are crashed daemons'
        self._exclusive = exclusive
        self._row: int | None = None  # this daemon's daemon_state row
        self._last_beat: dict[int, int] = {}  # node -> its last daemon's heartbeat
        self._replaced: dict[str, Any] | None = None  # the row daemon_started took over
        self._add_forward_rollup = upsert_adding(
            engine, forward_rollups_hourly, ("forwards", "amt_out_msat", "fee_msat")
        )
        self._add_per_channel = ChannelRollupUpserts(
            engine,
            forward_channel_upsert,
            (forward_channel_hourly, forward_channel_6h, forward_channel_daily),
        )

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

    def daemon_started(
        self, now_ns: int, heartbeat_interval_s: int, *, metrics_listen: str | None = None
    ) -> None:
        """This daemon's ``daemon_state`` row, before it knows its node (:meth:`claim_node`).

        A store of one node (or none yet) keeps one row, as before several nodes shared a
        store: the last daemon's, taken over (its node stays until :meth:`claim_node`).
        With several nodes each daemon starts on a row of its own. Rows of daemons that
        stopped before they learned their node are dropped.
        """
        values = {
            "metrics_listen": metrics_listen,
            "alert_targets": None,
            "pid": os.getpid(),
            "started_ns": now_ns,
            "heartbeat_ns": now_ns,
            "heartbeat_interval_s": heartbeat_interval_s,
            "stopped_ns": None,
            "lnd_state": DaemonState.CONNECTING,
            "stream_state": StreamState.IDLE,
            "last_error": None,
        }
        d = daemon_state
        with self._engine.begin() as conn:
            row = None
            if (conn.scalar(select(func.count()).select_from(nodes)) or 0) <= 1:
                last = conn.execute(
                    select(d).order_by(d.c.heartbeat_ns.desc(), d.c.id.desc()).limit(1)
                ).first()
                if last is not None and not self._live(last, now_ns):
                    row = int(last.id)
                    if last.node_id is not None:  # its sessions end at its last heartbeat
                        self._last_beat[int(last.node_id)] = int(last.heartbeat_ns)
                        # given back to its node if this daemon records another
                        self._replaced = {k: v for k, v in last._mapping.items() if k != "id"}
            gone = [
                r
                for r in conn.execute(select(*_LIVENESS).where(d.c.node_id.is_(None))).all()
                if r.id != row and not self._live(r, now_ns)
            ]
            if gone:
                conn.execute(delete(d).where(d.c.id.in_([r.id for r in gone])))
            if row is None:
                key = conn.execute(insert(d).values(**values)).inserted_primary_key
                assert key is not None
                row = int(key[0])
            else:
                conn.execute(update(d).where(d.c.id == row).values(values))
        self._row = row

    def _live(self, row: Any, now_ns: int) -> bool:
        """Whether the ``daemon_state`` row is a daemon running now, other than this one.

        With the store to ourselves (``exclusive``: the SQLite store's file lock) no other
        daemon runs, whatever a row says (one that crashed left its heartbeat behind).
        """
        if self._exclusive or row.stopped_ns is not None or row.id == self._row:
            return False
        grace_ns = (DAEMON_HEARTBEAT_GRACE * int(row.heartbeat_interval_s) + 2) * 1_000_000_000
        return bool(now_ns - int(row.heartbeat_ns) <= grace_ns)

    def claim_node(self, node_id: int, now_ns: int, describe: str, *, held: bool = False) -> None:
        """Make this daemon's row the node's; refuse (:class:`NodeTakenError`) while another
        live daemon records the same node. Sessions the node's last daemon left open
        (it crashed) end at its last sign of life (:meth:`close_dangling_sessions`).
        ``describe`` names the node in the refusal (alias and pubkey). ``held``: this
        daemon holds the node's lock (a database server's), so no other daemon of the
        node runs whatever its row says.
        """
        d = daemon_state
        with self._engine.begin() as conn:
            others = conn.execute(
                select(*_LIVENESS).where(d.c.node_id == node_id, d.c.id != self._row)
            ).all()
            live = [] if held else [r for r in others if self._live(r, now_ns)]
            if live:
                raise NodeTakenError(
                    f"another lnflowd (pid {live[0].pid}, heartbeat "
                    f"{(now_ns - int(live[0].heartbeat_ns)) // 1_000_000_000} s ago) is "
                    f"recording node {describe} into this store: stop it first (one daemon "
                    "per node; daemons of other nodes may share the store)"
                )
            beats = [int(r.heartbeat_ns) for r in others]
            if node_id in self._last_beat:
                beats.append(self._last_beat[node_id])
            self._close_dangling(conn, node_id, max(beats) if beats else None, now_ns)
            if others:
                conn.execute(delete(d).where(d.c.id.in_([r.id for r in others])))
            old = self._replaced
            if old is not None and old["node_id"] != node_id:
                conn.execute(insert(d).values(**old))  # the other node's last daemon
            conn.execute(
                update(d).where(d.c.id == self._row).values(heartbeat_ns=now_ns, node_id=node_id)
            )

    def daemon_refused(self) -> None:
        """The node was refused: this daemon's row goes if it names no node (else it stays,
        marked stopped), and nothing more is written to it."""
        row, self._row = self._row, None
        if row is None:
            return
        with self._engine.begin() as conn:
            conn.execute(
                delete(daemon_state)
                .where(daemon_state.c.id == row)
                .where(daemon_state.c.node_id.is_(None))
            )

    def daemon_state(self, now_ns: int, **values: Any) -> None:
        """Heartbeat plus any state columns (lnd_state, stream_state, ...) of this daemon."""
        if self._row is None:
            return
        with self._engine.begin() as conn:
            conn.execute(
                update(daemon_state)
                .where(daemon_state.c.id == self._row)
                .values(heartbeat_ns=now_ns, **values)
            )

    def daemon_stopped(self, now_ns: int) -> None:
        self.daemon_state(now_ns, stopped_ns=now_ns, stream_state=StreamState.STOPPED)

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

    @staticmethod
    def _close_dangling(conn: Connection, node_id: int, last_beat: int | None, now_ns: int) -> int:
        """The node's sessions left open by a crash end when their last sign of life was
        seen.

        That is the later of its daemon's last heartbeat and the node's newest event
        stored (events are stored in recording order, so the newest is the highest id),
        so the gap reported after a crash never covers time whose events were kept.
        """
        s = stream_sessions
        if not conn.scalar(
            select(func.count()).where(s.c.node_id == node_id, s.c.ended_ns.is_(None))
        ):
            return 0
        newest_event = conn.scalar(
            select(htlc_events.c.timestamp_ns)
            .where(htlc_events.c.node_id == node_id)
            .order_by(htlc_events.c.id.desc())
            .limit(1)
        )
        seen = [t for t in (last_beat, newest_event) if t is not None]
        result = conn.execute(
            update(s)
            .where(s.c.node_id == node_id, s.c.ended_ns.is_(None))
            .values(
                ended_ns=max(seen) if seen else now_ns,
                end_reason="daemon stopped unexpectedly",
            )
        )
        return int(result.rowcount or 0)

    # -- forwards ledger -------------------------------------------------------------

    def last_forward_ns(self, node_id: int) -> int:
        """Newest ledger timestamp stored (0 when empty): where the next sync starts."""
        with self._engine.connect() as conn:
            value = conn.scalar(
                select(func.max(forwards.c.timestamp_ns)).where(forwards.c.node_id == node_id)
            )
            return int(value or 0)

    def insert_forwards(self, node_id: int, records: Sequence[ForwardRecord]) -> int:
        """Store ledger records not seen before and add them to the hourly rollups.

        ``timestamp_ns`` is unique per node in lnd's log, so it is the dedupe key.
        """
        if not records:
            return 0
        with self._engine.begin() as conn:
            lo = min(r.timestamp_ns for r in records)
            hi = max(r.timestamp_ns for r in records)
            known = set(
                conn.scalars(
                    select(forwards.c.timestamp_ns)
                    .where(forwards.c.node_id == node_id)
                    .where(forwards.c.timestamp_ns.between(lo, hi))
                )
            )
            fresh: dict[int, ForwardRecord] = {}
            for r in records:
                if r.timestamp_ns not in known:
                    fresh.setdefault(r.timestamp_ns, r)
            if not fresh:
                return 0
            self._insert_forwards.execute(
                conn,
                [
                    (
                        node_id,
                        r.timestamp_ns,
                        to_signed64(r.chan_id_in),
                        to_signed64(r.chan_id_out),
                        r.amt_in_msat,
                        r.amt_out_msat,
                        r.fee_msat,
                        r.incoming_htlc_id,
                        r.outgoing_htlc_id,
                    )
                    for r in fresh.values()
                ],
            )
            rollup: dict[tuple[int, int, int], list[int]] = {}
            per_channel = ForwardChannelBatch()
            for r in fresh.values():
                per_channel.add(
                    r.timestamp_ns // NS_PER_HOUR, r.chan_id_in, r.chan_id_out, r.fee_msat
                )
                key = (r.timestamp_ns // NS_PER_HOUR, r.chan_id_in, r.chan_id_out)
                acc = rollup.setdefault(key, [0, 0, 0])
                acc[0] += 1
                acc[1] += r.amt_out_msat
                acc[2] += r.fee_msat
            conn.execute(
                self._add_forward_rollup,
                [
                    {
                        "node_id": node_id,
                        "hour": hour,
                        "chan_id_in": to_signed64(cin),
                        "chan_id_out": to_signed64(cout),
                        "forwards": n,
                        "amt_out_msat": amt,
                        "fee_msat": fee,
                    }
                    for (hour, cin, cout), (n, amt, fee) in rollup.items()
                ],
            )
            self._add_per_channel.write(conn, per_channel.rows(node_id))
            return len(fresh)

    # -- channels --------------------------------------------------------------------

    def record_channel_samples(
        self, node_id: int, now_ns: int, samples: Sequence[ChannelSample]
    ) -> int:
        """One sample row per open channel; channels gone from the list are marked closed."""
        with self._engine.begin() as conn:
            existing = {
                from_signed64(row.chan_id): row
                for row in conn.execute(
                    select(channels.c.chan_id, channels.c.peer_alias, channels.c.closed_ns).where(
                        channels.c.node_id == node_id
                    )
                )
            }
            open_ids = set()
            for s in samples:
                info = s.info
                open_ids.add(info.chan_id)
                values = {
                    "remote_pubkey": info.remote_pubkey,
                    "channel_point": info.channel_point,
                    "capacity_sat": info.capacity_sat,
                    "private": info.private,
                    "last_seen_ns": now_ns,
                    "closed_ns": None,
                }
                old = existing.get(info.chan_id)
                if old is None:
                    conn.execute(
                        insert(channels).values(
                            node_id=node_id,
                            chan_id=to_signed64(info.chan_id),
                            first_seen_ns=now_ns,
                            peer_alias=s.peer_alias,
                            **values,
                        )
                    )
                else:
                    # an alias lookup that failed this time keeps the last known alias
                    conn.execute(
                        update(channels)
                        .where(channels.c.node_id == node_id)
                        .where(channels.c.chan_id == to_signed64(info.chan_id))
                        .values(peer_alias=s.peer_alias or old.peer_alias, **values)
                    )
            gone = [
                to_signed64(cid)
                for cid, row in existing.items()
                if cid not in open_ids and row.closed_ns is None
            ]
            if gone:
                conn.execute(
                    update(channels)
                    .where(channels.c.node_id == node_id)
                    .where(channels.c.chan_id.in_(gone))
                    .values(closed_ns=now_ns)
                )
            if samples:
                conn.execute(
                    insert(channel_samples), [_sample_row(node_id, now_ns, s) for s in samples]
                )
                # from the samples themselves: one written out of time order keeps the
                # latest where it is
                refresh_latest(conn, node_id, {to_signed64(s.info.chan_id) for s in samples})
                lower_ratios(conn, node_id, now_ns, samples)
            _record_aliases(conn, node_id, samples)
            return len(samples)


def _record_aliases(conn: Connection, node_id: int, samples: Sequence[ChannelSample]) -> None:
    """Map the channels' other ids (alias SCIDs, confirmed SCID) to their chan_id.

    An id keeps the channel it was first seen for: lnd never hands an alias to two
    channels, and a closed channel's ids stay where its failures were counted.
    """
    wanted = {
        to_signed64(scid): (to_signed64(s.info.chan_id), scid == s.info.confirmed_scid)
        for s in samples
        for scid in s.info.other_ids
    }
    if not wanted:
        return
    known = set(
        conn.scalars(
            select(channel_aliases.c.scid)
            .where(channel_aliases.c.node_id == node_id)
            .where(channel_aliases.c.scid.in_(list(wanted)))
        )
    )
    rows = [
        {"node_id": node_id, "scid": scid, "chan_id": chan, "confirmed": confirmed}
        for scid, (chan, confirmed) in sorted(wanted.items())
        if scid not in known
    ]
    if rows:
        conn.execute(insert(channel_aliases), rows)


def _sample_row(node_id: int, now_ns: int, s: ChannelSample) -> dict[str, Any]:
    info, ours, peer = s.info, s.ours, s.peer
    return {
        "node_id": node_id,
        "chan_id": to_signed64(info.chan_id),
        "ts_ns": now_ns,
        "capacity_sat": info.capacity_sat,
        "local_balance_sat": info.local_balance_sat,
        "remote_balance_sat": info.remote_balance_sat,
        "local_reserve_sat": info.local_reserve_sat,
        "remote_reserve_sat": info.remote_reserve_sat,
        "active": info.active,
        "uptime_s": info.uptime_s,
        "lifetime_s": info.lifetime_s,
        "fee_base_msat": ours.fee_base_msat if ours else None,
        "fee_rate_ppm": ours.fee_rate_ppm if ours else None,
        "time_lock_delta": ours.time_lock_delta if ours else None,
        "min_htlc_msat": ours.min_htlc_msat if ours else None,
        "max_htlc_msat": ours.max_htlc_msat if ours else None,
        "disabled": ours.disabled if ours else None,
        "peer_fee_base_msat": peer.fee_base_msat if peer else None,
        "peer_fee_rate_ppm": peer.fee_rate_ppm if peer else None,
        "peer_time_lock_delta": peer.time_lock_delta if peer else None,
        "peer_min_htlc_msat": peer.min_htlc_msat if peer else None,
        "peer_max_htlc_msat": peer.max_htlc_msat if peer else None,
        "peer_disabled": peer.disabled if peer else None,
        "inbound_fee_base_msat": ours.inbound_fee_base_msat if ours else None,
        "inbound_fee_rate_ppm": ours.inbound_fee_rate_ppm if ours else None,
    }
