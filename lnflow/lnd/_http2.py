"""One gRPC server-streaming call over HTTP/2, read without grpc: the HTLC stream.

Why not grpc: grpc wakes twice for every message lnd sends (its I/O thread, then the
reading thread), ~35 µs of CPU per message; ``h2`` costs ~27 µs per frame. Reading
the socket in bursts (``PAUSE_S`` after each read) and splitting frames here costs a
few µs per message (bench/README.md: "what the stream costs to read without grpc").
The unary calls stay on grpc in the gateway: they are few.

What it implements is what one client call needs (RFC 9113; gRPC's PROTOCOL-HTTP2):

* TLS with lnd's certificate as the only trust anchor, host name checked, ALPN ``h2``;
* the preface, SETTINGS (push off, lnd's 64 KiB initial window kept) and their ACK;
* the request as one HEADERS frame (HPACK literals without indexing, no Huffman) and
  one DATA frame ending the stream; the response's header blocks (HEADERS and
  CONTINUATION) decoded with ``hpack``, so its dynamic table stays in step;
* DATA split into gRPC's length-prefixed messages, flow-control credit given back
  only for what was handed on (a slow reader holds lnd back, as grpc's window did);
* PING answered; a ping of its own after ``keepalive_s`` without a byte from lnd,
  the call failed if nothing comes back within ``keepalive_timeout_s`` (grpc's
  keepalive watchdog); never more often, so lnd's ping policy sees no strikes;
* the end: trailers (grpc-status, grpc-message), a trailers-only answer, HTTP status
  codes, RST_STREAM and GOAWAY mapped to gRPC status code names as grpc maps them.

Failures are :class:`CallFailed` with a grpc status code name and details worded as
grpcio words them, so :func:`lnflow.lnd.errors.classify` maps both alike. Only the
standard library and ``hpack`` are imported: the gateway loads this file by path.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import select
import socket
import ssl
import struct
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from hpack import Decoder, HPACKError

__all__ = ["PAUSE_S", "Call", "CallFailed", "Stopped", "frame", "request_headers"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, _PRIORITY, RST_STREAM, SETTINGS, _PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH = 0x2
STREAM = 1  # the call's stream: the first a client opens
WINDOW = 65_535  # HTTP/2's initial window, kept (lnflow.lnd.client.STREAM_WINDOW says why)
CREDIT_AT = WINDOW // 2  # give credit back once half the window was handed on
CONNECT_TIMEOUT_S = 20.0  # TCP and TLS together; grpc's minimum connect timeout
WRITE_TIMEOUT_S = 20.0
PAUSE_S = 0.005  # after a read: what lnd sends meanwhile comes in the next one
BUSY_S = 0.01  # ... when the read came this soon after the one before (a quiet stream
# at a node's usual rates wakes once per message, not twice)
READ_SIZE = 32 * 1024  # TLS hands over one record (<= 16 KiB) a read
# bytes taken off the socket in one system call: many TLS records, and more than lnd may
# have in flight (HTTP/2's 64 KiB windows, which lnflow keeps)
RAW_READ = 128 * 1024
MAX_MESSAGE = 200 * 1024 * 1024  # lnd's MaxGrpcMsgSize

# gRPC status codes by number
STATUS = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
# HTTP/2 error codes: their names, and the gRPC status an RST_STREAM with one means
H2_ERRORS = (
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
)
RST_STATUS = {7: "UNAVAILABLE", 8: "CANCELLED", 11: "RESOURCE_EXHAUSTED", 12: "PERMISSION_DENIED"}
# a response without grpc-status: gRPC's mapping of the HTTP status
HTTP_STATUS = {
    "400": "INTERNAL",
    "401": "UNAUTHENTICATED",
    "403": "PERMISSION_DENIED",
    "404": "UNIMPLEMENTED",
    "429": "UNAVAILABLE",
    "502": "UNAVAILABLE",
    "503": "UNAVAILABLE",
    "504": "UNAVAILABLE",
}
# OpenSSL's reasons when the peer answered the handshake with something not TLS
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")
_HEAD = struct.Struct(">I")


class CallFailed(Exception):
    """The call ended with a gRPC status other than OK (``code`` is its name)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class Stopped(Exception):
    """The call was stopped on request."""


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack(len(payload))[1:] + bytes((ftype, flags)) + _HEAD.pack(stream) + payload


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    """RFC 7541 §5.1 with a zero first-byte pattern."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def request_headers(authority: str, path: str, metadata: Sequence[tuple[str, str]]) -> bytes:
    """The request's header block: literals without indexing (RFC 7541 §6.2.2), so the
    server's decoder keeps no state of ours and no Huffman coding is needed."""
    fields = [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "lnflow"),
        *metadata,
    ]
    out = bytearray()
    for name, value in fields:
        raw_name, raw_value = name.encode(), value.encode()
        out += b"\x00" + _hpack_int(len(raw_name), 7) + raw_name
        out += _hpack_int(len(raw_value), 7) + raw_value
    return bytes(out)


