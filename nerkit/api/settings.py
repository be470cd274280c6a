"""Serving configuration, read once from the environment and validated at startup.

Invalid values stop the process at import (a Lambda init error naming the variable) instead
of surfacing as odd behaviour on some later request. ``MODEL_URI`` is the exception: importing
the app (tests, OpenAPI export) must not need a model, so a missing URI is reported like any
other unloadable model, by ``/ready`` and a 503 on prediction.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# 64 texts x 20,000 characters of 3-byte UTF-8 is ~3.8 MB of JSON: the default body limit
# admits the default text limits and stays under Lambda's 6 MB synchronous payload limit.
DEFAULT_MAX_BODY_BYTES = 4 << 20
_ORIGIN_RE = re.compile(r"https?://[^/\s?#]+")


class SettingsError(ValueError):
    """The environment holds an invalid serving configuration."""


class Settings(BaseModel):
    """Every knob of the serving app; field aliases are the environment variable names."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True)

    model_uri: Annotated[str, Field(alias="MODEL_URI")] = ""
    model_cache_dir: Annotated[Path, Field(alias="MODEL_CACHE_DIR")] = Path("/tmp/nerkit-model")
    # 0 turns refreshing off: a warm environment keeps the model it loaded first.
    model_refresh_seconds: Annotated[float, Field(alias="MODEL_REFRESH_SECONDS", ge=0)] = 60.0
    ner_threads: Annotated[int, Field(alias="NER_THREADS", ge=1, le=64)] = 1
    max_text_chars: Annotated[int, Field(alias="MAX_TEXT_CHARS", ge=1)] = 20_000
    max_texts: Annotated[int, Field(alias="MAX_TEXTS", ge=1)] = 64
    max_body_bytes: Annotated[int, Field(alias="MAX_BODY_BYTES", ge=1)] = DEFAULT_MAX_BODY_BYTES
    enable_page: Annotated[bool, Field(alias="ENABLE_PAGE")] = True
    log_text: Annotated[bool, Field(alias="LOG_TEXT")] = False
    # Browser origins allowed to call the API cross-site ("*" for any); the page itself is
    # same-origin and needs none.
    cors_origins: Annotated[tuple[str, ...], Field(alias="CORS_ORIGINS")] = ()
    # The base path of an API Gateway custom-domain mapping ("/ner"); stages are detected
    # from the event, so this is only needed for custom domains.
    api_base_path: Annotated[str, Field(alias="API_BASE_PATH")] = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        names = [field.alias for field in cls.model_fields.values() if field.alias]
        # A blank variable means "use the default", as infrastructure templates often set
        # every variable and leave the unused ones empty.
        values = {name: environ[name] for name in names if environ.get(name, "").strip()}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc']))}={error.get('input')!r}: {error['msg']}"
                for error in exc.errors()
            )
            raise SettingsError(f"invalid serving configuration: {problems}") from None

    @field_validator("model_uri")
    @classmethod
    def _check_model_uri(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("s3://") and not value.removeprefix("s3://").split("/")[0]:
            raise ValueError("an s3:// URI needs a bucket: s3://bucket/prefix")
        if "://" in value and not value.startswith("s3://"):
            raise ValueError("use s3://bucket/prefix, s3://bucket/key.tar.gz or a local path")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(origin.strip() for origin in value.split(",") if origin.strip())
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not _ORIGIN_RE.fullmatch(origin):
                raise ValueError(f"{origin!r} is not '*' or an origin like https://example.com")
        return value

    @field_validator("api_base_path")
    @classmethod
    def _check_base_path(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and (not value.startswith("/") or "//" in value):
            raise ValueError("must be a path like /ner (or empty)")
        return value
