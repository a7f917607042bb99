"""Whose merchant a gateway payment is collected in (issue 6, "the platform
never holds parties' money"): a seller paid as payee is paid in its *own*
name at the gateway, not in the platform's.

A party's account at a gateway (``split_instructions.register_gateway_account``)
can collect its sales only when it is a merchant there:

* WeChat Pay ``MERCHANT_ID``: the seller's ``sub_mchid``; the platform is
  its service provider (``payments.wechatpay``, service-provider mode). A
  ``PERSONAL_OPENID`` is a person, not a merchant: it may receive splits,
  never collect a payment;
* Alipay ``userId`` (2088...) *with* the ``app_auth_token`` the seller's
  authorisation of the platform's app gave (``authorize``): the trade is
  made in the seller's name under that token. A ``loginName``, or a
  ``userId`` without a token, only receives splits;
* sandbox ``account``.

A seller whose active account at the gateway cannot collect is paid like
any seller without one: by the platform's configured merchant, into custody.

Each payment records the merchant it is collected for
(``Payment.sub_merchant``, the payee account), and every request about it
names it again (``of_payment`` gives it with its credential): creation,
query, refunds, split instructions, finish, split returns and their
queries. A callback naming another merchant than the payment's is money
collected for the wrong payee (``gateway_payments``: suspense).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import utcnow
from payments.models import MerchantAuthorization, Payment

from .errors import InvalidInput

# The account kinds that are merchants able to collect a payment, per gateway.
PAYEE_KINDS: dict[str, tuple[str, ...]] = {
    "wechatpay": ("MERCHANT_ID",),
    "alipay": ("userId",),
    "sandbox": ("account",),
}
# Gateways where the platform needs the merchant's own authorisation to act for it.
AUTHORIZED: dict[str, str] = {"alipay": "app_auth_token"}
_TOKEN = re.compile(r"[A-Za-z0-9._-]{8,128}")


@dataclass(frozen=True)
class SubMerchant:
    """A merchant a payment is collected for, with what the gateway needs
    to act in its name (``auth``: Alipay's ``app_auth_token``; never in a
    repr)."""

    id: str
    auth: str | None = field(default=None, repr=False)

    def request(self) -> dict[str, Any]:
        """The ``sub_merchant``/``sub_merchant_auth`` fields of a request
        (or keyword arguments of a query) about its payments."""
        return {"sub_merchant": self.id, "sub_merchant_auth": self.auth}


def request_fields(sub: SubMerchant | None) -> dict[str, Any]:
    """``sub.request()``, or nothing for the adapter's own merchant (so that
    adapters that never collect for others are called as before)."""
    return {} if sub is None else sub.request()


def mask(token: str | None) -> str | None:
    """What may be shown of a token: its last four characters."""
    if not token:
        return None
    return "…" + token[-4:] if len(token) > 8 else "…"


def check_token(gateway: str, kind: str, token: Any) -> str | None:
    """The token to keep with an account being registered, or
    ``InvalidInput`` naming ``app_auth_token``."""
    if token is None:
        return None
    if gateway not in AUTHORIZED or kind not in PAYEE_KINDS.get(gateway, ()):
        raise InvalidInput("app_auth_token is only for an alipay userId account (the seller's "
                           "authorisation of the platform's app)", field="app_auth_token")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise InvalidInput("app_auth_token must be 8-128 letters, digits or . _ -",
                           field="app_auth_token")
    return token


def authorization(session: Session, gateway: str, merchant: str) -> str | None:
    """The token ``merchant`` authorised the platform with at ``gateway``."""
    return session.scalar(select(MerchantAuthorization.token).where(
        MerchantAuthorization.gateway == gateway, MerchantAuthorization.merchant == merchant))


def authorize(session: Session, gateway: str, merchant: str, token: str, *, actor: str,
              now: datetime | None = None) -> bool:
    """Keep ``merchant``'s authorisation at ``gateway`` (replacing an older
    one); whether it changed."""
    now = now or utcnow()
    row = session.scalars(select(MerchantAuthorization).where(
        MerchantAuthorization.gateway == gateway, MerchantAuthorization.merchant == merchant)
        .with_for_update()).one_or_none()
    if row is None:
        session.add(MerchantAuthorization(gateway=gateway, merchant=merchant, token=token,
                                          actor=actor[:80], created_at=now, updated_at=now))
    elif row.token != token:
        row.token, row.actor, row.updated_at = token, actor[:80], now
    else:
        return False
    session.flush()
    return True


def can_collect(session: Session, gateway: str, account: str, kind: str,
                authorized: bool | None = None) -> bool:
    """Whether an account at ``gateway`` is a merchant that can collect a
    payment in its own name (see the module docstring); ``authorized``:
    whether its authorisation is kept, when the caller knows already."""
    if kind not in PAYEE_KINDS.get(gateway, ()):
        return False
    if gateway not in AUTHORIZED:
        return True
    return authorized if authorized is not None else \
        authorization(session, gateway, account) is not None


def named(session: Session, gateway: str, merchant: str | None) -> SubMerchant | None:
    """The merchant a payment, a refund or money in suspense was collected
    for, with its credential (None: the adapter's own merchant)."""
    if merchant is None:
        return None
    auth = authorization(session, gateway, merchant) if gateway in AUTHORIZED else None
    return SubMerchant(merchant, auth)


def of_payment(session: Session, payment: Payment) -> SubMerchant | None:
    return named(session, payment.gateway, payment.sub_merchant)