def _split_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise CallFailed("UNAVAILABLE", f"errors resolving {target}: [not host:port]")
    return host.strip("[]"), int(port)


def _peer(family: int, addr: Any) -> str:
    if family == socket.AF_INET6:
        return f"ipv6:[{addr[0]}]:{addr[1]}"
    return f"ipv4:{addr[0]}:{addr[1]}"


def _unreachable(peer: str, why: str) -> CallFailed:
    return CallFailed(
        "UNAVAILABLE",
        f"failed to connect to all addresses; last error: UNKNOWN: {peer}: {why}",
    )


class _Tls:
    """TLS over a non-blocking socket through memory buffers (``ssl.MemoryBIO``).

    An ``ssl.SSLSocket`` reads the socket twice for every TLS record (its header, then
    its body): two system calls per record, and a record may hold a single message of
    lnd's stream. Here one ``recv_into`` takes whatever the socket holds, up to
    :data:`RAW_READ` bytes, and the records in it are decrypted from memory.

    Its methods behave as the socket's did for the callers here: :meth:`recv` returns one
    record's data and raises ``BlockingIOError`` when nothing is left to read now,
    ``ssl.SSLEOFError`` or ``ssl.SSLZeroReturnError`` at the end; :meth:`do_handshake`
    raises ``ssl.SSLWantReadError`` / ``ssl.SSLWantWriteError`` until it is done;
    :meth:`sendall` returns once every byte is on the socket (waiting through ``wait``);
    :meth:`send` is a best effort that never waits.
    """

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        host: str,
        wait: Callable[[Any, int, float, str], None],
    ) -> None:
        self._sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_hostname=host)
        self._wait = wait
        self._unsent = bytearray()  # records not on the socket yet
        self._buffer = bytearray(RAW_READ)
        self._view = memoryview(self._buffer)

    def fileno(self) -> int:
        return self._sock.fileno()

    def selected_alpn_protocol(self) -> str | None:
        return self._tls.selected_alpn_protocol()

    def close(self) -> None:
        self._sock.close()

    def _take(self) -> bool:
        """What the socket holds into the TLS buffer: False when nothing is there now
        (``BlockingIOError`` is not raised), True when it was read or the socket ended."""
        try:
            n = self._sock.recv_into(self._buffer)
        except BlockingIOError:
            return False
        if n:
            self._in.write(self._view[:n])
        elif self._in.eof:  # TLS asked for more after the end: never read the end again
            raise ssl.SSLEOFError("EOF occurred in violation of protocol")
        else:
            self._in.write_eof()
        return True

    def _flush(self) -> None:
        """The records TLS wrote, onto the socket as far as it takes them now."""
        if self._out.pending:
            self._unsent += self._out.read()
        while self._unsent:
            n = self._sock.send(self._unsent)  # BlockingIOError: the rest waits
            del self._unsent[:n]

    def do_handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                try:
                    self._flush()
                except BlockingIOError:
                    raise ssl.SSLWantWriteError("The socket takes no more now") from None
                if not self._take():
                    raise
        self.sendall(b"")  # the handshake's last records (the client's Finished)

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self._tls.read(size)
            except ssl.SSLWantReadError:
                # anything TLS has to answer (a key update) goes first, if it can
                with contextlib.suppress(BlockingIOError):
                    self._flush()
                if not self._take():
                    raise BlockingIOError(errno.EAGAIN, "nothing to read now") from None

    def sendall(self, data: bytes) -> None:
        if data:
            self._tls.write(data)
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        while True:
            try:
                self._flush()
                return
            except BlockingIOError:
                self._wait(self, select.POLLOUT, deadline, "Socket write timed out")

    def send(self, data: bytes) -> None:
        self._tls.write(data)
        with contextlib.suppress(BlockingIOError):
            self._flush()


