"""How long `bulwark --help` takes before it prints anything, against two baselines.

Runs each command as a fresh process, several rounds interleaved so that a burst of load hits
them alike, and prints for each the median wall time and the median CPU seconds of the child
(user + system: on a busy machine the steadier of the two), then its ratio to the baselines:

- `python -c pass`: the interpreter alone;
- a minimal typer app's `--help` and `hello --help`: the command-line library alone (two
  commands, one option);
- `bulwark --help`, `bulwark machines --help`, `bulwark offboard --help`, `bulwark --version`.

    .venv/bin/python benchmarks/cli_startup.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MINIMAL_TYPER_APP = '''
import typer

app = typer.Typer(help="A minimal app.")


@app.command()
def hello(name: str = typer.Option("world", help="Who to greet.")) -> None:
    """Say hello."""
    typer.echo(f"hello {name}")


@app.command()
def bye() -> None:
    """Say goodbye."""


app()
'''


def bulwark_program() -> list[str]:
    """The installed `bulwark` script beside this interpreter, else `python -m bulwark`."""
    script = Path(sys.executable).with_name("bulwark")
    if script.exists():
        return [str(script)]
    found = shutil.which("bulwark")
    return [found] if found else [sys.executable, "-m", "bulwark"]


def run_once(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and child CPU seconds (user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    env = {**os.environ, "COLUMNS": "120", "TERM": "dumb"}
    bulwark = bulwark_program()
    with tempfile.TemporaryDirectory() as directory:
        minimal = Path(directory) / "minimal_typer_app.py"
        minimal.write_text(MINIMAL_TYPER_APP)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "minimal typer app --help": [sys.executable, str(minimal), "--help"],
            "minimal typer app hello --help": [sys.executable, str(minimal), "hello", "--help"],
            "bulwark --help": [*bulwark, "--help"],
            "bulwark machines --help": [*bulwark, "machines", "--help"],
            "bulwark offboard --help": [*bulwark, "offboard", "--help"],
            "bulwark --version": [*bulwark, "--version"],
        }
        for command in commands.values():
            run_once(command, env)  # warm the file cache and the bytecode
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.rounds} rounds")
        for _ in range(args.rounds):
            for name, command in commands.items():
                wall, cpu = run_once(command, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
    wall = {name: statistics.median(values) for name, values in walls.items()}
    cpu = {name: statistics.median(values) for name, values in cpus.items()}
    python, typer_app = "python -c pass", "minimal typer app --help"
    print(f"{'command':<34}{'wall (median)':>15}{'CPU (median)':>15}{'x python':>11}{'x typer app':>13}")
    for name in commands:
        print(
            f"{name:<34}{wall[name] * 1000:>12.0f} ms{cpu[name] * 1000:>12.0f} ms"
            f"{wall[name] / wall[python]:>11.1f}{wall[name] / wall[typer_app]:>13.2f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
