"""A small committed channel network with API keys, for the channel API
tests: one brand, two distributors (D1 sells to S1, S2; D2 to S3), three
stores, each with a key. Codes carry a unique prefix, so modules can share a
database."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import channel_api as ca
from channel_api import keys
from channel_api.models import SupplyRelationship
from ledger import new_uuid7, utcnow
from service.app import create_app
from service.settings import Settings
from tests.isolated_db import isolated_engine


@dataclass
class Network:
    u: str
    codes: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def build_network(session_factory, u: str) -> Network:
    codes = {name: f"{u}-{name}" for name in
             ("brand", "d1", "d2", "s1", "s2", "s3", "cn", "zj", "hz", "sh", "retail", "grocery")}
    net = Network(u, codes)
    c = codes
    with session_factory() as s, s.begin():
        ca.create_region(s, c["cn"], "China", level="country")
        ca.create_region(s, c["zj"], "Zhejiang", parent=c["cn"], level="province")
        ca.create_region(s, c["hz"], "Hangzhou", parent=c["zj"], level="city")
        ca.create_region(s, c["sh"], "Shanghai", parent=c["cn"], level="province")
        ca.create_customer_type(s, c["retail"], "Retail")
        ca.create_customer_type(s, c["grocery"], "Grocery", parent=c["retail"])
        ca.create_party(s, code=c["brand"], name="Brand", role="brand", region=c["cn"],
                        customer_type=c["retail"])
        for name, region in (("d1", "zj"), ("d2", "sh")):
            ca.create_party(s, code=c[name], name=name.upper(), role="distributor",
                            region=c[region], customer_type=c["retail"])
        for name, region in (("s1", "hz"), ("s2", "hz"), ("s3", "sh")):
            ca.create_party(s, code=c[name], name=name.upper(), role="store",
                            region=c[region], customer_type=c["grocery"])
        now = utcnow()
        for seller, buyer in (("brand", "d1"), ("brand", "d2"), ("d1", "s1"), ("d1", "s2"),
                              ("d2", "s3")):
            # Written directly: the relationship use cases have their own tests.
            s.add(SupplyRelationship(
                public_id="rel_" + new_uuid7().hex,
                seller_id=ca.parties.party_row(s, c[seller]).id,
                buyer_id=ca.parties.party_row(s, c[buyer]).id,
                status="active", origin="manual", product_scope={"all": True},
                valid_from=now, valid_to=None, created_at=now, updated_at=now))
        for name in ("brand", "d1", "d2"):
            net.tokens[name] = keys.create_api_key(
                s, party=c[name], scopes=["manage", "storefront"], actor="test").token
        for name in ("s1", "s2", "s3"):
            net.tokens[name] = keys.create_api_key(
                s, party=c[name], scopes=["storefront"], actor="test").token
    return net


def add_tea(s, net: Network, list_price_minor: int = 1000) -> None:
    """One SKU (``<u>-a``, in category ``<u>-tea``) that d1 may sell to
    everyone: what the order, return and payment API tests trade."""
    from channel_api import catalog, network

    u = net.u
    catalog.create_category(s, f"{u}-tea", "Tea")
    catalog.create_unit(s, f"{u}-case", "Case")
    catalog.create_product(s, f"{u}-green", "Green", category=f"{u}-tea")
    catalog.create_sku(s, f"{u}-a", "A", product=f"{u}-green", unit=f"{u}-case",
                       list_price_minor=list_price_minor)
    network.set_sale_permission(s, net.codes["d1"], product_scope={"all": True}, regions=[],
                                actor="t")


def store_buying_from_distributor(s, u: str) -> None:
    """``{u}S``, a store, buys from ``{u}D``, a distributor (since yesterday)."""
    from datetime import timedelta

    from channel_api import network

    ca.create_region(s, f"{u}CN", "China")
    ca.create_customer_type(s, f"{u}t", "T")
    for code, role in (("D", "distributor"), ("S", "store")):
        ca.create_party(s, code=f"{u}{code}", name=code, role=role, region=f"{u}CN",
                        customer_type=f"{u}t")
    network.create_relationship(s, seller=f"{u}D", buyer=f"{u}S", actor="t",
                                valid_from=utcnow() - timedelta(days=1))


def tea_network_with_deposit(session_factory, u: str) -> Network:
    """``build_network`` with the tea SKU, and s1 holding a deposit of 400
    at d1: what the payment tests pay orders and deposits against."""
    from channel_api import funding

    net = build_network(session_factory, u)
    with session_factory() as s, s.begin():
        add_tea(s, net)
        funding.confirm_deposit(s, buyer=net.codes["s1"], seller=net.codes["d1"],
                                amount_minor=400, bank_reference=f"{u}-dep", actor="t")
    return net


def order_with_gateway_part(client, net, gateway="sandbox"):
    """A 1,000 order: 400 from the deposit, 600 through ``gateway``."""
    placed = client.post("/v1/orders", headers=net.auth("s1"), json={
        "seller": net.codes["d1"], "lines": [{"sku": f"{net.u}-a", "quantity": 1}],
        "plan": [{"method": "prepaid", "amount_minor": 400},
                 {"method": "gateway", "amount_minor": 600}]})
    assert placed.status_code == 201, placed.json
    assert placed.json["state"] == "awaiting_payment"
    payment = client.post("/v1/payments", headers=net.auth("s1"),
                          json={"gateway": gateway, "order": placed.json["public_id"]})
    assert payment.status_code == 201, payment.json
    return placed.json["public_id"], payment.json



# Fixtures for the channel API test modules (import them by name): each
# module gets a database of its own, as it commits.

@pytest.fixture(scope="module")
def engine(backend, tmp_path_factory):
    with isolated_engine(backend, tmp_path_factory.mktemp("db")) as engine:
        yield engine


@pytest.fixture
def client(engine):
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False),
                        log_format="text", secret_key="k" * 32)
    return create_app(settings, engine=engine).test_client()
