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

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from lnflow.domain import DaemonState, FailureClass, StreamState
from lnflow.store.readonly import SCHEMA_REVISIONS

__all__ = [
    "SCHEMA_REVISIONS",
    "alert_deliveries",
    "alerts",
    "analysis_runs",
    "channel_aliases",
    "channel_ratio_daily",
    "channel_ratio_hourly",
    "channel_refs",
    "channel_samples",
    "channels",
    "daemon_state",
    "failure_channel_6h",
    "failure_channel_daily",
    "failure_channel_hourly",
    "failure_channel_weekly",
    "failure_clusters",
    "failure_rollups_hourly",
    "forward_attempts",
    "forward_channel_6h",
    "forward_channel_daily",
    "forward_channel_hourly",
    "forward_rollups_hourly",
    "forwards",
    "htlc_events",
    "metadata",
    "nodes",
    "opportunities",
    "policy_changes",
    "rebalance_moves",
    "recording_marks",
    "retention_horizons",
    "row_counts",
    "run_gaps",
    "stream_sessions",
]


# A partial index's WHERE for PostgreSQL is attached by with_postgresql_where(), which
# lnflow.store.engines.postgresql calls when imported: naming postgresql_where here
# would load SQLAlchemy's PostgreSQL dialect and its drivers' modules (2.2 MB) into
# every process that only uses SQLite (bench/README.md: memory).
_PG_WHERE: list[tuple[Index, Any]] = []


def _partial(*args: Any, where: Any, **kw: Any) -> Index:
    """An index over the rows ``where`` holds, on both engines."""
    index = Index(*args, sqlite_where=where, **kw)
    _PG_WHERE.append((index, where))
    return index


def with_postgresql_where() -> None:
    """Give the partial indexes their WHERE for PostgreSQL (idempotent)."""
    for index, where in _PG_WHERE:
        index.dialect_options["postgresql"]["where"] = where


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
    # which stream session delivered it (no foreign key: sessions outlive their events,
    # and a key would make deleting a session scan this table)
    Column("session_id", Integer, nullable=False),
    Column("timestamp_ns", BigInteger, nullable=False),
    Column("kind", SmallInteger, nullable=False),  # lnflow.domain.EventKind
    Column("event_type", Integer, nullable=False),  # lnd HtlcEvent.EventType number
    # channel_refs.id of the SCID, 0 for lnd's 0 (no channel on that side): 1-2 bytes
    # instead of 8, in the row and in the key index (see channel_refs)
    Column("incoming_chan_ref", Integer, nullable=False),
    Column("incoming_htlc_id", BigInteger, nullable=False),
    Column("outgoing_chan_ref", Integer, nullable=False),
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
)
# Replays after a reconnect carry the same key: the store keeps the first. Own payments
# failing at the first hop (SEND link fails, event_type 1, kind 4) all carry the key
# (0, 0, chan, 0), one per failed payment: their timestamp tells them apart (0013).
_SEND_LINK_FAIL = text("event_type = 1 AND kind = 4")
_NOT_SEND_LINK_FAIL = text("NOT (event_type = 1 AND kind = 4)")
_partial(
    "uq_htlc_events_key",
    htlc_events.c.node_id,
    htlc_events.c.kind,
    htlc_events.c.incoming_chan_ref,
    htlc_events.c.incoming_htlc_id,
    htlc_events.c.outgoing_chan_ref,
    htlc_events.c.outgoing_htlc_id,
    unique=True,
    where=_NOT_SEND_LINK_FAIL,
)
_partial(
    "uq_htlc_events_send_fail_key",
    htlc_events.c.node_id,
    htlc_events.c.outgoing_chan_ref,
    htlc_events.c.timestamp_ns,
    unique=True,
    where=_SEND_LINK_FAIL,
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
    Column("lnd_state", String(32), nullable=False, default=DaemonState.STARTING.value),
    Column("stream_state", String(32), nullable=False, default=StreamState.IDLE.value),
    Column("last_error", Text),
    Column("metrics_listen", Text),  # 0016: the address /metrics is served on, None: off
    Column("alert_targets", Text),  # 0016: JSON list of the alert targets' names
)


