"""One measurement in a fresh process: ``python bench/worker.py SPEC.json``.

The spec (written by ``serving_benchmark.run_worker``) names the engine and the measurement;
the result is the last line on stdout, as JSON. Only the standard library and this
directory's stdlib-only modules are imported before the worker pins itself to its core.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engines import (
    IMPORTERS,
    LOADERS,
    Runner,
    framework_floor,
    handler_engine,
    import_handler,
    import_handler_module,
    invoke,
    rest_event,
)
from measure import clock, heavy_modules_loaded, memory, percentile

# Untimed calls before a warm measurement: lazy initialisation, allocator arenas, caches.
WARMUP_CALLS = 10


def measure_cold_start(spec: dict[str, Any], started: float, scratch: Path) -> dict[str, Any]:
    """Spawn -> first answer, phase by phase. ``started`` is when this worker's code began."""
    engine = spec["engine"]
    t_import = clock()
    IMPORTERS[engine]()
    t_load = clock()
    runner = LOADERS[engine](spec, scratch)
    t_first = clock()
    entities = runner.one(spec["first_text"])
    t_answer = clock()
    return {
        "interpreter_s": started - spec["spawned_at"],
        "import_s": t_load - t_import,
        "load_s": t_first - t_load,
        "first_inference_s": t_answer - t_first,
        "total_s": t_answer - spec["spawned_at"],
        "first_answer_entities": len(entities),
        **memory(),
        "heavy_modules": heavy_modules_loaded(),
    }


def measure_lambda_cold(spec: dict[str, Any], started: float, scratch: Path) -> dict[str, Any]:
    """Lambda's cold start: spawn -> lambda/handler.py imported (its init builds the app and
    preloads the model: LIVE read from S3, tarball downloaded, verified, extracted and
    loaded) -> the first invocation answered. MODEL_URI and the S3 endpoint come from the
    environment the parent set."""
    t_init = clock()
    import nerkit.api.model as model_module

    preload = model_module.ModelHolder.preload
    preloads: list[float] = []

    def timed_preload(holder: Any) -> None:
        begin = clock()
        preload(holder)
        preloads.append(clock() - begin)

    model_module.ModelHolder.preload = timed_preload  # type: ignore[method-assign]
    module = import_handler_module(spec, scratch)
    t_first = clock()
    response = invoke(module, rest_event({"text": spec["first_text"]}))
    t_answer = clock()
    [load_s] = preloads
    return {
        "interpreter_s": started - spec["spawned_at"],
        "import_s": t_first - t_init - load_s,
        "load_s": load_s,
        "first_invocation_s": t_answer - t_first,
        "total_s": t_answer - spec["spawned_at"],
        "first_answer_entities": len(json.loads(response["body"])["entities"]),
        "aws_sdk_modules": [name for name in ("boto3", "botocore") if name in sys.modules],
        **memory(),
        "heavy_modules": heavy_modules_loaded(),
    }


def load_warm(spec: dict[str, Any], scratch: Path) -> Runner:
    IMPORTERS[spec["engine"]]()
    runner = LOADERS[spec["engine"]](spec, scratch)
    for text in spec["texts"][:WARMUP_CALLS]:
        runner.one(text)
    return runner


def timed(call: Callable[[], Any]) -> float:
    begin = clock()
    call()
    return clock() - begin


