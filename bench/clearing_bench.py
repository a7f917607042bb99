#!/usr/bin/env python
"""Clearing benchmark (issue 6): clearing and release of ``--orders`` paid
orders (default 1,000,000) on PostgreSQL in batches; target >= 5,000 orders
cleared per second, with progress output.

On a throwaway PostgreSQL database (created, migrated, dropped):

1. **Seed.** One brand, ``--distributors`` distributors (each buying from
   the brand, each with one upstream order from it), a store for every
   ~50 orders (at most 20,000), 12 SKUs in a small category tree, and one
   F2B2b rule: 92 % to the seller on delivery (the remainder), 7.5 % to the
   brand T+2 business days after delivery, 0.5 % to the platform at once.
   The orders (1-3 lines, state ``paid``), their lines and their links to
   the distributor's upstream order are bulk-inserted; 1 % are left unlinked
   (trade mode B2b: no rule takes them, so they are skipped, as in life).
   Each order's escrow is opened with the attributes ``funding`` gives it,
   and its cash arrives through the ledger: one ``order.capture`` entry per
   order (Dr ``custody:bank`` / Cr ``order:O:escrow``, key ``O:capture``)
   posted with ``ledger.post_entries`` in chunks, so every balance is real.
2. **Baseline** (same run): ``clearings.clear_cash``, the per-order path, on
   ``--sample`` other orders, before the batches run (the documents table
   is still empty then, which favours the per-order path: its once-per-cause
   query reads that table without an index).
3. **Clear** the orders with ``clearing_batch.clear_many`` in batches of
   ``--batch``, one transaction each, printing orders done, rate and ETA.
4. **Deliver** ``--delivered`` percent of them (events and state, bulk), one
   minute after the clearing.
5. **Release** with ``clearing_batch.release_many`` (``--release-batch`` legs
   per call and transaction) at delivery + 10 days, until nothing is due,
   printing legs done, rate and ETA.
6. **Check**: ``ledger.check_ledger`` and ``cash.check_cash`` over the whole
   database (``--no-check`` skips them), and the documents' sums against the
   orders'.

    .venv/bin/python bench/clearing_bench.py --orders 20000          # smoke, ~1 min
    .venv/bin/python bench/clearing_bench.py                          # 1,000,000 orders
    .venv/bin/python bench/clearing_bench.py --orders 200000 --json /tmp/clearing.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_ORDERS_PER_S = 5_000
CCY = "CNY"
SKUS = {  # sku -> (category, list price in fen)
    "tea-1": ("green", 1_200), "tea-2": ("green", 2_450), "tea-3": ("black", 3_300),
    "tea-4": ("black", 990), "chips-1": ("chips", 650), "chips-2": ("chips", 720),
    "nuts-1": ("nuts", 1_580), "nuts-2": ("nuts", 2_210), "water-1": ("drinks", 240),
    "water-2": ("drinks", 310), "juice-1": ("drinks", 880), "juice-2": ("drinks", 1_150)}
CATEGORIES = [("food", None), ("tea", "food"), ("green", "tea"), ("black", "tea"),
              ("snacks", "food"), ("chips", "snacks"), ("nuts", "snacks"), ("drinks", None)]
RULE_LEGS = [
    {"recipient": "seller", "basis": "remainder", "value": 0, "timing": {"kind": "on_delivery"}},
    {"recipient": "brand", "basis": "percent", "value": 750,
     "timing": {"kind": "t_plus", "days": 2, "anchor": "delivery"}},
    {"recipient": "platform", "basis": "percent", "value": 50, "timing": {"kind": "immediate"}},
]
# Each capture entry holds one advisory lock (the ledger's, per idempotency
# key) until its transaction commits; PostgreSQL's lock table has room for
# max_locks_per_transaction x max_connections (6,400 by default) in all.
SEED_CHUNK = 5_000
FUND_CHUNK = 5_000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """One line per batch: done of total, the batch's rate, the rate so
    far and the time left at that rate."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done = label, total, 0
        self.began = self.last = time.perf_counter()

    def step(self, n: int, extra: str = "") -> None:
        now = time.perf_counter()
        self.done += n
        batch_rate = n / (now - self.last) if now > self.last else 0.0
        rate = self.done / (now - self.began)
        left = max(self.total - self.done, 0) / rate if rate else 0.0
        log(f"{self.label}: {self.done:>9,}/{self.total:,}  batch {batch_rate:>7,.0f}/s  "
            f"overall {rate:>7,.0f}/s  ETA {fmt_eta(left)}{extra}")
        self.last = now

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.began


