"""Process settings, read once from ``CL_*`` environment variables.

Everything the process needs to know about its surroundings is here, parsed
and validated at start-up: a bad value stops the process with a message that
names the variable, instead of failing later in the middle of a request.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///var/channel-ledger.sqlite3"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "text")
SUPPORTED_DATABASES = ("sqlite", "postgresql")
SECRET_KEY_LENGTH_MIN = 32
# The lease is renewed every TTL/3 seconds, so anything shorter than 3 s would
# make the renewal interval zero.
LOCK_TTL_SECONDS_MIN = 3


class SettingsError(ValueError):
    """A ``CL_*`` variable holds a value the service cannot use."""

    def __init__(self, variable: str, message: str):
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_format: str = "json"
    timezone: str = "Asia/Shanghai"
    scheduler_lock_ttl_seconds: int = 60
    pending_expiry_interval_seconds: int = 60
    check_interval_seconds: int = 3600
    # A shipped order counts as received this many days after shipment; a
    # delivered order is completed (no more returns) this many days after.
    auto_confirm_days: int = 7
    return_window_days: int = 7
    # Apply verified gateway callbacks in the request, or on a thread after
    # answering the gateway (faster answers; the retry job covers a crash).
    callback_apply: str = "inline"
    # The sandbox gateway's shared secret; None ("off"): no sandbox gateway.
    sandbox_secret: str | None = "sandbox-demo-secret-change-me"
    # Payouts at or above this (minor units) wait for the brand's finance.
    payout_approval_minor: int = 5_000_000
    # The custody account payouts leave from, as payout files name it (the
    # debtor); the defaults are the demo's.
    custody_account_name: str = "Channel Ledger custody (demo)"
    custody_account_number: str = "6222000000000000001"
    custody_bank_code: str = "102100099996"
    # None means "not configured": the web app then uses a random per-process
    # key, which is fine for a trial but logs every user out on restart.
    secret_key: str | None = None

    @property
    def tz(self) -> ZoneInfo:
        """The brand's business timezone (business dates, job schedules)."""
        return ZoneInfo(self.timezone)

    @property
    def log_level_number(self) -> int:
        return logging.getLevelName(self.log_level)


def load_settings(env: Mapping[str, str] = os.environ) -> Settings:
    """Read and validate every ``CL_*`` variable; raise SettingsError on the first bad one."""
    defaults = Settings()
    return Settings(
        database_url=_database_url(env, defaults.database_url),
        host=_host(env, defaults.host),
        port=_int(env, "CL_PORT", defaults.port, minimum=1, maximum=65535),
        log_level=_choice(env, "CL_LOG_LEVEL", defaults.log_level, LOG_LEVELS, upper=True),
        log_format=_choice(env, "CL_LOG_FORMAT", defaults.log_format, LOG_FORMATS),
        timezone=_timezone(env, defaults.timezone),
        scheduler_lock_ttl_seconds=_int(
            env, "CL_SCHEDULER_LOCK_TTL_SECONDS", defaults.scheduler_lock_ttl_seconds,
            minimum=LOCK_TTL_SECONDS_MIN,
        ),
        pending_expiry_interval_seconds=_int(
            env, "CL_PENDING_EXPIRY_INTERVAL_SECONDS",
            defaults.pending_expiry_interval_seconds, minimum=1,
        ),
        check_interval_seconds=_int(
            env, "CL_CHECK_INTERVAL_SECONDS", defaults.check_interval_seconds, minimum=1
        ),
        auto_confirm_days=_int(env, "CL_AUTO_CONFIRM_DAYS", defaults.auto_confirm_days,
                               minimum=1, maximum=90),
        return_window_days=_int(env, "CL_RETURN_WINDOW_DAYS", defaults.return_window_days,
                                minimum=0, maximum=365),
        callback_apply=_choice(env, "CL_CALLBACK_APPLY", defaults.callback_apply,
                               ("inline", "background")),
        sandbox_secret=_sandbox_secret(env, defaults.sandbox_secret),
        payout_approval_minor=_int(env, "CL_PAYOUT_APPROVAL_MINOR",
                                   defaults.payout_approval_minor, minimum=1),
        custody_account_name=_text(env, "CL_CUSTODY_ACCOUNT_NAME",
                                   defaults.custody_account_name, r".{1,70}"),
        custody_account_number=_text(env, "CL_CUSTODY_ACCOUNT_NUMBER",
                                     defaults.custody_account_number, r"[0-9]{8,34}"),
        custody_bank_code=_text(env, "CL_CUSTODY_BANK_CODE", defaults.custody_bank_code,
                                r"[0-9A-Za-z]{1,20}"),
        secret_key=_secret_key(env),
    )


