"""Entry points stay where they belong: the command loads no server code, the device program none of the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import bulwark

SRC_DIR = str(Path(bulwark.__file__).resolve().parents[1])
SERVER_PACKAGES = ("bulwark.service", "bulwark.store", "bulwark.api", "bulwark.auth", "bulwark.bootstrap")


def _loaded_after_import(*modules: str) -> list[str]:
    """The bulwark modules a fresh interpreter holds after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('bulwark'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": SRC_DIR})
    return json.loads(out.stdout)


def test_the_device_program_imports_nothing_of_the_server() -> None:
    loaded = _loaded_after_import("bulwark.cli.device", "bulwark.sensor.agent", "bulwark.sensor.fleet", "bulwark.sensor.demo")
    assert "bulwark.cli.device" in loaded
    assert [m for m in loaded if m.startswith(SERVER_PACKAGES)] == []


def test_the_command_loads_no_server_code_until_a_command_runs() -> None:
    loaded = _loaded_after_import("bulwark.cli")
    assert {"bulwark.cli.server", "bulwark.cli.admin", "bulwark.cli.api", "bulwark.cli.device"} <= set(loaded)
    assert [m for m in loaded if m.startswith(SERVER_PACKAGES)] == []


# What `bulwark --help` must not pay for: the server's settings, HTTP client, ORM and web framework
# (and the SDK's models), which load only when a command that needs them runs.
HEAVY_LIBRARIES = ("pydantic_settings", "pydantic", "httpx", "sqlalchemy", "fastapi", "cryptography", "bulwark.settings")


def _heavy_loaded(code: str, tmp_path: Path) -> list[str]:
    """The heavy libraries a fresh interpreter holds when ``code`` has run (or exited)."""
    report = tmp_path / "loaded.json"
    prologue = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(report)!r}, 'w').write(json.dumps(sorted("
        f"m for m in {HEAVY_LIBRARIES!r} if m in sys.modules))))\n"
    )
    subprocess.run([sys.executable, "-c", prologue + code], capture_output=True, text=True, env={"PYTHONPATH": SRC_DIR})
    return json.loads(report.read_text())


def test_importing_the_command_loads_no_heavy_library(tmp_path: Path) -> None:
    assert _heavy_loaded("import bulwark.cli", tmp_path) == []


@pytest.mark.parametrize(
    "args", [["--help"], ["machines", "--help"], ["offboard", "--help"], ["audit", "list", "--help"], ["--version"]]
)
def test_help_loads_no_heavy_library(tmp_path: Path, args: list[str]) -> None:
    code = f"import sys\nsys.argv = ['bulwark', *{args!r}]\nfrom bulwark.cli import app\napp()\n"
    assert _heavy_loaded(code, tmp_path) == []


def test_the_guard_sees_a_heavy_library_when_one_is_loaded(tmp_path: Path) -> None:
    # The check above would pass vacuously if the report were empty for another reason.
    assert _heavy_loaded("import bulwark.cli, bulwark.settings", tmp_path) == [
        "bulwark.settings",
        "pydantic",
        "pydantic_settings",
    ]
