#!/usr/bin/env python
"""Ledger throughput benchmark: transfers per second, ours against baselines.

A *transfer* is one balanced journal entry with two postings (debit one
account, credit another) with both account balances kept current and the
balance after each posting stored on the posting.

Cases (each run on SQLite and/or PostgreSQL):

* ``single-1``  one transfer per commit, 1 client, random pairs over N accounts
* ``single-N``  the same with ``--clients`` clients (default 8)
* ``batch``     ``--batch-size`` transfers (default 1,000) per commit, 1 client
* ``hot``       ``--clients`` clients, every transfer credits one "brand"
                account and debits a random other one; ours is run with the
                brand opened with ``balance_shards=8`` and with ``=1``

Implementations:

* ``ours``      the project's ledger (``ledger.post_entry`` / ``post_entries``)
                through ``service.db.make_engine``
* ``raw``       hand-written SQL through psycopg2 / sqlite3, no ORM, on its own
                ``bench_*`` tables: lock both accounts (``FOR UPDATE``, id
                order), check the bound, update both, insert the entry and two
                postings with ``balance_after``, commit.  The batch variant is
                set-based: one locking SELECT, one INSERT of entries, one
                INSERT of postings and one UPDATE of balances per batch.
* ``plpgsql``   (PostgreSQL only) the same work in a PL/pgSQL function, one
                round trip per transfer: ``SELECT bench_transfer(from, to, amount)``

Every client is its own process (no GIL cap).  Each run warms up, then
measures for ``--seconds`` and stops by itself.  PostgreSQL runs happen in a
throwaway database ``bench_ledger_<pid>`` that is dropped at the end; SQLite
runs use temp files in WAL mode.

Run ``python bench/ledger_bench.py --help`` for options.
"""
from __future__ import annotations

import argparse
import json
import gc
import multiprocessing as mp
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
import zlib
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CURRENCY = "CNY"
FUNDING_MINOR = 10**12  # per account: transfers essentially never fail for lack of funds
MAX_AMOUNT = 10_000
BARRIER_TIMEOUT = 180.0

CASE_ALIASES = {
    "single-1": "single-1",
    "single-n": "single-N",
    "single-N": "single-N",
    "batch": "batch",
    "batch-1000": "batch",
    "hot": "hot",
}

# Targets (PostgreSQL only): (label, subject run, baseline run, minimum ratio)
#   run keys are "<impl>:<case>" with case in single-1, single-N, batch, hot, hot-s1
COMPARISONS = [
    # case label,       subject,          baseline,           baseline label,               target
    ("single-1",        "ours:single-1",  "raw:single-1",     "hand-written SQL",           None),
    ("single-1",        "ours:single-1",  "plpgsql:single-1", "PL/pgSQL function",          None),
    ("single-{N}",      "ours:single-N",  "plpgsql:single-N", "PL/pgSQL function",          1.0),
    ("single-{N}",      "ours:single-N",  "raw:single-N",     "hand-written SQL",           0.5),
    ("batch-{B}",       "ours:batch",     "raw:batch",        "set-based SQL batch",        0.4),
    ("hot-{N} s=8",     "ours:hot",       "ours:single-N",    "ours spread (single-{N})",   0.7),
    ("hot-{N} s=1",     "ours:hot-s1",    "ours:single-N",    "ours spread (single-{N})",   None),
    ("hot-{N} s=8",     "ours:hot",       "raw:hot",          "hand-written SQL hot",       None),
    ("hot-{N} s=8",     "ours:hot",       "plpgsql:hot",      "PL/pgSQL function hot",      None),
    ("hot-{N} (info)",  "raw:hot",        "raw:single-N",     "hand-written SQL spread",    None),
    ("hot-{N} (info)",  "plpgsql:hot",    "plpgsql:single-N", "PL/pgSQL function spread",   None),
]


