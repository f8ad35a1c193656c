"""Settings of lnflowd and lnflowctl: TOML file < ``LNFLOW_*`` environment < flags.

One loader, :func:`load_settings`, for both programs: the same file is accepted or
refused by both, with the same one-line message (an unknown key, a value out of
range), and the environment and the flags override it in the same order. Each
program only maps its own flags onto keys (lnflowd/main.py, lnflow/cli/commands.py).

The file format is documented key by key in ``config/lnflow.example.toml``.
pydantic-settings does the layering and the type checks; this module only
declares the keys and turns validation errors into one-line messages.
Environment variables use ``__`` between section and key, e.g.
``LNFLOW_LND__RPCSERVER=10.0.0.2:10009`` or ``LNFLOW_STORE__DB=/srv/lnflow.db``.

A new section is one :class:`_Section` subclass and one field of :class:`Settings`;
its keys, ranges, environment variables and messages follow from them. lnflowd's
modules read its mirror in :mod:`lnflow.settings` (plain classes; lnflowd runs this
loader in a child, ``python -m lnflow.config``, to keep pydantic out of its process):
a new key or section goes there too (tests/test_plain_settings.py names what differs).
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from lnflow import settings as plain_settings
from lnflow.analysis.model import AnalysisSettings
from lnflow.errors import ConfigError
from lnflow.limits import ANALYSIS_RANGES
from lnflow.netaddr import rpc_address
from lnflow.paths import default_db_path
from lnflow.settings import (
    REFUSED,
    command_label,
    listen_address,
    store_path,
    thresholds_of,
    webhook_label,
)
from lnflow.store.engines import StoreLocation, location

__all__ = [
    "AlertsSettings",
    "AnalysisConfig",
    "ChannelSettings",
    "CommandTarget",
    "LedgerSettings",
    "LndSettings",
    "MetricsSettings",
    "PolicySettings",
    "RecorderSettings",
    "RetentionSettings",
    "Settings",
    "WebhookTarget",
    "analysis_settings",
    "listen_address",
    "load_settings",
    "plain",
]


class _Section(BaseModel):
    # every number has an upper bound below, and no float may be inf or nan: a value
    # the timers or the arithmetic cannot take is refused at load, also by --check
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LndSettings(_Section):
    lnddir: str = "~/.lnd"
    network: str = "mainnet"
    rpcserver: str = "localhost:10009"
    tlscertpath: str = ""  # "" = <lnddir>/tls.cert
    macaroonpath: str = ""  # "" = <lnddir>/data/chain/bitcoin/<network>/readonly.macaroon
    timeout_s: float = Field(default=15.0, gt=0, le=3600)

    @field_validator("rpcserver")
    @classmethod
    def _address(cls, value: str) -> str:
        # empty is refused here (an explicit "" is no address), unlike the library's
        # LndCredentials.resolve, where it stands for the default
        rpc_address(value)
        return value


class StoreSettings(_Section):
    db: str = ""  # "" = default_db_path(); a file path, or postgresql+psycopg://USER@HOST/DB

    @property
    def path(self) -> Path:
        """The SQLite file, for what needs a file (lnflowd and lnflowctl take
        :attr:`location`, which may be a database's URL)."""
        return store_path(self.db)

    @property
    def location(self) -> StoreLocation:
        """The store: a SQLite file or a PostgreSQL URL (its password masked in str())."""
        return location(self.db, default_db_path())


class RecorderSettings(_Section):
    flush_interval_s: float = Field(default=1.0, gt=0, le=10)
    batch_size: int = Field(default=2000, ge=1, le=100_000)
    heartbeat_s: int = Field(default=5, ge=1, le=3600)
    reconnect_max_s: float = Field(default=30.0, ge=1, le=3600)  # ignored: see reconnect_probe_s
    probe_every_s: float = Field(default=10.0, ge=0.5, le=3600)
    probe_timeout_s: float = Field(default=5.0, ge=0.1, le=60)
    reconnect_probe_s: float = Field(default=0.5, ge=0.1, le=60)
    shutdown_drain_s: float = Field(default=0.5, ge=0, le=10)
    attempt_timeout_s: float = Field(default=600.0, gt=0, le=14 * 86_400)
    attempt_linger_s: float = Field(default=2.0, ge=0, le=3600)
    dedup_window_s: float = Field(default=60.0, ge=0, le=86_400)
    cluster_max_span_s: float = Field(default=600.0, ge=0, le=86_400)
    # events kept in memory while store writes fail (about 0.5 KB each), then exit
    max_held_events: int = Field(default=100_000, ge=1_000, le=100_000_000)


class LedgerSettings(_Section):
    sync_interval_s: int = Field(default=60, ge=5, le=86_400)
    page_size: int = Field(default=1_000, ge=100, le=50_000)


class ChannelSettings(_Section):
    sample_interval_s: int = Field(default=300, ge=10, le=86_400)


class RetentionSettings(_Section):
    """TTLs in days (0 = keep forever) and the pruning pace; see lnflow.store.retention."""

    events_days: int = Field(default=14, ge=0, le=36_500)  # htlc_events
    attempts_days: int = Field(default=30, ge=0, le=36_500)  # forward_attempts, failure_clusters
    samples_days: int = Field(default=90, ge=0, le=36_500)  # channel_samples
    sessions_days: int = Field(default=400, ge=0, le=36_500)  # stream_sessions (ended ones)
    rollups_days: int = Field(default=400, ge=0, le=36_500)  # hourly rollups
    runs_days: int = Field(default=90, ge=0, le=36_500)  # analysis runs and their opportunities
    max_db_mb: int = Field(default=0, ge=0, le=16_000_000)  # 0 = no size budget
    prune_interval_s: int = Field(default=300, ge=10, le=86_400)
    batch_rows: int = Field(default=5000, ge=100, le=100_000)
    max_batches: int = Field(default=200, ge=1, le=100_000)

    @field_validator("max_db_mb")
    @classmethod
    def _budget_off_or_sane(cls, value: int) -> int:
        # a budget this small would drop every raw row (likely a GB/MB mix-up)
        if 0 < value < 16:
            raise ValueError("use 0 (no budget) or at least 16 (MiB)")
        return value


_ANALYSIS = AnalysisSettings()  # the thresholds' defaults live with the analysis


def _threshold(name: str) -> Any:
    """The Field of one analysis threshold: its default and its range (lnflow.limits)."""
    lo, hi = ANALYSIS_RANGES[name]
    return Field(default=getattr(_ANALYSIS, name), ge=lo, le=hi)


class AnalysisConfig(_Section):
    """The analysis job's timing plus every :class:`AnalysisSettings` threshold."""

    interval_s: int = Field(default=600, ge=10, le=86_400)
    window_hours: int = Field(default=24, ge=1, le=24 * 366)
    min_failure_count: int = _threshold("min_failure_count")
    min_missed_sats: int = _threshold("min_missed_sats")
    gossip_grace_h: int = _threshold("gossip_grace_h")
    min_fee_ppm: int = _threshold("min_fee_ppm")
    baseline_days: int = _threshold("baseline_days")
    max_cost_share: float = _threshold("max_cost_share")
    inbound_ratio: float = _threshold("inbound_ratio")
    source_ratio: float = _threshold("source_ratio")


class ManageSettings(_Section):
    url: str = ""  # lnd-manageJ base URL, e.g. http://127.0.0.1:8081; "" = off


class MetricsSettings(_Section):
    """The Prometheus endpoint (lnflowd.metrics): ``listen`` "" turns it off."""

    listen: str = "127.0.0.1:9109"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        listen_address(value)
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        return listen_address(self.listen)

    refresh_s: float = Field(default=15.0, gt=0, le=3600)  # snapshot, channels, ledger
    store_refresh_s: float = Field(default=300.0, gt=0, le=86_400)  # file size, row counts


class WebhookTarget(_Section):
    """HTTP POST of each alert to ``url`` in ``format`` (lnflow.alerts.webhook_request)."""

    type: Literal["webhook"]
    url: str
    format: Literal["json", "ntfy", "slack", "discord", "mattermost", "telegram"] = "json"
    chat_id: str = ""  # telegram: the chat to send to
    name: str = ""  # "" = the URL's scheme, host and port (its path is a secret)
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # never echo the URL: it holds the webhook's secret
        if not value.startswith(("http://", "https://")) or len(value) < 10:
            raise ValueError("give the http:// or https:// URL of the webhook")
        return value

    @model_validator(mode="after")
    def _telegram_chat(self) -> WebhookTarget:
        if self.format == "telegram" and not self.chat_id:
            raise ValueError('format = "telegram" needs chat_id (the chat to send to)')
        return self

    @property
    def label(self) -> str:
        return webhook_label(self.name, self.url)


class CommandTarget(_Section):
    """Run ``command`` (program and arguments, no shell) with the alert as JSON on stdin."""

    type: Literal["command"]
    command: list[str] = Field(min_length=1)
    name: str = ""  # "" = the program's file name
    timeout_s: float = Field(default=30.0, gt=0, le=3600)

    @property
    def label(self) -> str:
        return command_label(self.name, self.command)


AlertTarget = Annotated[WebhookTarget | CommandTarget, Field(discriminator="type")]


class AlertsSettings(_Section):
    """Built-in notifications (lnflowd.alerts); no targets: alerts are only recorded."""

    targets: list[AlertTarget] = []
    min_urgency: int = Field(default=80, ge=0, le=100)
    stream_down_s: float = Field(default=300.0, ge=0.5, le=86_400)
    store_budget_pct: int = Field(default=90, ge=10, le=100)  # of [retention] max_db_mb
    check_s: float = Field(default=10.0, ge=0.1, le=3600)  # stream and store checks
    attempts: int = Field(default=5, ge=1, le=20)  # deliveries tried per alert and target
    retry_s: float = Field(default=5.0, ge=0.01, le=3600)  # first wait, doubled per retry
    retry_max_s: float = Field(default=300.0, ge=0.01, le=86_400)
    queue_size: int = Field(default=1000, ge=10, le=1_000_000)  # alerts waiting to be sent
    keep_days: int = Field(default=400, ge=1, le=36_500)  # recorded alerts

    @model_validator(mode="after")
    def _unique_names(self) -> AlertsSettings:
        labels = [t.label for t in self.targets]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"two targets are named '{label}': give each a distinct name")
        return self


