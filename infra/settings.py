"""Deployment settings: one typed, validated object read from CDK context and the environment.

Every field can be set three ways, strongest first:

1. CDK context: ``npx cdk deploy -c lambda_memory_mb=3538`` (or the ``context`` block of
   ``cdk.json``); the key is the field name.
2. Environment: ``NERKIT_LAMBDA_MEMORY_MB=3538``; ``NERKIT_`` plus the upper-cased field name.
3. The default below.

Context wins over the environment because ``-c`` is an explicit, per-command choice while
environment variables are ambient. Lists (``cors_origins``) are comma-separated strings or
JSON lists; booleans accept true/false, 1/0, yes/no, on/off; ``none`` or an empty string
clears an optional number.

Why the defaults are what they are
----------------------------------
Serving numbers (measured on the team machines, x86_64): the int8 MiniLM model costs ~6 ms of
CPU per sentence on one core with ONNX Runtime at one intra-op thread, and the process holds
~110 MB RSS with the model loaded.

* ``lambda_memory_mb = 1769``: Lambda allocates CPU in proportion to memory and 1,769 MB is
  exactly one full vCPU. Inference is CPU-bound, so below 1,769 MB a request runs on a
  fraction of a core: latency grows as 1769/memory while the GB-seconds per request (and so
  the bill) stay roughly flat, so there is nothing to save by going lower, only latency to
  lose (cold starts too: the model download, checksum and ONNX session build are CPU-bound).
  Above 1,769 MB the second vCPU idles because ``NER_THREADS`` is 1 (one request per
  environment; batching texts in one request is sequential per window), so cost rises with no
  latency gain. The RSS (~110 MB) is far below any of these sizes: memory is bought here for
  CPU, not for space. The stack derives ``NER_THREADS`` from this value (one thread per full
  vCPU) so a deployer who raises it to 3,538 MB for long documents gets two threads.
* ``architecture = "x86_64"``: onnxruntime ships wheels for both x86_64 and arm64 and arm64
  is 20% cheaper per GB-second, but every latency and accuracy number this project has was
  measured on x86_64 (int8 kernels differ: VNNI on x86, dot-product instructions on arm), and
  the serving image builds natively on the x86_64 machines that run ``cdk deploy`` (arm64 needs
  QEMU/buildx emulation there). Switch to ``arm64`` after measuring latency on Graviton; the
  cost section of docs/DEPLOY.md gives both prices.
* ``lambda_timeout_seconds = 29``: API Gateway REST gives up on an integration after 29 s, so
  a longer Lambda timeout would only bill work nobody receives. It bounds the worst request
  (64 texts x 20,000 characters) and a cold start that downloads the model.
* ``lambda_ephemeral_mb = 512``: the free amount. A MiniLM artifact is ~25 MB; /tmp holds the
  download, the extracted model and, during a refresh, the next version next to it (~100 MB).
  Raise it for models over ~150 MB.
* ``reserved_concurrency = None``: reserving concurrency takes it from the account pool and
  fails to deploy on new accounts whose total limit is 10. The stage and usage-plan throttles
  are the cost guard instead: 50 requests/s x ~10 ms is under one concurrent environment.
* ``throttle_rate``/``throttle_burst``/``quota_per_day``: 50 req/s steady, bursts of 100 and
  100,000 requests a day per key; at ~$3.9 per million requests (docs/DEPLOY.md) a key that
  exhausts its quota costs ~$0.40 a day. API Gateway applies the stage's rate and burst to
  each method separately (all clients of a method together); the usage plan adds the same
  limits per key.
* ``open_throttle_rate``/``open_throttle_burst``: 5 req/s, bursts of 10, for each open route
  (``/health``, ``/ready``, the page). No key and no usage plan covers them, so these are the
  only bound on what anonymous callers can spend: with the keyed routes' 50/100 an anonymous
  flood could cost ~$16 a day per route and, worse, start up to 100 cold environments at once
  (``/ready`` loads the model), taking Lambda concurrency from the keyed routes (and with
  ``reserved_concurrency`` set, from a small fixed pool). An uptime check needs ~1 req/s and
  a person loads the page once.
* ``training_instance_type = "ml.g4dn.xlarge"``: one T4 GPU, the cheapest GPU training
  instance with spot capacity in most regions; one CoNLL epoch takes ~15 min on 2 CPU cores
  (measured) and should take a few minutes on a T4 (assumed, not measured). ``spot`` saves
  up to ~70%; the checkpoint config lets SageMaker resume an interrupted job, and
  ``max_wait_seconds`` (>= the max runtime) bounds the wait for spot capacity.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

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
_ORIGIN_RE = re.compile(r"https?://[^/\s?#]+")  # the same rule as nerkit.api.settings
_INSTANCE_RE = re.compile(r"ml\.[a-z0-9]+\.[0-9]*[a-z]+")
# Bulk extraction's top-level prefix in the data bucket, and S3 bucket names.
BULK_PREFIX = "bulk"
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class SettingsError(ValueError):
    """A context value or environment variable holds an invalid setting."""


@dataclass(frozen=True)
class Settings:
    """Everything a deployment may tune; see the module docstring for the defaults' reasons."""

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
    # API Gateway: per-method (all clients) and per-key (usage plan) limits of the keyed
    # routes, and the per-method limits of each open route.
    throttle_rate: float = 50.0
    throttle_burst: int = 100
    quota_per_day: int = 100_000
    open_throttle_rate: float = 5.0
    open_throttle_burst: int = 10
    enable_page: bool = True
    cors_origins: tuple[str, ...] = ()
    # S3 layout inside the one bucket.
    model_prefix: str = "models/ner"
    datasets_prefix: str = "datasets"
    # Training pipeline.
    training_instance_type: str = "ml.g4dn.xlarge"
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
    bulk_read_buckets: tuple[str, ...] = ()
    bulk_write_buckets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = [message for check in _CHECKS if (message := check(self))]
        if problems:
            raise SettingsError("invalid settings: " + "; ".join(problems))

    @property
    def stack_name(self) -> str:
        return f"Nerkit-{self.stage}"

    @property
    def ner_threads(self) -> int:
        """ONNX Runtime threads that the function's memory pays for (one per full vCPU)."""
        return max(1, self.lambda_memory_mb // MB_PER_VCPU)

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
        environ = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = context(field.name)
            source = f"context {field.name}"
            if raw is None:
                name = ENV_PREFIX + field.name.upper()
                raw, source = environ.get(name), f"environment {name}"
            if raw is None:
                continue
            try:
                values[field.name] = _convert(raw, hints[field.name])
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"{source}={raw!r}: {exc}") from None
        return cls(**values)


def _convert(raw: Any, hint: Any) -> Any:
    """Coerce a context value (typed JSON from cdk.json, or a string from ``-c``/env)."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if optional:
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
            return None
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text not in _TRUE | _FALSE:
            raise ValueError("expected true or false")
        return text in _TRUE
    if hint is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError("expected an integer")
        return int(raw)
    if hint is float:
        return float(raw)
    if hint is str:
        return str(raw).strip()
    if typing.get_origin(hint) is tuple:
        items = raw
        if isinstance(raw, str):
            text = raw.strip()
            items = json.loads(text) if text.startswith("[") else text.split(",")
        if not isinstance(items, list | tuple):
            raise ValueError("expected a list or a comma-separated string")
        return tuple(str(item).strip() for item in items if str(item).strip())
    raise TypeError(f"unsupported setting type {hint!r}")


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


def _check_origins(s: Settings) -> str | None:
    bad = [o for o in s.cors_origins if o != "*" and not _ORIGIN_RE.fullmatch(o)]
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
        return f"training_instance_type {s.training_instance_type!r} must look like ml.g4dn.xlarge"
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
    _check_origins,
    _check_prefixes,
    _check_training,
    _check_operations,
    _check_bulk,
)
