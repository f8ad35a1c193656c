"""Alembic revisions against real stores.

The whole chain (every revision up, down, up; a filled store down and up again; the
migrated schema against the table definitions; a store too new; the daemon's migration
child) runs on both engines. The tests of one revision's data move (0004 onwards) stay on
SQLite: they write an old revision's rows with the sqlite3 module and check SQLite's own
table rebuilds, ``sqlite_master`` and query plans.
"""

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import STORE_NODE, RealStore
from daemonproc import ATTEMPTS_SCID, EVENTS_SCID, link_fail, query
from sqlalchemy import inspect, text

from lnflow.domain import FailureDetail, ForwardRecord, WireFailure
from lnflow.errors import StoreTooNewError
from lnflow.store import db
from lnflow.store.engines import DbUrl, StoreLocation
from lnflow.store.schema import SCHEMA_REVISIONS, metadata
from lnflow.store.writer import StoreWriter

both_engines = pytest.mark.engines("sqlite", "postgresql")
S = 1_000_000_000


@pytest.fixture
def blank_store(
    tmp_path: Path, store_engine: str, request: pytest.FixtureRequest
) -> Iterator[StoreLocation]:
    """Where an unmigrated store lives: a file not made yet, or an empty database."""
    if store_engine != "postgresql":
        yield tmp_path / "s.db"
        return
    server = request.getfixturevalue("pg_server")
    url = DbUrl(server.create_db())
    yield url
    server.drop_db(url.secret)


def _script() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(db.migrations_dir()))
    return ScriptDirectory.from_config(cfg)


def test_schema_revisions_constant_matches_the_migrations() -> None:
    revs = [r.revision for r in _script().walk_revisions()]
    assert tuple(reversed(revs)) == SCHEMA_REVISIONS


@both_engines
def test_every_revision_upgrades_downgrades_and_upgrades_again(blank_store: StoreLocation) -> None:
    path = blank_store
    engine = db.open_engine(path, migrate=False)
    revisions = list(SCHEMA_REVISIONS)
    for rev in revisions:
        db.upgrade(engine, path, rev)
    for previous in [*reversed(revisions[:-1]), "base"]:
        db.downgrade(engine, previous)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine, path)
    engine.dispose()


# every table a downgrade to 0003 keeps, read back in a stable order: channels as SCIDs
# (0004-0010 move them into channel_refs and back, renumbering the refs)
_KEPT_BY_0003 = {
    "htlc_events": (
        "SELECT session_id, timestamp_ns, kind, incoming_channel_id, incoming_htlc_id,"
        " outgoing_channel_id, outgoing_htlc_id, incoming_amt_msat, outgoing_amt_msat,"
        f" wire_failure, failure_detail FROM {EVENTS_SCID} ORDER BY id"
    ),
    "forward_attempts": (
        "SELECT incoming_channel_id, incoming_htlc_id, outgoing_channel_id, first_seen_ns,"
        " resolved_ns, outcome, failure_class, missed_fee_msat"
        f" FROM {ATTEMPTS_SCID} ORDER BY id"
    ),
    "failure_clusters": (
        "SELECT coalesce(r.chan_id, 0), first_ns, last_ns, members, missed_fee_msat"
        " FROM failure_clusters c LEFT JOIN channel_refs r ON r.id = c.outgoing_chan_ref"
        " ORDER BY c.id"
    ),
    "forwards": (
        "SELECT timestamp_ns, chan_id_in, chan_id_out, amt_in_msat, fee_msat"
        " FROM forwards ORDER BY timestamp_ns"
    ),
    "failure_rollups_hourly": (
        "SELECT hour, outgoing_channel_id, clusters, missed_dedup_msat"
        " FROM failure_rollups_hourly ORDER BY hour, outgoing_channel_id"
    ),
    "failure_channel_daily": (
        "SELECT day, outgoing_channel_id, clusters, missed_dedup_msat, incoming_lo,"
        " incoming_hi FROM failure_channel_daily ORDER BY day, outgoing_channel_id"
    ),
    "failure_channel_weekly": (
        "SELECT week, outgoing_channel_id, clusters, missed_dedup_msat, incoming_lo,"
        " incoming_hi, incoming_many, first_hour, last_hour FROM failure_channel_weekly"
        " ORDER BY week, outgoing_channel_id"
    ),
    "forward_channel_hourly": (
        "SELECT hour, chan_id, forwards_out, fee_out_msat, forwards_in, fee_in_msat"
        " FROM forward_channel_hourly ORDER BY hour, chan_id"
    ),
    "row_counts": (
        "SELECT node_id, table_name, value, n FROM row_counts WHERE n != 0 ORDER BY 1, 2, 3"
    ),
}