# --------------------------------------------------------------------------- 0002

# One row per incoming forward (DESIGN §3): outcome from lnflow.attempts.Outcome,
# failure_class from lnflow.analysis.classify.FailureClass.
forward_attempts = Table(
    "forward_attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), nullable=False),
    # channel_refs.id of the SCID, 0 for none (no outgoing channel yet): 1-2 bytes
    # instead of 8, in the row, the key index and the local-failure indexes (0009)
    Column("incoming_chan_ref", Integer, nullable=False),
    Column("incoming_htlc_id", BigInteger, nullable=False),
    Column("outgoing_chan_ref", Integer, nullable=False),
    Column("outgoing_htlc_id", BigInteger, nullable=False),
    Column("first_seen_ns", BigInteger, nullable=False),
    Column("resolved_ns", BigInteger),
    Column("incoming_amt_msat", BigInteger),
    Column("outgoing_amt_msat", BigInteger),
    Column("outcome", SmallInteger, nullable=False),
    Column("failure_class", SmallInteger),
    Column("wire_failure", Integer),
    Column("failure_detail", Integer),
    Column("missed_fee_msat", BigInteger, nullable=False),
    Column("final_settled", Boolean),
    Column("cluster_id", Integer),
    UniqueConstraint(
        "node_id", "incoming_chan_ref", "incoming_htlc_id", name="uq_forward_attempts_key"
    ),
)
# The analysis' failure details (lnflow.store.read.details): a
# channel's local failures of one class resolved in a time range, read from the index
# alone. Partial: local failures only (outcome 2 = lnflow.attempts.Outcome.FAILED_LOCAL).
# node_id and outcome come last, only so the query needs no table row: node_id to check
# a fleet's node (ids 0 and 1 cost the record header byte alone), outcome because SQLite
# before 3.45 counts a column the query names as needed even when the index's WHERE
# fixes it (2 bytes). Nothing may come between failure_class and resolved_ns: with the
# amount before the time the planner prefers such an index and reads the channel's
# whole class history.
_partial(
    "ix_forward_attempts_local",
    forward_attempts.c.outgoing_chan_ref,
    forward_attempts.c.failure_class,
    forward_attempts.c.resolved_ns,
    forward_attempts.c.outgoing_amt_msat,
    forward_attempts.c.missed_fee_msat,
    forward_attempts.c.node_id,
    forward_attempts.c.outcome,
    where=forward_attempts.c.outcome == 2,
)

# Percentiles of a long window's failed amounts (StoreFailureDetails.amount_percentiles):
# the same rows in amount order, so the k-th smallest amount of a channel's class in a
# time range is found by walking k index entries (resolved_ns is checked from the index)
# instead of reading and sorting them all. Added by 0005.
_partial(
    "ix_forward_attempts_local_amount",
    forward_attempts.c.outgoing_chan_ref,
    forward_attempts.c.failure_class,
    forward_attempts.c.outgoing_amt_msat,
    forward_attempts.c.resolved_ns,
    forward_attempts.c.node_id,
    forward_attempts.c.outcome,
    where=forward_attempts.c.outcome == 2,
)

# The analysis' node totals of what has no missed fee to sum (0013): local failures lnd
# gave no amount for, and HTLCs an interceptor rejected (outcome 5, REJECTED_LOCAL).
_partial(
    "ix_forward_attempts_unknown_amount",
    forward_attempts.c.resolved_ns,
    forward_attempts.c.outgoing_chan_ref,
    forward_attempts.c.node_id,
    where=text("outcome = 2 AND outgoing_amt_msat IS NULL"),
)
_partial(
    "ix_forward_attempts_rejected",
    forward_attempts.c.resolved_ns,
    forward_attempts.c.node_id,
    where=text("outcome = 5"),
)

