"""lnflowd recording into PostgreSQL: a real daemon and simulated nodes over gRPC.

The scenario of tests/test_fleet_e2e.py (two nodes, their failures dated 40 minutes
before the daemons' clock): each node recorded alone into a SQLite file is what every
PostgreSQL run must read back as. One daemon into a database of its own; two daemons of
two nodes into one database at the same time, each node's analysis as its run alone;
a second daemon of a node already recorded there refused in one line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from daemonproc import Daemon, query, run_lnflowctl, sent_before_but_not_stored
from pgserver import PgServer
from simnode import SimNode
from test_fleet_e2e import ALPHA, BETA, Sim, _script, _timeless

from lnflow.store.engines import DbUrl, StoreLocation

# every test here starts a process; the first to use the module's recorded runs (five
# daemons, ~50 s alone) waits for them, several times that on a loaded machine
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def _stored(sim: Sim, n_events: int) -> Any:
    def check(c: Any) -> bool:
        row = c.execute(
            "SELECT (SELECT count(*) FROM htlc_events WHERE node_id = n.id),"
            " (SELECT count(*) FROM forwards WHERE node_id = n.id),"
            " (SELECT count(DISTINCT chan_id) FROM channel_samples WHERE node_id = n.id)"
            " FROM nodes AS n WHERE n.pubkey = ?",
            (sim.pubkey,),
        ).fetchone()
        return row is not None and tuple(row) == (n_events, 1, 3)

    return check


def _record(
    sims: tuple[Sim, ...], tmp: Path, db: StoreLocation, as_role: dict[str, DbUrl] | None = None
) -> None:
    """Each node's script through a daemon of its own into ``db`` (``as_role``: a URL of
    its own per node, into the same database), all at once, until every node's events
    are stored."""
    nodes, daemons = [], []
    try:
        for sim in sims:
            script, _ = _script(sim)
            args = ["--seed", str(sim.seed), "--alias", sim.alias]
            node = SimNode(tmp / f"lnd-{sim.name}", script=script, args=args).__enter__()
            nodes.append(node)
            own = as_role[sim.name] if as_role else db
            daemons.append(Daemon(node, own, log=tmp / f"{sim.name}.log").start())
        for sim, d in zip(sims, daemons, strict=True):
            d.wait_for(_stored(sim, _script(sim)[1]), timeout=120)
        for d in daemons:
            assert d.stop() == 0, d.log()
    finally:
        for d in daemons:
            if d.running():
                d.kill()
        for node in nodes:
            node.__exit__(None, None, None)


def _alpha(tmp: Path) -> tuple[SimNode, int]:
    """Node alpha's simulator (not started) and how many events its script sends."""
    script, n_events = _script(ALPHA)
    args = ["--seed", str(ALPHA.seed), "--alias", ALPHA.alias]
    return SimNode(tmp / "lnd", script=script, args=args), n_events


class Runs(NamedTuple):
    sqlite: dict[str, Path]  # each node alone in a SQLite file
    alone: DbUrl  # alpha alone in a PostgreSQL database
    shared: DbUrl  # both nodes, recorded at the same time


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Iterator[Runs]:
    tmp = tmp_path_factory.mktemp("pgd")
    files = {}
    for sim in (ALPHA, BETA):
        files[sim.name] = tmp / f"{sim.name}.db"
        _record((sim,), tmp / f"file-{sim.name}", files[sim.name])
    # empty databases: the daemons migrate them (two at once: the same empty database)
    alone = DbUrl(pg_server.create_db())
    _record((ALPHA,), tmp / "pg-alone", alone)
    shared = DbUrl(pg_server.create_db())
    _record((ALPHA, BETA), tmp / "pg-shared", shared)
    yield Runs(files, alone, shared)
    for url in (alone, shared):
        pg_server.drop_db(url.secret)


def _analyze(db: StoreLocation, *node: str) -> dict[str, Any]:
    import json

    where = db.secret if isinstance(db, DbUrl) else str(db)
    code, out, err = run_lnflowctl(
        "--db", where, *node, "analyze", "--hours", "1", "--json", timeout=60
    )
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_a_daemon_recording_into_postgresql_analyzes_as_into_sqlite(runs: Runs) -> None:
    on_pg = _analyze(runs.alone)
    on_file = _analyze(runs.sqlite["alpha"])
    assert on_file["opportunities"], "the scenario reports channels"
    assert _timeless(on_pg) == _timeless(on_file)


@pytest.mark.parametrize("sim", [ALPHA, BETA], ids=["alpha", "beta"])
def test_two_daemons_at_once_each_node_as_alone(runs: Runs, sim: Sim) -> None:
    shared = _analyze(runs.shared, "--node", sim.pubkey)
    alone = _analyze(runs.sqlite[sim.name])
    assert _timeless(shared) == _timeless(alone)
    assert len(shared["gaps"]) == 1  # its own stream session only


