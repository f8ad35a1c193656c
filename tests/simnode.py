"""Run the simulated LND node (``lnflow-sim``) in a subprocess, for tests.

    from simnode import SimNode, make_channel       # pytest puts tests/ on sys.path

    with SimNode(tmp_path / "lnd", script=[{"op": "wait_subscribers"}, {...}]) as sim:
        channel = make_channel(sim, "readonly")     # grpc.Channel with TLS + macaroon
        LightningStub(channel).GetInfo(GetInfoRequest())
        sim.stop()
        sim.start()                                 # same dir, same port, same credentials

``SimNode(lnddir, *, script=None, lnd_version=None, args=(), port=0, network="regtest")``
    script: JSONL text, or a list of dicts written as JSONL (docs/sim-script.md);
    args: more ``lnflow-sim`` flags, e.g. ``("--rate", "500", "--seed", "7")``.
    ``.start()`` waits for ``sim.json``; ``.stop()`` sends SIGTERM and returns the exit
    status (the process is killed if it does not stop). Context manager: start/stop.
    ``.lnddir``, ``.port`` (fixed after the first start, reused by restarts),
    ``.rpcserver`` ("127.0.0.1:P"), ``.network``, ``.pid``, ``.tlscert_path``,
    ``.tlscert`` (bytes), ``.macaroon_path(name)``, ``.macaroon(name)`` (hex),
    ``.log()`` (the process's stdout and stderr so far).
``make_channel(sim, macaroon_name="admin", *, aio=False)``
    A ``grpc.Channel`` (or ``grpc.aio.Channel``) to the node; ``macaroon_name=None``
    sends no macaroon. Close it when done.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

__all__ = ["SimNode", "make_channel"]

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 200 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
]


class SimNode:
    def __init__(
        self,
        lnddir: Path,
        *,
        script: str | Iterable[Mapping[str, Any]] | None = None,
        lnd_version: str | None = None,
        args: Sequence[str] = (),
        port: int = 0,
        network: str = "regtest",
        start_timeout: float = 45.0,
    ) -> None:
        self.lnddir = Path(lnddir)
        self.port = port
        self.network = network
        self.start_timeout = start_timeout
        self._args = list(args)
        if lnd_version:
            self._args += ["--lnd-version", lnd_version]
        if script is not None:
            self.lnddir.mkdir(parents=True, exist_ok=True)
            path = self.lnddir / "script.jsonl"
            if not isinstance(script, str):
                script = "\n".join(json.dumps(line) for line in script) + "\n"
            path.write_text(script)
            self._args += ["--script", str(path)]
        self._proc: subprocess.Popen[bytes] | None = None

    # ---- lifecycle

    def start(self) -> SimNode:
        if self._proc is not None:
            raise RuntimeError("already running")
        self.lnddir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "lnflow.sim.main",
            "--lnddir",
            str(self.lnddir),
            "--port",
            str(self.port),
            "--network",
            self.network,
            *self._args,
        ]
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        sim_json = self.lnddir / "sim.json"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"lnflow-sim exited with {self._proc.returncode}:\n{self.log()}")
            try:
                info = json.loads(sim_json.read_text())
            except (OSError, ValueError):
                info = None
            if info and info.get("pid") == self._proc.pid:
                self.port = int(info["port"])
                return
            time.sleep(0.02)
        raise TimeoutError(f"lnflow-sim did not start in {self.start_timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, kill if needed; returns the exit status (None if not running)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def __enter__(self) -> SimNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what clients need

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def rpcserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tlscert_path(self) -> Path:
        return self.lnddir / "tls.cert"

    @property
    def tlscert(self) -> bytes:
        return self.tlscert_path.read_bytes()

    def macaroon_path(self, name: str = "admin") -> Path:
        return self.lnddir / "data" / "chain" / "bitcoin" / self.network / f"{name}.macaroon"

    def macaroon(self, name: str = "admin") -> str:
        return self.macaroon_path(name).read_bytes().hex()

    @property
    def _log_path(self) -> Path:
        return self.lnddir / "sim.log"

    def log(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""


def make_channel(sim: SimNode, macaroon_name: str | None = "admin", *, aio: bool = False) -> Any:
    """A TLS channel to the node sending the named macaroon (None: no macaroon)."""
    creds = grpc.ssl_channel_credentials(sim.tlscert)
    if macaroon_name is not None:
        mac = sim.macaroon(macaroon_name)
        creds = grpc.composite_channel_credentials(
            creds, grpc.metadata_call_credentials(_MacaroonPlugin(mac))
        )
    if aio:
        return grpc.aio.secure_channel(sim.rpcserver, creds, options=_CHANNEL_OPTIONS)
    return grpc.secure_channel(sim.rpcserver, creds, options=_CHANNEL_OPTIONS)


class _MacaroonPlugin(grpc.AuthMetadataPlugin):  # type: ignore[misc]
    def __init__(self, macaroon_hex: str) -> None:
        self._metadata = (("macaroon", macaroon_hex),)

    def __call__(self, context: Any, callback: Any) -> None:
        callback(self._metadata, None)
