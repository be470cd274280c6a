"""One shard: read its records, run the engine, write the results, errors and marker.

A worker stops taking new records once ``time_left()`` drops under ``STOP_MARGIN_SECONDS``
(a Lambda invocation's deadline), writes what it has as one part and returns where it
stopped (``resume``); the next call continues there. Parts are named by their first input
line and the marker lists them, so every retry or redrive overwrites the same objects.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from nerkit.api.schemas import EntityOut
from nerkit.bulk.locations import Location
from nerkit.bulk.plan import Job, Shard
from nerkit.bulk.records import BadRecord, Line, Record, gunzip, parse, split_lines
from nerkit.engine import NerEngine

# Texts per engine call. The engine batches windows itself (one at a time for int8 models,
# whose results must not depend on the other texts); this only bounds memory and how far a
# stop can overshoot: one batch of the longest texts is seconds, not minutes.
BATCH_TEXTS = 32
# Left of an invocation when the worker stops: room for the last batch (a batch of
# max-length texts takes well under a minute on one vCPU) and for writing the part.
STOP_MARGIN_SECONDS = 120.0

EngineFor = Callable[[], tuple[NerEngine, str]]


@dataclass
class Progress:
    """Where a shard stands between invocations (JSON in the state machine's loop)."""

    offset: int
    line: int
    parts: list[str] = field(default_factory=list)
    error_parts: list[str] = field(default_factory=list)
    documents: int = 0
    entities: int = 0
    errors: int = 0
    seconds: float = 0.0
    model_version: str | None = None


@dataclass(frozen=True)
class ShardOutcome:
    shard: str
    complete: bool
    skipped: bool
    documents: int
    entities: int
    errors: int
    resume: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def marker_key(shard_id: str) -> str:
    return f"shards/{shard_id}.json"


def process_shard(
    job: Job,
    shard: Shard,
    *,
    source: Location,
    output: Location,
    engine_for: EngineFor,
    time_left: Callable[[], float] = lambda: float("inf"),
    resume: dict[str, Any] | None = None,
    on_documents: Callable[[int, int], None] | None = None,
) -> ShardOutcome:
    """Process ``shard`` from its start (or from ``resume``); ``on_documents(documents,
    bytes)`` is called after each batch (progress display)."""
    if resume is None:
        done = _finished(job, shard, output)
        if done is not None:
            return done
        progress = Progress(offset=shard.start, line=shard.first_line)
    else:
        progress = Progress(**resume)
    started = time.perf_counter()
    part_line = progress.line
    results: list[bytes] = []
    errors: list[bytes] = []
    batch: list[Record] = []
    options = job.record_options(shard.uri)
    stopped_at: Line | None = None
    consumed = progress.offset

    def flush() -> None:
        if batch:
            engine, version = engine_for()
            progress.model_version = version
            results.extend(_predict(engine, job, batch, progress))
            if on_documents is not None:
                on_documents(len(batch), 0)
            batch.clear()

    for line in _lines(shard, source, progress.offset, progress.line):
        if not batch and results and time_left() < STOP_MARGIN_SECONDS:
            stopped_at = line
            break
        item = parse(line, options, shard.uri)
        if isinstance(item, Record):
            batch.append(item)
            progress.documents += 1
        elif isinstance(item, BadRecord):
            errors.append(_error_line(shard.uri, item))
            progress.errors += 1
        if len(batch) >= BATCH_TEXTS:
            flush()
        if on_documents is not None:
            on_documents(0, line.end - consumed)
        consumed = line.end
    flush()

    suffix = f"part-{part_line:010d}.jsonl"
    progress.parts.append(f"results/{shard.id}/{suffix}")
    output.put(progress.parts[-1], b"".join(results))
    if errors:
        progress.error_parts.append(f"errors/{shard.id}/{suffix}")
        output.put(progress.error_parts[-1], b"".join(errors))
    progress.seconds += time.perf_counter() - started
    if stopped_at is not None:
        progress.offset, progress.line = stopped_at.offset, stopped_at.number
        return _outcome(shard, progress, complete=False)
    progress.model_version = progress.model_version or job.model_version
    marker = {
        "shard": shard.to_json(),
        "fingerprint": job.fingerprint(),
        "completed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **{k: v for k, v in asdict(progress).items() if k not in ("offset", "line")},
    }
    output.put(marker_key(shard.id), json.dumps(marker, indent=1).encode())
    return _outcome(shard, progress, complete=True)


def read_marker(output: Location, shard_id: str) -> dict[str, Any] | None:
    raw = output.get(marker_key(shard_id))
    if raw is None:
        return None
    try:
        marker = json.loads(raw)
    except ValueError:
        return None  # damaged: the shard runs again and rewrites it
    return marker if isinstance(marker, dict) else None


def _finished(job: Job, shard: Shard, output: Location) -> ShardOutcome | None:
    """The outcome recorded by an earlier run if it finished this shard for the same input
    (object, ETag, byte range), model version and options."""
    marker = read_marker(output, shard.id)
    if (
        marker is None
        or marker.get("shard") != shard.to_json()
        or marker.get("fingerprint") != job.fingerprint()
    ):
        return None
    return ShardOutcome(
        shard.id,
        complete=True,
        skipped=True,
        documents=int(marker.get("documents", 0)),
        entities=int(marker.get("entities", 0)),
        errors=int(marker.get("errors", 0)),
    )


def _lines(shard: Shard, source: Location, offset: int, line: int) -> Iterator[Line]:
    if not shard.gzip:
        yield from split_lines(
            source.read(shard.uri, offset, shard.end), offset=offset, first_line=line
        )
        return
    # A gzip stream is read from its start; lines before the resume point are skipped.
    for item in split_lines(gunzip(source.read(shard.uri))):
        if item.offset >= offset:
            yield item


def _predict(engine: NerEngine, job: Job, batch: list[Record], progress: Progress) -> list[bytes]:
    options = job.entities
    found = engine.predict(
        [record.text for record in batch],
        aggregation=options.aggregation,
        decoding=options.decoding,
        labels=options.labels,
        min_score=options.min_score,
    )
    lines = []
    for record, entities in zip(batch, found, strict=True):
        kept = entities[: options.max_entities]
        progress.entities += len(kept)
        row = {
            "id": record.id,
            **record.extra,
            "entities": [EntityOut.of(entity).model_dump() for entity in kept],
            "truncated": len(kept) < len(entities),
        }
        lines.append(_json_line(row))
    return lines


def _error_line(uri: str, bad: BadRecord) -> bytes:
    return _json_line({"file": uri, "line": bad.line, "reason": bad.reason, "message": bad.message})


def _json_line(row: dict[str, Any]) -> bytes:
    try:
        return json.dumps(row, ensure_ascii=False).encode() + b"\n"
    except UnicodeEncodeError:
        # An id or passed-through field with a lone surrogate (a JSON escape can carry one)
        # has no UTF-8 form: keep it as the JSON escape it came in as.
        return json.dumps(row).encode() + b"\n"


def _outcome(shard: Shard, progress: Progress, *, complete: bool) -> ShardOutcome:
    return ShardOutcome(
        shard.id,
        complete=complete,
        skipped=False,
        documents=progress.documents,
        entities=progress.entities,
        errors=progress.errors,
        resume=None if complete else asdict(progress),
    )
