"""HMAC-SHA256 signatures for HTTP messages (Stripe's webhook scheme).

A signature header reads ``t=<unix seconds>,v1=<hex>[,v1=<hex>...]`` where
each ``v1`` is ``HMAC-SHA256(secret, f"{t}.".encode() + body)``. Putting the
timestamp inside the MAC lets the receiver refuse replays of an old message;
allowing several ``v1`` values and several secrets lets either side rotate
its secret without a window where messages fail.

Pure functions, no vendor names: the sandbox and bank adapters use this for
their callbacks and API calls, and our own outgoing webhooks to storefronts
will too.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta, timezone
from typing import Sequence

from payments.gateway import CallbackRejected

__all__ = ["sign", "sign_all", "verify", "request_payload"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_DIGITS = re.compile(r"[0-9]{1,12}")       # ASCII only: int() would accept "١٢" or "1_0"
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    if not secret:
        raise ValueError("an empty secret signs nothing")
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The header value signing ``body`` at ``timestamp`` with one secret."""
    return sign_all([secret], timestamp, body)


def sign_all(secrets: Sequence[bytes], timestamp: int, body: bytes) -> str:
    """One ``v1`` per secret: while rotating, a sender signs with both the new
    and the old secret so receivers that know either keep accepting."""
    if timestamp < 0:
        raise ValueError("timestamp must be a non-negative unix time")
    if not secrets:
        raise ValueError("at least one secret is needed")
    return ",".join([f"t={timestamp}", *(f"v1={_mac(s, timestamp, body)}" for s in secrets)])


def request_payload(method: str, path: str, body: bytes) -> bytes:
    """What a signed *request* covers: method and path as well as the body,
    so a signed ``GET /payments/A`` (empty body) cannot be replayed as
    ``GET /payments/B``. Webhook bodies are signed as they are."""
    return f"{method.upper()} {path}\n".encode() + body


def _parse(header: str) -> tuple[int, list[str]]:
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise CallbackRejected("malformed", "signature header item without '='")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            if not _HEX_SHA256.fullmatch(value):
                raise CallbackRejected("malformed", "v1 is not a hex HMAC-SHA256")
            signatures.append(value)
        # other schemes (v0, a future v2) are ignored, as Stripe does
    if len(timestamps) != 1 or not _DIGITS.fullmatch(timestamps[0]):
        raise CallbackRejected("malformed", "signature header needs exactly one integer t")
    if not signatures:
        raise CallbackRejected("malformed", "signature header has no v1 signature")
    return int(timestamps[0]), signatures


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[bytes],
    now: datetime,
    tolerance_s: int = 300,
) -> int:
    """The signed timestamp if some ``v1`` matches some secret and ``t`` is
    within ``tolerance_s`` of ``now`` (either way: a clock ahead of ours is as
    suspect as a replay); otherwise ``CallbackRejected``.

    The signature is checked before the timestamp, so ``stale_timestamp`` only
    ever describes an authentic message (a replay or a skewed clock) and
    ``bad_signature`` everything forged.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if isinstance(secrets, (bytes, bytearray)):  # verify(h, b, SECRET, now): a classic slip
        raise TypeError("secrets is a sequence of secrets, not one secret")
    if not secrets or not all(secrets):
        raise ValueError("verify needs at least one non-empty secret")
    if not header:
        raise CallbackRejected("malformed", "signature header missing")
    timestamp, signatures = _parse(header)

    # Compare every pair, without stopping early, in constant time per pair.
    matched = False
    for secret in secrets:
        expected = _mac(secret, timestamp, body).encode()
        for candidate in signatures:
            matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise CallbackRejected("bad_signature", "no signature matches")

    # Integer microseconds: exact at the edge, no float rounding, no overflow.
    now_us = (now - _EPOCH) // _MICROSECOND
    if abs(now_us - timestamp * 1_000_000) > tolerance_s * 1_000_000:
        raise CallbackRejected("stale_timestamp", "signature timestamp outside tolerance", timestamp=timestamp)
    return timestamp