# Demand clusters (DESIGN §4); ids are assigned by lnflow.clusters.ClusterAssigner.
failure_clusters = Table(
    "failure_clusters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), nullable=False),
    Column("outgoing_chan_ref", Integer, nullable=False),  # channel_refs.id (0010)
    Column("first_ns", BigInteger, nullable=False),
    Column("last_ns", BigInteger, nullable=False),
    Column("members", Integer, nullable=False),
    Column("missed_fee_msat", BigInteger, nullable=False),
)

# The forwards ledger: ForwardingHistory, the source of truth for earned fees.
forwards = Table(
    "forwards",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), nullable=False),
    Column("timestamp_ns", BigInteger, nullable=False),
    Column("chan_id_in", BigInteger, nullable=False),
    Column("chan_id_out", BigInteger, nullable=False),
    Column("amt_in_msat", BigInteger, nullable=False),
    Column("amt_out_msat", BigInteger, nullable=False),
    Column("fee_msat", BigInteger, nullable=False),
    Column("incoming_htlc_id", BigInteger),
    Column("outgoing_htlc_id", BigInteger),
    UniqueConstraint("node_id", "timestamp_ns", name="uq_forwards_key"),
)

# Every channel ever seen; closed ones keep their last alias.
channels = Table(
    "channels",
    metadata,
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), primary_key=True),
    Column("chan_id", BigInteger, primary_key=True, autoincrement=False),
    Column("remote_pubkey", String(66), nullable=False),
    Column("channel_point", Text, nullable=False),
    Column("capacity_sat", BigInteger, nullable=False),
    Column("peer_alias", Text, nullable=False),
    Column("private", Boolean, nullable=False),
    Column("first_seen_ns", BigInteger, nullable=False),
    Column("last_seen_ns", BigInteger, nullable=False),
    Column("closed_ns", BigInteger),
    # the channel's latest sample (highest ts_ns, then id) and its time, kept where the
    # samples are written and deleted (lnflow.store.latest_sample; 0024): NULL when it
    # has none or it is not known, never an older one
    Column("latest_sample_id", BigInteger),
    Column("latest_sample_ns", BigInteger),
)

