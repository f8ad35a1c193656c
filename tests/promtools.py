"""Helpers for the Prometheus tests: scraping lnflowd, promtool and a real Prometheus.

``scrape(port)`` → the exposition text; ``samples(text)`` → {sample name: {labels: value}}
with labels as a sorted tuple of (name, value) pairs. ``free_port()`` is a free TCP port
on 127.0.0.1. ``need(tool)`` returns the tool's path, or skips the test naming what is
missing, except under ``CI=true`` where a missing tool fails it (``make test`` installs
Debian's ``prometheus`` package, which ships both ``prometheus`` and ``promtool``).
``Prometheus(tmp, targets)`` runs a real server on a free loopback port scraping
``targets`` every second, with its config and data in ``tmp``; ``.query(expr)`` asks its
HTTP API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Prometheus", "free_port", "need", "samples", "scrape"]

Labels = tuple[tuple[str, str], ...]


def scrape(port: int, timeout: float = 10) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        return str(resp.read().decode())


def samples(text: str) -> dict[str, dict[Labels, float]]:
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        why = f"{tool} not installed (Debian package 'prometheus'; `make test` installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}: required under CI=true")
        pytest.skip(why)
    return path


class Prometheus:
    def __init__(self, tmp: Path, targets: list[str]) -> None:
        self.dir = tmp
        self.port = free_port()
        self._targets = targets
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        binary = need("prometheus")
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "prometheus.yml"
        config.write_text(
            # a scrape may take its whole interval: 1 s was too short for lnflowd's
            # answer on a loaded 2-core machine (Prometheus's default timeout is 10 s)
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 2s\n"
            "scrape_configs:\n  - job_name: lnflow\n    static_configs:\n"
            f"      - targets: {json.dumps(self._targets)}\n"
        )
        self.log_path = self.dir / "prometheus.log"
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; [] while Prometheus is starting or has no such series yet."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = json.loads(resp.read())
        except OSError:
            return []
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, expr: str, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None and self._proc.poll() is None, self.log()
            found = self.query(expr)
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(
            f"no result for {expr} in {timeout}s; the targets: {self.targets()}\n"
            f"prometheus log:\n{self.log()}"
        )

    def targets(self) -> list[dict[str, Any]]:
        """Each target's health, last error and last scrape's duration, as Prometheus
        saw them ([] when it does not answer)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/targets"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = json.loads(resp.read())
        except OSError:
            return []
        keys = ("scrapeUrl", "health", "lastError", "lastScrape", "lastScrapeDuration")
        return [{k: t.get(k) for k in keys} for t in body["data"]["activeTargets"]]
