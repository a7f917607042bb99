"""The read-only ledger API over HTTP: shapes, pagination, problem+json errors,
request ids, metrics. Data is committed through the ledger API with unique
codes (the app reads through its own sessions, so it must be committed)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine

import ledger
from ledger import EntryRequest, PostingLine
from service import metrics
from service.app import create_app
from service.settings import Settings
from tests.isolated_db import isolated_engine

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def engine(backend, tmp_path_factory):
    """This module commits: it gets a database of its own (see tests/isolated_db.py)."""
    with isolated_engine(backend, tmp_path_factory.mktemp("db")) as engine:
        yield engine


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def cny(amount_minor: int) -> dict:
    return {"amount_minor": amount_minor, "currency": "CNY"}


@pytest.fixture
def app(engine):
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False),
                        log_format="text", secret_key="k" * 32)
    return create_app(settings, engine=engine)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def books(session_factory, unique):
    """A bank account and two prepaid accounts of one buyer, committed."""
    u = unique
    codes = {"bank": f"custody:{u}", "prepaid": f"prepaid:{u}-b@{u}-s", "other": f"prepaid:{u}-c@{u}-s"}
    with session_factory() as s, s.begin():
        ledger.open_account(s, codes["bank"], "Bank", "asset", "CNY")
        ledger.open_account(s, codes["prepaid"], "Prepaid", "liability", "CNY",
                            owner_party_id=f"{u}-b", min_balance_minor=0)
        ledger.open_account(s, codes["other"], "Prepaid C", "liability", "CNY",
                            owner_party_id=f"{u}-c", min_balance_minor=0)
    return codes


def deposit(session_factory, books, amount_minor: int, *, key: str | None = None, pending=False):
    request = EntryRequest(
        "deposit",
        [PostingLine(books["bank"], "debit", amount_minor, "CNY"),
         PostingLine(books["prepaid"], "credit", amount_minor, "CNY")],
        description=f"deposit {amount_minor}", idempotency_key=key, pending=pending,
    )
    with session_factory() as s, s.begin():
        return ledger.post_entry(s, request)


def spend(session_factory, books, amount_minor: int, *, pending=False):
    request = EntryRequest(
        "order_hold" if pending else "order_capture",
        [PostingLine(books["prepaid"], "debit", amount_minor, "CNY"),
         PostingLine(books["other"], "credit", amount_minor, "CNY")],
        pending=pending,
    )
    with session_factory() as s, s.begin():
        return ledger.post_entry(s, request)


# --- accounts ----------------------------------------------------------------------


def test_account_shows_posted_pending_and_available_balances(client, session_factory, books):
    deposit(session_factory, books, 10_000)
    spend(session_factory, books, 2_500, pending=True)

    response = client.get(f"/v1/accounts/{books['prepaid']}")

    assert response.status_code == 200
    body = response.get_json()
    assert body["code"] == books["prepaid"]
    assert body["id"].startswith("acct_")
    assert (body["type"], body["normal_side"], body["currency"], body["status"]) == (
        "liability", "credit", "CNY", "open")
    assert body["min_balance"] == cny(0)
    assert body["max_balance"] is None
    assert body["balances"] == {
        "posted": cny(10_000),
        "pending": cny(7_500),
        "available": cny(7_500),
        "pending_debits": cny(2_500),
        "pending_credits": cny(0),
    }
    assert body["created_at"].endswith("Z")


def test_account_can_be_fetched_by_public_id(client, books):
    by_code = client.get(f"/v1/accounts/{books['bank']}").get_json()

    by_id = client.get(f"/v1/accounts/{by_code['id']}")

    assert by_id.status_code == 200
    assert by_id.get_json() == by_code


def test_unknown_account_is_a_404_problem(client, unique):
    response = client.get(f"/v1/accounts/nope:{unique}")

    assert response.status_code == 404
    assert response.mimetype == PROBLEM
    assert response.get_json() == {
        "type": "urn:channel-ledger:problem:account_not_found",
        "title": "Account not found",
        "status": 404,
        "detail": f"no account 'nope:{unique}'",
        "code": "account_not_found",
        "details": {"account": f"nope:{unique}"},
    }


def test_accounts_are_paged_with_a_cursor(client, session_factory, unique):
    codes = [f"t:{unique}:{n}" for n in range(5)]
    with session_factory() as s, s.begin():
        for code in codes:
            ledger.open_account(s, code, code, "asset", "CNY", owner_party_id=unique)

    seen, cursor, pages = [], None, 0
    while True:
        query = {"code_prefix": f"t:{unique}:", "limit": 2}
        if cursor:
            query["after"] = cursor
        body = client.get("/v1/accounts", query_string=query).get_json()
        pages += 1
        seen += [item["code"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(body["items"]) == 2

    assert pages == 3
    assert seen == codes


def test_accounts_are_filtered_by_owner_and_currency(client, session_factory, unique):
    with session_factory() as s, s.begin():
        ledger.open_account(s, f"f:{unique}:a", "A", "asset", "CNY", owner_party_id=f"{unique}-1")
        ledger.open_account(s, f"f:{unique}:b", "B", "asset", "USD", owner_party_id=f"{unique}-1")
        ledger.open_account(s, f"f:{unique}:c", "C", "asset", "CNY", owner_party_id=f"{unique}-2")

    body = client.get("/v1/accounts", query_string={
        "owner_party_id": f"{unique}-1", "currency": "CNY"}).get_json()

    assert [item["code"] for item in body["items"]] == [f"f:{unique}:a"]
    assert body["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"limit": 501}, "limit", "Must be greater than or equal to 1 and less than or equal to 500."),
        ({"limit": 0}, "limit", "Must be greater than or equal to 1 and less than or equal to 500."),
        ({"limit": "ten"}, "limit", "Not a valid integer."),
        ({"currency": "cny"}, "currency", "Must be an ISO 4217 code such as CNY."),
        ({"limt": 5}, "limt", "Unknown field."),
    ],
)
def test_bad_list_arguments_are_a_422_naming_the_field(client, query, field, message):
    response = client.get("/v1/accounts", query_string=query)

    assert response.status_code == 422
    assert response.mimetype == PROBLEM
    assert response.get_json() == {
        "type": "urn:channel-ledger:problem:validation_error",
        "title": "Invalid request",
        "status": 422,
        "detail": f"Invalid input: {field}.",
        "code": "validation_error",
        "errors": [{"field": field, "location": "query", "message": message}],
    }


def test_limit_of_500_is_accepted(client):
    assert client.get("/v1/accounts", query_string={"limit": 500}).status_code == 200


# --- balances at a time and statements ------------------------------------------------


def test_balance_at_a_time(client, session_factory, books):
    first = deposit(session_factory, books, 1_000)
    deposit(session_factory, books, 250)
    url = f"/v1/accounts/{books['prepaid']}/balance"

    before = client.get(url, query_string={"at": iso(first.posted_at - timedelta(seconds=1))})
    at_first = client.get(url, query_string={"at": iso(first.posted_at)})
    now = client.get(url)

    assert before.get_json()["balance"] == cny(0)
    assert at_first.get_json() == {
        "account": books["prepaid"], "at": iso(first.posted_at), "balance": cny(1_000)}
    assert now.get_json()["balance"] == cny(1_250)


def test_balance_at_accepts_an_offset_and_answers_in_utc(client, session_factory, books):
    entry = deposit(session_factory, books, 700)
    shanghai = entry.posted_at.astimezone(timezone(timedelta(hours=8)))

    body = client.get(f"/v1/accounts/{books['prepaid']}/balance",
                      query_string={"at": shanghai.isoformat()}).get_json()

    assert body["at"] == iso(entry.posted_at)
    assert body["balance"] == cny(700)


def test_a_naive_time_is_refused(client, books):
    response = client.get(f"/v1/accounts/{books['prepaid']}/balance",
                          query_string={"at": "2024-05-01T00:00:00"})

    assert response.status_code == 422
    assert response.get_json()["errors"] == [{
        "field": "at", "location": "query",
        "message": "Must include a timezone offset, e.g. 2024-05-01T00:00:00Z or +08:00.",
    }]


def test_statement_pages_lines_with_running_balances(client, session_factory, books):
    opening = deposit(session_factory, books, 100)
    start = opening.posted_at + timedelta(microseconds=1)
    entries = [deposit(session_factory, books, amount) for amount in (10, 20, 30)]
    url = f"/v1/accounts/{books['prepaid']}/statement"
    query = {"start": iso(start), "end": iso(entries[-1].posted_at), "limit": 2}

    page1 = client.get(url, query_string=query).get_json()
    page2 = client.get(url, query_string={**query, "cursor": page1["next_cursor"]}).get_json()

    assert page1["opening_balance"] == cny(100)
    assert page1["closing_balance"] == cny(160)
    assert page1["account"]["code"] == books["prepaid"]
    assert [(line["entry_id"], line["side"], line["amount"], line["balance_after"])
            for line in page1["lines"] + page2["lines"]] == [
        (entries[0].id, "credit", cny(10), cny(110)),
        (entries[1].id, "credit", cny(20), cny(130)),
        (entries[2].id, "credit", cny(30), cny(160)),
    ]
    assert page1["next_cursor"] is not None
    assert page2["next_cursor"] is None
    assert page1["lines"][0]["entry_code"] == "deposit"
    assert page1["lines"][0]["description"] == "deposit 10"


def test_statement_exports_as_csv_with_decimal_amounts_and_framing_balances(
        client, session_factory, books, monkeypatch):
    import csv as csv_module
    import io

    from service import exports

    monkeypatch.setattr(exports, "PAGE", 2)  # several pages make one file
    opening = deposit(session_factory, books, 100)
    start = opening.posted_at + timedelta(microseconds=1)
    entries = [deposit(session_factory, books, amount) for amount in (1_005, 20, 30)]
    spend(session_factory, books, 55)

    response = client.get(f"/v1/accounts/{books['prepaid']}/statement.csv",
                          query_string={"start": iso(start)})

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv_module.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == list(exports.STATEMENT_COLUMNS)
    assert rows[1][2:] == ["opening_balance", "", "", "", "1.00", "CNY"]
    assert [(r[1], r[4], r[5], r[6]) for r in rows[2:-1]] == [
        (entries[0].id, "", "10.05", "11.05"),
        (entries[1].id, "", "0.20", "11.25"),
        (entries[2].id, "", "0.30", "11.55"),
        (rows[5][1], "0.55", "", "11.00"),
    ]
    assert rows[-1][2:] == ["closing_balance", "", "", "", "11.00", "CNY"]


def test_statement_csv_of_an_unknown_account_is_a_problem_not_a_file(client):
    response = client.get("/v1/accounts/nope:nowhere/statement.csv",
                          query_string={"start": "2024-05-01T00:00:00Z"})

    assert response.status_code == 404
    assert response.get_json()["code"] == "account_not_found"


def test_statement_needs_a_start(client, books):
    response = client.get(f"/v1/accounts/{books['prepaid']}/statement")

    assert response.status_code == 422
    assert response.get_json()["errors"] == [
        {"field": "start", "location": "query", "message": "Missing data for required field."}]


def test_statement_end_before_start_is_refused(client, books):
    response = client.get(f"/v1/accounts/{books['prepaid']}/statement", query_string={
        "start": "2024-05-02T00:00:00Z", "end": "2024-05-01T00:00:00Z"})

    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == ["end"]


def test_a_forged_statement_cursor_is_refused(client, books):
    response = client.get(f"/v1/accounts/{books['prepaid']}/statement", query_string={
        "start": "2024-05-01T00:00:00Z", "cursor": "not-a-cursor"})

    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == "invalid_entry"
    assert body["errors"][0]["field"] == "cursor"


# --- entries -----------------------------------------------------------------------


def test_entry_with_its_postings(client, session_factory, books, unique):
    entry = deposit(session_factory, books, 12_345, key=f"dep-{unique}")

    response = client.get(f"/v1/entries/{entry.id}")

    assert response.status_code == 200
    body = response.get_json()
    assert {k: body[k] for k in ("id", "code", "kind", "status", "description", "idempotency_key",
                                 "pending_id", "reverses_id", "expires_at")} == {
        "id": entry.id, "code": "deposit", "kind": "standard", "status": "posted",
        "description": "deposit 12345", "idempotency_key": f"dep-{unique}",
        "pending_id": None, "reverses_id": None, "expires_at": None,
    }
    assert body["posted_at"] == iso(entry.posted_at)
    assert [(p["account"], p["side"], p["amount"], p["pending"]) for p in body["postings"]] == [
        (books["bank"], "debit", cny(12_345), False),
        (books["prepaid"], "credit", cny(12_345), False),
    ]


def test_unknown_entry_is_a_404_problem(client):
    response = client.get("/v1/entries/je_0123456789abcdef0123456789abcdef")

    assert response.status_code == 404
    assert response.mimetype == PROBLEM
    assert response.get_json()["code"] == "entry_not_found"


def test_entries_of_an_account_are_paged(client, session_factory, books):
    ids = [deposit(session_factory, books, amount).id for amount in (1, 2, 3)]
    account_id = client.get(f"/v1/accounts/{books['prepaid']}").get_json()["id"]

    page1 = client.get("/v1/entries", query_string={"account": account_id, "limit": 2}).get_json()
    page2 = client.get("/v1/entries", query_string={
        "account": books["prepaid"], "limit": 2, "after": page1["next_cursor"]}).get_json()

    assert [e["id"] for e in page1["items"] + page2["items"]] == ids
    assert page1["next_cursor"] == ids[1]
    assert page2["next_cursor"] is None


def test_entries_of_an_unknown_account_is_a_404(client, unique):
    response = client.get("/v1/entries", query_string={"account": f"nope:{unique}"})

    assert response.status_code == 404
    assert response.get_json()["code"] == "account_not_found"


# --- trial balance --------------------------------------------------------------------


def test_trial_balance_lists_our_accounts_and_balances(client, session_factory, books):
    deposit(session_factory, books, 4_000)
    spend(session_factory, books, 1_500)

    body = client.get("/v1/trial-balance").get_json()

    rows = {row["account"]: row for row in body["rows"]}
    assert rows[books["bank"]]["debit"] == cny(4_000)
    assert rows[books["bank"]]["credit"] == cny(0)
    assert rows[books["prepaid"]]["credit"] == cny(2_500)
    assert rows[books["other"]] == {"account": books["other"], "name": "Prepaid C",
                                    "type": "liability", "debit": cny(0), "credit": cny(1_500)}
    assert body["balanced"] is True
    cny_total = next(t for t in body["totals"] if t["currency"] == "CNY")
    assert cny_total["debits"] == cny_total["credits"]


def test_trial_balance_at_a_past_time_leaves_later_postings_out(client, session_factory, books):
    first = deposit(session_factory, books, 300)
    deposit(session_factory, books, 200)

    body = client.get("/v1/trial-balance", query_string={"at": iso(first.posted_at)}).get_json()

    rows = {row["account"]: row for row in body["rows"]}
    assert rows[books["prepaid"]]["credit"] == cny(300)
    assert body["at"] == iso(first.posted_at)


# --- health, errors, documents -------------------------------------------------------------


def test_health_checks_the_database(client):
    response = client.get("/health")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_health_is_503_when_the_database_is_unreachable(tmp_path):
    url = f"sqlite:///{tmp_path}/missing-dir/db.sqlite3"  # sqlite cannot create the directory
    app = create_app(Settings(database_url=url, log_format="text"), engine=create_engine(url))

    response = app.test_client().get("/health")

    assert response.status_code == 503
    assert response.get_json() == {"status": "error", "database": "error"}


def test_unknown_route_and_wrong_method_are_problems(client):
    missing = client.get("/v1/nothing-here")
    wrong_method = client.post("/v1/accounts")

    assert missing.status_code == 404
    assert missing.mimetype == PROBLEM
    assert missing.get_json()["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["code"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["Allow"]


def test_openapi_document_lists_the_endpoints(client):
    response = client.get("/v1/openapi.json")

    assert response.status_code == 200
    paths = response.get_json()["paths"]
    assert {"/health", "/v1/accounts", "/v1/accounts/{code_or_id}",
            "/v1/accounts/{code_or_id}/balance", "/v1/accounts/{code_or_id}/statement",
            "/v1/entries", "/v1/entries/{entry_id}", "/v1/trial-balance"} <= set(paths)
    assert response.get_json()["openapi"].startswith("3.")


# --- request ids and logs ------------------------------------------------------------------


def test_a_sane_request_id_is_echoed(client):
    response = client.get("/health", headers={"X-Request-Id": "abc-123.retry:1"})

    assert response.headers["X-Request-Id"] == "abc-123.retry:1"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "quote\"d", ""])
def test_an_insane_request_id_is_replaced(client, bad):
    response = client.get("/health", headers={"X-Request-Id": bad})

    assert response.headers["X-Request-Id"] != bad
    assert len(response.headers["X-Request-Id"]) == 32


def test_every_log_record_of_a_request_carries_its_id(engine, capsys):
    settings = Settings(log_format="json")
    app = create_app(settings, engine=engine)
    capsys.readouterr()

    app.test_client().get("/health", headers={"X-Request-Id": "req-42"})

    records = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    request_lines = [r for r in records if r.get("logger") == "service.http"]
    assert request_lines, records
    assert request_lines[-1]["request_id"] == "req-42"
    assert request_lines[-1]["status"] == 200
    assert {"timestamp", "level", "message"} <= set(request_lines[-1])


# --- metrics -------------------------------------------------------------------------


def _sample(name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_metrics_endpoint_exposes_request_durations_by_route(client, books):
    client.get(f"/v1/accounts/{books['bank']}")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert ('http_request_duration_seconds_count{endpoint="/v1/accounts/<code_or_id>",'
            'method="GET",status="200"}') in text


def test_error_responses_are_counted_by_code(client, unique):
    before = _sample("errors_total", code="account_not_found")

    client.get(f"/v1/accounts/nope:{unique}")

    assert _sample("errors_total", code="account_not_found") == before + 1


def test_only_committed_entries_and_postings_are_counted(session_factory, books):
    metrics.instrument_session_factory(session_factory)
    postings, entries = _sample("ledger_postings_total"), _sample("ledger_entries_total", kind="standard")
    pendings = _sample("ledger_entries_total", kind="pending")

    deposit(session_factory, books, 10)
    spend(session_factory, books, 5, pending=True)
    with pytest.raises(RuntimeError), session_factory() as s, s.begin():
        ledger.post_entry(s, EntryRequest("deposit", [
            PostingLine(books["bank"], "debit", 1, "CNY"),
            PostingLine(books["prepaid"], "credit", 1, "CNY")]))
        raise RuntimeError("rolled back")
    with session_factory() as s, s.begin():  # a savepoint rolled back inside a committed transaction
        with pytest.raises(RuntimeError), s.begin_nested():
            ledger.post_entry(s, EntryRequest("deposit", [
                PostingLine(books["bank"], "debit", 2, "CNY"),
                PostingLine(books["prepaid"], "credit", 2, "CNY")]))
            raise RuntimeError("savepoint rolled back")
        ledger.post_entry(s, EntryRequest("deposit", [
            PostingLine(books["bank"], "debit", 3, "CNY"),
            PostingLine(books["prepaid"], "credit", 3, "CNY")]))

    assert _sample("ledger_postings_total") == postings + 6
    assert _sample("ledger_entries_total", kind="standard") == entries + 2
    assert _sample("ledger_entries_total", kind="pending") == pendings + 1