channel_samples = Table(
    "channel_samples",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), nullable=False),
    Column("chan_id", BigInteger, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("capacity_sat", BigInteger, nullable=False),
    Column("local_balance_sat", BigInteger, nullable=False),
    Column("remote_balance_sat", BigInteger, nullable=False),
    Column("local_reserve_sat", BigInteger, nullable=False),
    Column("remote_reserve_sat", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("uptime_s", BigInteger, nullable=False),
    Column("lifetime_s", BigInteger, nullable=False),
    # our policy (None when the graph has no edge yet)
    Column("fee_base_msat", BigInteger),
    Column("fee_rate_ppm", BigInteger),
    Column("time_lock_delta", Integer),
    Column("min_htlc_msat", BigInteger),
    Column("max_htlc_msat", BigInteger),
    Column("disabled", Boolean),
    # the peer's policy
    Column("peer_fee_base_msat", BigInteger),
    Column("peer_fee_rate_ppm", BigInteger),
    Column("peer_time_lock_delta", Integer),
    Column("peer_min_htlc_msat", BigInteger),
    Column("peer_max_htlc_msat", BigInteger),
    Column("peer_disabled", Boolean),
    # our inbound fee on the channel (lnd >= 0.18; 0014), None when no policy was known
    Column("inbound_fee_base_msat", BigInteger),
    Column("inbound_fee_rate_ppm", BigInteger),
    Index("ix_channel_samples_ts", "ts_ns"),
)
# A channel's samples in time order (ties: insertion order), with what the analysis reads
# of every sample in a window: the balances (lowest local ratio) and our fee policy (fee
# history), so those reads need no table row. Added by 0007, replacing its prefix
# ix_channel_samples_chan_ts. Samples are one row per channel and sampling interval: the
# index costs nothing per HTLC event.
Index(
    "ix_channel_samples_chan_state",
    channel_samples.c.node_id,
    channel_samples.c.chan_id,
    channel_samples.c.ts_ns,
    channel_samples.c.id,
    channel_samples.c.local_balance_sat,
    channel_samples.c.remote_balance_sat,
    channel_samples.c.fee_base_msat,
    channel_samples.c.fee_rate_ppm,
)

# Each channel's lowest local ratio per hour and per UTC day (hour = ts_ns //
# NS_PER_HOUR, day = ts_ns // NS_PER_DAY): the smallest local / (local + remote) of its
# samples in the period with a balance (the same IEEE quotient as the analysis reads from
# the samples themselves), kept by lnflow.store.sample_ratios (filled by 0026). A window
# reads the lowest ratio of the whole days and hours it holds here and the samples only
# in its partial first and last hour (lnflow.store.read.channels).


def _ratio_table(name: str, period: str) -> Table:
    return Table(
        name,
        metadata,
        Column(
            "node_id", SmallInteger, ForeignKey("nodes.id"), primary_key=True, autoincrement=False
        ),
        Column("chan_id", BigInteger, primary_key=True, autoincrement=False),
        Column(period, Integer, primary_key=True, autoincrement=False),
        Column("lowest", Float, nullable=False),
        sqlite_with_rowid=False,
    )


channel_ratio_hourly = _ratio_table("channel_ratio_hourly", "hour")
channel_ratio_daily = _ratio_table("channel_ratio_daily", "day")

# Hourly rollups (DESIGN §6), maintained while recording; hour = unix seconds // 3600.
failure_rollups_hourly = Table(
    "failure_rollups_hourly",
    metadata,
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), primary_key=True),
    Column("hour", Integer, primary_key=True, autoincrement=False),
    Column("outgoing_channel_id", BigInteger, primary_key=True, autoincrement=False),
    Column("incoming_channel_id", BigInteger, primary_key=True, autoincrement=False),
    Column("failure_class", SmallInteger, primary_key=True, autoincrement=False),
    Column("failures", Integer, nullable=False),
    Column("clusters", Integer, nullable=False),
    Column("missed_raw_msat", BigInteger, nullable=False),
    Column("missed_dedup_msat", BigInteger, nullable=False),
)

forward_rollups_hourly = Table(
    "forward_rollups_hourly",
    metadata,
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), primary_key=True),
    Column("hour", Integer, primary_key=True, autoincrement=False),
    Column("chan_id_in", BigInteger, primary_key=True, autoincrement=False),
    Column("chan_id_out", BigInteger, primary_key=True, autoincrement=False),
    Column("forwards", Integer, nullable=False),
    Column("amt_out_msat", BigInteger, nullable=False),
    Column("fee_msat", BigInteger, nullable=False),
)


# --------------------------------------------------------------------------- 0003

# Analysis snapshots (DESIGN §6): one row per run, its stream gaps, its ranked
# opportunities and its rebalance plan. The child tables carry a copy of their run's
# generated_ns so retention expires them by their own time, in bounded batches, before
# the runs. They have no foreign key to analysis_runs (as htlc_events has none to
# stream_sessions): deleting a run then needs no lookup in every child table.
analysis_runs = Table(
    "analysis_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), nullable=False),
    Column("generated_ns", BigInteger, nullable=False),
    Column("since_ns", BigInteger, nullable=False),
    Column("until_ns", BigInteger, nullable=False),
    Column("hours", Integer, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("opportunities", Integer, nullable=False),  # how many rows the run has
    Column("node_failures", Integer, nullable=False),
    Column("node_missed_msat", BigInteger, nullable=False),  # deduplicated
    Column("node_missed_raw_msat", BigInteger, nullable=False, server_default="0"),  # 0014
    # of node_failures, those lnd gave no amount for; HTLCs an interceptor rejected (0013)
    Column("node_unknown_amount", Integer, nullable=False, server_default="0"),
    Column("node_rejected", Integer, nullable=False, server_default="0"),
    Index("ix_analysis_runs_generated_ns", "generated_ns"),
    # ns of the window the HTLC stream was connected (0015; None: runs from before)
    Column("observed_ns", BigInteger),
    # the node's latest run only: its opportunities table as lnflowd rendered it, and
    # the renderer's fingerprint (0021; lnflow.cli.saved_table)
    Column("table_format", Text),
    Column("table_text", Text),
)
# the runs that still hold a table (one per node): SnapshotWriter clears them
_HAS_TABLE = text("table_text IS NOT NULL")
_partial(
    "ix_analysis_runs_table",
    analysis_runs.c.node_id,
    where=_HAS_TABLE,
)

run_gaps = Table(
    "run_gaps",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=False),
    Column("position", SmallInteger, primary_key=True, autoincrement=False),
    Column("generated_ns", BigInteger, nullable=False),
    Column("from_ns", BigInteger, nullable=False),
    Column("to_ns", BigInteger),  # None: the stream was still down
    Index("ix_run_gaps_generated_ns", "generated_ns"),
)

