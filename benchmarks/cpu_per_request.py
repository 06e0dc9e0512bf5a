"""Server CPU per request: steadier than requests per second on a shared, noisy host.

Seeds a scratch SQLite fleet (or a scratch PostgreSQL database with ``--storage postgres``), starts
``bulwark serve --demo`` (one worker, rate limits off, tokens on) exactly as ``benchmarks/run`` does,
and for each scenario reads the server process's user+system CPU time (``/proc/<pid>/stat``) before
and after a wrk run. The server's idle CPU rate (demo sensors, housekeeping), measured first, is
subtracted. Prints milliseconds of CPU per request. On PostgreSQL it also prints the CPU of the
database's own backend processes serving the scratch database (same host), per request.

    .venv/bin/python benchmarks/cpu_per_request.py                       # this checkout
    .venv/bin/python benchmarks/cpu_per_request.py --server-python OTHER/.venv/bin/python
    .venv/bin/python benchmarks/cpu_per_request.py --profile offboard    # py-spy stacks too
    .venv/bin/python benchmarks/cpu_per_request.py --storage postgres --scenarios offboard

``--server-python`` runs the server with another environment's interpreter (another checkout's
code, same database schema), so two versions can be compared on the same host, back to back.
Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, make_url, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import seed_machines
from run import LIST_QUERY, WRK_DIR, Server, scratch_postgres, token

from bulwark.store.db import create_db_engine, upgrade_database
from bulwark.store.tables import machine_actions

SCENARIOS = ("healthz", "offboard", "get-action", "filtered-list")
_TICKS = os.sysconf("SC_CLK_TCK")


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else "py-spy"


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """User plus system CPU seconds the process (or one of its threads) has used so far."""
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    with open(path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _user_system(pid: int, task: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/task/{task}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def thread_seconds(pid: int) -> dict[str, float]:
    """User and system CPU seconds so far of the event loop (the main thread) and of all other threads together."""
    seconds = {"loop user": 0.0, "loop system": 0.0, "threads user": 0.0, "threads system": 0.0}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            user, system = _user_system(pid, int(task))
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        which = "loop" if int(task) == pid else "threads"
        seconds[f"{which} user"] += user
        seconds[f"{which} system"] += system
    return seconds


def run_wrk(base: str, script: str, args: argparse.Namespace, seconds: float, **env: str) -> dict:
    command = ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--latency", "-s", str(WRK_DIR / script), f"{base}/"]
    if script == "ceiling.lua":
        command[-1] = f"{base}/healthz"
    full_env = {**os.environ, "BENCH_WRK_DIR": str(WRK_DIR), "BENCH_THREADS": "1", **env}
    output = subprocess.run(command, env=full_env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


class DatabaseBackends:
    """CPU of the PostgreSQL backend processes connected to one database (on this host)."""

    def __init__(self, url: str) -> None:
        self.database = make_url(url).database
        self.admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")

    def seconds(self) -> dict[int, float]:
        with self.admin.connect() as conn:
            pids = [r[0] for r in conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": self.database})]
        found = {}
        for pid in pids:
            try:
                found[pid] = cpu_seconds(pid)
            except (FileNotFoundError, PermissionError):
                continue
        return found


def measure(
    server: Server,
    idle_rate: float,
    script: str,
    args: argparse.Namespace,
    profile: Path | None,
    backends: DatabaseBackends | None = None,
    **env: str,
) -> dict:
    """One wrk run; the server's CPU seconds per request, idle rate subtracted."""
    spy = None
    if profile is not None:
        spy = subprocess.Popen(
            [
                _py_spy(),
                "record",
                "-p",
                str(server.proc.pid),
                "-o",
                str(profile),
                "-f",
                "raw",
                "-d",
                str(args.duration),
                "-r",
                "200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
    threads_before = thread_seconds(server.proc.pid)
    database_before = backends.seconds() if backends is not None else {}
    before, started = cpu_seconds(server.proc.pid), time.monotonic()
    figures = run_wrk(server.base, script, args, args.duration, **env)
    used = cpu_seconds(server.proc.pid) - before - idle_rate * (time.monotonic() - started)
    threads_after = thread_seconds(server.proc.pid)
    database_after = backends.seconds() if backends is not None else {}
    if spy is not None:
        spy.wait()
    served = max(figures["requests"], 1)
    # Where the CPU went: the event loop, or the threads (group-commit writer, threadpool, ...).
    by_thread = {
        name: round(1000 * (seconds - threads_before.get(name, 0.0)) / served, 3)
        for name, seconds in threads_after.items()
        if seconds - threads_before.get(name, 0.0) > 0.005
    }
    extra = {}
    if backends is not None:
        # Backends that lived through the run (a pool keeps its connections).
        database = sum(after - database_before.get(pid, 0.0) for pid, after in database_after.items())
        extra["database_cpu_ms_per_request"] = round(1000 * database / served, 3)
    return {
        **figures,
        **extra,
        "cpu_seconds": round(used, 3),
        "cpu_ms_per_request": round(1000 * used / served, 3),
        "cpu_ms_per_request_by_thread": by_thread,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-python", default=sys.executable, help="interpreter whose bulwark serves")
    parser.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("BULWARK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--machines", type=int, default=30_000)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument(
        "--profile",
        nargs="+",
        choices=SCENARIOS,
        default=[],
        help="record py-spy collapsed stacks of this scenario (in the temp directory)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    directory = Path(tempfile.mkdtemp(prefix="bulwark-cpu-"))
    if args.storage == "postgres":
        url, drop = scratch_postgres(args.postgres_url)
    else:
        url, drop = f"sqlite:///{directory / 'bulwark.db'}", None
    upgrade_database(url)
    ids = seed_machines(url, args.machines)
    ids_file = directory / "machine-ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    server = Server(url, directory, 1, None, python=args.server_python)
    backends = DatabaseBackends(url) if args.storage == "postgres" else None
    results: dict[str, dict] = {}
    try:
        bearer = token(server, directory)  # type: ignore[arg-type]
        time.sleep(3)
        before = cpu_seconds(server.proc.pid)
        time.sleep(3)
        idle_rate = (cpu_seconds(server.proc.pid) - before) / 3
        results["idle"] = {"cpu_share_of_a_core": round(idle_rate, 4)}

        def profile(name: str) -> Path | None:
            return directory.parent / f"bulwark-profile-{name}.txt" if name in args.profile else None

        if "healthz" in args.scenarios:
            run_wrk(server.base, "ceiling.lua", args, args.warmup)
            results["healthz"] = measure(server, idle_rate, "ceiling.lua", args, profile("healthz"), backends)
        if "offboard" in args.scenarios:
            ids_env = {"BENCH_IDS": str(ids_file), "BENCH_TOKEN": bearer}
            results["offboard"] = measure(server, idle_rate, "offboard.lua", args, profile("offboard"), backends, **ids_env)
        if "get-action" in args.scenarios:
            engine = create_db_engine(url, pool_size=1)
            with engine.connect() as conn:
                action_ids = [r[0] for r in conn.execute(select(machine_actions.c.id).limit(5000))]
            engine.dispose()
            if not action_ids:
                sys.exit("no actions to read: run the offboard scenario too")
            paths = directory / "action-paths.txt"
            paths.write_text("".join(f"/api/machineactions/{a}\n" for a in action_ids))
            run_wrk(server.base, "get.lua", args, args.warmup, BENCH_PATHS=str(paths), BENCH_TOKEN=bearer)
            results["get-action"] = measure(
                server, idle_rate, "get.lua", args, profile("get-action"), backends, BENCH_PATHS=str(paths), BENCH_TOKEN=bearer
            )
        if "filtered-list" in args.scenarios:
            list_paths = directory / "list-paths.txt"
            list_paths.write_text(LIST_QUERY + "\n")
            run_wrk(server.base, "get.lua", args, args.warmup, BENCH_PATHS=str(list_paths), BENCH_TOKEN=bearer)
            list_env = {"BENCH_PATHS": str(list_paths), "BENCH_TOKEN": bearer}
            results["filtered-list"] = measure(server, idle_rate, "get.lua", args, profile("filtered-list"), backends, **list_env)
    finally:
        server.stop()
        if backends is not None:
            backends.admin.dispose()
        if drop is not None:
            drop()
        shutil.rmtree(directory, ignore_errors=True)
    idle = results["idle"]["cpu_share_of_a_core"]
    print(f"server: {args.server_python} on {args.storage}; idle {idle:.1%} of a core (subtracted)")
    print(f"{'scenario':16} {'req/s':>8} {'CPU ms/req':>11} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in results.items():
        if name != "idle":
            cpu, p50, p99 = r["cpu_ms_per_request"], r["p50_ms"], r["p99_ms"]
            threads = ", ".join(f"{thread} {ms:.3f}" for thread, ms in sorted(r["cpu_ms_per_request_by_thread"].items()))
            database = f", database {r['database_cpu_ms_per_request']:.3f}" if "database_cpu_ms_per_request" in r else ""
            print(
                f"{name:16} {r['rps']:8.0f} {cpu:11.3f} {p50:8.2f} {p99:8.2f} {r['non_2xx']:8d}   by thread: {threads}{database}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
