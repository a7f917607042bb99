#!/usr/bin/env python
"""Price list benchmark: ``channel_api.pricing.price_list`` for one buyer.

    .venv/bin/python bench/pricing_bench.py [--skus 5000] [--eligible 50]
                                            [--ineligible 2000] [--runs 50] [--seed 7]

Builds (pure values, no database) a category tree of 3 levels, ``--skus``
SKUs, ``--eligible`` strategies that all apply to the buyer (percent
strategies on "all", on categories and on SKU lists, fixed strategies with
tiers for a few hundred SKUs each, various priorities and customer scopes)
and ``--ineligible`` strategies that do not (another owner, inactive,
expired, not yet valid, another buyer's scope). Then it times ``--runs``
calls of ``price_list`` and, in the same run, a baseline that only reads each
SKU's list price into the same ``PriceLine`` objects, and prints the median
and p99 (nearest rank) of both and their ratio. Prints figures only; no
targets are checked.
"""
from __future__ import annotations

import argparse
import gc
import math
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from channel_api.pricing import PricedSku, PriceLine, Strategy, Tier, price_list  # noqa: E402
from channel_api.scopes import BuyerFacts, CustomerScope, ProductScope  # noqa: E402

AT = datetime(2025, 6, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)
SELLER = "BRAND"
BUYER = BuyerFacts("STORE-1", region_path=("CN", "CN-ZJ", "CN-ZJ-HZ"),
                   customer_type_path=("retail", "supermarket"), grade="A",
                   groups=frozenset({"G1"}), tags=frozenset({"vip"}))
MATCHING_SCOPES = [
    CustomerScope(),
    CustomerScope(regions=frozenset({"CN-ZJ"})),
    CustomerScope(grades=frozenset({"A", "B"}), tags=frozenset({"vip"})),
    CustomerScope(customer_types=frozenset({"retail"}), groups=frozenset({"G1"})),
    CustomerScope(parties=frozenset({"STORE-1", "STORE-2"})),
]


def build(n_skus: int, n_eligible: int, n_ineligible: int, rnd: random.Random):
    paths = [(f"C{a}", f"C{a}.{b}", f"C{a}.{b}.{c}")
             for a in range(5) for b in range(4) for c in range(5)]
    skus = [PricedSku(f"SKU-{i:05d}", rnd.randrange(100, 100_000), "CNY", rnd.choice(paths))
            for i in range(n_skus)]
    codes = [s.code for s in skus]
    by_category: dict[str, list[str]] = {}
    for s in skus:
        for cat in s.category_path:
            by_category.setdefault(cat, []).append(s.code)
    mids = sorted({p[1] for p in paths})
    roots = sorted({p[0] for p in paths})

    def percent_tiers(sku_codes: list[str] | None = None) -> tuple[Tier, ...]:
        tiers = [Tier(None, 1, percent_bp=rnd.randrange(7000, 10000)),
                 Tier(None, 10, percent_bp=rnd.randrange(6000, 9000))]
        for code in sku_codes or ():
            tiers.append(Tier(code, 1, percent_bp=rnd.randrange(5000, 9500)))
        return tuple(tiers)

    def fixed_tiers(sku_codes: list[str]) -> tuple[Tier, ...]:
        tiers = []
        for code in sku_codes:
            tiers.append(Tier(code, 1, price_minor=rnd.randrange(50, 90_000)))
            tiers.append(Tier(code, 12, price_minor=rnd.randrange(40, 80_000)))
        return tuple(tiers)

    def strategy(n: int, **kw) -> Strategy:
        base = dict(code=f"PS-{n:05d}", owner=SELLER, priority=rnd.choice([0, 0, 0, 1, 2]),
                    rule="percent", currency="CNY", product_scope=ProductScope.everything(),
                    customer_scope=rnd.choice(MATCHING_SCOPES),
                    valid_from=AT - rnd.randrange(1, 300) * DAY, valid_to=None,
                    status="active", tiers=percent_tiers(), version=rnd.randrange(1, 5))
        base.update(kw)
        return Strategy(**base)

    def shape(n: int) -> Strategy:
        """One eligible strategy of a rotating shape."""
        kind = n % 5
        if kind == 0:
            return strategy(n)
        if kind == 1:
            cat = rnd.choice(rnd.choice([roots, mids]))
            return strategy(n, product_scope=ProductScope(categories=frozenset({cat})))
        if kind == 2:
            named = rnd.sample(codes, 50)
            return strategy(n, product_scope=ProductScope(skus=frozenset(named)),
                            tiers=percent_tiers(named[:10]))
        cat = rnd.choice(mids)
        named = rnd.sample(by_category[cat], min(200, len(by_category[cat])))
        return strategy(n, rule="fixed", product_scope=ProductScope(categories=frozenset({cat})),
                        tiers=fixed_tiers(named))

    strategies = [shape(n) for n in range(n_eligible)]
    spoilers = [
        lambda s: s.__class__(**{**s.__dict__, "owner": "DIST-1"}),
        lambda s: s.__class__(**{**s.__dict__, "status": "inactive"}),
        lambda s: s.__class__(**{**s.__dict__, "valid_from": AT - 30 * DAY, "valid_to": AT - DAY}),
        lambda s: s.__class__(**{**s.__dict__, "valid_from": AT + DAY}),
        lambda s: s.__class__(**{**s.__dict__,
                                 "customer_scope": CustomerScope(parties=frozenset({"STORE-9"}))}),
    ]
    for n in range(n_eligible, n_eligible + n_ineligible):
        strategies.append(spoilers[n % len(spoilers)](shape(n)))
    rnd.shuffle(strategies)
    return strategies, skus


def baseline(skus) -> list[PriceLine]:
    lines = []
    append = lines.append
    for sku in skus:
        price = sku.list_price_minor
        append(PriceLine(sku.code, price, sku.currency, "list_price", None, None, price))
    return lines


def timed(fn, runs: int) -> list[float]:
    fn()  # warm up
    samples = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skus", type=int, default=5000)
    parser.add_argument("--eligible", type=int, default=50)
    parser.add_argument("--ineligible", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    strategies, skus = build(args.skus, args.eligible, args.ineligible, random.Random(args.seed))
    lines = price_list(strategies, BUYER, skus, AT, seller=SELLER)
    by_strategy = sum(1 for line in lines if line.source == "strategy")
    print(f"python {platform.python_version()} ({platform.python_implementation()}), "
          f"{args.skus} SKUs, {len(strategies)} strategies "
          f"({args.eligible} eligible, {args.ineligible} not), {args.runs} runs")
    print(f"lines priced by a strategy: {by_strategy} of {len(lines)}")

    ours = timed(lambda: price_list(strategies, BUYER, skus, AT, seller=SELLER), args.runs)
    base = timed(lambda: baseline(skus), args.runs)
    print(f"{'':12}{'median ms':>12}{'p99 ms':>10}{'per SKU us':>12}")
    for name, samples in (("price_list", ours), ("baseline", base)):
        median = statistics.median(samples)
        print(f"{name:12}{median * 1e3:12.2f}{p99(samples) * 1e3:10.2f}"
              f"{median / args.skus * 1e6:12.2f}")
    print(f"ratio price_list / baseline (medians): "
          f"{statistics.median(ours) / statistics.median(base):.1f}x")


if __name__ == "__main__":
    main()