@both_engines
def test_a_filled_store_downgrades_and_upgrades_keeping_its_rows(
    store_at: Callable[[str], StoreLocation],
) -> None:
    """A store the writer filled (events, attempts, clusters, the ledger, rollups, counts)
    goes down to 0003 and up again with the same rows, rebuilt where 0004 onwards
    moved or derived them."""
    path = store_at("s.db")
    engine = db.open_engine(path)
    writer = StoreWriter(engine)
    node = writer.upsert_node(STORE_NODE, 1)
    t0 = 480_000 * 3600 * S + 17 * 60 * S
    session = writer.open_session(node, t0, "0.18.3-beta")
    ingestor = RealStore(path, engine, writer, node).ingestor()  # the usual windows
    outs, ins = (11 << 40, (1 << 64) - 3), (21 << 40, 22 << 40, 23 << 40)
    failures = [
        link_fail(
            i,
            t0 + i * 700 * S,
            outs[i % 2],
            ins[i % 3],
            50_000 + i,
            100 + i,
            detail=FailureDetail.INSUFFICIENT_BALANCE if i % 4 else FailureDetail.NO_DETAIL,
            wire=WireFailure.TEMPORARY_CHANNEL_FAILURE if i % 4 else WireFailure.FEE_INSUFFICIENT,
        )
        for i in range(40)
    ]
    for i in range(0, len(failures), 7):
        ingestor.ingest(session, failures[i : i + 7], failures[i : i + 7][-1].timestamp_ns)
    writer.insert_forwards(
        node,
        [
            ForwardRecord(t0 + i * 900 * S, ins[i % 3], outs[i % 2], 1_000 + i, 1_000, i)
            for i in range(30)
        ],
    )
    before = {table: query(path, sql) for table, sql in _KEPT_BY_0003.items()}
    assert all(before.values()), {t: len(rows) for t, rows in before.items()}
    db.downgrade(engine, "0003")
    assert "channel_refs" not in inspect(engine).get_table_names()
    db.upgrade(engine, path)
    assert {table: query(path, sql) for table, sql in _KEPT_BY_0003.items()} == before
    engine.dispose()


@both_engines
def test_migrated_schema_equals_the_table_definitions(
    store_at: Callable[[str], StoreLocation],
) -> None:
    engine = db.open_engine(store_at("s.db"))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_store_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    # SQLite alone: a file's mode, its journal and incremental vacuum
    path = tmp_path / "sub" / "s.db"
    engine = db.open_engine(path)
    engine.dispose()
    assert path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental


@pytest.mark.e2e
@both_engines
def test_store_newer_than_the_code_is_refused(store_at: Callable[[str], StoreLocation]) -> None:
    path = store_at("s.db")
    engine = db.open_engine(path)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    engine.dispose()
    with pytest.raises(StoreTooNewError, match="newer than this lnflow"):
        db.open_engine(path)
    with pytest.raises(StoreTooNewError):
        db.open_readonly_engine(path)
    where = path.secret if isinstance(path, DbUrl) else str(path)
    out = subprocess.run(
        [sys.executable, "-m", "lnflow.cli.ctl", "--db", where, "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert out.stderr.count("\n") == 1 and "upgrade lnflow" in out.stderr
    assert "Traceback" not in out.stderr


def test_0004_moves_event_channels_to_refs_and_back(tmp_path: Path) -> None:
    """Upgrading an 0003 store keeps every event column, ids and order; downgrading too."""
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0003")
    big = (1 << 64) - (5 << 40)  # a SCID above 2**63, stored signed
    signed_big = big - (1 << 64)
    columns = (
        "id, node_id, session_id, timestamp_ns, kind, event_type, incoming_channel_id,"
        " incoming_htlc_id, outgoing_channel_id, outgoing_htlc_id, incoming_amt_msat,"
        " outgoing_amt_msat, incoming_timelock, outgoing_timelock, wire_failure,"
        " failure_detail, failure_string, settled, offchain"
    )
    rows = [
        (
            7,
            1,
            1,
            100,
            1,
            3,
            111 << 40,
            5,
            signed_big,
            6,
            1001,
            1000,
            80,
            40,
            None,
            None,
            None,
            None,
            None,
        ),
        (
            9,
            1,
            1,
            101,
            4,
            3,
            111 << 40,
            6,
            222 << 40,
            0,
            2001,
            2000,
            None,
            None,
            15,
            5,
            "x",
            None,
            None,
        ),
        (12, 1, 2, 102, 5, 1, 0, 0, signed_big, 9, None, None, None, None, None, None, None, 1, 1),
        (13, 2, 3, 103, 1, 3, 111 << 40, 5, 222 << 40, 6, 1, 1, 1, 1, None, None, None, None, None),
    ]
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO nodes VALUES (1, 'a', '', '', 0), (2, 'b', '', '', 0)")
        conn.executemany(
            f"INSERT INTO htlc_events ({columns}) VALUES ({', '.join('?' * 19)})", rows
        )
    db.upgrade(engine, path)
    with sqlite3.connect(path) as conn:
        # refs per node; 0 (no channel) has none
        refs = conn.execute("SELECT node_id, chan_id FROM channel_refs ORDER BY id").fetchall()
        assert refs == [
            (1, signed_big),
            (1, 111 << 40),
            (1, 222 << 40),
            (2, 111 << 40),
            (2, 222 << 40),
        ]
        assert max(
            conn.execute(
                "SELECT max(incoming_chan_ref), max(outgoing_chan_ref) FROM htlc_events"
            ).fetchone()
        ) <= len(refs)
        back = conn.execute(f"SELECT {columns} FROM {EVENTS_SCID} ORDER BY id").fetchall()
        assert back == rows
        # the key still refuses a replay
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO htlc_events (node_id, session_id, timestamp_ns, kind, event_type,"
                " incoming_chan_ref, incoming_htlc_id, outgoing_chan_ref, outgoing_htlc_id)"
                " SELECT node_id, 9, 999, kind, event_type, incoming_chan_ref,"
                " incoming_htlc_id, outgoing_chan_ref, outgoing_htlc_id FROM htlc_events"
                " WHERE id = 9"
            )
    db.downgrade(engine, "0003")
    with sqlite3.connect(path) as conn:
        assert conn.execute(f"SELECT {columns} FROM htlc_events ORDER BY id").fetchall() == rows
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "channel_refs" not in tables and "htlc_events_new" not in tables
    engine.dispose()


def test_0009_moves_attempt_channels_to_refs_and_back(tmp_path: Path) -> None:
    """Upgrading an 0008 store keeps every attempt column, ids and order, and numbers the
    channels only attempts name; downgrading puts the SCIDs and indexes back."""
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0008")
    signed_big = (1 << 64) - (5 << 40) - (1 << 64)  # a SCID above 2**63, stored signed
    a, b, c = 111 << 40, 222 << 40, 333 << 40
    columns = (
        "id, node_id, incoming_channel_id, incoming_htlc_id, outgoing_channel_id,"
        " outgoing_htlc_id, first_seen_ns, resolved_ns, incoming_amt_msat, outgoing_amt_msat,"
        " outcome, failure_class, wire_failure, failure_detail, missed_fee_msat,"
        " final_settled, cluster_id"
    )
    rows = [
        (4, 1, a, 5, b, 6, 100, 150, 1001, 1000, 1, None, None, None, 0, 1, None),
        (6, 1, a, 6, signed_big, 0, 101, 160, 2001, 2000, 2, 1, 15, 5, 20, 0, 3),
        (7, 1, c, 9, 0, 0, 102, None, None, None, 0, None, None, None, 0, None, None),
        (9, 2, a, 5, b, 6, 103, 170, 1, 1, 2, 3, 12, 0, 1, 0, 4),
    ]
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO nodes VALUES (1, 'a', '', '', 0), (2, 'b', '', '', 0)")
        # node 1's events named a and b already
        conn.execute(
            "INSERT INTO channel_refs (id, node_id, chan_id) VALUES (1, 1, ?), (2, 1, ?)", (b, a)
        )
        conn.executemany(
            f"INSERT INTO forward_attempts ({columns}) VALUES ({', '.join('?' * 17)})", rows
        )
    db.upgrade(engine, path)
    with sqlite3.connect(path) as conn:
        refs = conn.execute("SELECT id, node_id, chan_id FROM channel_refs ORDER BY id").fetchall()
        # existing refs kept; new ones per node for the SCIDs only attempts name; 0 has none
        assert refs == [
            (1, 1, b),
            (2, 1, a),
            (3, 1, signed_big),
            (4, 1, c),
            (5, 2, a),
            (6, 2, b),
        ]
        stored = conn.execute(
            "SELECT incoming_chan_ref, outgoing_chan_ref FROM forward_attempts ORDER BY id"
        ).fetchall()
        assert stored == [(2, 1), (2, 3), (4, 0), (5, 6)]
        back = conn.execute(f"SELECT {columns} FROM {ATTEMPTS_SCID} ORDER BY id").fetchall()
        assert back == rows
        # the key still refuses a second attempt of the same incoming circuit
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO forward_attempts (node_id, incoming_chan_ref, incoming_htlc_id,"
                " outgoing_chan_ref, outgoing_htlc_id, first_seen_ns, outcome, missed_fee_msat)"
                " VALUES (1, 2, 6, 0, 0, 200, 0, 0)"
            )
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT missed_fee_msat FROM forward_attempts"
            " WHERE outgoing_chan_ref = 3 AND failure_class = 1 AND resolved_ns >= 0"
            " AND resolved_ns < 999 AND outcome = 2"
        ).fetchall()
        assert "COVERING INDEX ix_forward_attempts_local (outgoing_chan_ref=?" in plan[0][3]
    db.downgrade(engine, "0008")
    with sqlite3.connect(path) as conn:
        assert (
            conn.execute(f"SELECT {columns} FROM forward_attempts ORDER BY id").fetchall() == rows
        )
        indexes = dict(
            conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                " AND tbl_name = 'forward_attempts' AND sql IS NOT NULL"
            ).fetchall()
        )
        assert set(indexes) == {"ix_forward_attempts_local", "ix_forward_attempts_local_amount"}
        assert all("(outgoing_channel_id, failure_class" in sql for sql in indexes.values())
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "forward_attempts_new" not in tables
        assert len(conn.execute("SELECT id FROM channel_refs").fetchall()) == 6
    db.upgrade(engine, path)  # and up again: the refs are found, not numbered twice
    with sqlite3.connect(path) as conn:
        assert len(conn.execute("SELECT id FROM channel_refs").fetchall()) == 6
        assert conn.execute(f"SELECT {columns} FROM {ATTEMPTS_SCID} ORDER BY id").fetchall() == rows
    engine.dispose()