opportunities = Table(
    "opportunities",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=False),
    Column("rank", Integer, primary_key=True, autoincrement=False),
    Column("generated_ns", BigInteger, nullable=False),
    Column("channel_id", BigInteger, nullable=False),
    Column("peer_pubkey", String(66), nullable=False),
    Column("peer_alias", Text, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("clusters", Integer, nullable=False),
    Column("successes", Integer, nullable=False),
    Column("failure_rate", Float, nullable=False),
    Column("missed_msat", BigInteger, nullable=False),  # deduplicated
    Column("missed_raw_msat", BigInteger, nullable=False),
    Column("potential_monthly_msat", BigInteger, nullable=False),
    Column("urgency_score", SmallInteger, nullable=False),
    Column("confidence", String(16), nullable=False),  # lnflow.analysis.model.Confidence
    Column("recommended_action", String(32), nullable=False),  # ... .Action
    Column("reason", Text, nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("capacity_sat", BigInteger, nullable=False),
    Column("local_balance_sat", BigInteger, nullable=False),
    Column("outbound_fee_ppm", BigInteger),
    Column("suggested_fee_ppm", BigInteger),
    Column("suggested_amount_sat", BigInteger),
    Column("suggested_max_htlc_msat", BigInteger),
    # by_class: <class>_failures and <class>_missed_msat (raw) per failure class label,
    # both NULL when the class is absent from the opportunity's by_class
    *(
        Column(name, type_)
        for cls in FailureClass
        for name, type_ in ((cls.failures_column, Integer), (cls.missed_column, BigInteger))
    ),
    Index("ix_opportunities_channel_run", "channel_id", "run_id"),
    Index("ix_opportunities_generated_ns", "generated_ns"),
)

rebalance_moves = Table(
    "rebalance_moves",
    metadata,
    Column("run_id", Integer, primary_key=True, autoincrement=False),
    Column("position", SmallInteger, primary_key=True, autoincrement=False),
    Column("generated_ns", BigInteger, nullable=False),
    Column("target_channel_id", BigInteger, nullable=False),
    Column("source_channel_ids", Text, nullable=False),  # "a,b": unsigned decimal SCIDs
    Column("amount_sat", BigInteger, nullable=False),
    Column("max_cost_ppm", BigInteger, nullable=False),
    Index("ix_rebalance_moves_generated_ns", "generated_ns"),
)


# --------------------------------------------------------------------------- 0004

# A small number for every SCID the event stream ever named, per node. htlc_events, the
# largest table, forward_attempts (since 0009) and failure_clusters (0010) store these
# instead of 8-byte SCIDs (a SCID is block << 40: always 8 bytes in SQLite); ids are never
# reused or deleted (one row per channel ever seen).
channel_refs = Table(
    "channel_refs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), nullable=False),
    Column("chan_id", BigInteger, nullable=False),
    UniqueConstraint("node_id", "chan_id", name="uq_channel_refs_key"),
)


# --------------------------------------------------------------------------- 0005

# Per outgoing channel rollups, per clock hour and per UTC day (day = hour // 24), summed
# from the same contributions as failure_rollups_hourly (so a day is exactly the sum of
# its hours): what the analysis reads for long windows in a few thousand rows instead of
# one row per (hour, outgoing, incoming, class). Classes are columns
# (<class>_failures, <class>_missed_msat raw; a class number this code does not know
# counts as other).
#
# Incoming channels are kept as much as the analysis' confidence needs (it compares
# their number with 1 and 3): incoming_lo / incoming_hi are the smallest and largest
# incoming channel id (signed) among the period's failures, incoming_many is true when
# there were at least 3 distinct ones. A period with incoming_many false had exactly
# the set {incoming_lo, incoming_hi}, so the number of distinct incoming channels over
# any union of periods is known exactly up to 3 (see INCOMING_CAP in
# lnflow.store.read).


def _failure_channel_table(name: str, period: str, *extra: Column[int]) -> Table:
    return Table(
        name,
        metadata,
        Column("node_id", SmallInteger, ForeignKey("nodes.id"), primary_key=True),
        Column(period, Integer, primary_key=True, autoincrement=False),
        Column("outgoing_channel_id", BigInteger, primary_key=True, autoincrement=False),
        Column("clusters", Integer, nullable=False),
        Column("missed_dedup_msat", BigInteger, nullable=False),
        *(
            Column(name, type_, nullable=False)
            for cls in FailureClass
            for name, type_ in ((cls.failures_column, Integer), (cls.missed_column, BigInteger))
        ),
        Column("incoming_lo", BigInteger, nullable=False),
        Column("incoming_hi", BigInteger, nullable=False),
        Column("incoming_many", Boolean, nullable=False),
        *extra,
        # of the failures counted above, those lnd gave no amount for (their attempt's
        # outgoing_amt_msat NULL when the failure was counted; 0025): the analysis'
        # "unknown amount" per outgoing channel, 0 for a failure with none
        Column("unknown_amount", Integer, nullable=False, server_default="0"),
        sqlite_with_rowid=False,  # rows stored in key order: a range of periods is one scan
    )


# first_ns / last_ns: the earliest and latest failure of the hour (their LINK_FAIL times),
# so a window that cuts the hour takes the row as it is when all its failures fall inside
failure_channel_hourly = _failure_channel_table(
    "failure_channel_hourly",
    "hour",
    Column("first_ns", BigInteger, nullable=False),
    Column("last_ns", BigInteger, nullable=False),
)
# first_hour / last_hour: the first and last hour of the day with a failure, so a window
# built from days knows its first and last failure to the hour, as from hourly rollups
failure_channel_daily = _failure_channel_table(
    "failure_channel_daily",
    "day",
    Column("first_hour", Integer, nullable=False),
    Column("last_hour", Integer, nullable=False),
)


def _forward_channel_table(name: str, period: str) -> Table:
    """Settled forwards (the ledger) per channel: out of it and in via it."""
    return Table(
        name,
        metadata,
        Column("node_id", SmallInteger, ForeignKey("nodes.id"), primary_key=True),
        Column(period, Integer, primary_key=True, autoincrement=False),
        Column("chan_id", BigInteger, primary_key=True, autoincrement=False),
        Column("forwards_out", Integer, nullable=False),
        Column("fee_out_msat", BigInteger, nullable=False),
        Column("forwards_in", Integer, nullable=False),
        Column("fee_in_msat", BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )


forward_channel_hourly = _forward_channel_table("forward_channel_hourly", "hour")
forward_channel_daily = _forward_channel_table("forward_channel_daily", "day")


# --------------------------------------------------------------------------- 0006
# dropped: ix_forward_attempts_out_seen (cluster members are found on
# ix_forward_attempts_local) and ix_forwards_out_time / ix_forwards_in_time (the analysis
# reads the ledger by time, per channel from the per-channel rollups): ~18 bytes per
# recorded event that nothing read any more


# --------------------------------------------------------------------------- 0008

# The same per-channel rollups per 6-hour block of the UTC day (block = hour // 6,
# lnflow.store.rollups.BLOCK_HOURS), filled from the same contributions: a 24-hour
# window reads its whole hours as a few blocks plus at most 2 × 5 hours instead of 23
# hourly rows per channel.
failure_channel_6h = _failure_channel_table(
    "failure_channel_6h",
    "block",
    Column("first_hour", Integer, nullable=False),
    Column("last_hour", Integer, nullable=False),
)
forward_channel_6h = _forward_channel_table("forward_channel_6h", "block")


# --------------------------------------------------------------------------- 0022

# The per-channel failure rollups per week of 7 UTC days (week = day // 7, counted from
# the epoch like the days themselves: every week is 7 whole days, whatever the calendar),
# filled from the same contributions: a 720-hour window reads its whole weeks here and
# only the days around them from failure_channel_daily, ~4 times fewer rows to sum.
# Retention keeps each row the sum of the week's days still stored (see
# lnflow.store.retention: a week whose first days expired is summed again from the rest).
failure_channel_weekly = _failure_channel_table(
    "failure_channel_weekly",
    "week",
    Column("first_hour", Integer, nullable=False),
    Column("last_hour", Integer, nullable=False),
)


# --------------------------------------------------------------------------- 0012

# The other ids lnd may name one of our channels by (ListChannels: alias_scids, and
# zero_conf_confirmed_scid), each mapped to the channel's id in ``channels`` (the
# chan_id ListChannels reports): failures an event names by an alias, or forwards by
# the confirmed SCID, count for that channel. An id maps to one channel for good.
channel_aliases = Table(
    "channel_aliases",
    metadata,
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), primary_key=True),
    Column("scid", BigInteger, primary_key=True, autoincrement=False),
    Column("chan_id", BigInteger, nullable=False),
    Column("confirmed", Boolean, nullable=False),  # the real SCID of a zero-conf channel
)


