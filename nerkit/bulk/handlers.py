"""The bulk state machine's three Lambda handlers (``infra/bulk.py``): plan, worker, summary.

Configuration comes from the environment the stack sets:

* ``BULK_MODEL_URI``: the model store (``s3://bucket/models/ner``), pinned at plan time;
* ``BULK_MANIFEST_URI``: where the plan writes shard manifests (the Map's ItemReader);
* ``BULK_INPUT_LOCATIONS`` / ``BULK_OUTPUT_LOCATIONS``: comma-separated ``s3://`` prefixes
  the roles may read / write; a request outside them is refused with a clear error;
* ``BULK_TOLERATED_FAILURE_PERCENT``: the Map's tolerated failure percentage;
* ``MODEL_CACHE_DIR``, ``NER_THREADS``: as for serving.

Errors raised here become the state's error name (``JobError``, ``LocationError``, ...);
the state machine retries ``LocationError`` (S3 trouble) and fails on the others.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nerkit.api.emf import (
    BULK_SERVICE,
    DOCUMENTS,
    ENTITIES,
    MISSING_SHARDS,
    NAMESPACE,
    RECORD_ERRORS,
    SERVICE,
)
from nerkit.bulk.locations import LocationError, location, split_s3_uri
from nerkit.bulk.model import load_engine, pin_version
from nerkit.bulk.plan import DEFAULT_SHARD_BYTES, Job, JobError, Shard, plan
from nerkit.bulk.request import job_from_request, shard_bytes_of
from nerkit.bulk.runner import check_locations
from nerkit.bulk.summary import summarize
from nerkit.bulk.worker import process_shard


def plan_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``{"request": <execution input>, "runId": <execution name>}`` -> the plan."""
    request, run_id = event.get("request"), str(event.get("runId", ""))
    if not isinstance(request, dict):
        raise JobError("the execution input must be a JSON object")
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    model_uri = os.environ["BULK_MODEL_URI"]
    pinned = job_from_request(request, model_uri=model_uri, model_version=None)
    _check_allowed(pinned.input, "BULK_INPUT_LOCATIONS", "read from")
    _check_allowed(pinned.output, "BULK_OUTPUT_LOCATIONS", "write to")
    check_locations(pinned)
    version = pin_version(model_uri, request.get("modelVersion"), pinned.entities.labels)
    job = job_from_request(request, model_uri=model_uri, model_version=version)
    shards = plan(
        job,
        location(job.input),
        shard_bytes=shard_bytes_of(request, DEFAULT_SHARD_BYTES),
    )
    manifest_uri = f"{os.environ['BULK_MANIFEST_URI'].rstrip('/')}/{run_id}.json"
    bucket, key = split_s3_uri(manifest_uri)
    items = [{"job": job.to_json(), "shard": shard.to_json()} for shard in shards]
    location(f"s3://{bucket}").put(key, json.dumps(items).encode())
    return {
        "runId": run_id,
        "startedAt": started_at,
        "manifestBucket": bucket,
        "manifestKey": key,
        "shards": len(shards),
        "modelVersion": version,
        "job": job.to_json(),
        "toleratedFailurePercentage": float(os.environ.get("BULK_TOLERATED_FAILURE_PERCENT", 0)),
    }


def worker_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``{"job", "shard"[, "resume"]}`` -> the same with ``complete`` and the new ``resume``."""
    job, shard = Job.from_json(event["job"]), Shard.from_json(event["shard"])
    cache_dir = Path(os.environ.get("MODEL_CACHE_DIR", "/tmp/nerkit-model"))
    threads = int(os.environ.get("NER_THREADS", "1"))
    outcome = process_shard(
        job,
        shard,
        source=location(job.input),
        output=location(job.output),
        engine_for=lambda: load_engine(
            job.model_uri, job.model_version, cache_dir, threads=threads
        ),
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
        resume=event.get("resume"),
    )
    return {
        "job": event["job"],
        "shard": event["shard"],
        "complete": outcome.complete,
        "resume": outcome.resume,
        "outcome": {k: v for k, v in outcome.to_json().items() if k != "resume"},
    }


def summary_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``{"plan": <the plan's result>}`` -> the summary's headline (all of it is written
    to ``<output>/summary.json``), and the run's counts as CloudWatch metrics (EMF)."""
    plan_result = event["plan"]
    raw = location(f"s3://{plan_result['manifestBucket']}").get(plan_result["manifestKey"])
    if raw is None:
        raise LocationError("the shard manifest is gone")
    shards = [Shard.from_json(item["shard"]) for item in json.loads(raw)]
    job = Job.from_json(plan_result["job"])
    summary = summarize(
        job,
        shards,
        location(job.output),
        started_at=plan_result["startedAt"],
        run_id=plan_result["runId"],
    )
    _emit_metrics(summary)
    return {
        "status": summary["status"],
        "modelVersion": summary["model_version"],
        "shards": {k: v for k, v in summary["shards"].items() if k != "missing"},
        "missingShards": len(summary["shards"]["missing"]),
        "totals": summary["totals"],
        "summary": f"{job.output.rstrip('/')}/summary.json",
    }


def _emit_metrics(summary: dict[str, Any]) -> None:
    """One EMF line: documents, entities, errors and missing shards of this run."""
    metrics = {
        DOCUMENTS: summary["totals"]["documents"],
        ENTITIES: summary["totals"]["entities"],
        RECORD_ERRORS: summary["totals"]["errors"],
        MISSING_SHARDS: len(summary["shards"]["missing"]),
    }
    record = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [[SERVICE]],
                    "Metrics": [{"Name": name, "Unit": "Count"} for name in metrics],
                }
            ],
        },
        SERVICE: BULK_SERVICE,
        "run_id": summary["run_id"],
        "status": summary["status"],
        **metrics,
    }
    print(json.dumps(record))


def _check_allowed(uri: str, variable: str, verb: str) -> None:
    allowed = [p.strip() for p in os.environ.get(variable, "").split(",") if p.strip()]
    if not uri.startswith("s3://"):
        raise JobError(f"{uri!r} is not an s3:// URI")
    target = uri.rstrip("/") + "/"
    if not any(target.startswith(prefix.rstrip("/") + "/") for prefix in allowed):
        raise JobError(f"this deployment may not {verb} {uri}; allowed: {', '.join(allowed)}")
