"""A local stand-in for API Gateway's API keys, for ``make run`` and the browser tests.

API Gateway checks ``x-api-key`` against its keys and tells the app only the matching key's
id (``requestContext.identity.apiKeyId``). This middleware does the same for a few local keys,
so the app's admin check (``nerkit.api.authz``) runs exactly as deployed. Never used on Lambda.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

LOCAL_ADMIN_KEY_ID = "local-admin"


def new_key() -> str:
    """A random API key value, like the ones API Gateway generates."""
    return secrets.token_urlsafe(24)


class LocalApiKeys:
    """Put the id of the key in ``x-api-key`` (of ``keys``: value -> id) into a minimal REST
    event, as API Gateway does for a keyed method; unknown or absent keys get no id."""

    def __init__(self, app: ASGIApp, keys: Mapping[str, str]) -> None:
        self.app = app
        self.keys = dict(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "aws.event" not in scope:
            headers = dict(scope.get("headers") or [])
            sent = headers.get(b"x-api-key", b"")
            key_id = next(
                (
                    kid
                    for value, kid in self.keys.items()
                    # Bytes: compare_digest refuses str with non-ASCII characters.
                    if secrets.compare_digest(value.encode(), sent)
                ),
                None,
            )
            identity = {"apiKeyId": key_id} if key_id else {}
            # requestContext.path == path: no stage prefix, as on a direct local call.
            context = {"identity": identity, "path": scope["path"]}
            scope = {**scope, "aws.event": {"path": scope["path"], "requestContext": context}}
        await self.app(scope, receive, send)


def local_app() -> ASGIApp:
    """The app from the environment behind local API keys: ``LOCAL_ADMIN_KEY`` (a value)
    maps to ``LOCAL_ADMIN_KEY_ID``, which ``ADMIN_KEY_IDS`` should list (``uvicorn --factory``)."""
    from nerkit.api.app import create_app

    key = os.environ.get("LOCAL_ADMIN_KEY", "")
    return LocalApiKeys(create_app(), {key: LOCAL_ADMIN_KEY_ID} if key else {})
