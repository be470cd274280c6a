"""``/docs`` without the internet: Swagger UI's script and styles served by the app itself.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, a blank page on a laptop offline or
inside a VPC without egress. The files come from the ``fastapi-offline`` package (pinned in
lambda/requirements.txt; only its static files are used) and are served under
``DOCS_ASSETS``. Paths carry the ``root_path`` (an API Gateway stage), as FastAPI's do.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

DOCS = "/docs"
DOCS_ASSETS = "/docs-assets"
# The page's tag icon, inline (img-src allows data:): no request, no binary response.
FAVICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Crect width='16' height='16' rx='3' fill='%23357edd'/%3E%3Cpath d='M4 12V4h2l4 5V4h2v8h-2"
    "L6 7v5z' fill='white'/%3E%3C/svg%3E"
)


def swagger_ui_dir() -> Path:
    """The package's static directory, found without importing the package."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastapi-offline is not installed (lambda/requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def add_offline_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (the app must be built with ``docs_url=None``) and its assets."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_dir()), name="docs-assets")

    @app.get(DOCS, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=FAVICON,
        )
