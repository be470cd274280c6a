"""The CORS origin rule, shared by the serving app's settings and the deployment's."""

from __future__ import annotations

import re

# scheme://host[:port], nothing after it: what a browser sends in the Origin header.
_ORIGIN_RE = re.compile(r"https?://[^/\s?#]+")


def is_valid_origin(origin: str) -> bool:
    """True for ``*`` (any origin) or one origin such as ``https://app.example.com``."""
    return origin == "*" or _ORIGIN_RE.fullmatch(origin) is not None
