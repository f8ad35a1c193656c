from pathlib import Path

import pytest

from lnflow.config import load_settings
from lnflow.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lnflow.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_equals_the_defaults() -> None:
    example = load_settings(ROOT / "config" / "lnflow.example.toml")
    assert example == load_settings()


def test_flags_beat_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _write(tmp_path, '[lnd]\nrpcserver = "file:1"\nnetwork = "testnet"\nlnddir = "/f"\n')
    monkeypatch.setenv("LNFLOW_LND__RPCSERVER", "env:2")
    monkeypatch.setenv("LNFLOW_LND__NETWORK", "signet")
    s = load_settings(cfg, {"lnd": {"rpcserver": "flag:3", "network": None}})
    assert (s.lnd.rpcserver, s.lnd.network, s.lnd.lnddir) == ("flag:3", "signet", "/f")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[lnd]\nrpcservr = 'x'\n", "unknown key 'lnd.rpcservr'"),
        ("[recorder]\nbatch_size = 0\n", "bad value for 'recorder.batch_size'"),
        ("[log]\nlevel = 'loud'\n", "bad value for 'log.level'"),
        ("[lnd\n", "not valid TOML"),
        ("[policy]\nmode = 'auto'\n", "bad value for 'policy.mode'"),
        ("[policy]\nmax_fee_step_percent = 0\n", "bad value for 'policy.max_fee_step_percent'"),
    ],
    ids=["typo", "range", "choice", "syntax", "policy-mode", "policy-step"],
)
def test_bad_file_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_environment_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LNFLOW_LND__RPCSERVR", "x")
    with pytest.raises(ConfigError, match="LNFLOW_LND__RPCSERVR"):
        load_settings()


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
