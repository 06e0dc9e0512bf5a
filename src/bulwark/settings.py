"""Bulwark's settings: one class, read from BULWARK_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting Bulwark has. Nothing else in the code reads the environment."""

    model_config = SettingsConfigDict(env_prefix="BULWARK_", extra="ignore")

    data_dir: Path = Field(default=Path(".bulwark"), description="Where the SQLite file, keys and certificates live.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in data_dir when unset.")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1)
    public_base_url: str | None = Field(
        default=None, description="Base URL clients use (for @odata.context and the token issuer)."
    )

    offboard_status_code: Literal[200, 201] = Field(
        default=200, description="200 as the API document says; 201 as the live service answers."
    )
    max_body_bytes: int = Field(default=64 * 1024, description="Larger request bodies are refused.")
    max_comment_length: int = Field(default=4000)

    # The provisional caller, used until tokens are required (see auth settings).
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
    redis_url: str | None = Field(default=None, description="Redis for cross-process wake-ups (optional).")
    demo_sensors: bool = Field(default=True, description="With --demo, run simulated sensors for the demo fleet.")

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

    @property
    def is_sqlite(self) -> bool:
        """Whether storage is SQLite (single host)."""
        return self.resolved_database_url().startswith("sqlite")
