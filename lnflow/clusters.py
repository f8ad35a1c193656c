"""Demand clusters: retries and probes of one demand counted once (DESIGN §4).

The rule, applied to local failures in the order they are recorded:

* Each outgoing channel has at most one *open* cluster.
* A failure joins its outgoing channel's open cluster when both hold:
  - ``ts_ns − cluster's last failure ts ≤ window_ns``, and
  - it shares its incoming channel with any member, or its exact outgoing
    amount with any member.
* Otherwise it opens a new cluster, which becomes the channel's open cluster
  (the previous one is closed for good).
* A cluster's missed fee is its largest member's missed fee.
* Beyond DESIGN §4: a cluster spans at most ``max_span_ns`` from its first
  failure (default: unlimited). Without it a channel failing steadily for the
  same incoming channel, more often than the window, would chain hours of
  distinct payments into one cluster and price them as one missed fee.

Each assignment reports how much the cluster's missed fee grew
(``missed_delta_msat``, the whole fee for a new cluster), so rollups can add
deduplicated missed fees incrementally: the deltas of a cluster's failures
sum to its missed fee, and summed over all failures to the deduplicated total.

Sans-I/O: time is passed in. :meth:`ClusterAssigner.expire` drops open
clusters idle longer than the window (they can no longer be joined), so memory
is bounded by the channels with a failure in the last window; an open cluster
holds its distinct incoming channels and outgoing amounts.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClusterAssigner", "ClusterUpdate"]


@dataclass(frozen=True, slots=True)
class ClusterUpdate:
    """The cluster a failure was assigned to, after the assignment."""

    cluster_id: int
    is_new: bool
    members: int
    missed_fee_msat: int  # the cluster's (largest member's) missed fee
    missed_delta_msat: int  # growth of missed_fee_msat due to this failure


class _Cluster:
    __slots__ = (
        "amounts",
        "cluster_id",
        "first_ts_ns",
        "incoming",
        "last_ts_ns",
        "members",
        "missed_fee_msat",
    )

    def __init__(self, cluster_id: int, incoming_channel_id: int, amount_msat: int, ts_ns: int):
        self.cluster_id = cluster_id
        self.incoming = {incoming_channel_id}
        self.amounts = {amount_msat}
        self.first_ts_ns = ts_ns
        self.last_ts_ns = ts_ns
        self.members = 1
        self.missed_fee_msat = 0


class ClusterAssigner:
    """Assigns local failures to demand clusters, numbering them from ``first_id``."""

    def __init__(self, window_ns: int, first_id: int = 1, max_span_ns: int | None = None) -> None:
        if window_ns < 0:
            raise ValueError(f"window_ns must not be negative, got {window_ns}")
        self._window_ns = window_ns
        self._max_span_ns = max_span_ns if max_span_ns is not None else 1 << 62
        self._next_id = first_id
        self._open: dict[int, _Cluster] = {}  # outgoing channel → its open cluster

    @property
    def next_id(self) -> int:
        """The id the next new cluster will get."""
        return self._next_id

    @property
    def open_clusters(self) -> int:
        return len(self._open)

    def assign(
        self,
        outgoing_channel_id: int,
        incoming_channel_id: int,
        outgoing_amt_msat: int,
        missed_fee_msat: int,
        ts_ns: int,
    ) -> ClusterUpdate:
        cluster = self._open.get(outgoing_channel_id)
        if (
            cluster is not None
            and ts_ns - cluster.last_ts_ns <= self._window_ns
            and ts_ns - cluster.first_ts_ns <= self._max_span_ns
            and (incoming_channel_id in cluster.incoming or outgoing_amt_msat in cluster.amounts)
        ):
            cluster.incoming.add(incoming_channel_id)
            cluster.amounts.add(outgoing_amt_msat)
            cluster.members += 1
            if ts_ns > cluster.last_ts_ns:
                cluster.last_ts_ns = ts_ns
            is_new = False
        else:
            cluster = _Cluster(self._next_id, incoming_channel_id, outgoing_amt_msat, ts_ns)
            self._next_id += 1
            self._open[outgoing_channel_id] = cluster
            is_new = True
        delta = missed_fee_msat - cluster.missed_fee_msat
        if delta > 0:
            cluster.missed_fee_msat = missed_fee_msat
        else:
            delta = 0
        return ClusterUpdate(
            cluster_id=cluster.cluster_id,
            is_new=is_new,
            members=cluster.members,
            missed_fee_msat=cluster.missed_fee_msat,
            missed_delta_msat=delta,
        )

    def expire(self, now_ns: int) -> int:
        """Close open clusters idle longer than the window; how many were closed."""
        cutoff = now_ns - self._window_ns
        stale = [chan for chan, c in self._open.items() if c.last_ts_ns < cutoff]
        for chan in stale:
            del self._open[chan]
        return len(stale)
