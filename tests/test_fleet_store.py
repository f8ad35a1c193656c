"""Several nodes in one store, at the store: each daemon's ``daemon_state`` row, the
refusal of a second live daemon of the same node, and the node-keyed status readers
(a real migrated store on each engine; no process)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable

import pytest
from conftest import STORE_NODE, RealStore
from daemonproc import query

from lnflow.errors import ConfigError
from lnflow.store.engines import PlainStore, StoreLocation, open_plain_store
from lnflow.store.status_read import list_nodes, liveness, pick_node
from lnflow.store.writer import NodeTakenError, StoreWriter

S = 1_000_000_000
T0 = 1_800_000_000 * S
OTHER = dataclasses.replace(STORE_NODE, pubkey="03" + "ab" * 32, alias="other")


pytestmark = pytest.mark.engines("sqlite", "postgresql")


def _rows(store: RealStore) -> list[tuple[object, ...]]:
    return query(
        store.path,
        "SELECT node_id, pid, CASE WHEN stopped_ns IS NULL THEN 0 ELSE 1 END"
        " FROM daemon_state ORDER BY id",
    )


def _plain(where: StoreLocation) -> contextlib.closing[PlainStore]:
    """The status readers' connection: sqlite3's, or psycopg's plain reader."""
    return contextlib.closing(open_plain_store(where))


def _daemon(store: RealStore, *, exclusive: bool = False) -> StoreWriter:
    """A second writer on the store, as another lnflowd's (no file lock: PostgreSQL)."""
    return StoreWriter(store.engine, exclusive=exclusive)


def test_a_live_daemon_of_the_same_node_refuses_the_next(real_store: RealStore) -> None:
    first = _daemon(real_store)
    first.daemon_started(T0, 5)
    first.claim_node(real_store.node_id, T0, "node")
    second = _daemon(real_store)
    second.daemon_started(T0 + S, 5)
    with pytest.raises(NodeTakenError, match=r"another lnflowd \(pid \d+.*recording node X"):
        second.claim_node(real_store.node_id, T0 + S, "X")
    second.daemon_refused()
    second.daemon_state(T0 + 2 * S, last_error="must not land")
    # the first daemon's row alone, untouched
    assert _rows(real_store) == [(real_store.node_id, os.getpid(), 0)]


def test_a_daemon_of_another_node_runs_beside(real_store: RealStore) -> None:
    first = _daemon(real_store)
    first.daemon_started(T0, 5)
    first.claim_node(real_store.node_id, T0, "node")
    other = first.upsert_node(OTHER, T0)
    second = _daemon(real_store)
    second.daemon_started(T0 + S, 5)
    second.claim_node(other, T0 + S, "other")
    assert sorted(r[0] for r in _rows(real_store)) == [real_store.node_id, other]
    with _plain(real_store.path) as db:
        mine = liveness(db, T0 + 2 * S, real_store.node_id)
        theirs = liveness(db, T0 + 2 * S, other)
    assert mine.daemon.running and theirs.daemon.running
    assert (mine.lnd.pubkey, theirs.lnd.pubkey) == (STORE_NODE.pubkey, OTHER.pubkey)


@pytest.mark.parametrize("exclusive", [False, True])
def test_a_silent_or_stopped_daemon_is_taken_over(real_store: RealStore, exclusive: bool) -> None:
    """A row whose heartbeat stopped (a crash) is a dead daemon's; with the store's file
    lock held (``exclusive``) even a fresh-looking one is."""
    first = _daemon(real_store)
    first.daemon_started(T0, 5)
    first.claim_node(real_store.node_id, T0, "node")
    with real_store.engine.begin() as conn:  # a second node: every daemon gets its own row
        conn.exec_driver_sql(
            "INSERT INTO nodes (pubkey, alias, network, first_seen_ns)"
            f" VALUES ('{OTHER.pubkey}', 'other', 'regtest', 1)"
        )
    later = T0 + (S if exclusive else 60 * S)  # 60 s: past 3 heartbeats of 5 s
    second = _daemon(real_store, exclusive=exclusive)
    second.daemon_started(later, 5)
    second.claim_node(real_store.node_id, later, "node")
    assert _rows(real_store) == [(real_store.node_id, os.getpid(), 0)]  # one row, the new


def test_sessions_left_open_close_at_the_nodes_last_sign_of_life(real_store: RealStore) -> None:
    first = _daemon(real_store, exclusive=True)
    first.daemon_started(T0, 5)
    first.claim_node(real_store.node_id, T0, "node")
    other = first.upsert_node(OTHER, T0)
    mine = first.open_session(real_store.node_id, T0, "0.18.3")
    theirs = first.open_session(other, T0, "0.18.3")
    first.daemon_state(T0 + 7 * S)  # its last heartbeat, then a crash
    restarted = _daemon(real_store, exclusive=True)
    restarted.daemon_started(T0 + 100 * S, 5)
    restarted.claim_node(real_store.node_id, T0 + 100 * S, "node")
    with _plain(real_store.path) as db:
        ended = dict(db.execute("SELECT id, ended_ns FROM stream_sessions").fetchall())
    assert ended == {mine: T0 + 7 * S, theirs: None}  # the other node's is not ours to end


def test_a_store_of_one_node_keeps_one_row_and_gives_it_back(real_store: RealStore) -> None:
    """One node: the next daemon takes the last one's row over, as with one node per
    store. If that daemon records another node, the first node keeps its last row."""
    first = _daemon(real_store, exclusive=True)
    first.daemon_started(T0, 5)
    first.claim_node(real_store.node_id, T0, "node")
    first.daemon_stopped(T0 + S)
    second = _daemon(real_store, exclusive=True)
    second.daemon_started(T0 + 2 * S, 5)
    assert len(_rows(real_store)) == 1
    other = second.upsert_node(OTHER, T0 + 3 * S)
    second.claim_node(other, T0 + 3 * S, "other")
    assert sorted(_rows(real_store), key=lambda r: str(r[0])) == sorted(
        [(real_store.node_id, os.getpid(), 1), (other, os.getpid(), 0)], key=lambda r: str(r[0])
    )
    with _plain(real_store.path) as db:
        assert liveness(db, T0 + 4 * S, real_store.node_id).daemon.stopped_ns == T0 + S


def test_pick_node(open_store: Callable[..., RealStore]) -> None:
    store = open_store()
    with _plain(store.path) as db:
        assert pick_node(db, None, store.path) == list_nodes(db)[0]  # the only one
    store.writer.upsert_node(OTHER, 2)
    twin = dataclasses.replace(OTHER, pubkey="02" + "cd" * 32)  # the same alias
    store.writer.upsert_node(twin, 3)
    with _plain(store.path) as db:
        with pytest.raises(ConfigError, match="records 3 nodes: pass --node"):
            pick_node(db, None, store.path)
        assert pick_node(db, STORE_NODE.alias, store.path).pubkey == STORE_NODE.pubkey
        assert pick_node(db, twin.pubkey.upper(), store.path).pubkey == twin.pubkey
        with pytest.raises(ConfigError, match="names 2 nodes"):
            pick_node(db, "other", store.path)
        with pytest.raises(ConfigError, match="`lnflowctl nodes`"):
            pick_node(db, "nobody", store.path)
