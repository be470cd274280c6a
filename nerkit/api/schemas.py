"""Request and response bodies of the HTTP API.

Requests are validated strictly (no string-to-number coercion, unknown fields refused) so a
client's mistake is reported instead of guessed at. The per-deployment limits (MAX_TEXTS,
MAX_TEXT_CHARS, MAX_TOTAL_CHARS) come in through the validation context, so every violation,
limits included, is reported the same way with the location of the offending value. What only
the model can judge (entity types, text the tokenizer cannot take) is checked by the engine.
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

from nerkit.decoding import Entity

Aggregation = Literal["simple", "first", "average", "max"]
Decoding = Literal["viterbi", "argmax"]
# Scores are reported to 4 decimals: finer digits are noise for a softmax over a small model
# and only make responses longer.
SCORE_DECIMALS = 4


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


Text = Annotated[str, AfterValidator(_check_text)]


class EntitiesRequest(BaseModel):
    """``text`` or ``texts`` (exactly one), and how to turn token scores into entities."""

    model_config = ConfigDict(extra="forbid", strict=True)

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
    labels: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Keep only these entity types (e.g. PER, LOC); see GET /v1/model.",
    )
    min_score: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Drop entities scoring below this."
    )

    @field_validator("texts", mode="before")
    @classmethod
    def _count_texts(cls, value: Any, info: ValidationInfo) -> Any:
        # Checked before the items so an oversized batch is refused without scanning it.
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

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not label.strip() for label in value):
            raise PydanticCustomError("empty_label", "labels must be non-empty entity types")
        return value

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
        "failed (store_unavailable, no_live_model, load_failed); the model that was already "
        "loaded keeps serving. Details are in the logs only.",
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
