"""lnflowd's settings as plain immutable objects: what the daemon's modules take.

:mod:`lnflow.config` declares the keys and validates them (pydantic, pydantic-settings:
TOML file < ``LNFLOW_*`` environment < flags). Loading that stack costs a process ~10 MB
of RSS that it never gives back (bench/README.md, issue 13), so lnflowd validates in a
short-lived child process (:func:`load_in_child`: ``python -m lnflow.config``) that
prints the validated settings as JSON, and builds these classes from it
(:func:`from_dump`). Its long-running process never imports pydantic.

Each class mirrors one section of :mod:`lnflow.config` field by field, with the same
properties (``store.location``, ``metrics.address``, a target's ``label``);
tests/test_plain_settings.py fails on any difference. There are no defaults here: every
value comes from lnflow.config's validation. A pydantic :class:`lnflow.config.Settings`
has the same attributes, so code typed with these classes reads one as well (tests
build those directly); lists are tuples here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from lnflow.alerts import redact_url
from lnflow.analysis.model import AnalysisSettings
from lnflow.errors import ConfigError
from lnflow.paths import default_db_path
from lnflow.store.engines import StoreLocation, is_url, location

__all__ = [
    "AlertsSettings",
    "AnalysisConfig",
    "ChannelSettings",
    "CommandTarget",
    "LedgerSettings",
    "LndSettings",
    "LogSettings",
    "ManageSettings",
    "MetricsSettings",
    "PolicySettings",
    "RecorderSettings",
    "RetentionSettings",
    "Settings",
    "SettingsChild",
    "StoreSettings",
    "WebhookTarget",
    "analysis_settings",
    "command_label",
    "from_dump",
    "listen_address",
    "load_in_child",
    "store_path",
    "thresholds_of",
    "webhook_label",
]

_plain = dataclass(frozen=True, slots=True)


def store_path(db: str) -> Path:
    """``[store] db``'s SQLite file, for what needs a file (lnflowd and lnflowctl take the
    store's location, which may be a database's URL, its password masked in str())."""
    if is_url(db):
        raise ConfigError(
            f"[store] db / --db {location(db, default_db_path())} is a database URL,"
            " not a file: give a file path"
        )
    return Path(db).expanduser() if db else default_db_path()


def webhook_label(name: str, url: str) -> str:
    return name or f"webhook {redact_url(url)}"


def command_label(name: str, command: Sequence[str]) -> str:
    return name or f"command {Path(command[0]).name}"


@_plain
class LndSettings:
    lnddir: str
    network: str
    rpcserver: str
    tlscertpath: str
    macaroonpath: str
    timeout_s: float


@_plain
class StoreSettings:
    db: str

    @property
    def path(self) -> Path:
        return store_path(self.db)

    @property
    def location(self) -> StoreLocation:
        return location(self.db, default_db_path())


@_plain
class RecorderSettings:
    flush_interval_s: float
    batch_size: int
    heartbeat_s: int
    reconnect_max_s: float
    probe_every_s: float
    probe_timeout_s: float
    reconnect_probe_s: float
    shutdown_drain_s: float
    attempt_timeout_s: float
    attempt_linger_s: float
    dedup_window_s: float
    cluster_max_span_s: float
    max_held_events: int


@_plain
class LedgerSettings:
    sync_interval_s: int
    page_size: int


@_plain
class ChannelSettings:
    sample_interval_s: int


@_plain
class RetentionSettings:
    events_days: int
    attempts_days: int
    samples_days: int
    sessions_days: int
    rollups_days: int
    runs_days: int
    max_db_mb: int
    prune_interval_s: int
    batch_rows: int
    max_batches: int


@_plain
class AnalysisConfig:
    interval_s: int
    window_hours: int
    min_failure_count: int
    min_missed_sats: int
    gossip_grace_h: int
    min_fee_ppm: int
    baseline_days: int
    max_cost_share: float
    inbound_ratio: float
    source_ratio: float


@_plain
class ManageSettings:
    url: str


def listen_address(text: str) -> tuple[str, int] | None:
    """``host:port`` (``[::1]:9109`` for IPv6) -> (host, port); "" -> None (off).

    Raises ValueError naming the expected form."""
    text = text.strip()
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not host:port (e.g. 127.0.0.1:9109; \"\" turns it off)")
    return host, int(port)


@_plain
class MetricsSettings:
    listen: str
    refresh_s: float
    store_refresh_s: float

    @property
    def address(self) -> tuple[str, int] | None:
        return listen_address(self.listen)


@_plain
class WebhookTarget:
    type: Literal["webhook"]
    url: str
    format: Literal["json", "ntfy", "slack", "discord", "mattermost", "telegram"]
    chat_id: str
    name: str
    timeout_s: float

    @property
    def label(self) -> str:
        return webhook_label(self.name, self.url)


@_plain
class CommandTarget:
    type: Literal["command"]
    command: tuple[str, ...]
    name: str
    timeout_s: float

    @property
    def label(self) -> str:
        return command_label(self.name, self.command)


@_plain
class AlertsSettings:
    targets: tuple[WebhookTarget | CommandTarget, ...]
    min_urgency: int
    stream_down_s: float
    store_budget_pct: int
    check_s: float
    attempts: int
    retry_s: float
    retry_max_s: float
    queue_size: int
    keep_days: int


@_plain
class PolicySettings:
    file: str
    mode: Literal["off", "plan", "apply"]
    interval_s: int
    macaroonpath: str
    min_hours_between_changes: int
    max_channels_per_run: int
    max_gap_minutes: int
    max_fee_step_percent: int
    evaluate_hours: float
    revert_if_worse: bool
    revert_threshold_percent: int
    min_forwards_to_judge: int


@_plain
class LogSettings:
    level: Literal["debug", "info", "warning", "error"]
    format: Literal["auto", "json", "console"]


@_plain
class Settings:
    lnd: LndSettings
    store: StoreSettings
    recorder: RecorderSettings
    ledger: LedgerSettings
    channels: ChannelSettings
    retention: RetentionSettings
    analysis: AnalysisConfig
    manage: ManageSettings
    metrics: MetricsSettings
    alerts: AlertsSettings
    policy: PolicySettings
    log: LogSettings


def analysis_settings(settings: Settings) -> AnalysisSettings:
    """The analysis thresholds of ``[analysis]`` (its timing keys left out)."""
    return thresholds_of(settings.analysis)


def thresholds_of(section: object) -> AnalysisSettings:
    """The analysis thresholds of an ``[analysis]`` section, plain or lnflow.config's."""
    return AnalysisSettings(**{f.name: getattr(section, f.name) for f in fields(AnalysisSettings)})


