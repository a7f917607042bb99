"""Errors at the edge: every failure becomes ``application/problem+json`` (RFC 9457).

The body always has ``type``, ``title``, ``status``, ``detail`` and a stable
machine ``code`` clients can branch on; validation failures add ``errors``,
one ``{field, location, message}`` per problem, so a client can point at the
input that was wrong. Ledger errors keep their own code and HTTP status hint.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import marshmallow as ma
from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from ledger import DomainError
from service.metrics import count_error

PROBLEM_MIMETYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:channel-ledger:problem:"
VALIDATION_ERROR = "validation_error"
# Codes for plain HTTP failures; anything else is derived from the status name.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    415: "unsupported_media_type",
    422: VALIDATION_ERROR,
    500: "internal_error",
    503: "service_unavailable",
}


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> Response:
    body = {"type": PROBLEM_TYPE_PREFIX + code, "title": title, "status": status,
            "detail": detail, "code": code}
    body.update({key: value for key, value in extra.items() if value is not None})
    count_error(code)
    return Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)


def domain_problem(error: DomainError) -> Response:
    details = dict(error.details) or None
    errors = None
    if details and isinstance(details.get("field"), str):
        # A domain package names the argument it refused (a cursor, a limit).
        errors = [{"field": details["field"], "location": None, "message": error.message}]
    return problem(
        error.http_status, error.code, error.code.replace("_", " ").capitalize(),
        error.message, errors=errors, details=details,
    )


def http_problem(error: HTTPException) -> Response:
    status = error.code or 500
    code = HTTP_CODES.get(status, (error.name or "error").lower().replace(" ", "_"))
    data = getattr(error, "data", None) or {}
    messages = data.get("errors") or data.get("messages")
    if status == 422 and messages:
        response = http_problem_from_messages(messages)
    elif status >= 500:
        # Flask has already logged the original exception; say nothing of it here.
        response = problem(status, code, error.name, "The server failed to handle the request.")
    else:
        response = problem(status, code, error.name, error.description or error.name)
    for name, value in error.get_headers():  # e.g. Allow on a 405
        if name.lower() != "content-type":
            response.headers[name] = value
    for name, value in (data.get("headers") or {}).items():
        response.headers[name] = value
    return response


def flatten_validation_messages(messages: Any, path: tuple[str, ...] = ()) -> Iterator[dict]:
    """Turn webargs/marshmallow ``{"query": {"limit": ["..."]}}`` into flat entries.

    The first key of webargs' messages is the location (query, json, ...);
    nested and list fields become dotted paths (``postings.0.amount``).
    """
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            yield from flatten_validation_messages(value, (*path, str(key)))
        return
    if isinstance(messages, (list, tuple)) and all(isinstance(m, str) for m in messages):
        location, *field = path if path else ("body",)
        field_name = ".".join(field) if field else "_schema"
        for message in messages:
            yield {"field": field_name, "location": location, "message": message}
        return
    if isinstance(messages, (list, tuple)):
        for index, value in enumerate(messages):
            yield from flatten_validation_messages(value, (*path, str(index)))
        return
    location, *field = path if path else ("body",)
    yield {"field": ".".join(field) or "_schema", "location": location, "message": str(messages)}


def validation_problem(error: ma.ValidationError, location: str = "query") -> Response:
    """A ValidationError raised by a view itself (a check needing more than one argument)."""
    messages = error.messages if isinstance(error.messages, Mapping) else {"_schema": error.messages}
    return http_problem_from_messages({location: messages})


def http_problem_from_messages(messages: Mapping) -> Response:
    errors = list(flatten_validation_messages(messages))
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return problem(422, VALIDATION_ERROR, "Invalid request", f"Invalid input: {fields}.", errors=errors)


def init_problem_handlers(app: Flask) -> None:
    app.register_error_handler(DomainError, domain_problem)
    app.register_error_handler(ma.ValidationError, validation_problem)
    app.register_error_handler(HTTPException, http_problem)
