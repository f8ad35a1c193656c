"""Built-in alerts: the rules (pure), the bodies and redaction, and delivery by the
daemon's AlertService to real local targets (an HTTP server, a program) with a real
SQLite store."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from conftest import RealStore
from daemonproc import db_arg
from webhook import Hook

from lnflow.alerts import (
    Alert,
    AlertKind,
    AlertRules,
    Phase,
    redact_url,
    scrub,
    url_secrets,
    webhook_request,
)
from lnflow.analysis.classify import FailureClass
from lnflow.analysis.model import Action, AnalysisReport, ClassStats, Confidence, Opportunity
from lnflow.config import (
    AlertsSettings,
    CommandTarget,
    RetentionSettings,
    Settings,
    StoreSettings,
    WebhookTarget,
)
from lnflow.domain import NodeInfo
from lnflow.recording import StoreThread
from lnflow.store import db
from lnflow.store.alerts import alerts_since, last_deliveries, open_conditions
from lnflow.store.engines import StoreLocation
from lnflow.store.writer import StoreWriter
from lnflowd.alerts import AlertService

S = 1_000_000_000
T0 = 1_800_000_000 * S
PEER = "02" + "ab" * 32


def opp(chan: int, urgency: int) -> Opportunity:
    return Opportunity(
        rank=1,
        channel_id=chan,
        peer_pubkey=PEER,
        peer_alias="peer\x1b[2J",
        failures=12,
        clusters=5,
        successes=8,
        failure_rate=0.6,
        missed_msat=2_500_000,
        missed_raw_msat=4_000_000,
        potential_monthly_msat=75_000_000,
        urgency_score=urgency,
        confidence=Confidence.MEDIUM,
        recommended_action=Action.LOWER_FEES,
        reason="fee failures",
        estimated=False,
        by_class={FailureClass.FEE: ClassStats(failures=9, missed_msat=3_000_000)},
        capacity_sat=1_000_000,
        local_balance_sat=600_000,
        outbound_fee_ppm=500,
    )


def report(*opps: Opportunity, at_ns: int = T0) -> AnalysisReport:
    return AnalysisReport(
        since_ns=at_ns - 24 * 3600 * S,
        until_ns=at_ns,
        hours=24,
        generated_ns=at_ns,
        opportunities=tuple(opps),
        rebalance_plan=(),
    )


def rules(**kw: Any) -> AlertRules:
    return AlertRules(
        min_urgency=kw.pop("min_urgency", 80),
        stream_down_s=kw.pop("stream_down_s", 300),
        store_budget_pct=kw.pop("store_budget_pct", 90),
        **kw,
    )


def kinds(alerts: list[Alert]) -> list[tuple[str, str, str]]:
    return [(a.kind.value, a.phase.value, a.key) for a in alerts]


# ------------------------------------------------------------------------- rules


def test_a_flood_of_opportunities_fires_once_per_channel_and_clears_once() -> None:
    r = rules()
    chans = [1000 + i for i in range(300)]
    first = r.snapshot(report(*(opp(c, 90) for c in chans)), T0)
    assert kinds(first) == [("opportunity", "start", str(c)) for c in chans]
    for i in range(1, 50):  # the same channels in every later snapshot: nothing more
        again = r.snapshot(report(*(opp(c, 80 + i % 20) for c in chans), at_ns=T0 + i), T0 + i)
        assert again == []
    # half fall below min_urgency, the rest leave the ranking: each clears once
    below = r.snapshot(report(*(opp(c, 79) for c in chans[:150])), T0 + 100)
    assert sorted(kinds(below)) == sorted(("opportunity", "clear", str(c)) for c in chans)
    assert r.snapshot(report(), T0 + 101) == []
    assert r.active == set()


def test_opportunity_alert_says_what_and_where() -> None:
    (alert,) = rules().snapshot(report(opp(123456789 << 40 | 5 << 16 | 1, 95)), T0)
    assert alert.title == "opportunity on 123456789x5x1: lower_fees"
    assert "urgency 95, 2,500 sat missed in 24 h" in alert.message
    assert alert.detail["urgency"] == 95 and alert.detail["peer"] == PEER


def test_conditions_restored_from_the_store_do_not_fire_again() -> None:
    r = rules(active={(AlertKind.OPPORTUNITY, "7"), (AlertKind.STREAM_DOWN, "")})
    assert r.snapshot(report(opp(7, 99)), T0) == []
    assert kinds([a for a in [r.stream(True, T0)] if a]) == [("stream_down", "clear", "")]


@pytest.mark.parametrize(
    ("observations", "expected"),
    [
        pytest.param([(False, 0), (False, 299)], [], id="down-below-threshold"),
        pytest.param(
            [(False, 0), (False, 300), (False, 900)], [("start", 300)], id="down-fires-once"
        ),
        pytest.param(
            [(False, 0), (False, 301), (True, 400), (True, 500)],
            [("start", 301), ("clear", 400)],
            id="down-then-up",
        ),
        pytest.param([(True, 0), (False, 10), (True, 200)], [], id="short-blip-is-quiet"),
        pytest.param(
            [(False, 0), (True, 100), (False, 150), (False, 449), (False, 450)],
            [("start", 450)],
            id="down-time-restarts-after-up",
        ),
    ],
)
def test_stream_down_longer_than_the_threshold(
    observations: list[tuple[bool, int]], expected: list[tuple[str, int]]
) -> None:
    r = rules(stream_down_s=300)
    fired = [r.stream(up, T0 + t * S) for up, t in observations]
    got = [(a.phase.value, (a.fired_ns - T0) // S) for a in fired if a is not None]
    assert got == expected
    titles = {a.phase: a.title for a in fired if a is not None}
    if expected:
        assert titles[Phase.START] == "stream down"
    if len(expected) > 1:
        assert titles[Phase.CLEAR] == "stream up"


def test_analysis_failing_fires_once_and_clears_on_the_next_good_run() -> None:
    r = rules()
    first = r.analysis("OperationalError: disk I/O error", T0)
    assert first is not None and first.phase is Phase.START
    assert r.analysis("again", T0 + 1) is None
    cleared = r.snapshot(report(), T0 + 2)
    assert kinds(cleared) == [("analysis_failing", "clear", "")]
    assert r.analysis(None, T0 + 3) is None


@pytest.mark.parametrize(
    ("sizes_pct", "expected"),
    [
        pytest.param([50, 89], [], id="under"),
        pytest.param([90, 95, 99], ["start"], id="near-once"),
        pytest.param([91, 87, 86, 84, 92], ["start", "clear", "start"], id="hysteresis"),
    ],
)
def test_store_near_its_budget(sizes_pct: list[int], expected: list[str]) -> None:
    r = rules(store_budget_pct=90)
    budget = 100 * 1024 * 1024
    fired = [r.store(budget * p // 100, budget, T0 + i) for i, p in enumerate(sizes_pct)]
    assert [a.phase.value for a in fired if a is not None] == expected
    assert r.store(10 * budget, 0, T0) is None  # no budget: never


def test_policy_change_is_one_event_each_time() -> None:
    r = rules()
    a = r.policy_change("applied", 7, "fee 500 -> 300 ppm", T0)
    b = r.policy_change("applied", 7, "fee 300 -> 250 ppm", T0 + 1)
    assert (a.kind, a.phase, a.key, a.title) == (
        AlertKind.POLICY_CHANGE,
        Phase.EVENT,
        "7",
        "policy change applied on 0x0x7",
    )
    assert b.message == "fee 300 -> 250 ppm" and r.active == set()


# ------------------------------------------------------------------- bodies, secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://ntfy.sh/my-secret-topic", "https://ntfy.sh/…"),
        ("https://hooks.slack.com/services/T0/B0/XXXXSECRET", "https://hooks.slack.com/…"),
        ("https://api.telegram.org/bot123:AAbbSECRET/sendMessage", "https://api.telegram.org/…"),
        ("http://alice:hunter22@10.0.0.2:8080/hook?token=SECRET", "http://10.0.0.2:8080/…"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
        ("http://127.0.0.1:80", "http://127.0.0.1:80"),
    ],
)
def test_a_url_is_shown_without_its_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    for secret in ("secret", "SECRET", "hunter22", "alice"):
        assert secret not in redact_url(url)


def test_scrub_removes_every_piece_of_the_url() -> None:
    url = "http://alice:hunter22@host:1/a/b0TOKEN0?k=SECRET"
    text = f"ConnectError: {url} failed; token b0TOKEN0, pass hunter22, q SECRET"
    clean = scrub(text, url_secrets(url))
    for secret in ("b0TOKEN0", "hunter22", "SECRET", "alice"):
        assert secret not in clean


def _alert() -> Alert:
    return Alert(AlertKind.STREAM_DOWN, Phase.START, "", T0, "stream down", "no stream")


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        ("json", lambda b, h: b["kind"] == "stream_down" and b["state"] == "start"),
        ("slack", lambda b, h: b == {"text": "[lnflow al] stream down: no stream"}),
        ("mattermost", lambda b, h: b == {"text": "[lnflow al] stream down: no stream"}),
        ("discord", lambda b, h: b == {"content": "[lnflow al] stream down: no stream"}),
        (
            "telegram",
            lambda b, h: b["chat_id"] == "-100" and b["text"].endswith("stream down: no stream"),
        ),
        ("ntfy", lambda b, h: b == "no stream" and h["Title"] == "lnflow: stream down"),
    ],
)
def test_each_format_has_its_service_shape(
    fmt: Any, check: Callable[[Any, dict[str, str]], bool]
) -> None:
    raw, headers = webhook_request(
        fmt, _alert(), node_pubkey="02ab", node_alias="al", chat_id="-100"
    )
    body = raw.decode() if fmt == "ntfy" else json.loads(raw)
    assert check(body, headers)


def test_json_body_is_the_documented_document() -> None:
    raw, headers = webhook_request("json", _alert(), node_pubkey="02ab", node_alias="al")
    assert headers["Content-Type"] == "application/json"
    assert json.loads(raw) == {
        "version": 1,
        "kind": "stream_down",
        "state": "start",
        "key": "",
        "title": "stream down",
        "message": "no stream",
        "at": "2027-01-15T08:00:00Z",
        "at_ns": T0,
        "node": {"pubkey": "02ab", "alias": "al"},
        "detail": {},
    }


# ------------------------------------------------------------------- delivery


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(tmp_path: Path, *targets: Any, **alerts: Any) -> Settings:
    opts: dict[str, Any] = {"attempts": 3, "retry_s": 0.05, "check_s": 60, **alerts}
    return Settings(
        store=StoreSettings(db=str(tmp_path / "s.db")),
        alerts=AlertsSettings(targets=list(targets), **opts),
        retention=RetentionSettings(),
    )


def _webhook(url: str, **kw: Any) -> WebhookTarget:
    return WebhookTarget(type="webhook", url=url, **kw)


async def _with_service(
    settings: Settings, body: Callable[[AlertService, StoreThread[StoreWriter]], Any]
) -> Any:
    engine = db.open_engine(settings.store.path)
    store = StoreThread(StoreWriter(engine))
    scheduler = AsyncIOScheduler()
    service = AlertService(settings, engine, store)
    try:
        await store.call(store.target.daemon_started, T0, 5)
        node_id = await store.call(
            store.target.upsert_node, NodeInfo(PEER, "al", "0.18.0-beta", "regtest", 100, True), T0
        )
        scheduler.start()
        await service.attach(node_id, PEER, "al", scheduler)
        return await asyncio.wait_for(body(service, store), 60)
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        await service.close()
        store.close()
        engine.dispose()


async def _until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.01)


def _stored(path: Path) -> tuple[list[Any], dict[str, Any]]:
    engine = db.open_readonly_engine(path)
    try:
        with engine.connect() as conn:
            return alerts_since(conn, 0), last_deliveries(conn)
    finally:
        engine.dispose()


def _all_text(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_webhook_delivers_the_json_body_and_records_it(tmp_path: Path, hook: Hook) -> None:
    settings = _settings(tmp_path, _webhook(hook.url()))

    async def body(service: AlertService, store: Any) -> None:
        service.analysis_failed("boom")
        await _until(lambda: len(hook.requests) == 1)
        await _until(lambda: bool(_stored(settings.store.path)[1]))

    asyncio.run(_with_service(settings, body))
    _, path, headers, raw = hook.requests[0]
    assert path == "/hook/SECRETTOKEN?auth=PASSWORD"
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(raw)
    assert (doc["kind"], doc["state"], doc["node"]) == (
        "analysis_failing",
        "start",
        {"pubkey": PEER, "alias": "al"},
    )
    found, last = _stored(settings.store.path)
    assert [(a.kind, a.phase, a.title) for a in found] == [
        ("analysis_failing", "start", "analysis failing")
    ]
    name = f"webhook http://127.0.0.1:{hook.server.server_address[1]}/…"
    assert [(d.target, d.ok, d.attempts, d.error) for d in found[0].deliveries] == [
        (name, True, 1, None)
    ]
    assert last[name].ok


def test_a_target_answering_500_is_retried_with_backoff_then_recorded_failed(
    tmp_path: Path,
) -> None:
    hook = Hook(statuses=[500])
    settings = _settings(tmp_path, _webhook(hook.url()), attempts=4, retry_s=0.1)
    try:
        with structlog.testing.capture_logs() as logs:

            async def body(service: AlertService, store: Any) -> None:
                service.policy_change("failed", 42, "lnd refused: fee too high")
                await _until(lambda: any(_stored(settings.store.path)[1].values()))

            asyncio.run(_with_service(settings, body))
    finally:
        hook.close()
    times = [t for t, *_ in hook.requests]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # waits of at least 0.1, 0.2 and 0.4 s: doubled each time
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4
    found, _last = _stored(settings.store.path)
    (delivery,) = found[0].deliveries
    assert (delivery.ok, delivery.attempts, delivery.error) == (False, 4, "HTTP 500: nope/ok")
    failed = [e for e in logs if e["event"] == "alert_delivery_failed"]
    assert [e["attempt"] for e in failed] == [1, 2, 3, 4]
    assert [e["event"] for e in logs].count("alert_not_delivered") == 1
    # no piece of the URL's secrets anywhere: logs, store
    everything = json.dumps(logs, default=str).encode() + _all_text(settings.store.path)
    for secret in (b"SECRETTOKEN", b"PASSWORD", b"user:PW"):
        assert secret not in everything


def test_a_target_that_is_down_is_recorded_failed_after_the_last_try(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}/down/SECRETTOKEN"
    settings = _settings(tmp_path, _webhook(url, name="phone"), attempts=3, retry_s=0.02)

    async def body(service: AlertService, store: Any) -> None:
        service.analysis_failed("boom")
        await _until(lambda: "phone" in _stored(settings.store.path)[1])

    asyncio.run(_with_service(settings, body))
    d = _stored(settings.store.path)[1]["phone"]
    assert (d.ok, d.attempts) == (False, 3)
    assert d.error is not None and d.error.startswith("ConnectError")
    assert b"SECRETTOKEN" not in _all_text(settings.store.path)


def test_a_slow_target_times_out_and_never_holds_up_recording(tmp_path: Path) -> None:
    hook = Hook()
    hook.hold.clear()  # the server keeps the first request waiting until released
    slow = _webhook(hook.url(), name="slow", timeout_s=30)
    settings = _settings(tmp_path, slow, attempts=1)
    try:

        async def body(service: AlertService, store: StoreThread[StoreWriter]) -> None:
            service.analysis_failed("boom")
            await asyncio.to_thread(hook.got.wait, 10)
            # the delivery is in flight: producers return at once and the store thread
            # still writes (a heartbeat) while the target has not answered
            service.policy_change("applied", 1, "x")
            service.analysis_done(report(opp(5, 99)))
            await store.call(store.target.daemon_state, T0 + 5)
            await _until(lambda: len(_stored(settings.store.path)[0]) == 4)
            assert _stored(settings.store.path)[1] == {}  # nothing delivered yet
            hook.hold.set()
            await _until(lambda: len(hook.requests) == 4)
            await _until(
                lambda: sum(len(a.deliveries) for a in _stored(settings.store.path)[0]) == 4
            )

        asyncio.run(_with_service(settings, body))
    finally:
        hook.close()
    found, _ = _stored(settings.store.path)
    assert [a.kind for a in found] == [
        "analysis_failing",
        "policy_change",
        "analysis_failing",
        "opportunity",
    ]
    assert all(d.ok for a in found for d in a.deliveries)


def test_a_target_slower_than_its_timeout_is_recorded_timed_out(tmp_path: Path) -> None:
    hook = Hook(delay_s=2)
    settings = _settings(tmp_path, _webhook(hook.url(), name="slow", timeout_s=0.2), attempts=2)
    try:

        async def body(service: AlertService, store: Any) -> None:
            service.analysis_failed("boom")
            await _until(lambda: "slow" in _stored(settings.store.path)[1])

        asyncio.run(_with_service(settings, body))
    finally:
        hook.close()
    d = _stored(settings.store.path)[1]["slow"]
    assert (d.ok, d.attempts, d.error) == (False, 2, "timed out after 0.2 s")


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    settings = _settings(tmp_path, queue_size=10)
    engine = db.open_engine(settings.store.path)
    store = StoreThread(StoreWriter(engine))
    service = AlertService(settings, engine, store)  # not attached: nothing is taken

    async def flood() -> None:
        with structlog.testing.capture_logs() as logs:
            for i in range(25):
                service.policy_change("applied", i, "x")
        assert service.dropped == 15
        assert [e["event"] for e in logs].count("alert_dropped") == 15
        await service.close()

    try:
        asyncio.run(flood())
    finally:
        store.close()
        engine.dispose()


@pytest.mark.e2e
def test_command_target_gets_the_alert_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    ok = CommandTarget(type="command", command=[sys.executable, "-c", script], name="cmd")
    failing = CommandTarget(
        type="command",
        command=[
            sys.executable,
            "-c",
            "import sys; print('bad\\x1b[2J token', file=sys.stderr); sys.exit(3)",
        ],
        name="failing",
    )
    hanging = CommandTarget(
        type="command",
        command=[sys.executable, "-c", "import time; time.sleep(30)"],
        name="hanging",
        timeout_s=0.3,
    )
    settings = _settings(tmp_path, ok, failing, hanging, attempts=2)

    async def body(service: AlertService, store: Any) -> None:
        service.policy_change("reverted", 99, "guard: fee rose twice in an hour")
        await _until(lambda: len(_stored(settings.store.path)[1]) == 3)

    asyncio.run(_with_service(settings, body))
    doc = json.loads(out.read_text())
    assert (doc["kind"], doc["state"], doc["key"], doc["detail"]["result"]) == (
        "policy_change",
        "event",
        "99",
        "reverted",
    )
    last = _stored(settings.store.path)[1]
    assert last["cmd"].ok and last["cmd"].attempts == 1
    assert (last["failing"].ok, last["failing"].attempts) == (False, 2)
    assert last["failing"].error == "exit status 3: bad\\x1b[2J token"
    assert last["hanging"].error == "timed out after 0.3 s (killed)"


def test_open_conditions_are_read_back_for_a_restart(tmp_path: Path, hook: Hook) -> None:
    settings = _settings(tmp_path, _webhook(hook.url()))

    async def first(service: AlertService, store: Any) -> None:
        service.analysis_done(report(opp(5, 99), opp(6, 99)))
        service.analysis_done(report(opp(5, 99)))  # 6 clears
        await _until(lambda: len(hook.requests) == 3)

    async def second(service: AlertService, store: Any) -> None:
        assert service.rules.active == {(AlertKind.OPPORTUNITY, "5")}
        service.analysis_done(report(opp(5, 99)))  # still holds: nothing
        service.analysis_done(report())  # 5 clears
        await _until(lambda: len(hook.requests) == 4)

    asyncio.run(_with_service(settings, first))
    asyncio.run(_with_service(settings, second))
    found, _ = _stored(settings.store.path)
    assert [(a.subject, a.phase) for a in found] == [
        ("5", "start"),
        ("6", "start"),
        ("6", "clear"),
        ("5", "clear"),
    ]
    engine = db.open_readonly_engine(settings.store.path)
    with engine.connect() as conn:
        assert open_conditions(conn, 1) == set()
    engine.dispose()
    assert replace(found[0], deliveries=()).detail["scid"] == "0x0x5"


@pytest.mark.engines("sqlite", "postgresql")
def test_the_alert_log_reads_back_on_either_engine(open_store: Callable[..., RealStore]) -> None:
    """What a restart and lnflowctl read of the log: the alerts with their deliveries,
    the conditions still open, each target's latest delivery."""
    from lnflow.store.alerts import AlertLog, Delivery

    store = open_store()
    log = AlertLog(store.engine, store.node_id, keep_days=400)
    five, six = rules().snapshot(report(opp(5, 99), opp(6, 99)), T0)
    (six_clear,) = rules(active={(AlertKind.OPPORTUNITY, "6")}).snapshot(report(), T0 + S)
    ids = [log.record_alert(a) for a in (five, six, six_clear)]
    log.record_delivery(ids[0], Delivery("phone", T0 + 2 * S, True, 1, None))
    log.record_delivery(ids[2], Delivery("phone", T0 + 3 * S, False, 5, "HTTP 500"))
    log.record_delivery(ids[2], Delivery("mail", T0 + 4 * S, True, 2, None))
    with store.engine.connect() as conn:
        found = alerts_since(conn, T0)
        assert [(a.id, a.subject, a.phase) for a in found] == [
            (ids[0], "5", "start"),
            (ids[1], "6", "start"),
            (ids[2], "6", "clear"),
        ]
        assert [d.target for d in found[2].deliveries] == ["phone", "mail"]
        assert found[0].detail["scid"] == "0x0x5"
        assert open_conditions(conn, store.node_id) == {(AlertKind.OPPORTUNITY, "5")}
        latest = last_deliveries(conn)
    assert {t: (d.done_ns, d.ok, d.attempts, d.error) for t, d in latest.items()} == {
        "phone": (T0 + 3 * S, False, 5, "HTTP 500"),
        "mail": (T0 + 4 * S, True, 2, None),
    }


