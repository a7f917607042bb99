"""The production ``Transport``: one HTTP exchange with a gateway, over the
standard library's ``urllib`` (``requests`` is not a dependency, and the
adapters need nothing it would add).

What it promises the adapters (``payments.gateway.Transport``):

* One call, one request: no retries here. Whether to try again is the
  caller's decision (a job retries a refund, which the gateway dedupes by
  ``out_refund_no``; a payment request is retried by the payer).
* Any HTTP status is an answer: a 4xx or 5xx comes back as an
  ``HttpResponse`` with its body, because the vendors sign their error
  answers and the adapters read them (WeChat Pay's codes, Alipay's
  ``sub_code``). Redirects are not followed (a gateway API does not
  redirect; following one would resend a signed request elsewhere): the 3xx
  is returned, and the adapters treat it as a failure.
* No answer is ``TransportError``: refused or reset connections, DNS, TLS
  errors, a timeout, an answer cut short or larger than ``max_body``. It is
  a ``GatewayUnavailable`` (the adapters' "may be retried" error) and an
  ``OSError`` (what every adapter catches around its transport, wrapping it
  in its own ``GatewayUnavailable`` with its context).
* ``timeout`` bounds connecting and every read, and the whole exchange is
  abandoned once ``timeout`` seconds have passed since it started (checked
  between reads of the body).
* Only ``http`` and ``https`` URLs (urllib would also open ``file:`` and
  ``ftp:``); HTTPS is verified against the system's CA store unless an
  ``ssl_context`` is given. ``proxies`` None uses the environment's
  (``HTTPS_PROXY``, ``NO_PROXY``), ``{}`` none.
"""
from __future__ import annotations

import http.client
import logging
import socket
import ssl
import time
import urllib.error
import urllib.request
from typing import Any, Mapping
from urllib.parse import urlsplit

from payments.gateway import GatewayUnavailable, HttpResponse

__all__ = ["HttpTransport", "TransportError"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_BODY = 8 * 1024 * 1024
_CHUNK = 64 * 1024


class TransportError(GatewayUnavailable, OSError):
    """The gateway did not answer (connection, TLS, timeout, cut-short
    answer). ``details`` holds ``method``, ``url`` (no query string) and
    ``reason``."""

    def __init__(self, message: str, **details: Any) -> None:
        GatewayUnavailable.__init__(self, message, **details)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib's hook
        return None  # urllib then raises HTTPError, returned below as the answer


class HttpTransport:
    """``Transport`` over HTTP(S). Thread-safe: it keeps no per-call state."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 max_body: int = DEFAULT_MAX_BODY, ssl_context: ssl.SSLContext | None = None,
                 proxies: Mapping[str, str] | None = None) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if max_body <= 0:
            raise ValueError("max_body must be positive")
        self.timeout = float(timeout)
        self.max_body = max_body
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.HTTPSHandler(context=ssl_context or ssl.create_default_context()),
            _NoRedirects(),
        ]
        if proxies is not None:
            handlers.append(urllib.request.ProxyHandler(dict(proxies)))
        self._opener = urllib.request.build_opener(*handlers)

    def __call__(self, method: str, url: str, headers: Mapping[str, str],
                 body: bytes) -> HttpResponse:
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # never the query: it may name ids
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"not an http(s) URL: {where}", method=method, url=where,
                                 reason="bad_url")
        data = body if body or method.upper() not in ("GET", "HEAD", "DELETE") else None
        request = urllib.request.Request(url, data=data, headers=dict(headers),
                                         method=method.upper())
        started = time.monotonic()
        deadline = started + self.timeout
        try:
            try:
                response = self._opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as answer:  # 3xx, 4xx, 5xx: still an answer
                response = answer
            with response:
                status = response.status if response.status is not None else response.code
                answer_headers = {k: v for k, v in response.headers.items()}
                content = self._read(response, deadline)
        except TransportError as error:
            error.details.setdefault("method", method)
            error.details.setdefault("url", where)
            raise
        except (OSError, http.client.HTTPException, ValueError) as error:
            reason = _reason(error)
            raise TransportError(f"{method} {where}: {reason}", method=method, url=where,
                                 reason=reason) from error
        log.debug("%s %s answered %s in %.0f ms", method, where, status,
                  (time.monotonic() - started) * 1000)
        return HttpResponse(status=status, headers=answer_headers, body=content)

    def _read(self, response, deadline: float) -> bytes:
        # read1: at most one read from the socket, so a server dripping its
        # answer is stopped at the deadline instead of filling a whole chunk.
        read = getattr(response, "read1", None) or response.read
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise TransportError(f"answer not complete within {self.timeout:g} s",
                                     reason="timeout")
            chunk = read(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_body:
                raise TransportError(f"answer larger than {self.max_body} bytes",
                                     reason="too_large")
            chunks.append(chunk)


def _reason(error: BaseException) -> str:
    """A short, stable word for logs and ``details['reason']``."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        inner = error.reason
        if isinstance(inner, BaseException):
            return _reason(inner)
        return f"unreachable ({inner})"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(error, ssl.SSLError):
        return f"tls ({error.reason or error})"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (ConnectionResetError, http.client.RemoteDisconnected)):
        return "connection closed"
    if isinstance(error, socket.gaierror):
        return "unknown host"
    if isinstance(error, http.client.IncompleteRead):
        return "answer cut short"
    if isinstance(error, http.client.HTTPException):
        return f"not HTTP ({type(error).__name__})"
    return f"{type(error).__name__}: {error}"
