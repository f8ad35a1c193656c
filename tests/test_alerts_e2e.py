"""Alerts end to end: the real lnflowd against the simulated node loses its HTLC stream
for longer than ``stream_down_s``; a local webhook receives "stream down" then "stream
up", and ``lnflowctl alerts`` and ``lnflowctl status`` show them; on both engines."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemonproc import Daemon, db_arg, run_lnflowctl
from ports import free_port
from simnode import SimNode
from webhook import Hook

from lnflow.store.engines import StoreLocation

pytestmark = [
    pytest.mark.e2e,  # starts the simulated node, lnflowd or lnflowctl
    pytest.mark.engines("sqlite", "postgresql"),
]


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in {timeout}s")
        time.sleep(0.05)


def _states(hook: Hook) -> list[tuple[str, str]]:
    docs = [json.loads(body) for _, _, _, body in hook.requests]
    return [(d["kind"], d["state"]) for d in docs]


def _assert_down_then_up(db: StoreLocation) -> str:
    """`lnflowctl alerts` shows "stream down" then "stream up", each sent to the hook once;
    returns its plain listing."""
    status, out, err = run_lnflowctl("--db", db_arg(db), "alerts", "--json")
    assert (status, err) == (0, "")
    alerts = json.loads(out)
    assert [(a["kind"], a["state"], a["title"]) for a in alerts] == [
        ("stream_down", "start", "stream down"),
        ("stream_down", "clear", "stream up"),
    ]
    assert all(
        [(x["target"], x["ok"], x["attempts"]) for x in a["deliveries"]]
        == [("local hook", True, 1)]
        for a in alerts
    )
    status, out, _ = run_lnflowctl("--db", db_arg(db), "alerts")
    assert status == 0 and "stream down" in out and "stream up" in out
    return out


def test_stream_down_then_up_reaches_the_webhook_and_the_cli(
    store_at: Callable[[str], StoreLocation], tmp_path: Path
) -> None:
    hook = Hook()
    metrics_port = free_port()
    config = tmp_path / "lnflow.toml"
    config.write_text(
        "[alerts]\n"
        # longer than a start on a loaded machine takes to connect: the stream counts
        # as down from the start, and this test wants no alert before sim.stop()
        "stream_down_s = 5\n"
        "check_s = 0.2\n"
        "retry_s = 0.1\n"
        "[[alerts.targets]]\n"
        'type = "webhook"\n'
        f'url = "{hook.url()}"\n'
        'name = "local hook"\n'
    )
    db = store_at("s.db")
    env = {"LNFLOW_METRICS__LISTEN": f"127.0.0.1:{metrics_port}"}
    sim = SimNode(tmp_path / "lnd").start()
    try:
        with Daemon(sim, db, args=["--config", str(config)], env=env) as d:
            d.wait_for(
                lambda c: (
                    c.execute("SELECT stream_state FROM daemon_state").fetchall()
                    == [("connected",)]
                )
            )
            # the stream is up: no alert
            assert hook.requests == []
            sim.stop()
            _wait(lambda: _states(hook) == [("stream_down", "start")], "stream down")
            time.sleep(0.5)  # still down: nothing more is sent
            assert _states(hook) == [("stream_down", "start")]
            sim.start()
            _wait(
                lambda: _states(hook) == [("stream_down", "start"), ("stream_down", "clear")],
                "stream up",
            )
            d.wait_for(
                lambda c: c.execute("SELECT count(*) FROM alert_deliveries").fetchone()[0] == 2
            )
            out = _assert_down_then_up(db)
            assert "sent: local hook ok" in out
            _, out, _ = run_lnflowctl("--db", db_arg(db), "status", "--json")
            doc = json.loads(out)
            assert doc["metrics"] == {"listen": f"127.0.0.1:{metrics_port}"}
            (target,) = doc["alert_targets"]
            assert (target["name"], target["ok"], target["error"]) == ("local hook", True, None)
            _, out, _ = run_lnflowctl("--db", db_arg(db), "status")
            assert f"metrics      http://127.0.0.1:{metrics_port}/metrics" in out
            assert "alerts       local hook: ok " in out
            assert d.stop() == 0
        log = d.log()
    finally:
        sim.stop()
        hook.close()
    doc = json.loads(hook.requests[1][3])
    assert doc["node"]["alias"] == "lnflow-sim"
    assert doc["message"].startswith("the HTLC event stream is connected again after")
    for secret in ("SECRETTOKEN", "PASSWORD", "user:PW"):
        assert secret not in log


def _alert_config(path: Path, hook: Hook) -> Path:
    path.write_text(
        "[alerts]\n"
        "stream_down_s = 1.5\n"
        "check_s = 0.2\n"
        "retry_s = 0.1\n"
        "[[alerts.targets]]\n"
        'type = "webhook"\n'
        f'url = "{hook.url()}"\n'
        'name = "local hook"\n'
    )
    return path


def test_lnd_unreachable_from_the_start_fires_stream_down_then_up(
    store_at: Callable[[str], StoreLocation], tmp_path: Path
) -> None:
    """A restart while lnd is down: the store knows the node from the last run, the stream
    counts as down from lnflowd's start; "stream down" reaches the webhook and the store
    before lnd answers, "stream up" once the stream connects, each once."""
    hook = Hook()
    db = store_at("s.db")
    sim = SimNode(tmp_path / "lnd").start()
    try:
        with Daemon(sim, db) as d:  # the last run: the store learns the node
            d.wait_for(
                lambda c: (
                    c.execute("SELECT stream_state FROM daemon_state").fetchall()
                    == [("connected",)]
                )
            )
            assert d.stop() == 0
        d.stderr_path.unlink()  # this run's log only from here
        sim.stop()
        config = _alert_config(tmp_path / "lnflow.toml", hook)
        with Daemon(sim, db, args=["--config", str(config)]) as d:
            d.wait_for(
                lambda c: (
                    c.execute("SELECT lnd_state FROM daemon_state").fetchall() == [("unreachable",)]
                )
            )
            _wait(lambda: _states(hook) == [("stream_down", "start")], "stream down")
            # recorded with its delivery while lnd is still down, against the known node
            d.wait_for(
                lambda c: (
                    c.execute(
                        "SELECT a.kind, a.phase, n.alias, d.ok FROM alerts a"
                        " JOIN nodes n ON n.id = a.node_id"
                        " JOIN alert_deliveries d ON d.alert_id = a.id"
                    ).fetchall()
                    == [("stream_down", "start", "lnflow-sim", 1)]
                )
            )
            assert d.events("lnd_connected") == []
            time.sleep(0.5)  # still down: nothing more is sent
            assert _states(hook) == [("stream_down", "start")]
            sim.start()
            _wait(
                lambda: _states(hook) == [("stream_down", "start"), ("stream_down", "clear")],
                "stream up",
            )
            d.wait_for(
                lambda c: c.execute("SELECT count(*) FROM alert_deliveries").fetchone()[0] == 2
            )
            time.sleep(0.5)  # connected: nothing more is sent
            assert len(hook.requests) == 2
            _assert_down_then_up(db)
            assert d.stop() == 0
    finally:
        sim.stop()
        hook.close()
    down, up = (json.loads(r[3]) for r in hook.requests)
    assert down["node"]["alias"] == "lnflow-sim" and down["node"]["pubkey"] == up["node"]["pubkey"]
    assert down["message"].startswith("no HTLC event stream for ")
    assert up["message"].startswith("the HTLC event stream is connected again after")
