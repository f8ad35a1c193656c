"""lnflowd and lnflowctl read settings through one loader: the same file or variable is
accepted or refused by both, in the same words, and the environment and the flags
override the file in the same order."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field

from lnflow.cli import ctl
from lnflow.cli.commands import ctl_analysis_settings, ctl_settings
from lnflow.config import Settings, _Section, load_settings
from lnflow.errors import ConfigError
from lnflow.paths import default_db_path
from lnflowd import main as lnflowd_main

pytestmark = pytest.mark.e2e  # starts the simulated node, lnflowd or lnflowctl

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "lnflow.example.toml"


def _run(program: str, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    module = {"lnflowd": "lnflowd.main", "lnflowctl": "lnflow.cli.ctl"}[program]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LNFLOW_")}
    clean.pop("NOTIFY_SOCKET", None)
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        check=False,
    )
    return out.returncode, out.stdout, out.stderr


def _both(tmp_path: Path, config: str | None, env: dict[str, str]) -> dict[str, tuple[int, str]]:
    """Each program's exit status and stderr, its name taken off the front."""
    args = []
    if config is not None:
        path = tmp_path / "lnflow.toml"
        path.write_text(config)
        args = ["--config", str(path)]
    runs = {
        # --check stops at the credentials (no lnd here); status at the missing store
        "lnflowd": [*args, "--lnddir", str(tmp_path / "nolnd"), "--check"],
        "lnflowctl": [*args, "--db", str(tmp_path / "none.db"), "status"],
    }
    found = {}
    for program, argv in runs.items():
        code, out, err = _run(program, argv, env)
        assert out == "", (program, out)
        assert err.count("\n") == 1 and err.startswith(f"{program}: error: "), (program, err)
        found[program] = (code, err.removeprefix(f"{program}: error: "))
    return found


REFUSED = {
    "negative threshold": ("[analysis]\nmin_failure_count = -3\n", {}, "from 1 to 1,000,000"),
    "threshold not a number": ('[analysis]\nmin_failure_count = "many"\n', {}, "whole number"),
    "ratio inf": ("[analysis]\nmax_cost_share = inf\n", {}, "from 0.01 to 1 (given: inf)"),
    "unknown analysis key": ("[analysis]\nbogus = 1\n", {}, "unknown key 'analysis.bogus'"),
    "unknown daemon key": ("[lnd]\nrpcservr = 'x'\n", {}, "unknown key 'lnd.rpcservr'"),
    "unknown section": ("[nosuch]\nx = 1\n", {}, "unknown key 'nosuch'"),
    "daemon key out of range": ("[recorder]\nbatch_size = 0\n", {}, "'recorder.batch_size'"),
    "section not a table": ("store = 5\n", {}, "[store] must be a table"),
    "db not a path": ("[store]\ndb = 5\n", {}, "bad value for 'store.db'"),
    "bad listen address": ("[metrics]\nlisten = 'x'\n", {}, "'x' is not host:port"),
    "not TOML": ("[analysis\n", {}, "is not valid TOML"),
    "env threshold": (None, {"LNFLOW_ANALYSIS__MIN_FAILURE_COUNT": "-3"}, "(given: '-3')"),
    "env unknown key": (None, {"LNFLOW_ANALYSIS__BOGUS": "1"}, "no key 'bogus' in [analysis]"),
    "env unknown section": (None, {"LNFLOW_NOSUCH__X": "1"}, "LNFLOW_<SECTION>__<KEY>"),
}


@pytest.mark.parametrize(("config", "env", "fragment"), REFUSED.values(), ids=REFUSED.keys())
def test_both_programs_refuse_in_the_same_words(
    tmp_path: Path, config: str | None, env: dict[str, str], fragment: str
) -> None:
    found = _both(tmp_path, config, env)
    assert found["lnflowd"] == found["lnflowctl"]
    code, message = found["lnflowd"]
    assert code == 2 and fragment in message, message


