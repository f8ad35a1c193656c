"""A PostgreSQL store opened from a URL: the one-line errors of a connection that
cannot be made, the password kept out of every message, and the schema's migrations
both ways on a filled database."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from conftest import RealStore, StoreAt
from daemonproc import EVENTS_SCID, link_fail
from pgserver import PASSWORD_ROLE, PgServer
from sqlalchemy import text

from lnflow.errors import StoreError
from lnflow.store import db
from lnflow.store.engines import DbUrl, is_url, location
from lnflow.store.readonly import SCHEMA_REVISIONS

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
