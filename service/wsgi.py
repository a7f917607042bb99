"""WSGI entry point for production: ``gunicorn service.wsgi:app``.

Settings come from the ``CL_*`` environment variables of the gunicorn process.
"""
from service.app import create_app

app = create_app()
