"""Read a JSON request body defensively: media type, size, encoding and syntax.

Each failure gets its own status and code (415, 413, 400 ``invalid_encoding``, 400
``invalid_json``) before any schema validation runs, and none of them can become a 500: the
size is capped while reading, and nesting too deep for the parser is a 400 like any other
malformed JSON.
"""

from __future__ import annotations

import json
from email.message import Message
from functools import lru_cache
from typing import Any

from starlette.requests import Request

from nerkit.api.blocking import run_blocking
from nerkit.api.errors import ApiError


@lru_cache(maxsize=64)
def _is_utf8_json(header: str) -> bool:
    """Whether a Content-Type header names JSON in UTF-8; cached, as clients send the same
    few headers again and again and the email parser costs more than the rest of reading."""
    parsed = Message()
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


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)  # refused without reading the body
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the body is larger than {max_bytes} bytes")


def _no_constants(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which are not JSON and not a score.
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request, max_bytes: int) -> Any:
    """The parsed JSON body, or an ``ApiError`` saying what is wrong with it."""
    _check_media_type(request)
    raw = await _read_limited(request, max_bytes)
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
