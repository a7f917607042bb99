"""Structured logs, each record tagged with the request (or job run) it belongs to.

The id lives in a contextvar rather than in ``flask.g`` so that code with no
Flask in sight (the ledger, the scheduler's jobs) logs it too: a filter on the
handler copies it into every record, whatever logger emitted it.
"""
from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

from flask import Flask, Response, g, request
from pythonjsonlogger.json import JsonFormatter

from service.settings import Settings

REQUEST_ID_HEADER = "X-Request-Id"
NO_REQUEST_ID = "-"
# What we accept from a caller: short, printable, no spaces or quotes, so it can
# neither forge log lines nor blow up a log index. Anything else is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")

request_id_var: ContextVar[str] = ContextVar("request_id", default=NO_REQUEST_ID)
log = logging.getLogger("service.http")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = ("levelname", "name", "message", "request_id")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Send every logger's records to one handler on the root logger.

    Replaces handlers a previous call installed (the app factory may run more
    than once in a process, e.g. in tests) but leaves foreign ones alone.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                list(JSON_FIELDS),
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp=True,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler._channel_ledger = True  # marks the handler as ours for the next call
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_channel_ledger", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level_number)
    return handler


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(candidate: str | None) -> str:
    """The caller's id when it is sane, otherwise a fresh one."""
    if candidate and _SANE_REQUEST_ID.fullmatch(candidate):
        return candidate
    return new_request_id()


@contextmanager
def bound_request_id(request_id: str) -> Iterator[str]:
    """Tag the records logged inside the block, e.g. one scheduler job run."""
    token = request_id_var.set(request_id)
    try:
        yield request_id
    finally:
        request_id_var.reset(token)


def init_request_ids(app: Flask) -> None:
    """Give every request an id, echo it in the response, and log one line per request."""

    @app.before_request
    def _bind_request_id() -> None:
        request_id = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
        g.request_id_token = request_id_var.set(request_id)
        g.request_started = time.perf_counter()

    @app.after_request
    def _echo_request_id(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = request_id_var.get()
        started = g.get("request_started")
        log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": None if started is None
                else round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return response

    @app.teardown_request
    def _unbind_request_id(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            request_id_var.reset(token)