# --------------------------------------------------------------------------- 0015

# When lnflow recorded its raw rows, without a byte more per row: row ids only grow in
# recording order, so "every row up to these ids was stored by recorded_ns" (one row per
# prune run, written by retention) lets retention expire raw rows by when they were
# recorded, whatever time the node stamped on them (lnflow.store.retention).
recording_marks = Table(
    "recording_marks",
    metadata,
    Column("recorded_ns", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", Integer),  # max(htlc_events.id) then
    Column("attempt_id", Integer),  # max(forward_attempts.id)
    Column("cluster_id", Integer),  # max(failure_clusters.id)
)


# --------------------------------------------------------------------------- 0016

# Built-in alerts (lnflow.alerts, lnflowd.alerts): one row per alert fired, one per
# delivery to a target (its last try). A target's name never holds a URL's secret
# (lnflow.alerts.redact_url). Few rows (one per condition start or end), kept
# ``[alerts] keep_days``.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), nullable=False),
    Column("fired_ns", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),  # lnflow.alerts.AlertKind
    Column("phase", String(8), nullable=False),  # lnflow.alerts.Phase
    Column("subject", Text, nullable=False),  # the condition's key: a decimal SCID or ""
    Column("title", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("detail", Text, nullable=False),  # JSON object
    Index("ix_alerts_fired_ns", "fired_ns"),
)

alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), nullable=False),
    Column("alert_id", Integer, nullable=False),
    Column("target", Text, nullable=False),
    Column("done_ns", BigInteger, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("attempts", SmallInteger, nullable=False),
    Column("error", Text),  # the last try's, secrets removed
    Index("ix_alert_deliveries_alert_id", "alert_id"),
    Index("ix_alert_deliveries_target", "target", "id"),
)

