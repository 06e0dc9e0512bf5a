"""Bulwark's HTTP benchmark suite: real server, real tokens, wrk driving load from another process.

Each scenario runs for a fixed time at fixed concurrency and reports requests per second, median
and 99th-percentile latency and errors, as a ratio of the ceiling (a constant JSON body served by
the same server stack) measured in the same run. See docs/performance.md.

    benchmarks/run                          # SQLite, 1 worker
    benchmarks/run --storage postgres       # PostgreSQL (+ Redis when workers > 1)
    benchmarks/run --storage postgres --scaling   # 1 worker vs 2 workers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import seed_machines

from bulwark.store.db import create_db_engine, upgrade_database
from bulwark.store.tables import machine_actions

HERE = Path(__file__).resolve().parent
WRK_DIR = HERE / "wrk"
SCOPE = "https://api.securitycenter.microsoft.com/.default"
CEILING = "ceiling: GET /healthz (constant JSON)"
PRISM = "peer: Prism static mock, POST offboard"
LIST_QUERY = "/api/machines?$filter=healthStatus+ne+'Active'+and+startswith(computerDnsName,'host-012')&$top=50"


def wait_until_healthy(base: str, seconds: float) -> bool:
    """Whether the server at ``base`` answers ``/healthz`` within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.2)
    return False


def free_port() -> int:
    """A port nobody listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PRISM_PACKAGE = "@stoplight/prism-cli"


def prism_command() -> list[str]:
    """Stoplight Prism's command, installed from benchmarks/package.json on first use."""
    binary = HERE / "node_modules" / ".bin" / "prism"
    if not binary.exists():
        if shutil.which("npm") is None:
            sys.exit("Prism needs Node.js and npm (apt-get install nodejs npm)")
        print(f"installing {PRISM_PACKAGE} (benchmarks/package.json)", flush=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True)
    return [str(binary)]