class _Link:
    """A TLS connection to lnd speaking HTTP/2; one thread owns its socket."""

    def __init__(
        self, target: str, cert_pem: bytes, *, wake_fd: int, stopping: Callable[[], bool]
    ) -> None:
        self.target = target
        self.cert_pem = cert_pem
        self.wake_fd = wake_fd
        self.stopping = stopping
        self.sock: _Tls | None = None
        self._decoder = Decoder()
        self._block = b""  # a header block waiting for CONTINUATION
        self._block_ends = False  # its HEADERS frame ended the stream
        self._block_stream = 0
        self.ack_failed: CallFailed | None = None  # an ACK could not be sent

    def _header_block(
        self, ftype: int, flags: int, stream: int, payload: bytes
    ) -> tuple[dict[str, str], bool, int] | None:
        """HEADERS or CONTINUATION: once the block is whole, its fields, whether it
        ends its stream, and the stream; None before. Every block is decoded, whoever
        it is for, so HPACK's table stays in step; one that cannot be decoded loses
        the table, and with it the connection."""
        if ftype == HEADERS:
            if flags & PADDED:
                payload = _unpad(payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._block, self._block_ends = payload, bool(flags & END_STREAM)
            self._block_stream = stream
        else:
            self._block += payload
        if not flags & END_HEADERS:
            return None
        block, self._block = self._block, b""
        try:
            fields = _fields(self._decoder, block)
        except HPACKError as exc:
            raise CallFailed("INTERNAL", f"Bad header block: {exc}") from exc
        return fields, self._block_ends, self._block_stream

    def _acknowledge(self, ftype: int, flags: int, payload: bytes) -> None:
        """lnd's PING and SETTINGS get their ACK. One that cannot be sent (the connection
        is ending) is noted in :attr:`ack_failed`: what was read after the frame is
        still taken apart and handed on before the connection counts as lost."""
        if flags & ACK:
            return
        try:
            if ftype == PING:
                self._send(frame(PING, ACK, 0, payload))
            elif ftype == SETTINGS:
                self._send(frame(SETTINGS, ACK, 0))
        except CallFailed as failure:
            if self.ack_failed is None:
                self.ack_failed = failure

    # ------------------------------------------------------------------ connecting

    def _wait(self, sock: socket.socket | _Tls, events: int, deadline: float, why: str) -> None:
        """Until ``sock`` is ready for ``events``; Stopped or CallFailed(why) first."""
        poller = select.poll()
        poller.register(sock.fileno(), events)
        poller.register(self.wake_fd, select.POLLIN)
        while True:
            if self.stopping():
                raise Stopped
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                raise CallFailed("UNAVAILABLE", why)
            soonest = self._tick(now)
            if soonest is not None:
                left = min(left, max(0.0, soonest - now) + 0.001)
            for fd, _ in poller.poll(left * 1000):
                if fd == sock.fileno():
                    return
            self._drain_wake()

    def _tick(self, now: float) -> float | None:
        """While waiting on the socket: what else is due now; when to be woken next."""
        return None

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_fd, 4096)

    def _connect(self, deadline: float) -> _Tls:
        host, port = _split_target(self.target)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise CallFailed("UNAVAILABLE", f"errors resolving {self.target}: [{reason}]") from exc
        failure = _unreachable(self.target, "no address")
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            peer = _peer(family, addr)
            try:
                code = sock.connect_ex(addr)
                if code == errno.EINPROGRESS:
                    self._wait(
                        sock,
                        select.POLLOUT,
                        deadline,
                        _unreachable(
                            peer, "Failed to connect to remote host: Timeout occurred"
                        ).details,
                    )
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except BaseException:
                sock.close()
                raise
            if code:
                sock.close()
                failure = _unreachable(
                    peer, f"Failed to connect to remote host: {os.strerror(code)}"
                )
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                return self._handshake(sock, host, peer, deadline)
            except BaseException:
                sock.close()
                raise
        raise failure

    def _handshake(self, sock: socket.socket, host: str, peer: str, deadline: float) -> _Tls:
        try:
            ctx = ssl.create_default_context(cadata=self.cert_pem.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise CallFailed(
                "UNAVAILABLE", f"Failed to create security handshaker: tls.cert: {exc}"
            ) from exc
        ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)  # as lenient as grpc's
        ctx.set_alpn_protocols(["h2"])
        tls = _Tls(sock, ctx, host, self._wait)
        cut = f"{peer}: Handshake read failed (timed out)"
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._wait(tls, select.POLLIN, deadline, cut)
            except ssl.SSLWantWriteError:
                self._wait(tls, select.POLLOUT, deadline, cut)
            except ssl.SSLCertVerificationError as exc:
                message = exc.verify_message or exc.reason or str(exc)
                if "mismatch" in message.lower():
                    why = f"Hostname Verification Check failed: {message}"
                else:
                    why = f"CERTIFICATE_VERIFY_FAILED: {message}"
                raise CallFailed(
                    "UNAVAILABLE", f"{peer}: Tls handshake failed (TSI_PROTOCOL_FAILURE): {why}"
                ) from exc
            except ssl.SSLError as exc:
                reason = exc.reason or type(exc).__name__
                if reason in _NOT_TLS:
                    reason = f"WRONG_VERSION_NUMBER ({exc.reason})"
                raise CallFailed(
                    "UNAVAILABLE", f"{peer}: Tls handshake failed (TSI_PROTOCOL_FAILURE): {reason}"
                ) from exc
            except OSError as exc:
                raise CallFailed(
                    "UNAVAILABLE", f"{peer}: Handshake read failed ({exc.strerror or exc})"
                ) from exc
        if tls.selected_alpn_protocol() != "h2":
            raise CallFailed(
                "UNAVAILABLE",
                f"{peer}: Tls handshake failed: the server did not agree on HTTP/2 "
                "(ALPN h2): not a gRPC port",
            )
        return tls

    # ------------------------------------------------------------------ the call

    def _send(self, data: bytes) -> None:
        sock = self.sock
        assert sock is not None
        try:
            sock.sendall(data)
        except OSError as exc:
            raise CallFailed("UNAVAILABLE", f"Socket closed ({exc.strerror or exc})") from exc


