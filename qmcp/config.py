"""Process settings from `QMCP_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DATABASE_URL", "DEFAULT_MODEL", "Settings", "settings"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./agent.db"
DEFAULT_MODEL = "local:smollm2"


class Settings(BaseSettings):
    """Read fresh on each call to `settings()`, so tests and subprocesses can change the environment."""

    model_config = SettingsConfigDict(env_prefix="QMCP_", extra="ignore", protected_namespaces=())

    database_url: str = DEFAULT_DATABASE_URL
    model_override: str | None = None
    default_model: str = DEFAULT_MODEL
    log_level: str = "WARNING"
    log_format: str = "console"
    heartbeat_seconds: float = Field(default=1.0, gt=0, le=300)
    """How often a running execution's owner renews its lease (and sees cancel requests)."""
    lease_seconds: float = Field(default=10.0, gt=0, le=3600)
    """How long a lease lasts without a heartbeat before another process may take the execution over."""


def settings() -> Settings:
    return Settings()
