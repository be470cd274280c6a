"""The admin routes: training runs, dataset uploads and the model store's LIVE pointer.

Mounted only where ``ENABLE_ADMIN`` is on (the stack's admin function, ``make run``); every
route needs an admin caller (``nerkit.api.authz``: 403 ``forbidden`` otherwise). They do what
the operators' command lines do, through the same code: ``nerkit.pipeline.start`` (one check
of a run's input), ``ModelStore.rollback`` (one history of LIVE). Moving LIVE writes an audit
line (logger ``nerkit.api.audit``): who (the API key's id or the token's subject), from which
version, to which.

Errors are the app's envelope. These routes serve operators, so a conflict's message may name
the model store; AWS failures are logged and answered with a generic 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from functools import cached_property
from typing import Annotated, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Depends, Path, Query, Request

from nerkit.api import logs
from nerkit.api.admin_schemas import (
    GateVerdictOut,
    LiveOut,
    ModelList,
    ModelVersionOut,
    Scores,
    SetLiveRequest,
    TrainingRunList,
    TrainingRunOut,
    TrainingRunRequest,
    TrainingRunStarted,
    UploadOut,
    UploadRequest,
)
from nerkit.api.authz import Admin
from nerkit.api.blocking import run_blocking
from nerkit.api.errors import ApiError
from nerkit.api.schemas import ErrorResponse
from nerkit.api.settings import Settings
from nerkit.errors import ConfigError, LiveConflict, ModelError, ModelNotFound
from nerkit.pipeline import runs
from nerkit.pipeline.datasets import UploadError, presigned_upload
from nerkit.pipeline.start import (
    JOB_NAME_PATTERN,
    StartError,
    StepFunctionsClient,
    build_input,
    default_job_name,
    start_training,
)
from nerkit.store import ModelStore, S3Client, new_s3_client
from nerkit.store.registry import Pointer, VersionInfo

log = logging.getLogger(f"{logs.LOGGER}.admin")
audit = logging.getLogger(f"{logs.LOGGER}.audit")
T = TypeVar("T")

# Each listed version costs one manifest read inside the request's time budget.
MAX_LISTED_VERSIONS = 100
_COMMON = {
    403: {"model": ErrorResponse, "description": "Not an admin (`forbidden`)"},
    422: {"model": ErrorResponse, "description": "The request is not valid"},
    503: {"model": ErrorResponse, "description": "AWS did not answer (`upstream_unavailable`)"},
}
# Of the routes with a body: FastAPI answers a body it cannot decode with a 400 (`bad_request`).
_UNREADABLE = {400: {"model": ErrorResponse, "description": "The body is not UTF-8 JSON"}}


class AdminServices:
    """The AWS clients of the admin routes, created on first use (tests pass their own)."""

    def __init__(
        self,
        settings: Settings,
        *,
        stepfunctions: StepFunctionsClient | None = None,
        s3: S3Client | None = None,
    ) -> None:
        self.settings = settings
        self._stepfunctions = stepfunctions
        self._s3 = s3

    @cached_property
    def stepfunctions(self) -> StepFunctionsClient:
        return self._stepfunctions or runs.new_client()

    @cached_property
    def s3(self) -> S3Client:
        return self._s3 or new_s3_client()

    @cached_property
    def store(self) -> ModelStore:
        return ModelStore.from_uri(self.settings.model_uri, self.s3)


async def _services(request: Request) -> AdminServices:
    services: AdminServices = request.app.state.admin
    return services


Services = Annotated[AdminServices, Depends(_services)]
router = APIRouter(prefix="/v1", tags=["admin"], responses=_COMMON)


async def _aws(request: Request, call: Callable[[], T], what: str) -> T:
    """Run a blocking AWS call (off the event loop behind a local server, on the invoking
    thread inside Lambda: ``run_blocking``); its failures become the envelope's."""
    try:
        return await run_blocking(request.scope, call)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "ExecutionAlreadyExists":
            raise ApiError(409, "conflict", "a run with this job name exists already") from None
        if code == "ExecutionDoesNotExist":
            raise ApiError(404, "not_found", "no such training run") from None
        log.warning("AWS call failed", extra={"fields": {"what": what, "code": code}})
        raise _unavailable() from None
    except BotoCoreError as exc:
        log.warning(
            "AWS unreachable", extra={"fields": {"what": what, "error": type(exc).__name__}}
        )
        raise _unavailable() from None
    except LiveConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except ModelNotFound:
        raise ApiError(404, "not_found", "no such model version in the store") from None
    except ConfigError as exc:
        raise _invalid(["body", "version"], "invalid_version", str(exc)) from None
    except ModelError as exc:
        log.warning("model store failed", extra={"fields": {"what": what, "error": str(exc)}})
        raise _unavailable() from None


def _unavailable() -> ApiError:
    return ApiError(503, "upstream_unavailable", "AWS did not answer; try again shortly")


def _invalid(loc: list[str | int], kind: str, message: str) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        "the request is not valid",
        [{"loc": loc, "type": kind, "msg": message}],
    )


# -- training runs ------------------------------------------------------------------------


@router.post(
    "/training-runs",
    status_code=201,
    summary="Start a training run (train, gate, publish)",
    responses={
        **_UNREADABLE,
        409: {"model": ErrorResponse, "description": "The job name is taken"},
    },
)
async def start_run(
    request: Request, body: TrainingRunRequest, caller: Admin, services: Services
) -> TrainingRunStarted:
    settings = services.settings
    try:
        execution_input = build_input(
            job_name=body.job_name or default_job_name(settings.training_job_prefix),
            channels={"train": body.train, "validation": body.validation, "test": body.test},
            hyperparameters=body.hyperparameters,
            datasets_uri=settings.datasets_uri,
            job_prefix=settings.training_job_prefix,
        )
    except StartError as exc:
        raise _invalid(["body"], exc.kind, str(exc)) from None
    arn = await _aws(
        request,
        lambda: start_training(
            settings.state_machine_arn, execution_input, client=services.stepfunctions
        ),
        "start_execution",
    )
    audit.info(
        "training run started",
        extra={"fields": {"who": caller.principal, "run": execution_input["jobName"]}},
    )
    return TrainingRunStarted(
        id=execution_input["jobName"], execution_arn=arn, input=execution_input
    )