class PolicySettings(_Section):
    """The policy engine (DESIGN §9, docs/policy.md): its rules file, mode and guard rails."""

    file: str = ""  # the rules (charge-lnd's format); "" = none (check/plan/apply refuse)
    # off: never runs in the daemon; plan: records what it would change; apply: changes it
    mode: Literal["off", "plan", "apply"] = "off"
    interval_s: int = Field(default=3_600, ge=10, le=7 * 86_400)  # after a fresh analysis
    # needs offchain:write, unlike [lnd] macaroonpath; "" = <lnddir>/.../policy.macaroon
    macaroonpath: str = ""
    min_hours_between_changes: int = Field(default=24, ge=0, le=24 * 366)
    max_channels_per_run: int = Field(default=10, ge=1, le=100_000)
    max_gap_minutes: int = Field(default=30, ge=0, le=24 * 60 * 366)
    max_fee_step_percent: int = Field(default=25, ge=1, le=100)
    evaluate_hours: float = Field(default=72.0, gt=0, le=24 * 366)
    revert_if_worse: bool = False
    revert_threshold_percent: int = Field(default=20, ge=1, le=100)
    min_forwards_to_judge: int = Field(default=10, ge=1, le=1_000_000)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LNFLOW_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    lnd: LndSettings = LndSettings()
    store: StoreSettings = StoreSettings()
    recorder: RecorderSettings = RecorderSettings()
    ledger: LedgerSettings = LedgerSettings()
    channels: ChannelSettings = ChannelSettings()
    retention: RetentionSettings = RetentionSettings()
    analysis: AnalysisConfig = AnalysisConfig()
    manage: ManageSettings = ManageSettings()
    metrics: MetricsSettings = MetricsSettings()
    alerts: AlertsSettings = AlertsSettings()
    policy: PolicySettings = PolicySettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (init) win over the environment, which wins over the file (also init,
        # merged below flags in load_settings).
        return (init_settings, env_settings)


def analysis_settings(settings: Settings) -> AnalysisSettings:
    """The analysis thresholds of ``[analysis]`` (its timing keys left out)."""
    return thresholds_of(settings.analysis)


def plain(settings: Settings) -> plain_settings.Settings:
    """The same settings as :mod:`lnflow.settings`' plain objects, which lnflowd's
    modules take (what lnflowd builds from its validating child's JSON)."""
    return plain_settings.from_dump(settings.model_dump())


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.expanduser().open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found: fix --config or create it") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8 text: binary garbage, another encoding
        raise ConfigError(
            f"config file {path} is not valid TOML (not UTF-8 text): "
            "give the TOML file of config/lnflow.example.toml"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc


def _number(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,g}"


def _range(model: type[Settings], loc: tuple[int | str, ...]) -> str | None:
    """``a whole number from 1 to 1,000,000`` for a bounded number key, else None."""
    if len(loc) != 2 or loc[0] not in model.model_fields:
        return None
    section = model.model_fields[str(loc[0])].annotation
    assert isinstance(section, type) and issubclass(section, BaseModel)
    field = section.model_fields.get(str(loc[1]))
    if field is None or field.annotation not in (int, float):
        return None
    lo = next((m for m in field.metadata if isinstance(m, Ge | Gt)), None)
    hi = next((m.le for m in field.metadata if isinstance(m, Le)), None)
    if lo is None or hi is None:
        return None
    kind = "a whole number" if field.annotation is int else "a number"
    start = f"more than {_number(lo.gt)}" if isinstance(lo, Gt) else f"from {_number(lo.ge)}"
    return f"{kind} {start} to {_number(hi)}"


# pydantic's error types of a number that is no number, or out of its range
_NUMBER_ERRORS = frozenset(
    {
        "int_parsing",
        "int_from_float",
        "int_type",
        "float_parsing",
        "float_type",
        "finite_number",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
    }
)


def _one_line(model: type[Settings], exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    given = err.get("input")
    shown = f" (given: {repr(given)[:60]})" if isinstance(given, int | float | str) else ""
    wanted = _range(model, err["loc"]) if err["type"] in _NUMBER_ERRORS else None
    if err["type"] == "extra_forbidden":
        what = f"unknown key '{key}'"
    elif wanted is not None:
        what = f"bad value for '{key}': must be {wanted}{shown}"
    elif err["type"] in ("model_type", "dict_type") and len(err["loc"]) == 1:
        what = f"bad value for '{key}': [{key}] must be a table of keys{shown}"
    else:
        if err["type"] == "value_error":
            shown = ""  # our validators' own sentences quote the value
        msg = err["msg"].removeprefix("Value error, ")
        what = f"bad value for '{key}': {msg}{shown}"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{what}{more} in {source}: see config/lnflow.example.toml for the keys and ranges"


def _env_problem(model: type[Settings]) -> str | None:
    """Unknown LNFLOW_* variables are errors, not silently ignored typos."""
    sections = {name for name in model.model_fields}
    for name in os.environ:
        if not name.startswith("LNFLOW_"):
            continue
        parts = name[len("LNFLOW_") :].lower().split("__")
        if len(parts) != 2 or parts[0] not in sections:
            return f"unknown environment variable {name}: use LNFLOW_<SECTION>__<KEY>"
        section_model = model.model_fields[parts[0]].annotation
        assert isinstance(section_model, type) and issubclass(section_model, BaseModel)
        if parts[1] not in section_model.model_fields:
            return f"unknown environment variable {name}: no key '{parts[1]}' in [{parts[0]}]"
    return None


def load_settings(
    config_file: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    *,
    model: type[Settings] = Settings,
) -> Settings:
    """Build the settings; ``overrides`` are the flags given (section → key → value).

    ``model`` is :class:`Settings` (a subclass with more sections is loaded, checked and
    worded the same way)."""
    file_values = _read_file(config_file) if config_file else {}
    problem = _env_problem(model)
    if problem:
        raise ConfigError(problem)
    flags = {
        s: {k: v for k, v in kv.items() if v is not None} for s, kv in (overrides or {}).items()
    }
    flags = {s: kv for s, kv in flags.items() if kv}
    # Validate the file alone first, so its errors name the file.
    if file_values:
        try:
            model.model_validate(file_values)
        except ValidationError as exc:
            raise ConfigError(_one_line(model, exc, str(config_file))) from exc
    try:
        # env beats file: pydantic-settings gives init kwargs precedence, so merge the
        # file under the environment by letting env fill what the file lacks.
        from_env = model()
        env_set = from_env.model_dump(exclude_unset=True)
        merged = _deep_merge(_deep_merge(file_values, env_set), flags)
        return model(**merged)
    except ValidationError as exc:
        raise ConfigError(_one_line(model, exc, "the environment or flags")) from exc


def _child_main() -> int:
    """``python -m lnflow.config``: lnflowd's loader (:func:`lnflow.settings.load_in_child`).

    Reads ``{"config": PATH or null, "overrides": {section: {key: value}}}`` on stdin and
    prints the validated settings as JSON, or their one-line error on stderr."""
    request = json.loads(sys.stdin.read())
    config = request["config"]
    try:
        settings = load_settings(None if config is None else Path(config), request["overrides"])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return REFUSED
    print(settings.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
