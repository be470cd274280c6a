"""Shared by the bulk tests: read a run's outputs back, in input order."""

from __future__ import annotations

import json
from typing import Any

from nerkit.bulk.locations import Location


def read_jsonl(output: Location, key: str) -> list[dict[str, Any]]:
    raw = output.get(key)
    assert raw is not None, key
    return [json.loads(line) for line in raw.decode().splitlines()]


def run_outputs(output: Location) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every result and error row of a finished run, shard by shard in input order."""
    summary = json.loads(output.get("summary.json") or b"{}")
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for shard in summary["per_shard"]:
        for key in shard["parts"]:
            results.extend(read_jsonl(output, key))
        for key in shard["error_parts"]:
            errors.extend(read_jsonl(output, key))
    return results, errors
