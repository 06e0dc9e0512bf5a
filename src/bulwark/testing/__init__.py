"""Test a playbook against a real Bulwark server: start one, sign in, and steer it through its control API.

``BulwarkServer.start()`` runs ``bulwark serve --demo`` as a separate process (SQLite in a
directory of its own, a free port, optionally HTTPS with a local CA), which seeds a demo fleet,
runs a simulated sensor for each active demo machine and serves the control API. The pytest
plugin (``bulwark.testing.plugin``, installed with the package) wraps it in the ``bulwark_server``
fixture. See docs/testing.md.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import bulwark
from bulwark.client import BulwarkClient

__all__ = ["BulwarkServer", "Control", "ControlError", "ServerStartError"]

DEMO_AUTOMATION_APP = "Bulwark Demo Automation"
DEMO_READER_APP = "Bulwark Demo Reader"
SCOPE = "https://api.securitycenter.microsoft.com/.default"
# A test server seeds a small fleet, so it starts (and resets) in a moment.
DEFAULT_MACHINE_COUNT = 20
# Simulated devices finish an action this fast unless a behaviour says otherwise.
DEFAULT_ACTION_SECONDS = 0.2
START_TIMEOUT = 60.0


class ServerStartError(RuntimeError):
    """The server process exited or did not answer in time; the message carries its log's tail."""