# -- seeding: the network ------------------------------------------------------------------

def seed_network(Session, distributors: int, stores: int) -> dict:
    """Brand, distributors, catalog and rule through the use cases (a few
    hundred calls); the stores and their relationships in bulk."""
    import channel_api as ca
    from channel_api import catalog, clearing_rules, network, orders
    from channel_api.books import CUSTODY, ensure
    from ledger import utcnow

    with Session() as s, s.begin():
        ensure(s, CUSTODY, "Custody bank account", "asset", CCY)
        ca.create_region(s, "CN", "China")
        ca.create_customer_type(s, "shop", "Shop")
        ca.create_party(s, code="B", name="Brand", role="brand", region="CN", customer_type="shop")
        catalog.create_unit(s, "case", "Case")
        for code, parent in CATEGORIES:
            catalog.create_category(s, code, code.title(), parent=parent)
        for sku, (category, price) in SKUS.items():
            catalog.create_product(s, f"p-{sku}", sku, category=category)
            catalog.create_sku(s, sku, sku, product=f"p-{sku}", unit="case", list_price_minor=price)
        dists = [f"D{n:04d}" for n in range(distributors)]
        for code in dists:
            ca.create_party(s, code=code, name=code, role="distributor", region="CN",
                            customer_type="shop")
            network.create_relationship(s, seller="B", buyer=code, actor="bench")
        upstream = {code: orders.place_order(s, buyer=code, seller="B", actor="bench",
                                             lines=[{"sku": "tea-1", "quantity": 1000}]).public_id
                    for code in dists}
        clearing_rules.create_rule(s, code="f2b2b", name="F2B2b split", trade_modes=["F2B2b"],
                                   legs=RULE_LEGS, actor="bench",
                                   valid_from=utcnow() - timedelta(days=1))
    return {"dists": dists, "upstream": upstream, **bulk_stores(Session, dists, stores)}


def bulk_stores(Session, dists: list[str], stores: int) -> dict:
    from sqlalchemy import insert, select

    from channel_api.models import CustomerType, Party, Region, SupplyRelationship
    from ledger import new_uuid7, utcnow

    now = utcnow()
    with Session() as s, s.begin():
        region = s.scalar(select(Region.id).where(Region.code == "CN"))
        ctype = s.scalar(select(CustomerType.id).where(CustomerType.code == "shop"))
        rows = [{"public_id": f"pty_{new_uuid7().hex}", "code": f"S{n:06d}", "name": f"S{n}",
                 "role": "store", "status": "active", "region_id": region,
                 "customer_type_id": ctype, "grade_id": None, "owner_name": "",
                 "contact_phone": "", "address": "", "quality_customer": False,
                 "created_at": now, "metadata": {}} for n in range(stores)]
        s.execute(insert(Party.__table__), rows)
        ids = dict(s.execute(select(Party.code, Party.id)).all())
        store_dist = {row["code"]: dists[n % len(dists)] for n, row in enumerate(rows)}
        rels = [{"public_id": f"rel_{new_uuid7().hex}", "seller_id": ids[d], "buyer_id": ids[st],
                 "status": "active", "origin": "manual", "product_scope": {"all": True},
                 "valid_from": now, "valid_to": None, "created_at": now, "updated_at": now}
                for st, d in store_dist.items()]
        s.execute(insert(SupplyRelationship.__table__), rels)
        rel_ids = {(seller, buyer): rid for rid, seller, buyer in s.execute(select(
            SupplyRelationship.id, SupplyRelationship.seller_id, SupplyRelationship.buyer_id))}
    return {"party_ids": ids, "store_dist": store_dist, "rel_ids": rel_ids}


