"""Default locations shared by the daemon and lnflowctl (no heavy imports here)."""

from __future__ import annotations

import os
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
        import tomllib  # only with a config file: a --db flag needs no TOML parser

        from lnflow.errors import ConfigError

        try:
            with config_file.expanduser().open("rb") as fh:
                store = tomllib.load(fh).get("store", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {config_file} is not valid TOML (not UTF-8 text): "
                "give the TOML file of config/lnflow.example.toml"
            ) from exc
        if not isinstance(store, dict):
            raise ConfigError(f'{config_file}: [store] must be a table, e.g. db = "/path.db"')
        db = store.get("db", "")
        if not isinstance(db, str):
            raise ConfigError(f"{config_file}: [store].db must be a path string, not {db!r}")
        if db:
            return Path(db).expanduser()
    return default_db_path()
