"""A whole run on one machine: plan, every shard in turn, summary (``nerkit-bulk run``).

The same functions as the Lambda handlers, called in-process: what a local run writes is
what the state machine writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nerkit.bulk.locations import Location, location
from nerkit.bulk.model import load_engine
from nerkit.bulk.plan import DEFAULT_SHARD_BYTES, Job, JobError, Shard, plan
from nerkit.bulk.summary import summarize
from nerkit.bulk.worker import EngineFor, ShardOutcome, process_shard

DEFAULT_CACHE_DIR = Path("/tmp/nerkit-model")


def check_locations(job: Job) -> None:
    """Output inside the input would be read back as input by the next run."""
    if (job.output.rstrip("/") + "/").startswith(job.input.rstrip("/") + "/"):
        raise JobError(f"the output {job.output} must not be inside the input {job.input}")


def engine_loader(job: Job, cache_dir: Path, threads: int) -> EngineFor:
    return lambda: load_engine(job.model_uri, job.model_version, cache_dir, threads=threads)


def run_shard(
    job: Job,
    shard: Shard,
    *,
    source: Location,
    output: Location,
    engine_for: EngineFor,
    on_documents: Callable[[int, int], None] | None = None,
) -> ShardOutcome:
    """A shard to its end: without a deadline, one call does it all."""
    outcome = process_shard(
        job, shard, source=source, output=output, engine_for=engine_for, on_documents=on_documents
    )
    while not outcome.complete:
        outcome = process_shard(
            job,
            shard,
            source=source,
            output=output,
            engine_for=engine_for,
            resume=outcome.resume,
            on_documents=on_documents,
        )
    return outcome


def run_local(
    job: Job,
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    threads: int = 1,
    on_plan: Callable[[list[Shard]], None] | None = None,
    on_documents: Callable[[int, int], None] | None = None,
    engine_for: EngineFor | None = None,
) -> dict[str, Any]:
    """Run ``job`` here; return its summary (also written to the output)."""
    check_locations(job)
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    source, output = location(job.input), location(job.output)
    shards = plan(job, source, shard_bytes=shard_bytes)
    if on_plan is not None:
        on_plan(shards)
    engine_for = engine_for or engine_loader(job, cache_dir, threads)
    for shard in shards:
        run_shard(
            job,
            shard,
            source=source,
            output=output,
            engine_for=engine_for,
            on_documents=on_documents,
        )
    run_id = f"local-{uuid.uuid4().hex[:12]}"
    return summarize(job, shards, output, started_at=started_at, run_id=run_id)