ACCEPTED = {
    "the example config": (EXAMPLE.read_text(), {}),
    "thresholds at their bounds": (
        "[analysis]\nmin_failure_count = 1\nmax_cost_share = 1\ninbound_ratio = 0.01\n",
        {},
    ),
    "daemon sections lnflowctl does not use": (
        "[recorder]\nbatch_size = 10\n[retention]\nmax_db_mb = 0\n[log]\nlevel = 'debug'\n",
        {},
    ),
    "environment": (
        None,
        {"LNFLOW_ANALYSIS__MIN_FAILURE_COUNT": "7", "LNFLOW_LOG__LEVEL": "error"},
    ),
}


@pytest.mark.parametrize(("config", "env"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_both_programs_accept_the_same_files(
    tmp_path: Path, config: str | None, env: dict[str, str]
) -> None:
    found = _both(tmp_path, config, env)
    # past the settings: lnflowd at lnd's credentials, lnflowctl at the store
    assert found["lnflowd"][0] == 4 and "TLS certificate not found" in found["lnflowd"][1]
    assert found["lnflowctl"][0] == 3 and "no store at" in found["lnflowctl"][1]


# --------------------------------------------------------------------------- precedence


def _file(tmp_path: Path, text: str | None) -> list[str]:
    if text is None:
        return []
    path = tmp_path / "layered.toml"
    path.write_text(text)
    return ["--config", str(path)]


LAYERS = {
    # name: (file's [store].db, LNFLOW_STORE__DB, --db, the store both use)
    "default": (None, None, None, None),
    "file": ("/f.db", None, None, "/f.db"),
    "env over file": ("/f.db", "/e.db", None, "/e.db"),
    "flag over env": ("/f.db", "/e.db", "/x.db", "/x.db"),
    "flag over file": ("/f.db", None, "/x.db", "/x.db"),
    "env alone": (None, "/e.db", None, "/e.db"),
}


@pytest.mark.parametrize(("file_db", "env_db", "flag_db", "used"), LAYERS.values(), ids=LAYERS)
def test_environment_and_flags_override_in_the_same_order(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    file_db: str | None,
    env_db: str | None,
    flag_db: str | None,
    used: str | None,
) -> None:
    for name in [k for k in os.environ if k.startswith("LNFLOW_")]:
        monkeypatch.delenv(name)
    if env_db is not None:
        monkeypatch.setenv("LNFLOW_STORE__DB", str(tmp_path) + env_db)
    config = _file(tmp_path, None if file_db is None else f'[store]\ndb = "{tmp_path}{file_db}"\n')
    flag = [] if flag_db is None else ["--db", str(tmp_path) + flag_db]
    want = default_db_path() if used is None else Path(str(tmp_path) + used)

    daemon_args = lnflowd_main._parser().parse_args([*config, *flag])
    daemon = load_settings(daemon_args.config, lnflowd_main._overrides(daemon_args))
    ctl_args = ctl._parser().parse_args([*config, *flag, "status"])
    assert daemon.store.path == ctl_settings(ctl_args).store.path == want
    # and lnflowctl really opens that one
    code = ctl.main([*config, *flag, "status"])
    assert code == 3 and f"no store at {want}:" in capsys.readouterr().err


THRESHOLDS = {
    # name: (file's min_failure_count, the variable's, --min-failures, the threshold used)
    "default": (None, None, None, 3),
    "file": (5, None, None, 5),
    "env over file": (5, 6, None, 6),
    "flag over env": (5, 6, 7, 7),
    "flag over file": (5, None, 7, 7),
}


@pytest.mark.parametrize(("in_file", "in_env", "flag", "used"), THRESHOLDS.values(), ids=THRESHOLDS)
def test_thresholds_layer_like_the_daemons(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_file: int | None,
    in_env: int | None,
    flag: int | None,
    used: int,
) -> None:
    for name in [k for k in os.environ if k.startswith("LNFLOW_")]:
        monkeypatch.delenv(name)
    if in_env is not None:
        monkeypatch.setenv("LNFLOW_ANALYSIS__MIN_FAILURE_COUNT", str(in_env))
    config = _file(
        tmp_path, None if in_file is None else f"[analysis]\nmin_failure_count = {in_file}\n"
    )
    daemon_args = lnflowd_main._parser().parse_args(config)
    daemon = load_settings(daemon_args.config, lnflowd_main._overrides(daemon_args))
    ctl_args = ctl._parser().parse_args(
        [*config, "analyze", *([] if flag is None else ["--min-failures", str(flag)])]
    )
    assert ctl_analysis_settings(ctl_args).min_failure_count == used
    if flag is None:  # lnflowd has no threshold flags: the same file and environment
        assert daemon.analysis.min_failure_count == used


def _bounded_keys() -> list[tuple[str, str, object]]:
    """(section, key, a value above the key's highest) of every bounded number."""
    from annotated_types import Le
    from pydantic import BaseModel

    from lnflow.config import Settings

    found = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for key, info in model.model_fields.items():
            hi = next((m.le for m in info.metadata if isinstance(m, Le)), None)
            if hi is not None:
                found.append((section, key, int(hi) + 1 if info.annotation is int else hi * 2))
    return found


@pytest.mark.parametrize(("section", "key", "value"), _bounded_keys(), ids=lambda v: str(v))
def test_every_bounded_key_is_refused_alike_above_its_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, key: str, value: object
) -> None:
    for name in [k for k in os.environ if k.startswith("LNFLOW_")]:
        monkeypatch.delenv(name)
    config = _file(tmp_path, f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as daemon:
        args = lnflowd_main._parser().parse_args(config)
        load_settings(args.config, lnflowd_main._overrides(args))
    with pytest.raises(ConfigError) as ctl_err:
        ctl_settings(ctl._parser().parse_args([*config, "status"]))
    assert str(daemon.value) == str(ctl_err.value)
    assert f"bad value for '{section}.{key}': must be " in str(daemon.value)
    assert f"(given: {value})" in str(daemon.value)


# --------------------------------------------------------------------------- a new section


class _Policy(_Section):
    every_s: int = Field(default=60, ge=10, le=3600)
    mode: str = "dry-run"


class _WithPolicy(Settings):
    policy: _Policy = _Policy()


@pytest.mark.parametrize(
    ("text", "env", "flags", "want"),
    [
        (None, {}, {}, (60, "dry-run")),
        ("[policy]\nevery_s = 20\n", {}, {}, (20, "dry-run")),
        ("[policy]\nevery_s = 20\n", {"LNFLOW_POLICY__EVERY_S": "30"}, {}, (30, "dry-run")),
        (
            "[policy]\nevery_s = 20\n",
            {"LNFLOW_POLICY__EVERY_S": "30"},
            {"every_s": 40},
            (40, "dry-run"),
        ),
        (
            "[policy]\nevery_s = 5\n",
            {},
            {},
            "bad value for 'policy.every_s': must be a whole number from 10 to 3,600 (given: 5)",
        ),
        ("[policy]\nevry_s = 20\n", {}, {}, "unknown key 'policy.evry_s'"),
        (None, {"LNFLOW_POLICY__MODEE": "x"}, {}, "no key 'modee' in [policy]"),
    ],
    ids=["default", "file", "env", "flag", "range", "typo", "env-typo"],
)
def test_a_new_section_is_one_class_and_one_field(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str | None,
    env: dict[str, str],
    flags: dict[str, int],
    want: tuple[int, str] | str,
) -> None:
    for name in [k for k in os.environ if k.startswith("LNFLOW_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = None
    if text is not None:
        path = tmp_path / "policy.toml"
        path.write_text(text)
    if isinstance(want, str):
        with pytest.raises(ConfigError, match=re.escape(want)):
            load_settings(path, {"policy": flags}, model=_WithPolicy)
        return
    settings = load_settings(path, {"policy": flags}, model=_WithPolicy)
    assert isinstance(settings, _WithPolicy)
    assert (settings.policy.every_s, settings.policy.mode) == want
