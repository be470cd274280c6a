"""Read a JSON request body defensively: media type, size, encoding and syntax.

Each failure gets its own status and code (415, 413, 400 ``invalid_encoding``, 400
``invalid_json``) before any schema validation runs, and none of them can become a 500: the
size is capped while reading, and nesting too deep for the parser is a 400 like any other
malformed JSON.
"""

from __future__ import annotations

import json
from email.message import Message
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from nerkit.api.errors import ApiError


def _check_media_type(request: Request) -> None:
    header = request.headers.get("content-type", "")
    parsed = Message()
    parsed["content-type"] = header
    media_type = parsed.get_content_type() if header else ""
    charset = (parsed.get_content_charset() or "utf-8").lower()
    is_json = media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
    if not is_json or charset not in ("utf-8", "utf8"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as Content-Type: application/json (UTF-8), not {header or 'nothing'!r}",
        )


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    too_large = ApiError(413, "payload_too_large", f"the body is larger than {max_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large  # refused without reading the body
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constants(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which are not JSON and not a score.
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request, max_bytes: int) -> Any:
    """The parsed JSON body, or an ``ApiError`` saying what is wrong with it."""
    _check_media_type(request)
    raw = await _read_limited(request, max_bytes)
    # Parsing megabytes takes a while: in a worker thread, so other requests go on meanwhile.
    return await run_in_threadpool(_parse, raw)


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