# -- seeding: the orders and their cash -----------------------------------------------------

def seed_orders(Session, net: dict, count: int, rng: random.Random, label: str) -> list[tuple]:
    """``count`` paid orders with their cash in escrow; (public id, total)
    each, in the order made."""
    from sqlalchemy import select

    from channel_api.models import Order, Sku

    with Session() as s:
        skus = {code: (sid, price) for code, sid, price in s.execute(
            select(Sku.code, Sku.id, Sku.list_price_minor))}
        upstream_ids = dict(s.execute(select(Order.public_id, Order.id).where(
            Order.public_id.in_(list(net["upstream"].values())))).all())
    stores = list(net["store_dist"])
    made: list[tuple] = []
    progress = Progress(f"seed {label}", count)
    for start in range(0, count, SEED_CHUNK):
        n = min(SEED_CHUNK, count - start)
        with Session() as s, s.begin():
            made += seed_chunk(s, net, skus, upstream_ids, stores, n, rng)
        progress.step(n)
    return made


def seed_chunk(s, net, skus, upstream_ids, stores, n, rng) -> list[tuple]:
    from sqlalchemy import insert

    from channel_api.models import Order, OrderLine, OrderLink
    from ledger import new_uuid7, utcnow

    now, ids = utcnow(), net["party_ids"]
    orders, lines, plan = [], [], []
    for _ in range(n):
        store = stores[rng.randrange(len(stores))]
        dist = net["store_dist"][store]
        picked = rng.sample(sorted(skus), rng.randint(1, 3))
        quantities = [rng.randint(1, 20) for _ in picked]
        total = sum(skus[sku][1] * q for sku, q in zip(picked, quantities))
        ref = f"ord_{new_uuid7().hex}"
        orders.append({"public_id": ref, "buyer_id": ids[store], "seller_id": ids[dist],
                       "relationship_id": net["rel_ids"][(ids[dist], ids[store])],
                       "state": "paid", "currency": CCY, "subtotal_minor": total,
                       "discount_minor": 0, "total_minor": total, "client_reference": None,
                       "note": "", "placed_at": now, "updated_at": now, "version": 1})
        plan.append((ref, total, picked, quantities, dist, rng.random() >= 0.01))
    order_ids = [row[0] for row in s.execute(
        insert(Order.__table__).returning(Order.__table__.c.id, sort_by_parameter_order=True),
        orders)]
    links = []
    for order_id, (ref, total, picked, quantities, dist, linked) in zip(order_ids, plan):
        for line_no, (sku, q) in enumerate(zip(picked, quantities), start=1):
            sku_id, price = skus[sku]
            lines.append({"order_id": order_id, "line_no": line_no, "sku_id": sku_id,
                          "quantity": q, "unit_price_minor": price, "list_price_minor": price,
                          "price_source": "list_price", "strategy_code": None,
                          "strategy_version": None, "discount_minor": 0,
                          "line_total_minor": price * q})
        if linked:
            links.append({"upstream_id": upstream_ids[net["upstream"][dist]],
                          "downstream_id": order_id, "linked_at": now, "actor": "bench"})
    s.execute(insert(OrderLine.__table__), lines)
    if links:
        s.execute(insert(OrderLink.__table__), links)
    made = [(ref, total, dist) for ref, total, _, _, dist, _ in plan]
    open_escrows(s, [ref for ref, *_ in made], now)
    fund(s, made)
    return made


