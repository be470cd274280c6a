"""The HTTP API: ``create_app(settings)`` and the module-level ``app`` Lambda serves.

Routes: ``GET /health`` (liveness), ``GET /ready`` (loads the model), ``GET /v1/model``,
``POST /v1/entities``, ``GET /`` (the page, when enabled), ``/docs`` and ``/openapi.json``.
Building the app reads the page and, with ``PRELOAD_MODEL`` (the default inside Lambda), loads
the model; otherwise the model loads on first use.
"""

from __future__ import annotations

from pathlib import Path
from time import perf_counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from nerkit import __version__
from nerkit.api import errors, logs
from nerkit.api.blocking import run_blocking
from nerkit.api.body import read_json
from nerkit.api.errors import ApiError, validation_details
from nerkit.api.gateway import ApiGatewayPrefixMiddleware
from nerkit.api.headers import SecurityHeadersMiddleware, page_csp
from nerkit.api.model import REASONS, LoadedModel, ModelHolder, ModelUnavailableError
from nerkit.api.schemas import (
    SCORE_DECIMALS,
    BatchEntitiesResponse,
    EntitiesRequest,
    EntitiesResponse,
    EntityOut,
    ErrorResponse,
    Health,
    ModelInfo,
    Ready,
    TextEntities,
)
from nerkit.api.settings import Settings
from nerkit.decoding import Entity
from nerkit.engine import InvalidTextError, UnknownLabelsError

PAGE = Path(__file__).with_name("page.html")
_UNAVAILABLE = {
    503: {
        "model": ErrorResponse,
        "description": "No model can be loaded; `details[0].type` says why: "
        + ", ".join(f"`{reason}`" for reason in REASONS)
        + ".",
    }
}
_BAD_REQUEST = {
    400: {"model": ErrorResponse, "description": "Not UTF-8 (invalid_encoding) or not JSON."},
    413: {"model": ErrorResponse, "description": "The body is over MAX_BODY_BYTES."},
    415: {"model": ErrorResponse, "description": "The body is not application/json."},
    422: {"model": ErrorResponse, "description": "The JSON does not fit the schema or limits."},
}

router = APIRouter()


# Dependencies and endpoints are async: FastAPI would run sync ones in its thread pool, a
# hand-off Lambda's one-request-at-a-time environment only pays for (nerkit.api.blocking).
async def _holder(request: Request) -> ModelHolder:
    holder: ModelHolder = request.app.state.model
    return holder


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Holder = Annotated[ModelHolder, Depends(_holder)]
CurrentSettings = Annotated[Settings, Depends(_settings)]


def _model(holder: ModelHolder) -> LoadedModel:
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


async def _loaded_model(request: Request, holder: Holder) -> LoadedModel:
    model = await run_blocking(request.scope, _model, holder)
    logs.request_record(request.scope).model_version = model.version
    return model


Model = Annotated[LoadedModel, Depends(_loaded_model)]


@router.get("/health", summary="Liveness: the process answers (no model needed)")
async def health() -> Health:
    return Health()


@router.get("/ready", summary="Readiness: the model is loaded", responses=_UNAVAILABLE)
async def ready(model: Model, holder: Holder) -> Ready:
    return Ready(model_version=model.version, refresh_error=holder.status().error)


@router.get("/v1/model", summary="The served model", responses=_UNAVAILABLE)
async def model_info(model: Model) -> ModelInfo:
    manifest = model.manifest
    return ModelInfo(
        name=manifest["name"],
        version=model.version,
        entity_types=model.engine.entity_types,
        labels=model.engine.labels,
        max_seq_length=manifest["max_seq_length"],
        base_model=manifest.get("base_model"),
        created_at=manifest.get("created_at"),
        metrics=manifest.get("metrics"),
    )


@router.post(
    "/v1/entities",
    summary="Find the named entities in one text or a batch",
    responses={**_BAD_REQUEST, **_UNAVAILABLE},
    # The body is read by hand (see nerkit.api.body), so its schema is declared here.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": EntitiesRequest.model_json_schema(),
                    "examples": {
                        "text": {"value": {"text": "Angela Merkel met Tim Cook in Berlin."}},
                        "texts": {
                            "value": {
                                "texts": ["Paris is in France.", "Ada Lovelace"],
                                "labels": ["PER", "LOC"],
                                "min_score": 0.5,
                            }
                        },
                    },
                }
            },
        }
    },
)
async def entities(
    request: Request, holder: Holder, settings: CurrentSettings
) -> EntitiesResponse | BatchEntitiesResponse:
    payload = await read_json(request, settings.max_body_bytes)
    try:
        body = EntitiesRequest.model_validate(
            payload,
            context={
                "max_texts": settings.max_texts,
                "max_text_chars": settings.max_text_chars,
                "max_total_chars": settings.max_total_chars,
            },
        )
    except ValidationError as exc:
        raise ApiError(
            422, "validation_error", "the request is not valid", validation_details(exc.errors())
        ) from None
    # Loaded only for a valid request: a client error is reported even while no model loads.
    model = await run_blocking(request.scope, _model, holder)
    texts = body.inputs
    record = logs.request_record(request.scope)
    record.model_version = model.version
    record.n_texts, record.n_chars = len(texts), sum(map(len, texts))
    if settings.log_text:
        record.texts = texts
    started = perf_counter()
    try:
        results = await run_blocking(
            request.scope,
            model.engine.predict,
            texts,
            aggregation=body.aggregation,
            decoding=body.decoding,
            labels=body.labels,
            min_score=body.min_score,
        )
    except UnknownLabelsError as exc:
        raise _invalid(_unknown_labels(body.labels or [], exc)) from None
    except InvalidTextError as exc:
        record.texts = []  # not valid Unicode, so not writable to the log either
        loc: list[str | int] = ["text"] if body.text is not None else ["texts", exc.index]
        detail = {"loc": loc, "type": "invalid_text", "msg": "text holds a lone surrogate"}
        raise _invalid([detail]) from None
    took_ms = round((perf_counter() - started) * 1000, 2)
    capped = _cap(results, settings.max_entities)
    record.n_entities = sum(len(found) for found, _ in capped)
    if body.text is not None:
        [(found, truncated)] = capped
        return EntitiesResponse(
            entities=_entities(found),
            truncated=truncated,
            model_version=model.version,
            took_ms=took_ms,
        )
    return BatchEntitiesResponse(
        results=[
            TextEntities(entities=_entities(found), truncated=truncated)
            for found, truncated in capped
        ],
        truncated=any(truncated for _, truncated in capped),
        model_version=model.version,
        took_ms=took_ms,
    )


