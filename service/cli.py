"""``channel-ledger`` command line: serve, migrate, seed-demo, check, scheduler,
void-expired, recompute-tags.

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
    from service.app import create_app

    host = host or runtime.settings.host
    port = port or runtime.settings.port
    app = create_app(runtime.settings, engine=runtime.get_engine())
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
    """Open the demo chart of accounts and post demo entries (safe to re-run)."""
    from service.demo import seed_demo as seed

    with runtime.session_factory()() as session, session.begin():
        summary = seed(session)
    click.echo(f"demo data: {summary.accounts} accounts, {summary.entries_added} entries added "
               f"({summary.entries_total} entries, {summary.postings_total} postings in the ledger)")


@cli.command()
@pass_runtime
def check(runtime: Runtime) -> None:
    """Check the ledger's invariants; print every finding; exit 1 if any."""
    with runtime.session_factory()() as session, session.begin():
        findings = ledger.check_ledger(session)
        entries, postings = ledger.ledger_counts(session)
    for finding in findings:
        click.echo(f"{finding.check}: {finding.subject}: {finding.message}")
    if findings:
        click.echo(f"ledger check FAILED: {len(findings)} finding(s)", err=True)
        sys.exit(1)
    click.echo(f"ledger OK: {entries} entries, {postings} postings checked")


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


def main() -> None:
    cli(prog_name="channel-ledger")


if __name__ == "__main__":
    main()
