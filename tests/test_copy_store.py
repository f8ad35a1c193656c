"""``lnflowd copy-store``: a SQLite store recorded by the real daemon, copied into a
PostgreSQL database migrated by the real revisions, reads the same through lnflowctl;
the row counts, ids and sequences come along, and what must be refused is, in one line."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import Daemon, run_lnflowctl, run_lnflowd
from pgserver import PgServer
from simnode import SimNode
from sqlalchemy import create_engine, text
from test_same_numbers_e2e import CHANNELS, EVENTS, all_recorded

from lnflow.errors import StoreError
from lnflow.store import db
from lnflow.store.engines import DbUrl
from lnflow.store.readonly import SCHEMA_REVISIONS
from lnflow.store.retention import RETAINED, Pruner

# every test here starts a process; a copy and its reads take ~30 s alone, 3-4x that on a
# loaded machine
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]

SECRET = "c0py-Pa55"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store the daemon recorded from the simulated node (events, attempts, clusters,
    rollups, forwards, channel samples, sessions)."""
    tmp = tmp_path_factory.mktemp("rec")
    script: list[dict[str, Any]] = [*CHANNELS, {"op": "wait_subscribers", "count": 1}, *EVENTS]
    store = tmp / "s.db"
    with SimNode(tmp / "lnd", script=script) as sim, Daemon(sim, store) as d:
        d.wait_for(all_recorded, timeout=90)
        assert d.stop() == 0
    return store


@pytest.fixture
def target(pg_server: PgServer) -> Iterator[str]:
    """A new, empty database (no revision yet): copy-store migrates it."""
    url = pg_server.create_db()
    yield url
    pg_server.drop_db(url)


def _copy(source: Path, url: str, *more: str) -> tuple[int, str, str]:
    return run_lnflowd("copy-store", "--from", str(source), "--to", url, *more, timeout=120)


def _tables(conn: Any) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        )
        if name != "alembic_version"
    ]


def _counts_of(engine: Any, tables: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: int(conn.scalar(text(f'SELECT count(*) FROM "{t}"'))) for t in tables}


def _ctl(where: str, *command: str) -> str:
    rc, out, err = run_lnflowctl("--db", where, *command)
    assert rc == 0 and out and not err, (command, err)
    return out