def ensure_database_dir(database_url: str) -> None:
    """Create the directory of a file-backed SQLite database.

    Kept out of load_settings so that reading settings has no side effects;
    whoever is about to open the database (app factory, CLI) calls this first.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    if url.database.startswith("file:"):  # URI filenames: leave them to the user
        return
    Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def _raw(env: Mapping[str, str], name: str) -> str | None:
    """The stripped value, or None when unset or blank (blank means "use the default")."""
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _database_url(env: Mapping[str, str], default: str) -> str:
    value = _raw(env, "CL_DATABASE_URL") or default
    try:
        url = make_url(value)
    except ArgumentError:
        raise SettingsError(
            "CL_DATABASE_URL",
            "not a database URL; expected e.g. postgresql://user:pass@host/db "
            "or sqlite:///path/to/file.sqlite3",
        ) from None
    backend = url.get_backend_name()
    if backend not in SUPPORTED_DATABASES:
        raise SettingsError(
            "CL_DATABASE_URL",
            f"unsupported database {backend!r}; use one of {', '.join(SUPPORTED_DATABASES)}",
        )
    return value


def _host(env: Mapping[str, str], default: str) -> str:
    value = _raw(env, "CL_HOST") or default
    if not re.fullmatch(r"[A-Za-z0-9.:\-\[\]]+", value):
        raise SettingsError("CL_HOST", f"{value!r} is not a host name or IP address")
    return value


def _int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int | None = None
) -> int:
    value = _raw(env, name)
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]+", value):
        raise SettingsError(name, f"{value!r} is not a whole number")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise SettingsError(name, f"{number} is out of range; must be {bounds}")
    return number


def _choice(
    env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...], *, upper=False
) -> str:
    value = _raw(env, name)
    if value is None:
        return default
    value = value.upper() if upper else value.lower()
    if value not in choices:
        raise SettingsError(name, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _timezone(env: Mapping[str, str], default: str) -> str:
    value = _raw(env, "CL_TIMEZONE") or default
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            "CL_TIMEZONE", f"{value!r} is not an IANA timezone name such as Asia/Shanghai"
        ) from None
    return value


def _text(env: Mapping[str, str], name: str, default: str, pattern: str) -> str:
    value = _raw(env, name)
    if value is None:
        return default
    if not re.fullmatch(pattern, value):
        raise SettingsError(name, f"{value!r} does not match {pattern}")
    return value


def _sandbox_secret(env: Mapping[str, str], default: str | None) -> str | None:
    value = _raw(env, "CL_SANDBOX_SECRET")
    if value is None:
        return default
    if value.lower() == "off":
        return None
    if len(value) < 16:
        raise SettingsError("CL_SANDBOX_SECRET",
                            f"too short ({len(value)} characters); use at least 16, or off")
    return value


def _secret_key(env: Mapping[str, str]) -> str | None:
    value = _raw(env, "CL_SECRET_KEY")
    if value is not None and len(value) < SECRET_KEY_LENGTH_MIN:
        # Do not echo the value: it is a secret even when it is a bad one.
        raise SettingsError(
            "CL_SECRET_KEY",
            f"too short ({len(value)} characters); use at least {SECRET_KEY_LENGTH_MIN} "
            "random characters, e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(48))'`",
        )
    return value
