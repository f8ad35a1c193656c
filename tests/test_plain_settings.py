"""lnflowd's plain settings (lnflow.settings) mirror lnflow.config's pydantic models, and
the daemon, which validates in a child process, keeps pydantic out of its own process."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
from daemonproc import Daemon
from pydantic import BaseModel
from simnode import SimNode

from lnflow import config
from lnflow import settings as plain
from lnflow.errors import ConfigError

# --------------------------------------------------------------------------- the mirror


def _shape(tp: Any) -> Any:
    """A type, with pydantic's and the plain module's spellings made comparable: a list
    is a tuple there, a class is named by its name, Annotated's extras are dropped."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _shape(get_args(tp)[0])
    if origin in (list, tuple):
        return ("sequence of", _shape(get_args(tp)[0]))
    if origin in (Union, types.UnionType):
        return ("one of", frozenset(_shape(a) for a in get_args(tp)))
    if origin is Literal:
        return ("literal", get_args(tp))
    if isinstance(tp, type) and tp.__module__ in (config.__name__, plain.__name__):
        return ("section", tp.__name__)
    return tp


def _model_fields(model: type[BaseModel]) -> dict[str, Any]:
    return {name: _shape(f.annotation) for name, f in model.model_fields.items()}


def _plain_fields(cls: type[Any]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: _shape(hints[f.name]) for f in dataclasses.fields(cls)}


def _properties(cls: type[Any]) -> set[str]:
    return {name for name, value in vars(cls).items() if isinstance(value, property)}


def _pairs() -> list[tuple[type[BaseModel], type[Any]]]:
    """Every pydantic class of the settings with its plain mirror (by name)."""
    pairs = [(config.Settings, plain.Settings)]
    for name, field in config.Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        pairs.append((model, plain.SECTIONS[name]))
    pairs += [(config.WebhookTarget, plain.WebhookTarget)]
    pairs += [(config.CommandTarget, plain.CommandTarget)]
    return pairs


@pytest.mark.parametrize(("model", "mirror"), _pairs(), ids=lambda c: c.__name__)
def test_every_plain_class_has_the_models_fields_types_and_properties(
    model: type[BaseModel], mirror: type[Any]
) -> None:
    assert mirror.__name__ == model.__name__
    assert _plain_fields(mirror) == _model_fields(model)
    assert list(_plain_fields(mirror)) == list(_model_fields(model))  # the same order
    assert _properties(mirror) == _properties(model)


def test_the_plain_sections_are_the_models_sections() -> None:
    assert list(plain.SECTIONS) == list(config.Settings.model_fields)
    assert [f.name for f in dataclasses.fields(plain.Settings)] == list(plain.SECTIONS)
    assert set(plain.TARGETS) == {"webhook", "command"}


def _values(obj: Any) -> Any:
    """Fields and properties of a settings object (pydantic or plain), lists as tuples,
    each value with its type (15 and 15.0 differ)."""
    if isinstance(obj, list | tuple):
        return tuple(_values(v) for v in obj)
    cls = type(obj)
    if not (isinstance(obj, BaseModel) or dataclasses.is_dataclass(obj)):
        return (type(obj).__name__, obj)
    names = (
        list(cls.model_fields)
        if isinstance(obj, BaseModel)
        else [f.name for f in dataclasses.fields(obj)]
    )
    out: dict[str, Any] = {name: _values(getattr(obj, name)) for name in names}
    for name in sorted(_properties(cls)):
        try:
            out[name] = ("property", str(getattr(obj, name)))
        except ConfigError as exc:  # store.path of a database URL
            out[name] = ("refused", str(exc))
    return out


