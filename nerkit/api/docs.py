"""``/docs`` without the internet: Swagger UI's script and styles served by the app itself.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, a blank page on a laptop offline or
inside a VPC without egress. The files come from the ``fastapi-offline`` package (pinned in
lambda/requirements.txt; only its static files are used) and are served under
``DOCS_ASSETS``. Paths carry the ``root_path`` (an API Gateway stage), as FastAPI's do.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

DOCS = "/docs"
DOCS_ASSETS = "/docs-assets"
PAGE = Path(__file__).with_name("page.html")


def page_icon() -> str:
    """The page's tab icon (an inline data: URI, so no request and no binary response)."""
    found = re.search(r'<link rel="icon" href="([^"]+)">', PAGE.read_text(encoding="utf-8"))
    if found is None:
        raise RuntimeError('page.html has no <link rel="icon">')
    return found[1]


def swagger_ui_dir() -> Path:
    """The package's static directory, found without importing the package."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastapi-offline is not installed (lambda/requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def add_offline_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (the app must be built with ``docs_url=None``) and its assets."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_dir()), name="docs-assets")
    icon = page_icon()

    @app.get(DOCS, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=icon,
        )
