"""A plain (non-editable) install carries migrations, protobuf modules and the example config."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # every test here starts a process

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_is_complete_and_works_outside_the_repository(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("lnflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for required in (
        "lnflow/_migrations/env.py",
        "lnflow/_migrations/versions/0001_baseline.py",
        "lnflow/_data/lnflow.example.toml",
        "lnflow/lnd/_proto/router_pb2.py",
        "lnflowd/main.py",
    ):
        assert required in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("lnflowd", "lnflowctl", "lnflow-sim"):
        assert f"{script} =" in scripts

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    probe = (
        "import lnflow, pathlib, sys\n"
        "from lnflow.store.db import open_engine, migrations_dir\n"
        "from lnflow.lnd._proto import router_pb2\n"
        f"assert pathlib.Path(lnflow.__file__).is_relative_to({str(target)!r}), lnflow.__file__\n"
        f"assert migrations_dir().is_relative_to({str(target)!r})\n"
        "open_engine(pathlib.Path(sys.argv[1])).dispose()\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "s.db")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
