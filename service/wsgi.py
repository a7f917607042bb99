"""WSGI entry point for production:
``gunicorn -c python:service.gunicorn_conf service.wsgi:app`` (the config
module makes ``/metrics`` count every worker: ``service/gunicorn_conf.py``).

Settings come from the ``CL_*`` environment variables of the gunicorn process.
"""
import gc

from service.app import create_app, warm_price_caches

app = create_app()
warm_price_caches(app)
# Everything alive now (modules, the app, SQLAlchemy's metadata, the warm
# caches) lives as long as the process: move it out of the cyclic
# collector's way, so a full collection during a price request scans only
# what requests made.
gc.collect()
gc.freeze()