def _invalid(details: list[dict[str, Any]]) -> ApiError:
    return ApiError(422, "validation_error", "the request is not valid", details)


def _unknown_labels(labels: list[str], exc: UnknownLabelsError) -> list[dict[str, Any]]:
    # The engine names the unknown types; the client needs where they are in its request.
    known = ", ".join(exc.known)
    return [
        {
            "loc": ["labels", index],
            "type": "unknown_label",
            "msg": f"unknown entity type {label!r}; this model has {known}",
        }
        for index, label in enumerate(labels)
        if label in exc.unknown
    ]


def _cap(results: list[list[Entity]], limit: int) -> list[tuple[list[Entity], bool]]:
    """Each text's entities, and whether some were dropped so that the response holds at
    most ``limit`` (MAX_ENTITIES keeps it under Lambda's 6 MB): texts keep theirs in order,
    and the text that reaches the limit keeps its first ones by position."""
    capped = []
    left = limit
    for found in results:
        kept = found[:left]
        capped.append((kept, len(kept) < len(found)))
        left -= len(kept)
    return capped


def _entities(found: list[Entity]) -> list[EntityOut]:
    return [
        EntityOut(
            entity_group=entity.entity_group,
            score=round(float(entity.score), SCORE_DECIMALS),
            word=entity.word,
            start=entity.start,
            end=entity.end,
        )
        for entity in found
    ]


def _page_router(page: str) -> APIRouter:
    page_router = APIRouter()
    headers = {"content-security-policy": page_csp(page)}

    @page_router.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    return page_router


def _description(settings: Settings) -> str:
    return (
        "Named-entity recognition (ONNX, CPU). Send `text` or `texts` to `POST /v1/entities`.\n\n"
        f"Limits: at most {settings.max_texts} texts of {settings.max_text_chars} characters "
        f"each, {settings.max_total_chars} characters in all, and {settings.max_body_bytes} "
        f"bytes of JSON. A response holds at most {settings.max_entities} entities; a text "
        "whose entities were cut there is marked `truncated`.\n\n"
        'Every error is `{"error": {"code", "message", "details", "request_id"}}`: '
        "400 `invalid_json` / `invalid_encoding`, 404 `not_found`, 405 `method_not_allowed`, "
        "413 `payload_too_large`, 415 `unsupported_media_type`, 422 `validation_error` "
        "(limits included), 500 `internal_error`, 503 `model_unavailable`."
    )


def create_app(settings: Settings | None = None, *, model: ModelHolder | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment), serving ``model`` (default:
    a ``ModelHolder`` for those settings; tests pass one with a fake model source or clock).

    With ``settings.preload_model`` and a ``MODEL_URI``, the model is loaded here (Lambda's
    init phase runs at full CPU, so the first request does not pay for it); a failure is
    only recorded, and the first request tries again.
    """
    settings = settings or Settings.from_env()
    logs.configure()
    app = FastAPI(
        title="nerkit",
        version=__version__,
        description=_description(settings),
        redoc_url=None,
        # The app's metrics are its EMF log lines (nerkit.api.logs); FastAPI's OpenTelemetry
        # hooks would only look up global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.model = model or ModelHolder(settings)
    if settings.preload_model and settings.model_uri:
        app.state.model.preload()
    errors.install(app)
    app.include_router(router)
    if settings.enable_page:
        app.include_router(_page_router(PAGE.read_text(encoding="utf-8")))
    # Added innermost first: the request log wraps everything, so it sees the final status.
    app.add_middleware(errors.UnhandledErrorMiddleware)
    # Outside the 500 handler, so its generic error gets the headers too.
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "x-api-key"],
            expose_headers=["x-request-id"],
            max_age=600,
        )
    app.add_middleware(ApiGatewayPrefixMiddleware, base_path=settings.api_base_path)
    app.add_middleware(logs.RequestLogMiddleware, log_text=settings.log_text)
    return app


app = create_app()
