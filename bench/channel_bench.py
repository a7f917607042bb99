#!/usr/bin/env python
"""Channel benchmark: import a realistic network through the CSV path, then
time a buyer's full price list and a single SKU price, against baselines
measured in the same run.

Data (``--scale 1``, the issue's sizes), generated deterministically from
``--seed`` as CSV text in memory:

* regions: China → 34 provinces → 10 cities each → 8 districts each (3,095);
  21 customer types in a 2-level tree; 5 grades; 50 groups; 4 units;
  150 categories in 3 levels (6 × 4 × 5);
* catalog: 1,500 products, 5,000 SKUs, list prices 5.00–500.00 CNY;
* parties: 1 brand, 200 level-1 distributors (buy from the brand),
  1,800 level-2 distributors (each buys from one level-1 distributor of its
  province), 300,000 stores (each covered by one level-2 distributor, in a
  district of its city; about 166 per distributor), with grades, groups,
  tags and quality flags; 0.5 % of stores frozen;
* relationships (brand → L1, L1 → L2), coverage (L2 → store), a sale
  permission for every distributor (90 % everything in its province, the
  rest 2–4 top categories);
* 20,000 price strategies (about 115,000 tier rows): 1,000 of the brand's
  (targeting grades, customer types, regions, groups or named distributors;
  percent-of-list rules with SKU-less quantity tiers over a category or
  everything, and fixed prices for 5–50 SKUs with some quantity tiers) and
  7–12 per distributor (mostly percent of list for everything or a
  category, some fixed prices for up to 20 SKUs, some for named buyers,
  grades, regions, groups or tags; a few inactive, expired or not yet valid).

What it measures (a fresh throwaway database: PostgreSQL by default, dropped
at the end; ``--backend sqlite`` uses a temp file):

1. **import**: every file through ``channel_api.bulk.import_csv``, in
   dependency order, one transaction per file; seconds and rows/s per kind
   and the total. Baseline: the same party rows (and group memberships)
   COPYed (SQLite: executemany) into scratch tables shaped like
   ``channel_party`` with the same indexes, CSV parsing included, so the
   ratio shows what share of the import is checking.
2. **price list**: ``prices.price_list`` for ``--samples`` random stores
   from their level-2 distributor, and for level-1 distributors from the
   brand (the brand's 1,000 strategies: the heaviest list); each call is a
   request: its own session and transaction. Baseline ("floor"): one plain
   ``SELECT code, list_price_minor FROM catalog_sku`` building as many
   ``PriceLine`` tuples as ours returned, in its own transaction too.
3. **single price**: ``prices.price_for`` for ``--price-samples`` random
   (store, SKU it may buy) pairs, quantity 1; baseline: one primary-key
   SELECT of the SKU row in its own transaction.

Calls of ours and of the baseline alternate, so both see the same machine.
PASS/MISS against the issue's targets (PostgreSQL, scale 1): the whole import
under 10 minutes; a store's price list under 100 ms at p99; a single price
under 5 ms at p99. The cyclic garbage collector's part is measured too (full
collections per series, latency without the collector's time in each call;
``--gc-freeze`` / ``--gc-threshold`` show what changing it would do).
``--profile`` then shows where a price list's and a single price's time goes:
each step of the use case timed on its own with the statements it sends, the
statements of a median call with EXPLAIN ANALYZE (PostgreSQL), and cProfile.

    .venv/bin/python bench/channel_bench.py --scale 0.05              # ~15 s
    .venv/bin/python bench/channel_bench.py --json /tmp/channel.json  # full size, ~4 min
    .venv/bin/python bench/channel_bench.py --backend sqlite --scale 0.05
"""
from __future__ import annotations

import argparse
import cProfile
import csv
import gc
import io
import json
import math
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The targets.
TARGET_IMPORT_S = 600.0
TARGET_LIST_P99_MS = 100.0
TARGET_PRICE_P99_MS = 5.0

BRAND = "BRAND"
CURRENCY = "CNY"
ORDER = ("regions", "customer_types", "grades", "groups", "units", "categories", "parties",
         "catalog", "relationships", "coverage", "sale_permissions", "strategies")
VALID_FROM = ("2025-01-01T00:00:00+08:00", "2025-04-01T00:00:00+08:00",
              "2025-07-01T00:00:00+08:00", "2025-10-01T00:00:00+08:00",
              "2026-01-01T00:00:00+08:00", "2026-03-01T00:00:00+08:00")
EXPIRED = ("2024-01-01T00:00:00+08:00", "2025-01-01T00:00:00+08:00")   # from, to: in the past
FUTURE = "2027-06-01T00:00:00+08:00"                                   # not yet valid
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
SHOP_WORDS = ("便利店", "超市", "商行", "小卖部", "食品店", "烟酒店", "餐厅", "批发部")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Data generation
# --------------------------------------------------------------------------

@dataclass
class World:
    """The CSV files and what the measurements need to know about them."""

    csv: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    l1: list[str] = field(default_factory=list)
    l2: list[str] = field(default_factory=list)
    l2_seller: dict[str, str] = field(default_factory=dict)          # L2 -> its L1
    stores: list[tuple[str, str]] = field(default_factory=list)      # (store, its L2), active only
    store_count: int = 0
    sellable: dict[str, list[str] | None] = field(default_factory=dict)  # distributor -> SKU codes (None: all)
    skus: list[str] = field(default_factory=list)
    strategies: dict[str, int] = field(default_factory=dict)


def _writer():
    buf = io.StringIO()
    return buf, csv.writer(buf, lineterminator="\n")


def _money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def _percent(bp: int) -> str:
    return f"{bp // 100}.{bp % 100:02d}"


def _phone(rng: random.Random) -> str:
    return f"1{rng.choice('3578')}{rng.randrange(10**9):09d}"