@router.get("/training-runs", summary="Recent training runs, newest first")
async def list_runs(
    request: Request,
    caller: Admin,
    services: Services,
    limit: Annotated[int, Query(ge=1, le=runs.MAX_LISTED_RUNS)] = 10,
) -> TrainingRunList:
    found = await _aws(
        request,
        lambda: runs.recent_runs(
            services.stepfunctions, services.settings.state_machine_arn, limit
        ),
        "list_executions",
    )
    return TrainingRunList(runs=[_run_out(run) for run in found])


@router.get(
    "/training-runs/{run_id}",
    summary="One training run: status, gate verdict",
    responses={404: {"model": ErrorResponse, "description": "No such run"}},
)
async def get_run(
    run_id: Annotated[str, Path(pattern=JOB_NAME_PATTERN, description="The run's job name")],
    request: Request,
    caller: Admin,
    services: Services,
) -> TrainingRunOut:
    arn = runs.execution_arn(services.settings.state_machine_arn, run_id)
    run = await _aws(
        request, lambda: runs.describe_run(services.stepfunctions, arn), "describe_execution"
    )
    return _run_out(run)


def _run_out(run: runs.Run) -> TrainingRunOut:
    fields = asdict(run)
    fields["gate"] = GateVerdictOut(**fields["gate"]) if run.gate else None
    return TrainingRunOut(**fields)


# -- datasets -----------------------------------------------------------------------------


@router.post(
    "/datasets/uploads",
    status_code=201,
    summary="A presigned S3 POST for one dataset file (no AWS credentials needed)",
    responses=_UNREADABLE,
)
async def new_upload(
    request: Request, body: UploadRequest, caller: Admin, services: Services
) -> UploadOut:
    settings = services.settings
    try:
        upload = await _aws(
            request,
            lambda: presigned_upload(
                services.s3,
                settings.datasets_uri,
                dataset=body.dataset,
                channel=body.channel,
                filename=body.filename,
                max_bytes=settings.max_upload_bytes,
                url=settings.upload_url,
            ),
            "generate_presigned_post",
        )
    except UploadError as exc:
        raise _invalid(["body"], "invalid_upload", str(exc)) from None
    return UploadOut(**asdict(upload))


# -- models -------------------------------------------------------------------------------


@router.get("/models", summary="Stored model versions, their F1 and which one is LIVE")
async def list_models(
    request: Request,
    caller: Admin,
    services: Services,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED_VERSIONS)] = 50,
) -> ModelList:
    store = services.store
    pointer, versions = await _aws(
        request, lambda: (store.live(), store.versions(limit)), "list models"
    )
    live = pointer.version if pointer else None
    return ModelList(
        live=live,
        history=list(pointer.history) if pointer else [],
        versions=[_version_out(info, live) for info in reversed(versions)],
    )


@router.put(
    "/models/live",
    summary="Make a stored version LIVE: promote it, or roll back to it",
    description="A version that was live before is a rollback: the versions live after it "
    "leave the history. Any other stored version is promoted, without the quality gate. "
    "Each move is written to the audit log.",
    responses={
        **_UNREADABLE,
        404: {"model": ErrorResponse, "description": "No such version"},
        409: {"model": ErrorResponse, "description": "LIVE is not `expected_current`"},
    },
)
async def set_live(
    request: Request, body: SetLiveRequest, caller: Admin, services: Services
) -> LiveOut:
    store = services.store

    def move() -> tuple[Pointer | None, Pointer, bool]:
        before = store.live()
        current = before.version if before else None
        if body.expected_current is not None and body.expected_current != current:
            raise LiveConflict(f"LIVE is {current!r}, expected {body.expected_current!r}")
        if before is None:
            return None, store.set_live(body.version, expected_current=None), True
        if before.version == body.version:
            return before, before, False  # a PUT of what is live already: nothing to do
        # Conditional on the LIVE just read, so the audit line's "from" is exact.
        return before, store.rollback(body.version, expected_current=current), True

    before, pointer, changed = await _aws(request, move, "set live")
    audit.info(
        "live moved" if changed else "live unchanged",
        extra={
            "fields": {
                "who": caller.principal,
                "action": "set_live",
                "from": before.version if before else None,
                "to": pointer.version,
                "changed": changed,
            }
        },
    )
    return LiveOut(
        version=pointer.version,
        previous=pointer.previous,
        history=list(pointer.history),
        updated_at=pointer.updated_at,
        changed=changed,
    )


def _version_out(info: VersionInfo, live: str | None) -> ModelVersionOut:
    return ModelVersionOut(
        version=info.version,
        created_at=info.created_at,
        live=info.version == live,
        validation=_scores(info.metrics.get("validation")),
        test=_scores(info.metrics.get("test")),
    )


def _scores(split: Any) -> Scores | None:
    if not isinstance(split, dict):
        return None
    per_type = split.get("per_type") if isinstance(split.get("per_type"), dict) else {}
    return Scores(
        f1=_f1(split),
        per_type={
            str(name): f1 for name, scores in per_type.items() if (f1 := _f1(scores)) is not None
        },
    )


def _f1(scores: Any) -> float | None:
    return runs.number(scores.get("f1")) if isinstance(scores, dict) else None
