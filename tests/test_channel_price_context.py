"""On PostgreSQL a price request's context (both parties, the relationship
with the sale permission, the buyer's labels and the cache tokens) is one
statement (``prices._read_context_pg``); it must read exactly what the
three portable reads read, and leave every refusal to them."""
from __future__ import annotations

from datetime import timedelta

import pytest

import channel_api as ca
from channel_api import network, prices, snapshots
from channel_api.errors import NotPurchasable, PartyNotFound
from channel_api.assortment import assortment_from, assortment_of
from channel_api.facts import labels_and_tokens
from ledger import utcnow
from tests.channel_fixtures import store_buying_from_distributor

pytestmark = pytest.mark.postgres_only


def portable(s, seller: str, buyer: str):
    seller_row, buyer_row = prices._pair(s, seller, buyer)
    names = (snapshots.TREES, snapshots.CATALOG, snapshots.strategies_key(seller_row.id))
    grade, groups, tags, tokens = labels_and_tokens(s, buyer_row, names)
    return seller_row, buyer_row, (grade, groups, tags, tokens)


@pytest.fixture
def pair(session, unique):
    u = unique
    store_buying_from_distributor(session, u)
    network.set_sale_permission(session, f"{u}D", product_scope={"all": True},
                                regions=[f"{u}CN"], actor="t")
    return session, u


def test_one_statement_reads_what_the_three_reads_read(pair):
    s, u = pair
    ca.parties.create_grade(s, f"{u}gold", "Gold")
    ca.parties.update_party(s, f"{u}S", grade=f"{u}gold")
    for group in ("g1", "g2"):
        ca.parties.create_group(s, f"{u}{group}", group)
        ca.parties.add_to_group(s, f"{u}S", f"{u}{group}")
    ca.parties.tag_party(s, f"{u}S", f"{u}vip")
    seller_id = prices._pair(s, f"{u}D", f"{u}S")[0].id
    snapshots.bump(s, snapshots.CATALOG, snapshots.strategies_key(seller_id))
    read = prices._read_context_pg(s, f"{u}D", f"{u}S")
    assert read is not None
    seller_row, buyer_row, found, labels = read
    expected = portable(s, f"{u}D", f"{u}S")
    assert (seller_row._asdict(), buyer_row._asdict()) == (
        expected[0]._asdict(), expected[1]._asdict())
    assert labels == expected[2]
    grade, groups, tags, tokens = labels
    assert (grade, groups, tags) == (f"{u}gold", {f"{u}g1", f"{u}g2"}, {f"{u}vip"})
    assert tokens[snapshots.strategies_key(seller_id)] is not None  # bumped just now
    assert tokens[snapshots.CATALOG] is not None
    # The relationship row gives the same assortment as the portable read.
    now = utcnow()
    assert assortment_from(s, found, seller_row, buyer_row, now) == \
        assortment_of(s, seller_row, buyer_row, now)
    # and by public ids, as the API also accepts
    by_ids = prices._read_context_pg(s, seller_row.public_id, buyer_row.public_id)
    assert by_ids[0] == seller_row and by_ids[1] == buyer_row


def test_a_buyer_without_labels_or_relationship_reads_empty(pair):
    s, u = pair
    ca.create_party(s, code=f"{u}X", name="X", role="store", region=f"{u}CN",
                    customer_type=f"{u}t")
    seller_row, buyer_row, found, labels = prices._read_context_pg(s, f"{u}D", f"{u}X")
    assert found is None
    assert labels[:3] == (None, frozenset(), frozenset())
    assert labels == portable(s, f"{u}D", f"{u}X")[2]
    with pytest.raises(NotPurchasable) as refused:
        prices.price_list(s, seller=f"{u}D", buyer=f"{u}X")
    assert refused.value.details["reason"] == "no_relationship"


def test_an_unknown_party_is_left_to_the_portable_reads_and_their_errors(pair):
    s, u = pair
    assert prices._read_context_pg(s, f"{u}D", f"{u}nobody") is None
    assert prices._read_context_pg(s, f"{u}nobody", f"{u}S") is None
    with pytest.raises(PartyNotFound) as missing:
        prices.price_list(s, seller=f"{u}D", buyer=f"{u}nobody")
    assert missing.value.details["field"] == "buyer"


def test_an_expired_relationship_is_refused_as_before(pair):
    s, u = pair
    ca.create_party(s, code=f"{u}Y", name="Y", role="store", region=f"{u}CN",
                    customer_type=f"{u}t")
    network.create_relationship(s, seller=f"{u}D", buyer=f"{u}Y", actor="t",
                                valid_from=utcnow() + timedelta(days=1))
    with pytest.raises(NotPurchasable) as refused:
        prices.price_list(s, seller=f"{u}D", buyer=f"{u}Y")
    assert refused.value.details["reason"] == "relationship_not_valid_at"