_T = TypeVar("_T")

#: each section's class, by its key in the file
SECTIONS: dict[str, type[Any]] = {
    "lnd": LndSettings,
    "store": StoreSettings,
    "recorder": RecorderSettings,
    "ledger": LedgerSettings,
    "channels": ChannelSettings,
    "retention": RetentionSettings,
    "analysis": AnalysisConfig,
    "manage": ManageSettings,
    "metrics": MetricsSettings,
    "alerts": AlertsSettings,
    "policy": PolicySettings,
    "log": LogSettings,
}
#: an alert target's class, by its ``type``
TARGETS: dict[str, type[WebhookTarget] | type[CommandTarget]] = {
    "webhook": WebhookTarget,
    "command": CommandTarget,
}


def section(cls: type[_T], values: Mapping[str, Any]) -> _T:
    """One section (or target) from its validated values; lists become tuples."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def from_dump(data: Mapping[str, Mapping[str, Any]]) -> Settings:
    """From validated settings as ``lnflow.config.Settings.model_dump()`` gives them (or
    their JSON form): a missing or unknown key is a TypeError, i.e. a bug."""
    parts: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = dict(data[name])
        if name == "alerts":
            values["targets"] = tuple(section(TARGETS[t["type"]], t) for t in values["targets"])
        parts[name] = section(cls, values)
    return Settings(**parts)


#: the exit status of ``python -m lnflow.config`` refusing the settings (message on stderr)
REFUSED = 3


class SettingsChild:
    """:func:`lnflow.config.load_settings` in a child process (``python -m lnflow.config``,
    which inherits the ``LNFLOW_*`` environment): the same settings, or the same
    one-line :class:`ConfigError`, without loading pydantic into this process.

    Started at once; it imports pydantic while this process goes on (lnflowd imports
    its own modules meanwhile) and validates when :meth:`result` hands it the request.
    """

    def __init__(
        self, config_file: Path | None, overrides: Mapping[str, Mapping[str, Any]]
    ) -> None:
        import subprocess

        self._request = json.dumps(
            {"config": None if config_file is None else str(config_file), "overrides": overrides}
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "lnflow.config"],  # -P: not from the cwd
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def result(self) -> Settings:
        """The validated settings (waits for the child); ConfigError if refused."""
        out, err = self._proc.communicate(self._request)
        if self._proc.returncode == REFUSED:
            raise ConfigError(err.strip() or "the settings were refused")
        if self._proc.returncode != 0:  # a bug: its traceback
            sys.stderr.write(err)
            raise ConfigError(f"validating the settings failed (status {self._proc.returncode})")
        sys.stderr.write(err)  # a warning, if any, as when it ran in this process
        return from_dump(json.loads(out))


def load_in_child(config_file: Path | None, overrides: Mapping[str, Mapping[str, Any]]) -> Settings:
    """The settings, validated by :class:`SettingsChild`."""
    return SettingsChild(config_file, overrides).result()