class Prism:
    """Stoplight Prism serving a static mock of Bulwark's own OpenAPI document (the peer scenario)."""

    def __init__(self, openapi: dict, data_dir: Path) -> None:
        spec = data_dir / "openapi.json"
        spec.write_text(json.dumps(openapi))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(data_dir / "prism.log", "wb")  # noqa: SIM115 (open while the process runs)
        self.proc = subprocess.Popen(
            [*prism_command(), "mock", "--host", "127.0.0.1", "--port", str(self.port), "--dynamic=false", str(spec)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        probe = f"{self.base}/api/machines/{'0' * 40}/offboard"
        while time.monotonic() < deadline:
            try:
                httpx.post(probe, json={"Comment": "probe"}, timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError(f"Prism did not start; see {data_dir / 'prism.log'}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Server:
    """`bulwark serve` in its own process group, with rate limits off."""

    def __init__(self, url: str, data_dir: Path, workers: int, redis_url: str | None, *, python: str = sys.executable) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "BULWARK_DATABASE_URL": url, "BULWARK_RATE_LIMIT_ENABLED": "false", "BULWARK_LOG_LEVEL": "WARNING"}
        # The figures are for a production server: without the control API a test server adds.
        env["BULWARK_CONTROL_API"] = "false"
        if redis_url:
            env["BULWARK_REDIS_URL"] = redis_url
        self.log = open(data_dir / "server.log", "wb")  # noqa: SIM115 (open while the process runs)
        self.proc = subprocess.Popen(
            [
                python,
                "-m",
                "bulwark.cli",
                "serve",
                "--demo",
                "--data-dir",
                str(data_dir),
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if not wait_until_healthy(self.base, 90):
            raise RuntimeError(f"server did not start; see {data_dir / 'server.log'}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def token(server: Server, data_dir: Path) -> str:
    """A token for the demo automation app (every permission), from the real token endpoint."""
    creds = json.loads((data_dir / "demo-credentials.json").read_text())
    app = next(a for a in creds["applications"] if "Machine.Offboard" in a.get("roles", []))
    response = httpx.post(
        creds["token_endpoint"],
        data={
            "grant_type": "client_credentials",
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "scope": SCOPE,
        },
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["access_token"]


def wrk(server: Server | Prism, script: str, path: str, args: argparse.Namespace, *, warm: bool = True, **env: str) -> dict:
    """Run wrk against ``path`` with ``script``; return its JSON figures.

    A short unmeasured run comes first (``--warmup``), so that Prism's JIT and Bulwark's caches
    are warm; offboards skip it (``warm=False``): each machine can be offboarded only once.
    """
    if warm and args.warmup:
        _run_wrk(server, script, path, args, args.warmup, env)
    return _run_wrk(server, script, path, args, args.duration, env)


def _run_wrk(server: Server | Prism, script: str, path: str, args: argparse.Namespace, seconds: int, env: dict) -> dict:
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(WRK_DIR / script),
        f"{server.base}{path}",
    ]
    full_env = {**os.environ, "BENCH_WRK_DIR": str(WRK_DIR), "BENCH_THREADS": str(args.threads), **env}
    output = subprocess.run(command, env=full_env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_suite(storage_url: str, workers: int, args: argparse.Namespace, redis_url: str | None) -> dict[str, dict]:
    """Seed, start, and run every scenario once; returns figures per scenario."""
    data_dir = Path(tempfile.mkdtemp(prefix="bulwark-bench-"))
    upgrade_database(storage_url)
    ids = seed_machines(storage_url, args.machines)
    ids_file = data_dir / "machine-ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    server = Server(storage_url, data_dir, workers, redis_url)
    results: dict[str, dict] = {}
    try:
        bearer = token(server, data_dir)
        results[CEILING] = wrk(server, "ceiling.lua", "/healthz", args)
        openapi = httpx.get(f"{server.base}/openapi.json", timeout=30).json()
        prism = Prism(openapi, data_dir)
        try:
            # The same offboard script against the mock: same ids, token, body and wrk settings.
            results[PRISM] = wrk(prism, "offboard.lua", "/", args, BENCH_IDS=str(ids_file), BENCH_TOKEN=bearer)
        finally:
            prism.stop()
        results["POST /api/machines/{id}/offboard"] = wrk(
            server, "offboard.lua", "/", args, warm=False, BENCH_IDS=str(ids_file), BENCH_TOKEN=bearer
        )
        engine = create_db_engine(storage_url, pool_size=1)
        with engine.connect() as conn:
            action_ids = [r[0] for r in conn.execute(select(machine_actions.c.id).limit(5000))]
        engine.dispose()
        paths = data_dir / "action-paths.txt"
        paths.write_text("".join(f"/api/machineactions/{a}\n" for a in action_ids))
        results["GET /api/machineactions/{id}"] = wrk(server, "get.lua", "/", args, BENCH_PATHS=str(paths), BENCH_TOKEN=bearer)
        list_paths = data_dir / "list-paths.txt"
        list_paths.write_text(LIST_QUERY + "\n")
        results["GET /api/machines?$filter=... ($top=50)"] = wrk(
            server, "get.lua", "/", args, BENCH_PATHS=str(list_paths), BENCH_TOKEN=bearer
        )
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return results


def run_dispatch(args: argparse.Namespace) -> dict:
    """How fast an action reaches one of ``args.sensors`` connected sensors (benchmarks/sensor_fleet.py)."""
    cleanup = lambda: None  # noqa: E731
    command = [
        sys.executable,
        str(HERE / "sensor_fleet.py"),
        "--sizes",
        str(args.sensors),
        "--actions",
        str(args.dispatch_actions),
        "--port",
        str(free_port()),
    ]
    if args.storage == "postgres":
        url, cleanup = scratch_postgres(args.postgres_url)
        command += ["--database-url", url]
    try:
        # Progress and slow deliveries go to stderr as they happen.
        output = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
    finally:
        cleanup()
    figures = json.loads(output.strip().splitlines()[-1])
    print(
        f"\ndispatch, {args.storage}: {figures['sensors']} sensors connected (all polling after {figures['connect_seconds']} s), "
        f"server RSS {figures['server_rss_mib']} MiB; action reaches its sensor in:"
    )
    for phase in ("at_once", "settled"):
        measured = figures[phase]
        print(
            f"  {phase.replace('_', ' '):8} {measured['latency_median_ms']} ms median, {measured['latency_p99_ms']} ms p99 "
            f"(offboard answered in {measured['offboard_answer_median_ms']} ms median), {measured['errors']} errors"
        )
    return figures


def print_table(title: str, results: dict[str, dict]) -> None:
    """Figures with each scenario's throughput as a share of the ceiling and as a multiple of Prism's."""
    ceiling = results[CEILING]["rps"]
    prism = results[PRISM]["rps"]
    print(f"\n{title}")
    print(f"{'scenario':44} {'req/s':>9} {'of ceiling':>10} {'x Prism':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in results.items():
        errors = r["non_2xx"] + r["socket_errors"]
        print(
            f"{name:44} {r['rps']:9.0f} {r['rps'] / ceiling:10.0%} {r['rps'] / prism:8.2f} "
            f"{r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {errors:7d}"
        )


def scratch_postgres(base_url: str) -> tuple[str, callable]:
    """A new PostgreSQL database and a function that drops it."""
    name = f"bulwark_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(base_url).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("BULWARK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--redis-url", default=os.environ.get("BULWARK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--scaling", action="store_true", help="run 1 worker, then 2 workers (PostgreSQL)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured seconds before each scenario but offboard")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (the server needs the other core)")
    parser.add_argument("--machines", type=int, default=30_000, help="machines seeded (each offboarded once)")
    parser.add_argument("--sensors", type=int, default=1000, help="connected sensors for the dispatch scenario (0 skips it)")
    parser.add_argument("--dispatch-actions", type=int, default=50, help="actions timed in the dispatch scenario")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--repeat", type=int, default=1, help="run the whole suite this many times (ratios vary less than rates)")
    parser.add_argument(
        "--only",
        choices=["http", "dispatch"],
        help="run only the HTTP scenarios (with Prism), or only the dispatch scenario (--sensors, --dispatch-actions)",
    )
    args = parser.parse_args()
    if args.only == "dispatch":
        if not args.sensors:
            sys.exit("--only dispatch needs --sensors N (N > 0)")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        report = {"dispatch": run_dispatch(args)}
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s"
    )
    runs = ([args.workers] if not args.scaling else [1, 2]) * args.repeat
    report = {}
    for number, workers in enumerate(runs, 1):
        if args.storage == "sqlite":
            directory = Path(tempfile.mkdtemp(prefix="bulwark-bench-db-"))
            url, cleanup = f"sqlite:///{directory / 'bulwark.db'}", lambda d=directory: shutil.rmtree(d, ignore_errors=True)
        else:
            url, cleanup = scratch_postgres(args.postgres_url)
        try:
            redis_url = args.redis_url if workers > 1 else None
            results = run_suite(url, workers, args, redis_url)
        finally:
            cleanup()
        title = f"{args.storage}, {workers} worker{'s' if workers > 1 else ''}"
        if args.repeat > 1:
            title += f" (run {(number - 1) // (len(runs) // args.repeat) + 1} of {args.repeat})"
        print_table(title, results)
        report[title] = results
    if args.sensors and args.only != "http":
        report["dispatch"] = run_dispatch(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
