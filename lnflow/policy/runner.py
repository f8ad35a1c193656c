"""The policy engine with lnflow's settings: credentials, guard rails, plan, history.

Shared by ``lnflowd policy``, the daemon's policy job and the Python API
(:class:`lnflow.facades.PolicyManager`), so all three run the same code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lnflow.domain import NodeInfo
from lnflow.errors import ConfigError
from lnflow.lnd import LndClient
from lnflow.lnd.credentials import LndCredentials
from lnflow.settings import Settings
from lnflow.store import db as store_db
from lnflow.store.engines import DbUrl, PlainWriter, open_plain_store, open_plain_writer
from lnflow.store.writer import StoreWriter

from .engine import Plan, gather, with_whatif
from .guards import GuardSettings
from .rules import Rules, load_rules

__all__ = [
    "guard_settings",
    "make_plan",
    "node_id",
    "open_history",
    "policy_credentials",
    "read_credentials",
    "rules_of",
]


def read_credentials(settings: Settings) -> LndCredentials:
    """The recorder's (read-only) credentials: enough to plan."""
    return LndCredentials.from_settings(settings.lnd)


def rules_of(settings: Settings) -> Rules:
    if not settings.policy.file:
        raise ConfigError("no rules file: set [policy] file or pass --rules")
    return load_rules(Path(settings.policy.file).expanduser())


def policy_credentials(settings: Settings) -> LndCredentials:
    """The lnd credentials with the policy macaroon (default: policy.macaroon)."""
    lnd = settings.lnd
    macaroon = settings.policy.macaroonpath or str(
        Path(lnd.lnddir).expanduser()
        / "data"
        / "chain"
        / "bitcoin"
        / lnd.network
        / "policy.macaroon"
    )
    return LndCredentials.from_settings(lnd, macaroonpath=macaroon)


def guard_settings(settings: Settings) -> GuardSettings:
    p = settings.policy
    return GuardSettings(
        min_hours_between_changes=p.min_hours_between_changes,
        max_channels_per_run=p.max_channels_per_run,
        max_gap_minutes=p.max_gap_minutes,
    )


async def make_plan(settings: Settings, rules: Rules, lnd: LndClient) -> Plan:
    """The plan, with the what-if estimate of each fee or max_htlc change. Reads the
    store (a SQLite file not there yet: no evidence) and writes nothing."""
    where = settings.store.location
    known = isinstance(where, DbUrl) or where.exists()
    reader = open_plain_store(where) if known else None
    try:
        plan = await gather(
            lnd,
            reader,
            rules,
            guards=guard_settings(settings),
            analysis_window_s=settings.analysis.window_hours * 3600,
            max_fee_step_percent=settings.policy.max_fee_step_percent,
        )
    finally:
        if reader is not None:
            reader.close()
    if reader is None or not plan.changes:
        return plan
    engine = store_db.open_readonly_engine(where)
    try:
        with engine.connect() as conn:
            return with_whatif(plan, conn, hours=settings.analysis.window_hours)
    finally:
        engine.dispose()


@contextmanager
def open_history(settings: Settings) -> Iterator[PlainWriter]:
    """The store for writing the history (migrated to the newest schema), a SQLite file
    or a PostgreSQL database alike; closed on leaving."""
    engine = store_db.open_engine(settings.store.location)
    try:
        db = open_plain_writer(engine)
        try:
            yield db
        finally:
            db.close()
    finally:
        engine.dispose()


def node_id(settings: Settings, info: NodeInfo) -> int:
    """The node's id in the store (its row created on first sight)."""
    engine = store_db.open_engine(settings.store.location)
    try:
        return StoreWriter(engine).upsert_node(info, time.time_ns())
    finally:
        engine.dispose()