def test_0010_moves_cluster_channels_to_refs_and_back(tmp_path: Path) -> None:
    """Upgrading an 0009 store keeps every cluster column and id, numbering the channels
    only clusters name; downgrading puts the SCIDs back."""
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0009")
    signed_big = (1 << 64) - (5 << 40) - (1 << 64)  # a SCID above 2**63, stored signed
    a, b = 111 << 40, 222 << 40
    columns = "id, node_id, outgoing_channel_id, first_ns, last_ns, members, missed_fee_msat"
    rows = [
        (3, 1, a, 100, 150, 1, 20),
        (5, 1, signed_big, 101, 160, 4, 1_000_000_000),
        (8, 1, a, 102, 102, 2, 0),
        (9, 2, b, 103, 170, 1, 1),
        (10, 2, 0, 104, 104, 1, 0),  # lnd named no outgoing channel
    ]
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO nodes VALUES (1, 'a', '', '', 0), (2, 'b', '', '', 0)")
        conn.execute("INSERT INTO channel_refs (id, node_id, chan_id) VALUES (1, 1, ?)", (a,))
        conn.executemany(f"INSERT INTO failure_clusters ({columns}) VALUES (?,?,?,?,?,?,?)", rows)
    db.upgrade(engine, path, "0010")
    scids = (
        "SELECT c.id, c.node_id, coalesce(r.chan_id, 0), first_ns, last_ns, members,"
        " missed_fee_msat FROM failure_clusters c"
        " LEFT JOIN channel_refs r ON r.id = c.outgoing_chan_ref ORDER BY c.id"
    )
    with sqlite3.connect(path) as conn:
        refs = conn.execute("SELECT id, node_id, chan_id FROM channel_refs ORDER BY id").fetchall()
        assert refs == [(1, 1, a), (2, 1, signed_big), (3, 2, b)]
        assert conn.execute(
            "SELECT outgoing_chan_ref FROM failure_clusters ORDER BY id"
        ).fetchall() == [(1,), (2,), (1,), (3,), (0,)]
        assert conn.execute(scids).fetchall() == rows
    db.downgrade(engine, "0009")
    with sqlite3.connect(path) as conn:
        assert (
            conn.execute(f"SELECT {columns} FROM failure_clusters ORDER BY id").fetchall() == rows
        )
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "failure_clusters_new" not in tables
    db.upgrade(engine, path)
    with sqlite3.connect(path) as conn:
        assert len(conn.execute("SELECT id FROM channel_refs").fetchall()) == 3
        assert conn.execute(scids).fetchall() == rows
    engine.dispose()


@pytest.mark.e2e
@both_engines
def test_daemon_migrates_a_new_store_in_a_child_process(blank_store: StoreLocation) -> None:
    path = blank_store
    engine = db.open_engine(path, migrate_in_child=True)
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    assert revision == SCHEMA_REVISIONS[-1]
    db.open_engine(path, migrate_in_child=True).dispose()  # at the newest: no child


