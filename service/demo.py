"""Demo data: a small channel (one brand, two distributors, ten stores) with a
realistic handful of entries, per docs/accounting.md.

Idempotent: accounts are opened with fixed attributes (the ledger returns an
existing identical account) and every entry carries a fixed idempotency key
and fixed content (no "now" in it), so running it again changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import ledger
from ledger import EntryRequest, PostingLine

CURRENCY = "CNY"
BRAND = "brand"
DISTRIBUTORS = ("dist-east", "dist-north")
STORES = tuple(f"store-{n:03d}" for n in range(1, 11))
KEY_PREFIX = "demo:"

PLATFORM_FEE_PERMILLE = 6  # 0.6 % of the cash cleared
BRAND_ROYALTY_PERMILLE = 20  # 2 % to the brand on a distributor's sale
CREDIT_LIMIT_MINOR = 200_000  # store-003's credit line at dist-east: 2,000.00 CNY


@dataclass(frozen=True)
class DemoSummary:
    accounts: int
    entries_added: int
    entries_total: int
    postings_total: int


def distributor_of(store: str) -> str:
    """Stores 1-5 buy from dist-east, 6-10 from dist-north."""
    return DISTRIBUTORS[0] if int(store.split("-")[1]) <= 5 else DISTRIBUTORS[1]


def clearing_legs(cash_minor: int, seller: str) -> list[tuple[str, int]]:
    """Split an order's cash: platform fee, brand royalty (unless the brand
    sells), the rest to the seller. Fee and royalty round down, so the seller's
    remainder leg absorbs the rounding and the legs add up to the fen."""
    fee = cash_minor * PLATFORM_FEE_PERMILLE // 1000
    royalty = 0 if seller == BRAND else cash_minor * BRAND_ROYALTY_PERMILLE // 1000
    legs = [("platform:revenue", fee)]
    if royalty:
        legs.append((f"party:{BRAND}:pending", royalty))
    legs.append((f"party:{seller}:pending", cash_minor - fee - royalty))
    return legs


# --- chart of accounts --------------------------------------------------------------


def _chart() -> list[dict]:
    accounts = [
        dict(code="custody:bank", name="Custody bank account", type="asset"),
        dict(code="platform:revenue", name="Platform fees", type="revenue"),
        dict(code="suspense", name="Unexplained money", type="liability"),
        dict(code="payouts:in_flight", name="Payouts sent, not confirmed", type="liability"),
    ]
    for party in (BRAND, *DISTRIBUTORS, *STORES):
        accounts += [
            dict(code=f"party:{party}:wallet", name=f"{party} wallet", type="liability",
                 owner_party_id=party, min_balance_minor=0),
            dict(code=f"party:{party}:pending", name=f"{party} pending release", type="liability",
                 owner_party_id=party, min_balance_minor=0),
        ]
    for distributor in DISTRIBUTORS:
        accounts.append(_prepaid(distributor, BRAND))
    for store in STORES:
        accounts.append(_prepaid(store, distributor_of(store)))
    accounts += [
        dict(code="credit:store-003@dist-east", name="store-003 credit line at dist-east",
             type="asset", owner_party_id="dist-east", max_balance_minor=CREDIT_LIMIT_MINOR),
        dict(code="party:dist-east:credit_issued", name="dist-east credit extended",
             type="liability", owner_party_id="dist-east"),
    ]
    for order in ("ord_demo_0001", "ord_demo_0002", "ord_demo_0003", "ord_demo_0005"):
        accounts.append(dict(code=f"order:{order}:escrow", name=f"escrow of {order}",
                             type="liability", min_balance_minor=0))
    return accounts


def _prepaid(buyer: str, seller: str) -> dict:
    return dict(code=f"prepaid:{buyer}@{seller}", name=f"{buyer} prepaid at {seller}",
                type="liability", owner_party_id=buyer, min_balance_minor=0)


# --- entries ------------------------------------------------------------------------


def _entry(key: str, code: str, description: str, *rows, metadata=None, pending=False) -> EntryRequest:
    """``rows`` are ``("Dr"|"Cr", account, amount_minor)``."""
    lines = [PostingLine(account, "debit" if side == "Dr" else "credit", amount, CURRENCY)
             for side, account, amount in rows]
    return EntryRequest(code, lines, description=description, idempotency_key=KEY_PREFIX + key,
                        metadata=metadata or {}, pending=pending)


def _deposits() -> list[EntryRequest]:
    requests = [
        _entry(f"deposit:{d}@{BRAND}", "deposit", f"offline transfer from {d}",
               ("Dr", "custody:bank", amount), ("Cr", f"prepaid:{d}@{BRAND}", amount),
               metadata={"remittance_ref": f"DEMO-{d.upper()}-001"})
        for d, amount in (("dist-east", 5_000_000), ("dist-north", 3_000_000))
    ]
    for n, store in enumerate(STORES, start=1):
        amount = 200_000 + 10_000 * n
        seller = distributor_of(store)
        requests.append(_entry(
            f"deposit:{store}@{seller}", "deposit", f"offline transfer from {store}",
            ("Dr", "custody:bank", amount), ("Cr", f"prepaid:{store}@{seller}", amount),
            metadata={"remittance_ref": f"DEMO-{store.upper()}-001"},
        ))
    return requests


ORDERS = (  # order, buyer, seller, cash captured from prepaid
    ("ord_demo_0001", "store-001", "dist-east", 128_800),
    ("ord_demo_0002", "dist-east", BRAND, 1_500_000),
    ("ord_demo_0003", "store-006", "dist-north", 45_600),
)


def _orders() -> list[EntryRequest]:
    requests = []
    for order, buyer, seller, cash in ORDERS:
        requests.append(_entry(
            f"capture:{order}", "order_capture", f"{order} paid from prepaid",
            ("Dr", f"prepaid:{buyer}@{seller}", cash), ("Cr", f"order:{order}:escrow", cash),
            metadata={"order_id": order},
        ))
    # Clearing of the first two orders; the third waits for delivery.
    for order, _buyer, seller, cash in ORDERS[:2]:
        requests.append(_entry(
            f"clearing:{order}", "clearing", f"clearing of {order}",
            ("Dr", f"order:{order}:escrow", cash),
            *(("Cr", account, amount) for account, amount in clearing_legs(cash, seller)),
            metadata={"order_id": order},
        ))
    # T+N passed for order 1: the seller's leg moves to its wallet.
    seller_leg = clearing_legs(ORDERS[0][3], "dist-east")[-1][1]
    requests.append(_entry(
        "release:ord_demo_0001:dist-east", "release", "release of ord_demo_0001 to dist-east",
        ("Dr", "party:dist-east:pending", seller_leg), ("Cr", "party:dist-east:wallet", seller_leg),
        metadata={"order_id": "ord_demo_0001"},
    ))
    # Order 4 is paid entirely on store-003's credit line: a claim, no cash.
    requests.append(_entry(
        "capture:ord_demo_0004:credit", "order_capture", "ord_demo_0004 on credit",
        ("Dr", "credit:store-003@dist-east", 50_000), ("Cr", "party:dist-east:credit_issued", 50_000),
        metadata={"order_id": "ord_demo_0004", "funding": "credit"},
    ))
    # Order 5 is placed but not captured: its prepaid is held by a pending
    # entry with no expiry, so the demo keeps showing an open hold.
    requests.append(_entry(
        "hold:ord_demo_0005", "order_hold", "ord_demo_0005 placed, prepaid reserved",
        ("Dr", "prepaid:store-002@dist-east", 66_600), ("Cr", "order:ord_demo_0005:escrow", 66_600),
        metadata={"order_id": "ord_demo_0005"}, pending=True,
    ))
    return requests


def _misbooked_remittance() -> tuple[EntryRequest, EntryRequest]:
    """A remittance booked to the wrong store, and the right booking."""
    wrong = _entry(
        "deposit:misbooked:DEMO-R-0099", "deposit", "offline transfer (booked to the wrong store)",
        ("Dr", "custody:bank", 99_900), ("Cr", "prepaid:store-010@dist-north", 99_900),
        metadata={"remittance_ref": "DEMO-R-0099"},
    )
    right = _entry(
        "deposit:rebooked:DEMO-R-0099", "deposit", "offline transfer from store-009",
        ("Dr", "custody:bank", 99_900), ("Cr", "prepaid:store-009@dist-north", 99_900),
        metadata={"remittance_ref": "DEMO-R-0099"},
    )
    return wrong, right


def seed_demo(session) -> DemoSummary:
    """Open the demo chart and post the demo entries; flushes, never commits."""
    entries_before, _ = ledger.ledger_counts(session)
    chart = _chart()
    for account in chart:
        ledger.open_account(session, currency=CURRENCY, **account)
    ledger.post_entries(session, _deposits() + _orders(), atomic=True)
    wrong, right = _misbooked_remittance()
    [posted] = ledger.post_entries(session, [wrong], atomic=True)
    ledger.reverse_entry(session, posted.entry.id, idempotency_key=KEY_PREFIX + "reverse:DEMO-R-0099",
                         description="remittance DEMO-R-0099 was booked to the wrong store")
    ledger.post_entries(session, [right], atomic=True)
    entries_after, postings_after = ledger.ledger_counts(session)
    return DemoSummary(len(chart), entries_after - entries_before, entries_after, postings_after)
