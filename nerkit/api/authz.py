"""Who may call the admin routes: the caller as API Gateway identified it, and the admin check.

API Gateway authenticates; the app only authorizes, from what the gateway put in the event
(Mangum passes it in ``scope["aws.event"]``), so no secret ever reaches the app:

- REST front door: a method that requires an API key carries the validated key's id in
  ``requestContext.identity.apiKeyId``; admin keys are those whose ids the stack lists in
  ``ADMIN_KEY_IDS``.
- HTTP API front door with a JWT authorizer: the token's claims are in
  ``requestContext.authorizer.jwt.claims``; an admin's token holds ``ADMIN_SCOPE`` in its
  space-separated ``scope`` claim.

A request without an event (a plain ASGI server) has no caller and is refused; ``make run``
puts a local stand-in for the gateway in front of the app (``nerkit.api.local_gateway``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.types import Scope

from nerkit.api.errors import ApiError
from nerkit.api.settings import Settings


@dataclass(frozen=True)
class Caller:
    """Who called, as the gateway vouches: an API key's id or a token's subject and scopes."""

    api_key_id: str | None = None
    subject: str | None = None
    scopes: frozenset[str] = frozenset()

    @property
    def principal(self) -> str:
        """For the audit log: ``api-key:<id>`` or ``jwt:<subject>`` (never a secret)."""
        if self.api_key_id:
            return f"api-key:{self.api_key_id}"
        return f"jwt:{self.subject or 'unknown'}"

    def is_admin(self, settings: Settings) -> bool:
        if self.api_key_id is not None:
            return self.api_key_id in settings.admin_key_ids
        return bool(settings.admin_scope) and settings.admin_scope in self.scopes


def caller_of(scope: Scope) -> Caller | None:
    """The caller of a request that came through API Gateway (or its local stand-in)."""
    event = scope.get("aws.event")
    if not isinstance(event, dict):
        return None
    context = _dict(event.get("requestContext"))
    key_id = _dict(context.get("identity")).get("apiKeyId")
    if isinstance(key_id, str) and key_id:
        return Caller(api_key_id=key_id)
    claims = _dict(_dict(_dict(context.get("authorizer")).get("jwt")).get("claims"))
    if claims:
        scope_claim = claims.get("scope")
        scopes = frozenset(scope_claim.split()) if isinstance(scope_claim, str) else frozenset()
        subject = claims.get("sub") or claims.get("client_id")
        return Caller(subject=str(subject) if subject else None, scopes=scopes)
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def require_admin(request: Request) -> Caller:
    """The dependency of every admin route: the admin caller, or a 403 in the envelope."""
    settings: Settings = request.app.state.settings
    caller = caller_of(request.scope)
    if caller is None or not caller.is_admin(settings):
        raise ApiError(
            403,
            "forbidden",
            "this route needs an admin API key (or a token with the admin scope)",
            [{"loc": ["header", "x-api-key"], "type": "not_admin", "msg": "not an admin"}],
        )
    return caller


Admin = Annotated[Caller, Depends(require_admin)]