def generate(scale: float, seed: int) -> World:
    rng = random.Random(seed)
    w = World()

    def n(full: int, least: int) -> int:
        return max(least, round(full * scale))

    n_l1, n_l2, n_stores = n(200, 2), n(1800, 4), n(300_000, 50)
    n_skus, n_products, n_brand = n(5000, 40), n(1500, 12), n(1000, 20)

    def done(kind: str, buf: io.StringIO, count: int) -> None:
        w.csv[kind], w.rows[kind] = buf.getvalue(), count

    # -- regions: CN > 34 provinces > 10 cities > 8 districts -------------------------
    buf, out = _writer()
    out.writerow(("code", "name", "parent", "level"))
    out.writerow(("CN", "中国", "", "country"))
    provinces = [f"CN-P{p:02d}" for p in range(1, 35)]
    cities = {p: [f"{p}-C{c:02d}" for c in range(1, 11)] for p in provinces}
    districts: dict[str, list[str]] = {}
    count = 1
    for p in provinces:
        out.writerow((p, f"省 {p[-2:]}", "CN", "province"))
        count += 1
    for p in provinces:
        for c in cities[p]:
            out.writerow((c, f"市 {c[-6:]}", p, "city"))
            count += 1
    for p in provinces:
        for c in cities[p]:
            districts[c] = [f"{c}-D{d}" for d in range(1, 9)]
            for d in districts[c]:
                out.writerow((d, f"区 {d[-9:]}", c, "district"))
                count += 1
    done("regions", buf, count)

    # -- customer types (21), grades (5), groups (50), units (4) ------------------------
    type_tree = {"retail": ["supermarket", "convenience", "grocery", "hypermarket", "kiosk"],
                 "catering": ["restaurant", "hotel", "canteen", "bar"],
                 "online": ["ecommerce", "o2o"],
                 "wholesale": ["dist-l1", "dist-l2", "wholesaler"],
                 "institution": ["school", "office"]}
    buf, out = _writer()
    out.writerow(("code", "name", "parent"))
    count = 0
    for root, children in type_tree.items():
        out.writerow((root, root.title(), ""))
        count += 1
    for root, children in type_tree.items():
        for child in children:
            out.writerow((f"{root}.{child}", child.title(), root))
            count += 1
    done("customer_types", buf, count)
    store_types = [f"{r}.{c}" for r in ("retail", "catering", "online", "institution")
                   for c in type_tree[r]]
    store_type_weights = [30 if t.startswith("retail.") else 6 for t in store_types]

    grades = ["A", "B", "C", "D", "E"]
    buf, out = _writer()
    out.writerow(("code", "name", "rank"))
    for rank, g in enumerate(grades, 1):
        out.writerow((g, f"Grade {g}", rank))
    done("grades", buf, len(grades))

    groups = [f"GRP{g:02d}" for g in range(1, 51)]
    buf, out = _writer()
    out.writerow(("code", "name"))
    for g in groups:
        out.writerow((g, f"Group {g[3:]}"))
    done("groups", buf, len(groups))

    buf, out = _writer()
    out.writerow(("code", "name"))
    for u, name in (("bottle", "瓶"), ("case", "箱"), ("pack", "包"), ("carton", "件")):
        out.writerow((u, name))
    done("units", buf, 4)

    # -- categories: 6 x 4 x 5 = 150 -----------------------------------------------------
    buf, out = _writer()
    out.writerow(("code", "name", "parent", "sort"))
    top = [f"K{a}" for a in range(1, 7)]
    mid = {t: [f"{t}.{b}" for b in range(1, 5)] for t in top}
    leaves = {m: [f"{m}.{c}" for c in range(1, 6)] for ms in mid.values() for m in ms}
    count = 0
    for t in top:
        out.writerow((t, f"类 {t}", "", top.index(t)))
        count += 1
    for t in top:
        for i, m in enumerate(mid[t]):
            out.writerow((m, f"类 {m}", t, i))
            count += 1
    for t in top:
        for m in mid[t]:
            for i, leaf in enumerate(leaves[m]):
                out.writerow((leaf, f"类 {leaf}", m, i))
                count += 1
    done("categories", buf, count)
    all_leaves = [leaf for ls in leaves.values() for leaf in ls]

    # -- catalog: products over leaf categories, SKUs over products -----------------------
    product_cat = [rng.choice(all_leaves) for _ in range(n_products)]
    sku_product = list(range(n_products)) + [rng.randrange(n_products)
                                            for _ in range(n_skus - n_products)]
    rng.shuffle(sku_product)
    buf, out = _writer()
    out.writerow(("product", "product_name", "category", "sku", "sku_name", "unit", "spec",
                  "barcode", "list_price", "currency", "status", "product_status"))
    skus_of: dict[str, list[str]] = {}            # any category -> SKU codes in its subtree
    sku_price: dict[str, int] = {}
    by_product: dict[int, list[int]] = {}
    for i, p in enumerate(sku_product):
        by_product.setdefault(p, []).append(i)
    for p in range(n_products):
        leaf = product_cat[p]
        for i in by_product.get(p, ()):
            code = f"SKU-{i + 1:05d}"
            price = int(math.exp(rng.uniform(math.log(500), math.log(50_000))))
            sku_price[code] = price
            w.skus.append(code)
            for depth in (1, 2, 3):
                skus_of.setdefault(".".join(leaf.split(".")[:depth]), []).append(code)
            out.writerow((f"P-{p + 1:04d}", f"产品 {p + 1}", leaf, code, f"规格 {i + 1}",
                          rng.choice(("bottle", "case", "case", "pack", "carton")),
                          rng.choice(("500ml×12", "330ml×24", "1L×6", "250g", "5kg", "")),
                          f"69{rng.randrange(10**11):011d}", _money(price), CURRENCY,
                          "active", "active"))
    done("catalog", buf, n_skus)
    w.skus.sort()
    categories_with_skus = list(skus_of)  # categories of any level holding SKUs

    # -- parties --------------------------------------------------------------------------
    buf, out = _writer()
    out.writerow(("code", "name", "role", "region", "customer_type", "grade", "owner_name",
                  "contact_phone", "address", "quality_customer", "status", "groups", "tags"))
    out.writerow((BRAND, "品牌总部", "brand", "CN", "wholesale", "", "品牌", "4008001234",
                  "总部大楼", "true", "active", "", ""))
    count = 1
    province_of: dict[str, str] = {}
    city_of: dict[str, str] = {}
    l1_by_province: dict[str, list[str]] = {}
    facts: dict[str, dict] = {}  # distributor -> region, grade, groups (for targeting)

    def distributor_row(code: str, level: int, region: str) -> None:
        grade = rng.choices(grades, (15, 30, 30, 20, 5))[0]
        member = [rng.choice(groups)] if rng.random() < 0.2 else []
        facts[code] = {"grade": grade, "groups": member}
        out.writerow((code, f"经销商 {code}", "distributor", region, f"wholesale.dist-l{level}",
                      grade, rng.choice(SURNAMES) + "总", _phone(rng), f"{region} 仓库",
                      "true" if rng.random() < 0.3 else "false", "active", "|".join(member), ""))

    for i in range(n_l1):
        code = f"D1-{i + 1:03d}"
        province = provinces[i % len(provinces)]
        province_of[code] = province
        l1_by_province.setdefault(province, []).append(code)
        w.l1.append(code)
        distributor_row(code, 1, province)
        count += 1
    served = sorted(l1_by_province)
    for i in range(n_l2):
        code = f"D2-{i + 1:04d}"
        province = served[i % len(served)]
        city = rng.choice(cities[province])
        province_of[code], city_of[code] = province, city
        w.l2_seller[code] = rng.choice(l1_by_province[province])
        w.l2.append(code)
        distributor_row(code, 2, city)
        count += 1
    stores_of: dict[str, list[str]] = {}
    for i in range(n_stores):
        code = f"S{i + 1:06d}"
        l2 = w.l2[rng.randrange(n_l2)]
        stores_of.setdefault(l2, []).append(code)
        frozen = rng.random() < 0.005
        if not frozen:
            w.stores.append((code, l2))
        r = rng.random()
        member = ([] if r < 0.82 else [rng.choice(groups)] if r < 0.97
                  else rng.sample(groups, 2))
        tags = [rng.choice(("vip", "new", "chain"))] if rng.random() < 0.05 else []
        grade = rng.choices(grades + [""], (10, 20, 35, 20, 10, 5))[0]
        out.writerow((code, f"{rng.choice(SURNAMES)}记{rng.choice(SHOP_WORDS)} {i + 1}", "store",
                      rng.choice(districts[city_of[l2]]),
                      rng.choices(store_types, store_type_weights)[0], grade,
                      rng.choice(SURNAMES) + rng.choice("伟芳娜敏静丽强磊军洋勇艳杰涛明超秀霞平刚"),
                      _phone(rng), f"{city_of[l2]} 路 {rng.randrange(1, 999)} 号",
                      "true" if rng.random() < 0.08 else "false",
                      "frozen" if frozen else "active", "|".join(sorted(member)), "|".join(tags)))
        count += 1
    w.store_count = n_stores
    done("parties", buf, count)

    # -- network ---------------------------------------------------------------------------
    buf, out = _writer()
    out.writerow(("seller", "buyer", "status", "product_all", "product_categories",
                  "product_skus", "valid_from", "valid_to"))
    for code in w.l1:
        out.writerow((BRAND, code, "active", "true", "", "", VALID_FROM[0], ""))
    for code in w.l2:
        out.writerow((w.l2_seller[code], code, "active", "true", "", "", VALID_FROM[0], ""))
    done("relationships", buf, n_l1 + n_l2)

    buf, out = _writer()
    out.writerow(("distributor", "store", "status"))
    count = 0
    for l2 in w.l2:
        for store in stores_of.get(l2, ()):
            out.writerow((l2, store, "active"))
            count += 1
    done("coverage", buf, count)

    buf, out = _writer()
    out.writerow(("party", "product_all", "product_categories", "product_skus", "regions"))
    sell_categories: dict[str, list[str] | None] = {}
    for code in w.l1 + w.l2:
        if rng.random() < 0.9:
            sell_categories[code] = None
            w.sellable[code] = None
            out.writerow((code, "true", "", "", province_of[code]))
        else:
            chosen = sorted(rng.sample(top, rng.randint(2, 4)))
            sell_categories[code] = chosen
            w.sellable[code] = sorted(s for c in chosen for s in skus_of.get(c, ()))
            out.writerow((code, "false", "|".join(chosen), "", province_of[code]))
    done("sale_permissions", buf, n_l1 + n_l2)

    # -- strategies --------------------------------------------------------------------------
    buf, out = _writer()
    out.writerow(("code", "owner", "name", "rule", "priority", "currency", "status",
                  "valid_from", "valid_to", "product_all", "product_categories", "product_skus",
                  "parties", "regions", "customer_types", "grades", "groups", "tags",
                  "tier_sku", "min_qty", "price", "percent"))
    tier_rows = 0
    strategy_count = {"brand": 0, "distributor": 0}

    def emit(code, owner, name, rule, priority, status, valid_from, valid_to, scope, customers,
             tiers):
        nonlocal tier_rows
        head = (code, owner, name, rule, priority, CURRENCY, status, valid_from, valid_to,
                "true" if scope == "all" else "false",
                "" if scope == "all" else "|".join(scope.get("categories", ())),
                "" if scope == "all" else "|".join(scope.get("skus", ())),
                *("|".join(customers.get(d, ())) for d in
                  ("parties", "regions", "customer_types", "grades", "groups", "tags")))
        for sku, min_qty, price, percent in tiers:
            out.writerow((*head, sku or "", min_qty, "" if price is None else _money(price),
                          "" if percent is None else _percent(percent)))
            tier_rows += 1

    def validity() -> tuple[str, str, str]:
        r = rng.random()
        if r < 0.03:
            return "inactive", rng.choice(VALID_FROM), ""
        if r < 0.06:
            return "active", EXPIRED[0], EXPIRED[1]
        if r < 0.07:
            return "active", FUTURE, ""
        return "active", rng.choice(VALID_FROM), ""

    def percent_tiers(lo: int) -> list[tuple]:
        bp = rng.randrange(lo, 9950, 50)
        tiers = [(None, 1, None, bp)]
        if rng.random() < 0.4:
            tiers.append((None, 10, None, bp - 200))
            if rng.random() < 0.5:
                tiers.append((None, 50, None, bp - 400))
        return tiers

    def fixed_tiers(chosen: list[str]) -> list[tuple]:
        tiers = []
        for sku in chosen:
            price = sku_price[sku] * rng.randrange(75, 99) // 100
            tiers.append((sku, 1, price, None))
            if rng.random() < 0.3:
                tiers.append((sku, 10, price * 97 // 100, None))
                if rng.random() < 0.3:
                    tiers.append((sku, 50, price * 94 // 100, None))
        return tiers

    for i in range(n_brand):
        code = f"B-{i + 1:04d}"
        status, valid_from, valid_to = validity()
        r = rng.random()
        if r < 0.30:
            customers = {"grades": sorted(rng.sample(grades, rng.randint(1, 2)))}
        elif r < 0.55:
            customers = {"regions": sorted(rng.sample(provinces, rng.randint(1, 3)))}
        elif r < 0.70:
            customers = {"customer_types": [rng.choice(("wholesale", "wholesale.dist-l1"))]}
        elif r < 0.80:
            customers = {"groups": sorted(rng.sample(groups, rng.randint(1, 3)))}
        elif r < 0.85:
            customers = {"parties": sorted(rng.sample(w.l1, min(len(w.l1), rng.randint(1, 5))))}
        else:
            customers = {}
        priority = rng.choice((0, 0, 1, 1, 2, 3, 5))
        if rng.random() < 0.5:
            scope = "all" if rng.random() < 0.4 else {"categories": [rng.choice(categories_with_skus)]}
            emit(code, BRAND, f"品牌折扣 {i + 1}", "percent", priority, status, valid_from,
                 valid_to, scope, customers, percent_tiers(8000))
        else:
            if rng.random() < 0.3:
                scope, pool = "all", w.skus
            else:
                cat = rng.choice(top + [m for ms in mid.values() for m in ms])
                scope, pool = {"categories": [cat]}, skus_of.get(cat) or w.skus
                if pool is w.skus:
                    scope = "all"
            chosen = sorted(rng.sample(pool, min(len(pool), rng.randint(5, 50))))
            emit(code, BRAND, f"品牌特价 {i + 1}", "fixed", priority, status, valid_from,
                 valid_to, scope, customers, fixed_tiers(chosen))
        strategy_count["brand"] += 1

    l2_of: dict[str, list[str]] = {}
    for l2, l1 in w.l2_seller.items():
        l2_of.setdefault(l1, []).append(l2)
    for owner in w.l1 + w.l2:
        level1 = owner in l2_of or owner.startswith("D1-")
        buyers = l2_of.get(owner, []) if level1 else stores_of.get(owner, [])
        cats = sell_categories[owner]
        pool_cats = ([c for c in categories_with_skus if cats is None or c.split(".")[0] in cats])
        for j in range(rng.randint(7, 12)):
            code = f"{owner}-S{j + 1:02d}"
            status, valid_from, valid_to = validity()
            r = rng.random()
            if r < 0.15 and buyers:
                customers = {"parties": sorted(rng.sample(buyers, min(len(buyers), rng.randint(1, 5))))}
            elif r < 0.30:
                customers = {"grades": sorted(rng.sample(grades, rng.randint(1, 2)))}
            elif r < 0.35:
                area = city_of.get(owner) or province_of[owner]
                customers = {"regions": [rng.choice(districts[area]) if area in districts
                                         else rng.choice(cities[area])]}
            elif r < 0.38:
                customers = {"groups": sorted(rng.sample(groups, rng.randint(1, 3)))}
            elif r < 0.40:
                customers = {"tags": ["vip"]}
            elif r < 0.42:
                customers = {"customer_types": ["wholesale.dist-l2" if level1
                                                else rng.choice(store_types).split(".")[0]]}
            else:
                customers = {}
            priority = rng.choice((0, 0, 0, 1, 1, 2))
            if rng.random() < 0.7:
                scope = ("all" if cats is None and rng.random() < 0.5
                         else {"categories": [rng.choice(pool_cats)]})
                emit(code, owner, f"折扣 {j + 1}", "percent", priority, status, valid_from,
                     valid_to, scope, customers, percent_tiers(8500))
            else:
                cat = rng.choice(pool_cats)
                chosen = sorted(rng.sample(skus_of[cat], min(len(skus_of[cat]), rng.randint(1, 20))))
                scope = {"skus": chosen} if rng.random() < 0.5 else {"categories": [cat]}
                emit(code, owner, f"特价 {j + 1}", "fixed", priority, status, valid_from,
                     valid_to, scope, customers, fixed_tiers(chosen))
            strategy_count["distributor"] += 1
    done("strategies", buf, tier_rows)
    w.strategies = strategy_count
    return w


# --------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------

class Database:
    """A fresh migrated database made with the test helpers
    (``tests/isolated_db.py``): PostgreSQL ``cl_test_<hex>`` or a SQLite file."""

    def __init__(self, backend: str, pg_url: str | None):
        if pg_url:
            os.environ["CL_TEST_PG_URL"] = pg_url
        from tests.isolated_db import create_database, drop_database

        self._drop = drop_database
        self.backend = backend
        self.tmp = tempfile.TemporaryDirectory(prefix="channel-bench-") if backend == "sqlite" else None
        self.url = create_database(backend, Path(self.tmp.name) if self.tmp else Path("."))

    def migrate(self) -> None:
        from service.migrate import upgrade

        upgrade(self.url)

    def drop(self) -> None:
        self._drop(self.url)
        if self.tmp is not None:
            self.tmp.cleanup()

    def describe(self, engine) -> dict:
        return _describe(engine, self.backend)


def _describe(engine, backend: str) -> dict:
    from sqlalchemy import text

    with engine.connect() as conn:
        if backend == "postgresql":
            v, sb, sc = conn.execute(text(
                "SELECT current_setting('server_version'), current_setting('shared_buffers'),"
                " current_setting('synchronous_commit')")).one()
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
            return {"server_version": v, "shared_buffers": sb, "synchronous_commit": sc,
                    "database_mb": round(size / 2**20)}
        v = conn.exec_driver_sql("SELECT sqlite_version()").scalar()
    path = engine.url.database
    return {"sqlite_version": v, "database_mb": round(os.path.getsize(path) / 2**20) if path else None}


# --------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------

class ProgressPrinter:
    """``bulk.import_csv``'s progress callback: a line to stderr on each new
    phase, at the end of one, and at most every 2 s in between."""

    def __init__(self, kind: str, started: float):
        self.kind, self.started = kind, started
        self.phase, self.last = None, 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase != self.phase or done >= total or now - self.last >= 2.0:
            log(f"[{now - self.started:7.1f}s] {self.kind:<16} {phase:<24} {done:>9,}/{total:,}")
            self.phase, self.last = phase, now


def import_all(Session, world: World) -> tuple[list[dict], bool]:
    from channel_api import bulk

    results, ok = [], True
    started = time.monotonic()
    for kind in ORDER:
        data = world.csv[kind]
        progress = ProgressPrinter(kind, started)
        t0 = time.perf_counter()
        with Session() as session, session.begin():
            report = bulk.import_csv(session, kind, data, actor="bench", progress=progress)
        seconds = time.perf_counter() - t0
        results.append({"kind": kind, "rows": report.rows, "created": report.created,
                        "updated": report.updated, "unchanged": report.unchanged,
                        "status": report.status, "seconds": seconds,
                        "rows_per_s": report.rows / seconds if seconds else None,
                        "bytes": len(data.encode())})
        log(f"[{time.monotonic() - started:7.1f}s] {kind:<16} {report.status} "
            f"{report.rows:,} rows in {seconds:.1f} s")
        if report.status != "applied":
            ok = False
            print(f"\nIMPORT OF {kind} REJECTED: {report.error_count} errors; the first:",
                  file=sys.stderr)
            for e in report.errors[:15]:
                print(f"  line {e.line} {e.field}: {e.reason}", file=sys.stderr)
            break
    return results, ok


PARTY_COPY_COLUMNS = ("id", "public_id", "code", "name", "role", "status", "region_id",
                      "customer_type_id", "grade_id", "owner_name", "contact_phone", "address",
                      "quality_customer", "created_at", "metadata")


def party_copy_baseline(engine, backend: str, data: str) -> dict:
    """The parties file written without checks: parse the CSV, map codes to
    ids, and COPY the rows (SQLite: executemany) into scratch tables shaped
    like ``channel_party`` and ``channel_party_group_member``, with the same
    indexes (no foreign keys), in one transaction. Dropped afterwards."""
    from ledger import new_uuid7, utcnow

    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if backend == "postgresql":
            cur.execute("CREATE TABLE bench_party_copy (LIKE channel_party INCLUDING DEFAULTS "
                        "INCLUDING CONSTRAINTS INCLUDING INDEXES)")
            cur.execute("CREATE TABLE bench_member_copy (LIKE channel_party_group_member "
                        "INCLUDING DEFAULTS INCLUDING INDEXES)")
        else:
            cur.execute("CREATE TABLE bench_party_copy AS SELECT * FROM channel_party WHERE 0")
            cur.execute("CREATE UNIQUE INDEX bench_party_copy_code ON bench_party_copy (code)")
            cur.execute("CREATE UNIQUE INDEX bench_party_copy_pid ON bench_party_copy (public_id)")
            for col in ("region_id", "customer_type_id", "grade_id"):
                cur.execute(f"CREATE INDEX bench_party_copy_{col} ON bench_party_copy ({col})")
            cur.execute("CREATE TABLE bench_member_copy AS SELECT * FROM channel_party_group_member WHERE 0")
            cur.execute("CREATE UNIQUE INDEX bench_member_copy_pk ON bench_member_copy (group_id, party_id)")
            cur.execute("CREATE INDEX bench_member_copy_party ON bench_member_copy (party_id)")
        raw.commit()

        t0 = time.perf_counter()
        maps = {}
        for table in ("channel_region", "channel_customer_type", "channel_grade", "channel_party_group"):
            cur.execute(f"SELECT code, id FROM {table}")
            maps[table] = dict(cur.fetchall())
        regions, types = maps["channel_region"], maps["channel_customer_type"]
        grades, groups = maps["channel_grade"], maps["channel_party_group"]
        now = utcnow()
        parties, members = [], []
        for i, row in enumerate(csv.DictReader(io.StringIO(data, newline="")), 1):
            parties.append((i, "pty_" + new_uuid7().hex, row["code"], row["name"], row["role"],
                            row["status"] or "active", regions[row["region"]],
                            types[row["customer_type"]], grades.get(row["grade"]),
                            row["owner_name"], row["contact_phone"], row["address"],
                            row["quality_customer"] == "true", now, "{}"))
            for g in filter(None, row["groups"].split("|")):
                members.append((groups[g], i))
        if backend == "postgresql":
            for table, columns, rows in (("bench_party_copy", PARTY_COPY_COLUMNS, parties),
                                         ("bench_member_copy", ("group_id", "party_id"), members)):
                buf = io.StringIO()
                out = csv.writer(buf, lineterminator="\n")
                for r in rows:
                    out.writerow(["" if v is None else v for v in r])
                buf.seek(0)
                cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN "
                                "WITH (FORMAT csv, NULL '')", buf)
        else:
            cur.execute("BEGIN")
            cur.executemany(f"INSERT INTO bench_party_copy ({', '.join(PARTY_COPY_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(PARTY_COPY_COLUMNS))})",
                            [(*r[:13], r[13].isoformat(), r[14]) for r in parties])
            cur.executemany("INSERT INTO bench_member_copy (group_id, party_id) VALUES (?, ?)",
                            members)
        raw.commit()
        seconds = time.perf_counter() - t0
        cur.execute("DROP TABLE bench_party_copy")
        cur.execute("DROP TABLE bench_member_copy")
        raw.commit()
        return {"rows": len(parties), "members": len(members), "seconds": seconds}
    finally:
        raw.close()


# --------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------

def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)]


def summary(ms: list[float]) -> dict:
    s = sorted(ms)
    return {"count": len(s), "median_ms": statistics.median(s), "p95_ms": percentile(s, 0.95),
            "p99_ms": percentile(s, 0.99), "max_ms": s[-1], "mean_ms": statistics.fmean(s)}


class GcMeter:
    """Time spent in CPython's cyclic garbage collector, by generation
    (``gc.callbacks``): a full (generation 2) collection walks every tracked
    object of the process, tens of ms here, and lands inside whichever
    call allocated the object that triggered it."""

    def __init__(self):
        self.ms = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase, info):
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            g = info["generation"]
            self.ms[g] += (time.perf_counter() - self._t0) * 1000
            self.count[g] += 1

    @property
    def total_ms(self) -> float:
        return sum(self.ms)

    def close(self):
        gc.callbacks.remove(self._callback)


