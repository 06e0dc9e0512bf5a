"""The README's and docs/cli.md's shell blocks run, in order, as written, against a real `serve --demo`.

The server listens on a port other than the documented 8000 (the blocks' URLs are rewritten to
it), in a directory of its own, so that nothing in the blocks may depend on the default port.
Each block runs with bash (`set -euo pipefail`); variables and exports carry on to the next block
as they would in a terminal. A block preceded by `<!-- not run: reason -->` is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import bulwark
from tests.support import child_env, server_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED_PORT = "8000"
BLOCK_TIMEOUT = 240


@dataclass(frozen=True)
class Block:
    document: str
    heading: str
    code: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.document}: {self.heading}"


def shell_blocks(path: Path) -> list[Block]:
    """Every ```sh block of a markdown file, in order, with its heading and `not run` reason."""
    text = path.read_text(encoding="utf-8")
    blocks: list[Block] = []
    heading = ""
    pattern = r"^#+ (?P<heading>[^\n]+)$|(?:<!-- not run: (?P<reason>[^\n]*?) -->\n)?^```sh\n(?P<code>.*?)^```"
    for match in re.finditer(pattern, text, re.M | re.S):
        if match["heading"]:
            heading = match["heading"].strip()
        else:
            # The second block under a heading is "heading (2)", and so on.
            same = sum(block.heading.split(" (")[0] == heading for block in blocks)
            blocks.append(Block(path.name, f"{heading} ({same + 1})" if same else heading, match["code"], match["reason"]))
    return blocks


README = shell_blocks(ROOT / "README.md")
CLI_GUIDE = shell_blocks(ROOT / "docs" / "cli.md")
# What a block must print (stdout and stderr together), where the output says it did its job.
EXPECTED = {
    "README.md: Get a token and call the API": ['"status":"Pending"', "cd9e380d5b15eaa9fc229d11f03ab02b4e81eaff"],
    "README.md: Get a token and call the API (2)": ["Windows11"],
    "README.md: Use it from the command line": ["Succeeded", "2 of 2 offboards requested"],
    "README.md: Devices (the sensor)": ["Simulating: laptop-01.contoso.com, Windows11", "fleet-00007.fleet.example"],
    "cli.md: Command line: `bulwark offboard`, `machines`, `actions`, `profile`": ["Succeeded", "Cancelled"],
    "cli.md: Version and the audit trail": [f"bulwark {bulwark.__version__}", "machine_action.offboard"],
}


def test_the_documents_have_blocks_and_few_are_left_out() -> None:
    assert len(README) >= 7 and len(CLI_GUIDE) >= 2
    skipped = [block.name for block in README + CLI_GUIDE if block.not_run is not None]
    assert len(skipped) <= 3, skipped
    assert all(block.not_run for block in README + CLI_GUIDE if block.not_run is not None), "say why a block is not run"
    assert set(EXPECTED) <= {block.name for block in README + CLI_GUIDE}


@dataclass
class Session:
    """A terminal in the demo's directory: the server's port, and the state blocks leave behind."""

    directory: Path
    port: int
    state: Path
    env: dict[str, str]

    def run(self, block: Block) -> subprocess.CompletedProcess[str]:
        code = block.code.replace(f"127.0.0.1:{DOCUMENTED_PORT}", f"127.0.0.1:{self.port}")
        script = (
            "set -a\n"  # what a block assigns is there for the next block, as in one terminal
            f"[ -f {self.state} ] && . {self.state}\n"
            "set -euo pipefail\n"
            f"{code}\n"
            f"export -p | grep -v -E '^declare -x (PWD|OLDPWD|SHLVL|_)=' > {self.state}\n"
        )
        return subprocess.run(
            ["bash", "-c", script],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    for tool in ("bash", "curl", "jq"):
        if shutil.which(tool) is None:
            pytest.fail(f"the documents' examples need {tool} (installed by .ci/run)")
    directory = tmp_path_factory.mktemp("readme")
    bin_dir = str(Path(sys.executable).parent)
    if not (Path(bin_dir) / "bulwark").exists():
        pytest.fail(f"no bulwark executable next to {sys.executable}: install the project (pip install -e .)")
    # As a newcomer's terminal: no Bulwark settings inherited, the venv activated.
    base = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
    base["PATH"] = os.pathsep.join([bin_dir, base.get("PATH", "")])
    base["COLUMNS"] = "200"
    # ... and a config directory of its own, empty: no profiles, no cached tokens.
    base["XDG_CONFIG_HOME"] = str(directory / ".config")
    env = child_env(base)
    data_dir = directory / ".bulwark"
    with server_process(
        "--demo", "--data-dir", str(data_dir), env={**env, "BULWARK_SENSOR_POLL_MAX_SECONDS": "5"}, log=directory / "server.log"
    ) as url:
        port = int(url.rsplit(":", 1)[1])
        assert str(port) != DOCUMENTED_PORT
        yield Session(directory=directory, port=port, state=directory / ".shell-state", env=env)


def _check(session: Session, block: Block) -> None:
    if block.not_run is not None:
        pytest.skip(f"marked not run: {block.not_run}")
    result = session.run(block)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{block.name} failed ({result.returncode}):\n{block.code}\n--- output ---\n{output}"
    for expected in EXPECTED.get(block.name, []):
        assert expected in output, f"{block.name}: {expected!r} not in\n{output}"


@pytest.mark.parametrize("index", range(len(README)), ids=[f"{i}-{b.heading}" for i, b in enumerate(README)])
def test_readme_block_runs(session: Session, index: int) -> None:
    _check(session, README[index])


@pytest.mark.parametrize("index", range(len(CLI_GUIDE)), ids=[f"{i}-{b.heading}" for i, b in enumerate(CLI_GUIDE)])
def test_cli_guide_block_runs(session: Session, index: int) -> None:
    _check(session, CLI_GUIDE[index])
