"""Shared fixtures: a real SQLite store, migrated by the real Alembic revisions.

    def test_x(real_store: RealStore) -> None:
        real_store.writer.record_...(real_store.node_id, ...)
        assert real_store.count(htlc_events) == 1

``real_store`` is one store with one node (``STORE_NODE``) under the test's tmp_path;
``open_store(node=..., name=...)`` opens more, each disposed after the test.
Tests that start a daemon, the simulated node or any other process carry the ``e2e``
marker (``pytest -m "not e2e"`` runs the rest in seconds).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine, Table, func, select

from lnflow.domain import NodeInfo
from lnflow.store.db import open_engine
from lnflow.store.ingest import Ingestor
from lnflow.store.writer import StoreWriter

__all__ = ["STORE_NODE", "RealStore"]

S = 1_000_000_000

# No per-example deadline: a timed assert, and on workers sharing two cores with the
# end-to-end runs an example can wait its turn for a quarter second.
hypothesis_settings.register_profile("lnflow", deadline=None)
hypothesis_settings.load_profile("lnflow")

STORE_NODE = NodeInfo(
    pubkey="02" + "aa" * 32,
    alias="us",
    version="0.18.3-beta",
    network="mainnet",
    block_height=800_000,
    synced_to_chain=True,
)


@dataclasses.dataclass
class RealStore:
    """An lnflow store file opened like the daemon opens it (migrations applied)."""

    path: Path
    engine: Engine
    writer: StoreWriter
    node_id: int

    def open_session(self, started_ns: int = 1, lnd_version: str = "0.18.3-beta") -> int:
        return self.writer.open_session(self.node_id, started_ns, lnd_version)

    def ingestor(
        self,
        *,
        attempt_timeout_ns: int = 600 * S,
        attempt_linger_ns: int = 10 * S,
        dedup_window_ns: int = 60 * S,
        cluster_max_span_ns: int | None = 600 * S,
    ) -> Ingestor:
        return Ingestor(
            self.engine,
            self.node_id,
            attempt_timeout_ns=attempt_timeout_ns,
            attempt_linger_ns=attempt_linger_ns,
            dedup_window_ns=dedup_window_ns,
            cluster_max_span_ns=cluster_max_span_ns,
        )

    def count(self, table: Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(table)) or 0)

    def q(self, sql: str) -> list[tuple[object, ...]]:
        """Read with the plain sqlite3 module, as lnflowctl's readers do."""
        with sqlite3.connect(self.path) as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., RealStore]]:
    opened: list[Engine] = []

    def open_one(*, node: NodeInfo = STORE_NODE, name: str = "s.db", seen_ns: int = 1) -> RealStore:
        path = tmp_path / name
        engine = open_engine(path)
        opened.append(engine)
        writer = StoreWriter(engine)
        return RealStore(path, engine, writer, writer.upsert_node(node, seen_ns))

    yield open_one
    for engine in opened:
        engine.dispose()


@pytest.fixture
def real_store(open_store: Callable[..., RealStore]) -> RealStore:
    return open_store()


# -- the e2e marker, enforced ------------------------------------------------------------

_PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn"})
_unmarked: list[str] = []  # the node id of the running test while it is not marked e2e


def _refuse_processes(event: str, args: tuple[object, ...]) -> None:
    if _unmarked and event in _PROCESS_EVENTS:
        raise RuntimeError(f"{_unmarked[0]} starts a process: mark it @pytest.mark.e2e")


sys.addaudithook(_refuse_processes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    """A test without the ``e2e`` marker may not start a process (its fixtures neither):
    ``pytest -m "not e2e"`` stays the fast, in-process part of the suite."""
    if item.get_closest_marker("e2e") is None:
        _unmarked.append(item.nodeid)
    try:
        return (yield)
    finally:
        _unmarked.clear()
