"""Request bodies, read defensively: their size on every route, and JSON by hand.

``BodyLimitMiddleware`` caps every body at MAX_BODY_BYTES while it is received (the admin
routes' too, which FastAPI parses): a body declared or received over it is a 413
``payload_too_large`` in the error envelope. ``read_json`` gives each other failure its own
status and code (415, 400 ``invalid_encoding``, 400 ``invalid_json``) before any schema
validation runs, and none of them can become a 500: nesting too deep for the parser is a 400
like any other malformed JSON.

Starlette's own body limit (FastAPI's ``max_body_size``) is not used: for a declared size
over the limit it replaces whatever the app answers with a plain-text 413.
"""

from __future__ import annotations

import json
from email.message import Message as EmailMessage
from functools import lru_cache
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nerkit.api.blocking import run_blocking
from nerkit.api.errors import ApiError


@lru_cache(maxsize=64)
def _is_utf8_json(header: str) -> bool:
    """Whether a Content-Type header names JSON in UTF-8; cached, as clients send the same
    few headers again and again and the email parser costs more than the rest of reading."""
    parsed = EmailMessage()
    parsed["content-type"] = header
    media_type = parsed.get_content_type() if header else ""
    charset = (parsed.get_content_charset() or "utf-8").lower()
    is_json = media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
    return is_json and charset in ("utf-8", "utf8")


def _check_media_type(request: Request) -> None:
    header = request.headers.get("content-type", "")
    if not _is_utf8_json(header):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as Content-Type: application/json (UTF-8), not {header or 'nothing'!r}",
        )


class BodyLimitMiddleware:
    """Refuse a body over ``max_bytes``: by its declared size before any of it is read, else
    as soon as the bytes received pass it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if received == 0 and _declared_length(scope) > self.max_bytes:
                raise self._too_large()  # refused without reading the body
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> HTTPException:
        # An HTTPException, not an ApiError: FastAPI re-raises it from its own body parsing
        # (other exceptions there become a 400), and errors.py answers it in the envelope.
        return HTTPException(413, f"the body is larger than {self.max_bytes} bytes")


def _declared_length(scope: Scope) -> int:
    """The Content-Length header's value, or 0 when absent or not a number; read only when
    the body is, so requests without one pay nothing for it."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _no_constants(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which are not JSON and not a score.
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request) -> Any:
    """The parsed JSON body, or an ``ApiError`` saying what is wrong with it (its size is
    ``BodyLimitMiddleware``'s to check)."""
    _check_media_type(request)
    raw = await request.body()
    # Parsing megabytes takes a while: in a worker thread, so other requests go on meanwhile.
    return await run_blocking(request.scope, _parse, raw)


def _parse(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            "invalid_encoding",
            "the body is not valid UTF-8",
            [{"loc": ["body", exc.start], "type": "invalid_utf8", "msg": exc.reason}],
        ) from None
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "invalid_json",
            "the body is not valid JSON",
            [{"loc": ["body", exc.pos], "type": "json_invalid", "msg": exc.msg}],
        ) from None
    except (ValueError, RecursionError) as exc:
        message = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(
            400,
            "invalid_json",
            "the body is not valid JSON",
            [{"loc": ["body"], "type": "json_invalid", "msg": message}],
        ) from None
