"""gunicorn settings of the web server: metrics counted over every worker.

    gunicorn -c python:service.gunicorn_conf --bind 0.0.0.0:8000 --workers 4 service.wsgi:app

Only the Prometheus bookkeeping lives here; bind, workers and the rest stay
on the command line (which wins over a config module anyway).

Each gunicorn worker is a process with counters of its own. In
prometheus_client's multiprocess mode each process writes its metric values
to files in one directory, ``PROMETHEUS_MULTIPROC_DIR``, and ``/metrics``
adds up every file there (``service/metrics.py``), whichever worker answers.

- The variable must be in the environment before prometheus_client is first
  imported in a worker. gunicorn loads this module in the master before it
  loads the app: workers import the app after the fork and inherit the
  master's ``os.environ``; with ``--preload`` the master imports it itself,
  after this module. So setting it here, at import, is early enough.
- Unset: this master gets a directory of its own,
  ``<temp dir>/channel-ledger-metrics-<master pid>-<random>`` (the temp dir is
  ``$TMPDIR`` or ``/tmp``), removed when the master exits. Nothing to
  configure, no two servers sharing one, and a ``USR2`` upgrade's new master
  (started with the original environment) makes its own.
- Set: that directory is used; it is created if missing. Give each running
  master its own: each empties it at start.
- At start (``on_starting``, before the first worker) the metric files a
  previous run left there (prometheus_client's ``counter_<pid>.db``,
  ``histogram_<pid>.db``, ``gauge_<mode>_<pid>.db``, …) are deleted, or that
  run's counts would be added to this one's. Nothing else is touched.
- While the master lives the files stay: a worker that dies or is replaced
  (a crash, a timeout, ``max_requests``, a ``HUP`` reload) keeps its counts
  in the sum, so counters never go down. ``child_exit`` tells
  prometheus_client a worker is gone (it drops that process's live gauges).

Names without a leading underscore are gunicorn settings (gunicorn reads
this module's globals): keep helpers private.
"""
from __future__ import annotations

import os as _os
import re as _re
import shutil as _shutil
import tempfile as _tempfile

_ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client's files: <type>_<pid>.db, gauges gauge_<mode>_<pid>.db;
# anything else (a database someone keeps there) is left alone.
_METRIC_FILE = _re.compile(r"(?:counter|histogram|summary|gauge_[a-z]+)_[0-9]+\.db")


def _prepare_environment() -> str | None:
    """Point the variable at an absolute directory, creating it if missing;
    return the directory when this module chose (and so owns) it."""
    path = _os.environ.get(_ENV, "").strip()
    owned = None
    if not path:
        path = owned = _tempfile.mkdtemp(prefix=f"channel-ledger-metrics-{_os.getpid()}-")
    path = _os.path.abspath(path)
    _os.makedirs(path, exist_ok=True)
    _os.environ[_ENV] = path
    return owned


_owned_dir = _prepare_environment()


def on_starting(server) -> None:
    path = _os.environ[_ENV]  # read again: gunicorn's --env may have replaced it
    _os.makedirs(path, exist_ok=True)
    stale = [entry.path for entry in _os.scandir(path)
             if _METRIC_FILE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)]
    for name in stale:
        _os.remove(name)
    # With --preload one of them is the master's own, empty, made as it loaded the app.
    server.log.info("metrics of every worker in %s (%d earlier metric files removed)",
                    path, len(stale))


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _os.environ[_ENV])


def on_exit(server) -> None:
    if _owned_dir is not None and _os.environ.get(_ENV) == _owned_dir:
        _shutil.rmtree(_owned_dir, ignore_errors=True)
