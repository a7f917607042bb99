"""The channel API's edge: who is calling (API key → ``Caller``) and how a
mutating call runs (one transaction, replayed under its ``Idempotency-Key``).

Every channel blueprint is a :class:`ChannelBlueprint`: each of its requests
is authenticated before the view runs, and its operations are documented as
needing a key. A view that writes is wrapped in
:func:`mutation`, placed between ``@blp.route`` and ``@blp.response`` so it
sees the final serialised response: it opens the transaction, runs the view
(argument parsing and the use case), saves the answer for the key and
commits; a failure anywhere rolls everything back, answer included.
"""
from __future__ import annotations

import functools
from copy import deepcopy

from flask import Response, g, request
from flask_smorest import Blueprint
from flask_smorest.utils import deepupdate
from sqlalchemy.exc import IntegrityError

from channel_api import AccessDenied, access, idempotency, is_buyer_of
from channel_api.access import Caller
from channel_api.keys import authenticate
from service.request_db import db_session, request_transaction


IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
SECURITY = [{"ApiKey": []}]
SECURITY_SCHEME = {
    "type": "http", "scheme": "bearer", "bearerFormat": "key_<id>.<secret>",
    "description": "An API key issued to one party (`channel-ledger create-api-key`).",
}
IDEMPOTENCY_PARAMETER = {
    "in": "header", "name": IDEMPOTENCY_HEADER, "required": False,
    "schema": {"type": "string", "maxLength": idempotency.MAX_KEY_LENGTH},
    "description": "Retrying with the same key and body replays the first answer; "
                   "the same key with another body is refused (409).",
}


class ChannelBlueprint(Blueprint):
    """A flask-smorest blueprint whose every request needs an API key."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.before_request(_authenticate)

    def route(self, rule, **options):
        register = super().route(rule, **options)

        def decorator(func):
            _add_doc(func, {"security": SECURITY})
            return register(func)

        return decorator

    def arguments(self, schema, *args, **kwargs):
        # Given a schema class, webargs builds an instance on every request
        # (deep-copying its fields, and then its nested schemas'): a
        # measurable share of a small call's CPU. marshmallow schemas keep no
        # per-load state, so one instance, built here once, serves every request.
        if isinstance(schema, type):
            schema = schema()
        return super().arguments(schema, *args, **kwargs)


def _authenticate() -> None:
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    # The read begins the request session's transaction; a writing view
    # continues it (``mutation``, ``request_db.request_transaction``) and a
    # read-only one reads on in it, so no rollback and new BEGIN here.
    g.caller = authenticate(db_session(), token)


def _add_doc(func, doc: dict) -> None:
    func._apidoc = deepcopy(getattr(func, "_apidoc", {}))
    func._apidoc["manual_doc"] = deepupdate(func._apidoc.get("manual_doc", {}), doc)


def caller() -> Caller:
    return g.caller


def require_party_visible(code: str) -> None:
    """A party is visible to itself, the brand's managers, and the managers
    of a seller it buys from."""
    who = g.caller
    if code == who.party_code or (who.is_brand and "manage" in who.scopes):
        return
    access.require_scope(who, "manage")
    if not is_buyer_of(db_session(), who.party_code, code):
        raise AccessDenied("this party is not one of your buyers", party=code)


def party_to_list(party: str | None) -> str | None:
    """Whose money records a listing shows: a party's key lists its own
    (the party it names, or none named); the brand's finance lists any
    party's, or every party's (None)."""
    who = g.caller
    if party is None and not who.is_brand:
        party = who.party_code
    if party is None or party != who.party_code:
        access.require_brand_finance(who)
    return party


def buyer_seen_by_caller(seller: str, buyer: str | None) -> str:
    """The buyer whose prices or money at ``seller`` the caller may see: its
    own (storefront scope), or, as the seller's manager (or the brand's), one
    of the seller's buyers."""
    who = g.caller
    if buyer is None or buyer == who.party_code:
        access.require_scope(who, "storefront")
        return who.party_code
    access.require_manager_of(who, seller)
    if not is_buyer_of(db_session(), seller, buyer):
        raise AccessDenied(f"{buyer} does not buy from {seller}", field="buyer")
    return buyer


def actor() -> str:
    """How the audit trail names the caller."""
    return f"api:{g.caller.key_id}"


def mutation(view):
    """Run a writing view in one transaction, idempotently when asked."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        session = db_session()
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            with request_transaction(session):
                return view(*args, **kwargs)
        key = idempotency.check_key(key)
        request_hash = idempotency.fingerprint(
            request.method, request.full_path, request.get_data(cache=True))
        try:
            with request_transaction(session):
                stored = idempotency.stored_answer(session, g.caller.api_key_pk, key, request_hash)
                if stored is not None:
                    return _replay(stored)
                response = view(*args, **kwargs)
                if isinstance(response, Response) and response.status_code < 500:
                    idempotency.save_answer(session, g.caller.api_key_pk, key, request_hash,
                                            response.status_code, response.get_data(as_text=True))
                return response
        except IntegrityError:
            # A concurrent call with the same key committed first: answer as it did.
            session.rollback()
            with session.begin():
                stored = idempotency.stored_answer(session, g.caller.api_key_pk, key, request_hash)
            if stored is None:
                raise
            return _replay(stored)

    _add_doc(wrapper, {"parameters": [IDEMPOTENCY_PARAMETER]})
    return wrapper


def _replay(stored: idempotency.StoredAnswer) -> Response:
    response = Response(stored.body, status=stored.status, mimetype="application/json")
    response.headers[REPLAY_HEADER] = "true"
    return response
