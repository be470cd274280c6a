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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from nerkit.store.uri import parse_model_uri

# 64 texts x 20,000 characters of 3-byte UTF-8 is ~3.8 MB of JSON: the default body limit
# admits the default per-text limits and stays under Lambda's 6 MB synchronous payload limit.
DEFAULT_MAX_BODY_BYTES = 4 << 20
# The request's time budget: API Gateway gives up after 29 s. The int8 MiniLM runs one window
# of 256 tokens per ONNX call: ~75 ms on one quiet x86 core (115 ms measured on a loaded
# 2-core machine, where a 15-token sentence took 9 ms against the ~6 ms of docs/DEPLOY.md).
# A window adds ~190 new tokens (a quarter overlaps the previous one), so ~0.4-0.6 ms per
# token; tokenizing and decoding add ~2%. English is ~0.23 tokens per character: 30,000
# characters are ~7,000 tokens, ~3-4 s. Adversarial text (punctuation, digits, CJK, emoji)
# approaches 1 token per character: ~30,000 tokens, ~12-19 s, which still leaves room for
# a cold start's model load. MAX_TEXTS x MAX_TEXT_CHARS alone (1.28M characters) would allow
# minutes. Raise it together with the Lambda's memory (NER_THREADS) or for smaller models.
DEFAULT_MAX_TOTAL_CHARS = 30_000
# The response's size budget: Lambda returns at most 6 MB, with API Gateway's body inside an
# escaped JSON string. An entity takes at most ~110 bytes there besides its word, and the
# words of all entities are non-overlapping slices of at most MAX_TOTAL_CHARS characters
# (<= 12 bytes each, as the \u escapes of a surrogate pair): 20,000 x 110 B + 30,000 x 12 B
# is ~2.6 MB, and stays under 6 MB for MAX_TOTAL_CHARS up to ~300,000.
DEFAULT_MAX_ENTITIES = 20_000
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
    # Characters of all texts of one request together, refused (422) before inference.
    max_total_chars: Annotated[int, Field(alias="MAX_TOTAL_CHARS", ge=1)] = DEFAULT_MAX_TOTAL_CHARS
    # Entities of one response; those past it are dropped and their text marked truncated.
    max_entities: Annotated[int, Field(alias="MAX_ENTITIES", ge=1)] = DEFAULT_MAX_ENTITIES
    # Load the model while the app is built (Lambda's init phase, which runs at full CPU)
    # instead of on the first request; from_env turns it on by default inside Lambda.
    preload_model: Annotated[bool, Field(alias="PRELOAD_MODEL")] = False
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
        values: dict[str, Any] = {
            name: environ[name] for name in names if environ.get(name, "").strip()
        }
        values.setdefault("PRELOAD_MODEL", bool(environ.get("AWS_LAMBDA_FUNCTION_NAME")))
        per_text = str(values.get("MAX_TEXT_CHARS", "")).strip()
        if "MAX_TOTAL_CHARS" not in values and per_text.isdigit():
            # Unset, the request budget grows to admit one text of the configured maximum.
            values["MAX_TOTAL_CHARS"] = max(DEFAULT_MAX_TOTAL_CHARS, int(per_text))
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
