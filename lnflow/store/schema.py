"""The store's tables (SQLAlchemy Core). Alembic migrations create them.

Conventions:
- every recorded row carries ``node_id`` (``nodes`` holds the pubkeys), so one
  database can later hold a fleet;
- uint64 values (SCIDs, HTLC ids) are stored as signed 64-bit
  (:func:`lnflow.domain.to_signed64`) and converted back when read;
- times are unix nanoseconds (``*_ns``), money is integer msat;
- enum columns hold lnd's numbers, unknown numbers included.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "SCHEMA_REVISIONS",
    "daemon_state",
    "htlc_events",
    "metadata",
    "nodes",
    "stream_sessions",
]

# Every Alembic revision this code knows, oldest first (a test keeps it equal to
# migrations/versions). lnflowctl checks a store against it without importing Alembic.
SCHEMA_REVISIONS = ("0001",)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pubkey", String(66), nullable=False, unique=True),
    Column("alias", Text, nullable=False, default=""),
    Column("network", String(16), nullable=False, default=""),
    Column("first_seen_ns", BigInteger, nullable=False),
)

stream_sessions = Table(
    "stream_sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), nullable=False),
    Column("started_ns", BigInteger, nullable=False),
    Column("subscribed_ns", BigInteger),  # SubscribedEvent seen (lnd >= 0.16)
    Column("ended_ns", BigInteger),
    Column("end_reason", Text),
    Column("lnd_version", String(64), nullable=False, default=""),
    Index("ix_stream_sessions_node_started", "node_id", "started_ns"),
)

htlc_events = Table(
    "htlc_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), nullable=False),
    Column("session_id", Integer, ForeignKey("stream_sessions.id"), nullable=False),
    Column("timestamp_ns", BigInteger, nullable=False),
    Column("kind", SmallInteger, nullable=False),  # lnflow.domain.EventKind
    Column("event_type", Integer, nullable=False),  # lnd HtlcEvent.EventType number
    Column("incoming_channel_id", BigInteger, nullable=False),
    Column("incoming_htlc_id", BigInteger, nullable=False),
    Column("outgoing_channel_id", BigInteger, nullable=False),
    Column("outgoing_htlc_id", BigInteger, nullable=False),
    Column("incoming_amt_msat", BigInteger),
    Column("outgoing_amt_msat", BigInteger),
    Column("incoming_timelock", Integer),
    Column("outgoing_timelock", Integer),
    Column("wire_failure", Integer),  # lnrpc.Failure.FailureCode number (link fails)
    Column("failure_detail", Integer),  # routerrpc.FailureDetail number (link fails)
    Column("failure_string", Text),
    Column("settled", Boolean),  # final events
    Column("offchain", Boolean),  # final events
    # Replays after a reconnect carry the same key: the store keeps the first.
    UniqueConstraint(
        "node_id",
        "kind",
        "incoming_channel_id",
        "incoming_htlc_id",
        "outgoing_channel_id",
        "outgoing_htlc_id",
        name="uq_htlc_events_key",
    ),
    Index("ix_htlc_events_timestamp_ns", "timestamp_ns"),
)

# One row per daemon instance that ever ran against this store (id 1 today).
daemon_state = Table(
    "daemon_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("started_ns", BigInteger, nullable=False),
    Column("heartbeat_ns", BigInteger, nullable=False),
    Column("heartbeat_interval_s", Integer, nullable=False),
    Column("stopped_ns", BigInteger),
    Column("node_id", SmallInteger, ForeignKey("nodes.id")),
    Column("lnd_alias", Text),
    Column("lnd_version", Text),
    Column("lnd_network", String(16)),
    Column("lnd_state", String(32), nullable=False, default="starting"),
    Column("stream_state", String(32), nullable=False, default="idle"),
    Column("last_error", Text),
)
