#!/usr/bin/env python
"""Callbacks benchmark (issue 5): verified gateway callbacks applied per
second through the HTTP API, and the acknowledgement latency.

The app runs under gunicorn (``service.wsgi:app``) on a fresh throwaway
PostgreSQL database, with the sandbox gateway (HMAC-SHA256 over
``timestamp.body``, the scheme Stripe uses). ``--payments`` deposit payments
are created first; the simulated provider (in this process, with the same
shared secret) pays each one and produces its signed callback, plus
``--duplicates`` re-deliveries of every tenth; ``--senders`` threads POST
them all to ``/callbacks/sandbox`` in random order. Each callback is stored
raw, verified, applied exactly once (a deposit posted) and acknowledged.

Baseline in the same run, against the same server: ``GET /health`` (one
database round trip), with the same number of senders.

At the end: every payment succeeded exactly once, the deposits add up, the
ledger's invariant check finds nothing; the database is dropped.

    .venv/bin/python bench/callbacks_bench.py                  # ~1 min
    .venv/bin/python bench/callbacks_bench.py --payments 4000 --json /tmp/callbacks.json
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from orders_bench import Server, log  # noqa: E402

TARGET_PER_S = 500
TARGET_P99_MS = 50
SECRET = "bench-sandbox-secret-0123456789"


def seed(url: str, payments: int, stores: int = 8) -> list[tuple[str, int]]:
    import channel_api as ca
    from channel_api import gateway_payments, network
    from service.db import make_engine, make_session_factory

    engine = make_engine(url)
    Session = make_session_factory(engine)
    out = []
    with Session() as s, s.begin():
        ca.create_region(s, "CN", "China")
        ca.create_customer_type(s, "shop", "Shop")
        ca.create_party(s, code="D", name="Dist", role="distributor", region="CN",
                        customer_type="shop")
        for n in range(stores):
            ca.create_party(s, code=f"S{n}", name=f"S{n}", role="store", region="CN",
                            customer_type="shop")
            network.create_relationship(s, seller="D", buyer=f"S{n}", actor="b")
        for n in range(payments):
            p = gateway_payments.start_deposit_payment(
                s, buyer=f"S{n % stores}", seller="D", amount_minor=100 + n % 997,
                gateway="sandbox")
            out.append((p.public_id, p.amount_minor))
    engine.dispose()
    return out


def callbacks_for(payments: list[tuple[str, int]], duplicates: int) -> list[tuple[dict, bytes]]:
    from payments.gateway import PaymentRequest
    from service.gateways import sandbox

    adapter, vendor = sandbox(SECRET)
    out = []
    for n, (public_id, amount) in enumerate(payments):
        adapter.create_payment(PaymentRequest(
            out_trade_no=public_id, amount_minor=amount, currency="CNY", description="deposit",
            notify_url="http://localhost/callbacks/sandbox"))
        headers, body = vendor.pay(public_id)
        out.append((headers, body))
        if n % 10 == 0:
            event_id = json.loads(body)["id"]
            out += [vendor.redeliver(event_id) for _ in range(duplicates)]
    random.Random(11).shuffle(out)
    return out


def send_all(port: int, items: list, senders: int, request) -> dict:
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    chunks = [items[i::senders] for i in range(senders)]
    barrier = threading.Barrier(senders + 1)

    def sender(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        barrier.wait()
        mine = []
        for item in chunk:
            t0 = time.perf_counter()
            try:
                ok = request(conn, item)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            if ok:
                mine.append((time.perf_counter() - t0) * 1000)
            else:
                with lock:
                    failures[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=sender, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    ms = sorted(latencies)
    return {"sent": len(items), "ok": len(ms), "failed": failures[0],
            "seconds": round(elapsed, 2), "per_s": round(len(ms) / elapsed, 1),
            "p50_ms": round(ms[len(ms) // 2], 2) if ms else None,
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2) if ms else None}


def post_callback(conn, item) -> bool:
    headers, body = item
    conn.request("POST", "/callbacks/sandbox", body=body,
                 headers={**headers, "Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status == 200


def get_health(conn, _item) -> bool:
    conn.request("GET", "/health")
    response = conn.getresponse()
    response.read()
    return response.status == 200


def wait_applied(url: str, expected: int, began: float, timeout: float = 600) -> float:
    """Seconds from the first callback until every payment is applied (in
    background mode the answers come before the applying)."""
    from sqlalchemy import func, select

    from payments.models import Payment
    from service.db import make_engine, make_session_factory

    engine = make_engine(url)
    try:
        while time.perf_counter() - began < timeout:
            with make_session_factory(engine)() as s:
                if s.scalar(select(func.count()).select_from(Payment).where(
                        Payment.state == "succeeded")) >= expected:
                    return time.perf_counter() - began
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise RuntimeError("callbacks were not all applied in time")


def verify(url: str, payments: list[tuple[str, int]], stores: int) -> dict:
    import ledger
    from sqlalchemy import func, select

    from payments.models import GatewayCallback, Payment
    from service.db import make_engine, make_session_factory

    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        paid = s.scalar(select(func.count()).select_from(Payment).where(
            Payment.state == "succeeded"))
        callbacks = dict(s.execute(select(GatewayCallback.state, func.count())
                                   .group_by(GatewayCallback.state)).all())
        deposits = sum(view.posted_minor for view in ledger.get_accounts(
            s, [f"prepaid:S{n}@D" for n in range(stores)]).values())
        findings = ledger.check_ledger(s)
    engine.dispose()
    return {"payments_succeeded": paid, "callbacks": callbacks,
            "deposits_add_up": deposits == sum(a for _, a in payments),
            "ledger_findings": [f.message for f in findings]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=1500)
    parser.add_argument("--duplicates", type=int, default=2)
    parser.add_argument("--stores", type=int, default=8,
                        help="payers the payments are spread over (each a deposit account)")
    parser.add_argument("--senders", type=int, default=8)
    # The production setting of docs/operations.md: gthread workers (one
    # more than cores, 4 threads each, connections kept open), callbacks
    # applied in the background, in batches.
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4,
                        help="threads per worker (gthread; 1: sync workers)")
    parser.add_argument("--apply", choices=("inline", "background"), default="background",
                        help="CL_CALLBACK_APPLY of the server")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    os.environ["CL_SANDBOX_SECRET"] = SECRET  # the server's gateway shares the provider's secret
    os.environ["CL_CALLBACK_APPLY"] = args.apply
    from service.migrate import upgrade
    from tests.isolated_db import create_database, drop_database

    url = create_database("postgresql", Path("."))
    server = None
    result: dict = {"targets": {"per_s": TARGET_PER_S, "p99_ms": TARGET_P99_MS},
                    "senders": args.senders, "workers": args.workers,
                    "threads": args.threads}
    try:
        upgrade(url)
        log(f"seeding {args.payments} payments ...")
        payments = seed(url, args.payments, args.stores)
        items = callbacks_for(payments, args.duplicates)
        server = Server(url, args.workers, args.threads)
        send_all(server.port, [None] * 200, args.senders, get_health)  # warm up
        log("baseline: GET /health ...")
        result["baseline"] = send_all(server.port, [None] * len(items), args.senders, get_health)
        log(f"{len(items)} callbacks from {args.senders} senders ({args.apply}) ...")
        began = time.perf_counter()
        result["callbacks"] = send_all(server.port, items, args.senders, post_callback)
        applied_after = wait_applied(url, len(payments), began)
        result["applied"] = {"seconds": round(applied_after, 2),
                             "per_s": round(len(payments) / applied_after, 1)}
        server.stop()
        server = None
        result["check"] = verify(url, payments, args.stores)
    finally:
        if server is not None:
            server.stop()
        drop_database(url)
    base, run = result["baseline"], result["callbacks"]
    print(f"{'run':<14}{'sent':>7}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}")
    for name, r in (("GET /health", base), ("callbacks", run)):
        print(f"{name:<14}{r['sent']:>7}{r['per_s']:>9}{r['p50_ms']:>9}{r['p99_ms']:>9}"
              f"{r['failed']:>8}")
    print(f"one callback costs {base['per_s'] / run['per_s']:.1f} x GET /health")
    applied = result["applied"]
    print(f"all {len(payments)} payments applied {applied['seconds']} s after the first "
          f"callback: {applied['per_s']} payments/s")
    verdict = ("PASS" if applied["per_s"] >= TARGET_PER_S else "MISS",
               "PASS" if run["p99_ms"] <= TARGET_P99_MS else "MISS")
    print(f"applied/s {applied['per_s']} (target >= {TARGET_PER_S}): {verdict[0]}; "
          f"ack p99 {run['p99_ms']} ms (target < {TARGET_P99_MS}): {verdict[1]}")
    print(f"check: {result['check']}")
    result["verdict"] = verdict
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    check = result["check"]
    ok = (check["payments_succeeded"] == len(payments) and check["deposits_add_up"]
          and not check["ledger_findings"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
