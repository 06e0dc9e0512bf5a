"""docs/testing.md's example runs as printed: its playbook, and its tests against the plugin's server."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from bulwark.testing import BulwarkServer

pytestmark = pytest.mark.slow

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(encoding="utf-8"), re.M | re.S)
PLAYBOOK, TESTS = BLOCKS if len(BLOCKS) == 2 else ("", "")
TEST_NAMES = [node.name for node in ast.parse(TESTS).body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


def test_the_guide_has_a_playbook_and_its_tests() -> None:
    assert len(BLOCKS) == 2
    assert "def offboard_and_report" in PLAYBOOK
    # Success, device failure, timeout and throttling, each tested.
    assert {"test_offboard_succeeds", "test_device_failure_is_reported", "test_offline_device_times_out"} <= set(TEST_NAMES)
    assert "test_throttling_is_waited_out" in TEST_NAMES


@pytest.fixture(scope="module")
def printed_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The two blocks written out as playbook.py and test_playbook.py, and imported as a user's files would be."""
    directory = tmp_path_factory.mktemp("testing-docs")
    (directory / "playbook.py").write_text(PLAYBOOK, encoding="utf-8")
    (directory / "test_playbook.py").write_text(TESTS, encoding="utf-8")
    sys.path.insert(0, str(directory))
    try:
        yield importlib.import_module("test_playbook")
    finally:
        sys.path.remove(str(directory))
        for name in ("playbook", "test_playbook"):
            sys.modules.pop(name, None)


@pytest.mark.parametrize("name", TEST_NAMES)
def test_printed_test_passes(printed_tests: ModuleType, bulwark_server: BulwarkServer, name: str) -> None:
    getattr(printed_tests, name)(bulwark_server)
