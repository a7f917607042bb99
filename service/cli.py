"""``channel-ledger`` command line: serve, migrate, seed-demo, check, scheduler,
void-expired, recompute-tags, create-api-key, import, export, sandbox-pay,
settle, sandbox-payouts.

Settings come from ``CL_*`` variables. Tests (or other tools) may pass a
ready :class:`Runtime` as click's ``obj`` to run commands against their own
engine.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import click
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

import ledger
from channel_api import outbox
from service.db import make_engine, make_session_factory
from service.logs import configure_logging
from service.metrics import instrument_session_factory
from service.settings import Settings, SettingsError, ensure_database_dir, load_settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine | None = None
    _session_factory: sessionmaker[Session] | None = field(default=None, repr=False)

    @property
    def database_url(self) -> str:
        if self.engine is not None:
            return self.engine.url.render_as_string(hide_password=False)
        return self.settings.database_url

    def get_engine(self) -> Engine:
        if self.engine is None:
            ensure_database_dir(self.settings.database_url)
            self.engine = make_engine(self.settings.database_url)
        return self.engine

    def session_factory(self) -> sessionmaker[Session]:
        if self._session_factory is None:
            self._session_factory = make_session_factory(self.get_engine())
            instrument_session_factory(self._session_factory)
            outbox.install_dispatch(self._session_factory)
        return self._session_factory


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Settlement service on a double-entry ledger."""
    if ctx.obj is None:
        try:
            ctx.obj = Runtime(load_settings())
        except SettingsError as error:
            raise click.UsageError(f"configuration error: {error}") from None
    configure_logging(ctx.obj.settings)


pass_runtime = click.make_pass_decorator(Runtime)


@cli.command()
@click.option("--host", help="Interface to listen on (default CL_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default CL_PORT).")
@pass_runtime
def serve(runtime: Runtime, host: str | None, port: int | None) -> None:
    """Run the development web server (production: gunicorn service.wsgi:app)."""
    from service.app import create_app, warm_price_caches

    host = host or runtime.settings.host
    port = port or runtime.settings.port
    app = create_app(runtime.settings, engine=runtime.get_engine())
    warm_price_caches(app)
    click.echo(f"channel-ledger (development server) on http://{host}:{port}/  "
               f"API document: http://{host}:{port}/v1/openapi.json")
    app.run(host=host, port=port, debug=False, use_reloader=False)


@cli.command()
@pass_runtime
def migrate(runtime: Runtime) -> None:
    """Bring the database schema to the latest revision (alembic upgrade head)."""
    from service.migrate import upgrade

    ensure_database_dir(runtime.database_url)
    upgrade(runtime.database_url)
    click.echo("database schema is at head")


@cli.command("seed-demo")
@pass_runtime
def seed_demo(runtime: Runtime) -> None:
    """Seed the demo channel (parties, catalog, strategies) and the demo books
    (chart of accounts, entries). Safe to re-run."""
    from service.demo import seed_demo as seed
    from service.demo_channel import seed_channel

    with runtime.session_factory()() as session, session.begin():
        channel = seed_channel(session)
        summary = seed(session)
    click.echo(f"demo channel: {channel.parties} parties, {channel.skus} SKUs, "
               f"{channel.relationships} supply relationships, {channel.strategies} price strategies")
    click.echo(f"demo data: {summary.accounts} accounts, {summary.entries_added} entries added "
               f"({summary.entries_total} entries, {summary.postings_total} postings in the ledger)")


@cli.command()
@pass_runtime
def check(runtime: Runtime) -> None:
    """Check the ledger's invariants and the cash invariant; print every
    finding; exit 1 if any."""
    from channel_api import cash

    with runtime.session_factory()() as session, session.begin():
        findings = ledger.check_ledger(session)
        entries, postings = ledger.ledger_counts(session)
        money = cash.check_cash(session)
    for finding in findings:
        click.echo(f"{finding.check}: {finding.subject}: {finding.message}")
    for position in money.positions:
        if position.difference_minor:
            click.echo(f"cash_invariant: {position.currency}: assets {position.assets_minor} != "
                       f"liabilities {position.liabilities_minor} + result "
                       f"{position.result_minor}")
    for claim in money.claims:
        click.echo(f"claim_pair: {claim.seller} {claim.kind}: buyers {claim.buyers_minor} != "
                   f"memo {claim.memo_minor}")
    failed = len(findings) + (0 if money.holds else 1)
    if failed:
        click.echo(f"ledger check FAILED: {failed} finding(s)", err=True)
        sys.exit(1)
    click.echo(f"ledger OK: {entries} entries, {postings} postings checked; "
               f"cash invariant holds in {len(money.positions)} currencies")


