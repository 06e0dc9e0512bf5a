"""Cost per request of the metrics and access log (ObservabilityMiddleware), against the bare app.

Calls a trivial ASGI app directly, with and without the middleware, many times in one process,
and prints the median added time per request for each configuration:

- metrics only (access log below INFO), values in this process;
- metrics in prometheus-client's multiprocess mode (values written to files, as with --workers > 1);
- metrics and the access log written as text, and as JSON, to /dev/null.

Each configuration runs in its own process, because prometheus-client chooses between in-process
and multiprocess values when it is imported.

    .venv/bin/python benchmarks/observability_cost.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("metrics", "metrics-multiprocess", "metrics+log-text", "metrics+log-json")


def _measure(mode: str, requests: int, rounds: int) -> dict[str, float]:
    import logging

    from bulwark.api.observability import ObservabilityMiddleware
    from bulwark.logs import configure_logging
    from bulwark.metrics import Metrics

    class Route:
        operation_id = "getMachine"

    async def app(scope, receive, send) -> None:
        scope["route"] = Route
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    if mode.startswith("metrics+log"):
        configure_logging("INFO", json_lines=mode.endswith("json"))
        handler = logging.getLogger("bulwark").handlers[0]
        handler.stream = open(os.devnull, "w")  # type: ignore[attr-defined]  # noqa: SIM115 - lives as long as the process
    else:
        logging.getLogger("bulwark").setLevel(logging.WARNING)
    observed = ObservabilityMiddleware(app, Metrics())

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message) -> None:
        return None

    def scope() -> dict:
        return {
            "type": "http",
            "method": "GET",
            "path": "/api/machines/x",
            "raw_path": b"/api/machines/x",
            "state": {"request_id": "0e6b1c52-5c37-4f0e-9d0e-4b5a3f7b2c11"},
        }

    async def run(target) -> float:
        started = time.perf_counter_ns()
        for _ in range(requests):
            await target(scope(), receive, send)
        return (time.perf_counter_ns() - started) / requests

    async def main() -> dict[str, float]:
        await run(observed)  # warm up
        bare, wrapped = [], []
        for _ in range(rounds):
            bare.append(await run(app))
            wrapped.append(await run(observed))
        return {"bare_ns": statistics.median(bare), "observed_ns": statistics.median(wrapped)}

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(_measure(args.mode, args.requests, args.rounds)))
        return
    print(f"{'configuration':<24} {'bare app':>10} {'with it':>10} {'added':>10}   (median of {args.rounds} x {args.requests})")
    for mode in MODES:
        env = dict(os.environ)
        with tempfile.TemporaryDirectory() as directory:
            if mode == "metrics-multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = directory
            else:
                env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            command = [sys.executable, __file__, "--mode", mode, "--requests", str(args.requests), "--rounds", str(args.rounds)]
            result = json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)
        added = (result["observed_ns"] - result["bare_ns"]) / 1000
        print(f"{mode:<24} {result['bare_ns'] / 1000:>8.1f}us {result['observed_ns'] / 1000:>8.1f}us {added:>8.1f}us")


if __name__ == "__main__":
    main()