def test_cluster_ids_of_two_daemons_at_once_are_unique(runs: Runs) -> None:
    from lnflow.store.engines import open_plain_store

    db = open_plain_store(runs.shared)
    try:
        per_node = dict(
            db.execute("SELECT node_id, count(*) FROM failure_clusters GROUP BY node_id").fetchall()
        )
        clustered = db.execute(
            "SELECT count(DISTINCT a.cluster_id), count(DISTINCT c.id) FROM forward_attempts a"
            " JOIN failure_clusters c ON c.id = a.cluster_id AND c.node_id = a.node_id"
        ).fetchone()
    finally:
        db.close()
    assert len(per_node) == 2 and all(n > 0 for n in per_node.values()), per_node
    # every attempt's cluster is one of its own node's
    assert clustered[0] == clustered[1] == sum(per_node.values())


def test_a_second_daemon_of_the_same_node_is_refused_in_one_line(
    tmp_path: Path, pg_server: PgServer
) -> None:
    url = DbUrl(pg_server.create_db())
    node, n_events = _alpha(tmp_path)
    try:
        with (
            node,
            Daemon(node, url, log=tmp_path / "first.log") as first,
        ):
            first.wait_for(_stored(ALPHA, n_events), timeout=120)
            second = Daemon(node, url, log=tmp_path / "second.log").start()
            deadline = time.monotonic() + 60
            while second.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            code = second.stop()
            assert first.running()  # the first one records on
            assert first.stop() == 0
    finally:
        pg_server.drop_db(url.secret)
    errors = [line for line in second.log().splitlines() if line.startswith("lnflowd: error:")]
    assert code != 0 and len(errors) == 1 and "Traceback" not in second.log(), second.log()
    assert "another lnflowd is recording node alpha" in errors[0], errors[0]
    assert ALPHA.pubkey in errors[0] and "one daemon per node" in errors[0]


def test_a_killed_daemons_node_is_taken_at_once_by_the_next(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """The server drops a killed daemon's node lock with its connection: the next daemon
    of the node records at once, though the dead one's heartbeat still looks live."""
    url = DbUrl(pg_server.create_db())
    node, n_events = _alpha(tmp_path)
    try:
        with node:
            first = Daemon(node, url, log=tmp_path / "first.log").start()
            first.wait_for(_stored(ALPHA, n_events), timeout=120)
            first.kill()
            with Daemon(node, url, log=tmp_path / "next.log") as following:
                following.wait_for(
                    lambda c: (
                        c.execute(
                            "SELECT d.pid FROM daemon_state AS d JOIN nodes AS n"
                            " ON n.id = d.node_id WHERE n.pubkey = ? AND d.stopped_ns IS NULL",
                            (ALPHA.pubkey,),
                        ).fetchall()
                        == [(following.pid,)]
                    ),
                    timeout=60,
                )
                assert following.stop() == 0, following.log()
    finally:
        pg_server.drop_db(url.secret)


# -- the node's lock when the session holding it goes ----------------------------------


def _lock_holder(server: PgServer, url: DbUrl, pubkey: str | None) -> int | None:
    """The backend pid holding the node's advisory lock (None: the only node's), or None."""
    import psycopg

    from lnflow.store.engines.postgresql import NODE_LOCKS

    with psycopg.connect(_libpq(url)) as conn:
        row = conn.execute(
            "SELECT l.pid FROM pg_locks AS l JOIN nodes AS n ON l.objid = n.id"
            " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objsubid = 2"
            " AND l.granted AND n.pubkey = coalesce(%s, n.pubkey)",
            (NODE_LOCKS, pubkey),
        ).fetchone()
    return None if row is None else int(row[0])


def _count(url: DbUrl) -> int:
    return int(query(url, "SELECT count(*) FROM htlc_events")[0][0])


def _libpq(url: DbUrl) -> str:
    return url.secret.replace("postgresql+psycopg", "postgresql", 1)


def _wait(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_a_node_lock_lost_with_its_session_is_taken_again(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """A terminated backend (an administrator, idle_session_timeout, a network cut)
    drops the node's lock; the daemon takes it again on its next heartbeat and records
    on, so a second daemon of the node is still refused."""
    url = DbUrl(pg_server.create_db())
    node, n_events = _alpha(tmp_path)
    try:
        with (
            node,
            Daemon(node, url, log=tmp_path / "first.log") as first,
        ):
            first.wait_for(_stored(ALPHA, n_events), timeout=120)
            holder = _lock_holder(pg_server, url, ALPHA.pubkey)
            assert holder is not None
            pg_server.admin(f"SELECT pg_terminate_backend({holder})")
            again = _wait(
                "the node's lock taken again",
                lambda: (_lock_holder(pg_server, url, ALPHA.pubkey) or holder) != holder,
            )
            assert again and first.running()
            second = Daemon(node, url, log=tmp_path / "second.log").start()
            _wait("the second daemon refused", lambda: not second.running())
            assert second.stop() != 0
            assert "another lnflowd is recording node alpha" in second.log()
            assert first.events("node_lock_lost") and first.events("node_lock_taken_again")
            assert first.stop() == 0, first.log()
    finally:
        pg_server.drop_db(url.secret)


def test_a_daemon_whose_node_was_taken_while_its_lock_was_lost_stops_in_one_line(
    tmp_path: Path, pg_server: PgServer
) -> None:
    import psycopg

    from lnflow.store.engines.postgresql import NODE_LOCKS

    url = DbUrl(pg_server.create_db())
    node, n_events = _alpha(tmp_path)
    taker = psycopg.connect(_libpq(url), autocommit=True)
    try:
        with (
            node,
            Daemon(node, url, log=tmp_path / "first.log") as first,
        ):
            first.wait_for(_stored(ALPHA, n_events), timeout=120)
            (node_id,) = taker.execute(
                "SELECT id FROM nodes WHERE pubkey = %s", (ALPHA.pubkey,)
            ).fetchone() or (None,)

            def take() -> bool:
                # the lock's session ends; another "daemon" takes the lock before the
                # first one's next heartbeat (it may win the race: then try again)
                holder = _lock_holder(pg_server, url, ALPHA.pubkey)
                if holder is not None:
                    pg_server.admin(f"SELECT pg_terminate_backend({holder})")
                row = taker.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (NODE_LOCKS, node_id)
                ).fetchone()
                return bool(row and row[0])

            _wait("the node's lock taken by another session", take, timeout=30)
            _wait("the first daemon stopped", lambda: not first.running(), timeout=60)
            code = first.stop()
    finally:
        taker.close()
        pg_server.drop_db(url.secret)
    errors = [line for line in first.log().splitlines() if line.startswith("lnflowd: error:")]
    assert code != 0 and len(errors) == 1 and "Traceback" not in first.log(), first.log()
    assert "another lnflowd took node alpha" in errors[0] and "this one stops" in errors[0]


def test_a_server_restart_loses_no_event_and_the_node_stays_locked(tmp_path: Path) -> None:
    """The server restarts under a recording daemon (an upgrade, a reboot): the events
    lnd sent meanwhile are held and written when it is back, the node's lock is held
    again, and the stream is never interrupted."""
    from pgserver import running_server

    log = tmp_path / "sent.jsonl"
    args = ("--rate", "100", "--seed", "7", "--channels", "4", "--event-log", str(log))
    with running_server() as server:
        assert server is not None, "PostgreSQL is not installed"
        url = DbUrl(server.create_db())
        with (
            SimNode(tmp_path / "lnd", args=args) as node,
            Daemon(node, url, log=tmp_path / "d.log") as d,
        ):
            d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] > 200)
            before = _lock_holder(server, url, None)
            assert before is not None
            server.restart()
            _wait(
                "the node's lock held again",
                lambda: (_lock_holder(server, url, None) or before) != before,
            )
            n = _count(url)
            d.wait_for(
                lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] > n + 300
            )
            stop_ns = time.time_ns()
            assert d.stop() == 0, d.log()
        sent, missing = sent_before_but_not_stored(log, stop_ns, url)
        sessions = query(url, "SELECT end_reason FROM stream_sessions")
    assert len(sent) > 500
    assert missing == set()
    assert sessions == [("shutdown",)]  # lnd was there all along: one session
    assert d.events("node_lock_taken_again")


