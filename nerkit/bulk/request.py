"""A run request: what ``nerkit-bulk start`` sends as the execution input, and how the plan
step (and ``nerkit-bulk run``) turns it into a ``Job``. One place checks it for both."""

from __future__ import annotations

from typing import Any

from nerkit.bulk.plan import EntityOptions, Job, JobError

# The execution input's keys (camelCase, as Step Functions inputs usually are).
_REQUEST_KEYS = {
    "input",
    "output",
    "modelVersion",
    "format",
    "idField",
    "textField",
    "maxTextChars",
    "options",
    "shardBytes",
}
_OPTION_KEYS = {"aggregation", "decoding", "labels", "minScore", "maxEntities"}


def build_request(
    *,
    input: str,
    output: str,
    model_version: str | None = None,
    format: str = "auto",
    id_field: str = "id",
    text_field: str = "text",
    max_text_chars: int | None = None,
    aggregation: str = "simple",
    decoding: str = "viterbi",
    labels: list[str] | None = None,
    min_score: float = 0.0,
    max_entities: int | None = None,
    shard_bytes: int | None = None,
) -> dict[str, Any]:
    options: dict[str, Any] = {"aggregation": aggregation, "decoding": decoding}
    if labels:
        options["labels"] = list(labels)
    if min_score:
        options["minScore"] = min_score
    if max_entities is not None:
        options["maxEntities"] = max_entities
    request: dict[str, Any] = {
        "input": input,
        "output": output,
        "format": format,
        "idField": id_field,
        "textField": text_field,
        "options": options,
    }
    optional = {
        "modelVersion": model_version,
        "maxTextChars": max_text_chars,
        "shardBytes": shard_bytes,
    }
    request.update({key: value for key, value in optional.items() if value is not None})
    job_from_request(request, model_uri="check-only", model_version=None)  # fail early
    return request


def job_from_request(request: dict[str, Any], *, model_uri: str, model_version: str | None) -> Job:
    """The job of ``request`` with the model the run pinned."""
    if not isinstance(request, dict):
        raise JobError("the run request must be a JSON object")
    unknown = sorted(set(request) - _REQUEST_KEYS)
    if unknown:
        raise JobError(f"unknown request fields: {', '.join(unknown)}")
    for name in ("input", "output"):
        if not isinstance(request.get(name), str) or not request[name]:
            raise JobError(f"the request needs {name!r}: an s3:// URI")
    options = request.get("options") or {}
    if not isinstance(options, dict) or set(options) - _OPTION_KEYS:
        raise JobError(f"options may hold only {', '.join(sorted(_OPTION_KEYS))}")
    try:
        labels = options.get("labels")
        entities = EntityOptions(
            aggregation=options.get("aggregation", "simple"),
            decoding=options.get("decoding", "viterbi"),
            labels=tuple(labels) if labels is not None else None,
            min_score=float(options.get("minScore", 0.0)),
            max_entities=int(options.get("maxEntities", EntityOptions.max_entities)),
        )
        extra = (
            {"max_text_chars": int(request["maxTextChars"])} if "maxTextChars" in request else {}
        )
        return Job(
            input=request["input"],
            output=request["output"],
            model_uri=model_uri,
            model_version=model_version,
            format=request.get("format", "auto"),
            id_field=request.get("idField", "id"),
            text_field=request.get("textField", "text"),
            entities=entities,
            **extra,
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, JobError):
            raise
        raise JobError(f"invalid request: {exc}") from None


def shard_bytes_of(request: dict[str, Any], default: int) -> int:
    value = request.get("shardBytes", default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise JobError("shardBytes must be a positive integer")
    return value
