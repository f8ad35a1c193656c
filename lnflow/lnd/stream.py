"""The live ``SubscribeHtlcEvents`` stream as an async iterator of domain events.

The call itself runs in the lnd gateway process (:mod:`lnflow.lnd._gateway`), on a
channel of its own, and its raw messages come over the gateway's pipe; this side
decodes them, so the daemon's process spends its GIL on tracking and storing while the
gateway, on the other core, reads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any

from lnflow.domain import HtlcEvent, StreamSubscribed
from lnflow.errors import LndError, LndRpcError
from lnflow.lnd._proto import router_pb2

from .convert import htlc_event
from .errors import RpcFailure
from .gateway import CLOSE_WAIT_S, GatewayProcess, Inbox

__all__ = ["METHOD", "START_S", "HtlcStream"]

METHOD = "/routerrpc.Router/SubscribeHtlcEvents"
START_S = 30.0  # the gateway starting Python and grpc on a busy machine
_LEN = 4
_ID = 4  # every frame's payload starts with the stream's id

# (code name, details, established, connecting) -> the error to raise
ErrorMapper = Callable[[str, str, bool, bool], LndError]
_decode = router_pb2.HtlcEvent.FromString


class HtlcStream:
    """Async iterator over one ``SubscribeHtlcEvents`` call (run by the lnd gateway).

    Yields :class:`HtlcEvent` and, on lnd >= 0.16, one :class:`StreamSubscribed`
    first. Ends when lnd closes the stream with OK or after :meth:`cancel` (events the
    gateway forwarded before it stopped the call are still yielded); raises the mapped
    :class:`LndError` when the call fails. ``received`` counts the messages read so far.
    Create it from a running event loop: the call starts at once.
    """

    __slots__ = (
        "__weakref__",
        "_cancelled",
        "_done",
        "_error",
        "_established",
        "_events",
        "_finished",
        "_frame_task",
        "_gateway",
        "_ident",
        "_map_error",
        "_next",
        "_reading",
        "_started",
        "_starting",
        "received",
    )

    def __init__(
        self,
        gateway: GatewayProcess,
        options: tuple[tuple[str, Any], ...],
        map_error: ErrorMapper,
        macaroon_hex: str | None = None,
    ) -> None:
        self._gateway = gateway
        self._map_error = map_error
        self._cancelled = False
        self._established = False
        self._started = False  # the gateway has started the call
        self._finished = False  # no more frames: ended, failed or stopped
        self._done = asyncio.Event()  # set with _finished
        self._error: LndError | None = None
        self._events: list[HtlcEvent | StreamSubscribed] = []
        self._next = 0
        self._ident: int | None = None
        self._frame_task: asyncio.Task[tuple[bytes, bytes] | None] | None = None
        self._reading = False  # a task waits in __anext__ for the next frame
        self.received = 0
        self._starting = asyncio.ensure_future(self._open(options, macaroon_hex))

    async def _open(self, options: tuple[tuple[str, Any], ...], macaroon_hex: str | None) -> Inbox:
        ident = await self._gateway.open_stream(METHOD, options, macaroon_hex)
        self._ident = ident
        if self._cancelled:
            self._gateway.stop_stream(ident)
        inbox = self._gateway.inbox(ident)
        if inbox is None:  # the gateway died at once
            inbox = Inbox(lambda: None)
            inbox.put(None)
        return inbox

    # ------------------------------------------------------------------ frames

    async def _read_frame(self) -> tuple[bytes, bytes] | None:
        """(kind, payload), or None when the gateway went away."""
        try:
            inbox = await self._starting
        except LndError:  # no gateway: as if the call had failed at once
            self._finish()
            raise
        return await inbox.get()

    async def _frame(self) -> tuple[bytes, bytes] | None:
        task, self._frame_task = self._frame_task, None
        if task is not None:
            return await task
        return await self._read_frame()

    def _handle(self, frame: tuple[bytes, bytes] | None) -> None:
        """Apply one frame; raises the mapped error of a failed call."""
        if frame is None:
            self._finish()
            if not self._cancelled and self._error is None:
                self._error = LndRpcError(
                    self._gateway.gone or "the lnd gateway process exited unexpectedly"
                )
            self._raise_error()
            return
        kind, payload = frame
        if kind == b"B":
            self._decode(payload)
        elif kind == b"S":
            self._started = True
        elif kind == b"E":
            self._established = True
        elif kind == b"D":
            self._finish()
        elif kind == b"X":
            self._finish()
            if not self._cancelled:
                err = json.loads(payload[_ID:])
                code, details = err["code"], err["details"]
                error = self._map_error(code, details, err["established"], err["connecting"])
                error.__cause__ = RpcFailure(code, details, connecting=err["connecting"])
                self._error = error
            self._raise_error()

    def _decode(self, payload: bytes) -> None:
        events = self._events[self._next :] if self._next < len(self._events) else []
        pos, end, count = _ID, len(payload), 0
        while pos < end:
            size = int.from_bytes(payload[pos : pos + _LEN], "little")
            pos += _LEN
            events.append(htlc_event(_decode(payload[pos : pos + size])))
            pos += size
            count += 1
        self._events, self._next = events, 0
        self.received += count
        if count:
            self._established = True

    def _raise_error(self) -> None:
        if self._error is not None and self._next >= len(self._events):
            raise self._error

    def _finish(self) -> None:
        """No more frames will come."""
        self._finished = True
        self._done.set()
        if self._ident is not None:
            self._gateway.forget_stream(self._ident)

    # ------------------------------------------------------------------ iteration

    def __aiter__(self) -> HtlcStream:
        return self

    async def __anext__(self) -> HtlcEvent | StreamSubscribed:
        while True:
            i = self._next
            if i < len(self._events):
                self._next = i + 1
                return self._events[i]
            if self._finished:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._reading = True
            try:
                frame = await self._frame()
            finally:
                self._reading = False
            self._handle(frame)

    @property
    def established(self) -> bool:
        """lnd has answered: headers or a first message arrived."""
        return self._established

    async def wait_connected(self, timeout_s: float) -> None:
        """Return once the stream is up, or ``timeout_s`` after the call started, alive.

        lnd < 0.16 sends no headers until the first event, so a quiet but
        healthy stream looks just like a slow one; it is treated as connected.
        Raises the mapped :class:`LndError` if the call fails first.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_S
        while not (self._established or self._cancelled or self._finished):
            if self._next < len(self._events):
                return
            task = self._frame_task
            if task is None:
                task = self._frame_task = asyncio.ensure_future(self._read_frame())
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
            if not done:
                return  # the frame task stays for the iteration to await
            self._frame_task = None
            was_started = self._started
            self._handle(task.result())
            if self._started and not was_started:
                deadline = loop.time() + timeout_s
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Stop the stream; iteration then ends without an error."""
        if self._cancelled:
            return
        self._cancelled = True
        if self._ident is not None and not self._finished:
            self._gateway.stop_stream(self._ident)  # its last batch, then D

    async def aclose(self) -> None:
        """Cancel and wait until the gateway has ended the call (at most CLOSE_WAIT_S)."""
        self.cancel()
        try:
            await self._starting
        except LndError:
            return
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                if self._reading:  # the iterating task drains the inbox
                    await self._done.wait()
                while not self._finished:
                    self._handle(await self._frame())
        except (TimeoutError, LndError):
            pass
        if not self._finished:
            self._finish()  # whatever else comes for it is dropped

    async def __aenter__(self) -> HtlcStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