class ControlError(RuntimeError):
    """The control API refused a call: its status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Token:
    value: str
    expires_at: float


class Control:
    """The control API (``/_bulwark``) as methods, signed in as the demo automation application."""

    def __init__(self, server: BulwarkServer) -> None:
        self._server = server

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        server = self._server
        response = httpx.request(
            method,
            f"{server.url}/_bulwark{path}",
            json=body,
            params={k: v for k, v in params.items() if v is not None},
            headers={"Authorization": f"Bearer {server.token()}"},
            verify=server.ssl_context() or True,
            timeout=30,
        )
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise ControlError(response.status_code, error["code"], error["message"])
            except (ValueError, KeyError, TypeError):
                raise ControlError(response.status_code, "Unknown", response.text[:500]) from None
        return response.json() if response.content else None

    # behaviours
    def set_behavior(
        self, machine_id: str, outcome: str, *, delay_seconds: float = 0.0, error_h_result: int | None = None
    ) -> dict[str, Any]:
        """What the machine's simulated sensor does with its next actions: ``Succeeded``, ``Failed`` or ``Never``."""
        body: dict[str, Any] = {"outcome": outcome, "delaySeconds": delay_seconds}
        if error_h_result is not None:
            body["errorHResult"] = error_h_result
        return self._call("PUT", f"/machines/{machine_id}/behavior", body)

    def get_behavior(self, machine_id: str) -> dict[str, Any]:
        """The machine's behaviour (``outcome`` None: the default)."""
        return self._call("GET", f"/machines/{machine_id}/behavior")

    def clear_behavior(self, machine_id: str) -> None:
        """Back to the default behaviour."""
        self._call("DELETE", f"/machines/{machine_id}/behavior")

    # faults
    def add_fault(
        self,
        operation: str = "*",
        *,
        status: int | None = None,
        count: int | None = None,
        probability: float | None = None,
        retry_after_seconds: int | None = None,
        latency_ms: int | None = None,
    ) -> str:
        """Make the next matching API calls answer ``status`` (or wait ``latency_ms``); return the fault's id."""
        body = {
            "operation": operation,
            "status": status,
            "count": count,
            "probability": probability,
            "retryAfterSeconds": retry_after_seconds,
            "latencyMs": latency_ms,
        }
        return self._call("POST", "/faults", {k: v for k, v in body.items() if v is not None})["id"]

    def faults(self) -> list[dict[str, Any]]:
        """The active faults."""
        return self._call("GET", "/faults")["value"]

    def remove_fault(self, fault_id: str) -> None:
        """Remove one fault."""
        self._call("DELETE", f"/faults/{fault_id}")

    # clock, reset, request log
    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the server's clock forward (the sweeper runs at once); answers the clock and what the sweep did."""
        return self._call("POST", "/clock/advance", {"seconds": seconds})

    def clock(self) -> dict[str, Any]:
        """``now`` as the fleet sees it, ``realNow`` and ``offsetSeconds``."""
        return self._call("GET", "/clock")

    def reset(self) -> None:
        """Back to the freshly seeded demo fleet (identities and tokens stay valid)."""
        self._call("POST", "/reset")

    def requests(self, operation: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
        """The recorded API calls, newest first (of ``operation`` when given)."""
        return self._call("GET", "/requests", operation=operation, limit=limit)["value"]


@dataclass
class BulwarkServer:
    """A running ``bulwark serve --demo`` process, its demo callers, and ways to call it."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    startup_seconds: float = 0.0
    _credentials: dict[str, Any] = field(default_factory=dict)
    _tokens: dict[str, _Token] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        tls: bool = False,
        machine_count: int = DEFAULT_MACHINE_COUNT,
        workers: int = 1,
        env: dict[str, str] | None = None,
        timeout: float = START_TIMEOUT,
    ) -> BulwarkServer:
        """Start a server on a free port with its data in ``data_dir``; return once it answers.

        ``env`` adds ``BULWARK_*`` settings; the caller's own ``BULWARK_*`` variables are not
        passed on, so a developer's configuration never points the test server elsewhere.
        """
        started = time.monotonic()
        data_dir.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
        # The server runs the same Bulwark as the tests, wherever another copy is installed.
        source = str(Path(bulwark.__file__).resolve().parents[1])
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (source, child_env.get("PYTHONPATH", "")) if p)
        child_env.update(
            {
                "BULWARK_DEMO_MACHINE_COUNT": str(machine_count),
                "BULWARK_DEMO_ACTION_SECONDS": str(DEFAULT_ACTION_SECONDS),
                "BULWARK_CONTROL_API": "true",
                # Generous limits: a playbook's tests meet 429 when a fault says so, not by accident.
                "BULWARK_RATE_LIMIT": "100000/minute",
                **(env or {}),
            }
        )
        command = [sys.executable, "-m", "bulwark", "serve", "--demo", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--data-dir", str(data_dir), "--workers", str(workers), "--tls" if tls else "--no-tls"]
        log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - closed when the process is stopped
        process = subprocess.Popen(command, env=child_env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        server = cls(url=f"{'https' if tls else 'http'}://127.0.0.1:{port}", data_dir=data_dir, process=process)
        try:
            server._wait_until_ready(timeout)
        except BaseException:
            server.stop()
            raise
        server.startup_seconds = time.monotonic() - started
        return server

    def _wait_until_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        credentials = self.data_dir / "demo-credentials.json"
        while True:
            if self.process.poll() is not None:
                raise ServerStartError(f"bulwark serve exited with {self.process.returncode}:\n{self.log_tail()}")
            if credentials.exists():
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=1, verify=self.ssl_context() or True).status_code == 200:
                        self._credentials = json.loads(credentials.read_text())
                        return
                except (httpx.TransportError, ssl.SSLError, ValueError):
                    pass
            if time.monotonic() > deadline:
                raise ServerStartError(f"bulwark serve did not answer within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, size: int = 4000) -> str:
        """The end of the server's log."""
        try:
            return (self.data_dir / "server.log").read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server process (a test server's data is thrown away: no long graceful shutdown)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    # -- who is who ----------------------------------------------------------------------------

    @property
    def tenant_id(self) -> str:
        """The demo tenant."""
        return str(self._credentials["tenant_id"])

    @property
    def authority(self) -> str:
        """The token authority, ``{url}/{tenant}``, as MSAL takes it."""
        return str(self._credentials["authority"])

    @property
    def token_endpoint(self) -> str:
        """``{authority}/oauth2/v2.0/token``."""
        return str(self._credentials["token_endpoint"])

    @property
    def applications(self) -> dict[str, dict[str, Any]]:
        """The demo applications by name: client_id, client_secret, roles."""
        return {app["name"]: app for app in self._credentials["applications"]}

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        """The demo users by name: username, password, access."""
        return {user["username"]: user for user in self._credentials["users"]}

    @property
    def automation_app(self) -> dict[str, Any]:
        """The demo application holding every role, ``Bulwark.Control`` included."""
        return self.applications[DEMO_AUTOMATION_APP]

    @property
    def ca_file(self) -> str | None:
        """The local CA's certificate when the server serves HTTPS."""
        path = self.data_dir / "tls" / "ca.pem"
        return str(path) if self.url.startswith("https") and path.exists() else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """An SSL context trusting the server's local CA (None over plain HTTP)."""
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None

    # -- calling it ----------------------------------------------------------------------------

    def token(self, app: str = DEMO_AUTOMATION_APP) -> str:
        """A bearer token of the demo application ``app`` from the server's token endpoint (reused while valid)."""
        cached = self._tokens.get(app)
        if cached and cached.expires_at > time.monotonic() + 60:
            return cached.value
        credentials = self.applications[app]
        response = httpx.post(
            self.token_endpoint,
            data={
                "grant_type": "client_credentials",
                "client_id": credentials["client_id"],
                "client_secret": credentials["client_secret"],
                "scope": SCOPE,
            },
            verify=self.ssl_context() or True,
            timeout=30,
        )
        response.raise_for_status()
        body = response.json()
        self._tokens[app] = _Token(body["access_token"], time.monotonic() + float(body["expires_in"]))
        return str(body["access_token"])

    def client(self, app: str = DEMO_AUTOMATION_APP, **options: Any) -> BulwarkClient:
        """An SDK client signed in (client credentials) as the demo application ``app``."""
        credentials = self.applications[app]
        options.setdefault("verify", self.ssl_context() or True)
        return BulwarkClient(
            self.url,
            authority=self.url,
            tenant_id=self.tenant_id,
            client_id=credentials["client_id"],
            client_secret=credentials["client_secret"],
            **options,
        )

    @property
    def control(self) -> Control:
        """The control API's calls as methods."""
        return Control(self)