@cli.command()
@pass_runtime
def scheduler(runtime: Runtime) -> None:
    """Run the job scheduler (only the lease holder among many acts)."""
    from service.scheduler import run

    run(runtime.settings, runtime.session_factory())


@cli.command("void-expired")
@pass_runtime
def void_expired(runtime: Runtime) -> None:
    """Void expired pending entries once, now."""
    from service.scheduler import void_expired_pending

    voided = void_expired_pending(runtime.session_factory())
    click.echo(f"voided {voided} expired pending entries")


@cli.command("release")
@pass_runtime
def release(runtime: Runtime) -> None:
    """Release cleared legs whose timing has come (the scheduler's
    release_clearings job, once, now): pending to wallet."""
    from service.scheduler import release_clearings

    released = release_clearings(runtime.session_factory(), runtime.settings.tz)
    click.echo(f"released {released} cleared legs")


@cli.command("sandbox-pay")
@click.argument("payment")
@click.option("--decline", is_flag=True, help="The payer's attempt fails instead.")
@pass_runtime
def sandbox_pay(runtime: Runtime, payment: str, decline: bool) -> None:
    """Pay a sandbox payment (pay_...) as the payer would: the simulated
    provider sends its signed callback, received like any gateway's."""
    from channel_api import sub_merchants
    from payments.gateway import CallbackRequest, PaymentRequest
    from payments.models import Payment
    from service import callbacks
    from service.gateways import sandbox

    if not runtime.settings.sandbox_secret:
        raise click.ClickException("the sandbox gateway is off (CL_SANDBOX_SECRET=off)")
    factory = runtime.session_factory()
    with factory() as session:
        row = session.query(Payment).filter_by(public_id=payment).one_or_none()
        if row is None or row.gateway != "sandbox":
            raise click.ClickException(f"no sandbox payment {payment!r}")
        if row.state not in ("created", "pending"):
            raise click.ClickException(f"{payment} is {row.state}: nothing to pay")
        request = PaymentRequest(out_trade_no=row.public_id, amount_minor=row.amount_minor,
                                 currency=row.currency, description=row.purpose,
                                 notify_url="http://localhost/callbacks/sandbox",
                                 expires_at=ledger.as_utc(row.expires_at),
                                 **sub_merchants.request_fields(sub_merchants.of_payment(session, row)))
    # This process's own provider: it learns of the payment, then pays it.
    adapter, vendor = sandbox(runtime.settings.sandbox_secret)
    adapter.create_payment(request)
    headers, body = (vendor.fail if decline else vendor.pay)(payment)
    ack = callbacks.receive(factory, "sandbox", adapter, CallbackRequest(
        headers=headers, body=body, received_at=ledger.utcnow()))
    with factory() as session:
        state = session.query(Payment).filter_by(public_id=payment).one().state
    click.echo(f"{payment}: callback answered {ack.status}; payment {state}")


@cli.command("settle")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The business day to settle (default: yesterday).")
@pass_runtime
def settle(runtime: Runtime, day) -> None:
    """Write the daily settlement batch of every party not yet settled for
    the day; print progress and the parties whose batch does not tie."""
    from channel_api import settlements

    settle_day = day.date() if day else settlements.default_day(tz=runtime.settings.tz)

    def progress(done: int, total: int) -> None:
        click.echo(f"{done}/{total} parties settled", err=True)

    with runtime.session_factory()() as session, session.begin():
        run = settlements.settle(session, settle_day, tz=runtime.settings.tz, progress=progress)
    click.echo(f"{settle_day}: {run.settled} batches written, {run.already} already settled")
    if run.mismatched:
        click.echo(f"NOT TIED to the ledger: {', '.join(run.mismatched)}", err=True)
        sys.exit(1)


