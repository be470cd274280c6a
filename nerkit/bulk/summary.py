"""The run summary: counts per shard and in total, the model version, timings.

Built from the shards' completion markers (not from Step Functions' result files), so the
local runner and the state machine write the same ``summary.json``; a shard without a
marker is reported as not completed.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from nerkit.bulk.locations import Location
from nerkit.bulk.plan import Job, Shard
from nerkit.bulk.worker import read_marker

SUMMARY_KEY = "summary.json"
# Markers are small objects: reading many at once keeps the summary step short on S3.
_READERS = 32


def summarize(
    job: Job, shards: list[Shard], output: Location, *, started_at: str, run_id: str
) -> dict[str, Any]:
    """Write and return ``summary.json`` for ``shards`` of ``job``."""
    with ThreadPoolExecutor(_READERS) as pool:
        markers = list(pool.map(lambda shard: read_marker(output, shard.id), shards))
    rows, versions, missing = [], set(), []
    totals = {"documents": 0, "entities": 0, "errors": 0}
    seconds = 0.0
    fingerprint = job.fingerprint()
    for shard, marker in zip(shards, markers, strict=True):
        if (
            marker is None
            or marker.get("shard") != shard.to_json()
            or marker.get("fingerprint") != fingerprint
        ):
            missing.append(shard.id)
            continue
        row = {
            "shard": shard.id,
            "input": shard.uri,
            "start": shard.start,
            "end": shard.end,
            "first_line": shard.first_line,
            "parts": marker["parts"],
            "error_parts": marker["error_parts"],
            "seconds": round(marker["seconds"], 3),
        }
        for name in totals:
            row[name] = marker[name]
            totals[name] += marker[name]
        seconds += marker["seconds"]
        if marker.get("model_version"):
            versions.add(marker["model_version"])
        rows.append(row)
    finished_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    summary = {
        "run_id": run_id,
        "input": job.input,
        "output": job.output,
        "model_uri": job.model_uri,
        "model_version": job.model_version or (sorted(versions)[0] if versions else None),
        "status": "SUCCEEDED" if not missing else "INCOMPLETE",
        "shards": {"total": len(shards), "completed": len(rows), "missing": missing},
        "totals": totals,
        "timings": {
            "started_at": started_at,
            "finished_at": finished_at,
            "worker_seconds": round(seconds, 3),
            "documents_per_worker_second": round(totals["documents"] / seconds, 2)
            if seconds
            else None,
        },
        "per_shard": rows,
    }
    if len(versions) > 1:  # cannot happen with a pinned version; said loudly if it does
        summary["status"] = "MIXED_MODEL_VERSIONS"
        summary["model_versions"] = sorted(versions)
    output.put(SUMMARY_KEY, json.dumps(summary, indent=1).encode())
    return summary
