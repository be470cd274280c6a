"""Request and response bodies of the HTTP API.

Requests are validated strictly (no string-to-number coercion, unknown fields refused) so a
client's mistake is reported instead of guessed at. The per-deployment limits (MAX_TEXTS,
MAX_TEXT_CHARS, MAX_TOTAL_CHARS) come in through the validation context, so every violation,
limits included, is reported the same way with the location of the offending value. What only
the model can judge (entity types, text the tokenizer cannot take) is checked by the engine.

The published JSON Schema (``entities_request_schema``) states every rule JSON Schema can
express, this deployment's limits included, so a client generated from it sends valid requests.
It cannot express the total-characters sum (MAX_TOTAL_CHARS), the served model's entity types
(they change with the model) or that text must be valid Unicode (a lone surrogate is a JSON
string like any other).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from nerkit.decoding import Aggregation, Decoding, Entity

# Scores are reported to 4 decimals: finer digits are noise for a softmax over a small model
# and only make responses longer.
SCORE_DECIMALS = 4
# A model has few entity types (CoNLL-2003 4, OntoNotes 18, Few-NERD's fine-grained set 66),
# so a longer ``labels`` list only repeats or invents names; the bound also bounds the work
# and the error details one request can cause.
MAX_LABELS = 100
# Entity type names are short (PER, WORK_OF_ART); an unknown one is quoted in its error.
MAX_LABEL_CHARS = 64
# "Holds a character that is not whitespace", for the published schema: Python's whitespace
# (str.isspace, which the validators' strip() uses) spelled out, because a regex engine's \s
# differs from it and between engines (ECMA-262's includes U+FEFF, Python's U+001C-U+001F).
NON_BLANK = r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_NON_BLANK_SCHEMA = {"pattern": NON_BLANK}
# The rules the published schema cannot state (see above), as the types of their 422 details.
UNPUBLISHED_RULES = frozenset({"too_much_text", "unknown_label", "invalid_text"})


def _check_text(text: str, info: ValidationInfo) -> str:
    if not text.strip():
        raise PydanticCustomError("empty_text", "text must not be empty or whitespace only")
    limit = (info.context or {}).get("max_text_chars")
    if limit is not None and len(text) > limit:
        raise PydanticCustomError(
            "text_too_long",
            "text is {length} characters long; the limit is {limit}",
            {"length": len(text), "limit": limit},
        )
    return text


Text = Annotated[str, AfterValidator(_check_text), Field(json_schema_extra=_NON_BLANK_SCHEMA)]


def _check_label(label: str) -> str:
    if not label.strip():
        raise PydanticCustomError("empty_label", "labels must be non-empty entity types")
    return label


Label = Annotated[
    str,
    Field(max_length=MAX_LABEL_CHARS, json_schema_extra=_NON_BLANK_SCHEMA),
    AfterValidator(_check_label),
]


def check_batch(value: Any, info: ValidationInfo) -> Any:
    """MAX_TEXTS and MAX_TOTAL_CHARS for a list of texts, checked before its items so that
    an oversized batch is refused without scanning it."""
    if not isinstance(value, list):
        return value
    context = info.context or {}
    limit = context.get("max_texts")
    if limit is not None and len(value) > limit:
        raise PydanticCustomError(
            "too_many_texts",
            "at most {limit} texts per request, got {count}",
            {"limit": limit, "count": len(value)},
        )
    # The request's time budget (see MAX_TOTAL_CHARS); a single text is bounded by
    # MAX_TEXT_CHARS, which settings keep at or below it.
    total_limit = context.get("max_total_chars")
    total = sum(len(text) for text in value if isinstance(text, str))
    if total_limit is not None and total > total_limit:
        raise PydanticCustomError(
            "too_much_text",
            "the texts are {total} characters together; the limit is {limit}",
            {"total": total, "limit": total_limit},
        )
    return value


class EntitiesRequest(BaseModel):
    """``text`` or ``texts`` (exactly one), and how to turn token scores into entities."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        # Exactly one of them; null stands for "not given", as validation treats it.
        json_schema_extra={
            "oneOf": [
                {"required": ["text"], "properties": {"text": {"type": "string"}}},
                {"required": ["texts"], "properties": {"texts": {"type": "array"}}},
            ]
        },
    )

    text: Text | None = Field(default=None, description="One text to tag.")
    texts: list[Text] | None = Field(
        default=None, min_length=1, description="Several texts to tag in one batch."
    )
    aggregation: Aggregation = Field(
        default="simple",
        description="How word pieces become entities (the transformers pipeline strategies).",
    )
    decoding: Decoding = Field(
        default="viterbi",
        description=(
            "viterbi: the most likely valid BIO label sequence (no entity starts mid-way); "
            "argmax: each token's own best label, as the transformers pipeline does."
        ),
    )
    labels: list[Label] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_LABELS,
        description="Keep only these entity types (e.g. PER, LOC; repeats count once); "
        "see GET /v1/model.",
    )
    min_score: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Drop entities scoring below this."
    )

    @field_validator("texts", mode="before")
    @classmethod
    def _count_texts(cls, value: Any, info: ValidationInfo) -> Any:
        return check_batch(value, info)

    @model_validator(mode="after")
    def _one_input(self) -> Self:
        if (self.text is None) == (self.texts is None):
            raise PydanticCustomError(
                "text_or_texts", "give exactly one of 'text' (a string) or 'texts' (a list)"
            )
        return self

    @property
    def inputs(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


def entities_request_schema(max_texts: int, max_text_chars: int) -> dict[str, Any]:
    """``EntitiesRequest``'s JSON Schema with a deployment's limits (MAX_TEXTS, MAX_TEXT_CHARS)."""
    schema = EntitiesRequest.model_json_schema()
    properties = schema["properties"]
    _given(properties["text"], "string")["maxLength"] = max_text_chars
    texts = _given(properties["texts"], "array")
    texts["maxItems"] = max_texts
    texts["items"]["maxLength"] = max_text_chars
    return schema


def _given(optional: dict[str, Any], json_type: str) -> dict[str, Any]:
    """The non-null choice of an optional field's ``anyOf``."""
    return next(choice for choice in optional["anyOf"] if choice.get("type") == json_type)


class EntityOut(BaseModel):
    """One entity; ``word == text[start:end]`` with offsets in Unicode code points."""

    entity_group: str = Field(description="The entity type, e.g. PER.")
    score: float = Field(description=f"Confidence in [0, 1], rounded to {SCORE_DECIMALS} places.")
    word: str
    start: int = Field(description="Offset of the first character (code points).")
    end: int = Field(description="Offset after the last character (code points).")

    @classmethod
    def of(cls, entity: Entity) -> EntityOut:
        """The engine's entity as the API (and bulk output) reports it."""
        return cls(
            entity_group=entity.entity_group,
            score=round(float(entity.score), SCORE_DECIMALS),
            word=entity.word,
            start=entity.start,
            end=entity.end,
        )


class TextEntities(BaseModel):
    entities: list[EntityOut]
    truncated: bool = Field(
        default=False,
        description="True when entities of this text were left out because the response "
        "reached its entity limit (MAX_ENTITIES); those kept are the first ones by position.",
    )


class EntitiesResponse(TextEntities):
    """The answer to a request with ``text``."""

    model_version: str
    took_ms: float = Field(description="Inference time on the server, in milliseconds.")


class BatchEntitiesResponse(BaseModel):
    """The answer to a request with ``texts``: one result per text, in order."""

    results: list[TextEntities]
    truncated: bool = Field(
        default=False, description="True when any result is truncated (see MAX_ENTITIES)."
    )
    model_version: str
    took_ms: float = Field(description="Inference time on the server, in milliseconds.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    model_version: str
    refresh_error: str | None = Field(
        default=None,
        description="Set while the LIVE version cannot be served: why the last check or load "
        "failed (store_unavailable, no_live_model, load_failed, failed_trial_run); the model "
        "that was already loaded keeps serving. Details are in the logs only.",
    )


class ModelInfo(BaseModel):
    """What the served model is; never where it is stored."""

    name: str
    version: str
    entity_types: list[str]
    labels: list[str] = Field(description="The BIO2 labels of the model's output columns.")
    max_seq_length: int
    base_model: str | None = None
    created_at: str | None = None
    metrics: dict[str, Any] | None = None


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Where in the request the problem is.")
    type: str
    msg: str


class Error(BaseModel):
    code: str = Field(description="Machine-readable, e.g. validation_error, model_unavailable.")
    message: str
    details: list[ErrorDetail] = []
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: Error
