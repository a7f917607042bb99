"""CSV import and export of parties: row-by-row report, all-or-nothing,
idempotent re-import, progress, round trip through export."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

import channel_api as ca
from channel_api import bulk
from channel_api.bulk.framework import FileError, money_minor, CellError
from channel_api.models import ImportRun, Party


@pytest.fixture
def master(session):
    ca.create_region(session, "CN", "China")
    ca.create_region(session, "ZJ", "Zhejiang", parent="CN")
    ca.create_customer_type(session, "retail", "Retail")
    ca.create_grade(session, "A", "Grade A", rank=1)
    ca.create_group(session, "vip", "VIP")
    ca.create_group(session, "east", "East")
    return session


HEADER = "code,name,role,region,customer_type,grade,quality_customer,groups,tags\n"


def party_count(session) -> int:
    return session.scalar(select(func.count()).select_from(Party))


def test_a_good_file_is_applied_and_reimporting_it_changes_nothing(master):
    data = HEADER + ("B1,Brand,brand,CN,retail,,false,,\n"
                     "D1,Dist,distributor,ZJ,retail,A,true,vip|east,key\n"
                     "S1,Store,store,ZJ,retail,,no,,\n")
    calls = []
    report = bulk.import_csv(master, "parties", data, actor="test",
                             progress=lambda *args: calls.append(args))
    assert (report.status, report.created, report.updated, report.unchanged) == ("applied", 3, 0, 0)
    d1 = ca.get_party(master, "D1")
    assert (d1.grade_code, d1.quality_customer, d1.groups, d1.tags) == ("A", True, ("east", "vip"), ("key",))
    assert ("check", 3, 3) in calls and calls[-1][1] == calls[-1][2]

    again = bulk.import_csv(master, "parties", data.encode("utf-8-sig"), actor="test")
    assert (again.status, again.created, again.updated, again.unchanged) == ("applied", 0, 0, 3)


def test_changes_are_updates_including_memberships(master):
    bulk.import_csv(master, "parties", HEADER + "D1,Dist,distributor,ZJ,retail,A,true,vip,\n",
                    actor="test")
    report = bulk.import_csv(master, "parties",
                             HEADER + "D1,Dist,distributor,ZJ,retail,A,true,east,\n"
                                      "D2,Other,distributor,CN,retail,,false,,\n", actor="test")
    assert (report.created, report.updated, report.unchanged) == (1, 1, 0)
    assert ca.get_party(master, "D1").groups == ("east",)


def test_every_bad_row_is_reported_and_nothing_is_written(master):
    data = HEADER + ("S1,Store,store,ZJ,retail,,false,,\n"
                     "S2,,store,nowhere,retail,Z,maybe,ghost,\n"
                     "S1,Again,store,ZJ,retail,,false,,\n"
                     "bad code!,X,emperor,ZJ,retail,,false,,\n")
    before = party_count(master)
    report = bulk.import_csv(master, "parties", data, actor="test")
    assert report.status == "rejected" and report.created == 0
    found = {(e.line, e.field) for e in report.errors}
    assert {(3, "name"), (3, "region"), (3, "grade"), (3, "quality_customer"), (3, "groups"),
            (4, "code"), (5, "code"), (5, "role")} <= found
    assert party_count(master) == before
    run = master.scalars(select(ImportRun).where(ImportRun.public_id == report.import_id)).one()
    assert run.status == "rejected" and run.rows == 4 and len(run.errors) == report.error_count


def test_a_wrong_header_rejects_the_file(master):
    with pytest.raises(FileError) as error:
        bulk.import_csv(master, "parties", "code,name,colour\nX,Y,red\n", actor="test")
    assert error.value.details["unknown"] == ["colour"]
    assert "role" in error.value.details["missing"]
    with pytest.raises(FileError):
        bulk.import_csv(master, "parties", b"\xff\xfe not utf-8", actor="test")


def test_export_round_trips_through_import(master):
    bulk.import_csv(master, "parties", HEADER + "D1,Dist,distributor,ZJ,retail,A,true,vip|east,k1|k2\n"
                                                "S1,\"Store, the first\",store,ZJ,retail,,false,,\n",
                    actor="test")
    text = "".join(bulk.export_csv(master, "parties"))
    lines = text.splitlines()
    assert lines[0].startswith("code,name,role")
    assert any(line.startswith('S1,"Store, the first",store') for line in lines)
    again = bulk.import_csv(master, "parties", text, actor="test")
    assert again.status == "applied" and again.created == 0 and again.updated == 0


def test_money_cells_are_exact():
    assert money_minor("12.50", "CNY", "price") == 1250
    assert money_minor("0", "CNY", "price") == 0
    for bad in ("12.505", "-1", "abc", "1e400", "NaN"):
        with pytest.raises(CellError):
            money_minor(bad, "CNY", "price")


def test_trees_import_parent_first_and_refuse_unknown_or_moved_parents(session):
    data = "code,name,parent,level\nCN,China,,country\nZJ,Zhejiang,CN,province\nHZ,Hangzhou,ZJ,city\n"
    report = bulk.import_csv(session, "regions", data, actor="test")
    assert (report.status, report.created) == ("applied", 3)
    assert [r.parent_code for r in ca.list_regions(session) if r.code == "HZ"] == ["ZJ"]
    assert bulk.import_csv(session, "regions", data, actor="test").unchanged == 3

    bad = "code,name,parent,level\nNB,Ningbo,XX,city\nHZ,Hangzhou,CN,city\n"
    rejected = bulk.import_csv(session, "regions", bad, actor="test")
    assert rejected.status == "rejected"
    assert {(e.line, e.field) for e in rejected.errors} == {(2, "parent"), (3, "parent")}

    exported = "".join(bulk.export_csv(session, "regions"))
    assert exported.splitlines()[:3] == ["code,name,parent,level", "CN,China,,country", "ZJ,Zhejiang,CN,province"]


def test_flat_tables_import_and_update(session):
    assert bulk.import_csv(session, "grades", "code,name,rank\nA,Gold,1\nB,Silver,2\n", actor="t").created == 2
    report = bulk.import_csv(session, "grades", "code,name,rank\nA,Gold,3\nB,Silver,2\n", actor="t")
    assert (report.updated, report.unchanged) == (1, 1)
    assert [g.rank for g in ca.list_grades(session) if g.code == "A"] == [3]
    rejected = bulk.import_csv(session, "units", "code,name\ncase,\n", actor="t")
    assert rejected.errors[0].field == "name"
