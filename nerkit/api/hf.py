"""``POST /v1/hf/token-classification``: the Hugging Face Inference API's token-classification
contract, which Inference Endpoints and the SageMaker Hugging Face toolkit speak too.

Request ``{"inputs": str | [str], "parameters": {"aggregation_strategy", "ignore_labels",
"stride"}}``; answer a bare list of entities (a list of lists for a list of inputs). It runs
the same engine call, limits and error envelope as ``POST /v1/entities``
(``nerkit.api.inference``); only the translation to and from that contract lives here:

- ``aggregation_strategy`` ``simple`` (the default, as the Inference API documents),
  ``first``, ``average`` or ``max`` give ``{entity_group, score, word, start, end}``; ``none``
  gives every token as ``{entity, score, index, word, start, end}``, as the pipeline does.
- Labels are chosen per token by argmax, as the transformers pipeline does, so a client gets
  what it got from Hugging Face; ``POST /v1/entities`` defaults to ``viterbi`` instead.
- ``ignore_labels`` (default ``["O"]``) drops entities whose ``entity_group`` is listed, or
  with ``none`` tokens whose ``entity`` (``B-PER``, ``O``) is; leaving ``O`` out returns the
  ``O`` groups (or tokens) too, as the pipeline does.
- ``stride`` is accepted and changes nothing: long texts are always cut into windows whose
  overlap is fixed when the model loads, and each token is scored in the window where it has
  the most context.
- MAX_ENTITIES still caps a response; the bare list has no room for ``truncated``, so a cut
  answer carries the header ``X-Entities-Truncated: true``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from nerkit.api.body import read_json
from nerkit.api.errors import ApiError
from nerkit.api.inference import BAD_REQUEST, UNAVAILABLE, app_settings, infer, validated
from nerkit.api.schemas import SCORE_DECIMALS, EntityOut, Text, check_batch
from nerkit.decoding import OUTSIDE, Entity, Token
from nerkit.engine import NerEngine

PATH = "/v1/hf/token-classification"
TRUNCATED_HEADER = "x-entities-truncated"
DECODING = "argmax"
Strategy = Literal["none", "simple", "first", "average", "max"]
# ignore_labels names labels, so it never needs to be longer than a model's label list.
MAX_IGNORE_LABELS = 256
_ONE, _MANY = "str", "list"


def _inputs_kind(value: Any) -> str | None:
    return _MANY if isinstance(value, list) else _ONE if isinstance(value, str) else None


Inputs = Annotated[
    Annotated[Text, Tag(_ONE)]
    | Annotated[list[Text], Field(min_length=1), BeforeValidator(check_batch), Tag(_MANY)],
    Discriminator(
        _inputs_kind,
        custom_error_type="inputs_type",
        custom_error_message="inputs must be a string or a list of strings",
    ),
]


def _integral(value: Any) -> Any:
    # JSON Schema's (and JSON's) integer includes 5.0; strict validation would refuse it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


class HfParameters(BaseModel):
    """The pipeline's parameters for token classification; any other name is refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    aggregation_strategy: Strategy = Field(
        default="simple",
        description="none: every token with its label (entity, index); simple: neighbouring "
        "tokens of one type merged; first/average/max: whole words, labelled by their first "
        "token, their tokens' mean scores or their most confident token.",
    )
    ignore_labels: list[str] = Field(
        default=[OUTSIDE],
        max_length=MAX_IGNORE_LABELS,
        description="Leave out entities of these groups (with none: tokens of these labels).",
    )
    stride: Annotated[int | None, BeforeValidator(_integral)] = Field(
        default=None,
        ge=0,
        description="Accepted for compatibility; results are the same for any value (long "
        "texts are always split into windows with a fixed overlap).",
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        # The pipeline reads a parameter given as None as not given.
        if isinstance(value, dict):
            # Only for its own names: an unknown one is refused, whatever its value.
            return {
                name: given
                for name, given in value.items()
                if given is not None or name not in cls.model_fields
            }
        return value


class HfRequest(BaseModel):
    """The Inference API's token-classification request."""

    model_config = ConfigDict(extra="forbid", strict=True)

    inputs: Inputs = Field(description="One text, or a list of texts (answered in order).")
    parameters: HfParameters | None = None

    @property
    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)

    @property
    def options(self) -> HfParameters:
        return self.parameters or HfParameters()


class HfToken(BaseModel):
    """One token under ``aggregation_strategy: none``; ``word == text[start:end]``."""

    entity: str = Field(description="The token's label, e.g. B-PER.")
    score: float
    index: int = Field(description="The token's position among the text's tokens ([CLS] is 0).")
    word: str
    start: int
    end: int


Predict = Callable[[NerEngine, list[str]], Sequence[Sequence[Entity | Token]]]