# ------------------------------------------------------------------- lnflowctl alerts


@pytest.mark.engines("sqlite", "postgresql")
def test_lnflowctl_alerts_escapes_hostile_text_and_keeps_json_exact(
    store_at: Callable[[str], StoreLocation], capsys: pytest.CaptureFixture[str]
) -> None:
    from lnflow.cli import ctl
    from lnflow.store.alerts import AlertLog, Delivery

    path = store_at("s.db")
    engine = db.open_engine(path)
    writer = StoreWriter(engine)
    node_id = writer.upsert_node(NodeInfo(PEER, "al", "0.18.0-beta", "regtest", 1, True), T0)
    now = time.time_ns()
    log = AlertLog(engine, node_id, keep_days=400)
    (hostile,) = rules().snapshot(report(opp(5, 99)), now - 3600 * S)  # alias "peer\x1b[2J"
    old = log.record_alert(replace(hostile, fired_ns=now - 10 * 86_400 * S))
    new = log.record_alert(hostile)
    log.record_delivery(new, Delivery("phone", now, False, 5, "HTTP 500: \x1b]0;pwned\x07"))
    engine.dispose()
    assert old < new

    assert ctl.main(["--db", db_arg(path), "alerts", "--since", "2d"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "peer\\x1b[2J" in out and "phone failed (HTTP 500: \\x1b]0;pwned\\x07)" in out
    assert out.count("opportunity on 0x0x5") == 1  # the one older than 2 days is left out

    assert ctl.main(["--db", db_arg(path), "--json", "alerts"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [a["id"] for a in doc] == [old, new]
    assert "peer\x1b[2J" in doc[1]["message"]
    assert doc[1]["deliveries"] == [
        {
            "target": "phone",
            "at": doc[1]["deliveries"][0]["at"],
            "ok": False,
            "attempts": 5,
            "error": "HTTP 500: \x1b]0;pwned\x07",
        }
    ]
    assert doc[1]["detail"]["urgency"] == 99


def test_docs_describe_every_status_and_alerts_field() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "json.md").read_text()
    for field in (
        "metrics.listen",
        "alert_targets[].name",
        "alert_targets[].last_delivery_at",
        "alert_targets[].ok",
        "alert_targets[].error",
        "deliveries[].target",
        "subject",
        "detail",
    ):
        assert f"`{field}`" in docs, field


# ------------------------------------------------------------------- settings


def _example_targets() -> str:
    """The commented [[alerts.targets]] examples of config/lnflow.example.toml, uncommented."""
    text = (Path(__file__).resolve().parent.parent / "config" / "lnflow.example.toml").read_text()
    start = text.index("# [[alerts.targets]]")
    block = text[start : text.index("\n[", start)]  # up to the next section
    return "\n".join(line.removeprefix("# ").split("  #")[0] for line in block.splitlines())


def test_the_example_targets_load(tmp_path: Path) -> None:
    from lnflow.config import load_settings

    path = tmp_path / "c.toml"
    path.write_text(_example_targets())
    labels = [t.label for t in load_settings(path).alerts.targets]
    assert labels == ["phone", "webhook https://api.telegram.org/…", "command notify-me"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        pytest.param(
            '[[alerts.targets]]\ntype = "webhook"\nurl = "ftp://u:SECRET@x/y"\n',
            "give the http:// or https:// URL",
            id="not-http",
        ),
        pytest.param(
            '[[alerts.targets]]\ntype = "webhook"\nurl = "https://x/SECRET"\nformat = "telegram"\n',
            "needs chat_id",
            id="telegram-without-chat",
        ),
        pytest.param(
            '[[alerts.targets]]\ntype = "webhook"\nurl = "https://x/SECRET"\n'
            '[[alerts.targets]]\ntype = "webhook"\nurl = "https://x/SECRET2"\n',
            "two targets are named 'webhook https://x/…'",
            id="same-name",
        ),
        pytest.param('[[alerts.targets]]\ntype = "pager"\n', "alerts.targets.0", id="unknown-type"),
        pytest.param("[alerts]\nmin_urgency = 101\n", "alerts.min_urgency", id="urgency-range"),
    ],
)
def test_bad_alert_settings_are_one_line_without_the_secret(
    tmp_path: Path, toml: str, message: str
) -> None:
    from lnflow.config import load_settings
    from lnflow.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert "SECRET" not in text


def test_status_shows_the_metrics_address_and_each_targets_last_delivery(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lnflow.cli import ctl
    from lnflow.store.alerts import AlertLog, Delivery

    path = tmp_path / "s.db"
    engine = db.open_engine(path)
    writer = StoreWriter(engine)
    now = time.time_ns()
    writer.daemon_started(now, 5, metrics_listen="[::1]:9109")
    node_id = writer.upsert_node(NodeInfo(PEER, "al", "0.18.0-beta", "regtest", 1, True), now)
    writer.daemon_state(now, alert_targets=json.dumps(["phone", "pager", "never"]))
    log = AlertLog(engine, node_id, keep_days=400)
    failing = rules().analysis("boom", now)
    assert failing is not None
    alert_id = log.record_alert(failing)
    log.record_delivery(alert_id, Delivery("phone", now - 120 * S, True, 1, None))
    log.record_delivery(alert_id, Delivery("pager", now - 60 * S, False, 5, "HTTP 500: down"))
    log.record_delivery(alert_id, Delivery("phone", now - 60 * S, False, 2, "timed out after 10 s"))
    engine.dispose()

    assert ctl.main(["--db", str(path), "status"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith(("metrics", "alerts"))]
    assert lines[0] == "metrics      http://[::1]:9109/metrics"
    assert lines[1].startswith("alerts       never: no delivery yet")
    assert re.match(r"alerts       pager: FAILED \d+ (s|min) ago \(", lines[2])
    assert lines[2].endswith(") after 5 tries: HTTP 500: down")
    assert lines[3].endswith(") after 2 tries: timed out after 10 s")  # phone: the latest

    assert ctl.main(["--db", str(path), "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metrics"] == {"listen": "[::1]:9109"}
    assert [(t["name"], t["ok"], t["attempts"], t["error"]) for t in doc["alert_targets"]] == [
        ("never", None, None, None),
        ("pager", False, 5, "HTTP 500: down"),
        ("phone", False, 2, "timed out after 10 s"),
    ]


def test_a_flood_of_snapshots_reaches_the_webhook_once_per_condition(
    tmp_path: Path, hook: Hook
) -> None:
    settings = _settings(tmp_path, _webhook(hook.url()), queue_size=1000)
    chans = [2000 + i for i in range(120)]

    async def body(service: AlertService, store: Any) -> None:
        for i in range(40):
            service.analysis_done(report(*(opp(c, 81 + i % 19) for c in chans)))
        await _until(lambda: len(hook.requests) == len(chans))
        service.analysis_done(report())
        await _until(lambda: len(hook.requests) == 2 * len(chans))
        await _until(
            lambda: (
                sum(len(a.deliveries) for a in _stored(settings.store.path)[0]) == 2 * len(chans)
            )
        )
        assert service.dropped == 0

    asyncio.run(_with_service(settings, body))
    docs = [json.loads(b) for *_, b in hook.requests]
    starts = sorted(int(d["key"]) for d in docs if d["state"] == "start")
    clears = sorted(int(d["key"]) for d in docs if d["state"] == "clear")
    assert starts == chans and clears == chans
    found, _ = _stored(settings.store.path)
    assert len(found) == 2 * len(chans)


def test_alerts_queued_at_shutdown_are_recorded_before_it_stops(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}/down"  # deliveries fail and are retried
    settings = _settings(tmp_path, _webhook(url, name="down"), attempts=20, retry_s=5)

    async def body(service: AlertService, store: Any) -> None:
        for chan in range(5):
            service.policy_change("applied", chan, "fee 500 -> 300 ppm")
        # returning closes the service at once

    asyncio.run(_with_service(settings, body))
    found, last = _stored(settings.store.path)
    assert [a.subject for a in found] == ["0", "1", "2", "3", "4"]
    assert last == {}  # the deliveries still being tried were cut, not recorded as done


@pytest.mark.e2e
def test_a_store_lnflowd_has_not_upgraded_yet(tmp_path: Path) -> None:
    """alerts on a store from before its tables is one line naming the fix; status still
    shows what the store has (no metrics address, no alert targets)."""
    from daemonproc import run_lnflowctl

    path = tmp_path / "s.db"
    engine = db.open_engine(path, migrate=False)
    db.upgrade(engine, path, "0015")
    engine.dispose()
    status, out, err = run_lnflowctl("--db", str(path), "alerts")
    assert status != 0 and out == "" and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"lnflowctl: error: cannot read the store {path} (no such ")
    assert line.endswith("): start lnflowd to upgrade it")
    status, out, err = run_lnflowctl("--db", str(path), "status", "--json")
    assert (status, err) == (0, "")
    doc = json.loads(out)
    assert (doc["metrics"], doc["alert_targets"]) == ({"listen": None}, [])


# ------------------------------------------------------- lnd unreachable from the start


async def _unreachable_then_up(
    settings: Settings, hook: Hook, known: bool, *, stream_down_first: bool = False
) -> tuple[int, list[Any]]:
    """lnflowd starts (``start``) while lnd does not answer; the test waits for what the
    webhook gets, then lnd answers (``attach``) and the stream connects. ``known``: the
    store recorded this node before (a restart)."""
    engine = db.open_engine(settings.store.path)
    store = StoreThread(StoreWriter(engine))
    info = NodeInfo(PEER, "al", "0.18.0-beta", "regtest", 100, True)
    await store.call(store.target.daemon_started, T0, 5)
    if known:
        node_id = await store.call(store.target.upsert_node, info, T0)
        await store.call(store.target.daemon_state, T0, node_id=node_id)
    scheduler = AsyncIOScheduler()
    service = AlertService(settings, engine, store)
    try:
        scheduler.start()
        await service.start(scheduler)
        if stream_down_first:  # the open condition was read back: nothing is repeated
            await asyncio.sleep(3 * settings.alerts.stream_down_s)
            assert hook.requests == []
        else:
            await _until(lambda: len(hook.requests) == 1)
            if known:  # its delivery is recorded once the webhook has answered
                await _until(lambda: any(a.deliveries for a in _stored(settings.store.path)[0]))
        before, _ = await asyncio.to_thread(_stored, settings.store.path)
        node_id = await store.call(store.target.upsert_node, info, T0)
        await service.attach(node_id, PEER, "al", scheduler)
        up = asyncio.Event()
        service.watch_stream(up.is_set)
        await asyncio.sleep(3 * settings.alerts.check_s)  # connecting: still down
        up.set()
        await _until(lambda: len(hook.requests) == (1 if stream_down_first else 2))
        await _until(
            lambda: (
                len(_stored(settings.store.path)[0]) == 2
                and all(a.deliveries for a in _stored(settings.store.path)[0])
            )
        )
        return node_id, before
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        await service.close()
        store.close()
        engine.dispose()


def _fast_stream(tmp_path: Path, hook: Hook) -> Settings:
    return _settings(tmp_path, _webhook(hook.url()), stream_down_s=0.5, check_s=0.1)


@pytest.mark.parametrize("known", [True, False], ids=["restart", "fresh store"])
def test_lnd_unreachable_from_the_start_fires_stream_down_once_then_up(
    tmp_path: Path, hook: Hook, known: bool
) -> None:
    settings = _fast_stream(tmp_path, hook)
    node_id, before = asyncio.run(_unreachable_then_up(settings, hook, known))
    docs = [json.loads(r[3]) for r in hook.requests]
    assert [(d["kind"], d["state"], d["title"]) for d in docs] == [
        ("stream_down", "start", "stream down"),
        ("stream_down", "clear", "stream up"),
    ]
    # the node in the first body: the store's, or not known yet on a fresh store
    assert docs[0]["node"] == (
        {"pubkey": PEER, "alias": "al"} if known else {"pubkey": "", "alias": ""}
    )
    assert docs[1]["node"] == {"pubkey": PEER, "alias": "al"}
    # a restart records it at once; a fresh store once lnd named the node
    assert [(a.phase, len(a.deliveries)) for a in before] == ([("start", 1)] if known else [])
    found, last = _stored(settings.store.path)
    assert [(a.kind, a.phase, a.fired_ns) for a in found] == [
        ("stream_down", "start", docs[0]["at_ns"]),
        ("stream_down", "clear", docs[1]["at_ns"]),
    ]
    assert [[(x.ok, x.attempts) for x in a.deliveries] for a in found] == [[(True, 1)]] * 2
    assert next(iter(last.values())).ok
    engine = db.open_readonly_engine(settings.store.path)
    with engine.connect() as conn:
        assert open_conditions(conn, node_id) == set()
        rows = conn.exec_driver_sql("SELECT DISTINCT node_id FROM alert_deliveries").all()
    engine.dispose()
    assert rows == [(node_id,)]


def test_a_stream_down_still_open_from_the_last_run_is_not_repeated(
    tmp_path: Path, hook: Hook
) -> None:
    settings = _fast_stream(tmp_path, hook)
    asyncio.run(_unreachable_then_up(settings, hook, known=True))
    # the last run stopped while the stream was down (its "stream up" never happened)
    engine = db.open_engine(settings.store.path)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM alert_deliveries WHERE alert_id = 2")
        conn.exec_driver_sql("DELETE FROM alerts WHERE id = 2")
    engine.dispose()
    hook.requests.clear()
    asyncio.run(_unreachable_then_up(settings, hook, known=True, stream_down_first=True))
    assert [json.loads(r[3])["state"] for r in hook.requests] == ["clear"]
    found, _ = _stored(settings.store.path)
    assert [a.phase for a in found] == ["start", "clear"]
