"""``/metrics`` under gunicorn with several workers: prometheus_client's
multiprocess mode (``service/gunicorn_conf.py``, ``service/metrics.py``).

Each test starts a real gunicorn (2 sync workers, ``-c
python:service.gunicorn_conf``, ``service.wsgi:app``) on a free port against
a migrated SQLite file, sends requests from concurrent clients until both
workers have served some (proved by the per-process files in the metrics
directory, one per worker pid), and scrapes ``/metrics`` once: whichever
worker answers must report the sum over all of them. The server is always
stopped (the fixture's ``finally``).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from service.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKERS = 2
ROUTE = "/health"  # counted; readiness is polled on /metrics so it does not add to it
ROUTE_LABELS = {"endpoint": ROUTE, "method": "GET", "status": "200"}
TIMEOUT = 30


# --- helpers ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> set[int]:
    """Pids of ``pid``'s child processes (zombies included), from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _wait_for(predicate, what: str, server: "Gunicorn | None" = None, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}"
                                 + (f"\n--- gunicorn log ---\n{server.log_tail()}" if server else ""))
        time.sleep(0.05)


def _no_control_socket() -> list[str]:
    """gunicorn 24+ opens a control socket in ~/.gunicorn by default; tests need none."""
    from gunicorn.config import Config

    return ["--no-control-socket"] if "control_socket_disable" in Config().settings else []


class Gunicorn:
    """gunicorn on ``service.wsgi:app`` with the project's config module."""

    def __init__(self, database_url: str, workdir: Path, metrics_dir: Path | None):
        self.port = _free_port()
        self.log_path = workdir / "gunicorn.log"
        env = {k: v for k, v in os.environ.items() if k.upper() != ENV}
        env.update(CL_DATABASE_URL=database_url, CL_LOG_LEVEL="WARNING",
                   TMPDIR=str(workdir / "tmp"))
        (workdir / "tmp").mkdir(exist_ok=True)
        if metrics_dir is not None:
            env[ENV] = str(metrics_dir)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf",
                 "--workers", str(WORKERS), "--bind", f"127.0.0.1:{self.port}",
                 "--log-level", "info", *_no_control_socket(), "service.wsgi:app"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.pid = self.proc.pid

    def wait_ready(self) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                return self.get("/metrics")[0] == 200 and len(self.workers()) == WORKERS
            except OSError:
                return False

        _wait_for(up, "gunicorn to answer", self)

    def workers(self) -> set[int]:
        return _children(self.pid)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _get_many(server: Gunicorn, path: str, n: int, clients: int = 8) -> list[int]:
    """``n`` GETs from ``clients`` concurrent clients; their statuses."""
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda _: server.get(path)[0], range(n)))


def _route_count_by_pid(metrics_dir: Path) -> dict[int, float]:
    """Requests to ROUTE each worker recorded, read from its own histogram file."""
    counts = {}
    for path in metrics_dir.glob("histogram_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        counts[pid] = sum(
            sample.value
            for metric in MultiProcessCollector.merge([str(path)])
            for sample in metric.samples
            if sample.name == "http_request_duration_seconds_count" and sample.labels == ROUTE_LABELS
        )
    return counts


def _spread(server: Gunicorn, metrics_dir: Path) -> tuple[int, dict[int, float]]:
    """Requests to ROUTE, in bursts, until every worker has served some; how
    many were sent and each worker's count."""
    sent = 0

    def every_worker_served():
        nonlocal sent
        statuses = _get_many(server, ROUTE, 40)
        assert statuses == [200] * len(statuses), statuses
        sent += len(statuses)
        served = {pid: c for pid, c in _route_count_by_pid(metrics_dir).items() if c}
        return served if len(served) >= WORKERS else None

    served = _wait_for(every_worker_served, f"{WORKERS} workers to serve {ROUTE}", server)
    return sent, served


def _scrape(server: Gunicorn) -> dict[tuple[str, frozenset], float]:
    status, body = server.get("/metrics")
    assert status == 200, body
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _value(scrape: dict, name: str, **labels) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


def _plant(path: Path, metric: str, sample: str, labels: dict, value: float) -> None:
    """A metric file as prometheus_client writes it (what a process left)."""
    mmap = MmapedDict(str(path))
    mmap.write_value(mmap_key(metric, sample, list(labels), list(labels.values()), "planted"),
                     value, 0.0)
    mmap.close()


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('metrics-db') / 'ledger.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def start_server(sqlite_url, tmp_path):
    started: list[Gunicorn] = []

    def start(metrics_dir: Path | None) -> Gunicorn:
        server = Gunicorn(sqlite_url, tmp_path, metrics_dir)
        started.append(server)
        server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


# --- tests -----------------------------------------------------------------------------


