"""The public URL prefix API Gateway puts in front of the app (a stage, a base path mapping).

Routing needs the path without the prefix, and ``/docs``, the OpenAPI ``servers`` entry and
redirects need the prefix itself (ASGI ``root_path``). What the event carries differs:

- REST API (v1): ``path`` lacks the stage; ``requestContext.path`` is what the client asked
  for, so the prefix is whatever ``requestContext.path`` has in front of ``path``. Through a
  custom domain both carry the base path mapping, which only configuration can tell apart
  (``API_BASE_PATH``).
- HTTP API (v2): ``requestContext.http.path`` starts with ``/<stage>`` for a named stage
  (none for ``$default``) and never holds a custom domain's API mapping.

Mangum's ``api_gateway_base_path`` only strips one fixed prefix and leaves ``root_path``
empty, which breaks ``/docs`` behind a stage; this middleware does both, per request.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


def split_prefix(event: dict[str, Any], path: str, base_path: str) -> tuple[str, str]:
    """``(prefix, path without it)`` for an API Gateway event whose routed path (what Mangum
    put in the scope) is ``path``; ``base_path`` is the custom domain's mapping, used when the
    event shows no stage of its own."""
    context = event.get("requestContext") or {}
    if event.get("version") == "2.0":
        stage = context.get("stage") or "$default"
        if stage != "$default" and (path == f"/{stage}" or path.startswith(f"/{stage}/")):
            return f"/{stage}", path[len(stage) + 1 :] or "/"
    else:
        public = context.get("path") or ""
        if path == "/":
            prefix = public.rstrip("/")  # the root of a stage is "/prod" or "/prod/"
        else:
            prefix = public[: -len(path)] if public.endswith(path) else ""
        if prefix:
            return prefix, path
    if base_path and (path == base_path or path.startswith(base_path + "/")):
        return base_path, path[len(base_path) :] or "/"
    return base_path, path


class ApiGatewayPrefixMiddleware:
    """Set ``root_path`` (and a ``path`` that includes it, as ASGI expects) for requests that
    came through API Gateway; other servers set their own root path."""

    def __init__(self, app: ASGIApp, *, base_path: str) -> None:
        self.app = app
        self.base_path = base_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        event = scope.get("aws.event")
        if scope["type"] == "http" and isinstance(event, dict):
            prefix, path = split_prefix(event, scope["path"], self.base_path)
            # Mutated in place: outer middleware reads what routing adds to this same scope.
            scope["root_path"] = prefix
            scope["path"] = prefix + path
        await self.app(scope, receive, send)
