"""Default locations shared by the daemon and lnflowctl (no heavy imports here)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_db_path"]


def default_db_path() -> Path:
    """``$STATE_DIRECTORY/lnflow.db`` under systemd, else ``~/.lnflow/lnflow.db``."""
    state_dir = os.environ.get("STATE_DIRECTORY")
    if state_dir:
        return Path(state_dir.split(":")[0]) / "lnflow.db"
    return Path("~/.lnflow/lnflow.db").expanduser()
