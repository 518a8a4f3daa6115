"""Process settings from `QMCP_*` environment variables (pydantic-settings)."""

from __future__ import annotations

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


def settings() -> Settings:
    return Settings()
