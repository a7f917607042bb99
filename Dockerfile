# channel-ledger: slim Python image served by gunicorn.
#   docker build -t channel-ledger .
#   docker run --rm -e CL_DATABASE_URL=postgresql+psycopg2://... channel-ledger channel-ledger migrate
#   docker run -p 8000:8000 -e CL_DATABASE_URL=... channel-ledger
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CL_HOST=0.0.0.0 \
    CL_PORT=8000

WORKDIR /app
COPY pyproject.toml setup.cfg README.md ./
COPY ledger ./ledger
COPY clearing ./clearing
COPY payments ./payments
COPY channel_api ./channel_api
COPY admin ./admin
COPY service ./service
COPY migrations ./migrations
RUN pip install . && useradd --system --uid 10001 app
USER app

EXPOSE 8000
# Migrations are their own command (see above), never run by the web process.
# service/gunicorn_conf.py: /metrics counts every worker (PROMETHEUS_MULTIPROC_DIR,
# a fresh directory under /tmp unless set; docs/operations.md, Metrics).
# gthread workers keep clients' connections open and overlap a request's
# database waits with another's work (docs/operations.md, How many workers).
CMD ["sh", "-c", "exec gunicorn -c python:service.gunicorn_conf --bind ${CL_HOST}:${CL_PORT} --worker-class gthread --workers ${WEB_CONCURRENCY:-3} --threads ${GUNICORN_THREADS:-4} --access-logfile - service.wsgi:app"]