def _timeless(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {
            k: _timeless(v)
            for k, v in doc.items()
            if not (k.endswith(("_at", "_ms")) or k in {"since", "until", "observed_hours"})
        }
    if isinstance(doc, list):
        return [_timeless(v) for v in doc]
    return doc


def test_a_recorded_store_copied_reads_the_same_and_a_second_copy_is_refused(
    recorded: Path, target: str, tmp_path: Path
) -> None:
    rc, out, err = _copy(recorded, target, "--batch-rows", "7")  # several batches a table
    assert rc == 0 and not err, err
    lines = out.splitlines()
    assert any(line.startswith("htlc_events: ") for line in lines), out
    assert lines[-1].startswith("copied "), out

    lite = create_engine(f"sqlite:///file:{recorded}?mode=ro&uri=true")
    pg = db.open_readonly_engine(DbUrl(target))
    try:
        with lite.connect() as conn:
            tables = _tables(conn)
        with pg.connect() as conn:
            revision = conn.scalar(text("SELECT version_num FROM alembic_version"))
            assert revision == SCHEMA_REVISIONS[-1]
        on_lite, on_pg = _counts_of(lite, tables), _counts_of(pg, tables)
        assert on_pg == on_lite
        assert on_lite["htlc_events"] == len(EVENTS) and on_lite["failure_clusters"] > 0
        assert on_lite["failure_channel_weekly"] > 0  # the weekly rollups came along
        # vacuumed and analyzed after the copy, as autovacuum would in time (bench/pg)
        assert any(x.startswith("vacuumed and analyzed in ") for x in lines), out
        # row_counts as the source kept them, equal to the rows (not counted twice)
        sql = "SELECT node_id, table_name, value, n FROM row_counts ORDER BY 1, 2, 3"
        with lite.connect() as a, pg.connect() as b:
            kept = [tuple(r) for r in a.execute(text(sql))]
            assert kept and [tuple(r) for r in b.execute(text(sql))] == kept
            events = b.scalar(
                text("SELECT sum(n) FROM row_counts WHERE table_name = 'htlc_events'")
            )
            assert events == on_pg["htlc_events"]
            # ids preserved
            ids = "SELECT id, kind, timestamp_ns FROM htlc_events ORDER BY id"
            assert [tuple(r) for r in a.execute(text(ids))] == [
                tuple(r) for r in b.execute(text(ids))
            ]
    finally:
        lite.dispose()
        pg.dispose()

    # the analysis, trend and exports read the same, field by field
    doc_pg = json.loads(_ctl(target, "analyze", "--hours", "24", "--json"))
    doc_lite = json.loads(_ctl(str(recorded), "analyze", "--hours", "24", "--json"))
    assert doc_lite["opportunities"]
    assert _timeless(doc_pg) == _timeless(doc_lite)
    chan = str(doc_lite["opportunities"][0]["channel_id"])
    assert _timeless(json.loads(_ctl(target, "trend", chan, "--json"))) == _timeless(
        json.loads(_ctl(str(recorded), "trend", chan, "--json"))
    )
    for what in ("events", "attempts"):
        assert _ctl(target, "export", "--what", what) == _ctl(
            str(recorded), "export", "--what", what
        )

    # the sequences start past the copied ids: a new row takes the next id
    writer = db.open_engine(DbUrl(target))
    try:
        with writer.begin() as conn:
            top = conn.scalar(text("SELECT max(id) FROM stream_sessions"))
            new = conn.scalar(
                text(
                    "INSERT INTO stream_sessions (node_id, started_ns, lnd_version)"
                    " SELECT node_id, 1, 'x' FROM stream_sessions LIMIT 1 RETURNING id"
                )
            )
            assert new == top + 1
            conn.rollback()
    finally:
        writer.dispose()

    rc, out, err = _copy(recorded, target)
    assert rc != 0 and "already holds rows" in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_the_password_never_shows_and_errors_are_one_line(
    recorded: Path, pg_server: PgServer, tmp_path: Path
) -> None:
    url = pg_server.url("lnflow_nosuchdb", password=SECRET)
    rc, _out, err = _copy(recorded, url)
    assert rc != 0 and SECRET not in err and "***" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1

    rc, _out, err = _copy(tmp_path / "none.db", url)
    assert rc != 0 and "no store at" in err and len(err.strip().splitlines()) == 1, err

    rc, _out, err = _copy(recorded, str(tmp_path / "file.db"))
    assert rc != 0 and "no database URL" in err, err


def test_a_source_not_at_the_newest_revision_is_refused(tmp_path: Path, target: str) -> None:
    old = tmp_path / "old.db"
    engine = db.open_engine(old, migrate=False)
    try:
        db.upgrade(engine, old, "0017")
    finally:
        engine.dispose()
    rc, _out, err = _copy(old, target)
    assert rc != 0 and "revision 0017" in err and "start lnflowd" in err, err
    assert len(err.strip().splitlines()) == 1


def _copy_of(store: Path, to: Path) -> Path:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as src, sqlite3.connect(to) as dst:
        src.backup(dst)
    return to


def test_a_failed_copy_leaves_the_target_empty_and_can_run_again(
    recorded: Path, target: str, tmp_path: Path
) -> None:
    store = _copy_of(recorded, tmp_path / "nul.db")
    with sqlite3.connect(store) as conn:  # SQLite keeps a NUL in text; PostgreSQL refuses it
        conn.execute("UPDATE stream_sessions SET end_reason = 'cut' || char(0) || 'off'")
    rc, out, err = _copy(store, target)
    assert rc != 0 and "NUL" in err and "nothing was written" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "htlc_events: " in out  # failed after tables that were copied ...
    engine = db.open_readonly_engine(DbUrl(target))
    try:
        with engine.connect() as conn:  # ... and taken back with the rest
            for table in ("nodes", "htlc_events", "row_counts", "stream_sessions"):
                assert conn.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table
    finally:
        engine.dispose()
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE stream_sessions SET end_reason = 'cut off'")
    rc, out, err = _copy(store, target)
    assert rc == 0 and not err, err


def test_a_source_a_running_daemon_records_into_is_refused(
    recorded: Path, target: str, tmp_path: Path
) -> None:
    store = _copy_of(recorded, tmp_path / "live.db")
    script: list[dict[str, Any]] = [*CHANNELS, {"op": "wait_subscribers", "count": 1}]
    with SimNode(tmp_path / "lnd", script=script) as sim, Daemon(sim, store) as d:
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM stream_sessions").fetchone()[0] == 2)
        rc, _out, err = _copy(store, target)
        assert rc != 0 and f"pid {d.pid}" in err and "stop it first" in err, err
        assert len(err.strip().splitlines()) == 1
        assert d.stop() == 0
    with pytest.raises(StoreError, match="an empty database"):  # the target untouched
        db.open_readonly_engine(DbUrl(target))


def test_the_retention_horizon_comes_along(recorded: Path, target: str, tmp_path: Path) -> None:
    """Retention deleted the recorded attempts: the node's horizon (migration 0023) is
    copied with the rest, so the copy counts the same windows from its rollups."""
    store = _copy_of(recorded, tmp_path / "pruned.db")
    with sqlite3.connect(store) as conn:
        expected = conn.execute(
            "SELECT node_id, max(resolved_ns) FROM forward_attempts GROUP BY node_id"
        ).fetchall()
    engine = db.open_engine(store)
    try:
        keep = {spec.setting: 0 for spec in RETAINED}  # attempts alone expire
        pruner = Pruner(engine, keep | {"attempts_days": 30})
        now = time.time_ns()
        pruner.mark(now)  # every row recorded by now, expired 31 days later
        report = pruner.prune(now + 31 * 86_400 * 10**9, 1000, 100)
        assert report.expired.get("forward_attempts")
    finally:
        engine.dispose()
    sql = "SELECT node_id, deleted_through_ns FROM retention_horizons ORDER BY node_id"
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT count(*) FROM forward_attempts").fetchone() == (0,)
        horizons = conn.execute(sql).fetchall()
    assert horizons == expected and expected[0][1] is not None
    rc, _out, err = _copy(store, target)
    assert rc == 0 and not err, err
    pg = db.open_readonly_engine(DbUrl(target))
    try:
        with pg.connect() as conn:
            assert [tuple(r) for r in conn.execute(text(sql))] == horizons
    finally:
        pg.dispose()


def test_the_failures_with_no_amount_in_the_rollups_come_along(target: str, tmp_path: Path) -> None:
    """The per-channel failure rollups' counts of failures with no amount (0025) are
    copied with the rest: every row of the four levels the same."""
    from test_analysis_queries import NODE, Store
    from test_counts_from_rollups import TTL, record

    from lnflow.store.writer import StoreWriter

    path = tmp_path / "unknown.db"
    engine = db.open_engine(path)
    try:
        writer = StoreWriter(engine)
        store = Store(engine, writer, writer.upsert_node(NODE, 1))
        record(store, Pruner(engine, TTL), days=3, no_channel=0.1)
    finally:
        engine.dispose()
    rc, _out, err = _copy(path, target)
    assert rc == 0 and not err, err
    levels = ("hourly", "6h", "daily", "weekly")
    lite = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    pg = db.open_readonly_engine(DbUrl(target))
    try:
        for level in levels:
            sql = f"SELECT * FROM failure_channel_{level} ORDER BY 1, 2, 3"
            with lite.connect() as a, pg.connect() as b:
                rows = [tuple(r._mapping.items()) for r in a.execute(text(sql))]
                assert rows == [tuple(r._mapping.items()) for r in b.execute(text(sql))]
            total = f"SELECT sum(unknown_amount) FROM failure_channel_{level}"
            with lite.connect() as a:
                assert a.scalar(text(total)) > 0
    finally:
        lite.dispose()
        pg.dispose()
