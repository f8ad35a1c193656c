"""The HTLC stream reader: a child process of lnflowd that owns one SubscribeHtlcEvents call.

Reading lnd's stream costs about as much CPU per event as decoding, tracking and
storing it; in one process both share one GIL and the daemon tops out near one core.
This process only reads: a synchronous grpc channel with SingleThreadedUnaryStream
(no channel spin thread, no per-message thread hand-off) and raw bytes (no
deserialisation), forwarded in batches over a pipe to :class:`lnflow.lnd.HtlcStream`,
which decodes and hands them on exactly as before.

It is started by path (``python -P .../_reader.py``) and imports only the standard
library and grpc: no lnflow, no protobuf modules, no SQLAlchemy, not even Python's
ssl (grpc has its own TLS).

Protocol. stdin: one JSON line (rpcserver, certificate and macaroon as hex, channel
options, the parent's pid), then nothing; EOF on stdin means "stop" (the parent closed
it, or died). stdout: frames of ``kind (1 byte) | length (u32 LE) | payload``:

* ``S`` the call is started (the parent's connect timeout counts from here);
* ``E`` lnd answered with headers while the call is alive (established);
* ``B`` messages, each ``length (u32 LE) | serialized routerrpc.HtlcEvent``;
* ``X`` the call failed: JSON ``{"code": "UNAVAILABLE", "details": "...",
  "established": true}``;
* ``D`` the call ended with OK, or was stopped on request.

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
from typing import Any

# Python's ssl module is never used here (grpc carries its own TLS), yet asyncio, which
# grpc imports, loads it and with it libssl and libcrypto: ~4 MB of this process's RSS
# (bench/README.md: memory). asyncio does without it; so does everything run here.
sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]

import grpc  # noqa: E402
import grpc.experimental  # noqa: E402

METHOD = "/routerrpc.Router/SubscribeHtlcEvents"
FLUSH_EVERY_S = 0.01  # a quiet stream still delivers within ~10 ms
MAX_BATCH = 512  # messages per frame
_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8  # mallopt(3)
TRIM_EVERY_S = 10.0  # hand freed heap back to the kernel
_HEADER = struct.Struct("<cI")
_LEN = struct.Struct("<I").pack


class _Auth(grpc.AuthMetadataPlugin):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, macaroon_hex: str) -> None:
        self._metadata = (("macaroon", macaroon_hex),)

    def __call__(self, context: Any, callback: Any) -> None:
        callback(self._metadata, None)


class _Out:
    """Frames to the parent; one lock orders them and guards the pending batch."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.parts: list[bytes] = []
        self.count = 0

    def add(self, msg: bytes) -> None:
        with self.lock:
            self.parts.append(_LEN(len(msg)))
            self.parts.append(msg)
            self.count += 1
            if self.count >= MAX_BATCH:
                self._flush_locked()

    def flush(self) -> None:
        with self.lock:
            if self.count:
                self._flush_locked()

    def frame(self, kind: bytes, payload: bytes = b"") -> None:
        with self.lock:
            if self.count:
                self._flush_locked()
            self._write(_HEADER.pack(kind, len(payload)) + payload)

    def _flush_locked(self) -> None:
        payload = b"".join(self.parts)
        self.parts = []
        self.count = 0
        self._write(_HEADER.pack(b"B", len(payload)) + payload)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]


def _one_heap() -> Any:
    """glibc: one malloc arena for all threads (call before grpc starts any); the libc.

    grpc's threads and ours would each get an arena, and the messages passing between
    them leave each one fragmented: the process grew ~4 MB a minute at 22 000 events/s.
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


def _channel(cfg: dict[str, Any]) -> Any:
    creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=bytes.fromhex(cfg["cert_hex"])),
        grpc.metadata_call_credentials(_Auth(cfg["macaroon_hex"])),
    )
    options = [tuple(o) for o in cfg["options"]]
    options.append((grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1))
    return grpc.secure_channel(cfg["rpcserver"], creds, options=options)


def run(cfg: dict[str, Any], out: _Out, libc: Any = None) -> None:
    channel = _channel(cfg)
    stopping = threading.Event()
    finished = threading.Event()

    def watch_stdin() -> None:
        """EOF (or anything) on stdin: stop. Closing the channel cancels the call
        without the call's lock, which a blocked initial_metadata() holds."""
        sys.stdin.buffer.read()
        stopping.set()
        channel.close()

    def flush_periodically() -> None:
        trim = getattr(libc, "malloc_trim", None)
        trimmed = time.monotonic()
        while not finished.wait(FLUSH_EVERY_S):
            out.flush()
            if trim is not None and time.monotonic() - trimmed > TRIM_EVERY_S:
                trim(0)
                trimmed = time.monotonic()

    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
    flusher = threading.Thread(target=flush_periodically, name="flusher", daemon=True)
    flusher.start()
    established = False
    call = channel.unary_stream(METHOD, request_serializer=None, response_deserializer=None)(
        b"", wait_for_ready=False
    )
    out.frame(b"S")
    try:
        call.initial_metadata()  # headers, or the end of a call that failed first
        if not call.done():
            established = True
            out.frame(b"E")
        for msg in call:
            if not established:
                established = True
                out.frame(b"E")
            out.add(msg)
        out.frame(b"D")
    except grpc.RpcError as exc:
        if stopping.is_set():
            out.frame(b"D")
        else:
            code, details = exc.code().name, exc.details() or ""
            error = {"code": code, "details": details, "established": established}
            out.frame(b"X", json.dumps(error).encode())
    finally:
        finished.set()
        flusher.join()


def main() -> int:
    # systemd stops the whole cgroup: the parent decides when reading ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints must not corrupt the frames
    line = sys.stdin.buffer.readline()
    if not line:
        return 0  # stopped before it started
    cfg = json.loads(line)
    _die_with_parent(int(cfg["parent_pid"]))
    libc = _one_heap()
    with contextlib.suppress(BrokenPipeError):  # the parent is gone
        run(cfg, _Out(out_fd), libc)
    return 0


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    os._exit(status)  # now: grpc's orderly shutdown would delay the parent's reconnect
