"""Alembic environment for the lnflow store.

lnflowd runs migrations programmatically and hands over its own connection
(``config.attributes["connection"]``); the alembic CLI uses LNFLOW_DB.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from lnflow.store.schema import metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things in place
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url") or "sqlite:///" + os.environ.get(
        "LNFLOW_DB", "lnflow.db"
    )
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
