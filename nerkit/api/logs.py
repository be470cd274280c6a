"""Structured JSON logs, one line per request, that double as CloudWatch metrics.

Every request produces exactly one JSON line on stdout (``"logger": "nerkit.api.request"``;
the middleware writes it directly, as logging's record machinery would cost more than the
line)::

    {"level": "INFO", "message": "request", "request_id": "...", "method": "POST",
     "route": "/v1/entities", "status": 200, "latency_ms": 12.5, "model_version": "...",
     "n_texts": 1, "n_chars": 42, "n_entities": 3, "_aws": {...}, "Service": "...", ...}

``request_id`` is the Lambda ``aws_request_id`` (from Mangum's ``scope["aws.context"]``) when
there is one, else a random id; it is also sent back as the ``X-Request-Id`` header. The
user's text is never logged unless ``LOG_TEXT`` is on (then as ``texts``).

The same line is a CloudWatch Embedded Metric Format (EMF) document, so CloudWatch extracts
metrics from it without any API call. Namespace ``nerkit``, dimensions ``Service`` (the Lambda
function name, else ``nerkit``) and ``Route`` (method and route template, ``unmatched`` for
404s), both low-cardinality. The model version is a plain field, not a dimension. Metrics:

- ``Latency`` (Milliseconds): time from the request to the end of the response.
- ``Errors`` (Count): 1 for a 5xx response (503 model_unavailable included), else 0.
- ``Texts`` (Count): texts tagged (POST /v1/entities only, successful requests).
- ``Entities`` (Count): entities returned (POST /v1/entities only, successful requests).

EMF must be the whole log event, so these lines bypass the root logger (whose Lambda handler
prefixes a level and request id) and go straight to stdout, which Lambda ships line by line.
Other ``nerkit.api`` records (model loads, unhandled errors) use the same JSON format.

``LOG_FORMAT=text`` (what ``make run`` sets) writes the same records as short lines for a
person at a terminal instead, without the metrics block::

    17:50:01 POST /v1/entities 200 6.6 ms  model 20261123T165513Z-953faa01  1 text, 45 chars,
    4 entities  id 3fa9c2d1...
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nerkit.api.emf import ENTITIES, ERRORS, LATENCY, NAMESPACE, ROUTE, SERVICE, TEXTS

SCOPE_KEY = "nerkit.request"
LOGGER = "nerkit.api"
REQUEST_LOGGER = f"{LOGGER}.request"
# One encoder for every line: json.dumps with options builds a new one per call.
_JSON = json.JSONEncoder(ensure_ascii=False, default=str)


@dataclass
class RequestRecord:
    """What a request contributes to its log line; handlers fill in the model fields."""

    request_id: str
    model_version: str | None = None
    n_texts: int | None = None
    n_chars: int | None = None
    n_entities: int | None = None
    texts: list[str] = field(default_factory=list)


def request_record(scope: Scope) -> RequestRecord:
    """The record ``RequestLogMiddleware`` attached to this request's scope."""
    record: RequestRecord = scope[SCOPE_KEY]
    return record


