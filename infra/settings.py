"""Deployment settings: one typed, validated object read from CDK context and the environment.

Every field can be set three ways, strongest first: CDK context (``-c lambda_memory_mb=3538``
or cdk.json's ``context``; the key is the field name), the environment
(``NERKIT_LAMBDA_MEMORY_MB=3538``) and the default below. Context wins because ``-c`` is an
explicit, per-command choice while environment variables are ambient. Lists are
comma-separated strings or JSON lists; ``none`` or an empty string clears an optional value.
docs/DEPLOY.md ("Settings") says why each default is what it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from nerkit.api.origins import is_allowed_origin

ENV_PREFIX = "NERKIT_"
# Lambda's limits: memory 128-10,240 MB, /tmp 512-10,240 MB; API Gateway REST: 29 s.
MEMORY_RANGE_MB = (128, 10_240)
EPHEMERAL_RANGE_MB = (512, 10_240)
API_GATEWAY_TIMEOUT_SECONDS = 29
# CloudWatch Logs accepts only these retention periods (days); a subset keeps the choice simple.
LOG_RETENTION_DAYS = (7, 14, 30, 60, 90, 180, 365)
# One vCPU per 1,769 MB (AWS Lambda documentation).
MB_PER_VCPU = 1769
# Top-level prefixes the training pipeline writes (SageMaker output, spot checkpoints).
RESERVED_PREFIXES = frozenset({"training", "checkpoints"})

_STAGE_RE = re.compile(r"[a-z][a-z0-9-]{0,19}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*[A-Za-z0-9]")
_GITHUB_REPO_RE = re.compile(r"[A-Za-z0-9-]+/[A-Za-z0-9._-]+")
_GITHUB_ENVIRONMENT_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
_INSTANCE_RE = re.compile(r"ml\.[a-z0-9]+\.[0-9]*[a-z]+")
# The environment Settings.load reads instead of os.environ (tests pass their own).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("nerkit_settings_environ", default=None)
# Bulk extraction's top-level prefix in the data bucket, and S3 bucket names.
BULK_PREFIX = "bulk"
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class SettingsError(ValueError):
    """A context value or environment variable holds an invalid setting."""


class _EnvironSource(EnvSettingsSource):
    """``NERKIT_*`` variables from the mapping given to ``Settings.load`` (else os.environ)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        if environ is None:
            return super()._load_env_vars()
        return {name.lower(): value for name, value in environ.items()}


