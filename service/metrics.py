"""Prometheus metrics, kept in our own registry and served at ``/metrics``.

A private CollectorRegistry (not the global default) means the app factory can
run many times in one process (tests) without "duplicated timeseries" errors,
and only what we define here is exported.

Ledger counts come from the ledger's write listener
(``ledger.add_write_listener``): the ledger calls it after every batch it
writes, whichever path wrote it, with the session, the new entries' kinds
and the number of postings. The ledger itself imports no metrics library.

Each write is recorded as "n rows of this kind, written in this
(sub)transaction" in ``session.info``. A savepoint that rolls back drops what
was written inside it; the commit of the outermost transaction turns what is
left into counter increments; the end of an outermost transaction that did
not commit drops everything. So only committed rows are counted, and each once.

Several processes (gunicorn workers). With ``PROMETHEUS_MULTIPROC_DIR`` in
the environment when prometheus_client is first imported, prometheus_client
keeps every metric value in a file of that directory, one per process and
metric type (its multiprocess mode), and ``/metrics`` answers with the sum
over every file there: the live workers' and the dead ones' (a counter never
goes down because gunicorn replaced a worker). ``service/gunicorn_conf.py``
sets the variable in the master and prepares the directory. Without it,
values live in this process and ``/metrics`` serves the private registry. The
choice is prometheus_client's, made once at its import (``values.ValueClass``);
``/metrics`` follows it, not the variable as it is later, so the two cannot
disagree. In multiprocess mode every metric any library of the process
creates is written there too (the private registry still holds ours, and is
what tests read); only counters and histograms are defined here, which need
no ``multiprocess_mode`` (a gauge would).
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter as Tally

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest, start_http_server, values
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

import ledger
from ledger.models import JournalEntry, Posting

log = logging.getLogger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _multiprocess_dir() -> str | None:
    """The directory this process's metric values are written to, or None
    when they live in this process (prometheus_client decided at its import)."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    path = os.environ.get(MULTIPROCESS_ENV) or os.environ.get(MULTIPROCESS_ENV.lower())
    if not path or not os.path.isdir(path):
        # prometheus_client would fail on its first metric with a bare FileNotFoundError.
        raise RuntimeError(
            f"{MULTIPROCESS_ENV}={path!r} is not a directory: prometheus_client writes every "
            "process's metrics there. Create it (service/gunicorn_conf.py does so for "
            "gunicorn), or unset the variable for a process that serves no /metrics"
        )
    return path


MULTIPROCESS_DIR = _multiprocess_dir()

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

# The scheduler's jobs (service/scheduler.py): runs by outcome (ok, failed;
# a run skipped because another scheduler holds the lease is not counted)
# and how long the runs took. Served by the scheduler process itself
# (CL_SCHEDULER_METRICS_PORT), or, in multiprocess mode with a shared
# PROMETHEUS_MULTIPROC_DIR, by the web's /metrics too.
job_runs_total = Counter(
    "scheduler_job_runs", "Scheduler job runs, by job and outcome.", ["job", "outcome"],
    registry=registry,
)
job_duration_seconds = Histogram(
    "scheduler_job_duration_seconds", "Time scheduler job runs took, by job.", ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
    registry=registry,
)

_PENDING_KEY = "channel_ledger.metrics.pending_counts"
UNMATCHED_ENDPOINT = "<unmatched>"


def count_error(code: str) -> None:
    errors_total.labels(code=code).inc()


def instrument_session_factory(session_factory: sessionmaker[Session]) -> None:
    """Count committed entries and postings of every session this factory makes."""
    if getattr(session_factory, "_channel_ledger_metrics", False):
        return
    session_factory._channel_ledger_metrics = True
    ledger.add_write_listener(_record_write)
    event.listen(session_factory, "after_soft_rollback", _drop_rolled_back)
    event.listen(session_factory, "after_commit", _count_committed)
    event.listen(session_factory, "after_transaction_end", _drop_uncommitted)


def _record(session: Session, table_name: str, kind: str | None, rows: int) -> None:
    # Tag with the innermost transaction, so a savepoint rollback can drop it.
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING_KEY, []).append((transaction, table_name, kind, rows))


def _record_write(session: Session, entry_kinds: list[str], posting_count: int) -> None:
    if posting_count:
        _record(session, Posting.__tablename__, None, posting_count)
    for kind, count in Tally(entry_kinds).items():
        _record(session, JournalEntry.__tablename__, kind, count)


def _drop_rolled_back(session: Session, previous_transaction) -> None:
    pending = session.info.get(_PENDING_KEY)
    if pending:
        session.info[_PENDING_KEY] = [
            record for record in pending if not _within(record[0], previous_transaction)
        ]


def _within(transaction, ancestor) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def _count_committed(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint was released; wait for the real commit
        return
    for _transaction, table_name, kind, rows in session.info.pop(_PENDING_KEY, ()):
        if table_name == Posting.__tablename__:
            ledger_postings_total.inc(rows)
        else:
            ledger_entries_total.labels(kind=kind).inc(rows)


def _drop_uncommitted(session: Session, transaction) -> None:
    if transaction.parent is None:  # outermost ended without after_commit taking the list
        session.info.pop(_PENDING_KEY, None)


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

    if MULTIPROCESS_DIR is None and os.environ.get(MULTIPROCESS_ENV):
        log.warning("%s is set, but prometheus_client was imported before it was: /metrics "
                    "shows this process's counts only", MULTIPROCESS_ENV)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(exposition(), content_type=CONTENT_TYPE_LATEST)


def serve_exposition(port: int, host: str = "0.0.0.0"):
    """Serve this process's metrics (every process's, in multiprocess mode)
    at ``http://host:port/metrics`` from a thread, with prometheus_client's
    own server: for the scheduler, which has no web server. Returns the
    server (``shutdown()`` stops it)."""
    served = registry
    if MULTIPROCESS_DIR is not None:  # the files are read again at each scrape
        served = CollectorRegistry()
        MultiProcessCollector(served, path=MULTIPROCESS_DIR)
    server, _thread = start_http_server(port, host, registry=served)
    return server


def exposition() -> bytes:
    """The Prometheus text of every process's metrics in multiprocess mode
    (read from the directory now: a fresh registry per scrape, so nothing is
    cached or counted twice), else of this process's registry."""
    if MULTIPROCESS_DIR is None:
        return generate_latest(registry)
    scrape = CollectorRegistry()
    MultiProcessCollector(scrape, path=MULTIPROCESS_DIR)
    return generate_latest(scrape)