def request_schema(max_texts: int, max_text_chars: int) -> dict[str, Any]:
    """``HfRequest``'s JSON Schema, self-contained (no ``$defs``), with a deployment's limits
    (MAX_TEXTS, MAX_TEXT_CHARS) and a parameter given as null allowed, as it is read."""
    schema = HfRequest.model_json_schema()
    parameters = schema.pop("$defs")["HfParameters"]
    for name, given in parameters["properties"].items():
        if not any(choice.get("type") == "null" for choice in given.get("anyOf", [])):
            meta = {
                key: given.pop(key) for key in ("default", "description", "title") if key in given
            }
            parameters["properties"][name] = {"anyOf": [given, {"type": "null"}], **meta}
    schema["properties"]["parameters"]["anyOf"][0] = parameters
    one, many = schema["properties"]["inputs"]["oneOf"]
    one["maxLength"] = max_text_chars
    many["maxItems"] = max_texts
    many["items"]["maxLength"] = max_text_chars
    return schema


def _predict(body: HfRequest) -> Predict:
    """The engine call for ``body``: entities or tokens, without the ignored labels."""
    options = body.options
    ignored = set(options.ignore_labels)

    def tokens(engine: NerEngine, texts: list[str]) -> list[list[Token]]:
        found = engine.predict_tokens(texts, decoding=DECODING)
        return [[token for token in text if token.entity not in ignored] for text in found]

    def entities(engine: NerEngine, texts: list[str]) -> list[list[Entity]]:
        return engine.predict(
            texts,
            aggregation=options.aggregation_strategy,
            decoding=DECODING,
            labels=[name for name in engine.entity_types if name not in ignored],
            outside=OUTSIDE not in ignored,
        )

    return tokens if options.aggregation_strategy == "none" else entities


def _out(item: Entity | Token) -> dict[str, Any]:
    if isinstance(item, Entity):
        return EntityOut.of(item).model_dump()
    return HfToken(
        entity=item.entity,
        score=round(item.score, SCORE_DECIMALS),
        index=item.index,
        word=item.word,
        start=item.start,
        end=item.end,
    ).model_dump()


def _without_tags(error: ApiError) -> ApiError:
    # The union's branch names are pydantic's bookkeeping, not places in the request.
    for detail in error.details:
        loc = detail["loc"]
        if loc[:1] == ["inputs"] and loc[1:2] in ([_ONE], [_MANY]):
            detail["loc"] = ["inputs", *loc[2:]]
    return error


_EXAMPLE_TEXT = "Angela Merkel met Tim Cook of Apple in Berlin."
router = APIRouter()


@router.post(
    PATH,
    tags=["Hugging Face compatible"],
    summary="Token classification as the Hugging Face Inference API speaks it",
    description=(
        "For clients written for the Hugging Face Inference API, Inference Endpoints or the "
        "SageMaker Hugging Face toolkit (e.g. `huggingface_hub.InferenceClient("
        'base_url=".../v1/hf/token-classification").token_classification(text)`). '
        "The answer is a bare list of entities, or a list of lists when `inputs` is a list. "
        "Default `aggregation_strategy` is `simple`; labels are chosen per token by argmax as "
        "the transformers pipeline does (`POST /v1/entities` defaults to viterbi). "
        "`stride` is accepted and changes nothing. Same limits, API key and errors as "
        "`POST /v1/entities`; a response cut at MAX_ENTITIES carries "
        "`X-Entities-Truncated: true`."
    ),
    response_model=list[EntityOut | HfToken] | list[list[EntityOut | HfToken]],
    responses={**BAD_REQUEST, **UNAVAILABLE},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": HfRequest.model_json_schema(),
                    "examples": {
                        "one text": {"value": {"inputs": _EXAMPLE_TEXT}},
                        "batch, per word": {
                            "value": {
                                "inputs": [_EXAMPLE_TEXT, "Paris is in France."],
                                "parameters": {"aggregation_strategy": "first"},
                            }
                        },
                        "tokens": {
                            "value": {
                                "inputs": _EXAMPLE_TEXT,
                                "parameters": {"aggregation_strategy": "none"},
                            }
                        },
                    },
                }
            },
        }
    },
)
async def token_classification(request: Request) -> JSONResponse:
    settings = app_settings(request)
    payload = await read_json(request)
    try:
        body = await validated(request, HfRequest, payload, settings)
    except ApiError as exc:
        raise _without_tags(exc) from None
    single = isinstance(body.inputs, str)
    inference = await infer(
        request,
        settings,
        body.texts,
        _predict(body),
        lambda index: ["inputs"] if single else ["inputs", index],
    )
    answers = [[_out(item) for item in found] for found, _ in inference.results]
    truncated = any(cut for _, cut in inference.results)
    return JSONResponse(
        answers[0] if single else answers,
        headers={TRUNCATED_HEADER: "true"} if truncated else None,
    )