def test_0011_bounds_each_failure_hour_by_its_attempts_and_drops_them_again(
    tmp_path: Path,
) -> None:
    """Upgrading an 0010 store gives each per-channel failure hour its first and last
    failure from the attempts where they still hold all the row counts; any other row
    gets the hour's own bounds. Downgrading drops the columns, the rows stay."""
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0010")
    hour = 3600 * 10**9
    a, b, c = 111 << 40, 222 << 40, 333 << 40
    h0 = 500_000
    attempts = [  # (htlc, out ref, class, resolved_ns, outcome)
        (1, 1, 1, h0 * hour + 10, 2),
        (2, 1, 3, h0 * hour + 900, 2),
        (3, 1, 1, h0 * hour + 500, 2),
        (4, 1, 1, h0 * hour + 2_000, 3),  # failed downstream: not a local failure
        (5, 1, 1, (h0 + 1) * hour + 7, 2),
        (6, 2, 1, h0 * hour + 30, 2),  # b's row counts 2 failures: one was pruned
    ]
    columns = "node_id, hour, outgoing_channel_id, liquidity_failures, fee_failures"
    rollups = [(1, h0, a, 2, 1), (1, h0 + 1, a, 1, 0), (1, h0, b, 2, 0), (1, h0, c, 1, 0)]
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO nodes VALUES (1, 'a', '', '', 0)")
        conn.executemany(
            "INSERT INTO channel_refs (id, node_id, chan_id) VALUES (?, 1, ?)",
            [(1, a), (2, b), (3, c), (4, 444 << 40)],
        )
        conn.executemany(
            "INSERT INTO forward_attempts (node_id, incoming_chan_ref, incoming_htlc_id,"
            " outgoing_chan_ref, outgoing_htlc_id, first_seen_ns, resolved_ns, outcome,"
            " failure_class, missed_fee_msat) VALUES (1, 4, ?, ?, 0, 0, ?, ?, ?, 0)",
            [(htlc, out, ts, outcome, cls) for htlc, out, cls, ts, outcome in attempts],
        )
        zero = ", ".join(
            f"{label}_{what}"
            for label in ("max_htlc", "availability", "policy", "other")
            for what in ("failures", "missed_msat")
        )
        conn.executemany(
            f"INSERT INTO failure_channel_hourly ({columns}, clusters, missed_dedup_msat,"
            f" liquidity_missed_msat, fee_missed_msat, {zero}, incoming_lo, incoming_hi,"
            f" incoming_many) VALUES (?, ?, ?, ?, ?, 0, 0, 0, 0, {', '.join('0' * 8)}, 4, 4, 0)",
            rollups,
        )
    db.upgrade(engine, path, "0011")
    bounds = (
        "SELECT hour, outgoing_channel_id, first_ns, last_ns FROM failure_channel_hourly"
        " ORDER BY outgoing_channel_id, hour"
    )
    with sqlite3.connect(path) as conn:
        assert conn.execute(bounds).fetchall() == [
            (h0, a, h0 * hour + 10, h0 * hour + 900),
            (h0 + 1, a, (h0 + 1) * hour + 7, (h0 + 1) * hour + 7),
            (h0, b, h0 * hour, (h0 + 1) * hour - 1),  # the attempts lack one failure
            (h0, c, h0 * hour, (h0 + 1) * hour - 1),  # no attempts left
        ]
    db.downgrade(engine, "0010")
    with sqlite3.connect(path) as conn:
        names = [r[1] for r in conn.execute("PRAGMA table_info(failure_channel_hourly)")]
        assert "first_ns" not in names and "last_ns" not in names
        assert conn.execute(f"SELECT {columns} FROM failure_channel_hourly").fetchall() == sorted(
            rollups, key=lambda r: (r[1], r[2])
        )
    engine.dispose()


def test_0013_keeps_every_own_payment_first_hop_failure(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0011")
    row = (
        "INSERT INTO htlc_events (node_id, session_id, timestamp_ns, kind, event_type,"
        " incoming_chan_ref, incoming_htlc_id, outgoing_chan_ref, outgoing_htlc_id)"
        " VALUES (1, 1, ?, ?, ?, 0, 0, 5, 0)"
    )
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO nodes (id, pubkey, alias, network, first_seen_ns)"
            " VALUES (1, 'p', '', '', 0)"
        )
        conn.execute(row, (10, 4, 1))  # a SEND link fail, as 0011 stored it
    db.upgrade(engine, path, "0013")
    with sqlite3.connect(path) as conn:
        conn.execute(row, (11, 4, 1))  # a second payment failing at the same first hop
        conn.execute(
            "INSERT OR IGNORE INTO htlc_events (node_id, session_id, timestamp_ns, kind,"
            " event_type, incoming_chan_ref, incoming_htlc_id, outgoing_chan_ref,"
            " outgoing_htlc_id) VALUES (1, 1, 11, 4, 1, 0, 0, 5, 0)"
        )  # its replay
        conn.execute(row, (12, 2, 3))  # a forward-fail...
        conn.execute(
            "INSERT OR IGNORE INTO htlc_events (node_id, session_id, timestamp_ns, kind,"
            " event_type, incoming_chan_ref, incoming_htlc_id, outgoing_chan_ref,"
            " outgoing_htlc_id) VALUES (1, 1, 13, 2, 3, 0, 0, 5, 0)"
        )  # ...and its replay with a later time: still one row
        assert conn.execute("SELECT timestamp_ns FROM htlc_events ORDER BY id").fetchall() == [
            (10,),
            (11,),
            (12,),
        ]
    db.downgrade(engine, "0011")  # the old key again: the first of each key stays
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT timestamp_ns FROM htlc_events ORDER BY id").fetchall() == [
            (10,),
            (12,),
        ]


