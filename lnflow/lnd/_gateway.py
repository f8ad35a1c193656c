"""The lnd gateway: the child process of lnflow that talks gRPC to lnd.

One gateway serves one :class:`lnflow.lnd.LndClient` for the client's whole life: its
unary calls (GetInfo, GetVersion, ListChannels, ...) multiplexed on one connection, and
each HTLC stream (SubscribeHtlcEvents) on a connection of its own with the stream's
keepalive. Everything crosses the pipe as raw bytes: the parent serializes requests and
parses responses and stream messages with the generated protobuf classes.

Reading lnd's stream costs about as much CPU per event as decoding, tracking and storing
it; in one process both would share one GIL. Here a stream is read by its own thread,
in bursts, without deserialisation, and forwarded in batches. gRPC over HTTP/2 is
spoken by :mod:`lnflow.lnd._http2`, not by grpcio: grpc woke twice per message lnd
sent (~35 µs of CPU each, now a few) and took ~20 MB of this process's memory
(bench/README.md: "the gateway without grpc").

It is started by path (``python -P .../_gateway.py``) and imports only the standard
library and, through ``_http2.py`` (loaded by path), ``hpack``: no lnflow, no
protobuf modules, no SQLAlchemy, no grpc.

Protocol. Both directions carry frames ``kind (1 byte) | length (u32 LE) | payload``.
stdin: first one JSON line (rpcserver, certificate and macaroon as hex, the unary
channel's options, the parent's pid), then frames whose payload starts with a call or
stream id (u32 LE):

* ``U`` unary call: id | JSON header length (u16 LE) | ``{"method", "timeout_s"}`` and
  optionally ``"macaroon_hex"`` | the serialized request;
* ``O`` open a stream: id | JSON ``{"method", "options"}`` and optionally
  ``"macaroon_hex"``;

A call without ``macaroon_hex`` carries the first line's macaroon. Every call sends its
macaroon as its own metadata (lnd refuses a call carrying two), so one process serves
callers holding different macaroons on the same connection: the recorder's read-only
one and the policy engine's, which may write.
* ``C`` stop the stream id (its last batch and ``D`` follow);
* ``K`` one ``B`` frame of the stream was taken: a stream sends at most
  ``MAX_UNACKED`` batches ahead, then stops handing messages on and stops giving lnd
  flow-control credit (HTTP/2's window holds lnd back), so a slow consumer never fills
  the pipe the unary answers share.

EOF on stdin means "stop": every stream ends (``D``), then the process exits. stdout:
frames whose payload starts with the id (u32 LE):

* ``R`` a unary call's serialized response;
* ``F`` a unary call failed: JSON ``{"code": "UNAVAILABLE", "details": "...",
  "connecting": true}`` (connecting: the unary calls had no live connection then);
* ``S`` the stream's call is started (the parent's connect timeout counts from here);
* ``E`` lnd answered with headers while the stream is alive (established);
* ``B`` stream messages, each ``length (u32 LE) | serialized routerrpc.HtlcEvent``;
* ``X`` the stream failed: JSON ``{"code", "details", "established", "connecting"}``;
* ``D`` the stream ended with OK, or was stopped on request.

The process ignores SIGTERM and SIGINT: systemd signals the whole cgroup on stop, and
the daemon keeps reading for a moment (shutdown_drain_s) before it says stop, so events
already sent are kept. It dies with its parent (PR_SET_PDEATHSIG, and EOF on stdin).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import struct
import sys
import threading
import time
import traceback
from typing import Any


def _load_http2() -> Any:
    """lnflow.lnd._http2 by path: the gateway runs outside lnflow's package."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("_http2.py")
    spec = importlib.util.spec_from_file_location("lnflow_gateway_http2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


http2 = _load_http2()

FLUSH_EVERY_S = 0.01  # a quiet stream still delivers within ~10 ms
MAX_BATCH = 512  # messages per frame
MAX_UNACKED = 16  # B frames a stream sends before the parent took one (K)
_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8  # mallopt(3)
TRIM_EVERY_S = 10.0  # hand freed heap back to the kernel
STOP_WAIT_S = 5.0  # on EOF: the streams' last batches
_HEADER = struct.Struct("<cI")
_ID = struct.Struct("<I")
_U16 = struct.Struct("<H")
_LEN = _ID.pack


class _Out:
    """Frames to the parent; one lock keeps them whole."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def frame(self, kind: bytes, ident: int, payload: bytes = b"") -> None:
        data = _HEADER.pack(kind, 4 + len(payload)) + _ID.pack(ident) + payload
        with self.lock:
            self._write(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]


class _Batch:
    """One stream's pending messages; its lock orders the stream's frames."""

    def __init__(self, out: _Out, ident: int, filled: threading.Event) -> None:
        self.out = out
        self.ident = ident
        self.filled = filled  # set when the batch gets its first message: wakes the flusher
        self.lock = threading.Lock()
        self.parts: list[bytes] = []
        self.count = 0
        self.unacked = 0  # B frames sent the parent has not taken yet
        self.window = threading.Lock()  # guards unacked and closed
        self.closed = False
        self.on_ack: Any = None  # called after the parent took a batch

    def acked(self) -> None:
        with self.window:
            self.unacked -= 1
        if self.on_ack is not None:
            self.on_ack()

    def room(self) -> bool:
        """Fewer than MAX_UNACKED batches wait in the parent (or the stream stops)."""
        return self.unacked < MAX_UNACKED or self.closed

    def close(self) -> None:
        with self.window:
            self.closed = True

    def add_many(self, msgs: list[bytes]) -> None:
        with self.lock:
            parts = self.parts
            for msg in msgs:
                parts.append(_LEN(len(msg)))
                parts.append(msg)
                self.count += 1
                if self.count >= MAX_BATCH:
                    self._flush_locked()
                    parts = self.parts
            if self.count:
                self.filled.set()

    def flush(self) -> None:
        with self.lock:
            if self.count:
                self._flush_locked()

    def frame(self, kind: bytes, payload: bytes = b"") -> None:
        with self.lock:
            if self.count:
                self._flush_locked()
            self.out.frame(kind, self.ident, payload)

    def _flush_locked(self) -> None:
        payload = b"".join(self.parts)
        self.parts = []
        self.count = 0
        with self.window:
            self.unacked += 1
        self.out.frame(b"B", self.ident, payload)


def _one_heap() -> Any:
    """glibc: one malloc arena for all threads (call before any starts); the libc.

    Each thread would get an arena, and the messages passing between them leave each
    one fragmented: the process grew ~4 MB a minute at 22 000 events/s (under grpc).
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL when the parent goes (Linux); exit now if it already went."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: EOF on stdin still stops us
        pass
    if os.getppid() != parent_pid:
        sys.exit(0)


def _read_exactly(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    if data is None or len(data) < size:
        return None
    return bytes(data)


class Gateway:
    def __init__(self, cfg: dict[str, Any], out: _Out, libc: Any = None) -> None:
        self.cfg = cfg
        self.out = out
        self.libc = libc
        self.lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.wake = threading.Event()
        self.finished = threading.Event()
        self._unary_r, self._unary_w = os.pipe()
        os.set_blocking(self._unary_r, False)
        os.set_blocking(self._unary_w, False)
        self.link = http2.Multiplex(
            cfg["rpcserver"],
            bytes.fromhex(cfg["cert_hex"]),
            wake_fd=self._unary_r,
            stopping=self.finished.is_set,
            answer=self._answer,
        )

    def auth(self, head: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        """The call's metadata: its own macaroon, or the process's."""
        return (("macaroon", head.get("macaroon_hex") or self.cfg["macaroon_hex"]),)

    def connecting(self) -> bool:
        """The unary calls' connection is not up (turns a deadline into unreachable)."""
        return not self.link.connected

    # ------------------------------------------------------------------ unary

    def unary(self, ident: int, payload: bytes) -> None:
        (size,) = _U16.unpack_from(payload)
        head = json.loads(payload[2 : 2 + size])
        request = payload[2 + size :]
        self.link.submit(ident, head["method"], self.auth(head), request, head["timeout_s"])
        self._poke_unary()

    def _poke_unary(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            os.write(self._unary_w, b"w")

    def _answer(self, ident: int, data: bytes | None, failure: Any, connecting: bool) -> None:
        with contextlib.suppress(BrokenPipeError):  # the parent is gone
            if failure is None:
                self.out.frame(b"R", ident, data or b"")
                return
            error = {"code": failure.code, "details": failure.details, "connecting": connecting}
            self.out.frame(b"F", ident, json.dumps(error).encode())

    # ------------------------------------------------------------------ streams

    def open_stream(self, ident: int, payload: bytes) -> None:
        spec = json.loads(payload)
        stream = _Stream(self, ident, spec["method"], spec["options"], self.auth(spec))
        with self.lock:
            self.streams[ident] = stream
        stream.thread.start()

    def stop_stream(self, ident: int) -> None:
        with self.lock:
            stream = self.streams.get(ident)
        if stream is not None:
            stream.stop()

    def ack(self, ident: int) -> None:
        with self.lock:
            stream = self.streams.get(ident)
        if stream is not None:
            stream.batch.acked()

    def ended(self, stream: _Stream) -> None:
        with self.lock:
            self.streams.pop(stream.ident, None)

    def flush_periodically(self) -> None:
        """Send a stream's batch FLUSH_EVERY_S after its first message; trim the heap
        now and then. Asleep while no batch holds a message: a quiet stream costs no
        wake-ups (polling every FLUSH_EVERY_S was ~0.5 % of a core, bench/README.md)."""
        trim = getattr(self.libc, "malloc_trim", None)
        trimmed = time.monotonic()
        while not self.finished.is_set():
            if self.wake.wait(TRIM_EVERY_S):
                self.wake.clear()  # a message added from here on wakes us again
                self.finished.wait(FLUSH_EVERY_S)  # what comes meanwhile: one frame
                with self.lock:
                    streams = list(self.streams.values())
                for stream in streams:
                    with contextlib.suppress(BrokenPipeError):
                        stream.batch.flush()
            if trim is not None and time.monotonic() - trimmed > TRIM_EVERY_S:
                trim(0)
                trimmed = time.monotonic()

    def serve(self, stdin: Any) -> None:
        flusher = threading.Thread(target=self.flush_periodically, name="flusher", daemon=True)
        flusher.start()
        unary = threading.Thread(target=self.link.run, name="unary", daemon=True)
        unary.start()
        try:
            while True:
                header = _read_exactly(stdin, 5)
                if header is None:
                    break
                kind, size = _HEADER.unpack(header)
                payload = _read_exactly(stdin, size)
                if payload is None or size < 4:
                    break
                (ident,) = _ID.unpack_from(payload)
                body = payload[4:]
                if kind == b"U":
                    self.unary(ident, body)
                elif kind == b"O":
                    self.open_stream(ident, body)
                elif kind == b"C":
                    self.stop_stream(ident)
                elif kind == b"K":
                    self.ack(ident)
        finally:
            with self.lock:
                streams = list(self.streams.values())
            for stream in streams:
                stream.stop()
            deadline = time.monotonic() + STOP_WAIT_S
            for stream in streams:
                stream.thread.join(max(0.0, deadline - time.monotonic()))
            self.finished.set()
            self.wake.set()
            self._poke_unary()
            flusher.join()
            unary.join(STOP_WAIT_S)


class _Stream:
    """One server-streaming call on a connection of its own, read by its own thread."""

    def __init__(
        self, gateway: Gateway, ident: int, method: str, options: list[Any], metadata: Any
    ) -> None:
        self.gateway = gateway
        self.ident = ident
        self.method = method
        opts = {o[0]: o[1] for o in options}
        self.keepalive_s = float(opts.get("grpc.keepalive_time_ms", 30_000)) / 1000
        self.keepalive_timeout_s = float(opts.get("grpc.keepalive_timeout_ms", 20_000)) / 1000
        self.metadata = metadata
        self.batch = _Batch(gateway.out, ident, gateway.wake)
        self.batch.on_ack = self._acked
        self._want_room = False  # the reader waits for the parent to take a batch
        self.stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._pipe = threading.Lock()  # the write end closes while another thread pokes
        self.thread = threading.Thread(target=self.run, name=f"stream-{ident}", daemon=True)

    def _poke(self) -> None:
        with self._pipe, contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            if self._wake_w >= 0:
                os.write(self._wake_w, b"w")

    def _room(self) -> bool:
        if self.batch.room():
            return True
        self._want_room = True  # then asked again: an ack in between is not missed
        return self.batch.room()

    def _acked(self) -> None:
        """Wake the reader only if it waits for this (most acks find it reading)."""
        if self._want_room:
            self._want_room = False
            self._poke()

    def stop(self) -> None:
        self.stopping.set()
        self.batch.close()
        self._poke()

    def run(self) -> None:
        with contextlib.suppress(BrokenPipeError):  # the parent is gone
            try:
                self._read()
            finally:
                self.gateway.ended(self)
                with self._pipe:
                    os.close(self._wake_w)
                    self._wake_w = -1
                os.close(self._wake_r)

    def _read(self) -> None:
        out = self.batch
        out.frame(b"S")
        cfg = self.gateway.cfg
        call = http2.Call(
            cfg["rpcserver"],
            bytes.fromhex(cfg["cert_hex"]),
            self.method,
            self.metadata,
            keepalive_s=self.keepalive_s,
            keepalive_timeout_s=self.keepalive_timeout_s,
            wake_fd=self._wake_r,
            stopping=self.stopping.is_set,
        )
        try:
            call.run(lambda: out.frame(b"E"), self._room, out.add_many)
        except http2.Stopped:
            pass
        except http2.CallFailed as exc:
            if not self.stopping.is_set():
                self._failed(call, exc.code, exc.details)
                return
        except Exception as exc:  # a fault of the client itself: never a silent stream
            traceback.print_exc()  # stderr: the daemon's journal
            self._failed(call, "INTERNAL", f"the gateway's gRPC client failed: {exc!r}")
            return
        out.frame(b"D")

    def _failed(self, call: Any, code: str, details: str) -> None:
        error = {
            "code": code,
            "details": details,
            "established": call.established,
            "connecting": not call.connected,
        }
        self.batch.frame(b"X", json.dumps(error).encode())


def main() -> int:
    # systemd stops the whole cgroup: the parent decides when the gateway ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints must not corrupt the frames
    stdin = sys.stdin.buffer
    line = stdin.readline()
    if not line:
        return 0  # stopped before it started
    cfg = json.loads(line)
    _die_with_parent(int(cfg["parent_pid"]))
    libc = _one_heap()
    with contextlib.suppress(BrokenPipeError):  # the parent is gone
        Gateway(cfg, _Out(out_fd), libc).serve(stdin)
    return 0


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    os._exit(status)  # now: daemon threads blocked in a connect would delay the parent
