"""The simulated LND node: pure parts in-process, the server as a real process over gRPC."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from simnode import SimNode, make_channel

from lnflow.domain import EventType, FailureDetail, ForwardRecord, WireFailure
from lnflow.lnd._proto import lightning_pb2 as ln
from lnflow.lnd._proto import (
    lightning_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    verrpc_pb2,
    verrpc_pb2_grpc,
)
from lnflow.sim.events import SimEvent, event_from_json, event_to_json
from lnflow.sim.hub import Hub, htlc_event_message, htlc_event_payload
from lnflow.sim.main import event_loop_factory
from lnflow.sim.main import main as sim_main
from lnflow.sim.model import TrafficModel, TrafficParams, _check_forward
from lnflow.sim.script import ChannelOp, ScriptError, apply_channel_op, parse_script
from lnflow.sim.state import (
    EDGE_NOT_FOUND,
    ENABLE_INACTIVE,
    ForwardLog,
    NodeState,
    StatusError,
    model_channels,
    parse_version,
)

pytestmark = pytest.mark.timeout(30)

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
ALIAS_SCID = (16_000_000 << 40) | (1 << 16)  # "16000000x1x0", >= 2^63
MAX_U64 = (1 << 64) - 1


# --------------------------------------------------------------------------- pure parts

QUIET = TrafficParams(
    probe_share=0,
    downstream_fail_share=0,
    cheap_sender_share=0,
    cltv_fail_share=0,
    onion_fail_share=0,
    intercept_share=0,
    add_failed_share=0,
    dust_share=0,
    circular_share=0,
    receive_share=0,
    send_share=0,
    offline_per_hour=0,
)


def two_channel_node(**out_fields: Any) -> NodeState:
    """A (payments come in here) -> B (and want to go out here)."""
    node = NodeState(3, parse_version("0.18.3"), "test", "regtest", start_ns=T0)
    apply_channel_op(node, ChannelOp(1 << 40, (("demand_out", 0.0),)), T0)
    fields = {"demand_in": 0.0, "capacity_sat": 5_000_000, **out_fields}
    apply_channel_op(node, ChannelOp(2 << 40, tuple(fields.items())), T0)
    return node


def run(model: TrafficModel, seconds: float, rate: float) -> list[SimEvent]:
    events = model.advance(T0, 0)
    for tick in range(1, int(seconds * 100) + 1):
        events += model.advance(T0 + tick * NS // 100, rate)
    return events


def test_model_is_deterministic_per_seed() -> None:
    def events(seed: int) -> list[SimEvent]:
        node = NodeState(seed, parse_version("0.18.3"), "n", "regtest", start_ns=T0)
        node.channels = {c.chan_id: c for c in model_channels(6, seed)}
        return run(TrafficModel(node, seed), seconds=5, rate=200)

    first = events(11)
    assert len(first) > 500
    assert first == events(11)
    assert first != events(12)


def test_model_balances_move_on_settle() -> None:
    node = two_channel_node()
    a, b = node.channels[1 << 40], node.channels[2 << 40]
    start = {c.chan_id: (c.local_msat, c.remote_msat) for c in (a, b)}
    model = TrafficModel(node, 5, QUIET)
    run(model, seconds=2, rate=50)
    model.advance(T0 + 60 * NS, 0)  # let everything in flight resolve
    records = list(node.forwards)
    assert records and a.unsettled_msat == 0 and b.unsettled_msat == 0
    amt_in = sum(r.amt_in_msat for r in records)
    amt_out = sum(r.amt_out_msat for r in records)
    assert a.local_msat == start[a.chan_id][0] + amt_in
    assert a.remote_msat == start[a.chan_id][1] - amt_in
    assert b.local_msat == start[b.chan_id][0] - amt_out
    assert b.remote_msat == start[b.chan_id][1] + amt_out
    for r in records:
        assert (r.chan_id_in, r.chan_id_out) == (a.chan_id, b.chan_id)
        assert r.fee_msat == b.ours.fee_msat(r.amt_out_msat) == r.amt_in_msat - r.amt_out_msat
    assert len({r.timestamp_ns for r in records}) == len(records)


LIQUIDITY = (int(WireFailure.TEMPORARY_CHANNEL_FAILURE), int(FailureDetail.INSUFFICIENT_BALANCE))


@pytest.mark.parametrize(
    ("out_fields", "params", "expected"),
    [
        pytest.param({"local_balance_sat": 50_000}, QUIET, LIQUIDITY, id="liquidity"),
        pytest.param(
            {"max_htlc_msat": 1000},
            QUIET,
            (WireFailure.TEMPORARY_CHANNEL_FAILURE, FailureDetail.HTLC_EXCEEDS_MAX),
            id="max_htlc",
        ),
        pytest.param(
            {},
            replace(QUIET, cheap_sender_share=1.0),
            (WireFailure.FEE_INSUFFICIENT, FailureDetail.NO_DETAIL),
            id="fee",
        ),
        pytest.param(
            {"active": False},
            QUIET,
            (WireFailure.UNKNOWN_NEXT_PEER, FailureDetail.NO_DETAIL),
            id="peer-offline-link-removed",
        ),
        pytest.param(
            {},
            replace(QUIET, reject_htlc=True),
            (WireFailure.CHANNEL_DISABLED, FailureDetail.FORWARDS_DISABLED),
            id="node-rejects-htlcs",
        ),
    ],
)
def test_model_failures_follow_the_state(
    out_fields: dict[str, Any], params: TrafficParams, expected: tuple[int, int]
) -> None:
    node = two_channel_node(**out_fields)
    events = run(TrafficModel(node, 9, params), seconds=3, rate=100)
    fails = [e for e in events if e.kind == "link_fail"]
    assert fails and {(e.wire_failure, e.failure_detail) for e in fails} == {expected}
    for e in fails:
        assert e.outgoing_channel_id == 2 << 40 and e.outgoing_htlc_id == 0
        assert e.incoming_amt_msat > e.outgoing_amt_msat > 0 and e.failure_string
    final = {(e.incoming_channel_id, e.incoming_htlc_id): e for e in events if e.kind == "final"}
    assert all(final[e.incoming_channel_id, e.incoming_htlc_id].settled is False for e in fails)
    tries = Counter(e.outgoing_amt_msat for e in events if e.kind in ("link_fail", "forward"))
    retried = any(tries[e.outgoing_amt_msat] >= 2 for e in fails)  # the same sender, again
    assert retried == (expected[1] != FailureDetail.HTLC_EXCEEDS_MAX)
    if expected == LIQUIDITY:
        assert fails[0].failure_string == "insufficient bandwidth to route htlc"
        assert not node.forwards


def test_a_disabled_policy_does_not_stop_forwarding() -> None:
    # lnd disables a channel's policy (gossip) but still forwards over its link
    node = two_channel_node(disabled=True)
    events = run(TrafficModel(node, 9, QUIET), seconds=2, rate=100)
    assert [e for e in events if e.kind == "forward"]
    assert not [e for e in events if e.kind == "link_fail"]


def test_a_manual_disable_stops_the_traffic_until_enabled() -> None:
    # senders leave a channel announced disabled by hand; lnd's automatic enable on
    # reconnect leaves it disabled until ENABLE or AUTO (its chanstatus manager)
    node = two_channel_node()
    out = node.channels[2 << 40]
    model = TrafficModel(node, 9, QUIET)

    def tries(start_s: int) -> int:
        """Forwards tried over ``out`` in one second, from balanced channels."""
        for chan in node.channels.values():
            chan.local_msat = chan.remote_msat = chan.capacity_sat * 500
        events = model.advance(T0 + start_s * NS, 0)  # no payments banked for the pause
        for tick in range(1, 101):
            events += model.advance(T0 + start_s * NS + tick * NS // 100, 30)
        return sum(e.kind in ("forward", "link_fail") and e.outgoing_channel_id == out.chan_id
                   for e in events)  # fmt: skip

    model.advance(T0, 0)
    assert tries(0) > 10
    node.update_status(out, "disable", T0 + 3 * NS)
    assert out.ours.disabled and out.manually_disabled
    assert tries(3) == 0

    # the peer goes away and comes back: lnd would re-enable, but not this one
    out.set_online(False, T0 + 6 * NS)
    out.offline_until_ns = T0 + 6 * NS + NS // 2
    with pytest.raises(StatusError, match=ENABLE_INACTIVE):
        node.update_status(out, "enable", T0 + 6 * NS)
    assert tries(6) == 0
    assert out.online and out.ours.disabled

    node.update_status(out, "enable", T0 + 9 * NS)
    assert not out.ours.disabled and not out.manually_disabled
    assert tries(20) > 10

    # AUTO only hands it back: disabled until lnd enables it on the next reconnect
    node.update_status(out, "disable", T0 + 23 * NS)
    node.update_status(out, "auto", T0 + 23 * NS)
    assert out.ours.disabled and not out.manually_disabled
    out.set_online(False, T0 + 24 * NS)
    out.offline_until_ns = T0 + 25 * NS
    model.advance(T0 + 26 * NS, 0)
    assert out.online and not out.ours.disabled

    with pytest.raises(StatusError, match=EDGE_NOT_FOUND):
        node.update_status(None, "disable", T0)


def _chans(local_sat: int = 2_000_000, **ours: Any) -> tuple[Any, Any]:
    node = two_channel_node(local_balance_sat=local_sat, **ours)
    return node.channels[1 << 40], node.channels[2 << 40]


H = 880_000


@pytest.mark.parametrize(
    ("fee_first", "expected"),
    [(True, WireFailure.FEE_INSUFFICIENT), (False, WireFailure.TEMPORARY_CHANNEL_FAILURE)],
    ids=["0.18-fee-first", "0.17-balance-first"],
)
def test_policy_check_order_follows_the_version(fee_first: bool, expected: int) -> None:
    # short of fee and of balance at once: which failure lnd reports depends on its version
    source, target = _chans(local_sat=60_000)
    amt_out = 100_000_000
    got = _check_forward(source, target, amt_out, amt_out, H + 200, H + 100, H, fee_first=fee_first)
    assert got is not None and got[0] == expected


@pytest.mark.parametrize(
    ("in_lock", "out_lock", "expected"),
    [
        (H + 13 + 80, H + 13, WireFailure.EXPIRY_TOO_SOON),
        (H + 14 + 80, H + 14, None),
        (H + 2017 + 80, H + 2017, WireFailure.EXPIRY_TOO_FAR),
        (H + 100 + 79, H + 100, WireFailure.INCORRECT_CLTV_EXPIRY),
    ],
    ids=["too-soon-at-height-plus-13", "just-in-time", "too-far", "cltv-delta"],
)
def test_expiry_checks_like_lnd(in_lock: int, out_lock: int, expected: int | None) -> None:
    source, target = _chans()
    amt_out = 1_000_000
    amt_in = amt_out + target.ours.fee_msat(amt_out)
    got = _check_forward(source, target, amt_in, amt_out, in_lock, out_lock, H)
    assert (got[0] if got else None) == expected


def test_a_link_not_ready_is_not_eligible_and_a_gone_one_is_an_unknown_peer() -> None:
    source, target = _chans()
    args = (source, target, 1_100_000, 1_000_000, H + 180, H + 100, H)
    got = _check_forward(*args, link_ready=False)
    assert got and got[:2] == (WireFailure.UNKNOWN_NEXT_PEER, FailureDetail.LINK_NOT_ELIGIBLE)
    target.online = False
    got = _check_forward(*args, link_ready=False)
    assert got and got[:2] == (WireFailure.UNKNOWN_NEXT_PEER, FailureDetail.NO_DETAIL)


def test_model_mix_has_every_outcome() -> None:
    node = NodeState(4, parse_version("0.18.3"), "n", "regtest", start_ns=T0)
    node.channels = {c.chan_id: c for c in model_channels(8, 4)}
    events = run(TrafficModel(node, 4), seconds=30, rate=100)
    kinds = Counter(e.kind for e in events)
    assert {"forward", "settle", "forward_fail", "link_fail", "final"} <= set(kinds)
    assert not [e for e in events if e.failure_detail == FailureDetail.ONION_DECODE]
    by_key: dict[tuple[int, int], list[SimEvent]] = {}
    for e in events:
        if e.event_type in (EventType.FORWARD, EventType.UNKNOWN):
            by_key.setdefault((e.incoming_channel_id, e.incoming_htlc_id), []).append(e)
    shapes = Counter(tuple(e.kind for e in evs) for evs in by_key.values())
    assert shapes[("final",)] > 0  # malformed onions: lnd sends only the FINAL
    assert shapes[("forward_fail", "final")] > 0  # interceptor: no FORWARD before it
    rejected = [evs[0] for evs in by_key.values() if evs[0].kind == "forward_fail"]
    assert all(e.outgoing_htlc_id == 0 and e.outgoing_channel_id for e in rejected)
    mailbox = [e for e in events if e.kind == "link_fail" and not e.incoming_amt_msat]
    assert {(e.wire_failure, e.failure_detail) for e in mailbox} == {
        (WireFailure.TEMPORARY_CHANNEL_FAILURE, FailureDetail.HTLC_ADD_FAILED),
        (WireFailure.TEMPORARY_CHANNEL_FAILURE, FailureDetail.NO_DETAIL),
    }
    assert all(
        e.outgoing_amt_msat == e.incoming_timelock == e.outgoing_timelock == 0
        and e.outgoing_channel_id
        for e in mailbox
    )
    sends = [e for e in events if e.event_type == EventType.SEND]
    assert sends and all(e.incoming_channel_id == 0 and e.kind != "final" for e in sends)
    assert any(c.chan_id >= 1 << 63 for c in node.channels.values())
    htlc_ids: dict[int, list[int]] = {}
    for e in events:
        if e.kind == "forward":
            htlc_ids.setdefault(e.outgoing_channel_id, []).append(e.outgoing_htlc_id)
    assert all(ids == sorted(set(ids)) for ids in htlc_ids.values())


@pytest.mark.parametrize(
    "kind", ["forward", "forward_fail", "settle", "link_fail", "final", "subscribed"]
)
@pytest.mark.parametrize("big", [False, True])
def test_payload_is_the_message_serialized(kind: str, big: bool) -> None:
    # the streams' bytes are assembled from parts; they must equal the whole message's
    n = MAX_U64 if big else 0
    event = SimEvent(
        kind=kind,
        event_type=int(EventType.FORWARD) if big else 0,
        incoming_channel_id=n,
        incoming_htlc_id=n,
        outgoing_channel_id=ALIAS_SCID if big else 0,
        outgoing_htlc_id=300 if big else 0,
        timestamp_ns=T0 if big else 0,
        incoming_amt_msat=n,
        outgoing_amt_msat=n,
        incoming_timelock=(1 << 32) - 1 if big else 0,
        outgoing_timelock=880_000 if big else 0,
        wire_failure=int(WireFailure.FEE_INSUFFICIENT) if big else 0,
        failure_detail=999 if big else 0,  # unknown numbers pass through
        failure_string="x" * 200 if big else "",  # a sub-message longer than 127 bytes
        settled=big,
        offchain=big,
        preimage=bytes(range(32)) if big else b"",
    )
    assert htlc_event_payload(event) == htlc_event_message(event).SerializeToString()
    for settled, offchain in ((True, False), (False, True)):
        mixed = replace(event, settled=settled, offchain=offchain)
        assert htlc_event_payload(mixed) == htlc_event_message(mixed).SerializeToString()


def test_forward_log_bumps_collisions_and_queries_like_lnd() -> None:
    log = ForwardLog()
    rec = ForwardRecord(T0, 1, 2, 2000, 1000, 1000)
    stored = [log.append(rec) for _ in range(3)] + [log.append(replace(rec, timestamp_ns=T0 - 5))]
    assert [r.timestamp_ns for r in stored] == [T0, T0 + 1, T0 + 2, T0 - 5]
    assert [r.timestamp_ns for r in log] == [T0 - 5, T0, T0 + 1, T0 + 2]
    assert [r.timestamp_ns for r in log.query(T0, T0 + 1, 0, 100)] == [T0, T0 + 1]
    assert [r.timestamp_ns for r in log.query(0, T0 + 9, 1, 2)] == [T0, T0 + 1]


def test_script_parsing() -> None:
    ops = parse_script(
        "# comment\n\n"
        '{"event": "link_fail", "incoming_channel_id": "16000000x1x0", "event_type": 7,'
        ' "wire_failure": "FEE_INSUFFICIENT", "failure_detail": 99}\n'
        '{"op": "sleep", "seconds": 0.1}\n'
    )
    assert len(ops) == 2
    event = ops[0].event  # type: ignore[union-attr]
    assert (event.incoming_channel_id, event.event_type) == (ALIAS_SCID, 7)
    assert (event.wire_failure, event.failure_detail) == (12, 99)
    assert event_from_json(event_to_json(event)) == event
    with pytest.raises(ScriptError, match="line 2: unknown op 'nap'"):
        parse_script('{"op": "sleep", "seconds": 1}\n{"op": "nap"}')
    with pytest.raises(ScriptError, match="line 1: settle events have no field"):
        parse_script('{"event": "settle", "wire_failure": 1}')


def test_doc_examples_parse() -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "sim-script.md"
    blocks = re.findall(r"```jsonl\n(.*?)```", doc.read_text(), re.S)
    assert len(blocks) >= 4 and all(parse_script(block) for block in blocks)


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sim_main(["--help"])
    assert exit_info.value.code == 0 and "--event-log" in capsys.readouterr().out


def test_bad_script_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "bad.jsonl"
    script.write_text('{"op": "channel"}\n')
    assert sim_main(["--lnddir", str(tmp_path / "lnd"), "--script", str(script)]) == 2
    assert "line 1: chan_id is required" in capsys.readouterr().err


# --------------------------------------------------------------------------- over gRPC


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., SimNode]]:
    started: list[SimNode] = []

    def start(**kwargs: Any) -> SimNode:
        sim = SimNode(tmp_path / f"lnd{len(started)}", **kwargs)
        started.append(sim)
        return sim.start()

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def channels() -> Iterator[Callable[..., Any]]:
    opened: list[Any] = []

    def open_channel(sim: SimNode, macaroon_name: str | None = "admin") -> Any:
        channel = make_channel(sim, macaroon_name)
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        channel.close()


def lightning(channel: Any) -> Any:
    return lightning_pb2_grpc.LightningStub(channel)  # type: ignore[no-untyped-call]


def router(channel: Any) -> Any:
    return router_pb2_grpc.RouterStub(channel)  # type: ignore[no-untyped-call]


def versioner(channel: Any) -> Any:
    return verrpc_pb2_grpc.VersionerStub(channel)  # type: ignore[no-untyped-call]


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


@pytest.mark.e2e
def test_macaroons_are_checked_like_lnd(node_factory: Any, channels: Any) -> None:
    sim = node_factory(args=("--rate", "0"))
    bare = lightning(channels(sim, None))
    err = rpc_error(lambda: bare.GetInfo(ln.GetInfoRequest(), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == "expected 1 macaroon, got 0"
    err = rpc_error(
        lambda: bare.GetInfo(ln.GetInfoRequest(), metadata=[("macaroon", "0201ff")], timeout=5)
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == "verification failed: signature mismatch after caveat verification"
    stream = router(channels(sim, None)).SubscribeHtlcEvents(
        router_pb2.SubscribeHtlcEventsRequest(), timeout=5
    )
    assert rpc_error(lambda: next(stream)).code() == grpc.StatusCode.UNAUTHENTICATED

    readonly = lightning(channels(sim, "readonly"))
    chan = readonly.ListChannels(ln.ListChannelsRequest(), timeout=5).channels[0]
    txid, index = chan.channel_point.split(":")
    update = ln.PolicyUpdateRequest(
        chan_point=ln.ChannelPoint(funding_txid_str=txid, output_index=int(index)),
        base_fee_msat=0,
        fee_rate_ppm=4242,
        time_lock_delta=40,
        max_htlc_msat=1_000_000,
    )
    err = rpc_error(lambda: readonly.UpdateChannelPolicy(update, timeout=5))
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED, "permission denied")

    admin = lightning(channels(sim, "admin"))
    assert not admin.UpdateChannelPolicy(update, timeout=5).failed_updates
    info = readonly.GetInfo(ln.GetInfoRequest(), timeout=5)
    edge = readonly.GetChanInfo(ln.ChanInfoRequest(chan_id=chan.chan_id), timeout=5)
    assert edge.node1_pub < edge.node2_pub
    ours = edge.node1_policy if edge.node1_pub == info.identity_pubkey else edge.node2_policy
    assert (ours.fee_base_msat, ours.fee_rate_milli_msat, ours.time_lock_delta) == (0, 4242, 40)
    assert ours.max_htlc_msat == 1_000_000
    fees = {f.chan_id: f for f in readonly.FeeReport(ln.FeeReportRequest()).channel_fees}
    assert fees[chan.chan_id].fee_per_mil == 4242

    both = replace_request(update, fee_rate=0.001)
    err = rpc_error(lambda: admin.UpdateChannelPolicy(both, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    short = replace_request(update, time_lock_delta=10)
    assert rpc_error(lambda: admin.UpdateChannelPolicy(short)).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


@pytest.mark.e2e
@pytest.mark.parametrize("version", ["0.18.3", "0.12.1"])
def test_update_chan_status_like_lnd(node_factory: Any, channels: Any, version: str) -> None:
    sim = node_factory(args=("--rate", "0"), lnd_version=version)
    readonly = lightning(channels(sim, "readonly"))
    info = readonly.GetInfo(ln.GetInfoRequest(), timeout=5)
    chan = readonly.ListChannels(ln.ListChannelsRequest(), timeout=5).channels[0]

    def disabled() -> bool:
        edge = readonly.GetChanInfo(ln.ChanInfoRequest(chan_id=chan.chan_id), timeout=5)
        ours = edge.node1_policy if edge.node1_pub == info.identity_pubkey else edge.node2_policy
        return bool(ours.disabled)

    txid, index = chan.channel_point.split(":")
    point = ln.ChannelPoint(funding_txid_str=txid, output_index=int(index))
    disable = router_pb2.UpdateChanStatusRequest(chan_point=point, action=router_pb2.DISABLE)
    admin = router(channels(sim, "admin"))
    if version == "0.12.1":  # UpdateChanStatus came with lnd 0.13
        err = rpc_error(lambda: admin.UpdateChanStatus(disable, timeout=5))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
        return

    err = rpc_error(lambda: router(channels(sim, "readonly")).UpdateChanStatus(disable, timeout=5))
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED, "permission denied")
    assert not disabled()

    admin.UpdateChanStatus(disable, timeout=5)
    assert disabled()
    by_bytes = ln.ChannelPoint(
        funding_txid_bytes=bytes.fromhex(txid)[::-1], output_index=int(index)
    )
    admin.UpdateChanStatus(
        router_pb2.UpdateChanStatusRequest(chan_point=by_bytes, action=router_pb2.ENABLE), timeout=5
    )
    assert not disabled()

    unknown = ln.ChannelPoint(funding_txid_str="00" * 32, output_index=0)
    err = rpc_error(
        lambda: admin.UpdateChanStatus(
            router_pb2.UpdateChanStatusRequest(chan_point=unknown, action=router_pb2.DISABLE),
            timeout=5,
        )
    )
    assert (err.code(), err.details()) == (grpc.StatusCode.UNKNOWN, EDGE_NOT_FOUND)


def replace_request(msg: Any, **fields: Any) -> Any:
    copy = type(msg)()
    copy.CopyFrom(msg)
    for name, value in fields.items():
        setattr(copy, name, value)
    return copy


@pytest.mark.e2e
def test_info_rpcs(node_factory: Any, channels: Any) -> None:
    sim = node_factory(args=("--rate", "0", "--seed", "5", "--alias", "simmy"))
    stub = lightning(channels(sim, "readonly"))
    info = stub.GetInfo(ln.GetInfoRequest(), timeout=5)
    assert info.alias == "simmy" and len(bytes.fromhex(info.identity_pubkey)) == 33
    assert info.version == "0.18.3-beta commit=v0.18.3-beta"
    assert [(c.chain, c.network) for c in info.chains] == [("bitcoin", "regtest")]
    version = versioner(channels(sim, "readonly")).GetVersion(
        verrpc_pb2.VersionRequest(), timeout=5
    )
    assert (version.version, version.app_major, version.app_minor, version.app_patch) == (
        "0.18.3-beta",
        0,
        18,
        3,
    )
    plain = stub.ListChannels(ln.ListChannelsRequest(), timeout=5).channels
    named = stub.ListChannels(ln.ListChannelsRequest(peer_alias_lookup=True)).channels
    assert len(plain) == 8 and any(c.chan_id >= 1 << 63 for c in plain)
    assert all(not c.peer_alias for c in plain) and all(c.peer_alias for c in named)
    assert all(c.local_constraints.chan_reserve_sat > 0 for c in plain)
    node = stub.GetNodeInfo(ln.NodeInfoRequest(pub_key=plain[0].remote_pubkey), timeout=5)
    assert node.node.alias == named[0].peer_alias
    for call in (
        lambda: stub.GetChanInfo(ln.ChanInfoRequest(chan_id=12345), timeout=5),
        lambda: stub.GetNodeInfo(ln.NodeInfoRequest(pub_key="02" + "11" * 32), timeout=5),
    ):
        assert rpc_error(call).code() == grpc.StatusCode.NOT_FOUND


B = 1_700_000_000  # a second: ledger records are placed around it
E = B + 1000


def ledger_script() -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = [
        {
            "op": "forwarding_event",
            "timestamp_ns": (B + i) * NS + 500_000_000,
            "chan_id_in": 100 + i % 3,
            "chan_id_out": 200,
            "amt_in_msat": 1_001_999,
            "amt_out_msat": 1_000_000,
            "incoming_htlc_id": i,
            "outgoing_htlc_id": i,
        }
        for i in range(250)
    ]
    edge = {"op": "forwarding_event", "chan_id_in": 1, "chan_id_out": 2}
    edge |= {"amt_in_msat": 2000, "amt_out_msat": 1000}
    lines += [
        edge | {"timestamp_ns": E * NS - 1},
        edge | {"timestamp_ns": E * NS},
        edge | {"timestamp_ns": E * NS},  # taken: stored at E s + 1 ns
    ]
    return lines


def history(stub: Any, **request: Any) -> tuple[list[int], int]:
    resp = stub.ForwardingHistory(ln.ForwardingHistoryRequest(**request), timeout=5)
    return [e.timestamp_ns for e in resp.forwarding_events], resp.last_offset_index


@pytest.mark.e2e
def test_forwarding_history_pages_like_lnd(node_factory: Any, channels: Any) -> None:
    sim = node_factory(script=ledger_script())
    stub = lightning(channels(sim, "readonly"))
    seen: list[int] = []
    offsets = []
    offset = 0
    while True:
        page, offset = history(
            stub, start_time=B, end_time=B + 500, index_offset=offset, num_max_events=100
        )
        offsets.append(offset)
        if not page:
            break
        seen += page
    assert offsets == [100, 200, 250, 250]
    assert seen == sorted(set(seen)) and len(seen) == 250
    assert len(history(stub, start_time=B, end_time=B + 500)[0]) == 100  # 0 means 100

    assert history(stub, start_time=E, end_time=E)[0] == [E * NS]
    assert history(stub, start_time=E, end_time=E + 1)[0] == [E * NS, E * NS + 1]
    assert history(stub, start_time=E - 1, end_time=E)[0] == [E * NS - 1, E * NS]
    assert history(stub, start_time=E - 1, end_time=0)[1] == 3  # end 0: now

    resp = stub.ForwardingHistory(
        ln.ForwardingHistoryRequest(start_time=B, end_time=B + 1, incoming_chan_ids=[101])
    )
    event = resp.forwarding_events[0]
    assert len(resp.forwarding_events) == 1  # filter ignored before 0.20
    assert (event.amt_in, event.fee, event.fee_msat) == (1001, 1, 1999)
    assert not event.HasField("incoming_htlc_id")  # set only from 0.19.2


@pytest.mark.e2e
def test_forwarding_history_filters_and_htlc_ids_on_0_20(node_factory: Any, channels: Any) -> None:
    sim = node_factory(script=ledger_script(), lnd_version="0.20.0")
    stub = lightning(channels(sim, "readonly"))
    resp = stub.ForwardingHistory(
        ln.ForwardingHistoryRequest(start_time=B, end_time=B + 500, incoming_chan_ids=[101])
    )
    assert len(resp.forwarding_events) == 83
    assert {e.chan_id_in for e in resp.forwarding_events} == {101}
    first = resp.forwarding_events[0]
    assert first.HasField("incoming_htlc_id") and first.incoming_htlc_id == 1


def subscribe(sim: SimNode, channels: Any) -> Any:
    stub = router(channels(sim, "readonly"))
    return stub.SubscribeHtlcEvents(router_pb2.SubscribeHtlcEventsRequest(), timeout=20)


MARKER = {"event": "settle", "incoming_channel_id": 9, "incoming_htlc_id": 99}


@pytest.mark.parametrize(("version", "subscribed"), [("0.18.3", True), ("0.15.5", False)])
@pytest.mark.e2e
def test_subscribed_and_final_events_need_0_16(
    node_factory: Any, channels: Any, version: str, subscribed: bool
) -> None:
    script = [
        {"op": "wait_subscribers", "count": 1, "timeout_s": 15},
        {"event": "forward", "incoming_channel_id": 5, "outgoing_channel_id": 6},
        {"event": "final", "incoming_channel_id": 5, "settled": True},
        MARKER,
    ]
    sim = node_factory(script=script, lnd_version=version)
    kinds = []
    for event in subscribe(sim, channels):
        kinds.append(event.WhichOneof("event"))
        if event.incoming_htlc_id == 99:
            break
    expected = ["forward_event", "final_htlc_event", "settle_event"]
    assert kinds == (["subscribed_event", *expected] if subscribed else [expected[0], expected[2]])


@pytest.mark.parametrize(("version", "headers_first"), [("0.16.0", True), ("0.15.5", False)])
@pytest.mark.e2e
def test_old_lnd_sends_no_headers_until_the_first_event(
    node_factory: Any, channels: Any, version: str, headers_first: bool
) -> None:
    script = [
        {"op": "wait_subscribers", "count": 1, "timeout_s": 15},
        {"op": "sleep", "seconds": 3},
        MARKER,
    ]
    call = subscribe(node_factory(script=script, lnd_version=version), channels)
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(call.initial_metadata()), daemon=True)
    reader.start()
    if headers_first:
        reader.join(timeout=10)
        assert got == [()]  # at once, before any event
    else:
        reader.join(timeout=1)
        assert got == []  # a quiet stream: nothing at all on the wire yet
    first = next(call)
    reader.join(timeout=10)
    assert got == [()]
    assert first.WhichOneof("event") == ("subscribed_event" if headers_first else "settle_event")
    call.cancel()


@pytest.mark.e2e
def test_scripted_event_arrives_unchanged(node_factory: Any, channels: Any) -> None:
    script = [
        {"op": "wait_subscribers", "count": 1, "timeout_s": 15},
        {
            "event": "link_fail",
            "event_type": 7,
            "incoming_channel_id": "16000000x1x0",
            "incoming_htlc_id": MAX_U64,
            "outgoing_channel_id": MAX_U64,
            "timestamp_ns": 1_234,
            "incoming_amt_msat": 5_000_123,
            "outgoing_amt_msat": 5_000_000,
            "incoming_timelock": 900_100,
            "outgoing_timelock": 900_020,
            "wire_failure": 1234,
            "failure_detail": 99,
            "failure_string": "something new",
        },
    ]
    sim = node_factory(script=script)
    stream = subscribe(sim, channels)
    assert next(stream).HasField("subscribed_event")
    event = next(stream)
    assert (event.incoming_channel_id, event.incoming_htlc_id) == (ALIAS_SCID, MAX_U64)
    assert (event.outgoing_channel_id, event.outgoing_htlc_id) == (MAX_U64, 0)
    assert (event.event_type, event.timestamp_ns) == (7, 1_234)
    fail = event.link_fail_event
    assert (fail.wire_failure, fail.failure_detail, fail.failure_string) == (
        1234,
        99,
        "something new",
    )
    info = fail.info
    assert (info.incoming_amt_msat, info.outgoing_amt_msat) == (5_000_123, 5_000_000)
    assert (info.incoming_timelock, info.outgoing_timelock) == (900_100, 900_020)


@pytest.mark.e2e
def test_drop_streams_then_replay(node_factory: Any, channels: Any) -> None:
    script = [
        {"op": "wait_subscribers", "count": 1, "timeout_s": 15},
        MARKER,
        {"op": "drop_streams", "code": "UNAVAILABLE", "details": "lnd restarting"},
        {"op": "wait_subscribers", "count": 1, "timeout_s": 15},
        {"op": "replay", "count": 1},
    ]
    sim = node_factory(script=script)
    first = subscribe(sim, channels)
    assert next(first).HasField("subscribed_event")
    original = next(first)
    err = rpc_error(lambda: next(first))
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAVAILABLE, "lnd restarting")
    second = subscribe(sim, channels)
    assert next(second).HasField("subscribed_event")
    assert next(second) == original


@pytest.mark.e2e
def test_restart_keeps_credentials(node_factory: Any, channels: Any) -> None:
    sim = node_factory(args=("--rate", "0"))
    cert, macaroon, port = sim.tlscert, sim.macaroon("readonly"), sim.port
    stub = lightning(channels(sim, "readonly"))
    pubkey = stub.GetInfo(ln.GetInfoRequest(), timeout=5).identity_pubkey
    assert sim.stop() == 0
    assert not (sim.lnddir / "sim.json").exists()
    sim.start()
    assert (sim.port, sim.tlscert, sim.macaroon("readonly")) == (port, cert, macaroon)
    info = stub.GetInfo(ln.GetInfoRequest(), timeout=10, wait_for_ready=True)
    assert info.identity_pubkey == pubkey


@pytest.mark.e2e
def test_traffic_model_over_grpc_with_event_log(
    node_factory: Any, channels: Any, tmp_path: Path
) -> None:
    log_path = tmp_path / "events.jsonl"
    sim = node_factory(
        args=("--rate", "400", "--seed", "7", "--history", "50", "--event-log", str(log_path))
    )
    received = []
    deadline = time.monotonic() + 10
    for event in subscribe(sim, channels):
        received.append(event)
        if len(received) >= 300 or time.monotonic() > deadline:
            break
    kinds = Counter(e.WhichOneof("event") for e in received)
    assert kinds["subscribed_event"] == 1 and kinds["forward_event"] and kinds["settle_event"]
    stub = lightning(channels(sim, "readonly"))
    total = history(stub, num_max_events=10_000)[1]
    assert total >= 50
    assert json.loads((sim.lnddir / "sim.json").read_text())["event_loop"] == "uvloop"
    assert sim.stop() == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    # the last event read can be missing: a subscriber that cancels right after reading
    # it can cancel the simulator's write completion, before the write is logged
    assert len(lines) >= len(received) - 1
    assert {line["sub"] for line in lines} == {1}
    for line, event in zip(lines, received, strict=False):
        assert line["event"]["timestamp_ns"] == event.timestamp_ns
        assert line["event"]["incoming_htlc_id"] == event.incoming_htlc_id
        assert line["sent_ns"] >= event.timestamp_ns


def test_event_loop_is_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    assert event_loop_factory() is not None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert event_loop_factory() is None


def test_hub_is_idle_only_when_every_stream_wrote_what_it_was_given() -> None:
    """The traffic driver generates while the streams are idle (see Driver._streams_idle)."""
    hub = Hub(parse_version("0.18.3"))
    assert hub.idle.is_set()  # nobody to write to
    a, b = hub.subscribe(), hub.subscribe()
    events = [SimEvent(kind="forward_fail", event_type=1, incoming_htlc_id=i) for i in range(3)]
    hub.publish(events, 1)
    assert not hub.idle.is_set()
    assert (a.backlog, b.backlog) == (3, 3)
    a.written(3, hub)
    assert not hub.idle.is_set()  # b has not written yet
    hub.replay(2)
    b.written(3, hub)
    assert not hub.idle.is_set()  # the replay is still to write
    b.written(2, hub)
    assert not hub.idle.is_set()  # a got the replay too
    hub.unsubscribe(a)  # a stream that goes away owes nothing
    assert hub.idle.is_set()
    hub.publish(events[:1], 2)
    assert not hub.idle.is_set()
    hub.drop("UNAVAILABLE", "lnd is shutting down")
    assert hub.idle.is_set()


@pytest.mark.e2e
def test_rejecthtlc_fails_every_forward_at_our_node(node_factory: Any, channels: Any) -> None:
    sim = node_factory(args=("--rate", "400", "--seed", "7", "--rejecthtlc"))
    fails = []
    deadline = time.monotonic() + 20
    for event in subscribe(sim, channels):
        if event.event_type == 3:  # own payments still go out; nothing is forwarded
            assert event.WhichOneof("event") != "forward_event"
        if event.WhichOneof("event") == "link_fail_event" and event.event_type == 3:
            fails.append(event.link_fail_event)
        if len(fails) >= 20 or time.monotonic() > deadline:
            break
    assert {(f.wire_failure, f.failure_detail) for f in fails} == {
        (WireFailure.CHANNEL_DISABLED, FailureDetail.FORWARDS_DISABLED)
    }


def test_policy_updates_move_the_traffic() -> None:
    """UpdateChannelPolicy reaches the traffic model: senders whose budget failed on our
    fee go through once the fee is lowered to it, and payments above max_htlc pass once
    it is raised."""
    from lnflow.sim.state import PolicyUpdate

    def fails(node: NodeState, model: TrafficModel, start_s: int) -> Counter[int]:
        events = []
        for tick in range(1, 301):
            events += model.advance(T0 + start_s * NS + tick * NS // 100, 100)
        return Counter(e.failure_detail if e.wire_failure != WireFailure.FEE_INSUFFICIENT
                       else -1 for e in events if e.kind == "link_fail")  # fmt: skip

    node = two_channel_node(fee_rate_ppm=5_000, max_htlc_msat=5_000_000)
    out = node.channels[2 << 40]
    model = TrafficModel(node, 9, replace(QUIET, cheap_sender_share=0.5))
    model.advance(T0, 0)
    before = fails(node, model, 0)
    assert before[-1] > 20 and before[FailureDetail.HTLC_EXCEEDS_MAX] > 5
    update = PolicyUpdate(
        base_fee_msat=0, fee_rate=0.0, fee_rate_ppm=1, time_lock_delta=80,
        max_htlc_msat=out.capacity_sat * 900,
    )  # fmt: skip
    assert node.update_policy(update, [out], T0 + 10 * NS) == []
    model.advance(T0 + 400 * NS, 0)  # past the gossip delay: no stale sender is left
    after = fails(node, model, 400)
    assert after[-1] == 0 and after[FailureDetail.HTLC_EXCEEDS_MAX] == 0