# --------------------------------------------------------------------------- 0017

# The fee policy engine's history (lnflow.policy, DESIGN §9): one row per channel and
# run, planned, applied, failed, rolled back or reverted. before_*: our policy when the
# row was written; after_*: the value set (None: the field was left as it was). A
# rollback or revert is a row of its own naming the change it undoes.
_POLICY_FIELDS = (
    ("base_fee_msat", BigInteger),
    ("fee_ppm", BigInteger),
    ("min_htlc_msat", BigInteger),
    ("max_htlc_msat", BigInteger),
    ("time_lock_delta", Integer),
    ("inbound_base_fee_msat", BigInteger),
    ("inbound_fee_ppm", BigInteger),
    ("disabled", Boolean),
)

policy_changes = Table(
    "policy_changes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), nullable=False),
    Column("run_id", Integer, nullable=False),  # one plan/apply/rollback/revert run
    Column("created_ns", BigInteger, nullable=False),
    Column("chan_id", BigInteger, nullable=False),
    Column("section", Text, nullable=False),  # the matched sections, "" for a rollback
    Column("strategy", String(16), nullable=False),  # or "rollback" / "revert"
    *(Column(f"before_{name}", type_) for name, type_ in _POLICY_FIELDS),
    *(Column(f"after_{name}", type_) for name, type_ in _POLICY_FIELDS),
    Column("snapshot_run_id", Integer),  # the analysis run the decision read
    Column("reason", Text, nullable=False),
    # planned, applied, failed, rolled_back, reverted (lnflow.policy.engine.Result)
    Column("result", String(16), nullable=False),
    Column("error", Text),
    Column("applied_ns", BigInteger),  # when lnd accepted it
    Column("undoes_id", Integer),  # rolled_back / reverted: the change restored
    # estimated fees per month at the old and the new policy (what-if), if computed
    Column("whatif_before_msat", BigInteger),
    Column("whatif_after_msat", BigInteger),
    # measured effects, same-length windows before and after (evaluate_hours)
    Column("evaluated_ns", BigInteger),
    Column("effect_hours", Float),
    Column("forwards_before", Integer),
    Column("forwards_after", Integer),
    Column("fees_out_before_msat", BigInteger),
    Column("fees_out_after_msat", BigInteger),
    Column("fees_in_before_msat", BigInteger),
    Column("fees_in_after_msat", BigInteger),
    Column("failures_before", Integer),
    Column("failures_after", Integer),
    Column("missed_before_msat", BigInteger),
    Column("missed_after_msat", BigInteger),
    Column("verdict", Text),  # the revert verdict's reason
    Index("ix_policy_changes_node_id", "node_id", "chan_id", "created_ns"),
    Index("ix_policy_changes_run_id", "run_id"),
)

