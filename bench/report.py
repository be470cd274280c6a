"""The benchmark's report: the machine it ran on and a Markdown table of the results."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workload import TYPICAL_WORDS, Workload

ENGINES = ("ours", "baseline")
REQUEST_BATCHES = (32, 64)
# The cold-start row of the stack alone: FastAPI, Mangum and the engine from a local tarball.
STACK_FLOOR = "stack floor"


@dataclass(frozen=True)
class BuiltModels:
    """What ``build_models.py`` made: ours (a tarball or directory) and the baseline's."""

    ours: Path
    ours_description: str
    hf_dir: Path | None  # the baseline's model and tokenizer (save_pretrained); None: not run


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
    context: dict[str, Any],
    models: BuiltModels,
    load: Workload,
    results: dict[str, Any],
    args: argparse.Namespace,
) -> str:
    lines = [
        *header(context, load, args),
        *(engines_table(context, models, results, args) if "ours" in results else []),
        "",
        *handler_lines(results["handler"]),
    ]
    return "\n".join(lines)


def header(context: dict[str, Any], load: Workload, args: argparse.Namespace) -> list[str]:
    versions = ", ".join(f"{name} {version}" for name, version in context["versions"].items())
    load_avg = context["load_average_1m_at_start"]
    return [
        "## Serving benchmark",
        "",
        f"- CPU: {context['cpu']}; pinned to core {context['core_pinned']} of "
        f"{context['cores_online']}; 1 intra-op thread; load average at start {load_avg:.2f}"
        + (" (BUSY MACHINE: numbers are noisy)" if load_avg > 0.5 else ""),
        f"- Python {context['python']}; {versions}",
        f"- workload: {len(load.texts)} CoNLL-2003 test sentences of >= {args.min_words} words "
        f"(mean {load.mean_words:.1f} words, p50 {load.word_percentiles['p50']:.0f}, "
        f"p95 {load.word_percentiles['p95']:.0f}); typical sentence {TYPICAL_WORDS} words "
        f"x {args.iterations}; {args.batches} requests per batch size; "
        f"cold start: median of {args.cold_runs} runs",
    ]


def engines_table(
    context: dict[str, Any], models: BuiltModels, results: dict[str, Any], args: argparse.Namespace
) -> list[str]:
    ours, base = results["ours"], results["baseline"]

    def row(label: str, section: str, key: str, fmt: str, ratio: str = "") -> str:
        a, b = ours[section][key], base[section][key]
        return f"| {label} | {a:{fmt}} | {b:{fmt}} | {ratio} |"

    def faster(section: str, key: str) -> str:
        return speedup(base[section][key], ours[section][key])

    def ratio(section: str, key: str, word: str) -> str:
        return f"{ours[section][key] / base[section][key]:.2f}x {word}"

    lines = [
        "",
        "### Ours (NerEngine, ONNX Runtime) vs transformers pipeline",
        "",
        f"- ours: {models.ours_description}",
        f"- baseline: transformers pipeline, aggregation_strategy=simple, fp32 torch, "
        f"{models.hf_dir} (MiniLM-L6 BertForTokenClassification, same random head)",
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
        "Heavy modules imported in the serving process: "
        + "; ".join(
            f"{engine}: {', '.join(results[engine]['cold']['heavy_modules']) or 'none'}"
            for engine in ENGINES
        ),
    ]
    return lines


def handler_lines(handler: dict[str, Any]) -> list[str]:
    """The Lambda handler's measurements: warm latency, cost over the engine, cold start."""
    latency, overhead = handler["latency"], handler["overhead"]
    return [
        "### Ours through the Lambda handler",
        "",
        "REST event -> Mangum -> FastAPI -> engine -> JSON response and request log line, one "
        "sentence per invocation: "
        + ", ".join(
            f"{name} {latency[key]:.2f} ms"
            for name, key in (("p50", "p50_ms"), ("p95", "p95_ms"), ("mean", "mean_ms"))
        )
        + f"; {TYPICAL_WORDS}-word sentence p50 {latency['typical_p50_ms']:.2f} ms.",
        "",
        "| sentences per request | requests | mean (ms) | p50 (ms) | billed mean (ms, each "
        "rounded up) | billed per sentence (ms) |",
        "|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {size} | {sized['requests']} | {sized['mean_ms']:.2f} | {sized['p50_ms']:.2f} | "
            f"{sized['billed_mean_ms']:.2f} | {sized['billed_mean_ms'] / int(size):.3f} |"
            for size, sized in handler["requests"]["sizes"].items()
        ),
        "",
        *(
            f"Handler vs engine ({name}), each called {result['calls']} times on single "
            f"sentences (the sample, twice), interleaved in one process: handler p50 "
            f"{result['handler_p50_ms']:.2f} ms, engine p50 "
            f"{result['engine_p50_ms']:.2f} ms: **{result['ratio_p50']:.2f}x** "
            f"(+{result['overhead_p50_ms']:.2f} ms per request; means "
            f"{result['handler_mean_ms']:.2f} vs {result['engine_mean_ms']:.2f} ms)"
            + (
                f"; a bare FastAPI route behind Mangum on the same engine, p50 "
                f"{result['floor_p50_ms']:.2f} ms: {result['floor_ratio_p50']:.2f}x."
                if "floor_p50_ms" in result
                else "."
            )
            for name, result in overhead.items()
        ),
        "",
        *lambda_cold_table(handler["lambda_cold"]),
    ]


def lambda_cold_table(variants: dict[str, Any]) -> list[str]:
    """Cold start as Lambda does it, per checkout (the first row is this one)."""
    first = next(iter(variants))
    reference = variants[first]["median"]["total_s"]
    lines = [
        "Lambda cold start from S3 (moto server): spawn -> lambda/handler.py imported (init: "
        "app built, LIVE read, tarball downloaded, verified, extracted, session loaded) -> "
        f"first invocation answered; median of {len(variants[first]['runs'])} runs per "
        "checkout, interleaved",
        "",
        "| checkout | interpreter (s) | imports (s) | model from S3 (s) | first invocation (s) "
        f"| **spawn -> first answer (s)** | fastest run (s) | vs {first} | AWS SDK imported |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, result in variants.items():
        cold = result["median"]
        # The stack floor is a plain cold start: its model comes from a local tarball.
        first_answer = cold.get("first_invocation_s", cold.get("first_inference_s", 0.0))
        sdk = ", ".join(cold.get("aws_sdk_modules", [])) or "none"
        lines.append(
            f"| {name} | {cold['interpreter_s']:.3f} | {cold['import_s']:.3f} | "
            f"{cold['load_s']:.3f} | {first_answer:.3f} | "
            f"**{cold['total_s']:.3f}** | {cold['min_total_s']:.3f} | "
            f"{cold['total_s'] / reference:.2f}x | {sdk} |"
        )
    if STACK_FLOOR in variants:
        lines += [
            "",
            "stack floor: a fresh process that imports what the handler imports (FastAPI, "
            "Mangum, numpy, ONNX Runtime, tokenizers) and loads the same artifact from a local "
            "tarball (extracted and verified; no app, no S3) and answers once: the least a "
            "cold start on this stack can take.",
        ]
    return lines
