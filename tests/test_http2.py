"""lnflow.lnd._http2 below the socket: the request's header block, frames and gRPC
messages split at any byte, padding, CONTINUATION, and how a call ends.

The calls against a real server (the simulated node's grpc server, over TLS) are in
test_lnd_client.py, test_stream_reader.py and tests/faults/."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hpack import Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from lnflow.lnd import _http2 as h2

_WAKE, _ = os.pipe()


def _call() -> h2.Call:
    r = _WAKE
    path = "/routerrpc.Router/SubscribeHtlcEvents"
    return h2.Call("localhost:10009", b"", path, (), wake_fd=r, stopping=lambda: False)


@pytest.fixture
def wired() -> Iterator[tuple[h2.Call, socket.socket]]:
    """A call whose socket is one end of a pair: what it sends arrives at the other."""
    ours, theirs = socket.socketpair()
    call = _call()
    call.sock = ours  # type: ignore[assignment]
    yield call, theirs
    ours.close()
    theirs.close()


def grpc_messages(messages: list[bytes]) -> bytes:
    return b"".join(b"\x00" + struct.pack(">I", len(m)) + m for m in messages)


def headers(encoder: Encoder, fields: list[tuple[str, str]], flags: int) -> bytes:
    return h2.frame(h2.HEADERS, flags | h2.END_HEADERS, h2.STREAM, encoder.encode(fields))


@pytest.mark.parametrize("size", [0, 1, 126, 127, 128, 255, 300, 16_383, 16_384, 70_000])
def test_request_header_block_decodes_with_any_value_length(size: int) -> None:
    from hpack import Decoder

    macaroon = "ab" * (size // 2) + "c" * (size % 2)
    block = h2.request_headers("host:10009", "/lnrpc.Lightning/GetInfo", [("macaroon", macaroon)])
    fields = Decoder(max_header_list_size=1 << 20).decode(block)
    decoded = [(str(n), str(v)) for n, v in fields]
    assert decoded[:6] == [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", "/lnrpc.Lightning/GetInfo"),
        (":authority", "host:10009"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    assert decoded[-1] == ("macaroon", macaroon)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(st.binary(max_size=300), max_size=30),
    frame_sizes=st.lists(st.integers(1, 400), min_size=1, max_size=50),
    pads=st.lists(st.integers(0, 20), min_size=1, max_size=50),
    cuts=st.lists(st.integers(0, 100_000), max_size=40),
)
def test_messages_come_out_whole_and_in_order_however_the_bytes_are_cut(
    messages: list[bytes], frame_sizes: list[int], pads: list[int], cuts: list[int]
) -> None:
    """gRPC's length-prefixed messages, cut into DATA frames of any size (padded or
    not), and the frames cut into reads at any byte: the same messages, in order, and
    every DATA byte (padding too) counted for flow control."""
    enc = Encoder()
    body = grpc_messages(messages)
    wire = headers(enc, [(":status", "200"), ("content-type", "application/grpc")], 0)
    pos, k, data_bytes = 0, 0, 0
    while pos < len(body):
        size = frame_sizes[k % len(frame_sizes)]
        pad = pads[k % len(pads)]
        chunk = body[pos : pos + size]
        if pad:
            payload = bytes((pad - 1,)) + chunk + b"\x00" * (pad - 1)
            wire += h2.frame(h2.DATA, h2.PADDED, h2.STREAM, payload)
        else:
            payload = chunk
            wire += h2.frame(h2.DATA, 0, h2.STREAM, payload)
        data_bytes += len(payload)
        pos += size
        k += 1
    wire += headers(enc, [("grpc-status", "0")], h2.END_STREAM)
    call = _call()
    for part in split_at(wire, cuts):
        if part:
            call._feed(part)
    assert call._pending == messages
    assert call._ended and call._end is None
    assert call._uncredited == data_bytes
    assert call.established


def test_trailers_name_the_status_and_unquote_the_message() -> None:
    enc = Encoder()
    call = _call()
    call._feed(
        headers(enc, [(":status", "200")], 0)
        + h2.frame(h2.DATA, 0, h2.STREAM, grpc_messages([b"one"]))
        + headers(enc, [("grpc-status", "14"), ("grpc-message", "lnd%20is%20stopping")], 1)
    )
    assert call._pending == [b"one"]
    assert call._end is not None
    assert (call._end.code, call._end.details) == ("UNAVAILABLE", "lnd is stopping")


def test_a_trailers_only_answer_is_not_established() -> None:
    """lnd refusing the macaroon answers with one header block that ends the stream."""
    call = _call()
    block = Encoder().encode(
        [(":status", "200"), ("grpc-status", "2"), ("grpc-message", "verification failed")]
    )
    call._feed(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, h2.STREAM, block))
    assert call._end is not None and call._end.code == "UNKNOWN"
    assert call._end.details == "verification failed"
    assert not call.established


def test_a_header_block_in_continuation_frames() -> None:
    call = _call()
    block = Encoder().encode([(":status", "200"), ("content-type", "application/grpc")])
    call._feed(h2.frame(h2.HEADERS, 0, h2.STREAM, block[:3]))
    assert not call.established
    call._feed(h2.frame(h2.CONTINUATION, h2.END_HEADERS, h2.STREAM, block[3:]))
    assert call.established and not call._ended


@pytest.mark.parametrize(
    ("status", "code"), [("404", "UNIMPLEMENTED"), ("503", "UNAVAILABLE"), ("418", "UNKNOWN")]
)
def test_an_http_error_status_maps_as_grpc_maps_it(status: str, code: str) -> None:
    call = _call()
    call._feed(headers(Encoder(), [(":status", status)], 0))
    assert call._end is not None and call._end.code == code
    assert status in call._end.details


@pytest.mark.parametrize(
    ("error", "code"),
    [(7, "UNAVAILABLE"), (8, "CANCELLED"), (11, "RESOURCE_EXHAUSTED"), (2, "INTERNAL")],
)
def test_rst_stream_ends_the_call_keeping_what_came_before(error: int, code: str) -> None:
    call = _call()
    call._feed(
        headers(Encoder(), [(":status", "200")], 0)
        + h2.frame(h2.DATA, 0, h2.STREAM, grpc_messages([b"kept"]))
        + h2.frame(h2.RST_STREAM, 0, h2.STREAM, struct.pack(">I", error))
        + h2.frame(h2.DATA, 0, h2.STREAM, grpc_messages([b"after the end"]))
    )
    assert call._pending == [b"kept"]
    assert call._end is not None and call._end.code == code


def test_goaway_ends_the_call_unless_it_drains_it() -> None:
    drained = _call()
    drained._feed(h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", h2.STREAM, 0)))
    assert not drained._ended  # graceful: lnd finishes stream 1 first
    cut = _call()
    cut._feed(h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", 1, 11) + b"too_many_pings"))
    assert cut._end is not None and cut._end.code == "UNAVAILABLE"
    assert "ENHANCE_YOUR_CALM" in cut._end.details and "too_many_pings" in cut._end.details


def test_oversized_and_compressed_messages_fail_the_call() -> None:
    big = _call()
    big._feed(h2.frame(h2.DATA, 0, h2.STREAM, b"\x00" + struct.pack(">I", h2.MAX_MESSAGE + 1)))
    assert big._end is not None and big._end.code == "RESOURCE_EXHAUSTED"
    packed = _call()
    packed._feed(h2.frame(h2.DATA, 0, h2.STREAM, b"\x01" + struct.pack(">I", 1) + b"x"))
    assert packed._end is not None and packed._end.code == "INTERNAL"


def test_ping_and_settings_are_acknowledged(wired: tuple[h2.Call, socket.socket]) -> None:
    call, peer = wired
    call._feed(
        h2.frame(h2.SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 20))
        + h2.frame(h2.PING, 0, 0, b"12345678")
        + h2.frame(h2.PING, h2.ACK, 0, b"lnflow\x00\x00")  # the answer to ours: no reply
    )
    sent = peer.recv(1000)
    assert sent == h2.frame(h2.SETTINGS, h2.ACK, 0) + h2.frame(h2.PING, h2.ACK, 0, b"12345678")
    assert not call._ended


def test_unary_answers_are_told_apart_by_stream_however_they_interleave(
    wired: tuple[h2.Call, socket.socket],
) -> None:
    """Two calls in flight on one connection: each gets its own message or status."""
    ours, _ = wired[0].sock, wired[1]
    answers: list[tuple[int, bytes | None, str | None]] = []
    link = h2.Multiplex(
        "localhost:10009",
        b"",
        wake_fd=_WAKE,
        stopping=lambda: False,
        answer=lambda ident, data, failure, _c: answers.append(
            (ident, data, failure.code if failure else None)
        ),
    )
    link.sock = ours
    for ident, stream in ((7, 1), (8, 3), (9, 5)):
        link._calls[stream] = h2._Unary(ident, stream, deadline=1e12, sent=0.0)
    enc = Encoder()
    block = enc.encode([(":status", "200"), ("content-type", "application/grpc")])
    msg1, msg3 = grpc_messages([b"first" * 10]), grpc_messages([b"second"])
    wire = (
        h2.frame(h2.HEADERS, 0, 3, block[:2])
        + h2.frame(h2.CONTINUATION, h2.END_HEADERS, 3, block[2:])
        + h2.frame(h2.HEADERS, h2.END_HEADERS, 1, enc.encode([(":status", "200")]))
        + h2.frame(h2.DATA, 0, 1, msg1[:7])
        + h2.frame(h2.DATA, 0, 3, msg3)
        + h2.frame(h2.DATA, 0, 1, msg1[7:])
        + h2.frame(
            h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 3, enc.encode([("grpc-status", "0")])
        )
        + h2.frame(h2.RST_STREAM, 0, 5, struct.pack(">I", 7))
        + h2.frame(
            h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, enc.encode([("grpc-status", "0")])
        )
    )
    for i in range(0, len(wire), 5):
        link._feed(wire[i : i + 5])
    assert answers == [(8, b"second", None), (9, None, "UNAVAILABLE"), (7, b"first" * 10, None)]
    assert link._calls == {}


def test_padding_longer_than_its_frame_fails_the_call() -> None:
    call = _call()
    call._feed(h2.frame(h2.DATA, 0, h2.STREAM, grpc_messages([b"kept"])))
    with pytest.raises(h2.CallFailed, match="Malformed padding"):
        call._feed(h2.frame(h2.DATA, h2.PADDED, h2.STREAM, b"\x09" + b"x" * 4))
    assert call._pending == [b"kept"]  # what came before is still handed on


# --------------------------------------------------------------------------- over TLS


def _server_context(tmp: Path) -> tuple[ssl.SSLContext, bytes]:
    """A TLS server's context with the simulated node's kind of certificate (written to
    ``tmp``), ALPN h2; and the certificate, for the client."""
    from lnflow.sim.credentials import ensure_tls

    cert, _ = ensure_tls(tmp)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "tls.cert", tmp / "tls.key")
    ctx.set_alpn_protocols(["h2"])
    return ctx, cert


def _tls_server(
    tmp: Path, answer: Callable[[ssl.SSLSocket, Encoder], None]
) -> tuple[int, bytes, threading.Thread]:
    """A TLS server on localhost with the simulated node's kind of certificate: it takes
    the call's preface and request, then ``answer`` writes the response (port, cert)."""
    ctx, cert = _server_context(tmp)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        raw, _ = listener.accept()
        listener.close()
        with ctx.wrap_socket(raw, server_side=True) as conn:
            seen = b""
            while b"lnflow-end" not in seen:  # the request's body
                data = conn.recv(65_536)
                if not data:
                    return  # the client went away: its test fails on what it got
                seen += data
            answer(conn, Encoder())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], cert, thread


