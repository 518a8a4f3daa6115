"""`settings()` is built once per environment: reused while QMCP_* is unchanged, rebuilt when it changes."""

from __future__ import annotations

import pydantic
import pytest

from qmcp.config import SettingsError, settings


def test_settings_are_reused_until_the_environment_changes(monkeypatch):
    monkeypatch.setenv("QMCP_LOG_LEVEL", "INFO")
    first = settings()
    assert settings() is first  # not rebuilt per call (a server asks several times per request)
    monkeypatch.setenv("QMCP_LOG_LEVEL", "DEBUG")
    changed = settings()
    assert changed is not first and changed.log_level == "DEBUG"
    monkeypatch.setenv("qmcp_port", "4444")  # pydantic-settings reads names in any case
    assert settings().port == 4444
    monkeypatch.delenv("qmcp_port")
    monkeypatch.setenv("XDG_DATA_HOME", "/elsewhere")  # the default data_dir is made of it
    assert str(settings().data_dir) == "/elsewhere/qmcp"


def test_shared_settings_cannot_be_changed_in_place():
    with pytest.raises(pydantic.ValidationError):
        settings().port = 1  # type: ignore[misc]


def test_a_refused_setting_is_named_without_its_value(monkeypatch):
    monkeypatch.setenv("QMCP_DB_POOL_SIZE", "many")
    monkeypatch.setenv("QMCP_HEARTBEAT_SECONDS", "-3")
    with pytest.raises(SettingsError) as refused:
        settings()
    assert str(refused.value).splitlines() == [
        "QMCP_DB_POOL_SIZE: Input should be a valid integer, unable to parse string as an integer; "
        "fix it or unset it",
        "QMCP_HEARTBEAT_SECONDS: Input should be greater than 0; fix it or unset it",
    ]
    assert "many" not in str(refused.value)  # a value may be a secret
