"""Default locations shared by the daemon and lnflowctl (no heavy imports here)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

__all__ = ["default_db_path", "resolve_db_path"]


def default_db_path() -> Path:
    """``$STATE_DIRECTORY/lnflow.db`` under systemd, else ``~/.lnflow/lnflow.db``."""
    state_dir = os.environ.get("STATE_DIRECTORY")
    if state_dir:
        return Path(state_dir.split(":")[0]) / "lnflow.db"
    return Path("~/.lnflow/lnflow.db").expanduser()


def resolve_db_path(flag: str | None, config_file: Path | None = None) -> Path:
    """The store lnflowctl reads: --db, then LNFLOW_STORE__DB, then [store].db, then default."""
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get("LNFLOW_STORE__DB")
    if env:
        return Path(env).expanduser()
    if config_file is not None:
        from lnflow.errors import ConfigError

        try:
            with config_file.expanduser().open("rb") as fh:
                db = tomllib.load(fh).get("store", {}).get("db", "")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        if db:
            return Path(db).expanduser()
    return default_db_path()
