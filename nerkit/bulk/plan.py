"""A run's job description and its shards: byte ranges of input objects, cut at line ends.

An object no larger than ``shard_bytes`` is one shard and is not read here. A larger one is
streamed once to find, after every ``shard_bytes``, the next line end, and to count lines
(plain-text ids and error reports give line numbers). A gzip object cannot be read from the
middle, so it is always one shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from nerkit.bulk.locations import Location
from nerkit.bulk.records import FORMATS, RecordOptions, format_for, is_gzip
from nerkit.decoding import AGGREGATIONS, DECODINGS

# A worker does ~150 CoNLL sentences (~14 KB of text) per second per vCPU: 4 MiB is a few
# minutes of work, well inside one 15-minute invocation, yet few enough shards that the
# per-shard costs (a Lambda request, state transitions, S3 requests) stay small.
DEFAULT_SHARD_BYTES = 4 << 20


class JobError(ValueError):
    """The job cannot run as asked; the message says what to fix."""


@dataclass(frozen=True)
class EntityOptions:
    """What ``POST /v1/entities`` takes besides the texts, with its defaults."""

    aggregation: str = "simple"
    decoding: str = "viterbi"
    labels: tuple[str, ...] | None = None
    min_score: float = 0.0
    max_entities: int = 20_000

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise JobError(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
        if self.decoding not in DECODINGS:
            raise JobError(f"decoding must be one of {', '.join(DECODINGS)}")
        if not 0.0 <= self.min_score <= 1.0:
            raise JobError("min_score must be within 0..1")
        if self.labels is not None and (not self.labels or not all(self.labels)):
            raise JobError("labels must be a non-empty list of entity types")
        if self.max_entities < 1:
            raise JobError("max_entities must be at least 1")


@dataclass(frozen=True)
class Job:
    """Everything a worker needs besides its shard; JSON in the shard manifest."""

    input: str
    output: str
    model_uri: str
    # Pinned when the run starts: every shard loads exactly this version (None: the model
    # URI names one fixed artifact).
    model_version: str | None
    format: str = "auto"
    id_field: str = "id"
    text_field: str = "text"
    max_text_chars: int = 100_000
    entities: EntityOptions = field(default_factory=EntityOptions)

    def __post_init__(self) -> None:
        if self.format not in ("auto", *FORMATS):
            raise JobError(f"format must be auto or one of {', '.join(FORMATS)}")
        if not self.id_field or not self.text_field or self.id_field == self.text_field:
            raise JobError("id_field and text_field must be two different non-empty names")
        if self.max_text_chars < 1:
            raise JobError("max_text_chars must be at least 1")
        if not self.model_uri:
            raise JobError("no model given")

    def record_options(self, uri: str) -> RecordOptions:
        return RecordOptions(
            format=format_for(uri, self.format),
            id_field=self.id_field,
            text_field=self.text_field,
            max_text_chars=self.max_text_chars,
        )

    def fingerprint(self) -> str:
        """What must match for a finished shard to count as done for this job."""
        settings = {**asdict(self), "input": None, "output": None}
        return hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        labels = data["entities"]["labels"]
        data["entities"]["labels"] = list(labels) if labels is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        try:
            entities = dict(data.get("entities") or {})
            if entities.get("labels") is not None:
                entities["labels"] = tuple(entities["labels"])
            return cls(**{**data, "entities": EntityOptions(**entities)})
        except TypeError as exc:
            raise JobError(f"invalid job: {exc}") from None


@dataclass(frozen=True)
class Shard:
    """Lines of ``uri`` from byte ``start`` (line ``first_line``) to ``end`` (exclusive;
    None: the end of the object, always so for gzip)."""

    id: str
    uri: str
    etag: str
    start: int
    end: int | None
    first_line: int
    gzip: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shard:
        return cls(**data)


def shard_id(uri: str, start: int) -> str:
    """Stable across runs for the same object and cut, so outputs overwrite."""
    return hashlib.sha256(f"{uri}\0{start}".encode()).hexdigest()[:20]


def plan(job: Job, source: Location, *, shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Shard]:
    """The shards of every input object, in input order (objects by name, then offset)."""
    if shard_bytes < 1:
        raise JobError("shard_bytes must be at least 1")
    shards: list[Shard] = []
    for obj in source.list_objects():
        if obj.size == 0:
            continue
        if is_gzip(obj.uri) or obj.size <= shard_bytes:
            shards.append(
                Shard(shard_id(obj.uri, 0), obj.uri, obj.etag, 0, None, 1, is_gzip(obj.uri))
            )
            continue
        for start, end, first_line in cut(source.read(obj.uri), obj.size, shard_bytes):
            shards.append(
                Shard(shard_id(obj.uri, start), obj.uri, obj.etag, start, end, first_line, False)
            )
    return shards


def cut(chunks: Iterable[bytes], size: int, shard_bytes: int) -> list[tuple[int, int, int]]:
    """``(start, end, first_line)`` of shards of at least ``shard_bytes`` (the last may be
    shorter) of a ``size``-byte stream, each ending just after a line break or at the end."""
    cuts: list[tuple[int, int, int]] = []
    start, first_line = 0, 1
    position, lines = 0, 0  # bytes and line breaks before the current chunk
    for chunk in chunks:
        begin = 0
        while True:
            want = start + shard_bytes - 1 - position  # the earliest break ending a shard
            newline = chunk.find(b"\n", max(begin, want)) if want < len(chunk) else -1
            if newline < 0:
                break
            end = position + newline + 1
            if end >= size:
                break
            lines_before = lines + chunk.count(b"\n", 0, newline + 1)
            cuts.append((start, end, first_line))
            start, first_line, begin = end, lines_before + 1, newline + 1
        position += len(chunk)
        lines += chunk.count(b"\n")
    if start < size:
        cuts.append((start, size, first_line))
    return cuts