def run_pairs(calls: list, ours, base, warmup: int, meter: GcMeter | None = None) -> dict:
    """Alternate ours(*args) and base(ours' result, *args) over ``calls``,
    each timed on its own; the first ``warmup`` calls are not counted.
    Also the collector's time inside each of ours' calls, and the full
    collections during the measured calls."""
    ours_ms, base_ms, outs, gc_ms = [], [], [], []
    gc.collect()
    full0, full_ms0 = (meter.count[2], meter.ms[2]) if meter else (0, 0.0)
    for i, args in enumerate(calls):
        if i == warmup and meter:
            full0, full_ms0 = meter.count[2], meter.ms[2]
        g0 = meter.total_ms if meter else 0.0
        t0 = time.perf_counter()
        result = ours(*args)
        t1 = time.perf_counter()
        g1 = meter.total_ms if meter else 0.0
        base(result, *args)
        t2 = time.perf_counter()
        if i >= warmup:
            ours_ms.append((t1 - t0) * 1000)
            base_ms.append((t2 - t1) * 1000)
            gc_ms.append(g1 - g0)
            outs.append(result)
    out = {"ours": ours_ms, "base": base_ms, "outs": outs, "gc_ms": gc_ms}
    if meter:
        out["full_collections"] = meter.count[2] - full0
        out["full_collection_ms"] = meter.ms[2] - full_ms0
    return out


