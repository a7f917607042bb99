"""The Flask application factory: wires settings, logging, metrics, the
database session per request, error mapping and the API blueprints.

No Swagger/ReDoc page is served: flask-smorest loads their JavaScript from a
CDN, and the service must not depend on one. The OpenAPI document itself is at
``/v1/openapi.json``; point any local viewer at it.
"""
from __future__ import annotations

import logging
import secrets

from flask import Flask
from flask_smorest import Api, Blueprint
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from channel_api import outbox

from service import (
    api_channel_bulk,
    api_channel_credit,
    api_channel_events,
    api_channel_network,
    api_channel_orders,
    api_channel_parties,
    api_channel_pricing,
    api_channel_returns,
    api_clearing,
    api_ledger,
    api_payments,
    api_payouts,
    api_splits,
    callbacks,
)
from service.channel_edge import SECURITY_SCHEME
from service.db import make_engine, make_session_factory
from service.gateways import Gateways, build_gateways
from service.logs import configure_logging, init_request_ids
from service.metrics import init_http_metrics, instrument_session_factory
from service.problems import http_problem, init_problem_handlers
from service.request_db import EXTENSION_KEY, db_session, init_request_sessions
from service.schemas_ledger import HealthSchema, ProblemSchema
from service.settings import Settings, ensure_database_dir, load_settings

log = logging.getLogger(__name__)


class ProblemApi(Api):
    """flask-smorest's Api, answering HTTP errors (404, 405, webargs' 422) as problem+json."""

    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error):
        return http_problem(error)


health_blp = Blueprint("health", __name__, description="Liveness and database reachability.")


@health_blp.route("/health", methods=["GET"])
@health_blp.response(200, HealthSchema)
@health_blp.alt_response(503, schema=HealthSchema, description="The database did not answer.")
def health():
    try:
        db_session().execute(text("SELECT 1"))
    except SQLAlchemyError:
        log.exception("health check: database unreachable")
        return {"status": "error", "database": "error"}, 503
    return {"status": "ok", "database": "ok"}


def create_app(settings: Settings | None = None, engine: Engine | None = None,
               gateways: Gateways | None = None) -> Flask:
    settings = settings or load_settings()
    configure_logging(settings)
    if engine is None:
        ensure_database_dir(settings.database_url)
        engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    instrument_session_factory(session_factory)
    outbox.install_dispatch(session_factory)

    app = Flask("channel_ledger")
    app.config.update(
        SECRET_KEY=settings.secret_key or _ephemeral_secret_key(),
        API_TITLE="channel-ledger",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/v1",
        OPENAPI_JSON_PATH="openapi.json",
        # Keep the raw body of a 500 out of responses; problem+json says enough.
        PROPAGATE_EXCEPTIONS=False,
        # CSV imports of a whole network (300,000 stores) run to tens of MB.
        MAX_CONTENT_LENGTH=256 * 1024 * 1024,
    )
    app.extensions["channel_ledger.settings"] = settings
    app.extensions["channel_ledger.engine"] = engine
    app.extensions[api_payments.GATEWAYS_KEY] = (gateways if gateways is not None
                                                 else build_gateways(settings))
    if settings.callback_apply == "background":
        app.extensions[api_payments.APPLIER_KEY] = callbacks.BackgroundApplier(session_factory)

    # Order matters: the request id must be bound before anything logs.
    init_request_ids(app)
    init_http_metrics(app)
    init_request_sessions(app, session_factory)

    api = ProblemApi(app)
    api.register_blueprint(health_blp)
    api.register_blueprint(api_ledger.blp)
    api.spec.components.security_scheme("ApiKey", SECURITY_SCHEME)
    api.register_blueprint(api_channel_parties.blp)
    api.register_blueprint(api_channel_network.blp)
    api.register_blueprint(api_channel_pricing.blp)
    api.register_blueprint(api_channel_bulk.blp)
    api.register_blueprint(api_channel_orders.blp)
    api.register_blueprint(api_channel_credit.blp)
    api.register_blueprint(api_channel_returns.blp)
    api.register_blueprint(api_channel_events.blp)
    api.register_blueprint(api_clearing.blp)
    api.register_blueprint(api_payments.blp)
    api.register_blueprint(api_payouts.blp)
    api.register_blueprint(api_splits.blp)
    app.register_blueprint(api_payments.callbacks_blp)  # for gateways: not in the OpenAPI
    app.register_blueprint(api_payouts.callbacks_blp)   # for the custody bank: likewise
    # Registered after Api() so they take precedence over its handlers.
    init_problem_handlers(app)
    return app


def warm_price_caches(app: Flask) -> None:
    """Fill this process's price caches before the first request (every
    seller's strategies, the catalog, the trees), so no buyer pays for a
    seller's first load. Called by the WSGI entry and ``serve``, not by
    ``create_app`` (tests build many apps)."""
    from time import perf_counter

    from channel_api import prices

    started = perf_counter()
    try:
        with app.extensions[EXTENSION_KEY]() as session, session.begin():
            sellers = prices.warm_caches(session)
    except SQLAlchemyError:
        # Not fatal: the caches fill on demand; /health reports the database.
        log.warning("price caches not warmed (database unreachable or not migrated)",
                    exc_info=True)
        return
    log.info("price caches warm: %d sellers' strategies, catalog and trees in %.1f s",
             sellers, perf_counter() - started)


def _ephemeral_secret_key() -> str:
    log.warning(
        "CL_SECRET_KEY is not set: using a random key for this process; "
        "signed cookies will not survive a restart"
    )
    return secrets.token_urlsafe(48)

