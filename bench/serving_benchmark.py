"""Serving benchmark: the production engine vs the transformers token-classification pipeline.

Compares, on one CPU core:

- **ours**: ``nerkit.engine.NerEngine`` (tokenizers + ONNX Runtime) on a model artifact, the
  path the Lambda serves (``models/default/model.tar.gz`` unless ``--model`` says otherwise;
  when there is none, a stand-in is built: MiniLM-L6 with a seeded random head, int8);
- **baseline**: ``transformers.pipeline("token-classification", aggregation_strategy="simple")``
  on the same MiniLM-L6 ``BertForTokenClassification`` in Hugging Face format (fp32 torch).

Every measurement runs in a fresh subprocess pinned to one core with one intra-op thread, so
neither side profits from the other's imports, caches or threads. Measured: cold start
(process spawn -> first answer, split into interpreter start, imports, load, first
inference), warm single-sentence latency on real CoNLL-2003 test sentences, batch
throughput and peak RSS. Ours is also timed through the Lambda handler (an API Gateway REST
event in, Mangum, FastAPI, the engine, the JSON response and its log line out): the warm
request duration that docs/DEPLOY.md's cost model uses. The script only prints numbers; it
asserts nothing about them.

    .venv/bin/python bench/serving_benchmark.py                      # full run
    .venv/bin/python bench/serving_benchmark.py --cold-runs 2 --iterations 50 --batches 2

This file is the run: arguments, the worker processes, the results. Its parts, one job each:
``worker.py`` (one measurement in a pinned process, with ``engines.py`` and ``measure.py``),
``build_models.py`` (the models, in a child process: the parent never imports torch),
``workload.py`` (the sentences) and ``report.py`` (the table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure import clock
from report import (
    ENGINES,
    REQUEST_BATCHES,
    STACK_FLOOR,
    BuiltModels,
    machine_context,
    render_report,
)
from s3_store import BUCKET, aws_env, moto_server
from workload import Workload, load_workload

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_MODEL = REPO / "models" / "default" / "model.tar.gz"
# The datasets sit next to the checkout, as the tests expect them (../shared/datasets).
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "conll2003" / "test.txt"
# One thread everywhere: Lambda gives 1 vCPU per 1,769 MB and NER_THREADS defaults to 1.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    # No model hub here; a network lookup would only add timeouts to the baseline's load.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def run_worker(
    spec: dict[str, Any],
    work: Path,
    script: str = "worker.py",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``script`` on ``spec`` in a fresh interpreter, with ``env`` added to the
    environment and ``spec["repo"]``'s nerkit (default this checkout's); return its result
    and wall time."""
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=work))
    spec_path = scratch / "spec.json"
    env = {**os.environ, **THREAD_ENV, **(env or {}), "PYTHONPATH": str(spec.get("repo", REPO))}
    # Output goes to files, not pipes: the handler writes a log line per request, and a pipe
    # would wake this process to read each one, on the worker's core of a busy machine.
    try:
        with (scratch / "stdout").open("w+") as stdout, (scratch / "stderr").open("w+") as stderr:
            spawned_at = clock()
            spec_path.write_text(
                json.dumps({**spec, "scratch": str(scratch), "spawned_at": spawned_at})
            )
            process = subprocess.run(
                [sys.executable, str(BENCH / script), str(spec_path)],
                stdout=stdout,
                stderr=stderr,
                env=env,
                cwd=REPO,
                check=False,
            )
            wall = clock() - spawned_at
            stdout.seek(0)
            stderr.seek(0)
            output, errors = stdout.read(), stderr.read()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if process.returncode != 0:
        sys.stderr.write(errors)
        what = " ".join(str(spec[key]) for key in ("engine", "measurement") if key in spec)
        raise RuntimeError(f"{script} failed: {what}")
    return {**json.loads(output.strip().splitlines()[-1]), "process_wall_s": wall}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    numeric = [
        key
        for key, value in runs[0].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    summary: dict[str, Any] = {key: statistics.median(run[key] for run in runs) for key in numeric}
    summary["min_total_s"] = min(run["total_s"] for run in runs)
    # The same in every run of one engine or checkout: the modules it imports.
    summary.update(
        {key: value for key, value in runs[0].items() if isinstance(value, bool | list | str)}
    )
    return summary


def run_benchmark(
    args: argparse.Namespace, models: BuiltModels, load: Workload, work: Path
) -> dict[str, Any]:
    results = run_engines(args, models, load, work) if args.only == "all" else {}
    results["handler"] = run_handler(args, models, load, work)
    return results


def run_engines(
    args: argparse.Namespace, models: BuiltModels, load: Workload, work: Path
) -> dict[str, Any]:
    base_specs = {
        "ours": {"engine": "ours", "model": str(models.ours)},
        "baseline": {"engine": "baseline", "hf_dir": str(models.hf_dir)},
    }
    common = {"core": args.core, "first_text": load.typical_text}
    cold: dict[str, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
    # Interleaved, so a change in background load hits both engines alike.
    for run in range(args.cold_runs):
        for engine in ENGINES:
            progress(f"cold start {run + 1}/{args.cold_runs}: {engine}")
            spec = {**base_specs[engine], **common, "measurement": "cold"}
            cold[engine].append(run_worker(spec, work))
    results: dict[str, Any] = {}
    for engine in ENGINES:
        warm = {
            **base_specs[engine],
            **common,
            "texts": load.texts,
            "typical_text": load.typical_text,
            "repeats": args.iterations,
            "request_sizes": list(REQUEST_BATCHES),
            "batches": args.batches,
        }
        progress(f"warm latency: {engine}")
        latency = run_worker({**warm, "measurement": "latency"}, work)
        progress(f"batch throughput: {engine}")
        # Enough sentences for every request size; the sample repeats if it is too small.
        needed = max(REQUEST_BATCHES) * args.batches
        throughput_texts = [load.texts[i % len(load.texts)] for i in range(needed)]
        throughput = run_worker(
            {**warm, "texts": throughput_texts, "measurement": "throughput"}, work
        )
        results[engine] = {
            "cold": median_of(cold[engine]),
            "cold_runs": cold[engine],
            "latency": latency,
            "throughput": throughput,
        }
    return results


def run_handler(
    args: argparse.Namespace, models: BuiltModels, load: Workload, work: Path
) -> dict[str, Any]:
    """Ours through lambda/handler.py: warm latency, its cost over the engine alone, and
    Lambda's cold start from S3."""
    handler = {
        "engine": "handler",
        "model": str(models.ours),
        "core": args.core,
        "first_text": load.typical_text,
        "texts": load.texts,
        "typical_text": load.typical_text,
        "repeats": args.iterations,
    }
    progress("warm latency: ours through the Lambda handler")
    latency = run_worker({**handler, "measurement": "latency"}, work)
    progress("requests of several sentences through the Lambda handler")
    needed = max(HANDLER_REQUEST_SIZES) * args.batches
    sized = {
        **handler,
        "measurement": "handler_requests",
        "texts": [load.texts[i % len(load.texts)] for i in range(needed)],
        "request_sizes": list(HANDLER_REQUEST_SIZES),
    }
    requests = run_worker(sized, work)
    variants = {THIS_CHECKOUT: Variant(REPO, models.ours), **args.cold_variant}
    overhead = {}
    for name, variant in variants.items():
        progress(f"handler vs engine, interleaved: {name}")
        spec = {**handler, "measurement": "overhead", "passes": OVERHEAD_PASSES}
        overhead[name] = run_worker({**spec, "repo": str(variant.repo)}, work)
    return {
        "latency": latency,
        "requests": requests,
        "overhead": overhead,
        "lambda_cold": run_lambda_cold(args, variants, handler, work),
    }


@dataclass(frozen=True)
class Variant:
    """A checkout (its nerkit and lambda/handler.py) serving an artifact, for comparing
    cold starts in one run."""

    repo: Path
    model: Path


def parse_variant(value: str) -> tuple[str, Variant]:
    """``NAME=CHECKOUT[,ARTIFACT]`` (default artifact: the one benchmarked)."""
    name, _, rest = value.partition("=")
    repo, _, model = rest.partition(",")
    if not name or not repo:
        raise argparse.ArgumentTypeError(f"expected NAME=CHECKOUT[,ARTIFACT], not {value!r}")
    return name, Variant(Path(repo).resolve(), Path(model).resolve() if model else Path())


def run_lambda_cold(
    args: argparse.Namespace,
    variants: dict[str, Variant],
    handler: dict[str, Any],
    work: Path,
) -> dict[str, Any]:
    """Lambda's cold start from S3 (moto server) for each variant, runs interleaved."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    floor: list[dict[str, Any]] = []
    with moto_server(away_from=args.core) as endpoint:
        uris = {}
        for name, variant in variants.items():
            uris[name] = f"s3://{BUCKET}/models/{name}"
            model = variant.model if variant.model != Path() else Path(handler["model"])
            progress(f"publishing {model} to {uris[name]} (moto server)")
            run_worker(
                {"model": str(model), "uri": uris[name]}, work, "s3_store.py", aws_env(endpoint)
            )
        for run in range(args.cold_runs):
            for name, variant in variants.items():
                progress(f"Lambda cold start from S3 {run + 1}/{args.cold_runs}: {name}")
                spec = {**handler, "measurement": "lambda_cold", "repo": str(variant.repo)}
                env = {**aws_env(endpoint), "MODEL_URI": uris[name]}
                runs[name].append(run_worker(spec, work, env=env))
            progress(f"the stack's floor, cold {run + 1}/{args.cold_runs}")
            floor.append(run_worker({**handler, "engine": "stack", "measurement": "cold"}, work))
    cold = {name: {"median": median_of(result), "runs": result} for name, result in runs.items()}
    return {**cold, STACK_FLOOR: {"median": median_of(floor), "runs": floor}}


# The name of the checkout the benchmark runs from, among the cold-start variants.
THIS_CHECKOUT = "this"
# Sentences per request for the billed duration of docs/DEPLOY.md's cost table.
HANDLER_REQUEST_SIZES = (1, 16, 64)
# Passes over the sample in the interleaved handler-vs-engine run (two calls per sentence).
OVERHEAD_PASSES = 2


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help="artifact .tar.gz or directory (default: %(default)s; "
        "a stand-in is built when it does not exist)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=300,
        help="single-sentence calls (and repeats of the typical sentence)",
    )
    parser.add_argument("--cold-runs", type=int, default=5, help="cold starts per engine")
    parser.add_argument("--batches", type=int, default=8, help="timed requests per batch size")
    parser.add_argument(
        "--core",
        type=int,
        default=None,
        help="CPU core to pin workers to (default: the last allowed one)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CoNLL test file")
    parser.add_argument(
        "--min-words", type=int, default=5, help="shortest sentence sampled as typical"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep built models here and reuse them (default: a temp dir)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--cold-variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="NAME=CHECKOUT[,ARTIFACT]",
        help="also measure the handler's overhead and Lambda's cold start from S3 with another "
        "checkout's code (e.g. `git archive REV nerkit lambda` unpacked) and artifact (cold "
        "starts interleaved with this one's)",
    )
    parser.add_argument(
        "--only",
        choices=("all", "handler"),
        default="all",
        help="handler: only the Lambda handler measurements (no baseline, no torch worker)",
    )
    args = parser.parse_args(argv)
    allowed = sorted(os.sched_getaffinity(0))
    if args.core is None:
        args.core = allowed[-1]
    if args.core not in allowed:
        parser.error(f"--core {args.core} is not one of this process's cores {allowed}")
    for name in ("iterations", "cold_runs", "batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    args.cold_variant = dict(args.cold_variant)
    if args.only != "all" and not args.model.exists():
        parser.error(f"--only {args.only} needs an artifact: none at {args.model}")
    if not args.data.is_file():
        parser.error(f"no CoNLL test file at {args.data}: pass --data")
    return args


@contextlib.contextmanager
def workspace(work_dir: Path | None) -> Iterator[Path]:
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        yield work_dir.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="nerkit-bench-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    context = machine_context(args.core)
    load = load_workload(args.data, args.iterations, args.min_words)
    with workspace(args.work_dir) as work:
        if args.only == "all":
            progress("preparing models")
            # In a child: torch stays out of this process, whose peak RSS every worker inherits.
            built = run_worker(
                {"model": str(args.model), "work": str(work)}, work, "build_models.py"
            )
            models = BuiltModels(
                Path(built["ours"]), built["ours_description"], Path(built["hf_dir"])
            )
        else:
            models = BuiltModels(args.model, str(args.model), None)
        results = run_benchmark(args, models, load, work)
    print(render_report(context, models, load, results, args))
    if args.json is not None:
        document = {
            "context": context,
            "model": models.ours_description,
            "workload": {
                "sentences": len(load.texts),
                "mean_words": load.mean_words,
                "word_percentiles": load.word_percentiles,
                "typical_text": load.typical_text,
                "min_words": args.min_words,
                "iterations": args.iterations,
                "cold_runs": args.cold_runs,
                "batches": args.batches,
            },
            "results": results,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