def series(run: dict) -> dict:
    """Ours' summary with the collector's part: latency without the time
    the collector spent inside each call, and the full collections seen."""
    s = summary(run["ours"])
    s["without_gc"] = summary([t - g for t, g in zip(run["ours"], run["gc_ms"])])
    s["gc_ms_in_calls"] = sum(run["gc_ms"])
    s["full_collections"] = run.get("full_collections")
    s["full_collection_ms"] = run.get("full_collection_ms")
    return s


def measure_latency(Session, world: World, args, sku_ids: dict[str, int]) -> dict:
    from sqlalchemy import text

    from channel_api import prices
    from channel_api.pricing import PriceLine

    rng = random.Random(args.seed + 1)
    warmup = args.warmup
    floor_sql = text("SELECT code, list_price_minor FROM catalog_sku ORDER BY code")
    pk_sql = text("SELECT id, public_id, code, name, product_id, unit_id, spec, barcode, "
                  "list_price_minor, currency, status, updated_at FROM catalog_sku WHERE id = :id")

    def price_list(seller, buyer):
        with Session() as s, s.begin():
            return len(prices.price_list(s, seller=seller, buyer=buyer).lines)

    def floor(n_lines, seller, buyer):
        with Session() as s, s.begin():
            rows = s.execute(floor_sql).all()
            lines = [PriceLine(code, price, CURRENCY, "list_price", None, None, price)
                     for code, price in rows[:n_lines]]
        return len(lines)

    def price_for(seller, buyer, sku):
        with Session() as s, s.begin():
            return prices.price_for(s, seller=seller, buyer=buyer, sku=sku).resolution.unit_price_minor

    def pk(_result, seller, buyer, sku):
        with Session() as s, s.begin():
            return s.execute(pk_sql, {"id": sku_ids[sku]}).one()

    out = {}
    meter = GcMeter()
    stores = [rng.choice(world.stores) for _ in range(args.samples + warmup)]
    log(f"price list: {len(stores) - warmup} stores from their level-2 distributor ...")
    run = run_pairs([(l2, store) for store, l2 in stores], price_list, floor, warmup, meter)
    out["store_list"] = {**series(run), "lines": summary_lines(run["outs"]),
                         "floor": summary(run["base"])}
    l1s = [rng.choice(world.l1) for _ in range(args.l1_samples + warmup)]
    log(f"price list: {len(l1s) - warmup} level-1 distributors from the brand ...")
    run = run_pairs([(BRAND, l1) for l1 in l1s], price_list, floor, warmup, meter)
    out["l1_list"] = {**series(run), "lines": summary_lines(run["outs"]),
                      "floor": summary(run["base"])}

    def pick_sku(l2):
        pool = world.sellable.get(l2) or world.skus
        return rng.choice(pool)

    pairs = []
    for _ in range(args.price_samples + warmup):
        store, l2 = rng.choice(world.stores)
        pairs.append((l2, store, pick_sku(l2)))
    log(f"single price: {len(pairs) - warmup} (store, SKU) pairs ...")
    run = run_pairs(pairs, price_for, pk, warmup, meter)
    out["store_price"] = {**series(run), "baseline": summary(run["base"])}
    # Steady state: a server that has been up a while has every seller's
    # strategies cached (the series above touches about 1,100 of the 1,800
    # level-2 sellers for the first time). Warm them, then time the same pairs.
    for l2, store, sku in pairs:
        price_for(l2, store, sku)
    log(f"single price, sellers' strategies cached: {len(pairs) - warmup} pairs again ...")
    run = run_pairs(pairs, price_for, pk, warmup, meter)
    out["store_price_warm"] = {**series(run), "baseline": summary(run["base"])}
    pairs = [(BRAND, l1, rng.choice(world.skus))
             for l1 in (rng.choice(world.l1) for _ in range(args.l1_samples + warmup))]
    log(f"single price: {len(pairs) - warmup} (level-1 distributor, SKU) pairs from the brand ...")
    run = run_pairs(pairs, price_for, pk, warmup, meter)
    out["l1_price"] = {**series(run), "baseline": summary(run["base"])}
    meter.close()
    # What a server does at start (service/wsgi.py): load every seller's
    # strategies, the catalog and the trees, so no buyer waits for a load.
    from channel_api import snapshots
    snapshots.clear()
    t0 = time.perf_counter()
    with Session() as s, s.begin():
        warmed = prices.warm_caches(s)
    out["warm_caches"] = {"sellers": warmed, "seconds": time.perf_counter() - t0}
    log(f"warm_caches: {warmed} sellers in {out['warm_caches']['seconds']:.1f} s")
    t0 = time.perf_counter()
    gc.collect()
    out["full_collection_now_ms"] = (time.perf_counter() - t0) * 1000
    out["tracked_objects"] = len(gc.get_objects())
    out["gc_frozen"] = gc.get_freeze_count()
    return out


