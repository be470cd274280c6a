"""What every inference route shares, whatever contract it speaks: validating the body
against the deployment's limits, the engine call with the model (or a 503), the request log
and the Unicode check's 422, and the response's entity cap."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from nerkit.api import logs
from nerkit.api.blocking import run_blocking
from nerkit.api.errors import ApiError, validation_details
from nerkit.api.model import REASONS, LoadedModel, ModelHolder, ModelUnavailableError
from nerkit.api.schemas import ErrorResponse
from nerkit.api.settings import Settings
from nerkit.engine import InvalidTextError, NerEngine

# OpenAPI responses of the inference routes.
UNAVAILABLE = {
    503: {
        "model": ErrorResponse,
        "description": "No model can be loaded; `details[0].type` says why: "
        + ", ".join(f"`{reason}`" for reason in REASONS)
        + ".",
    }
}
BAD_REQUEST = {
    400: {"model": ErrorResponse, "description": "Not UTF-8 (invalid_encoding) or not JSON."},
    413: {"model": ErrorResponse, "description": "The body is over MAX_BODY_BYTES."},
    415: {"model": ErrorResponse, "description": "The body is not application/json."},
    422: {"model": ErrorResponse, "description": "The JSON does not fit the schema or limits."},
}

Item = TypeVar("Item")
Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True)
class Inference(Generic[Item]):
    """Each text's items (entities or tokens) and whether some were cut at the cap."""

    results: list[tuple[Sequence[Item], bool]]
    model_version: str
    took_ms: float


def invalid(details: list[dict[str, Any]]) -> ApiError:
    return ApiError(422, "validation_error", "the request is not valid", details)


# Plain functions, not FastAPI dependencies: solving a dependency costs more per request than
# the lookup it stands for, and these routes are the ones every call takes.
def model_holder(request: Request) -> ModelHolder:
    holder: ModelHolder = request.app.state.model
    return holder


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def validated(request: Request, schema: type[Body], payload: Any, settings: Settings) -> Body:
    """``payload`` as ``schema``, the limits (MAX_TEXTS and the rest) checked, or a 422."""
    # Linear in the body, which can be megabytes: off the event loop, like the inference.
    return await run_blocking(request.scope, _validate, schema, payload, settings)


def _validate(schema: type[Body], payload: Any, settings: Settings) -> Body:
    try:
        return schema.model_validate(
            payload,
            context={
                "max_texts": settings.max_texts,
                "max_text_chars": settings.max_text_chars,
                "max_total_chars": settings.max_total_chars,
            },
        )
    except ValidationError as exc:
        raise invalid(validation_details(exc.errors())) from None


def loaded_model(holder: ModelHolder) -> LoadedModel:
    try:
        return holder.get()
    except ModelUnavailableError as exc:
        # Only the reason's category: the holder logs what failed, with names and paths.
        raise ApiError(
            503,
            "model_unavailable",
            "no model is available; quote the request id when reporting it",
            [{"loc": [], "type": exc.reason, "msg": REASONS[exc.reason]}],
        ) from None


async def infer(
    request: Request,
    settings: Settings,
    texts: list[str],
    predict: Callable[[NerEngine, list[str]], Sequence[Sequence[Item]]],
    text_loc: Callable[[int], list[str | int]],
) -> Inference[Item]:
    """Run ``predict(engine, texts)`` for a validated request and cap its items.

    The model is loaded only here, for a valid request, so a client error is reported even
    while no model loads. A text that is not valid Unicode is a 422 at ``text_loc(index)``;
    the engine's other ``ValueError``s are the caller's to translate.
    """
    model = await run_blocking(request.scope, loaded_model, model_holder(request))
    record = logs.request_record(request.scope)
    record.model_version = model.version
    record.n_texts, record.n_chars = len(texts), sum(map(len, texts))
    if settings.log_text:
        record.texts = texts
    started = perf_counter()
    try:
        results = await run_blocking(request.scope, predict, model.engine, texts)
    except InvalidTextError as exc:
        record.texts = []  # not valid Unicode, so not writable to the log either
        detail = {
            "loc": text_loc(exc.index),
            "type": "invalid_text",
            "msg": "text holds a lone surrogate",
        }
        raise invalid([detail]) from None
    took_ms = round((perf_counter() - started) * 1000, 2)
    capped = cap(results, settings.max_entities)
    record.n_entities = sum(len(found) for found, _ in capped)
    return Inference(capped, model.version, took_ms)


def cap(results: Sequence[Sequence[Item]], limit: int) -> list[tuple[Sequence[Item], bool]]:
    """Each text's items, and whether some were dropped so that the response holds at most
    ``limit`` (MAX_ENTITIES keeps it under Lambda's 6 MB): texts keep theirs in order, and
    the text that reaches the limit keeps its first ones by position."""
    capped: list[tuple[Sequence[Item], bool]] = []
    left = limit
    for found in results:
        kept = found[:left]
        capped.append((kept, len(kept) < len(found)))
        left -= len(kept)
    return capped