def test_0014_adds_inbound_fees_and_the_raw_node_total_and_drops_them_again(
    tmp_path: Path,
) -> None:
    """Upgrading a filled 0011 store keeps its samples (no inbound fee known: NULL) and
    gives each saved run's raw node total its deduplicated one; downgrading drops both."""
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0011")
    sample = (1, 111 << 40, 5, 1_000_000, 400_000, 580_000, 10_000, 10_000, 1, 0, 0, 1_000, 200)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO nodes VALUES (1, 'a', '', '', 0)")
        conn.execute(
            "INSERT INTO channel_samples (node_id, chan_id, ts_ns, capacity_sat,"
            " local_balance_sat, remote_balance_sat, local_reserve_sat, remote_reserve_sat,"
            " active, uptime_s, lifetime_s, fee_base_msat, fee_rate_ppm)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            sample,
        )
        conn.execute(
            "INSERT INTO analysis_runs (node_id, generated_ns, since_ns, until_ns, hours,"
            " duration_ms, opportunities, node_failures, node_missed_msat)"
            " VALUES (1, 9, 0, 9, 24, 5, 0, 12, 34567)"
        )
    db.upgrade(engine, path, "0014")
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT fee_rate_ppm, inbound_fee_base_msat, inbound_fee_rate_ppm FROM channel_samples"
        ).fetchall() == [(200, None, None)]
        assert conn.execute(
            "SELECT node_missed_msat, node_missed_raw_msat FROM analysis_runs"
        ).fetchall() == [(34567, 34567)]
    db.downgrade(engine, "0011")
    with sqlite3.connect(path) as conn:
        names = [r[1] for r in conn.execute("PRAGMA table_info(channel_samples)")]
        assert not {"inbound_fee_base_msat", "inbound_fee_rate_ppm"} & set(names)
        names = [r[1] for r in conn.execute("PRAGMA table_info(analysis_runs)")]
        assert "node_missed_raw_msat" not in names
        assert conn.execute("SELECT count(*) FROM channel_samples").fetchone() == (1,)
    db.upgrade(engine, path)
    engine.dispose()


def test_0016_adds_the_alert_tables_and_daemon_columns_and_drops_them_again(
    tmp_path: Path,
) -> None:
    """Upgrading keeps the daemon's row (new columns NULL); downgrading drops the alert
    tables and the columns and keeps the row."""
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0015")
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO nodes VALUES (1, 'a', '', '', 0)")
        conn.execute(
            "INSERT INTO daemon_state (id, pid, started_ns, heartbeat_ns, heartbeat_interval_s,"
            " lnd_state, stream_state) VALUES (1, 7, 1, 2, 5, 'connected', 'connected')"
        )
    db.upgrade(engine, path, "0016")
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT pid, metrics_listen, alert_targets FROM daemon_state"
        ).fetchall() == [(7, None, None)]
        conn.execute(
            "INSERT INTO alerts (node_id, fired_ns, kind, phase, subject, title, message,"
            " detail) VALUES (1, 5, 'stream_down', 'start', '', 't', 'm', '{}')"
        )
        conn.execute(
            "INSERT INTO alert_deliveries (node_id, alert_id, target, done_ns, ok, attempts)"
            " VALUES (1, 1, 'phone', 6, 1, 1)"
        )
    db.downgrade(engine, "0015")
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert not {"alerts", "alert_deliveries"} & tables
        names = [r[1] for r in conn.execute("PRAGMA table_info(daemon_state)")]
        assert not {"metrics_listen", "alert_targets"} & set(names)
        assert conn.execute("SELECT pid FROM daemon_state").fetchall() == [(7,)]
    db.upgrade(engine, path)
    engine.dispose()


