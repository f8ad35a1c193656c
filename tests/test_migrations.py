"""Alembic revisions against real SQLite files."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from lnflow.errors import StoreTooNewError
from lnflow.store import db
from lnflow.store.schema import SCHEMA_REVISIONS, metadata


def _script() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(db.migrations_dir()))
    return ScriptDirectory.from_config(cfg)


def test_schema_revisions_constant_matches_the_migrations() -> None:
    revs = [r.revision for r in _script().walk_revisions()]
    assert tuple(reversed(revs)) == SCHEMA_REVISIONS


def test_every_revision_upgrades_downgrades_and_upgrades_again(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    revisions = list(SCHEMA_REVISIONS)
    for rev in revisions:
        db.upgrade(engine, path, rev)
    for previous in [*reversed(revisions[:-1]), "base"]:
        db.downgrade(engine, previous)
    with engine.connect() as conn:
        tables = set(
            conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'").scalars()
        )
    assert tables <= {"alembic_version"}
    db.upgrade(engine, path)
    engine.dispose()


def test_migrated_schema_equals_the_table_definitions(tmp_path: Path) -> None:
    engine = db.open_engine(tmp_path / "s.db")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_store_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "s.db"
    engine = db.open_engine(path)
    engine.dispose()
    assert path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental


def test_store_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db.open_engine(path).dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffff'")
    with pytest.raises(StoreTooNewError, match="newer than this lnflow"):
        db.open_engine(path)
    with pytest.raises(StoreTooNewError):
        db.open_readonly_engine(path)
    out = subprocess.run(
        [sys.executable, "-m", "lnflow.cli.ctl", "--db", str(path), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert out.stderr.count("\n") == 1 and "upgrade lnflow" in out.stderr
    assert "Traceback" not in out.stderr
