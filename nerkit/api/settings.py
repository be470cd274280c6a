"""Serving configuration, read once from the environment and validated at startup.

Invalid values stop the process at import (a Lambda init error naming the variable) instead
of surfacing as odd behaviour on some later request. ``MODEL_URI`` is the exception: importing
the app (tests, OpenAPI export) must not need a model, so a missing URI is reported like any
other unloadable model, by ``/ready`` and a 503 on prediction.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from nerkit.api.origins import ANY_ORIGIN, invalid_origins, is_allowed_origin
from nerkit.store.uri import parse_model_uri

# Admits MAX_TEXTS texts of MAX_TEXT_CHARS 3-byte characters as JSON, under Lambda's 6 MB
# synchronous payload limit.
DEFAULT_MAX_BODY_BYTES = 4 << 20
# Keeps the slowest request (about one token per character) inside API Gateway's 29 s with
# room for a cold start; docs/ARCHITECTURE.md ("Request budgets") has the arithmetic.
DEFAULT_MAX_TOTAL_CHARS = 30_000
# Keeps the largest response under Lambda's 6 MB; docs/ARCHITECTURE.md has the arithmetic.
DEFAULT_MAX_ENTITIES = 20_000


class SettingsError(ValueError):
    """The environment holds an invalid serving configuration."""


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source, reading ``environ`` instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class Settings(BaseSettings):
    """Every knob of the serving app; field aliases are the environment variable names.

    Built by keyword (tests, scripts) it reads nothing else; :meth:`from_env` reads the
    environment through pydantic-settings.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        case_sensitive=True,
        # A blank variable means "use the default", as infrastructure templates often set
        # every variable and leave the unused ones empty.
        env_ignore_empty=True,
    )

    model_uri: Annotated[str, Field(alias="MODEL_URI")] = ""
    model_cache_dir: Annotated[Path, Field(alias="MODEL_CACHE_DIR")] = Path("/tmp/nerkit-model")
    # 0 turns refreshing off: a warm environment keeps the model it loaded first.
    model_refresh_seconds: Annotated[float, Field(alias="MODEL_REFRESH_SECONDS", ge=0)] = 60.0
    ner_threads: Annotated[int, Field(alias="NER_THREADS", ge=1, le=64)] = 1
    max_text_chars: Annotated[int, Field(alias="MAX_TEXT_CHARS", ge=1)] = 20_000
    max_texts: Annotated[int, Field(alias="MAX_TEXTS", ge=1)] = 64
    max_body_bytes: Annotated[int, Field(alias="MAX_BODY_BYTES", ge=1)] = DEFAULT_MAX_BODY_BYTES
    # Characters of all texts of one request together, refused (422) before inference.
    max_total_chars: Annotated[int, Field(alias="MAX_TOTAL_CHARS", ge=1)] = DEFAULT_MAX_TOTAL_CHARS
    # Entities of one response; those past it are dropped and their text marked truncated.
    max_entities: Annotated[int, Field(alias="MAX_ENTITIES", ge=1)] = DEFAULT_MAX_ENTITIES
    # Load the model while the app is built (Lambda's init phase, which runs at full CPU)
    # instead of on the first request; on by default inside Lambda.
    preload_model: Annotated[bool, Field(alias="PRELOAD_MODEL")] = False
    enable_page: Annotated[bool, Field(alias="ENABLE_PAGE")] = True
    log_text: Annotated[bool, Field(alias="LOG_TEXT")] = False
    # json: one JSON line per request that CloudWatch reads as metrics (Lambda); text: a
    # short human-readable line (``make run`` sets it).
    log_format: Annotated[Literal["json", "text"], Field(alias="LOG_FORMAT")] = "json"
    # Browser origins allowed to call the API cross-site ("*" for any), comma-separated; the
    # page itself is same-origin and needs none.
    cors_origins: Annotated[tuple[str, ...], NoDecode, Field(alias="CORS_ORIGINS")] = ()
    # The base path of an API Gateway custom-domain mapping ("/ner"); stages are detected
    # from the event, so this is only needed for custom domains.
    api_base_path: Annotated[str, Field(alias="API_BASE_PATH")] = ""
    # The admin routes (nerkit.api.admin): mounted only where this is on (the admin function).
    enable_admin: Annotated[bool, Field(alias="ENABLE_ADMIN")] = False
    # API Gateway ids (not values) of the admin API keys (REST front door), comma-separated.
    admin_key_ids: Annotated[tuple[str, ...], NoDecode, Field(alias="ADMIN_KEY_IDS")] = ()
    # The OAuth scope that makes a JWT an admin's (HTTP API front door).
    admin_scope: Annotated[str, Field(alias="ADMIN_SCOPE")] = "nerkit/admin"
    # The training pipeline the admin routes start, and where its inputs must live.
    state_machine_arn: Annotated[str, Field(alias="STATE_MACHINE_ARN")] = ""
    datasets_uri: Annotated[str, Field(alias="DATASETS_URI")] = ""
    training_job_prefix: Annotated[str, Field(alias="TRAINING_JOB_PREFIX")] = ""
    # Where browsers POST dataset uploads (the bucket's endpoint): the page's CSP allows it.
    upload_url: Annotated[str, Field(alias="UPLOAD_URL")] = ""
    max_upload_bytes: Annotated[int, Field(alias="MAX_UPLOAD_BYTES", ge=1, le=5 << 30)] = 1 << 30
    # Set by the Lambda runtime, not by operators: only read to default PRELOAD_MODEL.
    lambda_function_name: Annotated[str, Field(alias="AWS_LAMBDA_FUNCTION_NAME")] = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keyword arguments only: the environment is read by from_env, once, at startup.
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``environ`` (default ``os.environ``); raises ``SettingsError``."""
        values = _Environ(cls, os.environ if environ is None else environ)()
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc']))}={error.get('input')!r}: {error['msg']}"
                for error in exc.errors()
            )
            raise SettingsError(f"invalid serving configuration: {problems}") from None

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        # Whitespace-only counts as blank too.
        values = {
            name: value
            for name, value in values.items()
            if not (isinstance(value, str) and not value.strip())
        }
        if "PRELOAD_MODEL" not in values and "preload_model" not in values:
            inside_lambda = values.get("AWS_LAMBDA_FUNCTION_NAME") or values.get(
                "lambda_function_name"
            )
            values["PRELOAD_MODEL"] = bool(inside_lambda)
        per_text = str(values.get("MAX_TEXT_CHARS", "")).strip()
        if "MAX_TOTAL_CHARS" not in values and per_text.isdigit():
            # Unset, the request budget grows to admit one text of the configured maximum.
            values["MAX_TOTAL_CHARS"] = max(DEFAULT_MAX_TOTAL_CHARS, int(per_text))
        return values

    @field_validator("model_uri")
    @classmethod
    def _check_model_uri(cls, value: str) -> str:
        value = value.strip()
        if value:
            parse_model_uri(value)  # a ConfigError is a ValueError: pydantic reports it
        return value

    @field_validator("max_total_chars")
    @classmethod
    def _check_total(cls, value: int, info: ValidationInfo) -> int:
        # Else a text within MAX_TEXT_CHARS could still never be sent.
        per_text = info.data.get("max_text_chars")
        if per_text is not None and value < per_text:
            raise ValueError(f"must be at least MAX_TEXT_CHARS ({per_text})")
        return value

    @field_validator("cors_origins", "admin_key_ids", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = invalid_origins(value)
        if bad:
            raise ValueError(f"{bad[0]!r} is not '*' or an origin like https://example.com")
        return value

    @field_validator("upload_url")
    @classmethod
    def _check_upload_url(cls, value: str) -> str:
        value = value.strip()
        origin = _origin_of(value)
        if value and (origin == ANY_ORIGIN or not is_allowed_origin(origin)):
            raise ValueError("must be an http(s) URL like https://bucket.s3.amazonaws.com/")
        return value

    @property
    def upload_origin(self) -> str:
        """The origin of ``upload_url`` (``""`` when unset): the page may send files there."""
        return _origin_of(self.upload_url)

    @model_validator(mode="after")
    def _check_admin(self) -> Settings:
        if not self.enable_admin:
            return self
        missing = [
            alias
            for alias, value in (
                ("MODEL_URI", self.model_uri),
                ("STATE_MACHINE_ARN", self.state_machine_arn),
                ("DATASETS_URI", self.datasets_uri),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"ENABLE_ADMIN needs {', '.join(missing)}")
        if not self.datasets_uri.startswith("s3://"):
            raise ValueError("DATASETS_URI must be s3://bucket/prefix")
        return self

    @field_validator("api_base_path")
    @classmethod
    def _check_base_path(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and (not value.startswith("/") or "//" in value):
            raise ValueError("must be a path like /ner (or empty)")
        return value


def _origin_of(url: str) -> str:
    """``https://host:port`` of ``https://host:port/path`` (a path-style bucket URL has one)."""
    return "/".join(url.split("/", 3)[:3])