def _run_call(port: int, cert: bytes) -> tuple[list[bytes], h2.CallFailed | None]:
    got: list[bytes] = []
    call = h2.Call(
        f"localhost:{port}",
        cert,
        "/routerrpc.Router/SubscribeHtlcEvents",
        (),
        request=b"lnflow-end",
        wake_fd=_WAKE,
        stopping=lambda: False,
        pause_s=0.05,  # so that many records wait in the socket for one read
    )
    try:
        call.run(lambda: None, lambda: True, got.extend)
    except h2.CallFailed as failure:
        return got, failure
    return got, None


def test_a_burst_of_tls_records_is_read_whole_and_in_order(tmp_path: Path) -> None:
    """Each message in a TLS record of its own, hundreds waiting at once: one read of
    the socket takes many records, and every message comes out, in order, then the
    call ends with the trailers' OK."""
    messages = [f"event {i}".encode() * (1 + i % 7) for i in range(600)]

    def answer(conn: ssl.SSLSocket, enc: Encoder) -> None:
        ok = [(":status", "200"), ("content-type", "application/grpc")]
        conn.sendall(h2.frame(h2.SETTINGS, 0, 0) + headers(enc, ok, 0))
        for m in messages[:300]:  # one record each
            conn.sendall(h2.frame(h2.DATA, 0, h2.STREAM, grpc_messages([m])))
        time.sleep(0.2)  # the first read took what was there; these come in a later one
        for m in messages[300:]:
            conn.sendall(h2.frame(h2.DATA, 0, h2.STREAM, grpc_messages([m])))
        conn.sendall(headers(enc, [("grpc-status", "0")], h2.END_STREAM))
        time.sleep(0.5)

    port, cert, thread = _tls_server(tmp_path, answer)
    got, failure = _run_call(port, cert)
    thread.join(5)
    assert failure is None
    assert got == messages