class Settings(BaseSettings):
    """Everything a deployment may tune; docs/DEPLOY.md gives the defaults' reasons."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", str_strip_whitespace=True
    )

    # Names the stack (Nerkit-<stage>), the API stage and resource names; one per deployment.
    stage: str = "prod"
    # Serving Lambda.
    architecture: str = "x86_64"
    lambda_memory_mb: int = MB_PER_VCPU
    lambda_timeout_seconds: int = API_GATEWAY_TIMEOUT_SECONDS
    lambda_ephemeral_mb: int = 512
    reserved_concurrency: int | None = None
    # How often a warm environment re-reads LIVE: the delay before a published model serves.
    model_refresh_seconds: int = 60
    tracing: bool = False
    # Whether this stack sets the region's account-wide API Gateway CloudWatch Logs role
    # (AWS::ApiGateway::Account). Off: that role must already be set (the stage's access and
    # execution logs need it). On for exactly one stack per account and region.
    api_gateway_account_role: bool = True
    # API Gateway: per-method (all clients) and per-key (usage plan) limits of the keyed
    # routes, and the per-method limits of each open route.
    throttle_rate: float = 50.0
    throttle_burst: int = 100
    quota_per_day: int = 100_000
    open_throttle_rate: float = 5.0
    open_throttle_burst: int = 10
    # The front door (infra/http_api.py): ``rest`` (API keys, usage plans, gateway responses
    # in the app's envelope) or ``http`` (an HTTP API with a JWT authorizer, ~70% cheaper).
    # With ``http``, tokens come from jwt_issuer (an OIDC issuer URL) for jwt_audience, or,
    # without an issuer, from a Cognito user pool the stack creates.
    api: str = "rest"
    jwt_issuer: str | None = None
    jwt_audience: Annotated[tuple[str, ...], NoDecode] = ()
    enable_page: bool = True
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # S3 layout inside the one bucket.
    model_prefix: str = "models/ner"
    datasets_prefix: str = "datasets"
    # Training pipeline.
    training_instance_type: str = "ml.g6.xlarge"
    training_volume_gb: int = 30
    spot: bool = True
    max_runtime_seconds: int = 3 * 3600
    max_wait_seconds: int = 6 * 3600
    # The quality gate: validation entity F1 a new model needs before it may go live, and
    # whether it must also beat the live model's validation F1.
    gate_min_f1: float = 0.80
    gate_must_beat_live: bool = True
    # Operations.
    log_retention_days: int = 30
    # Continuous delivery: with github_repo (owner/name) the app adds the stack of GitHub
    # OIDC deploy roles, one per environment; an account's existing GitHub OIDC provider is
    # imported by ARN instead of created.
    github_repo: str | None = None
    github_environments: Annotated[tuple[str, ...], NoDecode] = ("dev", "prod")
    github_oidc_provider_arn: str | None = None
    # Own SageMaker's account-wide /aws/sagemaker/TrainingJobs log group (retention above).
    # For one stage per account and region, and only where the group does not exist yet.
    manage_sagemaker_log_group: bool = False
    alarm_email: str | None = None
    # -- Bulk extraction (infra/bulk.py) ----------------------------------------------------
    # Worker Lambdas one run may run at once (the Distributed Map's MaxConcurrency). They
    # share the account's Lambda concurrency (1,000 by default, 10 on new accounts) with the
    # API: 100 leaves the API its headroom; raise it together with a quota increase
    # (docs/DEPLOY.md, "Bulk extraction").
    bulk_max_concurrency: int = 100
    # Shards that may fail (after retries) before the whole run fails; the summary lists
    # them either way and the run ends failed if any is missing.
    bulk_tolerated_failure_percent: float = 0.0
    # One full vCPU, as for serving: the worker is CPU-bound with one ONNX Runtime thread.
    bulk_worker_memory_mb: int = MB_PER_VCPU
    # Buckets besides the stack's bulk/ prefix that runs may read input from / write to.
    bulk_read_buckets: Annotated[tuple[str, ...], NoDecode] = ()
    bulk_write_buckets: Annotated[tuple[str, ...], NoDecode] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Context values arrive as init arguments (Settings.load), so they beat the
        # environment; no .env or secrets files.
        return init_settings, _EnvironSource(settings_cls)

    @field_validator(
        "reserved_concurrency",
        "alarm_email",
        "github_repo",
        "github_oidc_provider_arn",
        "jwt_issuer",
        mode="before",
    )
    @classmethod
    def _none_clears(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value

    @field_validator(
        "cors_origins",
        "github_environments",
        "bulk_read_buckets",
        "bulk_write_buckets",
        "jwt_audience",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list | tuple):
            return tuple(str(item).strip() for item in value if str(item).strip())
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        problems = [message for check in _CHECKS if (message := check(self))]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def stack_name(self) -> str:
        return f"Nerkit-{self.stage}"

    @property
    def ner_threads(self) -> int:
        """ONNX Runtime threads that the function's memory pays for (one per full vCPU)."""
        return max(1, self.lambda_memory_mb // MB_PER_VCPU)

    @property
    def tags(self) -> dict[str, str]:
        """Cost-allocation tags of every resource: the stack's and its training jobs'."""
        return {"project": "nerkit", "stage": self.stage}

    @property
    def training_job_prefix(self) -> str:
        """Every training job of this deployment is named ``<prefix><run>``; IAM is scoped
        to it."""
        return f"nerkit-{self.stage}-"

    @classmethod
    def load(
        cls,
        context: Callable[[str], Any],
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from a context lookup (``app.node.try_get_context``) and the
        environment (default ``os.environ``)."""
        given = {name: raw for name in cls.model_fields if (raw := context(name)) is not None}
        try:
            with _environ(environ):
                return cls(**given)
        except ValidationError as exc:
            raise SettingsError("invalid settings: " + _describe(exc, given)) from None


@contextmanager
def _environ(environ: Mapping[str, str] | None) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def _describe(exc: ValidationError, context: Mapping[str, Any]) -> str:
    """One line per problem, naming where a bad value came from."""
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:
            lines.append(message)
            continue
        field = str(error["loc"][0])
        source = (
            f"context {field}" if field in context else f"environment {ENV_PREFIX}{field.upper()}"
        )
        lines.append(f"{source}={error['input']!r}: {message}")
    return "; ".join(lines)


def _in_range(name: str, value: float, low: float, high: float) -> str | None:
    return None if low <= value <= high else f"{name} must be within {low}..{high}, not {value}"


def _check_stage(s: Settings) -> str | None:
    if _STAGE_RE.fullmatch(s.stage):
        return None
    return f"stage {s.stage!r}: lower-case letters, digits and '-', starting with a letter, <= 20"


def _check_architecture(s: Settings) -> str | None:
    if s.architecture in ("x86_64", "arm64"):
        return None
    return f"architecture must be x86_64 or arm64, not {s.architecture!r}"


def _check_lambda(s: Settings) -> str | None:
    return (
        _in_range("lambda_memory_mb", s.lambda_memory_mb, *MEMORY_RANGE_MB)
        or _in_range("lambda_ephemeral_mb", s.lambda_ephemeral_mb, *EPHEMERAL_RANGE_MB)
        or _in_range("lambda_timeout_seconds", s.lambda_timeout_seconds, 1, 29)
        or _in_range("model_refresh_seconds", s.model_refresh_seconds, 0, 86_400)
    )


def _check_concurrency(s: Settings) -> str | None:
    if s.reserved_concurrency is None:
        return None
    return _in_range("reserved_concurrency", s.reserved_concurrency, 1, 10_000)


def _check_api(s: Settings) -> str | None:
    return (
        _in_range("throttle_rate", s.throttle_rate, 0.1, 10_000)
        or _in_range("throttle_burst", s.throttle_burst, 1, 5_000)
        or _in_range("quota_per_day", s.quota_per_day, 1, 100_000_000)
        or _in_range("open_throttle_rate", s.open_throttle_rate, 0.1, 10_000)
        or _in_range("open_throttle_burst", s.open_throttle_burst, 1, 5_000)
    )


def _check_front_door(s: Settings) -> str | None:
    if s.api not in ("rest", "http"):
        return f"api must be rest or http, not {s.api!r}"
    if s.api == "rest" and (s.jwt_issuer or s.jwt_audience):
        return "jwt_issuer and jwt_audience apply only with api=http"
    if s.jwt_issuer is not None and not re.fullmatch(r"https://[^\s/]+(/\S*)?", s.jwt_issuer):
        return f"jwt_issuer {s.jwt_issuer!r} must be an https:// issuer URL"
    if bool(s.jwt_issuer) != bool(s.jwt_audience):
        return "jwt_issuer and jwt_audience go together (or neither: a Cognito user pool)"
    return None


def _check_origins(s: Settings) -> str | None:
    bad = [o for o in s.cors_origins if not is_allowed_origin(o)]
    return f"cors_origins must be '*' or origins like https://example.com: {bad}" if bad else None


def _check_prefixes(s: Settings) -> str | None:
    for name in ("model_prefix", "datasets_prefix"):
        value = getattr(s, name)
        if not _PREFIX_RE.fullmatch(value) or "//" in value:
            return f"{name} {value!r} must be a key prefix like models/ner (no leading '/')"
    # The serving role reads only the model prefix; a dataset prefix inside it would leak.
    model, data = s.model_prefix + "/", s.datasets_prefix + "/"
    if model.startswith(data) or data.startswith(model):
        return "model_prefix and datasets_prefix must not contain each other"
    if {s.model_prefix.split("/")[0], s.datasets_prefix.split("/")[0]} & RESERVED_PREFIXES:
        return f"{sorted(RESERVED_PREFIXES)} are reserved for SageMaker output and checkpoints"
    return None


def _check_training(s: Settings) -> str | None:
    if not _INSTANCE_RE.fullmatch(s.training_instance_type):
        return f"training_instance_type {s.training_instance_type!r} must look like ml.g6.xlarge"
    if s.spot and s.max_wait_seconds < s.max_runtime_seconds:
        return "max_wait_seconds must be >= max_runtime_seconds for spot training"
    return (
        _in_range("max_runtime_seconds", s.max_runtime_seconds, 60, 28 * 86_400)
        or _in_range("max_wait_seconds", s.max_wait_seconds, 60, 28 * 86_400)
        or _in_range("training_volume_gb", s.training_volume_gb, 1, 16_384)
        or _in_range("gate_min_f1", s.gate_min_f1, 0.0, 1.0)
    )


def _check_operations(s: Settings) -> str | None:
    if s.log_retention_days not in LOG_RETENTION_DAYS:
        return f"log_retention_days must be one of {LOG_RETENTION_DAYS}"
    if s.alarm_email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", s.alarm_email):
        return f"alarm_email {s.alarm_email!r} is not an e-mail address"
    return None


def _check_github(s: Settings) -> str | None:
    if s.github_repo is not None and not _GITHUB_REPO_RE.fullmatch(s.github_repo):
        return f"github_repo {s.github_repo!r} must be owner/name"
    bad = [e for e in s.github_environments if not _GITHUB_ENVIRONMENT_RE.fullmatch(e)]
    if bad or not s.github_environments:
        return f"github_environments must be names like dev,prod: {list(s.github_environments)}"
    arn = s.github_oidc_provider_arn
    if arn is not None and not arn.endswith(":oidc-provider/token.actions.githubusercontent.com"):
        return f"github_oidc_provider_arn {arn!r} is not GitHub's OIDC provider"
    return None


def _check_bulk(s: Settings) -> str | None:
    bad = [b for b in (*s.bulk_read_buckets, *s.bulk_write_buckets) if not _BUCKET_RE.fullmatch(b)]
    if bad:
        return f"bulk_read_buckets/bulk_write_buckets must be bucket names: {bad}"
    if BULK_PREFIX in {s.model_prefix.split("/")[0], s.datasets_prefix.split("/")[0]}:
        return f"{BULK_PREFIX}/ is reserved for bulk extraction"
    return (
        _in_range("bulk_max_concurrency", s.bulk_max_concurrency, 1, 10_000)
        or _in_range("bulk_tolerated_failure_percent", s.bulk_tolerated_failure_percent, 0, 100)
        or _in_range("bulk_worker_memory_mb", s.bulk_worker_memory_mb, *MEMORY_RANGE_MB)
    )


_CHECKS: tuple[Callable[[Settings], str | None], ...] = (
    _check_stage,
    _check_architecture,
    _check_lambda,
    _check_concurrency,
    _check_api,
    _check_front_door,
    _check_origins,
    _check_prefixes,
    _check_training,
    _check_operations,
    _check_github,
    _check_bulk,
)
