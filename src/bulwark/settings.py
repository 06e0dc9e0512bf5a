"""Bulwark's settings: one class, read from BULWARK_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    public_base_url: str | None = Field(
        default=None, description="Base URL clients use (for @odata.context and the token issuer)."
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
    offboarding_package_valid_days: float = Field(default=7, gt=0, description="Devices refuse older offboarding packages.")
    sweep_interval_seconds: float = Field(default=60, gt=0, description="How often each server process sweeps (0 < s).")
    sensor_poll_max_seconds: float = Field(default=25, gt=0, description="Longest a sensor's long poll is held open.")
    notifier: Literal["auto", "memory", "postgres", "redis"] = Field(
        default="auto", description="Wake-ups for waiting sensors; auto: redis if redis_url, postgres on PostgreSQL, else memory."
    )
    demo_sensors: bool = Field(default=True, description="With --demo, run simulated sensors for the demo fleet.")
    auth_enabled: bool = Field(
        default=True, description="Require a valid bearer token on every API call. Turn off only for local development."
    )
    external_issuers: list[ExternalIssuerSetting] = Field(
        default_factory=list,
        description='Trusted OpenID Connect providers, e.g. [{"issuer_url": "...", "audience": "...", "tenant_id": "..."}].',
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
    rate_limit_fail_mode: Literal["open", "closed"] = Field(
        default="open", description="When Redis is unreachable: let calls through (open) or answer 503 (closed)."
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
    def is_sqlite(self) -> bool:
        """Whether storage is SQLite (single host)."""
        return self.resolved_database_url().startswith("sqlite")
