"""The ``channel-ledger`` command line.

The module runs on a database of its own (its tests commit), and migrate and
seed-demo (fixed account codes) each get a fresh, empty one per test.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import inspect, text

import ledger
from ledger import EntryRequest, PostingLine
from service import cli as cli_module
from service.cli import Runtime, cli
from service.demo import BRAND, DISTRIBUTORS, STORES, clearing_legs
from service.settings import Settings
from tests.isolated_db import isolated_engine


def run(runtime: Runtime | None, *args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), obj=runtime, env=env, catch_exceptions=False)


def runtime_for(engine) -> Runtime:
    return Runtime(Settings(database_url=engine.url.render_as_string(hide_password=False),
                            log_format="text"), engine=engine)


@pytest.fixture(scope="module")
def engine(backend, tmp_path_factory):
    """This module commits: it gets a database of its own (see tests/isolated_db.py)."""
    with isolated_engine(backend, tmp_path_factory.mktemp("db")) as engine:
        yield engine


@pytest.fixture
def fresh_engine(backend, tmp_path):
    """An empty database (no tables yet) of the current backend."""
    with isolated_engine(backend, tmp_path, migrated=False) as engine:
        yield engine


@pytest.fixture
def migrated_fresh(fresh_engine):
    assert run(runtime_for(fresh_engine), "migrate").exit_code == 0
    return fresh_engine


def test_migrate_builds_the_schema_and_is_repeatable(fresh_engine):
    runtime = runtime_for(fresh_engine)

    first = run(runtime, "migrate")
    second = run(runtime, "migrate")

    assert (first.exit_code, second.exit_code) == (0, 0)
    assert "database schema is at head" in first.output
    tables = set(inspect(fresh_engine).get_table_names())
    assert {"ledger_account", "ledger_entry", "ledger_posting", "scheduler_lock",
            "alembic_version"} <= tables
    with fresh_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_seed_demo_posts_the_demo_books_once(migrated_fresh):
    runtime = runtime_for(migrated_fresh)

    first = run(runtime, "seed-demo")
    second = run(runtime, "seed-demo")

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert re.search(r"demo data: \d+ accounts, 23 entries added \(23 entries, 49 postings", first.output)
    assert "0 entries added (23 entries, 49 postings" in second.output

    with runtime.session_factory()() as s:
        def posted(code):
            return ledger.get_account(s, code).posted_minor

        # ord_demo_0001: 128,800 fen; 0.6 % fee 772, 2 % brand royalty 2,576, rest to dist-east.
        assert posted("party:dist-east:wallet") == 125_452
        assert posted("party:dist-east:pending") == 0  # its one leg was released
        # ord_demo_0002: dist-east buys 1,500,000 from the brand: fee 9,000, rest to the brand.
        assert posted("party:brand:pending") == 2_576 + 1_491_000
        assert posted("platform:revenue") == 772 + 9_000
        assert posted("order:ord_demo_0001:escrow") == 0
        assert posted("order:ord_demo_0003:escrow") == 45_600  # captured, not yet cleared
        assert posted("credit:store-003@dist-east") == 50_000
        assert posted("party:dist-east:credit_issued") == 50_000
        # The misbooked remittance was reversed and rebooked.
        assert posted("prepaid:store-010@dist-north") == 300_000
        assert posted("prepaid:store-009@dist-north") == 290_000 + 99_900
        # The open hold reserves 66,600 of store-002's 220,000.
        store_002 = ledger.get_account(s, "prepaid:store-002@dist-east")
        assert (store_002.posted_minor, store_002.available_minor) == (220_000, 153_400)

        kinds = [e.kind.value for e in ledger.list_entries(s, limit=100)[0]]
        assert kinds.count("reversal") == 1
        assert kinds.count("pending") == 1
        assert ledger.trial_balance(s).balanced
        assert ledger.check_ledger(s) == []

    checked = run(runtime, "check")
    assert checked.exit_code == 0
    assert checked.stdout.strip() == ("ledger OK: 23 entries, 49 postings checked; "
                                      "cash invariant holds in 1 currencies")


def test_the_demo_opens_every_partys_accounts(migrated_fresh):
    runtime = runtime_for(migrated_fresh)
    run(runtime, "seed-demo")

    with runtime.session_factory()() as s:
        for party in (BRAND, *DISTRIBUTORS, *STORES):
            wallet = ledger.get_account(s, f"party:{party}:wallet")
            assert (wallet.owner_party_id, wallet.min_balance_minor, wallet.currency) == (party, 0, "CNY")


@given(cash=st.integers(min_value=1, max_value=10**12), brand_sells=st.booleans())
def test_clearing_legs_add_up_to_the_fen(cash, brand_sells):
    legs = clearing_legs(cash, BRAND if brand_sells else "dist-east")

    assert sum(amount for _account, amount in legs) == cash
    assert all(amount >= 0 for _account, amount in legs)


def test_check_reports_counts_when_healthy(engine, session_factory):
    with session_factory() as s:
        entries, postings = ledger.ledger_counts(s)

    result = run(runtime_for(engine), "check")

    assert result.exit_code == 0
    # Nothing writes between the count and the check: tests run one at a time.
    assert result.stdout.strip().startswith(
        f"ledger OK: {entries} entries, {postings} postings checked; cash invariant holds")


def test_check_prints_every_finding_and_exits_1(engine, monkeypatch):
    findings = [ledger.Finding("entries_balance", "je_1", "debits 5 != credits 4"),
                ledger.Finding("bounds", "prepaid:x@y", "balance -1 below minimum 0")]
    monkeypatch.setattr(ledger, "check_ledger", lambda session: findings)

    result = CliRunner().invoke(cli, ["check"], obj=runtime_for(engine))

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "entries_balance: je_1: debits 5 != credits 4",
        "bounds: prepaid:x@y: balance -1 below minimum 0",
    ]
    assert "ledger check FAILED: 2 finding(s)" in result.stderr


def test_void_expired_voids_holds_past_their_expiry(engine, session_factory, unique, monkeypatch):
    buyer, escrow = f"prepaid:{unique}@s", f"order:{unique}:escrow"
    with session_factory() as s, s.begin():
        ledger.open_account(s, f"custody:{unique}", "Bank", "asset", "CNY")
        ledger.open_account(s, buyer, "Prepaid", "liability", "CNY", min_balance_minor=0)
        ledger.open_account(s, escrow, "Escrow", "liability", "CNY", min_balance_minor=0)
        ledger.post_entry(s, EntryRequest("deposit", [
            PostingLine(f"custody:{unique}", "debit", 100, "CNY"), PostingLine(buyer, "credit", 100, "CNY")]))
        hold = ledger.post_entry(s, EntryRequest(
            "order_hold", [PostingLine(buyer, "debit", 60, "CNY"), PostingLine(escrow, "credit", 60, "CNY")],
            pending=True, expires_at=datetime.now(timezone.utc) + timedelta(seconds=1)))
    # Let the job see "now" an hour later instead of sleeping.
    real = ledger.void_expired_pending
    monkeypatch.setattr(ledger, "void_expired_pending", lambda s, now=None, limit=1000: real(
        s, now=datetime.now(timezone.utc) + timedelta(hours=1), limit=limit))

    result = run(runtime_for(engine), "void-expired")

    assert result.exit_code == 0
    count = int(re.fullmatch(r"voided (\d+) expired pending entries", result.stdout.strip()).group(1))
    assert count >= 1
    with session_factory() as s:
        assert ledger.get_entry(s, hold.id).status == "expired"
        assert ledger.get_account(s, buyer).available_minor == 100


def test_a_bad_setting_is_a_usage_error_naming_the_variable():
    result = CliRunner().invoke(cli, ["check"], env={"CL_PORT": "eighty"})

    assert result.exit_code == 2
    assert "configuration error: CL_PORT: 'eighty' is not a whole number" in result.output


def test_serve_prints_the_url_and_runs_the_app(engine, monkeypatch):
    calls = []
    monkeypatch.setattr("flask.Flask.run", lambda self, **kwargs: calls.append(kwargs))

    result = run(runtime_for(engine), "serve", "--host", "0.0.0.0", "--port", "8765")

    assert result.exit_code == 0
    assert "http://0.0.0.0:8765/" in result.output
    assert calls == [{"host": "0.0.0.0", "port": 8765, "debug": False, "use_reloader": False}]


def test_serve_defaults_to_the_configured_host_and_port(engine, monkeypatch):
    calls = []
    monkeypatch.setattr("flask.Flask.run", lambda self, **kwargs: calls.append(kwargs))
    runtime = runtime_for(engine)
    runtime.settings = Settings(host="127.0.0.2", port=8099, log_format="text")

    run(runtime, "serve")

    assert (calls[0]["host"], calls[0]["port"]) == ("127.0.0.2", 8099)


def test_scheduler_command_runs_the_scheduler_with_the_settings(engine, monkeypatch):
    seen = []
    monkeypatch.setattr("service.scheduler.run", lambda settings, factory: seen.append((settings, factory)))
    runtime = runtime_for(engine)

    result = run(runtime, "scheduler")

    assert result.exit_code == 0
    assert seen[0][0] is runtime.settings
    assert seen[0][1] is runtime.session_factory()


def test_main_is_the_console_entry_point(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["channel-ledger", "--help"])

    with pytest.raises(SystemExit) as exit_:
        cli_module.main()

    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "migrate", "seed-demo", "check", "scheduler", "void-expired"):
        assert command in out


def test_create_api_key_import_and_export_from_the_command_line(engine, tmp_path, unique):
    runtime = runtime_for(engine)
    regions = tmp_path / "regions.csv"
    regions.write_text(f"code,name,parent,level\n{unique}-cn,China,,country\n")
    types = tmp_path / "types.csv"
    types.write_text(f"code,name,parent\n{unique}-retail,Retail,\n")
    parties = tmp_path / "parties.csv"
    parties.write_text("code,name,role,region,customer_type\n"
                       f"{unique}-brand,Brand,brand,{unique}-cn,{unique}-retail\n"
                       f"{unique}-bad,Bad,store,nowhere,{unique}-retail\n")
    for kind, path in (("regions", regions), ("customer_types", types)):
        result = run(runtime, "import", kind, str(path))
        assert result.exit_code == 0, result.output
        assert "1 created" in result.output

    rejected = run(runtime, "import", "parties", str(parties))
    assert rejected.exit_code == 1
    assert "line 3: region: no region with code 'nowhere'" in rejected.output
    assert "REJECTED" in rejected.stderr

    parties.write_text(parties.read_text().replace("nowhere", f"{unique}-cn"))
    applied = run(runtime, "import", "parties", str(parties))
    assert applied.exit_code == 0 and "2 created" in applied.output
    assert "parties: check 2/2" in applied.stderr

    key = run(runtime, "create-api-key", "--party", f"{unique}-brand", "--scope", "manage")
    assert key.exit_code == 0
    assert key.stdout.strip().startswith("key_") and "." in key.stdout
    unknown = run(runtime, "create-api-key", "--party", f"{unique}-none", "--scope", "manage")
    assert unknown.exit_code == 1 and "no party" in unknown.output

    exported = run(runtime, "export", "parties")
    assert exported.exit_code == 0
    assert f"{unique}-bad,Bad,store,{unique}-cn" in exported.stdout


def test_seed_demo_builds_a_complete_channel_that_prices(migrated_fresh):
    from channel_api import network, prices

    runtime = runtime_for(migrated_fresh)
    first = run(runtime, "seed-demo")
    again = run(runtime, "seed-demo")
    line = "demo channel: 14 parties, 6 SKUs, 16 supply relationships, 6 price strategies"
    assert line in first.output and line in again.output

    with runtime.session_factory()() as s:
        # Two levels of distributors: the brand sells to dist-east, which sells to dist-hz.
        assert network.list_relationships(s, seller="dist-east", buyer="dist-hz")[0]
        listed = {l.sku: l for l in prices.price_list(s, seller="dist-east", buyer="store-001").lines}
        assert listed["green-tea-500x24"].strategy_code == "east-grade-a-green"
        assert listed["water-550x24"].unit_price_minor == 2000
        assert listed["crackers-100x20"].unit_price_minor == 5700  # 95% of 60.00
        hz = prices.price_list(s, seller="dist-hz", buyer="store-002").lines
        assert {l.sku for l in hz} == {"green-tea-500x24", "green-tea-1lx12", "jasmine-tea-500x24"}
        wholesale = prices.price_for(s, seller="brand", buyer="dist-east", sku="water-5lx4", quantity=100)
        assert wholesale.resolution.unit_price_minor == 3600 * 78 // 100


def test_the_wsgi_warm_up_is_not_fatal_on_an_unmigrated_database(tmp_path, caplog):
    import logging

    from service.app import create_app, warm_price_caches
    from service.settings import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path}/empty.sqlite3", log_format="text",
                        secret_key="k" * 32)
    app = create_app(settings)
    with caplog.at_level(logging.WARNING, logger="service.app"):
        warm_price_caches(app)
    assert "price caches not warmed" in caplog.text
    assert app.test_client().get("/health").status_code in (200, 503)


def test_the_demo_clears_store_orders_and_release_runs_the_job_once(migrated_fresh):
    from channel_api import clearing_rules

    runtime = runtime_for(migrated_fresh)
    run(runtime, "seed-demo")
    run(runtime, "seed-demo")                      # the rule is created once, unchanged
    with runtime.session_factory()() as s:
        rule = clearing_rules.get_rule(s, "demo-store-orders")
        assert rule.version == 1
        assert [(leg.recipient, leg.basis, leg.value) for leg in rule.legs] == [
            ("seller", "remainder", 0), ("brand", "percent", 750), ("platform", "percent", 50)]
    released = run(runtime, "release")
    assert released.exit_code == 0, released.output
    assert released.stdout.strip() == "released 0 cleared legs"
