"""How the CLI and SDK tests reach a real server: the one place that says how they sign in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

import bulwark
from bulwark.cli import app
from bulwark.client import BulwarkClient
from bulwark.client.config import read_credentials_file
from bulwark.domain.machines import Machine
from bulwark.store.db import create_db_engine
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, seed
from tests.support import server_process

SRC_DIR = Path(bulwark.__file__).resolve().parents[1]
CREDENTIALS_FILE_NAME = "demo-credentials.json"
# Every variable the CLI or the SDK reads, cleared first so that a developer's own settings never leak in.
CONNECTION_VARIABLES = (
    "BULWARK_API_URL",
    "BULWARK_AUTHORITY",
    "BULWARK_TENANT_ID",
    "BULWARK_TENANT",
    "BULWARK_CLIENT_ID",
    "BULWARK_CLIENT_SECRET",
    "BULWARK_TOKEN",
    "BULWARK_SCOPE",
    "BULWARK_PROFILE",
    "BULWARK_CREDENTIALS_FILE",
    "BULWARK_INSECURE",
    "BULWARK_CA_FILE",
    "BULWARK_CONFIG",
    "BULWARK_MAX_RATE_LIMIT_WAIT",
    "BULWARK_TOKEN_CACHE",
)


def _python_path() -> str:
    # Server and CLI subprocesses must run this checkout's code, not whichever copy is installed.
    return os.pathsep.join(filter(None, [str(SRC_DIR), os.environ.get("PYTHONPATH")]))


@dataclass(frozen=True)
class LiveServer:
    """A running `bulwark serve` process and the database behind it."""

    base_url: str
    database_url: str
    data_dir: Path

    def connection_env(self) -> dict[str, str]:
        """BULWARK_* variables that point the CLI and the SDK at this server, signed in.

        The demo automation application's client credentials, from the demo-credentials.json
        that `bulwark serve --demo` writes.
        """
        env = {
            "BULWARK_API_URL": self.base_url,
            "BULWARK_AUTHORITY": self.base_url,
            "BULWARK_TENANT_ID": TENANT,
            # Keep the tests away from the user's own profiles (and token cache, which sits beside them).
            "BULWARK_CONFIG": str(self.data_dir / "cli-config.json"),
        }
        # `bulwark serve --demo` writes the demo callers' credentials; the tests sign in with them.
        credentials = read_credentials_file(self.data_dir / CREDENTIALS_FILE_NAME)
        env.update(
            {
                "BULWARK_TENANT_ID": credentials.tenant_id or TENANT,
                "BULWARK_AUTHORITY": credentials.authority or self.base_url,
                "BULWARK_CLIENT_ID": credentials.client_id or "",
                "BULWARK_CLIENT_SECRET": credentials.client_secret or "",
            }
        )
        return env

    def token(self) -> str:
        """A real access token from the server's token endpoint, with the demo automation app."""
        env = self.connection_env()
        response = httpx.post(
            f"{env['BULWARK_AUTHORITY'].rstrip('/')}/{env['BULWARK_TENANT_ID']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": env["BULWARK_CLIENT_ID"],
                "client_secret": env["BULWARK_CLIENT_SECRET"],
                "scope": "https://api.securitycenter.microsoft.com/.default",
            },
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def cli_env(self, **extra: str) -> dict[str, str | None]:
        """The environment of a CLI run: the connection, a wide terminal, nothing inherited."""
        env: dict[str, str | None] = {name: None for name in CONNECTION_VARIABLES}
        env.update(self.connection_env())
        env["COLUMNS"] = "250"  # so that tables never fold ids
        env.update(extra)
        return env

    def run_cli(self, *args: str, input: str | None = None, **env: str) -> Result:
        """Run `bulwark ARGS` in this process, as a user would type it."""
        result = CliRunner().invoke(app, list(args), env=self.cli_env(**env), input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def run_executable(self, *args: str, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
        """Run the installed `bulwark` program as a separate process."""
        executable = Path(sys.executable).with_name("bulwark")
        program = str(executable) if executable.exists() else shutil.which("bulwark")
        if program is None:
            pytest.skip("the bulwark executable is not installed in this environment")
        full_env = {k: v for k, v in os.environ.items() if k not in CONNECTION_VARIABLES}
        full_env.update({k: v for k, v in self.cli_env(**env).items() if v is not None})
        full_env["PYTHONPATH"] = _python_path()
        return subprocess.run([program, *args], env=full_env, capture_output=True, text=True, timeout=timeout)


@contextmanager
def live_server(
    data_dir: Path,
    machines: list[Machine],
    *,
    rate_limit: str = "10000/minute",
    database_url: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> Iterator[LiveServer]:
    """Seed `machines` into a fresh database and serve it with `bulwark serve --demo`.

    With no machines, --demo seeds its demo fleet. `settings` are further BULWARK_* variables of
    the server (short timeouts, say).
    """
    from bulwark.store.db import upgrade_database

    data_dir.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{data_dir / 'bulwark.db'}"
    upgrade_database(url)
    engine = create_db_engine(url, pool_size=1)
    seed(SqlUnitOfWorkFactory(engine), machines)
    engine.dispose()
    env = {
        "BULWARK_DATABASE_URL": url,
        "BULWARK_DATA_DIR": str(data_dir),
        "BULWARK_DEFAULT_TENANT_ID": TENANT,
        "BULWARK_RATE_LIMIT": rate_limit,
        "PYTHONPATH": _python_path(),
        **(settings or {}),
    }
    # --demo leaves a tenant that already has machines alone, and writes demo credentials.
    with server_process("--demo", env=env, log=data_dir / "server.log") as base_url:
        yield LiveServer(base_url=base_url, database_url=url, data_dir=data_dir)


def sdk(server: LiveServer, **overrides: object) -> BulwarkClient:
    """An SDK client signed in as the CLI is."""
    return BulwarkClient.from_env(server.connection_env(), **overrides)


def download_onboarding_package(server: LiveServer) -> Path:
    """Download the tenant's onboarding package over the API, as an administrator would; return its file."""
    response = httpx.get(f"{server.base_url}/api/onboarding/package", headers={"Authorization": f"Bearer {server.token()}"})
    assert response.status_code == 200, response.text
    package_file = server.data_dir / "onboarding-package.json"
    package_file.write_text(response.text)
    return package_file


@contextmanager
def sensor_fleet(server: LiveServer, prefix: str, count: int, *args: str) -> Iterator[list[str]]:
    """Run `bulwark sensor fleet` with `count` devices named PREFIX-NNNNN; yield their machine ids, in name order.

    Yields once every device has enrolled, that is once the inventory lists them all.
    """
    package_file = download_onboarding_package(server)
    env = {**{k: v for k, v in os.environ.items() if k not in CONNECTION_VARIABLES}, **server.connection_env()}
    env["PYTHONPATH"] = _python_path()
    command = [
        sys.executable,
        "-m",
        "bulwark.cli",
        "sensor",
        "fleet",
        "--count",
        str(count),
        "--prefix",
        prefix,
        "--onboarding-package",
        str(package_file),
        *args,
    ]
    with open(server.data_dir / f"sensor-{prefix}.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            enrolled: list[Machine] = []

            def all_enrolled() -> bool:
                assert process.poll() is None, f"the fleet exited with {process.returncode}"
                with sdk(server) as client:
                    listed = client.list_machines(filter=f"startswith(computerDnsName,'{prefix}-')")
                    enrolled[:] = sorted(listed, key=lambda machine: machine.computer_dns_name or "")
                return len(enrolled) == count

            wait_until(all_enrolled, timeout=30, interval=0.2)
            yield [machine.id for machine in enrolled]
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)
