"""Security headers: ``nosniff`` and ``no-referrer`` on every response, a strict CSP on the page.

The page's only code and styles are its own inline ``<script>`` and ``<style>`` blocks, so the
Content-Security-Policy allows exactly those (by sha256, computed from the page when the app
is built, so an edit of page.html cannot get out of step) and nothing else: no other script,
no framing, no form posting elsewhere, and network requests only to the page's own origin
(and, where the admin panels upload datasets, to the bucket's endpoint).
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Headers every response carries: browsers must not guess a content type (a JSON body that
# echoes input must never be run as HTML), and the page's URL (stage, base path) stays put.
COMMON_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}
_INLINE_BLOCK = re.compile(r"<(script|style)(\s[^>]*)?>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)
_SRC = re.compile(r"\bsrc\s*=", re.IGNORECASE)


def page_csp(page: str, connect: tuple[str, ...] = ()) -> str:
    """The Content-Security-Policy for ``page``: its inline blocks by hash, nothing else;
    requests go to the page's origin and the ``connect`` origins (the dataset upload's).

    A block with a ``src`` attribute would load code the hashes do not cover, so the page
    must not have one.
    """
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, attributes, body in _INLINE_BLOCK.findall(page):
        if _SRC.search(attributes):
            raise ValueError(f"the page loads a <{kind}> from elsewhere; inline it instead")
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[kind.lower()].append(f"'sha256-{digest}'")
    sources = {kind: " ".join(values) or "'none'" for kind, values in hashes.items()}
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {sources['script']}",
            f"style-src {sources['style']}",
            " ".join(["connect-src 'self'", *connect]),
            "img-src 'self' data:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )


class SecurityHeadersMiddleware:
    """Add ``COMMON_HEADERS`` to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(name.encode(), value.encode()) for name, value in COMMON_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def adding_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [header for header in self.headers if header[0] not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, adding_send)
