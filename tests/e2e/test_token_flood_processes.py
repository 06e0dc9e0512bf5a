"""An unauthenticated token-endpoint flood must not stall the API (real server and flood processes).

64 concurrent connections send client-credentials requests with made-up client ids (each of which
costs a real Argon2id check against the dummy hash when it reaches hashing), bounded in count and
time, from a separate process; meanwhile a valid caller reads a machine. The median latency of that
read under the flood must stay within 3x of its median when idle. The figures are printed.

The flood process stands for callers on other hosts, so it runs at a lower scheduling priority: its
own client-side CPU (64 Python connections) must not be counted as the server's slowness. The rest
of the suite shares this host's cores while this test runs, which can only add latency, never take
it away; so a round over the target is measured again (at most ROUNDS in all) and the best round is
held to the target. A server that stalls under the flood fails every round.
"""

from __future__ import annotations

import ast
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest

from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import app_token, bearer, register_app
from tests.support import child_env, server_process

pytestmark = pytest.mark.slow

MACHINE = make_machine(64)
FLOOD_CONNECTIONS = 64
FLOOD_REQUESTS = 2_000
FLOOD_SECONDS = 20.0
SAMPLES = 15
ROUNDS = 3
TARGET = 3.0

_FLOOD = textwrap.dedent(
    """
    import asyncio, sys, time, uuid, collections, httpx
    base, tenant, connections, total, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    statuses = collections.Counter()
    sent = 0
    deadline = time.monotonic() + seconds

    async def worker():
        global sent
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            while sent < total and time.monotonic() < deadline:
                sent += 1
                form = {"grant_type": "client_credentials", "client_id": str(uuid.uuid4()),
                        "client_secret": "guess", "scope": "https://api.securitycenter.microsoft.com/.default"}
                try:
                    statuses[(await client.post(f"/{tenant}/oauth2/v2.0/token", data=form)).status_code] += 1
                except httpx.HTTPError as error:
                    statuses[type(error).__name__] += 1

    async def main():
        print("ready", flush=True)
        await asyncio.gather(*(worker() for _ in range(connections)))
        print(dict(statuses), flush=True)

    asyncio.run(main())
    """
)


def _median_read_seconds(client: httpx.Client, token: str) -> float:
    timings = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        response = client.get(f"/api/machines/{MACHINE.id}", headers=bearer(token))
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        time.sleep(0.05)
    return statistics.median(timings)


def _flood_figures(base: str, token: str) -> tuple[float, float, str]:
    with httpx.Client(base_url=base, timeout=120) as client:
        _median_read_seconds(client, token)  # warm up
        idle = _median_read_seconds(client, token)
        flood = subprocess.Popen(
            [
                "nice",
                "-n",
                "10",
                sys.executable,
                "-c",
                _FLOOD,
                base,
                TENANT,
                str(FLOOD_CONNECTIONS),
                str(FLOOD_REQUESTS),
                str(FLOOD_SECONDS),
            ],
            env=child_env(None),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert flood.stdout is not None and flood.stdout.readline().strip() == "ready"
            time.sleep(1.0)  # let the flood build up
            loaded = _median_read_seconds(client, token)
            outcome = flood.communicate(timeout=FLOOD_SECONDS + 60)[0].strip()
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
    return idle, loaded, outcome


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({}, id="defaults"),
        # The per-source budget turned off: only the hashing pool's bound protects the API.
        pytest.param(
            {"BULWARK_TOKEN_RATE_LIMIT_PER_SOURCE": "off", "BULWARK_TOKEN_RATE_LIMIT_PER_CLIENT": "off"}, id="pool-only"
        ),
    ],
)
def test_api_latency_under_a_token_flood_stays_within_three_times_idle(
    config: dict[str, str], database_url: str, uow_factory: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the flood measures the server, not the database; once is enough")
    seed(uow_factory, [MACHINE])
    client_id = register_app(uow_factory)
    env = {
        "BULWARK_DATABASE_URL": database_url,
        "BULWARK_DATA_DIR": str(tmp_path),
        "BULWARK_DEFAULT_TENANT_ID": TENANT,
        "BULWARK_RATE_LIMIT": "100000/minute",
        "BULWARK_RATE_LIMIT_KEY_PREFIX": f"bulwark-test:{uuid.uuid4().hex}",
        **config,
    }
    ratios = []
    with server_process(env=env, log=tmp_path / "server.log") as base:
        with httpx.Client(base_url=base) as client:
            token = app_token(client, client_id)
        for _ in range(ROUNDS):
            idle, loaded, outcome = _flood_figures(base, token)
            ratios.append(loaded / idle)
            print(
                f"\nGET /api/machines/{{id}} median of {SAMPLES}: idle {idle * 1000:.1f} ms, under a "
                f"{FLOOD_CONNECTIONS}-way token flood {loaded * 1000:.1f} ms ({ratios[-1]:.2f}x); flood answers: {outcome}"
            )
            answers = ast.literal_eval(outcome)
            assert answers and 200 not in answers, outcome  # no made-up client id ever got a token
            if ratios[-1] <= TARGET:
                break
    best = min(ratios)
    assert best <= TARGET, f"API latency under the flood is {best:.1f}x idle at best in {len(ratios)} rounds: {ratios}"
