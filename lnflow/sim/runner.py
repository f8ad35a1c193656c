"""What makes events happen: the traffic model on a timer, or a script step by step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from lnflow.sim.events import SimEvent
from lnflow.sim.hub import Hub
from lnflow.sim.model import TrafficModel, TrafficParams
from lnflow.sim.script import (
    ChannelOp,
    DropOp,
    EmitOp,
    ForwardOp,
    Op,
    ReplayOp,
    SleepOp,
    TrafficOp,
    WaitOp,
    apply_channel_op,
)
from lnflow.sim.state import NodeState

__all__ = ["Driver"]

log = logging.getLogger("lnflow.sim")

TICK_S = 0.01  # the model produces one batch per tick (200 events at 20 000/s)
MAX_DEFER_S = 0.1  # a tick waits at most this long for the streams to catch up
EMIT_BATCH = 1000  # consecutive scripted events published together


class Driver:
    def __init__(
        self, node: NodeState, hub: Hub, seed: int, params: TrafficParams | None = None
    ) -> None:
        self.node = node
        self.hub = hub
        self._seed = seed
        self._params = params
        self._model: TrafficModel | None = None

    @property
    def model(self) -> TrafficModel:
        if self._model is None:
            self._model = TrafficModel(self.node, self._seed, self._params)
        return self._model

    async def traffic(self, rate: float, seconds: float | None = None) -> None:
        """Run the traffic model at ``rate`` events/s, forever or for ``seconds``."""
        model = self.model
        model.advance(time.time_ns(), 0.0)  # the clock starts now, not at the last run
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(TICK_S)
            await self._streams_idle()
            now = time.time_ns()
            self.hub.publish(model.advance(now, rate), now)
        model.cancel_retries()
        while model.in_flight:  # let the HTLCs in flight settle or fail (<= resolve_s)
            await asyncio.sleep(TICK_S)
            now = time.time_ns()
            self.hub.publish(model.advance(now, 0.0), now)

    async def _streams_idle(self) -> None:
        """Wait (up to MAX_DEFER_S) until the streams have written what they were given.

        Writing is latency-bound: each gRPC write waits for its completion, and
        back-to-back writes share TCP/TLS flushes. Generating a tick's events in the
        middle of a burst stalls it and breaks that batching, which costs far more
        than the generation itself; the model's budget carries the deferred time, so
        the rate over time is unchanged, in larger batches.
        """
        if self.hub.idle.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.hub.idle.wait(), MAX_DEFER_S)

    async def script(self, ops: Sequence[Op]) -> None:
        pending: list[SimEvent] = []
        for op in ops:
            if isinstance(op, EmitOp) and len(pending) < EMIT_BATCH:
                pending.append(op.event)
                continue
            if pending:
                self.hub.publish(pending, time.time_ns())
                pending = []
                await asyncio.sleep(0)  # let the streams write
            if isinstance(op, EmitOp):
                pending.append(op.event)
            else:
                await self.run(op)
        if pending:
            self.hub.publish(pending, time.time_ns())
        log.info("script finished; still serving")

    async def run(self, op: Op) -> None:
        now = time.time_ns()
        if isinstance(op, EmitOp):
            self.hub.publish([op.event], now)
        elif isinstance(op, ChannelOp):
            apply_channel_op(self.node, op, now)
            if self._model is not None:
                self._model.channels_changed()
        elif isinstance(op, ForwardOp):
            record = op.record
            self.node.forwards.append(
                record if record.timestamp_ns else replace(record, timestamp_ns=now)
            )
        elif isinstance(op, WaitOp):
            if not await self.hub.wait_for(op.count, op.timeout_s):
                log.warning(
                    "wait_subscribers: %d subscriber(s) not reached in %ss", op.count, op.timeout_s
                )
        elif isinstance(op, SleepOp):
            await asyncio.sleep(op.seconds)
        elif isinstance(op, DropOp):
            self.hub.drop(op.code, op.details)
        elif isinstance(op, ReplayOp):
            self.hub.replay(op.count)
        elif isinstance(op, TrafficOp):
            await self.traffic(op.rate, op.seconds)