class Call(_Link):
    """One server-streaming call on a TLS connection of its own.

    :meth:`run` connects, sends the request, and hands each message on through
    ``deliver`` while ``room()`` says the consumer takes more (otherwise messages
    wait, and so does lnd's window credit). It returns when the call ends with OK and
    raises :class:`CallFailed` or, once ``wake_fd`` is readable and ``stopping()`` is
    true, :class:`Stopped`. Only the thread calling :meth:`run` touches the socket.
    """

    def __init__(
        self,
        target: str,
        cert_pem: bytes,
        path: str,
        metadata: Sequence[tuple[str, str]],
        *,
        request: bytes = b"",
        keepalive_s: float = 30.0,
        keepalive_timeout_s: float = 20.0,
        wake_fd: int,
        stopping: Callable[[], bool],
        pause_s: float = PAUSE_S,
    ) -> None:
        super().__init__(target, cert_pem, wake_fd=wake_fd, stopping=stopping)
        self.path = path
        self.metadata = metadata
        self.request = request
        self.keepalive_s = keepalive_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.pause_s = pause_s
        self.connected = False  # TLS is up
        self.established = False  # lnd answered: headers or a message
        self._rest = b""  # an incomplete frame
        self._partial = b""  # an incomplete gRPC message
        self._got_headers = False
        self._uncredited = 0  # DATA bytes read, their window not given back yet
        self._pending: list[bytes] = []  # messages read, not handed on yet
        self._end: CallFailed | None = None
        self._ended = False

    def run(
        self,
        on_headers: Callable[[], None],
        room: Callable[[], bool],
        deliver: Callable[[list[bytes]], None],
    ) -> None:
        self.sock = sock = self._connect(time.monotonic() + CONNECT_TIMEOUT_S)
        self.connected = True
        try:
            body = b"\x00" + _HEAD.pack(len(self.request)) + self.request
            self._send(
                PREFACE
                + frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_ENABLE_PUSH, 0))
                + frame(
                    HEADERS,
                    END_HEADERS,
                    STREAM,
                    request_headers(self.target, self.path, self.metadata),
                )
                + frame(DATA, END_STREAM, STREAM, body)
            )
            self._pump(on_headers, room, deliver)
        except (Stopped, CallFailed) as exc:
            pending, self._pending = self._pending, []
            if pending:  # what was read before the end is kept
                deliver(pending)
            if isinstance(exc, Stopped):
                self._cancel()
            raise
        finally:
            sock.close()

    def _cancel(self) -> None:
        """Tell lnd the call is over (best effort: the socket closes next)."""
        try:
            assert self.sock is not None
            self.sock.send(frame(RST_STREAM, 0, STREAM, _HEAD.pack(8)))  # CANCEL
        except (OSError, ValueError, AssertionError):
            pass

    def _pump(
        self,
        on_headers: Callable[[], None],
        room: Callable[[], bool],
        deliver: Callable[[list[bytes]], None],
    ) -> None:
        sock = self.sock
        assert sock is not None
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self.wake_fd, select.POLLIN)
        recv = sock.recv
        last_read = time.monotonic()
        pinged: float | None = None  # when our unanswered ping went out
        while True:
            chunks, eof = _recv_all(recv)
            busy = False
            if chunks:
                now = time.monotonic()
                busy = now - last_read < BUSY_S
                last_read = now
                pinged = None
                had = self.established
                self._feed(b"".join(chunks) if len(chunks) > 1 else chunks[0])
                if self.established and not had:
                    on_headers()
            lost = eof or self.ack_failed
            if self._pending and (room() or self._ended or lost is not None):
                pending, self._pending = self._pending, []
                deliver(pending)
            if not self._pending and self._uncredited >= CREDIT_AT and lost is None:
                credit = _HEAD.pack(self._uncredited)
                self._uncredited = 0
                self._send(
                    frame(WINDOW_UPDATE, 0, 0, credit) + frame(WINDOW_UPDATE, 0, STREAM, credit)
                )
            if self._ended and not self._pending:
                if self._end is not None:
                    raise self._end
                return
            if lost is not None:
                raise lost
            if self.stopping():
                raise Stopped
            if busy and self.pause_s and not self._ended:
                time.sleep(self.pause_s)  # lnd sends fast: let its next messages gather
                continue
            now = time.monotonic()
            if pinged is None:
                left = last_read + self.keepalive_s - now
                if left <= 0:
                    self._send(frame(PING, 0, 0, b"lnflow\x00\x00"))
                    pinged = now
                    continue
            else:
                left = pinged + self.keepalive_timeout_s - now
                if left <= 0:
                    raise CallFailed("UNAVAILABLE", "keepalive watchdog timeout")
            for fd, _ in poller.poll(left * 1000):
                if fd == self.wake_fd:
                    self._drain_wake()

    # ------------------------------------------------------------------ frames

    def _feed(self, data: bytes) -> None:
        """Every whole frame in what was read (the rest waits for more)."""
        buf = self._rest + data if self._rest else data
        i, n = 0, len(buf)
        pending = self._pending
        while n - i >= 9 and not self._ended:
            end = i + 9 + int.from_bytes(buf[i : i + 3], "big")
            if end > n:
                break
            ftype = buf[i + 3]
            flags = buf[i + 4]
            stream = int.from_bytes(buf[i + 5 : i + 9], "big") & 0x7FFFFFFF
            if ftype == DATA and stream == STREAM:
                self._uncredited += end - i - 9
                payload = buf[i + 9 : end]
                if flags & PADDED:
                    payload = _unpad(payload)
                self._messages(payload, pending)
                if flags & END_STREAM:
                    self._finish(CallFailed("INTERNAL", "Stream ended without trailers"))
            else:
                self._control(ftype, flags, stream, buf[i + 9 : end])
            i = end
        self._rest = buf[i:]

    def _messages(self, payload: bytes, out: list[bytes]) -> None:
        buf = self._partial + payload if self._partial else payload
        j, m = 0, len(buf)
        while m - j >= 5:
            size = int.from_bytes(buf[j + 1 : j + 5], "big")
            if buf[j]:
                self._finish(CallFailed("INTERNAL", "Compressed message without grpc-encoding"))
                return
            if size > MAX_MESSAGE:
                self._finish(
                    CallFailed(
                        "RESOURCE_EXHAUSTED",
                        f"Received message larger than max ({size} vs. {MAX_MESSAGE})",
                    )
                )
                return
            if m - j - 5 < size:
                break
            out.append(buf[j + 5 : j + 5 + size])
            j += 5 + size
        self._partial = buf[j:] if j < m else b""
        if out:
            self.established = True

    def _finish(self, failure: CallFailed | None) -> None:
        if not self._ended:
            self._ended = True
            self._end = failure

    def _control(self, ftype: int, flags: int, stream: int, payload: bytes) -> None:
        if ftype in (PING, SETTINGS):
            self._acknowledge(ftype, flags, payload)
        elif ftype in (HEADERS, CONTINUATION):
            whole = self._header_block(ftype, flags, stream, payload)
            if whole is not None and whole[2] == STREAM:
                self._headers(whole[0], whole[1])
        elif ftype == RST_STREAM and stream == STREAM:
            self._finish(_rst(int.from_bytes(payload[:4], "big")))
        elif ftype == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if last < STREAM or int.from_bytes(payload[4:8], "big"):
                self._finish(_goaway(payload))
            # NO_ERROR naming our stream: lnd drains it; the call ends as lnd ends it
        # another stream's frames (none is ours), WINDOW_UPDATE, PRIORITY and unknown
        # types: nothing to do

    def _headers(self, fields: dict[str, str], ends: bool) -> None:
        first = not self._got_headers
        self._got_headers = True
        if first:
            status = str(fields.get(":status", ""))
            if status != "200" and "grpc-status" not in fields:
                code = HTTP_STATUS.get(status, "UNKNOWN")
                self._finish(CallFailed(code, f"Received http2 header with status: {status}"))
                return
            if not ends:
                self.established = True
                return  # the response's headers; messages and trailers follow
        if not ends:
            self._finish(CallFailed("INTERNAL", "Headers after the response's headers"))
            return
        self._finish(_status(fields))