def summary_lines(lines: list[int]) -> dict:
    s = sorted(lines)
    return {"min": s[0], "median": statistics.median(s), "max": s[-1]}


# --------------------------------------------------------------------------
# Profile: where one call's time goes
# --------------------------------------------------------------------------

def profile(engine, Session, world: World, args) -> None:
    from sqlalchemy import event

    from channel_api import prices

    rng = random.Random(args.seed + 2)
    statements: list[list] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info["t0"] = time.perf_counter()

    def after(conn, cursor, statement, parameters, context, executemany):
        statements.append([statement, parameters, (time.perf_counter() - conn.info["t0"]) * 1000])

    def price_list(seller, buyer, *_):
        with Session() as s, s.begin():
            prices.price_list(s, seller=seller, buyer=buyer)

    def price_for(seller, buyer, sku):
        with Session() as s, s.begin():
            prices.price_for(s, seller=seller, buyer=buyer, sku=sku)

    def store_sku():
        store, l2 = rng.choice(world.stores)
        return l2, store, rng.choice(world.sellable.get(l2) or world.skus)

    cases = [("price_list for a store", price_list, [store_sku() for _ in range(30)]),
             ("price_list for a level-1 distributor from the brand", price_list,
              [(BRAND, rng.choice(world.l1)) for _ in range(30)]),
             ("price_for a store", price_for, [store_sku() for _ in range(200)])]
    for label, fn, calls in cases:
        print(f"\n== profile: {label} ({len(calls)} calls) ==")
        for call in calls[:3]:  # warm
            fn(*call)
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        walls = []
        try:
            for call in calls:
                statements.clear()
                t0 = time.perf_counter()
                fn(*call)
                walls.append(((time.perf_counter() - t0) * 1000, list(statements)))
        finally:
            event.remove(engine, "before_cursor_execute", before)
            event.remove(engine, "after_cursor_execute", after)
        wall = statistics.median(w for w, _ in walls)
        sql = statistics.median(sum(st[2] for st in sts) for _, sts in walls)
        print(f"median wall {wall:.2f} ms; in the driver (SQL round trips, server, fetch) "
              f"{sql:.2f} ms; Python {wall - sql:.2f} ms; {len(walls[0][1])} statements per call")
        # The statements of the median call, with their driver time.
        _, median_statements = sorted(walls, key=lambda x: x[0])[len(walls) // 2]
        for statement, params, ms in median_statements:
            one = " ".join(statement.split())
            print(f"  {ms:7.2f} ms  {one[:150]}{'…' if len(one) > 150 else ''}")
        if engine.dialect.name == "postgresql":
            explain(engine, median_statements)
        profiler = cProfile.Profile()
        profiler.enable()
        for call in calls:
            fn(*call)
        profiler.disable()
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream)
        stats.sort_stats("tottime").print_stats(18)
        stats.sort_stats("cumulative").print_stats(r"channel_api|sqlalchemy/orm/session", 18)
        text_out = stream.getvalue()
        text_out = text_out.replace(str(REPO) + "/", "").replace(sys.prefix + "/", "")
        print(text_out)


