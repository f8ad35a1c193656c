"""A channel sample as lnflowd's sampler hands it to the store, for the tests that only
care about a channel's balances."""

from __future__ import annotations

from lnflow.domain import ChannelInfo, ChannelSample, RoutingPolicy


def balance_sample(
    chan: int,
    local: int,
    remote: int,
    *,
    ours: RoutingPolicy | None = None,
    aliases: tuple[int, ...] = (),
    peer_alias: str = "bob",
) -> ChannelSample:
    """Channel ``chan`` with these balances (capacity their sum), active, no reserve, our
    policy ``ours`` (None: not known yet), its other ids ``aliases``."""
    info = ChannelInfo(
        chan_id=chan,
        remote_pubkey="03" + "bb" * 32,
        channel_point="p:0",
        capacity_sat=local + remote,
        local_balance_sat=local,
        remote_balance_sat=remote,
        local_reserve_sat=0,
        remote_reserve_sat=0,
        active=True,
        private=False,
        peer_alias="",
        uptime_s=0,
        lifetime_s=0,
        alias_scids=aliases,
    )
    return ChannelSample(info, ours, None, peer_alias)
