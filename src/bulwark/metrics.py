"""Prometheus metrics, with prometheus-client: what the service does, in numbers an operator can alert on.

With several worker processes each one writes its values to files in prometheus-client's
multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``, which ``bulwark serve`` sets to
``<data dir>/metrics`` and empties at start), and a scrape answered by any worker adds up all of
them. Without that directory the values live in this process only.

Every label has a bounded set of values (operation ids, status codes, action types, grant types,
error codes): nothing a caller sends becomes a label value, so no caller can grow the series count.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own setting
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Latency buckets from a cached token check (sub-millisecond) to a long poll (25 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
GRANT_TYPES = frozenset({"client_credentials", "password"})


def multiprocess_directory() -> Path | None:
    """The directory worker processes share their values through, when several workers serve."""
    value = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    return Path(value) if value else None


def prepare_multiprocess_directory(path: Path) -> None:
    """Create ``path`` empty (values of earlier runs would otherwise be added in) and use it from now on.

    Call before any worker process starts: prometheus-client reads the variable when it is imported.
    """
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_DIR_VARIABLE] = str(path)


class Metrics:
    """The service's metrics. One per app, or one per process when values are shared across processes."""

    _shared: Metrics | None = None

    def __init__(self) -> None:
        self._directory = multiprocess_directory()
        # Across processes, values live in the shared files and no registry holds them; in one process,
        # each instance has its own registry, so that several apps (tests) do not add into each other.
        self._registry = None if self._directory else CollectorRegistry(auto_describe=True)
        registry = self._registry
        self.requests = Counter(
            "bulwark_http_requests",
            "HTTP requests answered, by operation and status code.",
            ["operation", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "bulwark_http_request_duration_seconds",
            "Time from request to the end of the response, by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.actions_created = Counter(
            "bulwark_machine_actions_created", "Machine actions created, by type.", ["type"], registry=registry
        )
        self.actions_finished = Counter(
            "bulwark_machine_actions_finished",
            "Machine actions that reached a final status, by type and status.",
            ["type", "status"],
            registry=registry,
        )
        self.rate_limit_refusals = Counter(
            "bulwark_rate_limit_refusals", "Calls refused by the rate limiter, by operation.", ["operation"], registry=registry
        )
        self.tokens_issued = Counter(
            "bulwark_tokens_issued",
            "Access tokens issued by the token endpoint, by grant type.",
            ["grant_type"],
            registry=registry,
        )
        self.token_failures = Counter(
            "bulwark_token_failures",
            "Token requests refused, by grant type and OAuth error code.",
            ["grant_type", "error"],
            registry=registry,
        )
        self.sensors_connected = Gauge(
            "bulwark_sensors_connected",
            "Sensors waiting in a long poll for their next action right now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.sweeper_runs = Counter(
            "bulwark_sweeper_runs", "Sweeps of overdue actions, by outcome (ok, failed).", ["outcome"], registry=registry
        )

    @classmethod
    def for_process(cls) -> Metrics:
        """The metrics of this app: shared by every app in the process when values go to shared files."""
        if multiprocess_directory() is None:
            return cls()
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    @staticmethod
    def grant_label(grant_type: str | None) -> str:
        """A grant type as a label: the ones Bulwark knows, anything else as ``other``."""
        return grant_type if grant_type in GRANT_TYPES else "other"

    def exposition(self) -> bytes:
        """The text exposition of every metric: this process's, or every worker's added up."""
        if self._registry is not None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=str(self._directory))
        return generate_latest(registry)