# --------------------------------------------------------------------------
# CPU accounting (Linux /proc; silently absent elsewhere)
# --------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_cpu() -> tuple[float, float] | None:
    """(busy seconds, total seconds) summed over all CPUs since boot."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()[1:]
        vals = [int(x) for x in parts[:8]]
        user, nice, system, idle, iowait, irq, softirq, steal = (vals + [0] * 8)[:8]
        busy = user + nice + system + irq + softirq + steal
        return busy / _CLK_TCK, (busy + idle + iowait) / _CLK_TCK
    except OSError:
        return None


def _postgres_cpu(dbname: str | None = None) -> dict[int, float]:
    """CPU seconds (user+system) of local 'postgres' processes: the server's own
    (checkpointer, walwriter, ...) and, when dbname is given, only the client
    backends connected to that database (other sessions' backends are left out)."""
    out: dict[int, float] = {}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                data = f.read()
        except OSError:
            continue
        lpar, rpar = data.find("("), data.rfind(")")
        if data[lpar + 1:rpar] != "postgres":
            continue
        if dbname is not None:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            # client backends are titled "postgres: <cluster>: <user> <db> <host>(<port>) <state>"
            if "(" in title and f" {dbname} " not in title:
                continue
        fields = data[rpar + 2:].split()
        # fields[0] is state (field 3); utime/stime are fields 14/15 -> idx 11/12
        out[int(pid)] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


class CpuSampler:
    """CPU counters (and, on PostgreSQL, the WAL position) at start and stop."""

    def __init__(self, track_postgres: bool, dbname: str | None = None, dsn: str | None = None):
        self.track_postgres = track_postgres
        self.dbname = dbname
        self.m0 = self.p0 = self.lsn0 = None
        self.conn = None
        if dsn:
            try:
                import psycopg2

                self.conn = psycopg2.connect(dsn)
                self.conn.autocommit = True
            except Exception:
                self.conn = None

    def _lsn(self):
        if self.conn is None:
            return None
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT pg_current_wal_lsn()")
                return cur.fetchone()[0]
        except Exception:
            return None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def start(self):
        self.lsn0 = self._lsn()
        self.m0 = _machine_cpu()
        self.p0 = _postgres_cpu(self.dbname) if self.track_postgres else None

    def stop(self) -> dict:
        m1 = _machine_cpu()
        res: dict = {}
        if self.m0 and m1:
            res["machine_busy_s"] = m1[0] - self.m0[0]
            res["machine_total_s"] = m1[1] - self.m0[1]
        if self.track_postgres and self.p0 is not None:
            p1 = _postgres_cpu(self.dbname)
            res["postgres_s"] = sum(v - self.p0.get(pid, 0.0) for pid, v in p1.items())
        lsn1 = self._lsn()
        if self.lsn0 and lsn1:
            with self.conn.cursor() as cur:
                cur.execute("SELECT pg_wal_lsn_diff(%s, %s)", (lsn1, self.lsn0))
                res["wal_bytes"] = int(cur.fetchone()[0])
        return res


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def _balance(normal_side: str, debits: int, credits: int) -> int:
    return debits - credits if normal_side == "debit" else credits - debits


def _pg_dsn(sqlalchemy_or_libpq_url: str) -> str:
    """A URL psycopg2 accepts (drop any '+driver' suffix)."""
    parts = urlsplit(sqlalchemy_or_libpq_url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "postgres":
        scheme = "postgresql"
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def _with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def _sa_url(libpq_url: str) -> str:
    parts = urlsplit(libpq_url)
    return urlunsplit(("postgresql+psycopg2", parts.netloc, parts.path, parts.query, parts.fragment))


def _retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "pgcode", None) in ("40001", "40P01", "55P03"):
        return True
    msg = str(orig).lower()
    return "database is locked" in msg or "database table is locked" in msg


def _pick_pair(rng: random.Random, n: int) -> tuple[int, int]:
    a = rng.randrange(n)
    b = rng.randrange(n - 1)
    if b >= a:
        b += 1
    return a, b


def _transfers(rng: random.Random, kind: str, n: int, count: int):
    """Yield (from_index, to_index, amount). to_index == -1 means the hot account."""
    for _ in range(count):
        amt = rng.randint(1, MAX_AMOUNT)
        if kind == "hot":
            yield rng.randrange(n), -1, amt
        else:
            a, b = _pick_pair(rng, n)
            yield a, b, amt


def ledger_import_error() -> str | None:
    try:
        from ledger import (  # noqa: F401
            AccountType, EntryRequest, PostingLine, open_account, post_entries, post_entry,
        )
    except Exception as exc:  # ImportError, or a half-written module
        return f"{type(exc).__name__}: {exc}"
    return None


def _ledger_error_class():
    try:
        from ledger.errors import LedgerError
    except Exception:
        from ledger import LedgerError  # type: ignore
    return LedgerError


# --------------------------------------------------------------------------
# Baseline schema (hand-written SQL + PL/pgSQL)
# --------------------------------------------------------------------------

PG_RAW_SCHEMA = """
CREATE TABLE bench_account (
    id          bigint PRIMARY KEY,
    code        text NOT NULL UNIQUE,
    normal_side text NOT NULL CHECK (normal_side IN ('debit', 'credit')),
    unbounded   boolean NOT NULL DEFAULT false,
    debits      bigint NOT NULL DEFAULT 0,
    credits     bigint NOT NULL DEFAULT 0,
    version     bigint NOT NULL DEFAULT 0
);
CREATE TABLE bench_entry (
    id          bigserial PRIMARY KEY,
    code        text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE bench_posting (
    id            bigserial PRIMARY KEY,
    entry_id      bigint NOT NULL REFERENCES bench_entry (id),
    account_id    bigint NOT NULL REFERENCES bench_account (id),
    side          text NOT NULL CHECK (side IN ('debit', 'credit')),
    amount        bigint NOT NULL CHECK (amount > 0),
    balance_after bigint NOT NULL,
    version       bigint NOT NULL
);
CREATE INDEX bench_posting_account_idx ON bench_posting (account_id, id);
CREATE INDEX bench_posting_entry_idx ON bench_posting (entry_id);

CREATE FUNCTION bench_transfer(p_from bigint, p_to bigint, p_amount bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r       bench_account%ROWTYPE;
    f       bench_account%ROWTYPE;
    t       bench_account%ROWTYPE;
    f_after bigint;
    t_after bigint;
    eid     bigint;
BEGIN
    IF p_amount <= 0 OR p_from = p_to THEN
        RAISE EXCEPTION 'invalid transfer' USING ERRCODE = '22023';
    END IF;
    FOR r IN SELECT * FROM bench_account WHERE id IN (p_from, p_to) ORDER BY id FOR UPDATE LOOP
        IF r.id = p_from THEN f := r; ELSE t := r; END IF;
    END LOOP;
    IF f.id IS NULL OR t.id IS NULL THEN
        RAISE EXCEPTION 'account not found' USING ERRCODE = 'P0002';
    END IF;
    f_after := CASE WHEN f.normal_side = 'debit' THEN f.debits + p_amount - f.credits
                    ELSE f.credits - (f.debits + p_amount) END;
    t_after := CASE WHEN t.normal_side = 'debit' THEN t.debits - (t.credits + p_amount)
                    ELSE t.credits + p_amount - t.debits END;
    IF (NOT f.unbounded AND f_after < 0) OR (NOT t.unbounded AND t_after < 0) THEN
        RAISE EXCEPTION 'insufficient funds' USING ERRCODE = 'P0001';
    END IF;
    UPDATE bench_account SET debits = debits + p_amount, version = version + 1 WHERE id = p_from;
    UPDATE bench_account SET credits = credits + p_amount, version = version + 1 WHERE id = p_to;
    INSERT INTO bench_entry (code) VALUES ('transfer') RETURNING id INTO eid;
    INSERT INTO bench_posting (entry_id, account_id, side, amount, balance_after, version)
    VALUES (eid, p_from, 'debit',  p_amount, f_after, f.version + 1),
           (eid, p_to,   'credit', p_amount, t_after, t.version + 1);
    RETURN eid;
END
$$;
"""

SQLITE_RAW_SCHEMA = """
CREATE TABLE bench_account (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL UNIQUE,
    normal_side TEXT NOT NULL CHECK (normal_side IN ('debit', 'credit')),
    unbounded   INTEGER NOT NULL DEFAULT 0,
    debits      INTEGER NOT NULL DEFAULT 0,
    credits     INTEGER NOT NULL DEFAULT 0,
    version     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE bench_entry (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE bench_posting (
    id            INTEGER PRIMARY KEY,
    entry_id      INTEGER NOT NULL REFERENCES bench_entry (id),
    account_id    INTEGER NOT NULL REFERENCES bench_account (id),
    side          TEXT NOT NULL CHECK (side IN ('debit', 'credit')),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    balance_after INTEGER NOT NULL,
    version       INTEGER NOT NULL
);
CREATE INDEX bench_posting_account_idx ON bench_posting (account_id, id);
CREATE INDEX bench_posting_entry_idx ON bench_posting (entry_id);
"""


def _raw_account_rows(n: int):
    """User accounts 1..n (bounded liabilities, funded), the hot brand n+1."""
    rows = [(i + 1, f"bench:user:{i:05d}", "credit", False, 0, FUNDING_MINOR, 1) for i in range(n)]
    rows.append((n + 1, "bench:brand", "credit", False, 0, 0, 0))
    return rows


def setup_raw_pg(dsn: str, n: int) -> None:
    import psycopg2
    from psycopg2.extras import execute_values

    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(PG_RAW_SCHEMA)
            execute_values(
                cur,
                "INSERT INTO bench_account (id, code, normal_side, unbounded, debits, credits, version) VALUES %s",
                _raw_account_rows(n),
            )
        with conn, conn.cursor() as cur:
            cur.execute("ANALYZE bench_account")
    finally:
        conn.close()


def _sqlite_connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def setup_raw_sqlite(path: str, n: int) -> None:
    conn = _sqlite_connect(path)
    try:
        conn.executescript(SQLITE_RAW_SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO bench_account (id, code, normal_side, unbounded, debits, credits, version)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(a, c, s, int(u), d, cr, v) for a, c, s, u, d, cr, v in _raw_account_rows(n)],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Ours: schema and accounts
# --------------------------------------------------------------------------

def migrate_ours(url: str) -> str:
    try:
        from service.migrate import upgrade  # type: ignore
    except ImportError:
        upgrade = None
    if upgrade is not None:
        upgrade(url)
        return "service.migrate.upgrade"
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(REPO / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["url"] = url
    command.upgrade(cfg, "head")
    return "alembic upgrade head"


def ours_codes(n: int) -> tuple[list[str], str, str]:
    return [f"bench:user:{i:05d}" for i in range(n)], "bench:brand:s8", "bench:brand:s1"


def setup_ours(url: str, n: int, engine_kw: dict) -> str:
    from ledger import AccountType, EntryRequest, PostingLine, open_account, post_entries
    from service.db import make_engine, make_session_factory

    how = migrate_ours(url)
    users, brand8, brand1 = ours_codes(n)
    engine = make_engine(url, **engine_kw)
    try:
        Session = make_session_factory(engine)
        with Session() as s, s.begin():
            open_account(s, "custody:bank", "Bank (bench)", AccountType.ASSET, CURRENCY)
            for code in users:
                open_account(s, code, code, AccountType.LIABILITY, CURRENCY, min_balance_minor=0)
            open_account(s, brand8, "Brand, 8 shards", AccountType.LIABILITY, CURRENCY,
                         min_balance_minor=0, balance_shards=8)
            open_account(s, brand1, "Brand, 1 shard", AccountType.LIABILITY, CURRENCY,
                         min_balance_minor=0, balance_shards=1)
        reqs = [
            EntryRequest(code="funding", postings=[
                PostingLine("custody:bank", "debit", FUNDING_MINOR, CURRENCY),
                PostingLine(code, "credit", FUNDING_MINOR, CURRENCY),
            ])
            for code in users
        ]
        for i in range(0, len(reqs), 1000):
            with Session() as s, s.begin():
                post_entries(s, reqs[i:i + 1000], atomic=True)
    finally:
        engine.dispose()
    return how


# --------------------------------------------------------------------------
# Operations (built inside each client process)
# --------------------------------------------------------------------------

def _make_op(spec: dict, idx: int):
    """Return (op, close). op() does one unit of work -> (ok, failed, retried)."""
    rng = random.Random(spec["seed"] * 1_000_003 + idx * 7919 + zlib.crc32(spec["key"].encode()))
    impl, backend, kind = spec["impl"], spec["backend"], spec["kind"]
    n, batch = spec["accounts"], spec["batch_size"]

    if impl == "ours":
        return _make_ours_op(spec, rng, kind, n, batch)
    if backend == "postgresql":
        import psycopg2

        conn = psycopg2.connect(spec["dsn"])
        if impl == "plpgsql":
            conn.autocommit = True
            return _make_plpgsql_op(conn, rng, kind, n), conn.close
        if kind == "batch":
            return _make_raw_pg_batch(conn, rng, n, batch), conn.close
        return _make_raw_pg_single(conn, rng, kind, n), conn.close
    conn = _sqlite_connect(spec["sqlite_raw"])
    if kind == "batch":
        return _make_raw_sqlite_batch(conn, rng, n, batch), conn.close
    return _make_raw_sqlite_single(conn, rng, kind, n), conn.close


def _make_ours_op(spec, rng, kind, n, batch):
    from sqlalchemy.exc import DBAPIError

    from ledger import EntryRequest, PostingLine, post_entries, post_entry
    from service.db import make_engine, make_session_factory

    LedgerError = _ledger_error_class()
    engine = make_engine(spec["ours_url"], **spec["engine_kw"])
    Session = make_session_factory(engine)
    users, brand8, brand1 = ours_codes(n)
    hot = brand1 if spec["key"].endswith("hot-s1") else brand8
    if spec["prime"]:
        _prime_ours_caches(Session, users + [brand8, brand1])

    def request(a, b, amt):
        return EntryRequest(code="transfer", postings=[
            PostingLine(users[a], "debit", amt, CURRENCY),
            PostingLine(hot if b < 0 else users[b], "credit", amt, CURRENCY),
        ])

    if kind == "batch":
        def op():
            reqs = [request(a, b, amt) for a, b, amt in _transfers(rng, kind, n, batch)]
            try:
                with Session() as s, s.begin():
                    results = post_entries(s, reqs, atomic=False)
            except DBAPIError as exc:
                if _retryable(exc):
                    return 0, 0, 1
                raise
            ok = sum(1 for r in results if r.error is None)
            return ok, len(results) - ok, 0
    else:
        def op():
            (a, b, amt), = _transfers(rng, kind, n, 1)
            req = request(a, b, amt)
            try:
                with Session() as s, s.begin():
                    post_entry(s, req)
            except LedgerError:
                return 0, 1, 0
            except DBAPIError as exc:
                if _retryable(exc):
                    return 0, 0, 1
                raise
            return 1, 0, 0

    return op, engine.dispose


def _prime_ours_caches(Session, codes: list[str]) -> bool:
    """Warm the ledger's per-engine account-shape cache for every account, as a
    long-running process would have it. A fresh client process would otherwise
    pay an extra lookup query on its first transfer to each of the 1,000
    accounts, which a 1 s warm-up does not cover. --cold-caches turns it off."""
    from ledger import preload_accounts

    with Session() as s, s.begin():
        preload_accounts(s, set(codes))
    return True


def _make_plpgsql_op(conn, rng, kind, n):
    import psycopg2

    cur = conn.cursor()
    hot_id = n + 1

    def op():
        (a, b, amt), = _transfers(rng, kind, n, 1)
        try:
            cur.execute("SELECT bench_transfer(%s, %s, %s)", (a + 1, hot_id if b < 0 else b + 1, amt))
            cur.fetchone()
        except psycopg2.Error as exc:
            if exc.pgcode == "P0001":
                return 0, 1, 0
            if _retryable(exc):
                return 0, 0, 1
            raise
        return 1, 0, 0

    return op


def _make_raw_pg_single(conn, rng, kind, n):
    import psycopg2

    cur = conn.cursor()
    hot_id = n + 1

    def op():
        (a, b, amt), = _transfers(rng, kind, n, 1)
        src, dst = a + 1, (hot_id if b < 0 else b + 1)
        try:
            cur.execute(
                "SELECT id, normal_side, unbounded, debits, credits, version FROM bench_account"
                " WHERE id IN (%s, %s) ORDER BY id FOR UPDATE", (src, dst))
            rows = {r[0]: r for r in cur.fetchall()}
            _, fn, fu, fd, fc, fv = rows[src]
            _, tn, tu, td, tc, tv = rows[dst]
            f_after = _balance(fn, fd + amt, fc)
            t_after = _balance(tn, td, tc + amt)
            if (not fu and f_after < 0) or (not tu and t_after < 0):
                conn.rollback()
                return 0, 1, 0
            cur.execute("UPDATE bench_account SET debits = debits + %s, version = version + 1"
                        " WHERE id = %s", (amt, src))
            cur.execute("UPDATE bench_account SET credits = credits + %s, version = version + 1"
                        " WHERE id = %s", (amt, dst))
            cur.execute("INSERT INTO bench_entry (code) VALUES ('transfer') RETURNING id")
            eid = cur.fetchone()[0]
            cur.execute(
                "INSERT INTO bench_posting (entry_id, account_id, side, amount, balance_after, version)"
                " VALUES (%s, %s, 'debit', %s, %s, %s), (%s, %s, 'credit', %s, %s, %s)",
                (eid, src, amt, f_after, fv + 1, eid, dst, amt, t_after, tv + 1))
            conn.commit()
        except psycopg2.Error as exc:
            conn.rollback()
            if _retryable(exc):
                return 0, 0, 1
            raise
        return 1, 0, 0

    return op


def _plan_batch(state: dict, transfers):
    """Apply transfers to in-memory locked account state (id -> [normal, unbounded,
    debits, credits, version]). Returns (n_accepted, n_failed, postings) where
    postings are (entry_index, account_id, side, amount, balance_after, version)."""
    postings = []
    accepted = failed = 0
    for src, dst, amt in transfers:
        f, t = state[src], state[dst]
        f_after = _balance(f[0], f[2] + amt, f[3])
        t_after = _balance(t[0], t[2], t[3] + amt)
        if (not f[1] and f_after < 0) or (not t[1] and t_after < 0):
            failed += 1
            continue
        f[2] += amt
        f[4] += 1
        t[3] += amt
        t[4] += 1
        postings.append((accepted, src, "debit", amt, f_after, f[4]))
        postings.append((accepted, dst, "credit", amt, t_after, t[4]))
        accepted += 1
    return accepted, failed, postings


def _batch_transfers(rng, n, batch):
    hot_id = n + 1
    return [(a + 1, hot_id if b < 0 else b + 1, amt) for a, b, amt in _transfers(rng, "batch", n, batch)]


def _make_raw_pg_batch(conn, rng, n, batch):
    import psycopg2

    cur = conn.cursor()

    def op():
        transfers = _batch_transfers(rng, n, batch)
        ids = sorted({x for s, d, _ in transfers for x in (s, d)})
        try:
            cur.execute(
                "SELECT id, normal_side, unbounded, debits, credits, version FROM bench_account"
                " WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (ids,))
            state = {r[0]: list(r[1:]) for r in cur.fetchall()}
            accepted, failed, postings = _plan_batch(state, transfers)
            if accepted:
                cur.execute("SELECT nextval('bench_entry_id_seq') FROM generate_series(1, %s)", (accepted,))
                eids = [r[0] for r in cur.fetchall()]
                cur.execute(
                    "INSERT INTO bench_entry (id, code) SELECT unnest(%s::bigint[]), 'transfer'", (eids,))
                cur.execute(
                    "INSERT INTO bench_posting (entry_id, account_id, side, amount, balance_after, version)"
                    " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::bigint[],"
                    " %s::bigint[], %s::bigint[])",
                    ([eids[p[0]] for p in postings], [p[1] for p in postings], [p[2] for p in postings],
                     [p[3] for p in postings], [p[4] for p in postings], [p[5] for p in postings]))
                cur.execute(
                    "UPDATE bench_account a SET debits = v.debits, credits = v.credits, version = v.version"
                    " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])"
                    " AS v(id, debits, credits, version) WHERE a.id = v.id",
                    (ids, [state[i][2] for i in ids], [state[i][3] for i in ids], [state[i][4] for i in ids]))
            conn.commit()
        except psycopg2.Error as exc:
            conn.rollback()
            if _retryable(exc):
                return 0, 0, 1
            raise
        return accepted, failed, 0

    return op


def _make_raw_sqlite_single(conn, rng, kind, n):
    hot_id = n + 1

    def op():
        (a, b, amt), = _transfers(rng, kind, n, 1)
        src, dst = a + 1, (hot_id if b < 0 else b + 1)
        try:
            conn.execute("BEGIN IMMEDIATE")
            rows = {r[0]: r for r in conn.execute(
                "SELECT id, normal_side, unbounded, debits, credits, version FROM bench_account"
                " WHERE id IN (?, ?) ORDER BY id", (src, dst))}
            _, fn, fu, fd, fc, fv = rows[src]
            _, tn, tu, td, tc, tv = rows[dst]
            f_after = _balance(fn, fd + amt, fc)
            t_after = _balance(tn, td, tc + amt)
            if (not fu and f_after < 0) or (not tu and t_after < 0):
                conn.execute("ROLLBACK")
                return 0, 1, 0
            conn.execute("UPDATE bench_account SET debits = debits + ?, version = version + 1"
                         " WHERE id = ?", (amt, src))
            conn.execute("UPDATE bench_account SET credits = credits + ?, version = version + 1"
                         " WHERE id = ?", (amt, dst))
            eid = conn.execute("INSERT INTO bench_entry (code) VALUES ('transfer')").lastrowid
            conn.execute(
                "INSERT INTO bench_posting (entry_id, account_id, side, amount, balance_after, version)"
                " VALUES (?, ?, 'debit', ?, ?, ?), (?, ?, 'credit', ?, ?, ?)",
                (eid, src, amt, f_after, fv + 1, eid, dst, amt, t_after, tv + 1))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if _retryable(exc):
                return 0, 0, 1
            raise
        return 1, 0, 0

    return op


def _make_raw_sqlite_batch(conn, rng, n, batch):
    def op():
        transfers = _batch_transfers(rng, n, batch)
        ids = sorted({x for s, d, _ in transfers for x in (s, d)})
        try:
            conn.execute("BEGIN IMMEDIATE")
            marks = ",".join("?" * len(ids))
            state = {r[0]: list(r[1:]) for r in conn.execute(
                "SELECT id, normal_side, unbounded, debits, credits, version FROM bench_account"
                f" WHERE id IN ({marks})", ids)}
            accepted, failed, postings = _plan_batch(state, transfers)
            if accepted:
                base = conn.execute("SELECT COALESCE(MAX(id), 0) FROM bench_entry").fetchone()[0]
                conn.executemany("INSERT INTO bench_entry (id, code) VALUES (?, 'transfer')",
                                 [(base + 1 + i,) for i in range(accepted)])
                conn.executemany(
                    "INSERT INTO bench_posting (entry_id, account_id, side, amount, balance_after, version)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [(base + 1 + p[0],) + p[1:] for p in postings])
                conn.executemany(
                    "UPDATE bench_account SET debits = ?, credits = ?, version = ? WHERE id = ?",
                    [(state[i][2], state[i][3], state[i][4], i) for i in ids])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if _retryable(exc):
                return 0, 0, 1
            raise
        return accepted, failed, 0

    return op


# --------------------------------------------------------------------------
# Client process and one run
# --------------------------------------------------------------------------

def _worker(spec: dict, idx: int, barrier, queue, sampled) -> None:
    close = None
    # A forked client inherits the parent's heap; without this, every garbage
    # collection in the client walks those objects too, and the client whose
    # operations allocate the most (ours) pays for it in CPU per transfer.
    gc.freeze()
    try:
        op, close = _make_op(spec, idx)
        barrier.wait(timeout=BARRIER_TIMEOUT)
        t = time.monotonic()
        warm_end = t + spec["warmup"]
        end = warm_end + spec["seconds"]
        while time.monotonic() < warm_end:
            op()
        ok = failed = retried = 0
        cpu0 = time.process_time()
        m_start = time.monotonic()
        while True:
            o, f, r = op()
            ok += o
            failed += f
            retried += r
            now = time.monotonic()
            if now >= end:
                break
        cpu1 = time.process_time()
        queue.put({"idx": idx, "ok": ok, "failed": failed, "retried": retried,
                   "elapsed": now - m_start, "cpu_s": cpu1 - cpu0})
        # keep the connection (and its server backend) until the parent has read
        # the CPU counters, or that backend's CPU would vanish from /proc
        sampled.wait(timeout=60)
    except BaseException:
        try:
            barrier.abort()
        except Exception:
            pass
        queue.put({"idx": idx, "error": traceback.format_exc()})
    finally:
        if close is not None:
            try:
                close()
            except Exception:
                pass


def run_one(spec: dict) -> dict:
    ctx = mp.get_context("fork")
    clients = spec["clients"]
    barrier = ctx.Barrier(clients + 1)
    queue = ctx.Queue()
    sampled = ctx.Event()
    procs = [ctx.Process(target=_worker, args=(spec, i, barrier, queue, sampled), daemon=True)
             for i in range(clients)]
    for p in procs:
        p.start()
    is_pg = spec["backend"] == "postgresql"
    sampler = CpuSampler(track_postgres=is_pg, dbname=spec.get("pg_dbname"),
                         dsn=spec["dsn"] if is_pg else None)  # opened after the fork
    results: list[dict] = []
    try:
        try:
            barrier.wait(timeout=BARRIER_TIMEOUT)
        except threading.BrokenBarrierError:
            pass  # a worker failed during setup; its error is in the queue
        else:
            warm_end = time.monotonic() + spec["warmup"]
            time.sleep(max(0.0, warm_end - time.monotonic()))
            sampler.start()
            end = warm_end + spec["seconds"]
            time.sleep(max(0.0, end - time.monotonic()))
        cpu = sampler.stop() if sampler.m0 is not None else {}
        sampled.set()
        deadline = time.monotonic() + spec["seconds"] + spec["warmup"] + 120
        while len(results) < clients:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{spec['key']}: clients did not report in time")
            try:
                results.append(queue.get(timeout=min(remaining, 5)))
            except Exception:
                if not any(p.is_alive() for p in procs) and queue.empty():
                    raise RuntimeError(f"{spec['key']}: a client process died without reporting")
    finally:
        sampled.set()
        sampler.close()
        for p in procs:
            p.join(timeout=10)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)

    errors = [r["error"] for r in results if "error" in r]
    if errors:
        real = [e for e in errors if "BrokenBarrierError" not in e] or errors
        raise RuntimeError(f"{spec['key']} ({spec['backend']}) failed in a client:\n{real[0]}")

    ok = sum(r["ok"] for r in results)
    tps = sum(r["ok"] / r["elapsed"] for r in results if r["elapsed"] > 0)
    wall = max(r["elapsed"] for r in results)
    client_cpu = sum(r["cpu_s"] for r in results)
    out = {
        "impl": spec["impl"], "backend": spec["backend"], "case": spec["case"], "key": spec["key"],
        "clients": clients, "transfers": ok, "failed": sum(r["failed"] for r in results),
        "retried": sum(r["retried"] for r in results), "seconds": round(wall, 3),
        "tps": tps, "client_cpu_s": client_cpu,
        "client_cpu_ms_per_tx": 1000 * client_cpu / ok if ok else None,
    }
    if "wal_bytes" in cpu:
        out["wal_bytes"] = cpu["wal_bytes"]
        # WAL is cluster-wide: other databases' writes would count too
        out["wal_bytes_per_tx"] = cpu["wal_bytes"] / ok if ok else None
    if "postgres_s" in cpu:
        out["postgres_cpu_s"] = cpu["postgres_s"]
        out["postgres_cpu_ms_per_tx"] = 1000 * cpu["postgres_s"] / ok if ok else None
    if cpu.get("machine_total_s"):
        ncpu = os.cpu_count() or 1
        window = cpu["machine_total_s"] / ncpu
        out["machine_busy_pct"] = 100.0 * cpu["machine_busy_s"] / cpu["machine_total_s"]
        out["machine_cores_busy"] = cpu["machine_busy_s"] / window
        out["client_cores"] = client_cpu / window
        out["postgres_cores"] = cpu.get("postgres_s", 0.0) / window
        # kernel work not charged to a process (network, I/O) and any other load on the machine
        out["other_cores"] = max(0.0, out["machine_cores_busy"] - out["client_cores"] - out["postgres_cores"])
    return out


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------

class PgEnv:
    backend = "postgresql"

    def __init__(self, maint_url: str):
        self.maint_dsn = _pg_dsn(maint_url)
        self.dbname = f"bench_ledger_{os.getpid()}"
        self.dsn = _with_database(self.maint_dsn, self.dbname)
        self.ours_url = _sa_url(self.dsn)
        self.created = False

    def _maint(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.maint_dsn)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create(self) -> None:
        self._maint(f'CREATE DATABASE "{self.dbname}"')
        self.created = True

    def drop(self) -> None:
        if self.created:
            self._maint(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            self.created = False

    def before_run(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.dsn)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CHECKPOINT")
        finally:
            conn.close()

    def describe(self) -> dict:
        import psycopg2

        conn = psycopg2.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('server_version'), current_setting('synchronous_commit'),"
                            " current_setting('fsync'), current_setting('shared_buffers')")
                v, sc, fs, sb = cur.fetchone()
        finally:
            conn.close()
        return {"server_version": v, "synchronous_commit": sc, "fsync": fs, "shared_buffers": sb}


class SqliteEnv:
    backend = "sqlite"

    def __init__(self, keep: bool = False):
        self.dir = None
        self.keep = keep

    def create(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench_ledger_")
        self.raw_path = os.path.join(self.dir, "raw.db")
        self.ours_path = os.path.join(self.dir, "ours.db")
        self.ours_url = "sqlite:///" + self.ours_path

    def drop(self) -> None:
        if self.dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def before_run(self) -> None:
        for path in (self.raw_path, self.ours_path):
            if os.path.exists(path):
                conn = sqlite3.connect(path, timeout=30)
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    conn.close()

    def describe(self) -> dict:
        return {"sqlite_version": sqlite3.sqlite_version, "journal_mode": "WAL", "synchronous": "NORMAL",
                "dir": self.dir}


def plan_runs(backend: str, cases: list[str], impls: list[str], ours_ok: bool) -> list[tuple[str, str]]:
    """[(impl, case)] in execution order. case: single-1, single-N, batch, hot, hot-s1."""
    runs = []
    baselines = [i for i in ("raw", "plpgsql") if i in impls and not (i == "plpgsql" and backend != "postgresql")]
    want_ours = "ours" in impls and ours_ok
    for case in ("single-1", "single-N", "batch", "hot"):
        ours_needs = case == "single-N" and "hot" in cases  # hot target is relative to ours spread
        if case not in cases and not (want_ours and ours_needs):
            continue
        if case in cases:
            for impl in baselines:
                if case == "batch" and impl == "plpgsql":
                    continue
                runs.append((impl, case))
        if want_ours:
            runs.append(("ours", case))
            if case == "hot":
                runs.append(("ours", "hot-s1"))
    return runs


def run_backend(env, args, cases, impls, ours_ok, log) -> tuple[list[dict], dict]:
    runs = plan_runs(env.backend, cases, impls, ours_ok)
    results: list[dict] = []
    env.create()
    info: dict = {}
    try:
        info = env.describe() if env.backend == "sqlite" else {}
        t0 = time.monotonic()
        if any(i in ("raw", "plpgsql") for i, _ in runs):
            if env.backend == "postgresql":
                setup_raw_pg(env.dsn, args.accounts)
            else:
                setup_raw_sqlite(env.raw_path, args.accounts)
        if any(i == "ours" for i, _ in runs):
            info["ours_migration"] = setup_ours(env.ours_url, args.accounts, args.engine_kw)
        if env.backend == "postgresql":
            info.update(env.describe())
        info["setup_s"] = round(time.monotonic() - t0, 2)
        log(f"[{env.backend}] setup done in {info['setup_s']} s; {len(runs)} runs")
        for impl, case in runs:
            kind = "single" if case.startswith("single") else ("batch" if case == "batch" else "hot")
            clients = 1 if case == "single-1" else (args.batch_clients if case == "batch" else args.clients)
            spec = {
                "impl": impl, "backend": env.backend, "case": case, "key": f"{impl}:{case}", "kind": kind,
                "clients": clients, "accounts": args.accounts, "batch_size": args.batch_size,
                "seconds": args.seconds, "warmup": args.warmup, "seed": args.seed,
                "engine_kw": args.engine_kw, "prime": not args.cold_caches,
                "dsn": getattr(env, "dsn", None), "ours_url": env.ours_url,
                "pg_dbname": getattr(env, "dbname", None),
                "sqlite_raw": getattr(env, "raw_path", None),
            }
            env.before_run()
            try:
                res = run_one(spec)
            except Exception as exc:  # record and go on: one broken case should not hide the rest
                log(f"[{env.backend}] {impl:8s} {case:9s} FAILED: {exc}")
                results.append({"impl": impl, "backend": env.backend, "case": case, "key": spec["key"],
                                "clients": clients, "error": str(exc)})
                continue
            results.append(res)
            log(f"[{env.backend}] {impl:8s} {case:9s} x{clients}: {res['tps']:9.1f} tx/s  "
                f"(ok={res['transfers']} failed={res['failed']} retried={res['retried']}, "
                f"client cpu {_fmt_ms(res.get('client_cpu_ms_per_tx'))} ms/tx, "
                f"pg cpu {_fmt_ms(res.get('postgres_cpu_ms_per_tx'))} ms/tx)")
    finally:
        env.drop()
    return results, info


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------

def _fmt_ms(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _fmt_cores(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _fmt_tps(v) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def compare(results: list[dict], backends: list[str], n_clients: int, batch: int) -> list[dict]:
    by = {(r["backend"], r["key"]): r for r in results if "error" not in r}
    out = []
    for backend in backends:
        for label, subj, base, base_label, target in COMPARISONS:
            s, b = by.get((backend, subj)), by.get((backend, base))
            if s is None and b is None:
                continue
            if subj.startswith("ours") and base.startswith("ours") and s is None and b is None:
                continue
            if backend != "postgresql" and "plpgsql" in (subj + base):
                continue
            tgt = target if backend == "postgresql" else None
            ratio = s["tps"] / b["tps"] if s and b and b["tps"] > 0 else None
            if tgt is None:
                verdict = "-"
            elif ratio is None:
                verdict = "n/a"
            else:
                verdict = "PASS" if ratio >= tgt else "MISS"
            out.append({
                "case": label.format(N=n_clients, B=batch), "backend": backend,
                "subject": subj, "subject_tps": s["tps"] if s else None,
                "baseline": base_label.format(N=n_clients, B=batch), "baseline_key": base,
                "baseline_tps": b["tps"] if b else None,
                "ratio": ratio, "target": tgt, "result": verdict,
            })
    return out


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def print_report(results, comparisons, ours_error) -> None:
    subj_names = {"ours": "ours", "raw": "raw SQL", "plpgsql": "PL/pgSQL"}
    rows = []
    for c in comparisons:
        impl = c["subject"].split(":")[0]
        subj = subj_names[impl] + (" hot" if "hot" in c["subject"] else "")
        rows.append([
            c["case"], c["backend"], subj, _fmt_tps(c["subject_tps"]), c["baseline"],
            _fmt_tps(c["baseline_tps"]), "n/a" if c["ratio"] is None else f"{c['ratio']:.3f}",
            "-" if c["target"] is None else f">= {c['target']:.1f}", c["result"],
        ])
    print()
    print("Comparisons (ratio = measured / baseline; targets apply to PostgreSQL)")
    print(_table(["case", "backend", "measured", "tx/s", "baseline", "tx/s", "ratio", "target", "result"],
                 rows, right={3, 5, 6}))
    if ours_error:
        print(f"\nNOTE: 'ours' was not measured — ledger not importable ({ours_error})")

    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["backend"], r["impl"], r["case"], str(r["clients"]), "FAILED"] + ["-"] * 10)
            continue
        rows.append([
            r["backend"], r["impl"], r["case"], str(r["clients"]), _fmt_tps(r["tps"]),
            str(r["transfers"]), str(r["failed"]), str(r["retried"]),
            _fmt_ms(r.get("client_cpu_ms_per_tx")), _fmt_ms(r.get("postgres_cpu_ms_per_tx")),
            _fmt_cores(r.get("client_cores")), _fmt_cores(r.get("postgres_cores") if r["backend"] == "postgresql" else None),
            _fmt_cores(r.get("other_cores")), _fmt_cores(r.get("machine_cores_busy")),
            "-" if r.get("wal_bytes_per_tx") is None else f"{r['wal_bytes_per_tx']:,.0f}",
        ])
    print()
    print(f"All runs. CPU per transfer: 'client' = the client processes (incl. the SQLite engine), "
          f"'pg' = this database's backends + server processes.\nCores (of {os.cpu_count()}) busy on "
          f"average: client, pg, other (kernel work not charged to a process, and any other load), total.\n"
          f"WAL B/tx: PostgreSQL WAL bytes written per transfer during the run (cluster-wide).")
    print(_table(["backend", "impl", "case", "clients", "tx/s", "ok", "failed", "retried",
                  "client ms/tx", "pg ms/tx", "client", "pg", "other", "total", "WAL B/tx"], rows,
                 right=set(range(3, 15))))
    for r in results:
        if "error" in r:
            print(f"\nFAILED {r['backend']} {r['key']}:\n{r['error']}")
    noisy = [r for r in results if (r.get("other_cores") or 0) > 0.6]
    if noisy:
        print(f"\nNOTE: {len(noisy)} run(s) saw > 0.6 cores of 'other' CPU: other load on the machine "
              f"may have skewed them ({', '.join(r['backend'] + ' ' + r['key'] for r in noisy)})")


# --------------------------------------------------------------------------
# --profile: where one client's time goes (ours, in-process)
# --------------------------------------------------------------------------

def profile_ours(env, args, log) -> None:
    """Post --profile-count single transfers in this process: count SQL
    statements per transfer, split wall time into 'inside the DB driver'
    (round trips + server work) and the rest (Python), and print cProfile."""
    import cProfile
    import io
    import pstats

    from sqlalchemy import event

    from ledger import EntryRequest, PostingLine, post_entry
    from service.db import make_engine, make_session_factory

    env.create()
    try:
        setup_ours(env.ours_url, args.accounts, args.engine_kw)
        engine = make_engine(env.ours_url, **args.engine_kw)
        Session = make_session_factory(engine)
        users, _, _ = ours_codes(args.accounts)
        rng = random.Random(args.seed)
        stats = {"stmts": 0, "driver_s": 0.0, "driver_cpu_s": 0.0}
        sample: list[str] = []

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn, cursor, statement, parameters, context, executemany):
            conn.info["_bench_t"] = time.perf_counter()
            conn.info["_bench_c"] = time.process_time()
            stats["stmts"] += 1
            if stats.get("record"):
                sample.append(" ".join(statement.split())[:160])

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn, cursor, statement, parameters, context, executemany):
            stats["driver_s"] += time.perf_counter() - conn.info.pop("_bench_t", time.perf_counter())
            stats["driver_cpu_s"] += time.process_time() - conn.info.pop("_bench_c", time.process_time())

        def one(record=False):
            a, b = _pick_pair(rng, args.accounts)
            amt = rng.randint(1, MAX_AMOUNT)
            stats["record"] = record
            with Session() as s, s.begin():
                post_entry(s, EntryRequest(code="transfer", postings=[
                    PostingLine(users[a], "debit", amt, CURRENCY),
                    PostingLine(users[b], "credit", amt, CURRENCY)]))
            stats["record"] = False

        count = args.profile_count
        warm = max(50, 2 * args.accounts)  # touch every account: per-engine caches warm
        for _ in range(warm):
            one()
        one(record=True)

        backend_pid = None
        if env.backend == "postgresql":
            # the pool holds one connection (single thread): its server backend does all the work
            with engine.connect() as c:
                backend_pid = c.exec_driver_sql("SELECT pg_backend_pid()").scalar()

        def backend_cpu():
            if backend_pid is None:
                return 0.0
            return _postgres_cpu(None).get(backend_pid, 0.0)

        def timed(prof=None):
            stats.update(stmts=0, driver_s=0.0, driver_cpu_s=0.0)
            b0 = backend_cpu()
            cpu0, t0 = time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            for _ in range(count):
                one()
            if prof:
                prof.disable()
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            server = "" if backend_pid is None else \
                f", server backend CPU {1000 * (backend_cpu() - b0) / count:.3f} ms/tx"
            return (f"wall {1000 * wall / count:.3f} ms/tx, client CPU {1000 * cpu / count:.3f} ms/tx{server}, "
                    f"{stats['stmts'] / count:.2f} SQL statements/tx (+COMMIT), "
                    f"{1000 * stats['driver_s'] / count:.3f} ms/tx in cursor.execute "
                    f"(of which client CPU {1000 * stats['driver_cpu_s'] / count:.3f})")

        plain = timed()
        prof = cProfile.Profile()
        profiled = timed(prof)
        engine.dispose()

        print(f"\nProfile: ours, {env.backend}, {count} single transfers, 1 client, in-process, "
              f"after {warm} warm-up transfers")
        print(f"  no profiler: {plain}")
        print(f"  cProfile on: {profiled}")
        print("  statements of one transfer (excluding BEGIN/COMMIT):")
        for stmt in sample:
            print(f"    {stmt}")
        st = pstats.Stats(prof)
        areas: dict[str, float] = {}
        total = 0.0
        for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in st.stats.items():
            if "psycopg2" in func or func in ("<method 'execute' of 'psycopg2.extensions.cursor' objects>",
                                              "<method 'commit' of 'psycopg2.extensions.connection' objects>"):
                area = "psycopg2 calls (mostly waiting on the server)"
            elif "/sqlalchemy/" in filename:
                area = "sqlalchemy (python)"
            elif "/ledger/" in filename:
                area = "ledger (python)"
            elif filename.endswith("ledger_bench.py"):
                area = "benchmark client"
            else:
                area = "other (stdlib, builtins, uuid, json, ...)"
            areas[area] = areas.get(area, 0.0) + tt
            total += tt
        print("  self time by area (cProfile, inflates Python by ~2x):")
        for area, tt in sorted(areas.items(), key=lambda kv: -kv[1]):
            print(f"    {area:48s} {1000 * tt / count:7.3f} ms/tx  {100 * tt / total:5.1f}%")
        for order in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats(order).print_stats(25)
            text = buf.getvalue()
            print(f"\n  top 25 by {order}:")
            print(text[text.find("   ncalls"):].rstrip())
    finally:
        env.drop()


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run (default 1)")
    p.add_argument("--clients", type=int, default=8, help="clients for the multi-client cases (default 8)")
    p.add_argument("--batch-clients", type=int, default=1, help="clients for the batch case (default 1)")
    p.add_argument("--batch-size", type=int, default=1000, help="transfers per commit in the batch case")
    p.add_argument("--accounts", type=int, default=1000, help="accounts transfers are spread over")
    p.add_argument("--only", action="append", default=None, metavar="CASE",
                   help="run only these cases: single-1, single-n (=single-8), batch, hot; "
                        "repeatable or comma-separated (hot also runs ours single-N for its ratio)")
    p.add_argument("--impl", default="ours,raw,plpgsql",
                   help="comma-separated implementations to run (default ours,raw,plpgsql)")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="maintenance database URL; a throwaway database is created next to it")
    p.add_argument("--no-pre-ping", action="store_true",
                   help="pass pool_pre_ping=False to make_engine for ours (diagnostic)")
    p.add_argument("--profile", action="store_true",
                   help="instead of the benchmark: profile ours posting single transfers in-process "
                        "(statements per transfer, driver vs Python time, cProfile top 25)")
    p.add_argument("--profile-count", type=int, default=500, help="transfers to profile (default 500)")
    p.add_argument("--cold-caches", action="store_true",
                   help="do not warm ours' per-process account-shape cache before a run")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    p.add_argument("--keep-sqlite", action="store_true", help="keep the SQLite temp files")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)

    if args.only:
        cases = []
        for chunk in args.only:
            for name in filter(None, (x.strip() for x in chunk.split(","))):
                key = CASE_ALIASES.get(name) or CASE_ALIASES.get(name.lower())
                if key is None and name.lower().startswith("single-"):
                    key = "single-N"
                if key is None:
                    p.error(f"unknown case {name!r}")
                cases.append(key)
        args.cases = cases
    else:
        args.cases = ["single-1", "single-N", "batch", "hot"]
    args.impls = [x.strip() for x in args.impl.split(",") if x.strip()]
    bad = set(args.impls) - {"ours", "raw", "plpgsql"}
    if bad:
        p.error(f"unknown implementation(s): {', '.join(sorted(bad))}")
    if args.clients < 1 or args.batch_clients < 1 or args.accounts < 2 or args.batch_size < 1:
        p.error("clients, batch size must be >= 1 and accounts >= 2")
    args.engine_kw = {"pool_pre_ping": False} if args.no_pre_ping else {}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if args.profile:
        err = ledger_import_error()
        if err:
            print(f"ledger not importable: {err}", file=sys.stderr)
            return 2
        for backend in backends:
            profile_ours(PgEnv(args.pg_url) if backend == "postgresql" else SqliteEnv(), args, log)
        return 0
    ours_error = ledger_import_error() if "ours" in args.impls else None
    if ours_error:
        log(f"WARNING: ledger not importable, measuring baselines only: {ours_error}")
    started = time.monotonic()
    results: list[dict] = []
    infos: dict = {}
    for backend in backends:
        env = PgEnv(args.pg_url) if backend == "postgresql" else SqliteEnv(keep=args.keep_sqlite)
        try:
            res, info = run_backend(env, args, args.cases, args.impls, ours_error is None, log)
        except Exception as exc:
            if backend == "postgresql" and type(exc).__name__ == "OperationalError" and not env.created:
                print(f"cannot reach PostgreSQL at {args.pg_url}: {exc}".strip(), file=sys.stderr)
                return 2
            raise
        results += res
        infos[backend] = info
    comparisons = compare(results, backends, args.clients, args.batch_size)
    print_report(results, comparisons, ours_error)
    total = time.monotonic() - started
    print(f"\nTotal {total:.0f} s; {args.seconds:g} s measured + {args.warmup:g} s warm-up per run; "
          f"{args.accounts} accounts; {os.cpu_count()} CPUs; python {platform.python_version()}")
    for backend, info in infos.items():
        print(f"  {backend}: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "args": {k: v for k, v in vars(args).items() if k != "engine_kw"} | {"engine_kw": args.engine_kw},
                "ours_error": ours_error, "backends": infos, "runs": results,
                "comparisons": comparisons, "total_s": total,
            }, f, indent=2, default=str)
        log(f"wrote {args.json}")
    misses = [c for c in comparisons if c["result"] == "MISS"]
    return 1 if (args.strict and misses) else 0


if __name__ == "__main__":
    sys.exit(main())