def _recv_all(recv: Callable[[int], bytes]) -> tuple[list[bytes], CallFailed | None]:
    """What a non-blocking TLS socket has now, and the failure if the connection ended."""
    chunks: list[bytes] = []
    while True:
        try:
            data = recv(READ_SIZE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return chunks, None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            data = b""
        except OSError as exc:
            return chunks, CallFailed("UNAVAILABLE", f"Connection lost ({exc.strerror or exc})")
        if not data:
            return chunks, CallFailed("UNAVAILABLE", "Socket closed")
        chunks.append(data)


def _fields(decoder: Decoder, block: bytes) -> dict[str, str]:
    """A header block's fields (names and values as text)."""
    return {str(name): str(value) for name, value in decoder.decode(block, raw=False)}


def _unpad(payload: bytes) -> bytes:
    """A PADDED frame's content; padding longer than the frame ends the connection
    (RFC 9113 §6.1: PROTOCOL_ERROR)."""
    if not payload or payload[0] >= len(payload):
        raise CallFailed("INTERNAL", "Malformed padding")
    return payload[1 : len(payload) - payload[0]]


def _rst(code: int) -> CallFailed:
    name = H2_ERRORS[code] if code < len(H2_ERRORS) else str(code)
    return CallFailed(
        RST_STATUS.get(code, "INTERNAL"), f"Received RST_STREAM with error code {name}"
    )


def _goaway(payload: bytes) -> CallFailed:
    code = int.from_bytes(payload[4:8], "big")
    name = H2_ERRORS[code] if code < len(H2_ERRORS) else str(code)
    debug = payload[8:].decode("utf-8", "replace")
    return CallFailed("UNAVAILABLE", f"GOAWAY received; Error code: {name}; Debug Text: {debug}")


def _status(fields: dict[str, Any]) -> CallFailed | None:
    """The trailers' verdict: None for OK."""
    raw = str(fields.get("grpc-status", ""))
    if not raw.isdigit():
        return CallFailed("UNKNOWN", "Missing or bad grpc-status in the trailers")
    code = int(raw)
    if code == 0:
        return None
    name = STATUS[code] if code < len(STATUS) else "UNKNOWN"
    return CallFailed(name, urllib.parse.unquote(str(fields.get("grpc-message", ""))))


class _Unary:
    """One unary call in flight."""

    __slots__ = ("deadline", "ident", "parts", "sent", "stream", "uncredited")

    def __init__(self, ident: int, stream: int, deadline: float, sent: float) -> None:
        self.ident = ident
        self.stream = stream
        self.deadline = deadline
        self.sent = sent
        self.parts: list[bytes] = []
        self.uncredited = 0


# a call waiting for the connection: ident, path, metadata, request, deadline
_Queued = tuple[int, str, Sequence[tuple[str, str]], bytes, float]
# answer(ident, response or None, failure or None, connecting)
Answer = Callable[[int, "bytes | None", "CallFailed | None", bool], None]


class Multiplex(_Link):
    """Unary calls on one connection, each its own HTTP/2 stream; the thread in
    :meth:`run` owns the socket, :meth:`submit` (any thread) queues a call and wakes
    it through ``wake_fd`` (the caller writes a byte to the pipe's other end).

    Like grpc with ``wait_for_ready=False``: a call fails at once (``UNAVAILABLE``,
    ``connecting``) when no connection can be made, with ``DEADLINE_EXCEEDED`` when its
    deadline passes first. A lost connection fails the calls on it; the next call
    connects again. A connection on which a call timed out without a byte read since
    it was sent is dropped once its calls are done (lnd frozen, or a NAT forgot it).
    """

    def __init__(
        self,
        target: str,
        cert_pem: bytes,
        *,
        wake_fd: int,
        stopping: Callable[[], bool],
        answer: Answer,
    ) -> None:
        super().__init__(target, cert_pem, wake_fd=wake_fd, stopping=stopping)
        self.answer = answer
        self.queue: collections.deque[_Queued] = collections.deque()
        self.connected = False
        self._calls: dict[int, _Unary] = {}
        self._next = 1
        self._rest = b""
        self._uncredited = 0
        self._last_read = 0.0
        self._doomed = False  # no new calls on it; closed once its calls are done

    def submit(
        self,
        ident: int,
        path: str,
        metadata: Sequence[tuple[str, str]],
        request: bytes,
        timeout_s: float,
    ) -> None:
        self.queue.append((ident, path, metadata, request, time.monotonic() + timeout_s))

    def run(self) -> None:
        """Serve calls until ``stopping()``; calls in flight then fail (CANCELLED)."""
        poller: Any = None
        try:
            while not self.stopping():
                if self.queue and self.sock is None:
                    self._open()
                if self.sock is not None and not self._doomed:
                    while self.queue:
                        self._start(*self.queue.popleft())
                if self.sock is not None and poller is None:
                    poller = select.poll()
                    poller.register(self.sock.fileno(), select.POLLIN)
                    poller.register(self.wake_fd, select.POLLIN)
                elif self.sock is None:
                    poller = None
                if self.sock is not None:
                    self._read()
                self._expire()
                if self.sock is not None and self._doomed and not self._calls:
                    self._close()
                    poller = None
                    continue
                if self.queue and (self.sock is None or not self._doomed):
                    continue
                timeout = None
                if self._calls:
                    soonest = min(c.deadline for c in self._calls.values())
                    timeout = max(0.0, soonest - time.monotonic()) * 1000 + 1
                if poller is None:
                    wake = select.poll()
                    wake.register(self.wake_fd, select.POLLIN)
                    wake.poll(timeout)
                else:
                    poller.poll(timeout)
                self._drain_wake()
        except Stopped:
            pass
        finally:
            self._fail_all(CallFailed("CANCELLED", "Channel closed"), connecting=False)
            for ident, *_ in self.queue:
                self.answer(ident, None, CallFailed("CANCELLED", "Channel closed"), True)
            self.queue.clear()
            self._close()

    # ------------------------------------------------------------------ connection

    def _tick(self, now: float) -> float | None:
        """Queued calls whose deadline passed while connecting (or writing) fail."""
        if any(q[4] <= now for q in list(self.queue)):
            for _ in range(len(self.queue)):  # submit() may append meanwhile
                item = self.queue.popleft()
                if item[4] <= now:
                    self._deadline(item[0], connecting=not self.connected)
                else:
                    self.queue.append(item)
        return min((q[4] for q in list(self.queue)), default=None)

    def _deadline(self, ident: int, *, connecting: bool) -> None:
        self.answer(ident, None, CallFailed("DEADLINE_EXCEEDED", "Deadline Exceeded"), connecting)

    def _open(self) -> None:
        """Connect: up to CONNECT_TIMEOUT_S whatever the calls' deadlines, as grpc's
        connection attempt; calls fail at their deadline meanwhile, and calls made
        meanwhile wait for it."""
        try:
            self.sock = self._connect(time.monotonic() + CONNECT_TIMEOUT_S)
        except CallFailed as failure:
            now = time.monotonic()
            while self.queue:
                ident, *_, deadline = self.queue.popleft()
                if deadline <= now:
                    self._deadline(ident, connecting=True)
                else:
                    self.answer(ident, None, failure, True)
            return
        self.connected = True
        self._decoder = Decoder()
        self._next, self._rest, self._block, self._uncredited = 1, b"", b"", 0
        self.ack_failed = None
        self._doomed = False
        self._last_read = time.monotonic()
        self._send(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_ENABLE_PUSH, 0)))

    def _close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None
        self.connected = False

    def _lost(self, failure: CallFailed) -> None:
        self._fail_all(failure, connecting=False)
        self._close()

    def _fail_all(self, failure: CallFailed, *, connecting: bool) -> None:
        calls, self._calls = self._calls, {}
        for call in calls.values():
            self.answer(call.ident, None, failure, connecting)

    # ------------------------------------------------------------------ calls

    def _start(
        self,
        ident: int,
        path: str,
        metadata: Sequence[tuple[str, str]],
        request: bytes,
        deadline: float,
    ) -> None:
        now = time.monotonic()
        if deadline <= now:
            self._deadline(ident, connecting=False)
            return
        stream = self._next
        self._next += 2
        timeout = f"{max(1, int((deadline - now) * 1000))}m"
        head = request_headers(self.target, path, (*metadata, ("grpc-timeout", timeout)))
        body = b"\x00" + _HEAD.pack(len(request)) + request
        data = frame(HEADERS, END_HEADERS, stream, head)
        for i in range(0, len(body), 16_384):  # the default SETTINGS_MAX_FRAME_SIZE
            last = i + 16_384 >= len(body)
            data += frame(DATA, END_STREAM if last else 0, stream, body[i : i + 16_384])
        self._calls[stream] = _Unary(ident, stream, deadline, now)
        try:
            self._send(data)
        except CallFailed as failure:
            self._lost(failure)

    def _expire(self) -> None:
        now = time.monotonic()
        for call in [c for c in self._calls.values() if c.deadline <= now]:
            del self._calls[call.stream]
            if self._last_read < call.sent:
                self._doomed = True  # not a byte since it was sent
            if self.sock is not None:
                with contextlib.suppress(CallFailed):
                    self._send(frame(RST_STREAM, 0, call.stream, _HEAD.pack(8)))  # CANCEL
            self._deadline(call.ident, connecting=False)

    def _done(self, call: _Unary, failure: CallFailed | None) -> None:
        self._calls.pop(call.stream, None)
        if failure is not None:
            self.answer(call.ident, None, failure, False)
            return
        body = b"".join(call.parts)
        size = int.from_bytes(body[1:5], "big") if len(body) >= 5 else -1
        if size < 0 or len(body) != 5 + size:
            self.answer(
                call.ident,
                None,
                CallFailed("INTERNAL", "Expected exactly one response message"),
                False,
            )
        elif body[0]:
            self.answer(
                call.ident,
                None,
                CallFailed("INTERNAL", "Compressed message without grpc-encoding"),
                False,
            )
        else:
            self.answer(call.ident, body[5:], None, False)

    # ------------------------------------------------------------------ frames

    def _read(self) -> None:
        sock = self.sock
        assert sock is not None
        chunks, lost = _recv_all(sock.recv)
        try:
            if chunks:
                self._last_read = time.monotonic()
                self._feed(b"".join(chunks))
        except CallFailed as failure:
            lost = lost or failure
        lost = lost or self.ack_failed
        if lost is not None:
            self._lost(lost)

    def _feed(self, data: bytes) -> None:
        buf = self._rest + data if self._rest else data
        i, n = 0, len(buf)
        while n - i >= 9:
            end = i + 9 + int.from_bytes(buf[i : i + 3], "big")
            if end > n:
                break
            ftype, flags = buf[i + 3], buf[i + 4]
            stream = int.from_bytes(buf[i + 5 : i + 9], "big") & 0x7FFFFFFF
            self._frame(ftype, flags, stream, buf[i + 9 : end])
            i = end
        self._rest = buf[i:]

    def _frame(self, ftype: int, flags: int, stream: int, payload: bytes) -> None:
        call = self._calls.get(stream)
        if ftype == DATA:
            size = len(payload)
            self._uncredited += size
            credit = b""
            if self._uncredited >= CREDIT_AT:
                credit += frame(WINDOW_UPDATE, 0, 0, _HEAD.pack(self._uncredited))
                self._uncredited = 0
            if call is not None:
                if flags & PADDED:
                    payload = _unpad(payload)
                call.parts.append(payload)
                call.uncredited += size
                if call.uncredited >= CREDIT_AT and not flags & END_STREAM:
                    credit += frame(WINDOW_UPDATE, 0, stream, _HEAD.pack(call.uncredited))
                    call.uncredited = 0
                if flags & END_STREAM:
                    self._done(call, CallFailed("INTERNAL", "Stream ended without trailers"))
            if credit:
                self._send(credit)
        elif ftype in (HEADERS, CONTINUATION):
            whole = self._header_block(ftype, flags, stream, payload)
            if whole is not None:
                fields, ends, of = whole
                call = self._calls.get(of)
                if call is not None:
                    self._headers(call, fields, ends)
        elif ftype == RST_STREAM:
            if call is not None:
                code = int.from_bytes(payload[:4], "big")
                self._done(call, _rst(code))
        elif ftype in (PING, SETTINGS):
            self._acknowledge(ftype, flags, payload)
        elif ftype == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            failure = _goaway(payload)
            self._doomed = True
            for call in [c for c in self._calls.values() if c.stream > last]:
                self._done(call, failure)

    def _headers(self, call: _Unary, fields: dict[str, Any], ends: bool) -> None:
        if ":status" in fields and str(fields[":status"]) != "200" and "grpc-status" not in fields:
            status = str(fields[":status"])
            self._done(
                call,
                CallFailed(
                    HTTP_STATUS.get(status, "UNKNOWN"),
                    f"Received http2 header with status: {status}",
                ),
            )
        elif ends:
            self._done(call, _status(fields))