def test_0017_adds_the_policy_history_and_drops_it_again(tmp_path: Path) -> None:
    """A filled 0016 store gains an empty policy_changes table that takes a row with
    only its required columns (the effects come later); downgrading drops it alone."""
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0016")
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO nodes VALUES (1, 'a', '', '', 0)")
    db.upgrade(engine, path, "0017")
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO policy_changes (node_id, run_id, created_ns, chan_id, section,"
            " strategy, before_fee_ppm, after_fee_ppm, reason, result)"
            " VALUES (1, 1, 5, 42, 'lower', 'opportunity', 1000, 750, 'r', 'planned')"
        )
        assert conn.execute(
            "SELECT before_fee_ppm, after_fee_ppm, after_base_fee_msat, forwards_before"
            " FROM policy_changes"
        ).fetchall() == [(1000, 750, None, None)]
    db.downgrade(engine, "0016")
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "policy_changes" not in tables
        assert conn.execute("SELECT count(*) FROM nodes").fetchone() == (1,)
    db.upgrade(engine, path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM policy_changes").fetchone() == (0,)
    engine.dispose()


def test_0018_counts_the_rows_already_stored_and_keeps_counting(tmp_path: Path) -> None:
    """Upgrading a filled 0017 store counts its rows; the triggers then follow the
    attempts' outcomes, the ledger and deletes; downgrading drops table and triggers."""
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0017")
    event = (
        "INSERT INTO htlc_events (node_id, session_id, timestamp_ns, kind, event_type,"
        " incoming_chan_ref, incoming_htlc_id, outgoing_chan_ref, outgoing_htlc_id)"
        " VALUES (1, 1, ?, ?, 7, 1, ?, 2, ?)"
    )
    attempt = (
        "INSERT INTO forward_attempts (node_id, incoming_chan_ref, incoming_htlc_id,"
        " outgoing_chan_ref, outgoing_htlc_id, first_seen_ns, outcome, missed_fee_msat)"
        " VALUES (1, 1, ?, 2, ?, 5, ?, 0)"
    )
    forward = (
        "INSERT INTO forwards (node_id, timestamp_ns, chan_id_in, chan_id_out, amt_in_msat,"
        " amt_out_msat, fee_msat) VALUES (1, ?, 1, 2, 1001, 1000, 1)"
    )
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO nodes VALUES (1, 'a', '', '', 0)")
        conn.executemany(event, [(i, 1 + i % 3, i, i) for i in range(7)])
        conn.executemany(attempt, [(i, i, i % 2) for i in range(5)])
        conn.executemany(forward, [(i,) for i in range(4)])
    db.upgrade(engine, path, "0018")

    def counts() -> dict[tuple[str, int], int]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT table_name, value, n FROM row_counts WHERE n != 0")
            return {(t, v): n for t, v, n in rows}

    assert counts() == {
        ("htlc_events", 1): 3,
        ("htlc_events", 2): 2,
        ("htlc_events", 3): 2,
        ("forward_attempts", 0): 3,
        ("forward_attempts", 1): 2,
        ("forwards", 0): 4,
    }
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE forward_attempts SET outcome = 2 WHERE incoming_htlc_id < 2")
        conn.execute("UPDATE forward_attempts SET outcome = 1, resolved_ns = 9")  # 2 unchanged
        conn.execute("DELETE FROM forward_attempts WHERE incoming_htlc_id = 4")
        conn.execute("DELETE FROM htlc_events WHERE kind = 2")
        conn.execute(forward, (10,))
        conn.execute("DELETE FROM forwards WHERE timestamp_ns = 0")
    assert counts() == {
        ("htlc_events", 1): 3,
        ("htlc_events", 3): 2,
        ("forward_attempts", 1): 4,
        ("forwards", 0): 4,
    }
    db.downgrade(engine, "0017")
    with sqlite3.connect(path) as conn:
        names = set(conn.execute("SELECT name FROM sqlite_master").fetchall())
        assert not {n for (n,) in names if n.startswith("row_counts")}
        conn.execute("DELETE FROM forward_attempts")  # no trigger left to fire
    db.upgrade(engine, path)
    assert counts() == {("htlc_events", 1): 3, ("htlc_events", 3): 2, ("forwards", 0): 4}
    engine.dispose()


def test_0019_counts_the_rows_of_each_node_and_sums_them_again(tmp_path: Path) -> None:
    """Upgrading a filled 0018 store of two nodes counts each node's rows; the triggers then
    count each row for its node; downgrading keeps the store's totals."""
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0018")
    event = (
        "INSERT INTO htlc_events (node_id, session_id, timestamp_ns, kind, event_type,"
        " incoming_chan_ref, incoming_htlc_id, outgoing_chan_ref, outgoing_htlc_id)"
        " VALUES (?, 1, ?, 1, 7, 1, ?, 2, ?)"
    )
    attempt = (
        "INSERT INTO forward_attempts (node_id, incoming_chan_ref, incoming_htlc_id,"
        " outgoing_chan_ref, outgoing_htlc_id, first_seen_ns, outcome, missed_fee_msat)"
        " VALUES (?, 1, ?, 2, ?, 5, 0, 0)"
    )
    forward = (
        "INSERT INTO forwards (node_id, timestamp_ns, chan_id_in, chan_id_out, amt_in_msat,"
        " amt_out_msat, fee_msat) VALUES (?, ?, 1, 2, 1001, 1000, 1)"
    )
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO nodes VALUES (1, 'a', '', '', 0), (2, 'b', '', '', 0)")
        conn.executemany(event, [(1 + i % 2, i, i, i) for i in range(5)])  # 3 of 1, 2 of 2
        conn.executemany(attempt, [(2, i, i) for i in range(4)])
        conn.executemany(forward, [(1, i) for i in range(3)])
        # counted by 0018's triggers, store-wide (the events' inserts by the ingest)
        assert conn.execute("SELECT * FROM row_counts ORDER BY 1, 2").fetchall() == [
            ("forward_attempts", 0, 4),
            ("forwards", 0, 3),
        ]
    db.upgrade(engine, path, "0019")

    def counts() -> dict[tuple[int, str, int], int]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT node_id, table_name, value, n FROM row_counts WHERE n")
            return {(node, t, v): n for node, t, v, n in rows}

    assert counts() == {
        (1, "htlc_events", 1): 3,
        (2, "htlc_events", 1): 2,
        (2, "forward_attempts", 0): 4,
        (1, "forwards", 0): 3,
    }
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE forward_attempts SET outcome = 1 WHERE incoming_htlc_id < 1")
        conn.execute("DELETE FROM htlc_events WHERE node_id = 2 AND timestamp_ns = 1")
        conn.execute(attempt, (1, 9, 9))
        conn.execute("DELETE FROM forwards WHERE timestamp_ns = 0")
    after = {
        (1, "htlc_events", 1): 3,
        (2, "htlc_events", 1): 1,
        (2, "forward_attempts", 0): 3,
        (2, "forward_attempts", 1): 1,
        (1, "forward_attempts", 0): 1,
        (1, "forwards", 0): 2,
    }
    assert counts() == after
    db.downgrade(engine, "0018")
    with sqlite3.connect(path) as conn:
        totals = dict(
            ((t, v), n)
            for t, v, n in conn.execute("SELECT table_name, value, n FROM row_counts WHERE n")
        )
        assert totals == {
            ("htlc_events", 1): 4,
            ("forward_attempts", 0): 4,
            ("forward_attempts", 1): 1,
            ("forwards", 0): 2,
        }
        conn.execute(forward, (1, 50))  # 0018's trigger counts it store-wide again
        assert conn.execute(
            "SELECT n FROM row_counts WHERE table_name = 'forwards'"
        ).fetchall() == [(3,)]
    db.upgrade(engine, path)
    assert counts() == {**after, (1, "forwards", 0): 3}
    engine.dispose()


def test_0023_starts_each_nodes_retention_horizon_at_its_newest_failure(tmp_path: Path) -> None:
    """What retention deleted before 0023 is known nowhere: each node's horizon starts at
    the newest failure its attempts or failure rollups still know (a node with neither
    gets no row); downgrading drops the table, upgrading again fills it again."""
    from lnflow.store.rollups import CLASS_COLUMNS

    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0022")
    h = 3_600 * S
    attempt = (
        "INSERT INTO forward_attempts (node_id, incoming_chan_ref, incoming_htlc_id,"
        " outgoing_chan_ref, outgoing_htlc_id, first_seen_ns, resolved_ns, outcome,"
        " missed_fee_msat) VALUES (?, 1, ?, 2, 0, ?, ?, 2, 0)"
    )
    counters = ", ".join(c for pair in CLASS_COLUMNS for c in pair)
    zeros = ", ".join("0" for pair in CLASS_COLUMNS for _ in pair)

    def rollup(table: str, period: str, extra: str, values: str) -> str:
        return (
            f"INSERT INTO {table} (node_id, {period}, outgoing_channel_id, clusters,"
            f" missed_dedup_msat, {counters}, incoming_lo, incoming_hi, incoming_many, {extra})"
            f" VALUES (?, ?, 7, 1, 0, {zeros}, 1, 1, 0, {values})"
        )

    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO nodes VALUES (1, 'a', '', '', 0), (2, 'b', '', '', 0),"
            " (3, 'c', '', '', 0), (4, 'd', '', '', 0)"
        )
        conn.execute("INSERT INTO channel_refs (id, node_id, chan_id) VALUES (1, 1, 11), (2, 1, 7)")
        # node 1: its newest attempt resolved after its newest hourly rollup's failure
        conn.executemany(attempt, [(1, 1, 10 * h, 10 * h + 5), (1, 2, 11 * h, 11 * h + 9)])
        conn.execute(
            rollup("failure_channel_hourly", "hour", "first_ns, last_ns", "?, ?"),
            (1, 11, 11 * h + 1, 11 * h + 2),
        )
        # node 2: its raw rows gone, a day of rollups left (failures up to its hour 30)
        conn.execute(
            rollup("failure_channel_daily", "day", "first_hour, last_hour", "?, ?"),
            (2, 1, 25, 30),
        )
        conn.executemany(attempt, [(2, 3, 2 * h, None)])  # pending: no time
        # node 3: the hourly failure rollup of hour 40; node 4: nothing
        conn.execute(
            "INSERT INTO failure_rollups_hourly (node_id, hour, outgoing_channel_id,"
            " incoming_channel_id, failure_class, failures, clusters, missed_raw_msat,"
            " missed_dedup_msat) VALUES (3, 40, 7, 11, 1, 1, 1, 0, 0)"
        )

    def horizons() -> list[tuple[int, int]]:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT * FROM retention_horizons ORDER BY node_id").fetchall()

    expected = [(1, 11 * h + 9), (2, 31 * h - 1), (3, 41 * h - 1)]
    db.upgrade(engine, path, "0023")
    assert horizons() == expected
    db.downgrade(engine, "0022")
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert "retention_horizons" not in tables
    db.upgrade(engine, path, "0023")
    assert horizons() == expected
    engine.dispose()
