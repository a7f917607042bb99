"""Channel master data (issue 3, first slice): regions, customer types,
grades, groups, parties and manual tags, on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timezone

import pytest

import channel_api as ch
from channel_api import InvalidParty, PartyExists, PartyNotFound, RegionExists, RegionNotFound


@pytest.fixture
def net(session, unique):
    """A small network: province > city > district regions, a customer type
    tree (retail > convenience), one grade, one group."""
    u = unique
    ch.create_region(session, f"{u}-zj", "Zhejiang", level="province")
    ch.create_region(session, f"{u}-hz", "Hangzhou", parent=f"{u}-zj", level="city")
    ch.create_region(session, f"{u}-xh", "Xihu", parent=f"{u}-hz", level="district")
    ch.create_region(session, f"{u}-js", "Jiangsu", level="province")
    ch.create_customer_type(session, f"{u}-retail", "Retail")
    ch.create_customer_type(session, f"{u}-conv", "Convenience store", parent=f"{u}-retail")
    ch.create_customer_type(session, f"{u}-dist", "Distributor")
    ch.create_grade(session, f"{u}-gold", "Gold", rank=1)
    ch.create_group(session, f"{u}-vip", "VIP")
    return u


def _store(session, u, suffix, **overrides):
    args = dict(code=f"{u}-{suffix}", name=f"Store {suffix}", role="store", region=f"{u}-xh",
                customer_type=f"{u}-conv")
    args.update(overrides)
    return ch.create_party(session, **args)


def test_a_created_party_can_be_read_by_code_and_by_public_id(session, net):
    u = net
    made = _store(session, u, "s1", grade=f"{u}-gold", owner_name="Li Lei",
                  contact_phone="+86-571-1234", address="1 West Lake Rd",
                  quality_customer=True, metadata={"erp": "A1"})
    assert made.public_id.startswith("pty_") and len(made.public_id) == 4 + 32
    by_code = ch.get_party(session, f"{u}-s1")
    by_id = ch.get_party(session, made.public_id)
    assert by_code == by_id == made
    assert (made.role, made.status, made.region_code, made.customer_type_code, made.grade_code) == (
        "store", "active", f"{u}-xh", f"{u}-conv", f"{u}-gold")
    assert made.quality_customer is True and made.contact_phone == "+86-571-1234"
    assert made.metadata == {"erp": "A1"}
    assert made.created_at.tzinfo is not None and made.created_at.utcoffset() == timezone.utc.utcoffset(None)


def test_regions_and_types_get_prefixed_public_ids_and_know_their_parent(session, unique):
    zj = ch.create_region(session, f"{unique}-p", "Province", level="province")
    city = ch.create_region(session, f"{unique}-c", "City", parent=f"{unique}-p", level="city")
    ctype = ch.create_customer_type(session, f"{unique}-t", "Type")
    grade = ch.create_grade(session, f"{unique}-g", "Grade", rank=3)
    group = ch.create_group(session, f"{unique}-grp", "Group")
    assert zj.public_id.startswith("reg_") and zj.parent_code is None
    assert city.parent_code == f"{unique}-p" and city.level == "city"
    assert ctype.public_id.startswith("ctype_")
    assert grade.public_id.startswith("grade_") and grade.rank == 3
    assert group.public_id.startswith("grp_")


def test_creating_the_same_party_twice_returns_the_existing_one(session, net):
    first = _store(session, net, "s1", owner_name="Han Meimei")
    again = _store(session, net, "s1", owner_name="Han Meimei")
    assert again.public_id == first.public_id
    page, _ = ch.list_parties(session, region=f"{net}-zj")
    assert [p.code for p in page] == [f"{net}-s1"]


def test_creating_a_party_with_a_taken_code_and_other_attributes_is_a_conflict(session, net):
    _store(session, net, "s1")
    with pytest.raises(PartyExists) as caught:
        _store(session, net, "s1", name="Another name")
    assert caught.value.code == "party_exists" and caught.value.http_status == 409
    assert caught.value.details["differing"] == ["name"]


def test_recreating_a_region_is_idempotent_but_a_different_parent_is_a_conflict(session, net):
    again = ch.create_region(session, f"{net}-hz", "Hangzhou", parent=f"{net}-zj", level="city")
    assert again.parent_code == f"{net}-zj"
    with pytest.raises(RegionExists):
        ch.create_region(session, f"{net}-hz", "Hangzhou", parent=f"{net}-js", level="city")


def test_a_tree_node_needs_an_existing_parent(session, unique):
    with pytest.raises(RegionNotFound) as caught:
        ch.create_region(session, f"{unique}-c", "City", parent=f"{unique}-nowhere")
    assert caught.value.http_status == 404 and caught.value.details["field"] == "parent"
    with pytest.raises(ch.CustomerTypeNotFound):
        ch.create_customer_type(session, f"{unique}-t", "Type", parent=f"{unique}-nowhere")


@pytest.mark.parametrize("field, overrides", [
    ("code", {"code": "has space"}),
    ("code", {"code": "x" * 65}),
    ("code", {"code": ""}),
    ("name", {"name": "   "}),
    ("name", {"name": "n" * 201}),
    ("role", {"role": "warehouse"}),
    ("status", {"status": "closed"}),
    ("contact_phone", {"contact_phone": "call me"}),
    ("contact_phone", {"contact_phone": "1" * 33}),
    ("quality_customer", {"quality_customer": "yes"}),
    ("metadata", {"metadata": ["not", "a", "dict"]}),
])
def test_invalid_party_input_is_refused_naming_the_field(session, net, field, overrides):
    with pytest.raises(InvalidParty) as caught:
        _store(session, net, "bad", **overrides)
    assert caught.value.code == "invalid_party" and caught.value.http_status == 422
    assert caught.value.details["field"] == field
    with pytest.raises(PartyNotFound):
        ch.get_party(session, f"{net}-bad")


def test_a_party_in_an_unknown_region_is_refused_and_nothing_is_written(session, net):
    with pytest.raises(RegionNotFound) as caught:
        _store(session, net, "s9", region=f"{net}-atlantis")
    assert caught.value.details["field"] == "region"
    with pytest.raises(PartyNotFound) as missing:
        ch.get_party(session, f"{net}-s9")
    assert missing.value.code == "party_not_found" and missing.value.http_status == 404


def test_filtering_by_a_province_finds_a_store_in_a_district_of_one_of_its_cities(session, net):
    u = net
    _store(session, u, "xihu-store")
    _store(session, u, "nanjing-store", region=f"{u}-js")
    in_zj, _ = ch.list_parties(session, region=f"{u}-zj")
    in_hz, _ = ch.list_parties(session, region=f"{u}-hz")
    in_js, _ = ch.list_parties(session, region=f"{u}-js")
    assert [p.code for p in in_zj] == [f"{u}-xihu-store"]
    assert [p.code for p in in_hz] == [f"{u}-xihu-store"]
    assert [p.code for p in in_js] == [f"{u}-nanjing-store"]


def test_filtering_by_customer_type_includes_its_subtypes(session, net):
    u = net
    _store(session, u, "conv")
    ch.create_party(session, code=f"{u}-d1", name="Dist", role="distributor",
                    region=f"{u}-zj", customer_type=f"{u}-dist")
    retail, _ = ch.list_parties(session, customer_type=f"{u}-retail")
    conv, _ = ch.list_parties(session, customer_type=f"{u}-conv")
    dist, _ = ch.list_parties(session, customer_type=f"{u}-dist")
    assert [p.code for p in retail] == [f"{u}-conv"] == [p.code for p in conv]
    assert [p.code for p in dist] == [f"{u}-d1"]


def test_filtering_by_role_grade_status_group_and_tag(session, net):
    u = net
    _store(session, u, "a", grade=f"{u}-gold")
    _store(session, u, "b")
    ch.create_party(session, code=f"{u}-d", name="Dist", role="distributor",
                    region=f"{u}-hz", customer_type=f"{u}-dist")
    ch.update_party(session, f"{u}-b", status="frozen")
    ch.add_to_group(session, f"{u}-b", f"{u}-vip")
    ch.tag_party(session, f"{u}-a", "night-market")

    def codes(**filters):
        page, _ = ch.list_parties(session, region=f"{u}-zj", **filters)
        return [p.code for p in page]

    assert codes(role="store") == [f"{u}-a", f"{u}-b"]
    assert codes(role="distributor") == [f"{u}-d"]
    assert codes(grade=f"{u}-gold") == [f"{u}-a"]
    assert codes(status="frozen") == [f"{u}-b"]
    assert codes(status="active") == [f"{u}-a", f"{u}-d"]
    assert codes(group=f"{u}-vip") == [f"{u}-b"]
    assert codes(tag="night-market") == [f"{u}-a"]
    assert codes(tag="night-market", role="distributor") == []


def test_listing_pages_through_every_party_once_with_the_cursor(session, net):
    u = net
    for i in range(7):
        _store(session, u, f"s{i}")
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = ch.list_parties(session, region=f"{u}-zj", after=cursor, limit=3)
        seen += [p.code for p in page]
        pages += 1
        if cursor is None:
            break
    assert seen == [f"{u}-s{i}" for i in range(7)]
    assert pages == 3


@pytest.mark.parametrize("limit", [0, 501, True])
def test_a_page_size_outside_1_to_500_is_refused(session, limit):
    with pytest.raises(InvalidParty) as caught:
        ch.list_parties(session, limit=limit)
    assert caught.value.details["field"] == "limit"


def test_groups_can_be_joined_and_left_idempotently(session, net):
    u = net
    _store(session, u, "s1")
    ch.add_to_group(session, f"{u}-s1", f"{u}-vip")
    joined = ch.add_to_group(session, f"{u}-s1", f"{u}-vip")
    assert joined.groups == (f"{u}-vip",)
    left = ch.remove_from_group(session, f"{u}-s1", f"{u}-vip")
    assert left.groups == ()
    assert ch.list_parties(session, group=f"{u}-vip")[0] == []
    with pytest.raises(ch.GroupNotFound):
        ch.add_to_group(session, f"{u}-s1", f"{u}-nogroup")


def test_manual_tags_can_be_added_and_removed(session, net):
    u = net
    _store(session, u, "s1")
    ch.tag_party(session, f"{u}-s1", "夜市")
    tagged = ch.tag_party(session, f"{u}-s1", "24h")
    assert tagged.tags == ("24h", "夜市")
    assert ch.tag_party(session, f"{u}-s1", "24h").tags == ("24h", "夜市")
    untagged = ch.untag_party(session, f"{u}-s1", "夜市")
    assert untagged.tags == ("24h",)
    with pytest.raises(InvalidParty) as caught:
        ch.tag_party(session, f"{u}-s1", " ")
    assert caught.value.details["field"] == "tag"


def test_a_party_can_be_frozen_and_reactivated(session, net):
    u = net
    _store(session, u, "s1")
    frozen = ch.update_party(session, f"{u}-s1", status="frozen")
    assert frozen.status == "frozen" and ch.get_party(session, f"{u}-s1").status == "frozen"
    active = ch.update_party(session, frozen.public_id, status="active")
    assert active.status == "active"


def test_updating_a_party_changes_only_the_given_fields(session, net):
    u = net
    made = _store(session, u, "s1", owner_name="Li Lei", grade=f"{u}-gold")
    changed = ch.update_party(session, f"{u}-s1", name="Renamed", contact_phone="138-0000",
                              region=f"{u}-js", customer_type=f"{u}-retail",
                              quality_customer=True)
    assert (changed.name, changed.contact_phone, changed.region_code,
            changed.customer_type_code, changed.quality_customer) == (
        "Renamed", "138-0000", f"{u}-js", f"{u}-retail", True)
    assert changed.owner_name == "Li Lei" and changed.grade_code == f"{u}-gold"
    assert changed.public_id == made.public_id
    assert ch.update_party(session, f"{u}-s1", grade=None).grade_code is None


def test_an_invalid_update_writes_nothing(session, net):
    u = net
    _store(session, u, "s1")
    with pytest.raises(InvalidParty) as caught:
        ch.update_party(session, f"{u}-s1", name="New", contact_phone="not a phone")
    assert caught.value.details["field"] == "contact_phone"
    assert ch.get_party(session, f"{u}-s1").name == "Store s1"
    with pytest.raises(PartyNotFound):
        ch.update_party(session, f"{u}-nobody", name="x")


def test_channel_errors_share_the_ledgers_base_so_the_edge_maps_them_alike():
    from ledger import DomainError, LedgerError

    from channel_api.errors import ChannelError, PartyNotFound

    error = PartyNotFound("no party x", field="party")
    assert isinstance(error, DomainError) and not isinstance(error, LedgerError)
    assert issubclass(ChannelError, DomainError)
    assert (error.code, error.http_status, error.details) == ("party_not_found", 404, {"field": "party"})


def test_region_and_customer_type_filters_combine(session):
    ch.create_region(session, "R", "Root")
    ch.create_region(session, "R1", "Child", parent="R")
    ch.create_customer_type(session, "T", "Type")
    ch.create_customer_type(session, "T1", "Subtype", parent="T")
    ch.create_customer_type(session, "U", "Other")
    ch.create_party(session, code="P1", name="P1", role="store", region="R1", customer_type="T1")
    ch.create_party(session, code="P2", name="P2", role="store", region="R1", customer_type="U")
    found, _ = ch.list_parties(session, region="R", customer_type="T")
    assert [p.code for p in found] == ["P1"]
