"""Channels as ListChannels and the graph show them on real nodes: peer aliases that
cannot be looked up, alias SCIDs and zero-conf channels that confirmed."""

from __future__ import annotations

from pathlib import Path

from daemonproc import Daemon, query
from simnode import SimNode

from lnflow.domain import to_signed64

CHAN_A = (810_000 << 40) | (1 << 16)
CHAN_B = (810_001 << 40) | (2 << 16) | 1


def sampled(d: Daemon, channels: int) -> None:
    d.wait_for(
        lambda c: c.execute("SELECT count(*) FROM channel_samples").fetchone()[0] >= channels,
        timeout=30,
    )


def test_an_alias_lookup_error_is_never_stored_as_the_peer_alias(tmp_path: Path) -> None:
    """lnd >= 0.16 with peer_alias_lookup writes "unable to lookup peer alias: ..." for a
    peer whose node announcement it lacks; that falls back as an empty alias would."""
    script = [
        {"op": "channel", "chan_id": CHAN_A, "peer_alias": "known-peer"},
        {"op": "channel", "chan_id": CHAN_B, "peer_alias": "hidden", "announced": False},
    ]
    db = tmp_path / "s.db"
    with SimNode(tmp_path / "lnd", script=script) as sim, Daemon(sim, db) as d:
        sampled(d, 2)
        assert d.stop() == 0
    aliases = dict(query(db, "SELECT chan_id, peer_alias FROM channels"))
    assert aliases == {to_signed64(CHAN_A): "known-peer", to_signed64(CHAN_B): ""}
