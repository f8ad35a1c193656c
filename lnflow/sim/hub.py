"""Fan-out of HTLC events to the SubscribeHtlcEvents streams.

Each event is turned into wire bytes once (lazily) and shared by every
subscriber; events reach the subscribers' queues in batches, one queue put per
batch. Events produced while nobody subscribes are lost, as with lnd.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from lnflow.domain import LndVersion
from lnflow.lnd._proto import router_pb2
from lnflow.sim.events import SimEvent, event_to_json

__all__ = [
    "Drop",
    "EventLog",
    "Hub",
    "Outgoing",
    "Subscriber",
    "htlc_event_message",
    "htlc_event_payload",
]

REPLAY_DEPTH = 100_000  # events kept for the script's replay op (~20 MB at most)


def htlc_event_message(ev: SimEvent) -> Any:
    """The routerrpc.HtlcEvent for an event; enum numbers are copied as they are."""
    msg: Any = router_pb2.HtlcEvent(
        incoming_channel_id=ev.incoming_channel_id,
        outgoing_channel_id=ev.outgoing_channel_id,
        incoming_htlc_id=ev.incoming_htlc_id,
        outgoing_htlc_id=ev.outgoing_htlc_id,
        timestamp_ns=ev.timestamp_ns,
    )
    msg.event_type = ev.event_type
    kind = ev.kind
    if kind == "forward":
        _fill_info(msg.forward_event.info, ev)
    elif kind == "link_fail":
        link_fail = msg.link_fail_event
        _fill_info(link_fail.info, ev)
        link_fail.wire_failure = ev.wire_failure
        link_fail.failure_detail = ev.failure_detail
        link_fail.failure_string = ev.failure_string
    elif kind == "settle":
        msg.settle_event.SetInParent()
        msg.settle_event.preimage = ev.preimage
    elif kind == "forward_fail":
        msg.forward_fail_event.SetInParent()
    elif kind == "final":
        msg.final_htlc_event.SetInParent()
        msg.final_htlc_event.settled = ev.settled
        msg.final_htlc_event.offchain = ev.offchain
    else:
        msg.subscribed_event.SetInParent()
    return msg


def _fill_info(info: Any, ev: SimEvent) -> None:
    info.SetInParent()
    info.incoming_timelock = ev.incoming_timelock
    info.outgoing_timelock = ev.outgoing_timelock
    info.incoming_amt_msat = ev.incoming_amt_msat
    info.outgoing_amt_msat = ev.outgoing_amt_msat


def _tagged(field: int, body: bytes) -> bytes:
    """``body`` as a length-delimited field (a sub-message) of the enclosing message."""
    size = len(body)
    if size < 0x80:
        return bytes((field << 3 | 2, size)) + body
    length = bytearray()
    while size > 0x7F:
        length.append(0x80 | (size & 0x7F))
        size >>= 7
    length.append(size)
    return bytes((field << 3 | 2,)) + length + body


# Reused for every event (one thread builds the payloads); every field is set each time.
_HEAD: Any = router_pb2.HtlcEvent()
_INFO: Any = router_pb2.HtlcInfo()
_LINK_FAIL: Any = router_pb2.LinkFailEvent()
# the oneof variants that carry no per-event data, as they end an HtlcEvent's bytes
_FORWARD_FAIL = _tagged(8, b"")
_SUBSCRIBED = _tagged(11, b"")
_FINAL = {
    (settled, offchain): _tagged(
        12, router_pb2.FinalHtlcEvent(settled=settled, offchain=offchain).SerializeToString()
    )
    for settled in (False, True)
    for offchain in (False, True)
}


def htlc_event_payload(ev: SimEvent) -> bytes:
    """``htlc_event_message(ev).SerializeToString()``, built with fewer messages.

    Protobuf writes fields in number order, and the oneof variants (7-12) come after
    the plain fields (1-6): serialize those from a reused message, then append the
    variant's bytes (a constant, or a reused sub-message's bytes with its tag).
    """
    head = _HEAD
    head.incoming_channel_id = ev.incoming_channel_id
    head.outgoing_channel_id = ev.outgoing_channel_id
    head.incoming_htlc_id = ev.incoming_htlc_id
    head.outgoing_htlc_id = ev.outgoing_htlc_id
    head.timestamp_ns = ev.timestamp_ns
    head.event_type = ev.event_type
    data: bytes = head.SerializeToString()
    kind = ev.kind
    if kind == "final":
        return data + _FINAL[ev.settled, ev.offchain]
    if kind == "forward_fail":
        return data + _FORWARD_FAIL
    if kind == "settle":
        return data + _tagged(9, _tagged(1, ev.preimage) if ev.preimage else b"")
    if kind != "forward" and kind != "link_fail":
        return data + _SUBSCRIBED
    info = _INFO
    info.incoming_timelock = ev.incoming_timelock
    info.outgoing_timelock = ev.outgoing_timelock
    info.incoming_amt_msat = ev.incoming_amt_msat
    info.outgoing_amt_msat = ev.outgoing_amt_msat
    info_field = _tagged(1, info.SerializeToString())
    if kind == "forward":
        return data + _tagged(7, info_field)
    link_fail = _LINK_FAIL
    link_fail.wire_failure = ev.wire_failure
    link_fail.failure_detail = ev.failure_detail
    link_fail.failure_string = ev.failure_string
    return data + _tagged(10, info_field + link_fail.SerializeToString())


class Outgoing:
    """One event on its way out: wire bytes and log JSON, each built at most once."""

    __slots__ = ("_json", "_payload", "event")

    def __init__(self, event: SimEvent) -> None:
        self.event = event
        self._payload: bytes | None = None
        self._json: str | None = None

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = htlc_event_payload(self.event)
        return self._payload

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(event_to_json(self.event), separators=(",", ":"))
        return self._json


@dataclass(frozen=True, slots=True)
class Drop:
    """Ends a subscription with this gRPC status (code name, e.g. UNAVAILABLE)."""

    code: str
    details: str


@dataclass(eq=False, slots=True)
class Subscriber:
    number: int
    queue: asyncio.Queue[list[Outgoing] | Drop]
    backlog: int = 0  # events handed to this stream and not yet written

    def written(self, count: int, hub: Hub) -> None:
        """The stream wrote ``count`` of its events."""
        self.backlog -= count
        if self.backlog <= 0:
            hub.check_idle()


class EventLog:
    """``--event-log``: one JSON line per event written to a subscriber."""

    def __init__(self, path: Path) -> None:
        self._file: TextIO = path.open("a", buffering=1 << 16, encoding="utf-8")

    def written(self, sub: int, item: Outgoing) -> None:
        sent_ns = time.time_ns()
        self._file.write(f'{{"sub":{sub},"sent_ns":{sent_ns},"event":{item.json}}}\n')

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Hub:
    """The current subscribers, the recent events (for replay) and version gating."""

    def __init__(self, version: LndVersion) -> None:
        self._subs: list[Subscriber] = []
        self._numbers = 0
        self._recent: deque[Outgoing] = deque(maxlen=REPLAY_DEPTH)
        self._has_final = version.triple >= (0, 16, 0)
        self._has_preimage = version.triple >= (0, 14, 0)
        self.published = 0
        #: set while no stream has events left to write
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def count(self) -> int:
        return len(self._subs)

    def subscribe(self) -> Subscriber:
        self._numbers += 1
        sub = Subscriber(self._numbers, asyncio.Queue())
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        self.check_idle()

    def check_idle(self) -> None:
        if all(sub.backlog <= 0 for sub in self._subs):
            self.idle.set()

    def publish(self, events: Sequence[SimEvent], now_ns: int) -> None:
        """Send events (timestamp 0 is stamped now_ns) to every current subscriber."""
        batch = []
        for ev in events:
            if ev.kind in ("final", "subscribed") and not self._has_final:
                continue  # these variants do not exist before lnd 0.16
            if ev.timestamp_ns == 0:
                ev = replace(ev, timestamp_ns=now_ns)
            if ev.preimage and not self._has_preimage:
                ev = replace(ev, preimage=b"")
            batch.append(Outgoing(ev))
        if not batch:
            return
        self._recent.extend(batch)
        self.published += len(batch)
        self._hand_out(batch)

    def _hand_out(self, batch: list[Outgoing]) -> None:
        if self._subs:
            # Serialize now, between bursts: in the write loop it would lengthen each
            # write's turn on the event loop (see Driver._streams_idle).
            for item in batch:
                item.payload  # noqa: B018  # builds and caches the wire bytes
        for sub in self._subs:
            sub.queue.put_nowait(batch)
            sub.backlog += len(batch)
            self.idle.clear()

    def replay(self, count: int) -> None:
        """Send the last ``count`` published events again, as lnd may after a restart."""
        if count <= 0:
            return
        self._hand_out(list(self._recent)[-count:])

    def drop(self, code: str, details: str) -> None:
        """End every current subscription with the given status."""
        for sub in self._subs:
            sub.queue.put_nowait(Drop(code, details))
        self._subs.clear()
        self.idle.set()

    async def wait_for(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self._subs) < count:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True
