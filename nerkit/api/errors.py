"""One JSON error shape for every failure: ``{"error": {"code", "message", "details", ...}}``.

``install`` routes FastAPI's and Starlette's own errors (validation, 404, 405) through the same
envelope, and ``UnhandledErrorMiddleware`` turns an unexpected exception into a generic 500
that carries the request id, with the traceback going to the log only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nerkit.api import logs

log = logging.getLogger(__name__)

# A request can break one rule per field or item (300,000 unknown fields fit in the body
# limit): past this many, the rest are counted, so the answer stays small (Lambda returns at
# most 6 MB) and cheap to write.
MAX_ERROR_DETAILS = 100
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Codes for the statuses Starlette raises by itself; ApiError names its own.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """A failure the client should see as is: status, machine code, message, details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = [dict(detail) for detail in details]


def validation_details(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The first MAX_ERROR_DETAILS pydantic errors without ``input``/``ctx`` (echoing them
    back could return, and make callers log, a user's whole text), then how many more."""
    details = [
        {
            "loc": [part for part in error["loc"] if part != "body"],
            "type": error["type"],
            "msg": error["msg"],
        }
        for error in errors[:MAX_ERROR_DETAILS]
    ]
    if len(errors) > MAX_ERROR_DETAILS:
        more = len(errors) - MAX_ERROR_DETAILS
        details.append({"loc": [], "type": "more_errors", "msg": f"and {more} more errors"})
    return details


def error_body(
    code: str,
    message: str,
    details: Iterable[Mapping[str, Any]] = (),
    request_id: str | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "details": list(details)}
    if request_id:
        error["request_id"] = request_id
    return {"error": error}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: Iterable[Mapping[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    request_id = logs.request_record(request.scope).request_id
    return JSONResponse(
        error_body(code, message, details, request_id), status_code=status, headers=headers
    )


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status, exc.code, exc.message, exc.details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(
        request,
        exc.status_code,
        _HTTP_CODES.get(exc.status_code, "http_error"),
        str(exc.detail),
        headers=headers,
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method the path has: Starlette's 405 names only those of the first route that
    matches the path, one of several where a path has one route per method."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(
        request,
        422,
        "validation_error",
        "the request is not valid",
        validation_details(exc.errors()),
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


class UnhandledErrorMiddleware:
    """Answer an unexpected exception with a generic 500 and log its traceback once.

    Starlette's own fallback would re-raise after answering, so Mangum and uvicorn would log
    the same traceback again without the request id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            request_id = logs.request_record(scope).request_id
            log.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            if started:
                raise  # too late for an error body; the server closes the connection
            body = error_body(
                "internal_error",
                "internal error; quote the request id when reporting it",
                request_id=request_id,
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": json.dumps(body).encode()})
