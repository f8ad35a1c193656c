"""The parent's side of the lnd gateway process (:mod:`lnflow.lnd._gateway`).

One :class:`GatewayProcess` per :class:`lnflow.lnd.LndClient`: unary calls go out as
serialized requests and come back as serialized responses (or a failure with grpc's
status code name, details and the channel's connectivity); each HTLC stream's frames
land in its :class:`Inbox`, acknowledged batch by batch, so the stream's reader paces
its stream and unary answers never wait behind it. If the process dies, every pending
call fails with an :class:`LndRpcError` and every open stream ends with one; the client
then starts a new process on its next call. A process alive but answering nothing past
a call's deadline and ``ANSWER_GRACE_S`` is stuck: it is killed, and the same follows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lnflow.errors import LndRpcError

from .errors import RpcFailure

__all__ = ["GATEWAY", "GatewayConfig", "GatewayProcess", "Inbox"]

GATEWAY = Path(__file__).with_name("_gateway.py")
CLOSE_WAIT_S = 5.0  # after stdin's EOF: the streams' last batches and exit, then SIGKILL
ANSWER_GRACE_S = 10.0  # beyond a call's deadline: the gateway itself is stuck

Frame = tuple[bytes, bytes]  # kind, payload (starting with the 4-byte id)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """What the gateway needs to reach lnd (sent on its stdin, never on argv)."""

    rpcserver: str
    cert: bytes
    macaroon_hex: str
    options: tuple[tuple[str, Any], ...]  # the unary channel's

    def line(self, parent_pid: int) -> bytes:
        doc = {
            "rpcserver": self.rpcserver,
            "cert_hex": self.cert.hex(),
            "macaroon_hex": self.macaroon_hex,
            "options": [list(o) for o in self.options],
            "parent_pid": parent_pid,
        }
        return (json.dumps(doc) + "\n").encode()


class Inbox:
    """One stream's frames in order; ``None`` once no more will come.

    It holds at most the gateway's window of message batches (``MAX_UNACKED`` in
    :mod:`lnflow.lnd._gateway`): the gateway sends the next one only when one was
    taken (``K``), so a slow reader holds back its own stream, never the pipe.
    """

    __slots__ = ("_ack", "_frames", "_ready")

    def __init__(self, ack: Callable[[], None]) -> None:
        self._frames: collections.deque[Frame | None] = collections.deque()
        self._ready = asyncio.Event()
        self._ack = ack

    def put(self, frame: Frame | None) -> None:
        self._frames.append(frame)
        self._ready.set()

    async def get(self) -> Frame | None:
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        if frame is not None and frame[0] == b"B":
            self._ack()
        return frame

    def abandon(self) -> None:
        """Nobody reads on."""
        self._frames.clear()


def _frame(kind: bytes, ident: int, payload: bytes = b"") -> bytes:
    size = 4 + len(payload)
    return kind + size.to_bytes(4, "little") + ident.to_bytes(4, "little") + payload


class GatewayProcess:
    """The gateway child: started at once (call from a running event loop)."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._calls: dict[int, asyncio.Future[bytes]] = {}
        self._inboxes: dict[int, Inbox] = {}
        self._ids = itertools.count(1)
        self._proc: asyncio.subprocess.Process | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._closing = False
        #: why the process is no longer usable (None: it is, or is starting)
        self.gone: str | None = None
        self._started = asyncio.ensure_future(self._spawn())

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def _spawn(self) -> asyncio.subprocess.Process:
        # -P: the script's directory (lnflow/lnd) stays off sys.path
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            str(GATEWAY),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(self._config.line(os.getpid()))
        self._proc = proc
        self._dispatcher = asyncio.ensure_future(self._dispatch(proc))
        return proc

    async def _process(self) -> asyncio.subprocess.Process:
        if self.gone is not None:
            raise LndRpcError(self.gone)
        try:
            proc = await asyncio.shield(self._started)
        except OSError as exc:
            self.gone = f"cannot start the lnd gateway process: {exc}"
            raise LndRpcError(self.gone) from exc
        if self.gone is not None:
            raise LndRpcError(self.gone)
        return proc

    def _send(self, proc: asyncio.subprocess.Process, data: bytes) -> None:
        assert proc.stdin is not None
        if not proc.stdin.is_closing():
            proc.stdin.write(data)

    # ------------------------------------------------------------------ calls

    async def unary(
        self, method: str, request: bytes, timeout_s: float, macaroon_hex: str | None = None
    ) -> bytes:
        """lnd's serialized answer; raises :class:`RpcFailure` when the call failed and
        :class:`LndRpcError` when the gateway could not make it. ``macaroon_hex``: the
        call's own macaroon instead of the process's."""
        proc = await self._process()
        ident = next(self._ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._calls[ident] = future
        spec: dict[str, Any] = {"method": method, "timeout_s": timeout_s}
        if macaroon_hex is not None:
            spec["macaroon_hex"] = macaroon_hex
        head = json.dumps(spec).encode()
        self._send(proc, _frame(b"U", ident, len(head).to_bytes(2, "little") + head + request))
        try:
            async with asyncio.timeout(timeout_s + ANSWER_GRACE_S):
                return await future
        except TimeoutError:
            why = (
                f"the lnd gateway process did not answer {method} within "
                f"{timeout_s + ANSWER_GRACE_S:g}s"
            )
            self._abandon(why)
            raise LndRpcError(why) from None
        finally:
            self._calls.pop(ident, None)

    async def open_stream(
        self, method: str, options: tuple[tuple[str, Any], ...], macaroon_hex: str | None = None
    ) -> int:
        """Start a server-streaming call on a channel of its own; its id."""
        proc = await self._process()
        ident = next(self._ids)
        self._inboxes[ident] = Inbox(lambda: self._ack(ident))
        spec: dict[str, Any] = {"method": method, "options": [list(o) for o in options]}
        if macaroon_hex is not None:
            spec["macaroon_hex"] = macaroon_hex
        self._send(proc, _frame(b"O", ident, json.dumps(spec).encode()))
        return ident

    def inbox(self, ident: int) -> Inbox | None:
        return self._inboxes.get(ident)

    def stop_stream(self, ident: int) -> None:
        """Ask the gateway to stop the stream (its last batch and ``D`` follow)."""
        proc = self._proc
        if proc is not None and self.gone is None and ident in self._inboxes:
            self._send(proc, _frame(b"C", ident))

    def _ack(self, ident: int) -> None:
        """One batch of the stream taken: the gateway may send another."""
        proc = self._proc
        if proc is not None and self.gone is None and ident in self._inboxes:
            self._send(proc, _frame(b"K", ident))

    def forget_stream(self, ident: int) -> None:
        inbox = self._inboxes.pop(ident, None)
        if inbox is not None:
            inbox.abandon()

    # ------------------------------------------------------------------ frames

    async def _dispatch(self, proc: asyncio.subprocess.Process) -> None:
        out = proc.stdout
        assert out is not None
        try:
            while True:
                header = await out.readexactly(5)
                kind = header[:1]
                payload = await out.readexactly(int.from_bytes(header[1:], "little"))
                ident = int.from_bytes(payload[:4], "little")
                if kind == b"R" or kind == b"F":
                    future = self._calls.get(ident)
                    if future is None or future.done():
                        continue  # its caller gave up
                    if kind == b"R":
                        future.set_result(payload[4:])
                    else:
                        err = json.loads(payload[4:])
                        future.set_exception(
                            RpcFailure(err["code"], err["details"], connecting=err["connecting"])
                        )
                    continue
                inbox = self._inboxes.get(ident)
                if inbox is None:
                    continue
                inbox.put((kind, payload))
                if kind == b"D" or kind == b"X":
                    del self._inboxes[ident]
        except asyncio.IncompleteReadError:
            pass
        except BaseException:  # cancelled (the loop ends): nobody waits for it any more
            self._end("the lnd gateway's pipe is no longer read")
            raise
        status = await proc.wait()
        if self._closing:
            self._end("the LND client was closed")
        else:
            self._end(f"the lnd gateway process exited unexpectedly (status {status})")

    def _abandon(self, why: str) -> None:
        """The gateway is stuck (alive, answering nothing past a call's deadline): end
        it, so the client's next call starts another instead of waiting on this one."""
        self._end(why)
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # the dispatcher reaps it

    def _end(self, why: str) -> None:
        """Fail every pending call and end every open stream with ``why``."""
        self.gone = why
        for future in self._calls.values():
            if not future.done():
                future.set_exception(LndRpcError(why))
        inboxes, self._inboxes = list(self._inboxes.values()), {}
        for inbox in inboxes:
            inbox.put(None)

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """EOF on the gateway's stdin: it stops its streams and exits (SIGKILL after
        CLOSE_WAIT_S)."""
        self._closing = True
        try:
            proc = await asyncio.shield(self._started)
        except OSError:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._dispatcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
