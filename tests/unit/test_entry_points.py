"""Entry points stay where they belong: the command loads no server code, the device program none of the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