# --------------------------------------------------------------------------- 0018

# Row counts kept where the rows are written, so `lnflowctl status` reads a few rows
# instead of counting the event tables: ``table_name`` is htlc_events (``value`` = kind),
# forward_attempts (``value`` = outcome) or forwards (``value`` = 0). The ingest adds the
# events a batch stored in the batch's transaction (the hot path: one statement per kind,
# not a trigger per row; whoever else inserts into htlc_events must add them too);
# triggers of migration 0018 count everything else as SQLite writes it: the attempts'
# inserts, outcome changes and deletes, the ledger's inserts and deletes, the events'
# deletes (retention). A failed transaction takes its counts back with its rows.
# Counted per node (0019): each row for the node it is of.
row_counts = Table(
    "row_counts",
    metadata,
    Column("node_id", SmallInteger, primary_key=True, autoincrement=False),  # 0019
    Column("table_name", String, primary_key=True),
    Column("value", Integer, primary_key=True, autoincrement=False),
    Column("n", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# --------------------------------------------------------------------------- 0023

# Per node, the newest time at or before which retention may have deleted one of its
# local failures (a forward_attempts row: its resolved_ns) or a failure rollup period
# (the period's last nanosecond); written by both of lnflow.store.retention's delete
# paths (TTL and size budget) in the delete's transaction, never lowered. A window
# starting after it still has every raw failure the rollups count, and every rollup
# period it covers: its per-class failure counts from the rollups are the raw rows'
# counts (lnflow.store.read.details). No row: nothing of the node was ever deleted.
retention_horizons = Table(
    "retention_horizons",
    metadata,
    Column("node_id", SmallInteger, ForeignKey("nodes.id"), primary_key=True, autoincrement=False),
    Column("deleted_through_ns", BigInteger, nullable=False),
)