@cli.command("sandbox-payouts")
@pass_runtime
def sandbox_payouts(runtime: Runtime) -> None:
    """Send every approved payout to the simulated custody bank and apply
    its answers at once (the demo's bank, settling without its usual delay):
    an account number ending in 0000 fails and the money returns to the
    wallet."""
    from datetime import timedelta

    from channel_api import payouts
    from payments.sandbox_bank import SimulatedBank

    if not runtime.settings.sandbox_secret:
        raise click.ClickException("the sandbox is off (CL_SANDBOX_SECRET=off)")
    bank = SimulatedBank(runtime.settings.sandbox_secret.encode(), settle_after=timedelta(0))
    factory = runtime.session_factory()
    with factory() as session, session.begin():
        sent = payouts.send_payouts(session, bank)
    bank.settle()
    with factory() as session, session.begin():
        summary = payouts.poll_sent(session, bank, actor="cli:sandbox-payouts")
    click.echo(f"sent {sent.get('sent', 0)}, refused {sent.get('refused', 0)}; "
               f"outcomes applied {summary.applied}")


@cli.command("recompute-tags")
@click.option("--tag", metavar="CODE", help="Recompute only this dynamic tag (default: all).")
@pass_runtime
def recompute_tags(runtime: Runtime, tag: str | None) -> None:
    """Recompute dynamic tags once, now: re-evaluate each rule over every party."""
    from channel_api.errors import DynamicTagNotFound
    from service.scheduler import recompute_dynamic_tags

    def progress(code: str, done: int, total: int) -> None:
        click.echo(f"{code}: {done}/{total} parties evaluated", err=True)

    try:
        results = recompute_dynamic_tags(runtime.session_factory(), only=tag,
                                         progress=progress, actor="cli")
    except DynamicTagNotFound:
        click.echo(f"no dynamic tag {tag!r}", err=True)
        sys.exit(1)
    for result in results:
        click.echo(f"{result.tag.code}: {result.matched} matched, {result.added} added, "
                   f"{result.removed} removed")
    click.echo(f"recomputed {len(results)} dynamic tag(s)")


@cli.command("create-api-key")
@click.option("--party", required=True, metavar="CODE", help="The party the key acts for.")
@click.option("--scope", "scopes", multiple=True, required=True,
              type=click.Choice(["storefront", "manage", "finance"]), help="Repeat for several scopes.")
@click.option("--name", default="", help="A label for people (which app holds the key).")
@pass_runtime
def create_api_key(runtime: Runtime, party: str, scopes: tuple[str, ...], name: str) -> None:
    """Issue an API key to a party; prints the token once (keep it secret)."""
    from channel_api import DomainError, keys

    try:
        with runtime.session_factory()() as session, session.begin():
            issued = keys.create_api_key(session, party=party, scopes=list(scopes), name=name,
                                         actor="cli")
    except DomainError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"key {issued.key.key_id} for {issued.key.party_code} "
               f"({', '.join(issued.key.scopes)}); token, shown once:", err=True)
    click.echo(issued.token)


@cli.command("import")
@click.argument("kind")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@pass_runtime
def import_file(runtime: Runtime, kind: str, path: str) -> None:
    """Import a CSV file of KIND (parties, catalog, relationships, coverage,
    strategies, ...): all rows or none; every bad row is printed."""
    from channel_api import DomainError, bulk

    def progress(phase: str, done: int, total: int) -> None:
        click.echo(f"{kind}: {phase} {done}/{total}", err=True)

    with open(path, "rb") as handle:
        data = handle.read()
    try:
        with runtime.session_factory()() as session, session.begin():
            report = bulk.import_csv(session, kind, data, actor="cli", progress=progress)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    for bad in report.errors:
        click.echo(f"line {bad.line}: {bad.field}: {bad.reason}")
    if report.status == "rejected":
        click.echo(f"import {report.import_id} REJECTED: {report.error_count} bad row(s) "
                   f"of {report.rows}; nothing imported", err=True)
        sys.exit(1)
    click.echo(f"import {report.import_id}: {report.rows} rows, {report.created} created, "
               f"{report.updated} updated, {report.unchanged} unchanged")


@cli.command("export")
@click.argument("kind")
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-",
              help="Where to write (default: standard output).")
@pass_runtime
def export_file(runtime: Runtime, kind: str, output) -> None:
    """Export KIND as CSV, re-importable as it is."""
    from channel_api import DomainError, bulk

    try:
        with runtime.session_factory()() as session, session.begin():
            for chunk in bulk.export_csv(session, kind):
                output.write(chunk)
    except DomainError as error:
        raise click.ClickException(error.message) from None


def main() -> None:
    cli(prog_name="channel-ledger")


if __name__ == "__main__":
    main()
