"""The HTTP API: ``create_app(settings)`` and the module-level ``app`` Lambda serves.

Routes: ``GET /health`` (liveness), ``GET /ready`` (loads the model), ``GET /v1/model``,
``POST /v1/entities``, ``POST /v1/hf/token-classification`` (the Hugging Face contract, see
``nerkit.api.hf``), ``GET /`` (the page, when enabled), ``/docs`` and ``/openapi.json``; with
``ENABLE_ADMIN`` the admin routes of ``nerkit.api.admin`` too.
Building the app reads the page and, with ``PRELOAD_MODEL`` (the default inside Lambda), loads
the model; otherwise the model loads on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse

from nerkit import __version__
from nerkit.api import errors, hf, logs
from nerkit.api.blocking import run_blocking
from nerkit.api.body import BodyLimitMiddleware, read_json
from nerkit.api.docs import add_offline_docs
from nerkit.api.gateway import ApiGatewayPrefixMiddleware
from nerkit.api.headers import SecurityHeadersMiddleware, page_csp
from nerkit.api.inference import (
    BAD_REQUEST,
    UNAVAILABLE,
    app_settings,
    infer,
    invalid,
    loaded_model,
    model_holder,
    validated,
)
from nerkit.api.model import LoadedModel, ModelHolder
from nerkit.api.schemas import (
    BatchEntitiesResponse,
    EntitiesRequest,
    EntitiesResponse,
    EntityOut,
    Health,
    ModelInfo,
    Ready,
    TextEntities,
    entities_request_schema,
)
from nerkit.api.settings import Settings
from nerkit.decoding import Entity
from nerkit.engine import UnknownLabelsError

PAGE = Path(__file__).with_name("page.html")
router = APIRouter()


async def _loaded_model(request: Request) -> LoadedModel:
    model = await run_blocking(request.scope, loaded_model, model_holder(request))
    logs.request_record(request.scope).model_version = model.version
    return model


Model = Annotated[LoadedModel, Depends(_loaded_model)]


@router.get("/health", summary="Liveness: the process answers (no model needed)")
async def health() -> Health:
    return Health()


@router.get("/ready", summary="Readiness: the model is loaded", responses=UNAVAILABLE)
async def ready(request: Request, model: Model) -> Ready:
    return Ready(model_version=model.version, refresh_error=model_holder(request).status().error)


@router.get("/v1/model", summary="The served model", responses=UNAVAILABLE)
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
    response_model=EntitiesResponse | BatchEntitiesResponse,
    responses={**BAD_REQUEST, **UNAVAILABLE},
    # The body is read by hand (see nerkit.api.body), so it is declared here; its schema
    # carries each app's limits, so create_app puts it in (see _publish_request_schema).
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
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
async def entities(request: Request) -> Response:
    settings = app_settings(request)
    payload = await read_json(request)
    body = await validated(request, EntitiesRequest, payload, settings)
    texts = body.inputs
    try:
        inference = await infer(
            request,
            settings,
            texts,
            lambda engine, texts: engine.predict(
                texts,
                aggregation=body.aggregation,
                decoding=body.decoding,
                labels=body.labels,
                min_score=body.min_score,
            ),
            lambda index: ["text"] if body.text is not None else ["texts", index],
        )
    except UnknownLabelsError as exc:
        raise invalid(_unknown_labels(body.labels or [], exc)) from None
    answer: EntitiesResponse | BatchEntitiesResponse
    if body.text is not None:
        [(found, truncated)] = inference.results
        answer = EntitiesResponse(
            entities=_entities(found),
            truncated=truncated,
            model_version=inference.model_version,
            took_ms=inference.took_ms,
        )
    else:
        answer = BatchEntitiesResponse(
            results=[
                TextEntities(entities=_entities(found), truncated=truncated)
                for found, truncated in inference.results
            ],
            truncated=any(truncated for _, truncated in inference.results),
            model_version=inference.model_version,
            took_ms=inference.took_ms,
        )
    # Rendered here: FastAPI would validate the model it was just built from all over again.
    return Response(answer.model_dump_json(), media_type="application/json")


def _unknown_labels(labels: list[str], exc: UnknownLabelsError) -> list[dict[str, Any]]:
    # The engine names the unknown types; the client needs where they are in its request.
    # One detail per unknown entry: MAX_LABELS and MAX_LABEL_CHARS bound their number and size.
    known = ", ".join(exc.known)
    unknown = frozenset(exc.unknown)
    return [
        {
            "loc": ["labels", index],
            "type": "unknown_label",
            "msg": f"unknown entity type {label!r}; this model has {known}",
        }
        for index, label in enumerate(labels)
        if label in unknown
    ]


def _entities(found: Sequence[Entity]) -> list[EntityOut]:
    return [EntityOut.of(entity) for entity in found]


def _page_router(page: str, settings: Settings) -> APIRouter:
    page_router = APIRouter()
    upload = (settings.upload_origin,) if settings.upload_origin else ()
    headers = {"content-security-policy": page_csp(page, connect=upload)}

    @page_router.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    return page_router


def _description(settings: Settings) -> str:
    return (
        "Named-entity recognition (ONNX, CPU). Send `text` or `texts` to `POST /v1/entities`; "
        "clients of the Hugging Face Inference API use `POST /v1/hf/token-classification`.\n\n"
        f"Limits: at most {settings.max_texts} texts of {settings.max_text_chars} characters "
        f"each, {settings.max_total_chars} characters in all, and {settings.max_body_bytes} "
        f"bytes of JSON. A response holds at most {settings.max_entities} entities; a text "
        "whose entities were cut there is marked `truncated`.\n\n"
        'Every error is `{"error": {"code", "message", "details", "request_id"}}`: '
        "400 `invalid_json` / `invalid_encoding`, 404 `not_found`, 405 `method_not_allowed`, "
        "413 `payload_too_large`, 415 `unsupported_media_type`, 422 `validation_error` "
        "(limits included), 500 `internal_error`, 503 `model_unavailable`."
    )


def _publish_request_schema(app: FastAPI, settings: Settings) -> None:
    """Have the OpenAPI document carry this app's request limits (the route is shared)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()  # FastAPI keeps it as app.openapi_schema
        for path, request_schema in (
            ("/v1/entities", entities_request_schema),
            (hf.PATH, hf.request_schema),
        ):
            body = document["paths"][path]["post"]["requestBody"]
            body["content"]["application/json"]["schema"] = request_schema(
                settings.max_texts, settings.max_text_chars
            )
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, *, model: ModelHolder | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment), serving ``model`` (default:
    a ``ModelHolder`` for those settings; tests pass one with a fake model source or clock).

    With ``settings.preload_model`` and a ``MODEL_URI``, the model is loaded here (Lambda's
    init phase runs at full CPU, so the first request does not pay for it); a failure is
    only recorded, and the first request tries again.
    """
    settings = settings or Settings.from_env()
    logs.configure(settings.log_format)
    app = FastAPI(
        title="nerkit",
        version=__version__,
        description=_description(settings),
        redoc_url=None,
        docs_url=None,  # add_offline_docs serves /docs without a CDN
        # The app's metrics are its EMF log lines (nerkit.api.logs); FastAPI's OpenTelemetry
        # hooks would only look up global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        # The API's own routes come first, as routes rather than an included router: a
        # request is matched against the routes in order, and every call takes one of these.
        # These route objects are shared by every app built here: an app's
        # dependency_overrides do not reach them (nothing here overrides any).
        routes=[*router.routes, *hf.router.routes],
    )
    add_offline_docs(app)
    app.state.settings = settings
    app.state.model = model or ModelHolder(settings)
    if settings.preload_model and settings.model_uri:
        app.state.model.preload()
    errors.install(app)
    _publish_request_schema(app, settings)
    if settings.enable_page:
        app.include_router(_page_router(PAGE.read_text(encoding="utf-8"), settings))
    if settings.enable_admin:
        # Imported here: the serving function, which has the admin routes off, never loads
        # the pipeline modules.
        from nerkit.api import admin

        app.state.admin = admin.AdminServices(settings)
        app.include_router(admin.router)
    # Added innermost first: the request log wraps everything, so it sees the final status.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(errors.UnhandledErrorMiddleware)
    # Outside the 500 handler, so its generic error gets the headers too.
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "x-api-key"],
            expose_headers=["x-request-id", hf.TRUNCATED_HEADER],
            max_age=600,
        )
    app.add_middleware(ApiGatewayPrefixMiddleware, base_path=settings.api_base_path)
    app.add_middleware(
        logs.RequestLogMiddleware, log_text=settings.log_text, log_format=settings.log_format
    )
    return app


app = create_app()
