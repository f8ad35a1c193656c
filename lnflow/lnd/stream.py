"""The live ``SubscribeHtlcEvents`` stream as an async iterator of domain events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any

import grpc

from lnflow.domain import HtlcEvent, StreamSubscribed
from lnflow.errors import LndError

from .convert import htlc_event

__all__ = ["HtlcStream"]

_EOF = grpc.aio.EOF
_AioRpcError = grpc.aio.AioRpcError

# (code name, details, established) -> the error to raise
ErrorMapper = Callable[[str, str, bool], LndError]


class HtlcStream:
    """Async iterator over one ``SubscribeHtlcEvents`` call.

    Yields :class:`HtlcEvent` and, on lnd >= 0.16, one :class:`StreamSubscribed`
    first. Ends when lnd closes the stream with OK or after :meth:`cancel`;
    raises the mapped :class:`LndError` when the call fails. ``received``
    counts the messages read so far.
    """

    __slots__ = ("__weakref__", "_call", "_cancelled", "_established", "_map_error", "received")

    def __init__(self, call: Any, map_error: ErrorMapper) -> None:
        self._call = call
        self._map_error = map_error
        self._cancelled = False
        self._established = False
        self.received = 0

    def __aiter__(self) -> HtlcStream:
        return self

    async def __anext__(self) -> HtlcEvent | StreamSubscribed:
        try:
            msg = await self._call.read()
        except _AioRpcError as exc:
            raise self._map_error(exc.code().name, exc.details() or "", self._established) from exc
        except asyncio.CancelledError:
            if self._cancelled_by_us():
                raise StopAsyncIteration from None
            raise
        if msg is _EOF:
            raise StopAsyncIteration
        self.received += 1
        self._established = True
        return htlc_event(msg)

    def _cancelled_by_us(self) -> bool:
        """True when the call (not the task awaiting it) was cancelled."""
        if not self._cancelled and not self._call.cancelled():
            return False
        task = asyncio.current_task()
        return task is None or task.cancelling() == 0

    @property
    def established(self) -> bool:
        """lnd has answered: headers or a first message arrived."""
        return self._established

    async def wait_connected(self, timeout_s: float) -> None:
        """Return once the stream is up, or after ``timeout_s`` with the call alive.

        lnd < 0.16 sends no headers until the first event, so a quiet but
        healthy stream looks just like a slow one; it is treated as connected.
        Raises the mapped :class:`LndError` if the call fails first.
        """
        call = self._call
        if self._established or self._cancelled:
            return
        try:
            await asyncio.wait_for(call.initial_metadata(), timeout_s)
        except TimeoutError:
            return
        if not call.done():
            self._established = True
            return
        if self._cancelled or call.cancelled():
            return
        code = await call.code()
        if code.name != "OK":
            try:
                await call.read()  # a finished, failed call raises its AioRpcError
            except _AioRpcError as exc:
                raise self._map_error(exc.code().name, exc.details() or "", False) from exc

    def cancel(self) -> None:
        """Stop the stream; iteration then ends without an error."""
        self._cancelled = True
        self._call.cancel()

    async def __aenter__(self) -> HtlcStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()