def test_one_scrape_counts_the_requests_of_every_worker(start_server, tmp_path):
    metrics_dir = tmp_path / "metrics" / "not-yet-there"  # the config creates it
    server = start_server(metrics_dir)

    sent, served = _spread(server, metrics_dir)
    statuses = _get_many(server, "/no-such-page", 30)
    scrape = _scrape(server)

    assert set(served) <= server.workers()
    assert sum(served.values()) == sent  # the files hold every request, split over the workers
    assert max(served.values()) < sent   # so one worker's registry would not have them all
    assert _value(scrape, "http_request_duration_seconds_count", **ROUTE_LABELS) == sent
    assert _value(scrape, "http_request_duration_seconds_bucket", le="+Inf", **ROUTE_LABELS) == sent
    assert statuses == [404] * 30
    assert _value(scrape, "errors_total", code="not_found") == 30
    assert _value(scrape, "ledger_postings_total") == 0


def test_a_killed_worker_keeps_its_counts_in_the_sum(start_server, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    server = start_server(metrics_dir)
    sent, served = _spread(server, metrics_dir)
    victim = max(served, key=served.get)
    # A live gauge of the victim (as a Gauge(multiprocess_mode="livesum") would
    # write): child_exit must drop it, while counters of the dead stay.
    live_gauge = metrics_dir / f"gauge_livesum_{victim}.db"
    _plant(live_gauge, "cl_test_in_flight", "cl_test_in_flight", {}, 1.0)
    assert _value(_scrape(server), "cl_test_in_flight") == 1.0

    before = server.workers()
    os.kill(victim, signal.SIGKILL)
    replaced = _wait_for(lambda: (lambda now: now if victim not in now and len(now) == WORKERS
                                  else None)(server.workers()),
                         "gunicorn to replace the killed worker", server)
    _wait_for(lambda: not live_gauge.exists(), "child_exit to drop the dead worker's live gauge",
              server)
    scrape = _scrape(server)
    more = _get_many(server, ROUTE, 25)

    assert len(replaced - before) == 1
    assert (metrics_dir / f"histogram_{victim}.db").exists()
    assert _value(scrape, "http_request_duration_seconds_count", **ROUTE_LABELS) == sent
    assert _value(scrape, "cl_test_in_flight") is None
    assert more == [200] * 25
    assert _value(_scrape(server), "http_request_duration_seconds_count",
                  **ROUTE_LABELS) == sent + 25


def test_metric_files_of_a_previous_run_are_removed_at_start(start_server, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_4242.db"
    _plant(stale, "errors", "errors_total", {"code": "stale_previous_run"}, 7.0)
    stale_histogram = metrics_dir / "histogram_4243.db"
    _plant(stale_histogram, "http_request_duration_seconds",
           "http_request_duration_seconds_count", ROUTE_LABELS, 1000.0)
    (metrics_dir / "keep.txt").write_text("not a metric file")
    # The planted files are what a scrape would add up, were they left there.
    planted = {sample.name: sample.value
               for metric in MultiProcessCollector.merge([str(stale)]) for sample in metric.samples}
    assert planted == {"errors_total": 7.0}

    server = start_server(metrics_dir)
    statuses = _get_many(server, ROUTE, 5)
    scrape = _scrape(server)

    assert not stale.exists() and not stale_histogram.exists()
    assert (metrics_dir / "keep.txt").read_text() == "not a metric file"
    assert _value(scrape, "errors_total", code="stale_previous_run") is None
    assert statuses == [200] * 5
    assert _value(scrape, "http_request_duration_seconds_count", **ROUTE_LABELS) == 5


def test_without_the_variable_the_master_uses_a_directory_of_its_own(start_server, tmp_path):
    server = start_server(None)
    made = list((tmp_path / "tmp").glob(f"channel-ledger-metrics-{server.pid}-*"))
    assert len(made) == 1, list((tmp_path / "tmp").iterdir())
    metrics_dir = made[0]

    sent, served = _spread(server, metrics_dir)
    scrape = _scrape(server)
    assert _value(scrape, "http_request_duration_seconds_count", **ROUTE_LABELS) == sent

    server.stop()
    assert server.proc.returncode == 0, server.log_tail()
    assert not metrics_dir.exists()  # removed by the master on exit


def test_a_variable_naming_no_directory_stops_the_process_with_a_clear_message(tmp_path):
    missing = tmp_path / "nope"
    env = dict(os.environ, **{ENV: str(missing)})
    result = subprocess.run([sys.executable, "-c", "import service.metrics"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert f"{ENV}={str(missing)!r} is not a directory" in result.stderr
    assert not missing.exists()



def test_a_variable_set_after_prometheus_client_was_imported_is_reported(tmp_path):
    # Too late for prometheus_client: values stay in the process, /metrics
    # serves this process's registry, and the start-up log says why.
    script = f"""
import os, prometheus_client
os.environ[{ENV!r}] = {str(tmp_path)!r}
from service import metrics
from service.app import create_app
client = create_app().test_client()
client.get("/health")
assert metrics.MULTIPROCESS_DIR is None
assert b'endpoint="/health"' in client.get("/metrics").data
"""
    env = dict(os.environ, CL_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
               CL_LOG_FORMAT="text")
    env.pop(ENV, None)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert f"{ENV} is set, but prometheus_client was imported before it was" in result.stderr
    assert list(tmp_path.glob("*.db")) == []
