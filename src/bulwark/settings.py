"""Bulwark's settings: one class, read from BULWARK_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ExternalIssuerSetting(BaseModel):
    """A trusted OpenID Connect provider: its issuer URL, the audience its tokens carry, and optionally the tenant."""

    issuer_url: str
    audience: str | list[str]
    tenant_id: str | None = None
    ca_file: str | None = None
    allow_http: bool = False


class Settings(BaseSettings):
    """Every setting Bulwark has. Nothing else in the code reads the environment."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_", extra="ignore")

    data_dir: Path = Field(default=Path(".bulwark"), description="Where the SQLite file, keys and certificates live.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in data_dir when unset.")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1)
    threadpool_size: int = Field(
        default=4, ge=1, description="Threads per process for blocking work (database calls); more only queue for the GIL."
    )
    list_threads: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Threads that build list pages of machines. Unset: one on SQLite (a page is CPU work in this process, "
            "and more threads only share the GIL), the threadpool's size on PostgreSQL (a page waits on the network)."
        ),
    )
    public_base_url: str | None = Field(
        default=None, description="Base URL clients use (for @odata.context and the token issuer)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host names clients may address (the Host header); others are refused. Unset: the listening "
            'address, the public base URL\'s host and the loopback names. ["*"] allows any.'
        ),
    )

    offboard_status_code: Literal[200, 201] = Field(
        default=200, description="200 as the API document says; 201 as the live service answers."
    )
    max_body_bytes: int = Field(default=64 * 1024, description="Larger request bodies are refused.")
    max_comment_length: int = Field(default=4000)

    # The demo tenant, and the caller used only when authentication is explicitly turned off.
    default_tenant_id: str = "6f1c4d1e-2b43-4c7a-9d55-0b6a3c1e8f10"
    default_requestor: str = "admin@contoso.com"

    # Sensors and the action lifecycle.
    action_pickup_timeout_seconds: float = Field(
        default=3 * 24 * 3600, gt=0, description="A Pending action not claimed by its sensor in this time ends TimeOut."
    )
    action_in_progress_timeout_seconds: float = Field(
        default=3600, gt=0, description="An InProgress action not finished in this time ends TimeOut."
    )
    inactive_after_offboard_days: float = Field(default=7, ge=0, description="Offboarded machines turn Inactive after this.")
    onboarding_package_valid_days: float = Field(
        default=30, gt=0, description="Devices cannot enrol with older onboarding packages."
    )
    offboarding_package_valid_days: float = Field(default=7, gt=0, description="Devices refuse older offboarding packages.")
    sweep_interval_seconds: float = Field(default=60, gt=0, description="How often each server process sweeps (0 < s).")
    statistics_interval_seconds: float = Field(
        default=3600, gt=0, description="How often each server process checks whether the query planner's statistics are stale."
    )
    sensor_poll_max_seconds: float = Field(default=25, gt=0, description="Longest a sensor's long poll is held open.")
    notifier: Literal["auto", "memory", "postgres", "redis"] = Field(
        default="auto", description="Wake-ups for waiting sensors; auto: redis if redis_url, postgres on PostgreSQL, else memory."
    )
    demo_sensors: bool = Field(default=True, description="With --demo, run simulated sensors for the demo fleet.")
    demo_machine_count: int = Field(default=300, ge=1, le=100_000, description="Machines of the demo fleet --demo seeds.")
    demo_action_seconds: float = Field(
        default=2.0, ge=0, le=600, description="How long a simulated demo sensor takes over an action."
    )
    control_api: bool | None = Field(
        default=None,
        description="Serve the control API under /_bulwark (test servers only): on with --demo unless false; off otherwise.",
    )
    control_request_log_size: int = Field(
        default=1000, ge=10, le=100_000, description="How many recent API calls the control API's request log keeps."
    )
    auth_enabled: bool = Field(
        default=True, description="Require a valid bearer token on every API call. Turn off only for local development."
    )
    external_issuers: list[ExternalIssuerSetting] = Field(
        default_factory=list,
        description='Trusted OpenID Connect providers, e.g. [{"issuer_url": "...", "audience": "...", "tenant_id": "..."}].',
    )
    signing_key_file: Path | None = Field(
        default=None,
        description="A PEM file with the RSA key that signs tokens, kept outside the database; unset: keys in the database.",
    )
    tls: bool = Field(default=False, description="Serve HTTPS with a certificate from a local CA in data_dir/tls.")
    token_leeway_seconds: int = Field(default=60, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat.")
    auth_cache_seconds: float = Field(
        default=5.0, ge=0, description="How long a resolved caller (enabled, roles, device groups) is reused."
    )

    redis_url: str | None = Field(default=None, description="Redis shared by every process: rate-limit budgets and wake-ups.")
    rate_limit_enabled: bool = Field(default=True, description="Turn limits off only for local load tests.")
    rate_limit: str = Field(default="100/minute;1500/hour", description="Windows every call must fit in.")
    rate_limit_overrides: dict[str, str] = Field(
        default_factory=dict, description='Per operation id, e.g. {"offboardMachine": "10/minute"} or "off".'
    )
    unauthenticated_rate_limit: str = Field(
        default="60/minute;1000/hour",
        description="Refused unauthenticated requests allowed per source address; beyond them 429, and nothing is audited.",
    )
    rate_limit_fail_mode: Literal["open", "closed"] = Field(
        default="open", description="When Redis is unreachable: let calls through (open) or answer 503 (closed)."
    )

    # The token endpoint (unauthenticated): budgets per source address, per client id and per user
    # name; failed sign-ins lock a user name (and a source) for a while; Argon2id runs in a pool of
    # its own. Budgets are counted whatever rate_limit_enabled says, off only with "off".
    token_rate_limit_per_source: str = Field(
        default="60/minute;600/hour", description="Token requests per source address (any client, any user)."
    )
    token_rate_limit_per_client: str = Field(default="60/minute;1000/hour", description="Token requests per client id.")
    token_rate_limit_per_user: str = Field(default="20/minute;200/hour", description="Password-grant requests per user name.")
    sign_in_failures_per_user: str = Field(
        default="10/15minutes",
        description="Failed sign-ins of one user name before it is locked until the oldest failure leaves the window.",
    )
    sign_in_failures_per_source: str = Field(
        default="30/15minutes", description="Failed sign-ins from one source address (any user) before it is locked out."
    )
    hashing_workers: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2),
        ge=1,
        description="Threads that verify secrets and passwords (Argon2id, itself 4 lanes); default half the CPUs.",
    )
    hashing_queue: int = Field(
        default=8, ge=0, description="Verifications that may wait for a hashing thread; beyond them 503 at once."
    )
    client_secret_cache_seconds: float = Field(
        default=300, ge=0, description="How long a verified client secret is remembered (0: verify every time)."
    )
    signin_rate_limit_per_user: str = Field(
        default="5/minute;30/hour", description="Sign-in attempts on the authorization endpoint per user name."
    )
    signin_rate_limit_per_source: str = Field(
        default="30/minute;300/hour", description="Sign-in attempts on the authorization endpoint per client address."
    )

    rate_limit_key_prefix: str = Field(default="bulwark:ratelimit", description="Namespace of the budgets in Redis.")

    metrics_enabled: bool = Field(default=True, description="Serve Prometheus metrics at /metrics.")
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, /metrics needs it as a bearer token from every reader; unset, only loopback clients may read.",
    )

    log_json: bool = Field(default=False, description="One JSON object per log line.")
    log_level: str = "INFO"

    @field_validator("public_base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    def resolved_database_url(self) -> str:
        """The database URL in use: the configured one, or a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'bulwark.db').resolve()}"

    def issuer_base_url(self) -> str:
        """The base of token issuers (``{base}/{tenant}/v2.0``): the public base URL, or scheme, host and port."""
        if self.public_base_url:
            return self.public_base_url
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def effective_allowed_hosts(self) -> frozenset[str]:
        """The host names (lowercase, no port, IPv6 without brackets) a request's Host may name."""
        if self.allowed_hosts:
            return frozenset(h.strip().lower().strip("[]") for h in self.allowed_hosts if h.strip())
        hosts = {"localhost", "127.0.0.1", "::1"}
        if self.host not in ("0.0.0.0", "::", ""):
            hosts.add(self.host.lower().strip("[]"))
        if self.public_base_url:
            public = urlsplit(self.public_base_url).hostname
            if public:
                hosts.add(public.lower())
        return frozenset(hosts)

    def multi_process_problem(self) -> str | None:
        """Why this configuration cannot run several workers correctly, or None if it can."""
        if self.workers > 1 and self.rate_limit_enabled and not self.redis_url:
            return (
                f"{self.workers} workers would each count rate limits alone, multiplying every budget by "
                f"{self.workers}. Set BULWARK_REDIS_URL so that all workers share one budget, run one worker, "
                "or turn limits off with BULWARK_RATE_LIMIT_ENABLED=false."
            )
        return None

    @property
    def control_api_enabled(self) -> bool:
        """Whether the control API is served (only when explicitly on, or on by --demo)."""
        return bool(self.control_api)

    @property
    def is_sqlite(self) -> bool:
        """Whether storage is SQLite (single host)."""
        return self.resolved_database_url().startswith("sqlite")