def _custom(tmp_path: Path) -> Path:
    """A file that sets every key of every section to a value other than its default."""
    path = tmp_path / "custom.toml"
    path.write_text(
        f"""
[lnd]
lnddir = "{tmp_path}/lnd"
network = "regtest"
rpcserver = "10.0.0.2:10010"
tlscertpath = "/etc/lnd/tls.cert"
macaroonpath = "/etc/lnd/readonly.macaroon"
timeout_s = 20

[store]
db = "{tmp_path}/custom.db"

[recorder]
flush_interval_s = 2.5
batch_size = 777
heartbeat_s = 7
reconnect_max_s = 45.5
probe_every_s = 12.5
probe_timeout_s = 6.5
reconnect_probe_s = 0.75
shutdown_drain_s = 1.25
attempt_timeout_s = 900.5
attempt_linger_s = 3.5
dedup_window_s = 61.5
cluster_max_span_s = 601.5
max_held_events = 20000

[ledger]
sync_interval_s = 61
page_size = 1001

[channels]
sample_interval_s = 301

[retention]
events_days = 15
attempts_days = 31
samples_days = 91
sessions_days = 401
rollups_days = 402
runs_days = 92
max_db_mb = 64
prune_interval_s = 301
batch_rows = 5001
max_batches = 201

[analysis]
interval_s = 601
window_hours = 25
min_failure_count = 4
min_missed_sats = 101
gossip_grace_h = 7
min_fee_ppm = 2
baseline_days = 15
max_cost_share = 0.7
inbound_ratio = 0.85
source_ratio = 0.75

[manage]
url = "http://127.0.0.1:8081"

[metrics]
listen = "[::1]:9110"
refresh_s = 16.5
store_refresh_s = 301.5

[alerts]
min_urgency = 70
stream_down_s = 301.5
store_budget_pct = 80
check_s = 11.5
attempts = 6
retry_s = 6.5
retry_max_s = 301.5
queue_size = 1001
keep_days = 401

[[alerts.targets]]
type = "webhook"
url = "https://api.telegram.org/bot123:secret/sendMessage"
format = "telegram"
chat_id = "-100123"
timeout_s = 11.5

[[alerts.targets]]
type = "webhook"
url = "https://ntfy.sh/lnflow-topic"
format = "ntfy"
name = "phone"

[[alerts.targets]]
type = "command"
command = ["/usr/local/bin/notify", "--urgent", "x y"]
timeout_s = 31.5

[policy]
file = "{tmp_path}/policies.conf"
mode = "plan"
interval_s = 3601
macaroonpath = "/etc/lnd/policy.macaroon"
min_hours_between_changes = 25
max_channels_per_run = 11
max_gap_minutes = 31
max_fee_step_percent = 26
evaluate_hours = 72.5
revert_if_worse = true
revert_threshold_percent = 21
min_forwards_to_judge = 11

[log]
level = "debug"
format = "json"
"""
    )
    return path


def test_the_custom_file_sets_every_key_to_another_value(tmp_path: Path) -> None:
    custom, default = config.load_settings(_custom(tmp_path)), config.Settings()
    for name in config.Settings.model_fields:
        section, standard = getattr(custom, name), getattr(default, name)
        for key in type(section).model_fields:
            assert getattr(section, key) != getattr(standard, key), f"{name}.{key}"


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("LNFLOW_")]:
        monkeypatch.delenv(name)


@pytest.mark.e2e  # the child process
def test_the_defaults_round_trip_through_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    loaded = plain.load_in_child(None, {})
    assert isinstance(loaded, plain.Settings)
    assert _values(loaded) == _values(config.Settings()) == _values(config.load_settings())
    assert _values(config.plain(config.Settings())) == _values(config.Settings())


