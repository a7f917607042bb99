"""Prometheus metrics, kept in our own registry and served at ``/metrics``.

A private CollectorRegistry (not the global default) means the app factory can
run many times in one process (tests) without "duplicated timeseries" errors,
and only what we define here is exported.

Ledger counts are taken from the *session*, not from the ledger: the ledger
must not import prometheus, and wrapping each ledger call would miss writes
made by use cases we have not written yet. A session event sees every entry
and posting whoever writes it:

- ``after_flush`` remembers the JournalEntry / Posting objects just inserted
  (``session.new`` still lists them at that point);
- ``after_commit`` of the outermost transaction counts those that are still
  persistent. Objects inserted inside a savepoint that was rolled back have
  been expunged by then, so they are not counted; a rolled-back outer
  transaction drops the list. Only committed rows are counted, exactly once.

This relies on the ledger inserting through ORM objects (``session.add``); if
it ever switches to bulk Core inserts, the counts must move to a
``do_orm_execute`` hook.
"""
from __future__ import annotations

import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import JournalEntry, Posting

registry = CollectorRegistry()

http_request_duration_seconds = Histogram(
    "http_request_duration_seconds",
    "Time spent serving HTTP requests, by route template and status.",
    ["method", "endpoint", "status"],
    registry=registry,
)
# prometheus_client appends "_total" to counter names on exposition.
ledger_postings_total = Counter(
    "ledger_postings", "Postings committed to the ledger.", registry=registry
)
ledger_entries_total = Counter(
    "ledger_entries", "Journal entries committed to the ledger, by kind.", ["kind"],
    registry=registry,
)
errors_total = Counter(
    "errors", "Error responses, by stable problem code.", ["code"], registry=registry
)

_NEW_ROWS_KEY = "channel_ledger.metrics.new_rows"
UNMATCHED_ENDPOINT = "<unmatched>"


def count_error(code: str) -> None:
    errors_total.labels(code=code).inc()


def instrument_session_factory(session_factory: sessionmaker[Session]) -> None:
    """Count committed entries and postings of every session this factory makes."""
    if getattr(session_factory, "_channel_ledger_metrics", False):
        return
    session_factory._channel_ledger_metrics = True
    event.listen(session_factory, "after_flush", _remember_new_rows)
    event.listen(session_factory, "after_commit", _count_committed_rows)
    event.listen(session_factory, "after_soft_rollback", _forget_new_rows)


def _remember_new_rows(session: Session, _flush_context) -> None:
    new_rows = [obj for obj in session.new if isinstance(obj, (JournalEntry, Posting))]
    if new_rows:
        session.info.setdefault(_NEW_ROWS_KEY, []).extend(new_rows)


def _count_committed_rows(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint was released; wait for the real commit
        return
    for obj in session.info.pop(_NEW_ROWS_KEY, ()):
        if not inspect(obj).persistent:  # inserted in a savepoint that rolled back
            continue
        if isinstance(obj, Posting):
            ledger_postings_total.inc()
        else:
            kind = getattr(obj, "kind", None)
            ledger_entries_total.labels(kind=str(getattr(kind, "value", kind))).inc()


def _forget_new_rows(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_NEW_ROWS_KEY, None)


def init_http_metrics(app: Flask) -> None:
    """Time every request and serve the registry at ``/metrics``."""

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None:
            # The route template, not the path, keeps the label set bounded.
            rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ENDPOINT
            http_request_duration_seconds.labels(
                method=request.method, endpoint=rule, status=str(response.status_code)
            ).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