def stages(engine, Session, world: World, args) -> None:
    """Each step of ``prices.price_list`` / ``prices.price_for`` timed on its
    own (the same calls in the same order as those functions make them; the
    collector off so its pauses do not land in one step), with the
    statements each step sends. Medians over the calls."""
    from sqlalchemy import event, select

    from channel_api import assortment as assortments
    from channel_api import pricing, prices
    from channel_api.facts import buyer_facts
    from channel_api.models import Category, Product, Sku, Unit
    from channel_api.parties import party_row
    from channel_api.trees import paths
    from channel_api.values import SkuFacts
    from ledger import utcnow

    rng = random.Random(args.seed + 3)
    counter = [0]

    def count(*_):
        counter[0] += 1

    def run(label, calls, body):
        times: dict[str, list[float]] = {}
        sent: dict[str, int] = {}
        order: list[str] = []
        for call in calls[:5]:  # warm
            with Session() as s, s.begin():
                body(s, lambda name: None, *call)
        event.listen(engine, "before_cursor_execute", count)
        gc.collect()
        gc.disable()
        try:
            for call in calls:
                mark = [time.perf_counter(), counter[0]]

                def lap(name):
                    now = time.perf_counter()
                    if name not in times:
                        order.append(name)
                    times.setdefault(name, []).append((now - mark[0]) * 1000)
                    sent[name] = counter[0] - mark[1]
                    mark[0], mark[1] = now, counter[0]

                with Session() as s:
                    with s.begin():
                        lap("session (BEGIN goes with the first statement)")
                        body(s, lap, *call)
                    lap("COMMIT, and freeing the call's objects")
        finally:
            gc.enable()
            event.remove(engine, "before_cursor_execute", count)
        total = statistics.median([sum(v) for v in zip(*times.values())])
        print(f"\n== stages: {label} ({len(calls)} calls, collector off; median ms) ==")
        for name in order:
            print(f"  {statistics.median(times[name]):8.2f}  {sent[name]:>3} stmt  {name}")
        print(f"  {total:8.2f}  {sum(sent.values()):>3} stmt  total (median of per-call sums)")

    def pair_and_assortment(s, lap, seller, buyer, at):
        # prices.py as of 1ddf7b5 loads the parties once (_pair + assortment_of);
        # before, assortment() loaded them and party_row() loaded them again.
        if hasattr(prices, "_pair") and hasattr(assortments, "assortment_of"):
            seller_row, buyer_row = prices._pair(s, seller, buyer)
            lap("_pair(): seller and buyer")
            allowed = assortments.assortment_of(s, seller_row, buyer_row, at)
            lap("assortment_of(): relationship, sale permission, buyer region path")
        else:
            allowed = assortments.assortment(s, seller=seller, buyer=buyer, at=at)
            lap("assortment(): 2 parties, relationship, sale permission, buyer region path")
            seller_row, buyer_row = party_row(s, seller), party_row(s, buyer)
            lap("party_row() x 2 (the same two parties again)")
        return seller_row, buyer_row, allowed

    def list_body(s, lap, seller, buyer):
        at = utcnow()
        seller_row, buyer_row, allowed = pair_and_assortment(s, lap, seller, buyer, at)
        facts = buyer_facts(s, buyer_row)
        lap("buyer_facts(): grade, groups, tags; region path; customer type path")
        strategies = prices._load_strategies(s, seller_row, at=at, buyer=facts)
        lap("_load_strategies(): heads, scopes parsed, tiers")
        category_paths = paths(s, Category)
        lap("sku_facts() 1/3: category tree")
        rows = s.execute(
            select(Sku.id, Sku.public_id, Sku.code, Sku.name, Product.code, Unit.code,
                   Sku.list_price_minor, Sku.currency, Product.category_id)
            .join(Product, Product.id == Sku.product_id).join(Unit, Unit.id == Sku.unit_id)
            .where(Sku.status == "active", Product.status == "active")
            .order_by(Sku.code)).all()
        lap("sku_facts() 2/3: SKU query, rows through SQLAlchemy")
        all_skus = [SkuFacts(a, b, c, d, e, f, g, h, category_paths[i])
                    for a, b, c, d, e, f, g, h, i in rows]
        lap("sku_facts() 3/3: SkuFacts objects")
        skus = [x for x in all_skus if allowed.covers(x.code, x.category_path)]
        lap("assortment filter: Assortment.covers() per SKU")
        pricing.price_list(strategies, facts, skus, at, seller=seller_row.code)
        lap("pricing.price_list() (pure)")

    def price_body(s, lap, seller, buyer, sku):
        at = utcnow()
        seller_row, buyer_row, allowed = pair_and_assortment(s, lap, seller, buyer, at)
        sku_id, priced, _active = prices._one_sku(s, sku)
        allowed.why_not(priced.code, priced.category_path)
        lap("_one_sku(): SKU row, category path")
        facts = buyer_facts(s, buyer_row)
        lap("buyer_facts(): grade, groups, tags; region path; customer type path")
        strategies = prices._load_strategies(s, seller_row, at=None, sku_id=sku_id)
        lap("_load_strategies(all of the seller's, tiers for the SKU)")
        pricing.resolve(strategies, facts, priced, 1, at, seller=seller_row.code)
        lap("pricing.resolve() (pure)")

    def store_sku():
        store, l2 = rng.choice(world.stores)
        return l2, store, rng.choice(world.sellable.get(l2) or world.skus)

    try:
        run("price_list, a store from its L2 distributor", [store_sku()[:2] for _ in range(40)],
            list_body)
        run("price_list, an L1 distributor from the brand",
            [(BRAND, rng.choice(world.l1)) for _ in range(20)], list_body)
        run("price_for, a store from its L2 distributor", [store_sku() for _ in range(300)],
            price_body)
        run("price_for, an L1 distributor from the brand",
            [(BRAND, rng.choice(world.l1), rng.choice(world.skus)) for _ in range(40)], price_body)
    except Exception as exc:  # the replica went stale: the use cases changed shape
        print(f"\n(stage breakdown skipped: {type(exc).__name__}: {exc})")


