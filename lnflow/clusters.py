"""Demand clusters: retries and probes of one demand counted once (DESIGN §4).

The rule, applied to local failures in the order they are recorded:

* Each outgoing channel has at most one *open* cluster.
* A failure joins its outgoing channel's open cluster when all hold:
  - ``ts_ns − cluster's last failure ts ≤ window_ns``,
  - ``ts_ns − cluster's first failure ts ≤ max_span_ns`` (``cluster_max_span_s``,
    600 s in lnflowd: hours of steady demand are many payments, not one), and
  - it shares its incoming channel with any member, or its exact outgoing
    amount with any member.
* Otherwise it opens a new cluster, which becomes the channel's open cluster
  (the previous one is closed for good).
* A cluster's missed fee is its largest member's missed fee.

Clusters close by **event time only**: the clock is the newest event timestamp
recorded so far (:meth:`ClusterAssigner.advance`, and every assigned failure),
which only moves forward. A cluster whose last failure is more than the window
before it is closed, even for a late event dated earlier (an event from another
subscription, or lnd's clock stepping back): so whether it is still held in
memory (:meth:`ClusterAssigner.expire`) never changes an assignment, and the
same events in the same order give the same clusters however they were cut into
batches, subscriptions or daemon runs (:meth:`ClusterAssigner.restore` reloads the
open clusters at start). The wall clock plays no part.

Each assignment reports how much the cluster's missed fee grew
(``missed_delta_msat``, the whole fee for a new cluster), so rollups can add
deduplicated missed fees incrementally: the deltas of a cluster's failures
sum to its missed fee, and summed over all failures to the deduplicated total.

Sans-I/O: time is passed in. :meth:`ClusterAssigner.expire` drops the closed
clusters, so memory is bounded by the channels with a failure in the last
window (of event time); an open cluster holds its distinct incoming channels
and outgoing amounts.
"""

from __future__ import annotations

from collections.abc import Iterable
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
        self._latest_ns = -(1 << 63)  # the newest event time seen: the clusters' clock

    @property
    def next_id(self) -> int:
        """The id the next new cluster will get."""
        return self._next_id

    def skip_to(self, first_id: int) -> None:
        """New clusters get ``first_id`` or more: ids up to it were taken meanwhile (by
        another node's recording into the same store)."""
        if first_id > self._next_id:
            self._next_id = first_id

    @property
    def open_clusters(self) -> int:
        return len(self._open)

    @property
    def latest_ns(self) -> int:
        """The newest event time seen (the clock clusters close by)."""
        return self._latest_ns

    def advance(self, ts_ns: int) -> None:
        """Note a recorded event's time: the clock moves to it if it is newer."""
        if ts_ns > self._latest_ns:
            self._latest_ns = ts_ns

    def restore(
        self,
        outgoing_channel_id: int,
        cluster_id: int,
        *,
        first_ns: int,
        last_ns: int,
        members: int,
        missed_fee_msat: int,
        incoming_channel_ids: Iterable[int],
        amounts_msat: Iterable[int],
    ) -> None:
        """Reopen a cluster recorded before (a restart): the channel's open cluster again.

        ``next_id`` moves past its id; call :meth:`advance` with the newest recorded event
        time as well, so it closes when it would have.
        """
        cluster = _Cluster(cluster_id, 0, 0, first_ns)
        cluster.incoming = set(incoming_channel_ids)
        cluster.amounts = set(amounts_msat)
        cluster.last_ts_ns = last_ns
        cluster.members = members
        cluster.missed_fee_msat = missed_fee_msat
        self._open[outgoing_channel_id] = cluster
        if cluster_id >= self._next_id:
            self._next_id = cluster_id + 1
        self.advance(last_ns)

    def assign(
        self,
        outgoing_channel_id: int,
        incoming_channel_id: int,
        outgoing_amt_msat: int,
        missed_fee_msat: int,
        ts_ns: int,
    ) -> ClusterUpdate:
        if ts_ns > self._latest_ns:
            self._latest_ns = ts_ns
        cluster = self._open.get(outgoing_channel_id)
        if (
            cluster is not None
            and self._latest_ns - cluster.last_ts_ns <= self._window_ns  # still open
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

    def expire(self) -> int:
        """Drop the clusters closed at the newest event time; how many were dropped.

        Only memory: a closed cluster can no longer be joined, whether it is held or not.
        """
        cutoff = self._latest_ns - self._window_ns
        stale = [chan for chan, c in self._open.items() if c.last_ts_ns < cutoff]
        for chan in stale:
            del self._open[chan]
        return len(stale)
