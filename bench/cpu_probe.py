"""Where one client's time goes: CPU per transfer in this Python process and in
its PostgreSQL backend, for single transfers through the ledger.

    .venv/bin/python bench/cpu_probe.py [--transfers 2000] [--pg-url URL]

Creates a throwaway database, opens 100 funded accounts, posts the transfers
one per commit from one client, reads the backend's CPU from /proc (the server
runs on this machine), and drops the database. Used for the step-by-step
figures in docs/performance.md; the benchmark (ledger_bench.py) is the
authoritative comparison.
"""
from __future__ import annotations

import argparse
import os
import random
import time
import uuid

from sqlalchemy import make_url, text

from ledger import EntryRequest, PostingLine, open_account, post_entries, post_entry, preload_accounts
from service.db import make_engine, make_session_factory
from service.migrate import upgrade


def backend_cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=2000)
    parser.add_argument("--pg-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    name = f"cl_probe_{uuid.uuid4().hex[:8]}"
    admin = make_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        engine = make_engine(url)
        Session = make_session_factory(engine)
        codes = [f"w{n}" for n in range(int(os.environ.get("PROBE_ACCOUNTS", "100")))]
        with Session() as s, s.begin():
            open_account(s, "bank", "bank", "asset", "CNY")
            for code in codes:
                open_account(s, code, code, "liability", "CNY", min_balance_minor=0)
            post_entries(s, [EntryRequest("fund", [PostingLine("bank", "debit", 10**12, "CNY"),
                                                   PostingLine(c, "credit", 10**12, "CNY")]) for c in codes])
        with Session() as s:
            pid = s.execute(text("SELECT pg_backend_pid()")).scalar()
            preload_accounts(s, set(codes))

        def transfer() -> None:
            a, b = random.sample(codes, 2)
            with Session() as s, s.begin():
                post_entry(s, EntryRequest("transfer", [PostingLine(a, "debit", 1, "CNY"),
                                                        PostingLine(b, "credit", 1, "CNY")]))

        for _ in range(200):  # warm up: prepared statements, caches
            transfer()
        n = args.transfers
        server0, client0, wall0 = backend_cpu_seconds(pid), os.times(), time.perf_counter()
        for _ in range(n):
            transfer()
        server1, client1, wall1 = backend_cpu_seconds(pid), os.times(), time.perf_counter()
        print(f"{n} transfers, one client: {n / (wall1 - wall0):,.0f} tx/s; per transfer: "
              f"client {(client1.user - client0.user + client1.system - client0.system) / n * 1000:.2f} ms CPU, "
              f"server backend {(server1 - server0) / n * 1000:.2f} ms CPU, "
              f"wall {(wall1 - wall0) / n * 1000:.2f} ms")
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