@pytest.mark.e2e  # the child process
def test_a_fully_customised_config_round_trips_through_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    path = _custom(tmp_path)
    loaded = plain.load_in_child(path, {"store": {"db": None}})
    expected = config.load_settings(path)
    assert _values(loaded) == _values(expected)
    assert _values(config.plain(expected)) == _values(expected)
    assert loaded == config.plain(expected)
    # what the daemon's modules read off them
    assert loaded.store.location == tmp_path / "custom.db"
    assert loaded.metrics.address == ("::1", 9110)
    assert [t.label for t in loaded.alerts.targets] == [
        "webhook https://api.telegram.org/…",  # its path is a secret
        "phone",
        "command notify",
    ]
    assert loaded.alerts.targets[2] == plain.CommandTarget(
        type="command",
        command=("/usr/local/bin/notify", "--urgent", "x y"),
        name="",
        timeout_s=31.5,
    )
    assert plain.analysis_settings(loaded) == config.analysis_settings(expected)


@pytest.mark.e2e  # the child process
def test_environment_and_flags_reach_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    path = _custom(tmp_path)
    monkeypatch.setenv("LNFLOW_STORE__DB", "postgresql+psycopg://lnflow:pw@db.example/lnflow")
    monkeypatch.setenv("LNFLOW_RECORDER__BATCH_SIZE", "1234")
    flags = {"lnd": {"rpcserver": "flag:3", "network": None}, "log": {"level": "error"}}
    loaded = plain.load_in_child(path, flags)
    expected = config.load_settings(path, flags)
    assert _values(loaded) == _values(expected)
    assert (loaded.lnd.rpcserver, loaded.lnd.network) == ("flag:3", "regtest")
    assert loaded.recorder.batch_size == 1234
    assert str(loaded.store.location) == "postgresql+psycopg://lnflow:***@db.example/lnflow"


@pytest.mark.parametrize(
    "text",
    [
        "[lnd]\nrpcservr = 'x'\n",
        "[recorder]\nbatch_size = 0\n",
        "[lnd\n",
        "[[alerts.targets]]\ntype = 'webhook'\nurl = 'https://x.example/a'\nformat = 'telegram'\n",
        "[retention]\nmax_db_mb = 3\n",
    ],
    ids=["typo", "range", "syntax", "validator", "field-validator"],
)
@pytest.mark.e2e  # the child process
def test_the_child_refuses_in_the_same_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    _clean_env(monkeypatch)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as here:
        config.load_settings(path)
    with pytest.raises(ConfigError) as there:
        plain.load_in_child(path, {})
    assert str(there.value) == str(here.value)
    assert "\n" not in str(there.value)


@pytest.mark.e2e  # the child process
def test_the_child_refuses_unknown_variables_and_missing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    with pytest.raises(ConfigError, match=r"^config file .*nope.toml not found"):
        plain.load_in_child(tmp_path / "nope.toml", {})
    monkeypatch.setenv("LNFLOW_LND__RPCSERVR", "x")
    with pytest.raises(ConfigError, match=r"^unknown environment variable LNFLOW_LND__RPCSERVR"):
        plain.load_in_child(None, {})


# --------------------------------------------------------------------------- the daemon


@pytest.mark.e2e
def test_daemon_modules_import_no_pydantic() -> None:
    code = (
        "import sys, lnflowd.main, lnflowd.daemon, lnflowd.policy_job, lnflowd.logs;"
        "import lnflow.policy.runner, lnflow.recording.app, lnflow.store.retention;"
        "print(sorted(m for m in sys.modules if m.split('.')[0]"
        " in ('pydantic', 'pydantic_core', 'pydantic_settings', 'annotated_types')"
        " or m == 'lnflow.config'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.e2e
def test_running_daemon_has_no_pydantic_mapped(tmp_path: Path) -> None:
    """The daemon validates its settings in a child; its own process never loads
    pydantic-core (a shared library: /proc/PID/maps names every one mapped)."""
    args = ("--rate", "300", "--seed", "25", "--channels", "6")
    with SimNode(tmp_path / "lnd", args=args) as sim, Daemon(sim, tmp_path / "s.db") as d:
        d.wait_for(lambda c: c.execute("SELECT count(*) FROM htlc_events").fetchone()[0] > 100)
        maps = Path(f"/proc/{d.pid}/maps").read_text()
        assert "_pydantic_core" not in maps
        assert d.stop() == 0
