"""Settings are read once from CL_* variables; a bad value names its variable."""
from __future__ import annotations

import dataclasses
import os

import pytest

from service.settings import Settings, SettingsError, ensure_database_dir, load_settings

GOOD_SECRET = "s" * 32


def test_defaults_when_nothing_is_set():
    settings = load_settings({})

    assert settings == Settings(
        database_url="sqlite:///var/channel-ledger.sqlite3",
        host="127.0.0.1",
        port=8000,
        log_level="INFO",
        log_format="json",
        timezone="Asia/Shanghai",
        scheduler_lock_ttl_seconds=60,
        pending_expiry_interval_seconds=60,
        check_interval_seconds=3600,
        auto_confirm_days=7,
        return_window_days=7,
        callback_apply="inline",
        sandbox_secret="sandbox-demo-secret-change-me",
        secret_key=None,
    )
    assert str(settings.tz) == "Asia/Shanghai"


def test_every_variable_is_read():
    settings = load_settings({
        "CL_DATABASE_URL": "postgresql+psycopg2://cl:pw@db:5432/ledger",
        "CL_HOST": "0.0.0.0",
        "CL_PORT": "9001",
        "CL_LOG_LEVEL": "debug",
        "CL_LOG_FORMAT": "TEXT",
        "CL_TIMEZONE": "UTC",
        "CL_SCHEDULER_LOCK_TTL_SECONDS": "90",
        "CL_PENDING_EXPIRY_INTERVAL_SECONDS": "15",
        "CL_CHECK_INTERVAL_SECONDS": "600",
        "CL_AUTO_CONFIRM_DAYS": "10",
        "CL_RETURN_WINDOW_DAYS": "0",
        "CL_SANDBOX_SECRET": "off",
        "CL_CALLBACK_APPLY": "Background",
        "CL_SECRET_KEY": GOOD_SECRET,
    })

    assert settings == Settings(
        database_url="postgresql+psycopg2://cl:pw@db:5432/ledger",
        host="0.0.0.0",
        port=9001,
        log_level="DEBUG",
        log_format="text",
        timezone="UTC",
        scheduler_lock_ttl_seconds=90,
        pending_expiry_interval_seconds=15,
        check_interval_seconds=600,
        auto_confirm_days=10,
        return_window_days=0,
        callback_apply="background",
        sandbox_secret=None,
        secret_key=GOOD_SECRET,
    )


def test_blank_values_mean_the_default():
    assert load_settings({"CL_PORT": "  ", "CL_TIMEZONE": ""}) == Settings()


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_settings({}).port = 1  # type: ignore[misc]


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("CL_PORT", "8123")
    assert load_settings().port == 8123


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CL_DATABASE_URL", "not a url", "not a database URL"),
        ("CL_DATABASE_URL", "mysql://u@h/db", "unsupported database 'mysql'"),
        ("CL_HOST", "my host", "not a host name"),
        ("CL_PORT", "eighty", "not a whole number"),
        ("CL_PORT", "-1", "not a whole number"),
        ("CL_PORT", "0", "must be between 1 and 65535"),
        ("CL_PORT", "65536", "must be between 1 and 65535"),
        ("CL_LOG_LEVEL", "LOUD", "not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("CL_LOG_FORMAT", "xml", "not one of json, text"),
        ("CL_TIMEZONE", "Mars/Olympus", "not an IANA timezone"),
        ("CL_TIMEZONE", "../../etc/passwd", "not an IANA timezone"),
        ("CL_SCHEDULER_LOCK_TTL_SECONDS", "2", "must be at least 3"),
        ("CL_PENDING_EXPIRY_INTERVAL_SECONDS", "0", "must be at least 1"),
        ("CL_CHECK_INTERVAL_SECONDS", "1.5", "not a whole number"),
        ("CL_AUTO_CONFIRM_DAYS", "0", "between 1 and 90"),
        ("CL_RETURN_WINDOW_DAYS", "400", "between 0 and 365"),
        ("CL_SANDBOX_SECRET", "short", "too short (5 characters)"),
        ("CL_CALLBACK_APPLY", "later", "not one of inline, background"),
        ("CL_SECRET_KEY", "short", "too short (5 characters)"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(variable, value, message):
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})

    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert message in str(caught.value)


def test_a_bad_secret_key_is_not_echoed():
    with pytest.raises(SettingsError) as caught:
        load_settings({"CL_SECRET_KEY": "hunter2-hunter2"})
    assert "hunter2" not in str(caught.value)


def test_ensure_database_dir_creates_the_sqlite_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    ensure_database_dir(load_settings({}).database_url)

    assert (tmp_path / "var").is_dir()
    assert not (tmp_path / "var" / "channel-ledger.sqlite3").exists()  # only the directory


def test_ensure_database_dir_leaves_other_databases_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    ensure_database_dir("postgresql://u@h/var/db")
    ensure_database_dir("sqlite://")

    assert os.listdir(tmp_path) == []