def explain(engine, statements) -> None:
    """EXPLAIN ANALYZE every statement with its parameters; the three slowest
    in full."""
    raw = engine.raw_connection()
    plans = []
    try:
        cur = raw.cursor()
        for statement, params, _ in statements:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            lines = [r[0] for r in cur.fetchall()]
            execution = next((float(x.split()[-2]) for x in lines if x.startswith("Execution Time")), 0.0)
            planning = next((float(x.split()[-2]) for x in lines if x.startswith("Planning Time")), 0.0)
            plans.append((execution, planning, statement, lines))
        raw.rollback()
    finally:
        raw.close()
    print("  EXPLAIN ANALYZE (server execution / planning ms):")
    for execution, planning, statement, _ in plans:
        print(f"  {execution:7.2f} / {planning:5.2f}  {' '.join(statement.split())[:110]}")
    for execution, planning, statement, lines in sorted(plans, key=lambda p: -p[0])[:3]:
        print(f"\n  -- {' '.join(statement.split())[:200]}")
        for line in lines:
            print(f"     {line}")


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def verdict(value: float, target: float, scale: float, backend: str) -> str:
    result = "PASS" if value < target else "MISS"
    if scale != 1.0 or backend != "postgresql":
        result += " (not the issue's sizes/backend)"
    return result


def report(res: dict, args) -> None:
    imp = res.get("import")
    if imp:
        report_import(imp, args)
    report_latency(res, args)


def report_import(imp: dict, args) -> None:
    print(f"\nImport ({args.backend}, scale {args.scale:g}): one transaction per file through "
          "bulk.import_csv")
    print(f"  {'kind':<17}{'rows':>10}{'created':>10}{'MB':>7}{'seconds':>10}{'rows/s':>10}")
    for r in imp["kinds"]:
        print(f"  {r['kind']:<17}{r['rows']:>10,}{r['created']:>10,}{r['bytes'] / 2**20:>7.1f}"
              f"{r['seconds']:>10.2f}{r['rows_per_s'] or 0:>10,.0f}")
    print(f"  {'total':<17}{sum(r['rows'] for r in imp['kinds']):>10,}{'':>10}"
          f"{sum(r['bytes'] for r in imp['kinds']) / 2**20:>7.1f}{imp['total_s']:>10.2f}")
    base = imp.get("party_baseline")
    if base:
        parties = next(r for r in imp["kinds"] if r["kind"] == "parties")
        ratio = parties["seconds"] / base["seconds"]
        verb = "COPY" if args.backend == "postgresql" else "executemany"
        print(f"  baseline: parse + {verb} of the same {base['rows']:,} party rows and "
              f"{base['members']:,} group memberships into same-shaped scratch tables: "
              f"{base['seconds']:.2f} s; import/baseline {ratio:.1f}x "
              f"(checking and ORM writing ≈ {100 * (1 - 1 / ratio):.0f} % of the parties import)")


