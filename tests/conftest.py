"""Shared fixtures: a real SQLite store, migrated by the real Alembic revisions.

    def test_x(real_store: RealStore) -> None:
        real_store.writer.record_...(real_store.node_id, ...)
        assert real_store.count(htlc_events) == 1

``real_store`` is one store with one node (``STORE_NODE``) under the test's tmp_path;
``open_store(node=..., name=...)`` opens more, each disposed after the test.

A module (or test) marked ``@pytest.mark.engines("sqlite", "postgresql")`` runs its
store tests on both engines: on PostgreSQL each store is a new database of a throwaway
cluster the session starts (tests/pgserver.py). Without PostgreSQL installed those runs
are skipped, except under ``CI=true``, where they fail.
Tests that start a daemon, the simulated node or any other process carry the ``e2e``
marker (``pytest -m "not e2e"`` runs the rest in seconds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import sqlite3
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from pgserver import PgServer, running_server
from sqlalchemy import Engine, Table, func, select, text

from lnflow.domain import NodeInfo

# psycopg's pure-Python build finds libpq with ctypes.util.find_library, which runs
# ldconfig: imported here, before any test, that is no process started by a test
with contextlib.suppress(ImportError):
    import psycopg  # noqa: F401
from lnflow.store.db import open_engine
from lnflow.store.engines import DbUrl, StoreLocation
from lnflow.store.ingest import Ingestor
from lnflow.store.writer import StoreWriter

__all__ = ["STORE_NODE", "RealStore", "StoreAt", "plain_rows"]

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
    """An lnflow store opened like the daemon opens it (migrations applied): a SQLite
    file, or a PostgreSQL database (``path`` is then its URL)."""

    path: StoreLocation
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

    @property
    def engine_name(self) -> str:
        return str(self.engine.dialect.name)

    def q(self, sql: str) -> list[tuple[object, ...]]:
        return plain_rows(self.path, self.engine, sql)


StoreAt = Callable[[str], StoreLocation]


def plain_rows(where: StoreLocation, engine: Engine, sql: str) -> list[tuple[object, ...]]:
    """Read with the plain sqlite3 module, as lnflowctl's readers do (on PostgreSQL
    through the engine)."""
    if isinstance(where, DbUrl):
        with engine.connect() as pg:
            return [tuple(row) for row in pg.execute(text(sql))]
    with contextlib.closing(sqlite3.connect(where)) as conn:
        return conn.execute(sql).fetchall()


ENGINES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "engines(*names): run the test's stores on each engine named (sqlite, postgresql)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("engines")
    if marker is not None and "store_engine" in metafunc.fixturenames:
        metafunc.parametrize("store_engine", marker.args or ENGINES, indirect=True)


@contextlib.contextmanager
def processes_allowed() -> Iterator[None]:
    """Let session infrastructure (the PostgreSQL cluster) start its processes while
    an in-process test's fixtures are being set up."""
    held = list(_unmarked)
    _unmarked.clear()
    try:
        yield
    finally:
        _unmarked.extend(held)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL cluster per test process (xdist worker)."""
    stack = contextlib.ExitStack()
    with processes_allowed():  # initdb, pg_ctl: only while starting and stopping
        server = stack.enter_context(running_server())
    try:
        if server is None:
            why = (
                "PostgreSQL is not installed (initdb/pg_ctl not found; Debian: apt-get"
                " install postgresql, or `make test` as root)"
            )
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI=true: {why}")
            pytest.skip(why)
        # every migration applied once: each test's store is a copy of this database
        # (CREATE DATABASE ... TEMPLATE), as a fresh SQLite file is migrated in ~0.1 s
        server.admin(f"CREATE DATABASE {_PG_HEAD} TEMPLATE template0")
        open_engine(DbUrl(server.url(_PG_HEAD))).dispose()
        yield server
    finally:
        with processes_allowed():
            stack.close()


_PG_HEAD = "lnflow_head"


@pytest.fixture
def store_engine(request: pytest.FixtureRequest) -> str:
    """The engine the test's stores use: ``sqlite`` unless the ``engines`` marker
    parametrizes it."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def store_at(
    tmp_path: Path, store_engine: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], StoreLocation]]:
    """``store_at(name)``: where the test's store ``name`` lives on its engine (a file
    under tmp_path, or a new database, dropped after the test; the same name, the same
    store)."""
    if store_engine != "postgresql":
        yield lambda name: tmp_path / name
        return
    server: PgServer = request.getfixturevalue("pg_server")
    databases: dict[str, DbUrl] = {}

    def at(name: str) -> StoreLocation:
        if name not in databases:
            databases[name] = DbUrl(server.create_db(_PG_HEAD))
        return databases[name]

    yield at
    # The test's own engines (not open_store's) are left to the collector, as SQLite's
    # are; psycopg warns of a connection closed that way, which is no leak here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    for url in databases.values():
        server.drop_db(url.secret)


@pytest.fixture
def open_store(store_at: Callable[[str], StoreLocation]) -> Iterator[Callable[..., RealStore]]:
    opened: list[Engine] = []

    def open_one(*, node: NodeInfo = STORE_NODE, name: str = "s.db", seen_ns: int = 1) -> RealStore:
        path = store_at(name)
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
