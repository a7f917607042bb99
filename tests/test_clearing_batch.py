"""Clearing and release in batches (``channel_api.clearing_batch``): the same
scenario cleared order by order (``clearings.clear_cash``, then the release
job ``release_due``) and in batches (``clear_many``, ``release_many``) ends
with the same postings on every account and the same documents; a batch
run again changes nothing; what no rule takes is skipped with its reason;
the ledger's and the cash invariant hold.

The scenario: a distributor D (supplied by the brand B) sells to a store S
by two rules, the issue's F2B2b split for tea and a snack rule with an
immediate seller leg, a T+1-after-payment leg to the seller's upstream and
a fixed platform fee; one order is split over both rules, one is linked to
an upstream order, one was delivered before it was cleared, one is cleared
in two arrivals with a delivery between them. A second distributor D2 has
no rule.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

import channel_api as ca
import ledger
from channel_api import cash, catalog, clearing_batch, clearing_rules, clearings, funding, network
from channel_api import orders as orders_module
from channel_api.clearing_batch import CashArrival, clear_many, release_many
from clearing.models import ClearingShare
from ledger import as_utc, utcnow
from ledger.models import Account, JournalEntry, Posting
from payments.models import Payment
from tests.channel_fixtures import engine  # noqa: F401  (a database of its own: exact sums)
from tests.test_channel_clearings import LEGS
from tests.test_channel_funding import build

UTC = timezone.utc
NOW = datetime(2030, 1, 9, 2, 0, tzinfo=UTC)      # a Wednesday, 10:00 in Shanghai
SINCE = datetime(2020, 1, 1, tzinfo=UTC)
SNACK_LEGS = [
    {"recipient": "seller", "basis": "remainder", "value": 0, "timing": {"kind": "immediate"}},
    {"recipient": "buyer_upstream", "basis": "percent", "value": 300,
     "timing": {"kind": "t_plus", "days": 1, "anchor": "payment"}},
    {"recipient": "platform", "basis": "per_order", "value": 100,
     "timing": {"kind": "immediate"}},
]


def _deliver(s, order: str, at: datetime, monkeypatch) -> None:
    """Ship and receive ``order`` at ``at`` (the order's clock frozen), so
    both paths see the same delivery time."""
    with monkeypatch.context() as patch:
        patch.setattr(orders_module, "utcnow", lambda: at)
        orders_module.ship_order(s, order, actor="dist")
        orders_module.confirm_receipt(s, order, actor="store")


def _pay(s, buyer: str, seller: str, lines: list[dict]) -> str:
    order = orders_module.place_order(s, buyer=buyer, seller=seller, actor="store",
                                      lines=lines).public_id
    total = orders_module.order_row(s, order).total_minor
    funding.set_payment_plan(s, order, [{"method": "prepaid", "amount_minor": total}],
                             actor="store")
    return order


@pytest.fixture
def world(session, monkeypatch):
    """Orders paid while no rule exists (so nothing is cleared yet), then
    the rules; o2 delivered the day before the clearing."""
    s = session
    build(s)
    ca.create_party(s, code="B", name="Brand", role="brand", region="CN", customer_type="t")
    ca.create_party(s, code="D2", name="D2", role="distributor", region="CN", customer_type="t")
    for seller, buyer in (("B", "D"), ("D2", "X")):
        network.create_relationship(s, seller=seller, buyer=buyer, actor="t",
                                    valid_from=utcnow() - timedelta(days=1))
    network.set_sale_permission(s, "D2", product_scope={"all": True}, regions=[], actor="t")
    catalog.create_category(s, "snacks", "Snacks")
    catalog.create_category(s, "chips", "Chips", parent="snacks")
    catalog.create_product(s, "crisps", "Crisps", category="chips")
    catalog.create_sku(s, "c1", "C1", product="crisps", unit="case", list_price_minor=700)
    for buyer, seller in (("S", "D"), ("X", "D2")):
        funding.confirm_deposit(s, buyer=buyer, seller=seller, amount_minor=10**7,
                                bank_reference=f"DEP-{buyer}", actor="t")
    o = {"o1": _pay(s, "S", "D", [{"sku": "g1", "quantity": 100}]),
         "o2": _pay(s, "S", "D", [{"sku": "g1", "quantity": 10}, {"sku": "c1", "quantity": 5}]),
         "o3": _pay(s, "S", "D", [{"sku": "g1", "quantity": 7}]),
         "o4": _pay(s, "X", "D2", [{"sku": "g1", "quantity": 1}])}
    upstream = orders_module.place_order(s, buyer="D", seller="B", actor="dist",
                                         lines=[{"sku": "c1", "quantity": 50}]).public_id
    orders_module.link_orders(s, upstream=upstream, downstream=o["o2"], actor="dist")
    _deliver(s, o["o2"], NOW - timedelta(days=1), monkeypatch)
    clearing_rules.create_rule(s, code="d-split", name="D's split", sellers=["D"], legs=LEGS,
                               actor="brand", valid_from=SINCE)
    clearing_rules.create_rule(s, code="d-snacks", name="D's snacks", sellers=["D"],
                               categories=["snacks"], legs=SNACK_LEGS, actor="brand",
                               valid_from=SINCE)
    assert clearings.documents(s) == []
    return o


def _rounds(o):
    """Two rounds of arrivals: o3's cash comes in two parts, o3 delivered
    between them."""
    first = [CashArrival(o["o1"], 100_000, "prepaid", f"{o['o1']}:prepaid"),
             CashArrival(o["o2"], 13_500, "prepaid", f"{o['o2']}:prepaid"),
             CashArrival(o["o3"], 2_800, "offline", f"{o['o3']}:part-1"),
             CashArrival(o["o4"], 1_000, "prepaid", f"{o['o4']}:prepaid"),
             CashArrival(o["o1"], 100_000, "carrier-pigeon", "odd"),
             CashArrival(o["o1"], 100_000, "prepaid", f"{o['o1']}:prepaid"),
             CashArrival(o["o1"], 0, "prepaid", "nothing")]
    second = [CashArrival(o["o3"], 4_200, "offline", f"{o['o3']}:part-2"),
              CashArrival(o["o1"], 100_000, "prepaid", f"{o['o1']}:prepaid")]
    return first, second


def _one_by_one(s, arrivals, now):
    for a in arrivals:
        clearings.clear_cash(s, orders_module.order_row(s, a.order_ref),
                             amount_minor=a.amount_minor, method=a.method, cause=a.cause, now=now)


def _release_all(s, release, now) -> int:
    total = 0
    while (n := release(s, now=now)):
        total += n
    return total


def _postings(s) -> dict[str, Counter]:
    """Per account, the clearing and release postings (entry code, side,
    amount), and the clearing entries' keys."""
    rows = s.execute(
        select(Account.code, JournalEntry.code, Posting.side, Posting.amount_minor)
        .join(Posting, Posting.account_id == Account.id)
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(JournalEntry.code.in_(["order.clear", "clearing.release"]))).all()
    out: dict[str, Counter] = {}
    for account, code, side, amount in rows:
        out.setdefault(account, Counter())[(code, side, amount)] += 1
    out["keys"] = Counter(s.scalars(select(JournalEntry.idempotency_key).where(
        JournalEntry.code == "order.clear")))
    return out


def _documents(s) -> list[dict]:
    """Every document's fields but its ids; which entries it has."""
    docs = []
    for row in s.scalars(select(ClearingShare)):
        doc = {c.key: getattr(row, c.key) for c in ClearingShare.__table__.columns
               if c.key not in ("id", "public_id", "entry_id", "release_entry_id")}
        for key in ("release_at", "cleared_at", "released_at"):
            doc[key] = as_utc(doc[key]) if doc[key] is not None else None
        doc["has_entry"] = row.entry_id is not None
        doc["has_release_entry"] = row.release_entry_id is not None
        docs.append(doc)
    return sorted(docs, key=lambda d: (d["order_ref"], d["cause"], d["rule_code"], d["leg_index"]))


def _state(s):
    return {"postings": _postings(s), "documents": _documents(s),
            "balances": {a.code: a.posted_minor for a in ledger.list_accounts(
                s, code_prefix="party:", limit=100)[0]}}


def _run(s, o, monkeypatch, *, batch: bool, rounds=None):
    """The scenario (``rounds`` of arrivals, by default ``_rounds``) by one
    path, in a savepoint rolled back at the end: the state after clearing
    and after releasing, and the batch results."""
    first, second = rounds or _rounds(o)
    results = []
    point = s.begin_nested()
    if batch:
        results.append(clear_many(s, first, now=NOW))
    else:
        _one_by_one(s, first, NOW)
    _deliver(s, o["o3"], NOW + timedelta(hours=1), monkeypatch)
    if batch:
        results.append(clear_many(s, second, now=NOW + timedelta(hours=2)))
    else:
        _one_by_one(s, second, NOW + timedelta(hours=2))
    cleared = _state(s)
    later = NOW + timedelta(days=10)
    released = _release_all(s, release_many if batch else clearings.release_due, later)
    after = _state(s)
    checks = (ledger.check_ledger(s), cash.check_cash(s).holds)
    if batch:  # run again: nothing more to do
        results.append(clear_many(s, first + second, now=later))
        results.append(release_many(s, now=later))
        assert _state(s) == after
    point.rollback()
    return cleared, released, after, checks, results


def test_batches_clear_and_release_exactly_as_order_by_order(session, world, monkeypatch):
    one = _run(session, world, monkeypatch, batch=False)
    many = _run(session, world, monkeypatch, batch=True)
    assert many[0] == one[0]          # after clearing
    assert many[1] == one[1]          # legs released by the job
    assert many[2] == one[2]          # after releasing
    assert one[3] == many[3] == ([], True)

    first, second, again, released_again = many[4]
    assert (first.cleared, first.orders) == (3, 3)
    assert first.skipped == {"no_rule": 1, "unknown_method": 1, "already_cleared": 1,
                             "no_cash": 1}
    assert [k.order_ref for k in first.skips if k.reason == "no_rule"] == [world["o4"]]
    # o1 + o2 + 40 % of o3, to the fen
    assert first.cleared_minor == {"CNY": 100_000 + 13_500 + 2_800}
    assert (second.cleared, second.skipped) == (1, {"already_cleared": 1})
    assert again.cleared == 0 and again.skipped["already_cleared"] == 6
    assert released_again == 0


def test_batches_larger_than_one_ledger_call_clear_the_same(session, world, monkeypatch):
    """With room for only three entries per ledger call, the batch is posted
    in groups (a clearing always with the releases of its legs) and the
    release job in several calls: the same end state as order by order."""
    one = _run(session, world, monkeypatch, batch=False)
    calls = []
    post_entries = ledger.post_entries

    def spy(session, requests, **kwargs):
        calls.append(len(requests))
        return post_entries(session, requests, **kwargs)

    monkeypatch.setattr(clearing_batch, "MAX_BATCH", 3)
    monkeypatch.setattr(ledger, "post_entries", spy)
    many = _run(session, world, monkeypatch, batch=True)
    assert many[:4] == one[:4]
    assert max(calls) == 3 and len(calls) > 4


def test_cash_a_gateway_holds_is_cleared_but_never_released(session, world, monkeypatch):
    """o2's gateway part was collected with the seller as payee: its legs
    are cleared as usual but carried by the gateway (``carried_by``), so
    neither the clearing nor the release job moves them to a wallet, though
    o2 was delivered. o1's gateway part went to custody: released as usual."""
    s = session
    o1, o2 = world["o1"], world["o2"]
    s.add(Payment(public_id="pay_o2", gateway="wechatpay", purpose="order", reference=o2,
                  payer="S", payee="D", amount_minor=13_500, currency="CNY", state="succeeded",
                  transaction_id="wx-o2", refunded_minor=0, expires_at=NOW, created_at=NOW,
                  updated_at=NOW, version=1, payee_account="1900000110",
                  payee_account_kind="MERCHANT_ID"))
    s.flush()
    rounds = ([CashArrival(o1, 100_000, "wechatpay", f"{o1}:gateway"),
               CashArrival(o2, 13_500, "wechatpay", f"{o2}:gateway")], [])
    one = _run(s, world, monkeypatch, batch=False, rounds=rounds)
    many = _run(s, world, monkeypatch, batch=True, rounds=rounds)
    assert many[:4] == one[:4]
    after = many[2]["documents"]
    carried = [d for d in after if d["order_ref"] == o2 and d["recipient"] != "platform"]
    assert {(d["carried_by"], d["carrier_payment"], d["state"]) for d in carried} == {
        ("gateway:wechatpay", "pay_o2", "pending")}
    assert all(d["carried_by"] is None for d in after if d["order_ref"] == o1)


def test_batch_results_match_the_issue_example(session, world, monkeypatch):
    """The F2B2b split of o1 (92 % seller on delivery, 7.5 % brand T+2,
    0.5 % platform at once) and o2's two parts, as documents."""
    s = session
    clear_many(s, _rounds(world)[0], now=NOW)
    docs = {(d.order_ref, d.rule_code, d.recipient): d for d in clearings.documents(s)}
    o1, o2 = world["o1"], world["o2"]
    assert {(k[2], d.amount_minor, d.state) for k, d in docs.items() if k[0] == o1} == {
        ("D", 92_000, "pending"), ("B", 7_500, "pending"), ("platform", 500, "released")}
    # o2: 10,000 of tea (delivered: the seller's leg released at once) and
    # 3,500 of snacks (the seller's leg immediate; 3 % to the upstream
    # order's seller, the brand; a 1.00 fee).
    assert {(k[1], k[2], d.amount_minor, d.state) for k, d in docs.items() if k[0] == o2} == {
        ("d-split", "D", 9_200, "released"), ("d-split", "B", 750, "pending"),
        ("d-split", "platform", 50, "released"), ("d-snacks", "D", 3_295, "released"),
        ("d-snacks", "B", 105, "pending"), ("d-snacks", "platform", 100, "released")}
    assert ledger.get_account(s, "party:B:pending").balance_shards == 8
    assert ledger.check_ledger(s) == [] and cash.check_cash(s).holds


def test_cash_the_ledger_refuses_is_skipped_and_the_rest_cleared(session, world):
    """An arrival for an order whose escrow does not hold the cash (here:
    never paid, no escrow at all) is refused by the ledger: skipped with the
    ledger's code, and the batch's other arrivals are cleared."""
    s = session
    unpaid = orders_module.place_order(s, buyer="S", seller="D", actor="store",
                                       lines=[{"sku": "g1", "quantity": 1}]).public_id
    result = clear_many(s, [CashArrival(world["o1"], 100_000, "prepaid", "o1"),
                            CashArrival(unpaid, 1_000, "prepaid", "unpaid")], now=NOW)
    assert result.cleared == 1 and result.skipped == {"refused:account_not_found": 1}
    assert clearings.documents(s, order=unpaid) == []
    assert len(clearings.documents(s, order=world["o1"])) == 3
    assert ledger.check_ledger(s) == [] and cash.check_cash(s).holds


def test_no_rules_at_all_clears_nothing(session):
    build(session)
    result = clear_many(session, [CashArrival("ord_none", 100, "prepaid", "c")], now=NOW)
    assert result.cleared == 0 and result.skipped == {"no_rules": 1}


def test_release_many_dates_legs_only_when_few_are_due(session, world, monkeypatch):
    """With as many legs due as it may release, the job releases them
    without the pass over waiting legs; the next call dates and releases
    the rest."""
    s = session
    clear_many(s, _rounds(world)[0], now=NOW)
    _deliver(s, world["o1"], NOW + timedelta(hours=1), monkeypatch)
    later = NOW + timedelta(days=10)
    assert release_many(s, now=later, limit=1) == 1        # o2's brand leg, due already
    waiting = s.scalars(select(ClearingShare.recipient).where(
        ClearingShare.order_ref == world["o1"], ClearingShare.release_at.is_(None))).all()
    assert sorted(waiting) == ["B", "D"]                    # not dated yet
    assert _release_all(s, release_many, later) == 3        # o1's two, o2's snack leg to B
    assert clearing_batch.date_waiting(s) == 0
    assert ledger.get_account(s, "party:D:wallet").posted_minor == 92_000 + 9_200 + 3_295


def test_a_cause_cleared_concurrently_is_not_cleared_twice(session, world, monkeypatch):
    """Another transaction clears a cause after ``clear_many`` looked for it
    and before the ledger locked (simulated: the look finds nothing). The
    ledger answers that clearing as a replay: no second set of documents,
    and no second release of its legs (o2 was delivered, so its seller's
    legs are released at once: releasing them again would take o1's money
    out of D's pending)."""
    s = session
    first = _rounds(world)[0]
    assert clear_many(s, first, now=NOW).cleared == 3
    before = _state(s)
    monkeypatch.setattr(clearing_batch, "_cleared_causes", lambda session, causes: set())
    again = clear_many(s, first[:3], now=NOW + timedelta(minutes=1))
    assert again.cleared == 0 and again.skipped == {"already_cleared": 3}
    assert _state(s) == before
    assert ledger.check_ledger(s) == [] and cash.check_cash(s).holds


def test_a_refused_clearing_releases_nothing(session, world):
    """Two causes for o2 (delivered: its seller's legs are due at once) in
    one batch, but its escrow holds the cash of one: the second is refused
    by the ledger, and none of its legs is released (D's pending also holds
    o1's money, which a release of the refused legs would take)."""
    s = session
    o1, o2 = world["o1"], world["o2"]
    result = clear_many(s, [CashArrival(o1, 100_000, "prepaid", "o1"),
                            CashArrival(o2, 13_500, "prepaid", "o2:a"),
                            CashArrival(o2, 13_500, "prepaid", "o2:b")], now=NOW)
    assert result.cleared == 2 and result.skipped == {"refused:insufficient_funds": 1}
    assert {d.cause for d in clearings.documents(s, order=o2)} == {"o2:a"}
    assert ledger.get_account(s, "party:D:wallet").posted_minor == 9_200 + 3_295
    assert ledger.get_account(s, "party:D:pending").posted_minor == 92_000
    assert ledger.check_ledger(s) == [] and cash.check_cash(s).holds
