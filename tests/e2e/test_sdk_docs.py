"""Every Python example in docs/sdk.md runs, as written, against a real server."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_machine
from tests.e2e.cli_support import LiveServer, live_server, sensor_fleet

pytestmark = pytest.mark.slow

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
# One seeded Mac (no demo fleet, and the offboard example skips it) and simulated Windows devices
# whose offboards succeed.
MAC = make_machine(1, os_platform="macOS", version="14.5", os_build=None, agent_version="101.24052.0001")
DEVICE_COUNT = 6
# What a block must print, where the printed text says whether it did its job.
EXPECTED_OUTPUT = {
    "Offboard a machine and wait for the outcome": "finished: Succeeded",
    "Errors": "ResourceNotFound 404 ResourceNotFound",
    "Retries and rate limits": f"{DEVICE_COUNT + 1} machines",
    "Token cache": "3 machines",
}


def python_blocks(markdown: str) -> list[tuple[str, str]]:
    """`(section heading, code)` for each ```python block, in document order."""
    blocks: list[tuple[str, str]] = []
    heading = ""
    for match in re.finditer(r"^## (?P<heading>[^\n]+)$|^```python\n(?P<code>.*?)^```", markdown, re.M | re.S):
        if match["heading"]:
            heading = match["heading"].strip()
        else:
            blocks.append((heading, match["code"]))
    return blocks


BLOCKS = python_blocks(GUIDE.read_text(encoding="utf-8"))


def test_the_guide_has_examples() -> None:
    assert len(BLOCKS) >= 6
    assert set(EXPECTED_OUTPUT) <= {heading for heading, _ in BLOCKS}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose Windows devices run sensors that carry out every offboard."""
    with live_server(tmp_path_factory.mktemp("sdk-docs"), [MAC]) as live:
        with sensor_fleet(live, "docs", DEVICE_COUNT, "--check-in-interval", "5", "--poll-wait", "2"):
            yield live


@pytest.mark.parametrize(("heading", "code"), BLOCKS, ids=[f"{i}-{h}" for i, (h, _) in enumerate(BLOCKS)])
def test_example_runs(server: LiveServer, monkeypatch: pytest.MonkeyPatch, heading: str, code: str) -> None:
    for name, value in server.cli_env().items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"{GUIDE.name}: {heading}", "exec"), {"__name__": "__sdk_docs__"})
    if heading in EXPECTED_OUTPUT:
        assert EXPECTED_OUTPUT[heading] in printed.getvalue()
