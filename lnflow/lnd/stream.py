"""The live ``SubscribeHtlcEvents`` stream as an async iterator of domain events.

The call itself runs in a reader process (:mod:`lnflow.lnd._reader`) that forwards
lnd's raw messages over a pipe; this side decodes them, so the daemon's process spends
its GIL on tracking and storing while the reader, on the other core, reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from lnflow.domain import HtlcEvent, StreamSubscribed
from lnflow.errors import LndError, LndRpcError
from lnflow.lnd._proto import router_pb2

from .convert import htlc_event

__all__ = ["READER_START_S", "HtlcStream", "ReaderConfig", "spawn_reader", "stop_spare"]

READER = Path(__file__).with_name("_reader.py")
READER_START_S = 30.0  # the reader starting Python and grpc on a busy machine
CLOSE_WAIT_S = 5.0  # after stop: the reader's last batch and exit, then SIGKILL
_LEN = 4

# (code name, details, established) -> the error to raise
ErrorMapper = Callable[[str, str, bool], LndError]
_decode = router_pb2.HtlcEvent.FromString


@dataclass(frozen=True, slots=True)
class ReaderConfig:
    """What the reader needs to make the call (sent on its stdin, never on argv)."""

    rpcserver: str
    cert: bytes
    macaroon_hex: str
    options: tuple[tuple[str, Any], ...]

    def line(self, parent_pid: int) -> bytes:
        doc = {
            "rpcserver": self.rpcserver,
            "cert_hex": self.cert.hex(),
            "macaroon_hex": self.macaroon_hex,
            "options": [list(o) for o in self.options],
            "parent_pid": parent_pid,
        }
        return (json.dumps(doc) + "\n").encode()


async def spawn_reader() -> asyncio.subprocess.Process:
    """A reader process; it imports grpc, then waits for its config line on stdin.

    Started ahead of a reconnect (a spare), it saves the reconnect the Python and grpc
    start-up (0.5-1 s on a busy machine).
    """
    # -P: the script's directory (lnflow/lnd) stays off sys.path
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",
        str(READER),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def stop_spare(spare: asyncio.Future[asyncio.subprocess.Process]) -> None:
    """End a spare reader that was never used (EOF before its config: it exits 0)."""
    try:
        proc = await spare
    except OSError:
        return
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        async with asyncio.timeout(CLOSE_WAIT_S):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class ReaderRpcError(grpc.RpcError):  # type: ignore[misc]  # grpc is untyped
    """The reader's grpc error, re-created here so LndErrors chain to a grpc error."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self._code = getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)
        self._details = details

    def code(self) -> Any:
        return self._code

    def details(self) -> str:
        return self._details


class HtlcStream:
    """Async iterator over one ``SubscribeHtlcEvents`` call (run by a reader process).

    Yields :class:`HtlcEvent` and, on lnd >= 0.16, one :class:`StreamSubscribed`
    first. Ends when lnd closes the stream with OK or after :meth:`cancel` (events the
    reader forwarded before it stopped are still yielded); raises the mapped
    :class:`LndError` when the call fails. ``received`` counts the messages read so far.
    Create it from a running event loop: the reader process starts at once.
    """

    __slots__ = (
        "__weakref__",
        "_cancelled",
        "_error",
        "_established",
        "_events",
        "_finished",
        "_frame_task",
        "_map_error",
        "_next",
        "_proc",
        "_reading",
        "_started",
        "_starting",
        "received",
    )

    def __init__(
        self,
        config: ReaderConfig,
        map_error: ErrorMapper,
        spare: asyncio.Future[asyncio.subprocess.Process] | None = None,
    ) -> None:
        self._map_error = map_error
        self._cancelled = False
        self._established = False
        self._started = False  # the reader has started the call
        self._finished = False  # no more frames: ended, failed or stopped
        self._error: LndError | None = None
        self._events: list[HtlcEvent | StreamSubscribed] = []
        self._next = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._frame_task: asyncio.Task[tuple[bytes, bytes] | None] | None = None
        self._reading = False  # a task waits in __anext__ for the next frame
        self.received = 0
        self._starting = asyncio.ensure_future(self._spawn(config, spare))

    async def _spawn(
        self,
        config: ReaderConfig,
        spare: asyncio.Future[asyncio.subprocess.Process] | None,
    ) -> asyncio.subprocess.Process:
        proc = None
        if spare is not None:
            with contextlib.suppress(OSError):
                proc = await spare
            if proc is not None and proc.returncode is not None:
                proc = None  # it died waiting: start another
        if proc is None:
            proc = await spawn_reader()
        self._proc = proc
        assert proc.stdin is not None
        proc.stdin.write(config.line(os.getpid()))
        if self._cancelled:
            proc.stdin.close()
        return proc

    # ------------------------------------------------------------------ frames

    async def _read_frame(self) -> tuple[bytes, bytes] | None:
        """(kind, payload), or None when the reader closed its end."""
        try:
            proc = await self._starting
        except OSError as exc:  # no process: as if it had failed at once
            self._finished = True
            raise LndRpcError(f"cannot start the HTLC stream reader process: {exc}") from exc
        assert proc.stdout is not None
        try:
            header = await proc.stdout.readexactly(5)
            kind, size = header[:1], int.from_bytes(header[1:], "little")
            payload = await proc.stdout.readexactly(size) if size else b""
        except asyncio.IncompleteReadError:
            return None
        return kind, payload

    async def _frame(self) -> tuple[bytes, bytes] | None:
        task, self._frame_task = self._frame_task, None
        if task is not None:
            return await task
        return await self._read_frame()

    async def _handle(self, frame: tuple[bytes, bytes] | None) -> None:
        """Apply one frame; raises the mapped error of a failed call (reader reaped)."""
        if frame is None:
            await self._finish()
            if not self._cancelled and self._error is None:
                status = self._proc.returncode if self._proc is not None else None
                self._error = LndRpcError(
                    f"the HTLC stream reader process exited unexpectedly (status {status})"
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
            await self._finish()
        elif kind == b"X":
            await self._finish()
            if not self._cancelled:
                err = json.loads(payload)
                error = self._map_error(err["code"], err["details"], err["established"])
                error.__cause__ = ReaderRpcError(err["code"], err["details"])  # raise ... from
                self._error = error
            self._raise_error()

    def _decode(self, payload: bytes) -> None:
        events = self._events[self._next :] if self._next < len(self._events) else []
        pos, end, count = 0, len(payload), 0
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

    async def _finish(self) -> None:
        """The reader is done: reap it."""
        self._finished = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            await proc.wait()

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
            await self._handle(frame)

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
        deadline = loop.time() + READER_START_S
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
            await self._handle(task.result())
            if self._started and not was_started:
                deadline = loop.time() + timeout_s
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Stop the stream; iteration then ends without an error."""
        if self._cancelled:
            return
        self._cancelled = True
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()  # EOF: the reader stops, sends its last batch, exits

    async def aclose(self) -> None:
        """Cancel and wait until the reader has exited (SIGKILL after CLOSE_WAIT_S)."""
        self.cancel()
        try:
            proc = await self._starting
        except OSError:
            return
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                if self._reading:  # the iterating task drains the pipe
                    await proc.wait()
                while not self._finished:  # drain, so the reader never blocks on the pipe
                    await self._handle(await self._frame())
        except (TimeoutError, LndError):
            pass
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def __aenter__(self) -> HtlcStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