# -- the roles of docs/postgresql.md ----------------------------------------------------


def _roles_sql(database: str) -> str:
    """The docs' roles block as it stands, for a database of another name."""
    doc = (Path(__file__).parent.parent / "docs" / "postgresql.md").read_text()
    block = doc.split("## Roles", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    lines = [
        line for line in block.splitlines() if not line.startswith(("CREATE DATABASE", "\\c "))
    ]
    return "\n".join(lines).replace("DATABASE lnflow ", f"DATABASE {database} ")


def test_the_documented_roles_two_writers_and_a_reader(
    tmp_path: Path, pg_server: PgServer, runs: Runs
) -> None:
    """Two daemons, each with a writer role of its own, record into one database; the
    read-only role reads each node as its run alone and cannot write."""
    import psycopg

    url = DbUrl(pg_server.create_db())
    name = url.secret.rsplit("/", 1)[1]
    pg_server.admin(_roles_sql(name), db=name)
    try:
        role = {
            sim.name: DbUrl(pg_server.url(name, user=f"lnflow_{sim.name}")) for sim in (ALPHA, BETA)
        }
        _record((ALPHA, BETA), tmp_path, url, as_role=role)
        reader = DbUrl(pg_server.url(name, user="lnflow_reader"))
        for sim in (ALPHA, BETA):
            assert _timeless(_analyze(reader, "--node", sim.pubkey)) == _timeless(
                _analyze(runs.sqlite[sim.name])
            )
        with (
            psycopg.connect(_libpq(reader), autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("DELETE FROM htlc_events")
        with psycopg.connect(_libpq(url)) as conn:
            owners = {
                r[0]
                for r in conn.execute(
                    "SELECT tableowner FROM pg_tables WHERE schemaname = current_schema()"
                )
            }
        assert owners == {"lnflow_writer"}
    finally:
        pg_server.drop_db(url.secret)
        pg_server.admin(
            "DROP ROLE IF EXISTS lnflow_alpha, lnflow_beta, lnflow_reader, lnflow_writer"
        )
