"""API keys of the channel API: issued to one party with scopes, shown once,
stored as a SHA-256 of the secret, revocable.

A token reads ``<key id>.<secret>`` (``key_0190….Zx3…``): the key id finds the
row, the secret is compared in constant time. The secret is 256 random bits,
so a fast hash suffices (a slow password hash protects guessable secrets and
would cost every request milliseconds).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ledger import as_utc, new_uuid7, prepared, utcnow

from . import audit
from .access import SCOPES, Caller
from .errors import AuthenticationFailed, InvalidInput, NotFound
from .models import ApiKey, Party
from .parties import party_row as _party

KEY_PREFIX = "key_"


@dataclass(frozen=True)
class ApiKeyView:
    key_id: str
    party_code: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKeyView
    token: str  # shown once; only its hash is kept


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _view(row: ApiKey, party_code: str) -> ApiKeyView:
    return ApiKeyView(row.public_id, party_code, row.name, tuple(row.scopes),
                      as_utc(row.created_at),
                      as_utc(row.revoked_at) if row.revoked_at else None)


def _scopes(scopes) -> list[str]:
    if (not isinstance(scopes, (list, tuple, set, frozenset)) or not scopes
            or any(s not in SCOPES for s in scopes)):
        raise InvalidInput(f"scopes must be a non-empty list of {', '.join(SCOPES)}",
                           field="scopes")
    return sorted(set(scopes))


def create_api_key(session: Session, *, party: str, scopes, name: str = "",
                   actor: str) -> IssuedKey:
    row_party = _party(session, party)
    clean_scopes = _scopes(scopes)
    if {"manage", "finance"} & set(clean_scopes) and row_party.role == "store":
        raise InvalidInput("a store's key cannot have the manage or finance scope",
                           field="scopes")
    if not isinstance(name, str) or len(name) > 200:
        raise InvalidInput("name must be text of at most 200 characters", field="name")
    secret = secrets.token_urlsafe(32)
    row = ApiKey(public_id=KEY_PREFIX + new_uuid7().hex, party_id=row_party.id, name=name.strip(),
                 secret_sha256=_digest(secret), scopes=clean_scopes, created_at=utcnow())
    session.add(row)
    session.flush()
    audit.record(session, actor=actor, action="api_key.create", subject_type="party",
                 subject=row_party.code, details={"key_id": row.public_id, "scopes": clean_scopes})
    return IssuedKey(_view(row, row_party.code), f"{row.public_id}.{secret}")


def revoke_api_key(session: Session, key_id: str, *, actor: str) -> ApiKeyView:
    row, party_code = _key(session, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
        audit.record(session, actor=actor, action="api_key.revoke", subject_type="party",
                     subject=party_code, details={"key_id": row.public_id})
    return _view(row, party_code)


def _key(session: Session, key_id: str) -> tuple[ApiKey, str]:
    found = session.execute(
        select(ApiKey, Party.code).join(Party, Party.id == ApiKey.party_id)
        .where(ApiKey.public_id == key_id)).one_or_none()
    if found is None:
        raise NotFound(f"no API key {key_id!r}", field="key_id")
    return found[0], found[1]


def get_api_key(session: Session, key_id: str) -> ApiKeyView:
    return _view(*_key(session, key_id))


def list_api_keys(session: Session, *, party: str | None = None) -> list[ApiKeyView]:
    query = select(ApiKey, Party.code).join(Party, Party.id == ApiKey.party_id)
    if party is not None:
        query = query.where(ApiKey.party_id == _party(session, party).id)
    return [_view(row, code) for row, code in session.execute(query.order_by(ApiKey.id))]


# Every authenticated request runs this: one statement reading the key and its
# party together, built once at import and run as Core on the session's
# connection (as the hot inserts of outbox.py and payments/inbox.py are): the
# ORM's statement building and entity loading cost more CPU than the lookup.
# (Core skips the ORM's autoflush; authentication runs first in a request,
# before anything is pending, so nothing is lost.)
_KEY_TABLE = ApiKey.__table__
_PARTY_TABLE = Party.__table__
_AUTHENTICATE = (
    select(_KEY_TABLE.c.id.label("key_pk"), _KEY_TABLE.c.public_id.label("key_id"),
           _KEY_TABLE.c.secret_sha256, _KEY_TABLE.c.scopes, _KEY_TABLE.c.revoked_at,
           _PARTY_TABLE.c.id.label("party_id"), _PARTY_TABLE.c.code.label("party_code"),
           _PARTY_TABLE.c.role, _PARTY_TABLE.c.status)
    .join_from(_KEY_TABLE, _PARTY_TABLE, _PARTY_TABLE.c.id == _KEY_TABLE.c.party_id)
    .where(_KEY_TABLE.c.public_id == bindparam("key_id"))
)


def authenticate(session: Session, token: str | None) -> Caller:
    """The caller behind a bearer token; one failure message for every cause,
    so a probe cannot tell a wrong secret from an unknown key."""
    failure = AuthenticationFailed("missing or invalid API key")
    if not token or "." not in token:
        raise failure
    key_id, secret = token.split(".", 1)
    found = next(iter(prepared.rows(session.connection(), "cl_authenticate", _AUTHENTICATE,
                                    {"key_id": key_id})), None)
    if found is None:
        _digest(secret)  # same work either way
        raise failure
    if (not hmac.compare_digest(found.secret_sha256, _digest(secret))
            or found.revoked_at is not None):
        raise failure
    if found.status != "active":
        raise AuthenticationFailed("the key's party is frozen", party=found.party_code)
    return Caller(key_id=found.key_id, api_key_pk=found.key_pk, party_id=found.party_id,
                  party_code=found.party_code, role=found.role, scopes=frozenset(found.scopes))
