"""Process settings, read once from ``CL_*`` environment variables.

Everything the process needs to know about its surroundings is here, parsed
and validated at start-up: a bad value stops the process with a message that
names the variable, instead of failing later in the middle of a request.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
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
class WeChatPaySettings:
    """WeChat Pay API v3 (``CL_WECHATPAY_*``): one direct merchant, or, with
    ``sub_mchid``, a service provider (``mchid``/``appid`` are then its own)
    acting for its sub-merchants: the sellers paid as payee in their own
    ``sub_mchid`` (their registered ``MERCHANT_ID``), and this one for
    everything else. Keys are read from their files and parsed at start-up;
    ``platform_certificates`` are (serial, PEM) pairs, the serial read from
    each certificate."""

    mchid: str
    appid: str
    merchant_serial_no: str
    merchant_private_key_pem: bytes = field(repr=False)
    apiv3_key: str = field(repr=False)
    platform_certificates: tuple[tuple[str, bytes], ...] = field(repr=False)
    base_url: str = "https://api.mch.weixin.qq.com"
    profit_sharing: bool = False
    sub_mchid: str | None = None
    sub_appid: str | None = None


@dataclass(frozen=True)
class AlipaySettings:
    """Alipay openapi, public-key mode with RSA2 (``CL_ALIPAY_*``); both keys
    as PEM, whatever form their files had."""

    app_id: str
    app_private_key_pem: bytes = field(repr=False)
    alipay_public_key_pem: bytes = field(repr=False)
    gateway_url: str = "https://openapi.alipay.com/gateway.do"
    seller_id: str | None = None
    royalty_freeze: bool = False


@dataclass(frozen=True)
class BankSettings:
    """The online-banking (B2B) gateway, ``payments.bank`` (``CL_BANK_*``)."""

    mer_id: str
    secret: bytes = field(repr=False)
    base_url: str
    previous_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    statement_encoding: str = "utf-8"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_format: str = "json"
    timezone: str = "Asia/Shanghai"
    scheduler_lock_ttl_seconds: int = 60
    # Where the scheduler process serves its /metrics (0: it does not).
    scheduler_metrics_port: int = 0
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
    # Real gateways, each enabled when all of its CL_* variables are set
    # (None: not configured); calls to them give up after this many seconds.
    gateway_timeout_seconds: int = 10
    wechatpay: WeChatPaySettings | None = None
    alipay: AlipaySettings | None = None
    bank: BankSettings | None = None

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
        scheduler_metrics_port=_int(
            env, "CL_SCHEDULER_METRICS_PORT", defaults.scheduler_metrics_port, minimum=0,
            maximum=65535,
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
        gateway_timeout_seconds=_int(env, "CL_GATEWAY_TIMEOUT_SECONDS",
                                     defaults.gateway_timeout_seconds, minimum=1, maximum=120),
        wechatpay=_wechatpay(env),
        alipay=_alipay(env),
        bank=_bank(env),
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


# -- payment gateways ----------------------------------------------------------------------------
#
# Each real gateway is enabled by setting all of its required variables; the
# optional ones have defaults. Setting some of a gateway's variables but not
# all of its required ones is a mistake worth stopping for (a typo would
# otherwise silently leave the gateway off), and so is a key that does not
# parse: both are found here, at start-up.

WECHATPAY_REQUIRED = (
    "CL_WECHATPAY_MCHID", "CL_WECHATPAY_APPID", "CL_WECHATPAY_MERCHANT_SERIAL",
    "CL_WECHATPAY_MERCHANT_KEY_FILE", "CL_WECHATPAY_APIV3_KEY", "CL_WECHATPAY_PLATFORM_CERT_FILES",
)
WECHATPAY_OPTIONAL = ("CL_WECHATPAY_BASE_URL", "CL_WECHATPAY_PROFIT_SHARING", "CL_WECHATPAY_SUB_MCHID",
                      "CL_WECHATPAY_SUB_APPID")
ALIPAY_REQUIRED = ("CL_ALIPAY_APP_ID", "CL_ALIPAY_APP_PRIVATE_KEY_FILE", "CL_ALIPAY_PUBLIC_KEY_FILE")
ALIPAY_OPTIONAL = ("CL_ALIPAY_GATEWAY_URL", "CL_ALIPAY_SELLER_ID", "CL_ALIPAY_ROYALTY_FREEZE")
BANK_REQUIRED = ("CL_BANK_MER_ID", "CL_BANK_SECRET", "CL_BANK_BASE_URL")
BANK_OPTIONAL = ("CL_BANK_PREVIOUS_SECRETS", "CL_BANK_STATEMENT_ENCODING")

KEY_FILE_MAX_BYTES = 1024 * 1024
RSA_KEY_BITS_MIN = 2048
GATEWAY_SECRET_LENGTH_MIN = 16
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def _wechatpay(env: Mapping[str, str]) -> WeChatPaySettings | None:
    if not _configured(env, "WeChat Pay", WECHATPAY_REQUIRED, WECHATPAY_OPTIONAL):
        return None
    apiv3_key = _raw(env, "CL_WECHATPAY_APIV3_KEY")
    if len(apiv3_key.encode()) != 32:
        raise SettingsError("CL_WECHATPAY_APIV3_KEY",
                            f"must be the 32-character APIv3 key set in the merchant platform, "
                            f"not {len(apiv3_key.encode())} bytes")
    sub_mchid, sub_appid = _raw(env, "CL_WECHATPAY_SUB_MCHID"), _raw(env, "CL_WECHATPAY_SUB_APPID")
    if sub_appid is not None and sub_mchid is None:
        # Without a sub-merchant the payment would be the service provider's
        # own: a sub app alone is a typo or a half-done set-up.
        raise SettingsError("CL_WECHATPAY_SUB_APPID", "set only with CL_WECHATPAY_SUB_MCHID (service-provider mode)")
    return WeChatPaySettings(
        mchid=_required_text(env, "CL_WECHATPAY_MCHID", r"[0-9]{1,32}"),
        appid=_required_text(env, "CL_WECHATPAY_APPID", r"[A-Za-z0-9_]{1,32}"),
        merchant_serial_no=_required_text(env, "CL_WECHATPAY_MERCHANT_SERIAL",
                                          r"[0-9A-Fa-f]{1,40}").upper(),
        merchant_private_key_pem=_rsa_private_key(env, "CL_WECHATPAY_MERCHANT_KEY_FILE"),
        apiv3_key=apiv3_key,
        platform_certificates=_platform_certificates(env, "CL_WECHATPAY_PLATFORM_CERT_FILES"),
        base_url=_gateway_url(env, "CL_WECHATPAY_BASE_URL", WeChatPaySettings.base_url),
        profit_sharing=_on_off(env, "CL_WECHATPAY_PROFIT_SHARING", False),
        sub_mchid=(_required_text(env, "CL_WECHATPAY_SUB_MCHID", r"[0-9]{1,32}")
                   if sub_mchid is not None else None),
        sub_appid=(_required_text(env, "CL_WECHATPAY_SUB_APPID", r"[A-Za-z0-9_]{1,32}")
                   if sub_appid is not None else None),
    )


def _alipay(env: Mapping[str, str]) -> AlipaySettings | None:
    if not _configured(env, "Alipay", ALIPAY_REQUIRED, ALIPAY_OPTIONAL):
        return None
    seller_id = _raw(env, "CL_ALIPAY_SELLER_ID")
    return AlipaySettings(
        app_id=_required_text(env, "CL_ALIPAY_APP_ID", r"[0-9]{1,32}"),
        app_private_key_pem=_rsa_private_key(env, "CL_ALIPAY_APP_PRIVATE_KEY_FILE"),
        alipay_public_key_pem=_rsa_public_key(env, "CL_ALIPAY_PUBLIC_KEY_FILE"),
        gateway_url=_gateway_url(env, "CL_ALIPAY_GATEWAY_URL", AlipaySettings.gateway_url),
        seller_id=(_required_text(env, "CL_ALIPAY_SELLER_ID", r"[0-9]{1,32}")
                   if seller_id is not None else None),
        royalty_freeze=_on_off(env, "CL_ALIPAY_ROYALTY_FREEZE", False),
    )


def _bank(env: Mapping[str, str]) -> BankSettings | None:
    if not _configured(env, "the online bank", BANK_REQUIRED, BANK_OPTIONAL):
        return None
    previous = _raw(env, "CL_BANK_PREVIOUS_SECRETS")
    encoding = _raw(env, "CL_BANK_STATEMENT_ENCODING") or BankSettings.statement_encoding
    try:
        encoding = codecs.lookup(encoding).name
    except LookupError:
        raise SettingsError("CL_BANK_STATEMENT_ENCODING",
                            f"{encoding!r} is not a text encoding Python knows (e.g. utf-8, gbk)"
                            ) from None
    return BankSettings(
        mer_id=_required_text(env, "CL_BANK_MER_ID", r"[0-9A-Za-z]{1,32}"),
        secret=_gateway_secret("CL_BANK_SECRET", _raw(env, "CL_BANK_SECRET")),
        base_url=_gateway_url(env, "CL_BANK_BASE_URL", None),
        previous_secrets=tuple(_gateway_secret("CL_BANK_PREVIOUS_SECRETS", s.strip())
                               for s in (previous or "").split(",") if s.strip()),
        statement_encoding=encoding,
    )


def _configured(env: Mapping[str, str], label: str, required: tuple[str, ...],
                optional: tuple[str, ...]) -> bool:
    """False when none of a gateway's variables is set; True when all of
    the required ones are; otherwise SettingsError naming what is missing."""
    present = [name for name in (*required, *optional) if _raw(env, name) is not None]
    if not present:
        return False
    missing = [name for name in required if _raw(env, name) is None]
    if missing:
        raise SettingsError(
            missing[0],
            f"not set, but {label} is partly configured ({', '.join(present)} set); "
            f"missing: {', '.join(missing)}. Set all of {', '.join(required)} to enable it, "
            f"or none of its variables to leave it off",
        )
    return True


def _required_text(env: Mapping[str, str], name: str, pattern: str) -> str:
    value = _raw(env, name)
    if value is None or not re.fullmatch(pattern, value):
        raise SettingsError(name, f"{value!r} does not match {pattern}")
    return value


def _gateway_secret(name: str, value: str | None) -> bytes:
    # Never echoed: a secret is a secret even when it is a bad one.
    if value is None or len(value) < GATEWAY_SECRET_LENGTH_MIN:
        raise SettingsError(name, f"too short ({len(value or '')} characters); use at least "
                                  f"{GATEWAY_SECRET_LENGTH_MIN}")
    return value.encode()


def _gateway_url(env: Mapping[str, str], name: str, default: str | None) -> str:
    """An https URL (plain http only to this machine, for a local stand-in),
    with no query or fragment: the adapters append their paths to it."""
    value = _raw(env, name) or default
    try:
        parts = urlsplit(value or "")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if (parts is None or not parts.hostname or parts.query or parts.fragment
            or not (parts.scheme == "https"
                    or (parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS))):
        raise SettingsError(name, f"{value!r} is not an https:// URL without query "
                                  "(http:// only to localhost)")
    return value.rstrip("/")


def _on_off(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _raw(env, name)
    if value is None:
        return default
    if value.lower() in ("on", "true", "yes", "1"):
        return True
    if value.lower() in ("off", "false", "no", "0"):
        return False
    raise SettingsError(name, f"{value!r} is not on or off")


def _read_key_file(name: str, path_text: str) -> bytes:
    path = Path(path_text).expanduser()
    try:
        with path.open("rb") as handle:
            data = handle.read(KEY_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise SettingsError(name, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > KEY_FILE_MAX_BYTES:
        raise SettingsError(name, f"{path} is larger than {KEY_FILE_MAX_BYTES} bytes: not a key")
    if not data.strip():
        raise SettingsError(name, f"{path} is empty")
    return data


def _unarmored(data: bytes) -> bytes:
    """A key given as bare base64 (how Alipay's key tool writes them): its DER."""
    return base64.b64decode(b"".join(data.split()), validate=True)


def _rsa_private_key(env: Mapping[str, str], name: str) -> bytes:
    """The RSA private key in the file ``name`` points to, as PKCS#8 PEM.
    PEM (PKCS#1 or PKCS#8) or bare base64 DER; not encrypted."""
    path = _raw(env, name)
    data = _read_key_file(name, path)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(_unarmored(data), password=None)
    except TypeError:
        raise SettingsError(name, f"{path}: the key is encrypted; give it unencrypted "
                                  "(protect the file instead)") from None
    except (ValueError, UnsupportedAlgorithm, binascii.Error):
        raise SettingsError(name, f"{path}: not a PEM (or base64) private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SettingsError(name, f"{path}: not an RSA private key")
    if key.key_size < RSA_KEY_BITS_MIN:
        raise SettingsError(name, f"{path}: a {key.key_size}-bit key; at least "
                                  f"{RSA_KEY_BITS_MIN} bits are needed")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _rsa_public_key(env: Mapping[str, str], name: str) -> bytes:
    """The RSA public key in the file ``name`` points to, as PEM
    (SubjectPublicKeyInfo): PEM, or bare base64 as Alipay's console shows it."""
    path = _raw(env, name)
    data = _read_key_file(name, path)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(_unarmored(data))
    except (ValueError, UnsupportedAlgorithm, binascii.Error):
        raise SettingsError(name, f"{path}: not a PEM (or base64) public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SettingsError(name, f"{path}: not an RSA public key")
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _platform_certificates(env: Mapping[str, str], name: str) -> tuple[tuple[str, bytes], ...]:
    """WeChat Pay's platform certificates: comma-separated PEM files, each
    holding one or more certificates; each is filed under its own serial
    (uppercase hex), which is how WeChat Pay names it in ``Wechatpay-Serial``."""
    found: dict[str, bytes] = {}
    for path in (p.strip() for p in _raw(env, name).split(",")):
        if not path:
            continue
        data = _read_key_file(name, path)
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise SettingsError(name, f"{path}: not a PEM certificate") from None
        for certificate in certificates:
            try:
                public_key = certificate.public_key()
            except (ValueError, UnsupportedAlgorithm):
                public_key = None
            serial = f"{certificate.serial_number:X}"
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise SettingsError(name, f"{path}: certificate {serial} has no RSA key")
            pem = certificate.public_bytes(serialization.Encoding.PEM)
            if found.setdefault(serial, pem) != pem:
                raise SettingsError(name, f"two different certificates have the serial {serial}")
    if not found:
        raise SettingsError(name, "no certificate file given")
    return tuple(sorted(found.items()))