def report_latency(res: dict, args) -> None:
    imp = res.get("import")
    lat = res["latency"]
    print("\nLatency (ms; each call its own session and transaction; "
          f"{args.warmup} warm-up calls not counted)")
    print(f"  {'case':<44}{'n':>6}{'median':>9}{'p95':>9}{'p99':>9}{'max':>9}  lines")
    rows = [("price list, store from its L2 distributor", lat["store_list"]),
            ("  floor: SELECT code, list_price + tuples", lat["store_list"]["floor"]),
            ("price list, L1 distributor from the brand", lat["l1_list"]),
            ("  floor: SELECT code, list_price + tuples", lat["l1_list"]["floor"]),
            ("single price, store from its L2 distributor", lat["store_price"]),
            ("  baseline: SKU by primary key", lat["store_price"]["baseline"]),
            ("  the same, sellers' strategies cached", lat["store_price_warm"]),
            ("  baseline: SKU by primary key", lat["store_price_warm"]["baseline"]),
            ("single price, L1 distributor from the brand", lat["l1_price"]),
            ("  baseline: SKU by primary key", lat["l1_price"]["baseline"])]
    for label, s in rows:
        lines = s.get("lines")
        extra = f"  {lines['min']:,}–{lines['max']:,} (median {lines['median']:,.0f})" if lines else ""
        print(f"  {label:<44}{s['count']:>6}{s['median_ms']:>9.2f}{s['p95_ms']:>9.2f}"
              f"{s['p99_ms']:>9.2f}{s['max_ms']:>9.2f}{extra}")
    print("\nThe garbage collector's part (ms of CPython's cyclic collector inside ours' calls)")
    for label, key in (("store price list", "store_list"), ("L1 price list", "l1_list"),
                       ("store single price", "store_price"),
                       ("store single, cached", "store_price_warm"), ("L1 single price", "l1_price")):
        s = lat[key]
        w = s["without_gc"]
        print(f"  {label:<20} {s['full_collections']:>4} full collections "
              f"({s['full_collection_ms']:,.0f} ms) during the series; without the collector's "
              f"time: median {w['median_ms']:.2f}, p99 {w['p99_ms']:.2f} ms")
    warm = lat["warm_caches"]
    print(f"  warming the caches as a server does at start: {warm['sellers']:,} sellers' strategies, "
          f"the catalog and the trees in {warm['seconds']:.1f} s")
    print(f"  a full collection now takes {lat['full_collection_now_ms']:.0f} ms over "
          f"{lat['tracked_objects']:,} tracked objects ({lat['gc_frozen']:,} frozen)")
    print("\nRatios (ours / baseline, same run)")
    for label, a, b in (("store price list / floor", lat["store_list"], lat["store_list"]["floor"]),
                        ("L1 price list / floor", lat["l1_list"], lat["l1_list"]["floor"]),
                        ("store single price / PK select", lat["store_price"],
                         lat["store_price"]["baseline"]),
                        ("  sellers' strategies cached", lat["store_price_warm"],
                         lat["store_price_warm"]["baseline"]),
                        ("L1 single price / PK select", lat["l1_price"], lat["l1_price"]["baseline"])):
        print(f"  {label:<34} median {a['median_ms'] / b['median_ms']:6.1f}x   "
              f"p99 {a['p99_ms'] / b['p99_ms']:6.1f}x")

    print("\nTargets")
    targets = [
        ("whole import < 10 min", imp["total_s"] if imp else None, TARGET_IMPORT_S, "s"),
        ("store price list p99 < 100 ms", lat["store_list"]["p99_ms"], TARGET_LIST_P99_MS, "ms"),
        ("single price p99 < 5 ms (first touch)", lat["store_price"]["p99_ms"],
         TARGET_PRICE_P99_MS, "ms"),
        ("single price p99 < 5 ms (cached)", lat["store_price_warm"]["p99_ms"],
         TARGET_PRICE_P99_MS, "ms"),
    ]
    res["targets"] = []
    for label, value, target, unit in targets:
        if value is None:
            print(f"  {label:<32} {'(no import in this run)':>14}")
            continue
        v = verdict(value, target, args.scale, args.backend)
        res["targets"].append({"target": label, "value": value, "limit": target, "result": v})
        print(f"  {label:<38} {value:>10.2f} {unit:<3} {v}")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def code_version() -> str:
    """The commit measured, and whether the code under test differs from it."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                "channel_api", "service", "ledger"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0,
                   help="1.0 = the issue's sizes (300,000 stores, 5,000 SKUs, 20,000 strategies)")
    p.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    p.add_argument("--pg-url", default=None,
                   help="maintenance URL (default: CL_TEST_PG_URL or postgres@127.0.0.1:5432)")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--samples", type=int, default=200, help="store price lists timed")
    p.add_argument("--l1-samples", type=int, default=100,
                   help="level-1 price lists (and single prices) from the brand timed")
    p.add_argument("--price-samples", type=int, default=2000, help="single store prices timed")
    p.add_argument("--warmup", type=int, default=10, help="calls per case not counted")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, show where a price list's and a single price's time goes")
    p.add_argument("--gc-freeze", action="store_true",
                   help="gc.freeze() before the latency runs (as a server could after start-up): "
                        "full collections then skip every object alive at that point")
    p.add_argument("--gc-threshold", type=int, metavar="N",
                   help="gc.set_threshold(N, 10, 10) before the latency runs (default 700): with "
                        "N above what one call allocates, a call's objects die young")
    p.add_argument("--reuse-db", metavar="URL",
                   help="measure latency on a database kept by --keep (same --scale and --seed); "
                        "no import")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the database; print its URL")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from sqlalchemy import text

    from service.db import make_engine, make_session_factory

    started = time.monotonic()
    version = code_version()
    log(f"code: {version}")
    t0 = time.perf_counter()
    world = generate(args.scale, args.seed)
    gen_s = time.perf_counter() - t0
    log(f"generated in {gen_s:.1f} s: " + ", ".join(f"{k} {v:,}" for k, v in world.rows.items())
        + f"; strategies {world.strategies}")
    res: dict = {"args": vars(args), "code": version, "generate_s": gen_s, "rows": world.rows,
                 "strategies": world.strategies, "migrate_s": 0.0}
    db = None if args.reuse_db else Database(args.backend, args.pg_url)
    url = args.reuse_db or db.url
    if args.reuse_db:
        args.backend = "sqlite" if url.startswith("sqlite") else "postgresql"
    engine = None
    try:
        if db is not None:
            t0 = time.perf_counter()
            db.migrate()
            res["migrate_s"] = time.perf_counter() - t0
            log(f"database {url} migrated in {res['migrate_s']:.1f} s")
        engine = make_engine(url)
        Session = make_session_factory(engine)
        if db is not None:
            kinds, ok = import_all(Session, world)
            res["import"] = {"kinds": kinds, "total_s": sum(k["seconds"] for k in kinds)}
            if not ok:
                return 1
            if args.backend == "postgresql":
                with engine.connect() as conn:  # what autovacuum does soon after a bulk load
                    conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
            log("baseline: parties without checks ...")
            res["import"]["party_baseline"] = party_copy_baseline(engine, args.backend,
                                                                  world.csv["parties"])
        world.csv.clear()
        # The timed calls should run in a heap like a server's, not a data
        # generator's: 300,000 (store, distributor) tuples would make every
        # full collection of CPython's cyclic GC scan them (~200 ms each).
        # Sampling from a uniform 10,000-store sample is still uniform.
        if len(world.stores) > 10_000:
            world.stores = random.Random(args.seed).sample(world.stores, 10_000)
        gc.collect()
        with Session() as s:
            sku_ids = dict(s.execute(text("SELECT code, id FROM catalog_sku")).all())
        if args.gc_threshold:
            gc.set_threshold(args.gc_threshold, 10, 10)
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
        res["latency"] = measure_latency(Session, world, args, sku_ids)
        res["database"] = _describe(engine, args.backend)
        report(res, args)
        total = time.monotonic() - started
        print(f"\nTotal {total:.0f} s (generation {gen_s:.1f} s, migration {res['migrate_s']:.1f} s); "
              f"seed {args.seed}; code {version}; {os.cpu_count()} CPUs; "
              f"python {platform.python_version()}; "
              + ", ".join(f"{k}={v}" for k, v in res["database"].items()))
        if args.profile:
            stages(engine, Session, world, args)
            profile(engine, Session, world, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2, default=str)
            log(f"wrote {args.json}")
        return 0
    finally:
        if engine is not None:
            engine.dispose()
        if db is not None:
            if args.keep:
                print(f"kept database: {url}")
            else:
                db.drop()


if __name__ == "__main__":
    sys.exit(main())
