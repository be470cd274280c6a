"""Which browser origins may be allowed cross-site (the API's CORS setting and the stack's)."""

from __future__ import annotations

import re

ANY_ORIGIN = "*"
# Scheme and host (and port) only: a browser's Origin header never carries a path or query.
_ORIGIN_RE = re.compile(r"https?://[^/\s?#]+")


def is_allowed_origin(origin: str) -> bool:
    """``"*"`` or an origin such as ``https://example.com`` / ``http://localhost:3000``."""
    return origin == ANY_ORIGIN or _ORIGIN_RE.fullmatch(origin) is not None


def invalid_origins(origins: tuple[str, ...] | list[str]) -> list[str]:
    """The entries of ``origins`` that are neither ``"*"`` nor an origin."""
    return [origin for origin in origins if not is_allowed_origin(origin)]