@pytest.mark.parametrize("close_notify", [True, False], ids=["close-notify", "abrupt"])
def test_messages_before_a_cut_connection_are_kept(tmp_path: Path, close_notify: bool) -> None:
    """The connection ends without trailers right after a burst (TLS closed properly,
    or the socket only): the messages already in it are handed on, then the call fails
    as a lost connection."""
    messages = [b"kept %d" % i for i in range(50)]

    def answer(conn: ssl.SSLSocket, enc: Encoder) -> None:
        ok = [(":status", "200"), ("content-type", "application/grpc")]
        conn.sendall(h2.frame(h2.SETTINGS, 0, 0) + headers(enc, ok, 0))
        for m in messages:
            conn.sendall(h2.frame(h2.DATA, 0, h2.STREAM, grpc_messages([m])))
        if close_notify:
            conn.setblocking(False)
            with contextlib.suppress(ssl.SSLError):
                conn.unwrap()  # sends close_notify, does not wait for the client's
        # a FIN, not a reset (which would discard what the client has not read yet)
        with socket.socket(fileno=conn.detach()) as raw:
            raw.shutdown(socket.SHUT_WR)
            raw.settimeout(5)
            with contextlib.suppress(OSError):
                while raw.recv(65_536):  # until the client closes
                    pass

    port, cert, thread = _tls_server(tmp_path, answer)
    got, failure = _run_call(port, cert)
    thread.join(5)
    assert got == messages
    assert failure is not None and failure.code == "UNAVAILABLE"
    assert failure.details == "Socket closed"


def test_a_write_larger_than_the_socket_takes_waits_and_arrives_whole(tmp_path: Path) -> None:
    """The server reads nothing for a while: the request's records fill the socket's
    buffers, the write waits for room, and every byte arrives, in order."""
    ctx, cert = _server_context(tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    payload = bytes(range(256)) * (24 * 1024)  # 6 MiB: far more than the socket buffers
    received = bytearray()

    def serve() -> None:
        raw, _ = listener.accept()
        listener.close()
        with ctx.wrap_socket(raw, server_side=True) as conn:
            time.sleep(0.5)  # the client's write fills the buffers meanwhile
            while len(received) < len(payload):
                data = conn.recv(1 << 16)
                if not data:
                    break
                received.extend(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    link = h2.Call(
        f"localhost:{listener.getsockname()[1]}",
        cert,
        "/x",
        (),
        wake_fd=_WAKE,
        stopping=lambda: False,
    )
    link.sock = link._connect(time.monotonic() + 10)
    try:
        started = time.monotonic()
        link._send(payload)
        waited = time.monotonic() - started
    finally:
        thread.join(10)
        link.sock.close()
    assert bytes(received) == payload
    assert waited >= 0.3  # it did wait for the server to read