def measure_latency(spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Single-sentence requests: every sampled sentence once, then the typical one repeated."""
    runner = load_warm(spec, scratch)
    timings = [timed(lambda text=text: runner.one(text)) for text in spec["texts"]]
    typical = [timed(lambda: runner.one(spec["typical_text"])) for _ in range(spec["repeats"])]
    return {
        "calls": len(timings),
        "p50_ms": percentile(timings, 50) * 1e3,
        "p95_ms": percentile(timings, 95) * 1e3,
        "mean_ms": statistics.fmean(timings) * 1e3,
        "typical_p50_ms": percentile(typical, 50) * 1e3,
        # One sentence per call, back to back: what batching has to beat on a single core.
        "sequential_sentences_per_s": len(timings) / sum(timings),
        **memory(),
        "heavy_modules": heavy_modules_loaded(),
    }


def measure_overhead(spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """The handler's cost over the engine's: each sentence once through the engine, once
    through the handler (a prebuilt REST event; the same engine and session) and once through
    the framework floor (``engines.framework_floor``), interleaved and rotating which goes
    first, so all three see the same load, caches and sentences."""
    import_handler()
    module = import_handler_module(spec, scratch)
    engine = handler_engine(module)
    floor = framework_floor(engine)
    texts: list[str] = spec["texts"] * spec["passes"]
    events = [rest_event({"text": text}) for text in texts]
    for text, event in zip(texts[:WARMUP_CALLS], events, strict=False):
        engine.one(text)
        invoke(module, event)
        floor(event)
    engine_times: list[float] = []
    handler_times: list[float] = []
    floor_times: list[float] = []
    for index, (text, event) in enumerate(zip(texts, events, strict=True)):
        calls = [
            (engine_times, lambda text=text: engine.one(text)),
            (handler_times, lambda event=event: invoke(module, event)),
            (floor_times, lambda event=event: floor(event)),
        ]
        first = index % len(calls)
        for times, call in calls[first:] + calls[:first]:
            times.append(timed(call))
    engine_p50, handler_p50 = percentile(engine_times, 50), percentile(handler_times, 50)
    floor_p50 = percentile(floor_times, 50)
    return {
        "calls": len(texts),
        "engine_p50_ms": engine_p50 * 1e3,
        "handler_p50_ms": handler_p50 * 1e3,
        "engine_mean_ms": statistics.fmean(engine_times) * 1e3,
        "handler_mean_ms": statistics.fmean(handler_times) * 1e3,
        "handler_p95_ms": percentile(handler_times, 95) * 1e3,
        "ratio_p50": handler_p50 / engine_p50,
        "overhead_p50_ms": (handler_p50 - engine_p50) * 1e3,
        "floor_p50_ms": floor_p50 * 1e3,
        "floor_ratio_p50": floor_p50 / engine_p50,
    }


def measure_handler_requests(spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Lambda's billed duration per request of 1, 16, 64... sentences through the handler:
    the same sentences for every size, cut into consecutive requests, each sent once after
    one untimed request of that size. Lambda bills each invocation in whole milliseconds,
    rounded up."""
    runner = load_warm(spec, scratch)
    texts: list[str] = spec["texts"]
    sizes: dict[str, Any] = {}
    for size in spec["request_sizes"]:
        requests = [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]
        runner.many(requests[0])
        durations = [timed(lambda request=request: runner.many(request)) for request in requests]
        sizes[str(size)] = {
            "requests": len(requests),
            "mean_ms": statistics.fmean(durations) * 1e3,
            "p50_ms": percentile(durations, 50) * 1e3,
            "billed_mean_ms": statistics.fmean(math.ceil(d * 1e3) for d in durations),
        }
    return {"sizes": sizes, **memory()}


def measure_throughput(spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Requests of each size (consecutive slices of the sample: mixed lengths)."""
    runner = load_warm(spec, scratch)
    texts: list[str] = spec["texts"]
    result: dict[str, Any] = {}
    for size in spec["request_sizes"]:
        requests = [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]
        requests = requests[: spec["batches"]]
        runner.many(requests[0])  # the first request of a new shape allocates; not timed
        elapsed = sum(timed(lambda request=request: runner.many(request)) for request in requests)
        sentences = sum(len(request) for request in requests)
        result[f"batch{size}_sentences_per_s"] = sentences / elapsed
        result[f"batch{size}_sentences"] = sentences
    result.update(memory())
    return result


def main(spec_path: str) -> None:
    started = clock()
    spec = json.loads(Path(spec_path).read_text())
    # Pin before anything heavy is imported: thread pools size themselves at import time.
    if spec.get("core") is not None:
        os.sched_setaffinity(0, {spec["core"]})
    scratch = Path(spec["scratch"])
    measurement = spec["measurement"]
    if measurement == "cold":
        result = measure_cold_start(spec, started, scratch)
    elif measurement == "lambda_cold":
        result = measure_lambda_cold(spec, started, scratch)
    elif measurement == "latency":
        result = measure_latency(spec, scratch)
    elif measurement == "handler_requests":
        result = measure_handler_requests(spec, scratch)
    elif measurement == "overhead":
        result = measure_overhead(spec, scratch)
    else:
        result = measure_throughput(spec, scratch)
    # The parent reads the last stdout line; libraries may print before it.
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