def open_escrows(s, refs: list[str], now) -> None:
    """The escrow accounts as ``funding`` opens them (``books.ensure_all``:
    a one-shard liability with a minimum of 0), inserted in bulk."""
    from sqlalchemy import insert

    from channel_api.books import escrow_account
    from ledger.ids import new_account_public_id
    from ledger.models import Account, Balance

    rows = [{"public_id": new_account_public_id(), "code": escrow_account(ref),
             "name": f"Escrow of {ref}", "type": "liability", "normal_side": "credit",
             "currency": CCY, "owner_party_id": None, "status": "open",
             "min_balance_minor": 0, "max_balance_minor": None, "balance_shards": 1,
             "metadata": {}, "created_at": now} for ref in refs]
    ids = [row[0] for row in s.execute(
        insert(Account.__table__).returning(Account.__table__.c.id,
                                            sort_by_parameter_order=True), rows)]
    s.execute(insert(Balance.__table__), [
        {"account_id": i, "shard": 0, "posted_debits_minor": 0, "posted_credits_minor": 0,
         "pending_debits_minor": 0, "pending_credits_minor": 0, "version": 0} for i in ids])


def fund(s, made: list[tuple]) -> None:
    """Each order's cash into its escrow, one capture entry per order, as
    an offline transfer's confirmation posts it."""
    import ledger
    from channel_api.books import escrow_account
    from ledger import EntryRequest, PostingLine

    requests = [EntryRequest(
        code="order.capture", idempotency_key=f"{ref}:capture",
        metadata={"order": ref, "plan": {"offline": total}},
        postings=[PostingLine("custody:bank", "debit", total, CCY),
                  PostingLine(escrow_account(ref), "credit", total, CCY)])
        for ref, total, *_ in made]
    for start in range(0, len(requests), FUND_CHUNK):
        for result in ledger.post_entries(s, requests[start:start + FUND_CHUNK], atomic=True):
            assert result.ok


# -- the runs ---------------------------------------------------------------------------------

def arrivals(made: list[tuple]):
    from channel_api.clearing_batch import CashArrival

    return [CashArrival(ref, total, "offline", f"{ref}:offline") for ref, total, *_ in made]


def per_order(Session, made: list[tuple], per_tx: int = 100) -> dict:
    """``clear_cash`` one order at a time, ``per_tx`` orders a transaction
    (its marginal cost inside the order's payment, not a commit each)."""
    from channel_api import clearings, orders

    began, cleared = time.perf_counter(), 0
    for start in range(0, len(made), per_tx):
        with Session() as s, s.begin():
            for a in arrivals(made[start:start + per_tx]):
                row = orders.order_row(s, a.order_ref)
                cleared += bool(clearings.clear_cash(s, row, amount_minor=a.amount_minor,
                                                     method=a.method, cause=a.cause))
    seconds = time.perf_counter() - began
    return {"orders": len(made), "cleared": cleared, "seconds": round(seconds, 2),
            "per_s": round(len(made) / seconds, 1)}


def clear_batches(Session, made: list[tuple], batch: int) -> dict:
    """One process: ``clear_many`` per batch, one transaction each; with
    the CPU this process and its PostgreSQL backend spent on it."""
    from channel_api.clearing_batch import clear_many

    tally, client, server = Tally(len(made)), time.process_time(), 0.0
    collector = GcTimer()
    for start in range(0, len(made), batch):
        chunk = arrivals(made[start:start + batch])
        with Session() as s:
            with s.begin():  # the commit is measured too: the balance trigger runs there
                pid = s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
                before = backend_cpu(pid)
                result = clear_many(s, chunk)
            server += backend_cpu(pid) - before
        tally.add(len(chunk), result)
    summary = tally.summary()
    summary["gc_ms_per_order"] = round(collector.stop() * 1000 / len(made), 3)
    if server:
        summary["client_cpu_ms_per_order"] = round(
            (time.process_time() - client) * 1000 / len(made), 3)
        summary["server_cpu_ms_per_order"] = round(server * 1000 / len(made), 3)
    return summary


