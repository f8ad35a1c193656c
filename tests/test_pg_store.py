"""A PostgreSQL store opened from a URL: the one-line errors of a connection that
cannot be made, the password kept out of every message, and the schema's migrations
both ways on a filled database."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import STORE_NODE, RealStore, StoreAt
from daemonproc import EVENTS_SCID, link_fail, run_lnflowctl, run_lnflowd
from pgserver import PASSWORD_ROLE, PgServer
from sqlalchemy import text

from lnflow.domain import ChannelInfo, ChannelSample, RoutingPolicy
from lnflow.errors import StoreError
from lnflow.store import db
from lnflow.store.engines import DbUrl, is_url, location
from lnflow.store.readonly import SCHEMA_REVISIONS
from lnflow.store.writer import StoreWriter

SECRET = "s3cr3t-Pa55"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("db_text", "is_a_url"),
    [
        ("postgresql+psycopg://u@h/d", True),
        ("postgresql://u@h/d", True),
        ("/var/lib/lnflow/lnflow.db", False),
        ("lnflow.db", False),
        ("C:relative:name.db", False),
    ],
)
def test_a_url_names_a_server_anything_else_a_file(db_text: str, is_a_url: bool) -> None:
    assert is_url(db_text) is is_a_url


def test_the_url_prints_with_its_password_masked() -> None:
    url = location(f"postgresql://lnflow:{SECRET}@db.example:5433/lnflow", default=None)  # type: ignore[arg-type]
    assert isinstance(url, DbUrl)
    assert SECRET not in str(url) and SECRET not in repr(url) and SECRET not in f"{url}"
    assert str(url) == "postgresql+psycopg://lnflow:***@db.example:5433/lnflow"
    assert SECRET in url.secret


@pytest.mark.parametrize(
    ("db_text", "wanted"),
    [
        ("postgresql+psycopg://u:pw@h:notaport/d", "malformed database URL"),
        ("postgresql+psycopg://u@h", "names no database"),
        ("mysql://u@h/d", "unsupported database URL scheme"),
    ],
)
def test_a_bad_url_is_one_line_naming_the_form(db_text: str, wanted: str) -> None:
    with pytest.raises(StoreError) as err:
        DbUrl(db_text)
    msg = str(err.value)
    assert wanted in msg and "\n" not in msg and "pw" not in msg.split("://")[0]
    assert "postgresql+psycopg://" in msg or "file path" in msg


@pytest.mark.engines("postgresql")
def test_a_refused_password_is_one_line_without_the_password(
    store_engine: str, pg_server: PgServer
) -> None:
    pg_server.admin(
        f"DO $$ BEGIN CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right';"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    url = DbUrl(pg_server.url("postgres", user=PASSWORD_ROLE, password=SECRET))
    with pytest.raises(StoreError) as err:
        db.open_engine(url)
    msg = str(err.value)
    assert "refused the password" in msg and "PGPASSFILE" in msg, msg
    assert SECRET not in msg and "\n" not in msg
    assert err.value.__cause__ is None  # not chained: no driver text with the URL in it


@pytest.mark.engines("postgresql")
def test_the_password_from_the_environment_is_used(
    store_engine: str, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_server.admin(
        f"DO $$ BEGIN CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right';"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    monkeypatch.setenv("PGPASSWORD", "right")
    engine = db.open_engine(DbUrl(pg_server.url("postgres", user=PASSWORD_ROLE)), migrate=False)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT current_user")) == PASSWORD_ROLE
    finally:
        engine.dispose()


def test_an_unreachable_server_is_one_line_naming_the_fix() -> None:
    url = DbUrl(f"postgresql+psycopg://lnflow:{SECRET}@127.0.0.1:{_free_port()}/lnflow")
    with pytest.raises(StoreError) as err:
        db.open_engine(url)
    msg = str(err.value)
    assert "cannot reach the PostgreSQL server" in msg and "host and port" in msg, msg
    assert SECRET not in msg and "\n" not in msg


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # psycopg installed here: the import of a missing package is what fails without it
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError) as err:
        db.open_engine(DbUrl("postgresql+psycopg://lnflow@127.0.0.1/lnflow"))
    assert "pip install 'lnflow[postgresql]'" in str(err.value)


@pytest.mark.engines("postgresql")
def test_a_missing_database_names_createdb(store_engine: str, pg_server: PgServer) -> None:
    with pytest.raises(StoreError) as err:
        db.open_engine(DbUrl(pg_server.url("no_such_db")))
    assert "does not exist" in str(err.value) and "createdb" in str(err.value)


@pytest.mark.engines("postgresql")
def test_another_applications_database_is_refused_unchanged(
    store_engine: str, pg_server: PgServer, store_at: StoreAt
) -> None:
    url = DbUrl(pg_server.create_db())
    pg_server.admin("CREATE TABLE invoices (id integer)", db=url.secret.rsplit("/", 1)[1])
    with pytest.raises(StoreError, match=r"not an lnflow store .*another application's database"):
        db.open_engine(url)


@pytest.mark.engines("postgresql")
def test_lnflowctls_engine_reads_but_cannot_write(
    open_store: Callable[..., RealStore],
) -> None:
    store = open_store()
    engine = db.open_readonly_engine(store.path)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM nodes")) == 1
            with pytest.raises(Exception, match="read-only transaction"):
                conn.execute(text("DELETE FROM nodes"))
    finally:
        engine.dispose()


@pytest.mark.engines("postgresql")
def test_migrations_down_and_up_again_on_a_filled_store(
    open_store: Callable[..., RealStore],
) -> None:
    """Through the table rewrites of 0004, 0009 and 0010 and 0018's triggers: the rows
    come back, new ones get fresh ids, and the counts are kept again."""
    store = open_store()
    session = store.open_session(T0)
    ingestor = store.ingestor()
    ingestor.ingest(
        session, [link_fail(h, T0 + h * S, OUT, IN, 500_000, 1_000) for h in (1, 2)], T0
    )
    before = store.q(EVENTS)
    db.downgrade(store.engine, "0003")
    assert store.q("SELECT version_num FROM alembic_version") == [("0003",)]
    db.upgrade(store.engine, store.path)
    assert store.q("SELECT version_num FROM alembic_version") == [(SCHEMA_REVISIONS[-1],)]
    assert store.q(EVENTS) == before
    ingestor = store.ingestor()  # a restarted daemon
    ingestor.ingest(session, [link_fail(3, T0 + 3 * S, OUT, IN, 500_000, 1_000)], T0 + 4 * S)
    assert [row[0] for row in store.q(EVENTS)] == [1, 2, 3]  # ids past the copied ones
    kept = dict(store.q("SELECT value, n FROM row_counts WHERE table_name = 'forward_attempts'"))
    counted = dict(store.q("SELECT outcome, count(*) FROM forward_attempts GROUP BY outcome"))
    assert kept == counted and sum(counted.values()) == 3


S = 1_000_000_000
T0 = 1_700_000_000 * S
IN, OUT = 111 << 40, 222 << 40
EVENTS = f"SELECT id, incoming_htlc_id, outgoing_channel_id FROM {EVENTS_SCID} ORDER BY id"


# -- lnflowctl on a PostgreSQL store ----------------------------------------------------


def _fill_recent(store: RealStore, now: int | None = None) -> None:
    """Failures on two channels over the last hours and their channels, a live session."""
    now = now or time.time_ns()
    store.writer.record_channel_samples(
        store.node_id, now - 10 * H, [_sample(OUT, 100_000, 900_000), _sample(OUT2, 5, 990_000)]
    )
    session = store.open_session(now - 10 * H)
    events = [
        link_fail(
            h, now - 9 * H + h * 97 * S, OUT2 if h % 3 == 0 else OUT, IN, 40_000_000, 90_000 + h
        )
        for h in range(1, 120)
    ]
    store.ingestor().ingest(session, events, now - 30 * S)


def _sample(chan: int, local: int, remote: int) -> ChannelSample:
    info = ChannelInfo(
        chan_id=chan,
        remote_pubkey="03" + f"{chan % 256:02x}" * 32,
        channel_point=f"{chan:064x}:0",
        capacity_sat=local + remote + 20_000,
        local_balance_sat=local,
        remote_balance_sat=remote,
        local_reserve_sat=10_000,
        remote_reserve_sat=10_000,
        active=True,
        private=False,
        peer_alias="",
        uptime_s=1_000,
        lifetime_s=1_000,
    )
    ours = RoutingPolicy(1_000, 100, 80, 1_000, 990_000_000, False, 0)
    return ChannelSample(info=info, ours=ours, peer=None, peer_alias=f"peer-{chan % 1000}")


def _analyze(where: object) -> dict[str, object]:
    rc, out, err = run_lnflowctl("--db", str(where), "analyze", "--hours", "24", "--json")
    assert rc == 0 and not err, err
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def _timeless(doc: object) -> object:
    """``doc`` without the figures that name the moment of the run."""
    if isinstance(doc, dict):
        return {
            k: _timeless(v)
            for k, v in doc.items()
            if not (k.endswith(("_at", "_ns", "_ms")) or k in {"since", "until", "observed_hours"})
        }
    if isinstance(doc, list):
        return [_timeless(v) for v in doc]
    return doc


def _twin_stores(
    tmp_path: Path,
    open_store: Callable[..., RealStore],
    *fills: Callable[[RealStore, int], None],
) -> tuple[RealStore, RealStore]:
    """A PostgreSQL store and a SQLite file, each filled by ``fills`` at the same now."""
    pg = open_store()
    engine = db.open_engine(tmp_path / "lite.db")
    try:
        writer = StoreWriter(engine)
        lite = RealStore(tmp_path / "lite.db", engine, writer, writer.upsert_node(STORE_NODE, 1))
        now = time.time_ns()
        for store in (pg, lite):
            for fill in fills:
                fill(store, now)
    finally:
        engine.dispose()
    return pg, lite


@pytest.mark.e2e
@pytest.mark.engines("postgresql")
def test_analyze_on_postgresql_equals_sqlite_field_by_field(
    tmp_path: Path, open_store: Callable[..., RealStore]
) -> None:
    pg, lite = _twin_stores(tmp_path, open_store, _fill_recent)
    on_pg, on_lite = _analyze(pg.path.secret), _analyze(lite.path)  # type: ignore[union-attr]
    assert on_pg["opportunities"], on_pg  # something to compare
    assert _timeless(on_pg) == _timeless(on_lite)
    for command in (
        ["trend", str(OUT), "--json"],
        ["export", "--what", "events"],
        ["export", "--what", "attempts"],
        ["whatif", str(OUT), "--fee-ppm", "50", "--json"],
    ):
        outs = [run_lnflowctl("--db", str(w), *command) for w in (pg.path.secret, lite.path)]  # type: ignore[union-attr]
        assert outs[0][0] == 0 and outs[0][1] and not outs[0][2], (command, outs[0])
        if "--json" in command:
            assert _timeless(json.loads(outs[0][1])) == _timeless(json.loads(outs[1][1]))
        else:
            assert outs[0] == outs[1], command


@pytest.mark.e2e
@pytest.mark.engines("postgresql")
def test_lnflowctl_status_on_postgresql(open_store: Callable[..., RealStore]) -> None:
    store = open_store()
    _fill_recent(store)
    rc, out, err = run_lnflowctl("--db", store.path.secret, "status", "--json")  # type: ignore[union-attr]
    assert rc == 0 and not err, err
    doc = json.loads(out)
    assert doc["store"] == str(store.path) and "***" not in doc["store"]
    assert doc["counts"]["attempts"]["failed_local"] == 119, doc["counts"]
    assert doc["counts"]["open_channels"] == 2 and doc["size"]["store_bytes"] > 0


@pytest.mark.e2e
@pytest.mark.engines("postgresql")
def test_lnflowctl_with_a_refused_password_is_one_line(
    store_engine: str, pg_server: PgServer
) -> None:
    pg_server.admin(
        f"DO $$ BEGIN CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right';"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    url = pg_server.url("postgres", user=PASSWORD_ROLE, password=SECRET)
    commands = (
        ["status"],
        ["analyze", "--hours", "1"],
        ["trend", "1"],
        ["opportunities"],
        ["policy", "history"],
        ["alerts"],
    )
    for command in commands:
        rc, out, err = run_lnflowctl("--db", url, *command)
        assert rc != 0 and not out and len(err.strip().splitlines()) == 1, err
        assert "refused the password" in err and SECRET not in err, err


@pytest.mark.e2e
def test_lnflowd_given_an_unreachable_url_says_so_in_one_line() -> None:
    rc, _out, err = run_lnflowd("--db", f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/lnflow")
    assert rc != 0 and len(err.strip().splitlines()) == 1, err
    assert "cannot reach the PostgreSQL server" in err and SECRET not in err


@pytest.mark.e2e
def test_lnflowd_with_the_policy_engine_on_a_url_says_what_to_set(tmp_path: Path) -> None:
    # the policy engine keeps its state in a SQLite file: refused before anything starts
    rules = tmp_path / "rules.conf"
    rules.write_text("[default]\nstrategy = ignore\n")
    config = tmp_path / "lnflow.toml"
    config.write_text(f'[policy]\nmode = "plan"\nfile = "{rules}"\n')
    url = f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/lnflow"
    rc, _out, err = run_lnflowd("--config", str(config), "--db", url)
    assert rc != 0 and len(err.strip().splitlines()) == 1, err
    assert 'set [policy] mode = "off"' in err and SECRET not in err


H = 3_600 * S
OUT2 = 333 << 40


@pytest.mark.e2e
@pytest.mark.engines("postgresql")
def test_the_daemons_migration_child_takes_the_url_on_stdin(
    store_engine: str, pg_server: PgServer
) -> None:
    url = DbUrl(pg_server.create_db())  # empty: every revision to apply
    engine = db.open_engine(url, migrate_in_child=True)
    try:
        with engine.connect() as conn:
            assert (
                conn.scalar(text("SELECT version_num FROM alembic_version"))
                == (SCHEMA_REVISIONS[-1])
            )
    finally:
        engine.dispose()
        pg_server.drop_db(url.secret)


def _fill_snapshot_policy_and_alerts(store: RealStore, now: int) -> None:
    """A saved analysis run, two policy changes (one undoing the other) and two alerts,
    one with a failed delivery: what opportunities, policy history and alerts read."""
    from lnflow.alerts import Alert, AlertKind, Phase
    from lnflow.analysis.model import AnalysisSettings
    from lnflow.store.alerts import AlertLog, Delivery
    from lnflow.store.engines import plain_connection
    from lnflow.store.policy_history import PolicyValues, insert_change
    from lnflow.store.read.service import analyze_store
    from lnflow.store.snapshots import SnapshotWriter

    report = analyze_store(
        store.engine,
        store.node_id,
        until_ns=now,
        hours=24,
        settings=AnalysisSettings(),
        generated_ns=now - 60 * S,
    )
    assert report.opportunities  # something to compare
    SnapshotWriter(store.engine).write_run(store.node_id, report, 12)
    before = PolicyValues(base_fee_msat=1_000, fee_ppm=100, disabled=False)
    after = PolicyValues(base_fee_msat=1_000, fee_ppm=250, disabled=False)
    with store.engine.begin() as conn:
        db_ = plain_connection(conn)
        first = insert_change(
            db_,
            node_id=store.node_id,
            run_id=1,
            created_ns=now - 7 * H,
            chan_id=OUT,
            section="",
            strategy="fee_raise",
            before=before,
            after=after,
            snapshot_run_id=None,
            reason="failures for fees on 'peer'",
            result="applied",
            applied_ns=now - 7 * H + S,
            whatif=(1_000, 2_500),
        )
        insert_change(
            db_,
            node_id=store.node_id,
            run_id=2,
            created_ns=now - H,
            chan_id=OUT,
            section="",
            strategy="revert",
            before=after,
            after=before,
            snapshot_run_id=None,
            reason="forwards fell",
            result="failed",
            error="lnd: \x1b[2Jrefused",
            undoes_id=first,
        )
    log = AlertLog(store.engine, store.node_id, keep_days=400)
    for ago, phase in ((5 * 86_400 * S, Phase.START), (2 * H, Phase.CLEAR)):
        fired = log.record_alert(
            Alert(AlertKind.STREAM_DOWN, phase, "", now - ago, "stream down", "no \x07 events")
        )
    log.record_delivery(fired, Delivery("phone", now - H, False, 3, "HTTP 500"))


def _ageless(out: object) -> object:
    return re.sub(r"\(\d+ \w+ ago\)", "(… ago)", out) if isinstance(out, str) else out


@pytest.mark.e2e
@pytest.mark.engines("postgresql")
def test_opportunities_policy_history_and_alerts_on_postgresql_equal_sqlite(
    tmp_path: Path, open_store: Callable[..., RealStore]
) -> None:
    pg, lite = _twin_stores(tmp_path, open_store, _fill_recent, _fill_snapshot_policy_and_alerts)
    for command in (
        ["opportunities", "--json"],
        ["opportunities", "--all-nodes", "--json"],
        ["opportunities"],
        ["policy", "history", "--json"],
        ["policy", "history", "--verbose"],
        ["policy", "history", "--channel", str(OUT2)],
        ["policy", "effects", "--hours", "2"],
        ["alerts", "--since", "2d"],
        ["--json", "alerts"],
    ):
        outs = [run_lnflowctl("--db", str(w), *command) for w in (pg.path.secret, lite.path)]  # type: ignore[union-attr]
        assert outs[0][0] == 0 and outs[0][1] and not outs[0][2], (command, outs[0])
        # (the age of the run is counted at each call)
        assert [_ageless(o) for o in outs[0]] == [_ageless(o) for o in outs[1]], command
    _rc, out, _ = run_lnflowctl("--db", pg.path.secret, "opportunities", "--json")  # type: ignore[union-attr]
    assert json.loads(out)["opportunities"], out
    _rc, out, _ = run_lnflowctl("--db", pg.path.secret, "policy", "history")  # type: ignore[union-attr]
    assert "(undoes 1)" in out and "\\x1b[2J" in out and "\x1b" not in out, out
    _rc, out, _ = run_lnflowctl("--db", pg.path.secret, "policy", "effects", "--hours", "2")  # type: ignore[union-attr]
    assert out.startswith("#1 222x0x0 ") and "fee_ppm 100 → 250" in out, out
    assert "local failures 0 → 0" not in out, out  # the failures around it were read
    # monitor: its live lines (nothing new is stored meanwhile), then the period's analysis
    watched = []
    for where in (pg.path.secret, lite.path):  # type: ignore[union-attr]
        rc, out, err = run_lnflowctl(
            "--db", str(where), "monitor", "--duration", "0.0002", "--interval", "0.1", "--json"
        )
        assert rc == 0 and not err, err
        *live, analysis = [json.loads(line) for line in out.splitlines()]
        assert live and all(x["events"] == 0 and x["missed_msat"] == 0 for x in live), live
        watched.append(_timeless(analysis))
    assert watched[0] == watched[1]


@pytest.mark.engines("postgresql")
def test_an_ingest_batch_numbers_clusters_under_the_store_wide_lock(
    open_store: Callable[..., RealStore],
) -> None:
    """Daemons of two nodes number clusters one at a time: a batch waits for the lock
    another writer holds (here it gives up after lock_timeout) and stores nothing."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    from lnflow.store.engines.postgresql import lock_cluster_numbering
    from lnflow.store.ingest import Ingestor
    from lnflow.store.schema import failure_clusters

    store = open_store()
    assert isinstance(store.path, DbUrl)
    session = store.open_session(1)
    impatient = create_engine(store.path.secret, connect_args={"options": "-c lock_timeout=200"})
    try:
        ingestor = Ingestor(
            impatient,
            store.node_id,
            attempt_timeout_ns=600 * S,
            attempt_linger_ns=10 * S,
            dedup_window_ns=60 * S,
            cluster_max_span_ns=600 * S,
        )
        batch = [link_fail(h, h * S, OUT, IN, 40_000_000, 90_000) for h in range(1, 4)]
        with store.engine.connect() as other, other.begin():
            lock_cluster_numbering(other)  # another daemon's batch, not committed yet
            with pytest.raises(OperationalError, match="lock timeout"):
                ingestor.ingest(session, batch, 10 * S)
        assert store.count(failure_clusters) == 0  # the batch was rolled back whole
        ingestor.ingest(session, batch, 10 * S)  # the lock free: the same batch goes in
        assert store.count(failure_clusters) == 1
    finally:
        impatient.dispose()
