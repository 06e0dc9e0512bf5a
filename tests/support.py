"""Test helpers: start a real Bulwark server process and wait for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

import bulwark


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ours, and ``extra``, running the same code as the tests."""
    env = {**os.environ, **(extra or {})}
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Child processes run the same code as the tests, even where another checkout is installed.
    source = str(Path(bulwark.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH", "")) if p)
    return env


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(
    *args: str, env: dict[str, str] | None = None, port: int | None = None, timeout: float = 30.0, log: Path | None = None
) -> Iterator[str]:
    """Run ``bulwark serve ARGS`` as a real process; yield its base URL; stop it on exit."""
    port = port or free_port()
    full_env = child_env(env)
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulwark.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    base = f"{'https' if '--tls' in args else 'http'}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                detail = log.read_text() if log else ""
                raise RuntimeError(f"server exited early with {proc.returncode}: {detail[-2000:]}")
            try:
                # Only readiness is probed here; tests check the certificate themselves.
                if httpx.get(f"{base}/healthz", timeout=1, verify=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy in time")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]