class JsonFormatter(logging.Formatter):
    """A record as one JSON object per line; ``extra={"fields": {...}}`` adds top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", {}))
        if record.exc_info:
            fields["exception"] = "".join(traceback.format_exception(*record.exc_info))
        message = record.getMessage()
        return _json_line(record.created, record.levelname, record.name, message, fields)


class _StdoutHandler(logging.Handler):
    """Writes to whatever ``sys.stdout`` is at the time (test capture replaces it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


class TextFormatter(logging.Formatter):
    """A record as one short line for a terminal: time, level, logger and message."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_clock(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + "".join(traceback.format_exception(*record.exc_info))
        return line


def _text_request_line(created: float, fields: dict[str, Any]) -> str:
    """A request as method, route, status and latency with the model and counts."""
    parts = [
        f"{_clock(created)} {fields['method']} {fields['route']} {fields['status']} "
        f"{fields['latency_ms']} ms"
    ]
    if fields.get("model_version"):
        parts.append(f"model {fields['model_version']}")
    if fields.get("n_texts") is not None:
        texts = fields["n_texts"]
        parts.append(
            f"{texts} text{'' if texts == 1 else 's'}, {fields['n_chars']} chars, "
            f"{fields['n_entities']} entities"
        )
    parts.append(f"id {fields['request_id']}")
    return "  ".join(parts)


def _json_line(
    created: float, level: str, logger: str, message: str, fields: dict[str, Any]
) -> str:
    """One JSON log line: a record's (``JsonFormatter``) or a request's, with its fields."""
    timestamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return _JSON.encode(
        {"timestamp": timestamp, "level": level, "logger": logger, "message": message, **fields}
    )


def _clock(created: float) -> str:
    return datetime.fromtimestamp(created).strftime("%H:%M:%S")


def configure(log_format: str = "json") -> None:
    """Send ``nerkit.api`` records to stdout, as JSON lines or (``"text"``) short human lines;
    calling it again switches the format."""
    logger = logging.getLogger(LOGGER)
    handler = next((h for h in logger.handlers if isinstance(h, _StdoutHandler)), None)
    if handler is None:
        handler = _StdoutHandler()
        logger.addHandler(handler)
    handler.setFormatter(TextFormatter() if log_format == "text" else JsonFormatter())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _request_id(scope: Scope) -> str:
    context = scope.get("aws.context")
    request_id = getattr(context, "aws_request_id", None)
    return request_id if isinstance(request_id, str) and request_id else uuid.uuid4().hex


def _route(scope: Scope) -> str:
    """The matched route's template (low-cardinality, unlike the path), or ``unmatched``."""
    route = scope.get("route")
    if route is None and "endpoint" in scope:
        # Plain Starlette routes (/docs, /openapi.json) record only their endpoint.
        routes = getattr(scope.get("app"), "routes", [])
        route = next((r for r in routes if getattr(r, "endpoint", None) is scope["endpoint"]), None)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _emf(
    route: str, status: int, latency_ms: float, record: RequestRecord, created: float
) -> dict[str, Any]:
    metrics = {LATENCY: (latency_ms, "Milliseconds"), ERRORS: (int(status >= 500), "Count")}
    if record.n_texts is not None and record.n_entities is not None:
        metrics[TEXTS] = (record.n_texts, "Count")
        metrics[ENTITIES] = (record.n_entities, "Count")
    return {
        "_aws": {
            "Timestamp": int(created * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [[SERVICE, ROUTE]],
                    "Metrics": [
                        {"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()
                    ],
                }
            ],
        },
        SERVICE: os.environ.get("AWS_LAMBDA_FUNCTION_NAME", NAMESPACE),
        ROUTE: route,
        **{name: value for name, (value, _) in metrics.items()},
    }


class RequestLogMiddleware:
    """Time each HTTP request, tag it with a request id and write its log/metrics line."""

    def __init__(self, app: ASGIApp, *, log_text: bool, log_format: str) -> None:
        self.app = app
        self.log_text = log_text
        self.log_format = log_format

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        record = RequestRecord(request_id=_request_id(scope))
        scope[SCOPE_KEY] = record
        status = 500  # what the client gets if the app dies before answering

        async def tagging_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    *message.get("headers", []),
                    (b"x-request-id", record.request_id.encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, tagging_send)
        finally:
            latency_ms = round((time.perf_counter() - started) * 1000, 2)
            self._log(scope, status, latency_ms, record)

    def _log(self, scope: Scope, status: int, latency_ms: float, record: RequestRecord) -> None:
        route = _route(scope)
        method = scope["method"]
        fields: dict[str, Any] = {
            "request_id": record.request_id,
            "method": method,
            "route": route,
            "status": status,
            "latency_ms": latency_ms,
            "model_version": record.model_version,
            "n_texts": record.n_texts,
            "n_chars": record.n_chars,
            "n_entities": record.n_entities,
        }
        if self.log_text and record.texts:
            fields["texts"] = record.texts
        created = time.time()
        if self.log_format == "text":
            line = _text_request_line(created, fields)
        else:
            fields.update(_emf(f"{method} {route}", status, latency_ms, record, created))
            line = _json_line(created, "INFO", REQUEST_LOGGER, "request", fields)
        # Straight to stdout, not through logging: this line is on every request's path, and
        # a log record's machinery costs more than the line itself.
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):  # stdout closed or broken: the response still goes out
            pass
