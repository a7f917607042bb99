"""WSGI entry point for production:
``gunicorn -c python:service.gunicorn_conf service.wsgi:app`` (the config
module makes ``/metrics`` count every worker: ``service/gunicorn_conf.py``).

Settings come from the ``CL_*`` environment variables of the gunicorn process.
"""
import gc
import sys

from service.app import create_app, warm_price_caches

# A worker's threads (gthread's request threads, and with
# CL_CALLBACK_APPLY=background the callback applier, which works in long
# CPU-bound stretches) share one interpreter lock. With CPython's default
# 5 ms switch interval, a request thread coming back from each database
# round trip can wait that long for it; 1 ms keeps answers quick while a
# batch is applied (bench/callbacks_bench.py, docs/performance.md).
sys.setswitchinterval(0.001)

app = create_app()
warm_price_caches(app)
# Everything alive now (modules, the app, SQLAlchemy's metadata, the warm
# caches) lives as long as the process: move it out of the cyclic
# collector's way, so a full collection during a price request scans only
# what requests made.
gc.collect()
gc.freeze()