class GcTimer:
    """Time the cyclic garbage collector spends, from now until ``stop``."""

    def __init__(self):
        self.seconds, self._began = 0.0, None
        gc.callbacks.append(self._on)

    def _on(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self._began is not None:
            self.seconds += time.perf_counter() - self._began

    def stop(self) -> float:
        gc.callbacks.remove(self._on)
        return self.seconds


class Profiled:
    """cProfile of a block and the wall time of every SQL statement it ran
    (grouped by the statement's first 160 characters), written to a file.
    Profiling slows the client (about 2 x): read the shares, not the rate."""

    def __init__(self, engine, path: str):
        self.engine, self.path, self.statements = engine, path, {}

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        conn.info["cl_t0"] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        key = " ".join(statement.split())[:160]
        count, seconds = self.statements.get(key, (0, 0.0))
        self.statements[key] = (count + 1, seconds + time.perf_counter() - conn.info["cl_t0"])

    def __enter__(self):
        import cProfile

        from sqlalchemy import event
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        # The ledger's prepared statements go round SQLAlchemy's events.
        from ledger import prepared
        self._prepared, timed = prepared.execute, prepared.execute

        def execute(connection, name, arg_types, sql, args):
            t0 = time.perf_counter()
            try:
                return timed(connection, name, arg_types, sql, args)
            finally:
                key = f"(prepared {name}) {' '.join(sql.split())}"[:160]
                count, seconds = self.statements.get(key, (0, 0.0))
                self.statements[key] = (count + 1, seconds + time.perf_counter() - t0)
        prepared.execute = execute
        self.profiler = cProfile.Profile()
        self.profiler.enable()
        return self

    def __exit__(self, *exc):
        import io
        import pstats

        from sqlalchemy import event
        self.profiler.disable()
        from ledger import prepared
        prepared.execute = self._prepared
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)
        out = io.StringIO()
        stats = pstats.Stats(self.profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(40)
        lines = [f"{seconds * 1000:10.1f} ms {count:8d} x  {key}" for key, (count, seconds)
                 in sorted(self.statements.items(), key=lambda kv: -kv[1][1])]
        Path(self.path).write_text("SQL statements (wall ms, count):\n" + "\n".join(lines)
                                   + "\n\n" + out.getvalue())
        log(f"profile written to {self.path}")
        return False


def backend_cpu(pid: int) -> float:
    """CPU seconds a local PostgreSQL backend has used (0 when it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Tally:
    """What the batches cleared and skipped, with the progress line."""

    def __init__(self, total: int):
        from collections import Counter

        self.progress, self.skipped = Progress("clear", total), Counter()
        self.cleared = self.legs = self.amount = 0

    def add(self, n: int, result) -> None:
        self.cleared += result.cleared
        self.legs += result.legs
        self.amount += result.cleared_minor.get(CCY, 0)
        self.skipped.update(result.skipped)
        self.progress.step(n, f"  cleared {self.cleared:,}  "
                              f"skipped {sum(self.skipped.values()):,}")

    def summary(self) -> dict:
        seconds, orders = self.progress.seconds, self.progress.done
        return {"orders": orders, "cleared": self.cleared, "legs": self.legs,
                "skipped": dict(self.skipped), "cleared_minor": self.amount,
                "seconds": round(seconds, 2), "orders_per_s": round(orders / seconds, 1),
                "cleared_per_s": round(self.cleared / seconds, 1)}


def partition_by_seller(made: list[tuple], workers: int) -> list[list[int]]:
    """The orders' indexes in ``workers`` groups, each seller's orders in one
    group, the groups as even as whole sellers allow (the sellers with the
    most orders first, each to the lightest group): with a hash of the
    seller's code the largest group had several percent more orders, and
    the run ended with one worker clearing alone."""
    by_seller: dict[str, list[int]] = {}
    for n, (_, _, seller) in enumerate(made):
        by_seller.setdefault(seller, []).append(n)
    groups: list[list[int]] = [[] for _ in range(workers)]
    for seller in sorted(by_seller, key=lambda s: (-len(by_seller[s]), s)):
        min(groups, key=len).extend(by_seller[seller])
    for group in groups:
        group.sort()  # each worker clears its orders in the order they were made
    return groups


def clear_parallel(url: str, made: list[tuple], batch: int, workers: int) -> dict:
    """``workers`` processes, each with its own engine, each clearing the
    orders of its own sellers (``partition_by_seller``), in batches; the
    parent prints the progress. Batches lock the accounts they credit in one
    statement each (no deadlock); partitioned by seller, two workers'
    batches share no distributor's pending account, and the brand's and the
    platform's accounts are sharded, so they rarely wait on each other."""
    import gc
    import multiprocessing as mp

    ctx = mp.get_context("fork")   # the children inherit ``made``
    todo, done = [ctx.Queue() for _ in range(workers)], ctx.Queue()
    mine = partition_by_seller(made, workers)
    # What the children inherit (the seeded orders, the parent's objects) is
    # the bench's, not the clearing's: frozen, the children's garbage
    # collector never scans it (as a pre-forking server does after start-up;
    # a clearing job reads its batches from the database and holds no such heap).
    gc.collect()
    gc.freeze()
    batches = 0
    for worker, indexes in enumerate(mine):
        for start in range(0, len(indexes), batch):
            todo[worker].put(indexes[start:start + batch])
            batches += 1
        todo[worker].put(None)
    procs = [ctx.Process(target=clear_worker, args=(url, made, todo[w], done))
             for w in range(workers)]
    for proc in procs:
        proc.start()
    tally = Tally(len(made))
    for _ in range(batches):
        n, result = done.get()
        if result is None:
            raise RuntimeError(f"a worker failed: {n}")
        tally.add(n, result)
    for proc in procs:
        proc.join()
    gc.unfreeze()
    return tally.summary()


def clear_worker(url, made, todo, done) -> None:
    from channel_api.clearing_batch import clear_many
    from service.db import make_engine, make_session_factory

    engine = make_engine(url)
    Session = make_session_factory(engine)
    try:
        while (indexes := todo.get()) is not None:
            chunk = arrivals([made[n] for n in indexes])
            with Session() as s, s.begin():
                done.put((len(chunk), clear_many(s, chunk)))
    except Exception as exc:  # the parent reports it and stops
        done.put((repr(exc), None))
        raise
    finally:
        engine.dispose()


def deliver(Session, made: list[tuple], percent: float, at) -> int:
    """Mark ``percent`` of the orders delivered at ``at`` (the event the
    release reads, and the state), in bulk."""
    from sqlalchemy import insert, select, update

    from channel_api.models import Order, OrderEvent

    count = int(len(made) * percent / 100)
    refs = [ref for ref, *_ in made[:count]]
    progress = Progress("deliver", count)
    for start in range(0, count, SEED_CHUNK):
        part = refs[start:start + SEED_CHUNK]
        with Session() as s, s.begin():
            ids = list(s.scalars(select(Order.id).where(Order.public_id.in_(part))))
            s.execute(insert(OrderEvent.__table__), [
                {"order_id": i, "action": "confirm_receipt", "from_state": "shipped",
                 "to_state": "delivered", "actor": "bench", "at": at, "details": {}}
                for i in ids])
            s.execute(update(Order.__table__).where(Order.__table__.c.id.in_(ids))
                      .values(state="delivered", updated_at=at))
        progress.step(len(part))
    return count


def release_all(Session, now, batch: int, expected: int) -> dict:
    """``release_many`` until nothing is due, one transaction per call, with
    the CPU this process and its PostgreSQL backend spent on it."""
    from channel_api.clearing_batch import release_many

    progress = Progress("release", expected)
    released, client, server = 0, time.process_time(), 0.0
    while True:
        with Session() as s:
            with s.begin():
                pid = s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
                before = backend_cpu(pid)
                n = release_many(s, now=now, limit=batch)
            server += backend_cpu(pid) - before
        if not n:
            break
        released += n
        progress.step(n)
    seconds = progress.seconds
    out = {"legs": released, "seconds": round(seconds, 2),
           "legs_per_s": round(released / seconds, 1) if seconds else None}
    if released and server:
        out["client_cpu_ms_per_leg"] = round((time.process_time() - client) * 1000 / released, 3)
        out["server_cpu_ms_per_leg"] = round(server * 1000 / released, 3)
    return out


def verify(Session, made: list[tuple], full: bool) -> dict:
    """The documents' sums against the orders', the escrows left; then
    the ledger's and the cash invariant over everything."""
    import ledger
    from sqlalchemy import func, select

    from channel_api import cash
    from clearing.models import ClearingShare
    from ledger.models import Account, Balance

    out: dict = {}
    with Session() as s:
        out["documents"] = dict(zip(("rows", "amount_minor"), s.execute(select(
            func.count(), func.sum(ClearingShare.amount_minor))).one()))
        out["by_state"] = dict(s.execute(select(ClearingShare.state, func.count())
                                         .group_by(ClearingShare.state)).all())
        out["escrow_left_minor"] = int(s.scalar(
            select(func.sum(Balance.posted_credits_minor - Balance.posted_debits_minor))
            .join(Account, Account.id == Balance.account_id)
            .where(Account.code.like("order:%:escrow"))) or 0)
        if full:
            t0 = time.perf_counter()
            out["ledger_findings"] = [f.message for f in ledger.check_ledger(s)][:10]
            out["check_ledger_s"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            out["cash_holds"] = cash.check_cash(s).holds
            out["check_cash_s"] = round(time.perf_counter() - t0, 1)
    out["orders_total_minor"] = sum(total for _, total, *_ in made)
    return out


def analyze(Session) -> float:
    """``ANALYZE`` the database; the seconds it took."""
    t0 = time.perf_counter()
    log("analyze ...")
    with Session() as s, s.begin():
        s.connection().exec_driver_sql("ANALYZE")
    return round(time.perf_counter() - t0, 1)


def run(url: str, args) -> dict:
    from ledger import utcnow
    from service.db import make_engine, make_session_factory

    engine = make_engine(url)
    Session = make_session_factory(engine)
    rng = random.Random(7)
    began = time.perf_counter()
    stores = max(50, min(20_000, args.orders // 50))
    result: dict = {"orders": args.orders, "batch": args.batch, "stores": stores,
                    "workers": args.workers,
                    "distributors": args.distributors, "cpus": os.cpu_count()}
    result["started_utc"] = utcnow().strftime("%Y-%m-%d %H:%M UTC")
    result["loadavg"] = {"start": os.getloadavg()}
    t0 = time.perf_counter()
    net = seed_network(Session, args.distributors, stores)
    sample = seed_orders(Session, net, args.sample, rng, "sample") if args.sample else []
    made = seed_orders(Session, net, args.orders, rng, "orders")
    result["seed_s"] = round(time.perf_counter() - t0, 1)
    # Statistics after each bulk step, as docs/operations.md asks after a
    # bulk load: stale ones make plans that scan (150,000 orders seeded:
    # the per-order baseline cleared 21 orders/s before ANALYZE, 63/s after;
    # events analyzed while still empty made the release's first dating
    # query join 2,500 orders against every delivery, minutes a batch).
    result["analyze_s"] = analyze(Session)
    # The seeded orders (a million tuples) live as long as the run: keep
    # them out of the cyclic collector's full passes, as service/wsgi.py
    # does with a server's start-up objects.
    gc.collect()
    gc.freeze()
    if sample:
        log(f"per-order baseline: clear_cash on {len(sample):,} orders ...")
        result["per_order"] = per_order(Session, sample)
    if args.workers > 1:
        result["clear"] = clear_parallel(url, made, args.batch, args.workers)
    elif args.profile:
        with Profiled(engine, args.profile):
            result["clear"] = clear_batches(Session, made, args.batch)
    else:
        result["clear"] = clear_batches(Session, made, args.batch)
    result["loadavg"]["after_clear"] = os.getloadavg()
    delivered_at = utcnow() + timedelta(minutes=1)
    delivered = deliver(Session, sample + made, args.delivered, delivered_at)
    result["analyze_s"] += analyze(Session)
    result["release"] = release_all(Session, delivered_at + timedelta(days=10),
                                    args.release_batch, expected=2 * delivered)
    result["delivered"] = delivered
    result["loadavg"]["after_release"] = os.getloadavg()
    log("checking ...")
    result["check"] = verify(Session, sample + made, not args.no_check)
    result["total_s"] = round(time.perf_counter() - began, 1)
    with Session() as s:
        result["postgresql"] = s.connection().exec_driver_sql("SHOW server_version").scalar()
    engine.dispose()
    return result


def report(result: dict) -> None:
    clear, release = result["clear"], result["release"]
    load = "; ".join(f"{when} {' '.join(f'{v:.2f}' for v in avg)}"
                     for when, avg in result["loadavg"].items())
    print(f"run of {result['started_utc']}, {result['total_s']} s in all; PostgreSQL "
          f"{result['postgresql']}, {result['cpus']} CPUs; load average (1/5/15 min): {load}")
    print(f"orders: {result['orders']:,} in batches of {result['batch']:,}, "
          f"{result['workers']} process(es) "
          f"({result['distributors']} distributors, {result['stores']:,} stores); "
          f"seeding took {result['seed_s']} s")
    print(f"clear_many: {clear['orders']:,} orders in {clear['seconds']} s = "
          f"{clear['orders_per_s']:,} orders/s ({clear['cleared']:,} cleared = "
          f"{clear['cleared_per_s']:,}/s, {clear['legs']:,} legs; skipped {clear['skipped']})")
    print(f"release_many: {release['legs']:,} legs in {release['seconds']} s = "
          f"{release['legs_per_s']:,} legs/s ({result['delivered']:,} orders delivered)"
          + (f"; CPU per leg: client {release['client_cpu_ms_per_leg']} ms + PostgreSQL "
             f"{release['server_cpu_ms_per_leg']} ms" if "client_cpu_ms_per_leg" in release
             else ""))
    base = result.get("per_order")
    if base:
        print(f"per-order clear_cash (same run, {base['orders']} orders, 100 per transaction): "
              f"{base['per_s']:,} orders/s; the batch path is "
              f"{clear['orders_per_s'] / base['per_s']:.1f} x the per-order path")
    if "client_cpu_ms_per_order" in clear:
        cpu = clear["client_cpu_ms_per_order"] + clear["server_cpu_ms_per_order"]
        print(f"CPU per order: client {clear['client_cpu_ms_per_order']} ms (of which the "
              f"garbage collector {clear['gc_ms_per_order']} ms) + PostgreSQL "
              f"{clear['server_cpu_ms_per_order']} ms = {cpu:.3f} ms (two idle cores could "
              f"at best do {2000 / cpu:,.0f} orders/s)")
    verdict = "PASS" if clear["cleared_per_s"] >= TARGET_ORDERS_PER_S else "MISS"
    print(f"orders cleared/s: {clear['cleared_per_s']:,} (target >= {TARGET_ORDERS_PER_S:,}): "
          f"{verdict}")
    print(f"check: {result['check']}")
    result["verdict"] = verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    # 2,500 costs the same CPU per order as 5,000 and holds half as many of
    # the server's shared lock slots (one advisory lock per entry).
    parser.add_argument("--batch", type=int, default=2_500, help="orders per clear_many")
    parser.add_argument("--release-batch", type=int, default=2_500,
                        help="legs per release_many")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes clearing batches side by side")
    parser.add_argument("--distributors", type=int, default=300)
    parser.add_argument("--delivered", type=float, default=50, help="percent delivered")
    parser.add_argument("--sample", type=int, default=500,
                        help="orders for the per-order baseline (0: none)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the full ledger and cash checks")
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its URL)")
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--profile", default=None, metavar="FILE",
                        help="with 1 worker: write where the clearing's time goes "
                             "(cProfile, and wall time per SQL statement) to FILE")
    args = parser.parse_args()
    if args.pg_url:
        os.environ["CL_TEST_PG_URL"] = args.pg_url
    from service.migrate import upgrade
    from tests.isolated_db import create_database, drop_database

    url = create_database("postgresql", Path("."))
    try:
        upgrade(url)
        result = run(url, args)
    finally:
        if args.keep:
            log(f"database kept: {url}")
        else:
            drop_database(url)
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    check = result["check"]
    return 0 if not check.get("ledger_findings") and check.get("cash_holds", True) else 1


if __name__ == "__main__":
    sys.exit(main())
