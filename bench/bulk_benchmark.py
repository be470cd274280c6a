"""Bulk worker benchmark: the worker path (S3 read -> engine -> S3 write) on one pinned core.

Measures, on CoNLL-2003 test (``--data``), with the default model (``--model``):

- **engine alone**: ``NerEngine.predict`` over the sentences, 32 texts per call;
- **worker, sentences**: one JSON Lines record per sentence, in moto's S3 (``moto.server`` in
  its own process, so S3's own CPU is not on the measured core), processed by
  ``nerkit.bulk.runner.run_shard`` exactly as the worker Lambda runs it (skip check, ranged
  GET, parse, engine, results and marker PUTs);
- **worker, documents**: one record per whole document (its sentences joined by spaces).

and prints the all-in cost per 1M sentences and per 1M documents on AWS list prices, from
the measured rates (Lambda GB-s and requests, Step Functions transitions, S3 requests), next
to the REST API path. It only prints numbers; it asserts nothing.

    .venv/bin/python bench/bulk_benchmark.py [--core 0] [--repeat 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "default" / "model.tar.gz"
DEFAULT_DATA = Path("/work/shared/datasets/conll2003/test.txt")
BUCKET = "bulk-bench"

# AWS list prices (us-east-1; /work/shared/notes/field-notes.md, docs/DEPLOY.md).
LAMBDA_GB_SECOND_X86 = 0.0000166667
LAMBDA_REQUEST = 0.20 / 1e6
SFN_TRANSITION = 0.025 / 1000
S3_PUT = 0.005 / 1000
S3_GET = 0.0004 / 1000
WORKER_GB = 1769 / 1024
# One child execution per shard: Work -> ShardDone? -> ShardComplete, plus two for each
# continuation (ShardDone? -> Work -> ShardDone?); the parent's 5 per run are negligible.
TRANSITIONS_PER_SHARD = 3
# Per shard: worker GET marker + ranged GET input + PUT results + PUT marker; summary GET
# marker. (Errors PUT only when there are bad records; the plan's LIST is per 1,000 objects.)
S3_GETS_PER_SHARD, S3_PUTS_PER_SHARD = 3, 2
API_GATEWAY_REQUEST = 3.50 / 1e6  # REST API


def conll(path: Path) -> tuple[list[str], list[str], int]:
    """Sentences, whole documents (sentences joined by spaces) and the sentence count."""
    documents: list[list[str]] = []
    sentence: list[str] = []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("-DOCSTART-"):
            documents.append([])
            continue
        if not line.strip():
            if sentence:
                if not documents:
                    documents.append([])
                documents[-1].append(" ".join(sentence))
                sentence = []
            continue
        sentence.append(line.split()[0])
    sentences = [s for doc in documents for s in doc]
    return sentences, [" ".join(doc) for doc in documents if doc], len(sentences)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("moto.server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--core", type=int, default=0, help="the CPU core to pin to")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    server, endpoint = start_moto()
    # Pinned before onnxruntime is imported; moto.server above keeps its own cores.
    os.sched_setaffinity(0, {args.core})
    os.environ.update(
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    import boto3

    from nerkit.bulk.locations import location
    from nerkit.bulk.model import load_engine
    from nerkit.bulk.plan import Job, plan
    from nerkit.bulk.runner import run_shard

    try:
        sentences, documents, n_sentences = conll(args.data)
        with tempfile.TemporaryDirectory() as cache:
            engine, version = load_engine(str(args.model), None, Path(cache))
            engine.predict(sentences[:64])  # warm-up
            engine_best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                for i in range(0, len(sentences), 32):
                    engine.predict(sentences[i : i + 32])
                engine_best = min(engine_best, time.perf_counter() - started)
            engine_rate = len(sentences) / engine_best

            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            results: dict[str, Any] = {
                "model_version": version,
                "core": args.core,
                "load_average": os.getloadavg(),
                "engine_sentences_per_s": round(engine_rate, 1),
            }
            for name, texts in (("sentences", sentences), ("documents", documents)):
                body = "".join(
                    json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                    for i, t in enumerate(texts)
                ).encode()
                s3.put_object(Bucket=BUCKET, Key=f"in/{name}.jsonl", Body=body)
                best = float("inf")
                for attempt in range(args.repeat):
                    job = Job(
                        input=f"s3://{BUCKET}/in/{name}.jsonl",
                        output=f"s3://{BUCKET}/out/{name}-{attempt}",
                        model_uri=str(args.model),
                        model_version=None,
                    )
                    source, output = location(job.input), location(job.output)
                    started = time.perf_counter()
                    for shard in plan(job, source):
                        run_shard(
                            job,
                            shard,
                            source=source,
                            output=output,
                            engine_for=lambda: (engine, version),
                        )
                    best = min(best, time.perf_counter() - started)
                results[f"worker_{name}"] = {
                    "records": len(texts),
                    "input_bytes": len(body),
                    "seconds": round(best, 2),
                    "records_per_s": round(len(texts) / best, 2),
                    "sentences_per_s": round(n_sentences / best, 1),
                }
        results["cost"] = costs(results)
    finally:
        server.kill()
        server.wait()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def costs(results: dict[str, Any]) -> dict[str, Any]:
    """USD per 1M sentences / documents: measured rates, default 4 MiB shards."""
    out: dict[str, Any] = {}
    for name in ("sentences", "documents"):
        measured = results[f"worker_{name}"]
        records_per_s = measured["records_per_s"]
        bytes_per_record = measured["input_bytes"] / measured["records"]
        shards = 1e6 * bytes_per_record / (4 << 20)
        lambda_seconds = 1e6 / records_per_s
        # A shard continued after a stop costs 2 more transitions and a request; a 4 MiB
        # shard that needs more than 13 minutes is continued once per 13 minutes.
        invocations = shards + lambda_seconds / (13 * 60)
        parts = {
            "lambda_compute": lambda_seconds * WORKER_GB * LAMBDA_GB_SECOND_X86,
            "lambda_requests": invocations * LAMBDA_REQUEST,
            "step_functions": (shards * TRANSITIONS_PER_SHARD + 2 * (invocations - shards))
            * SFN_TRANSITION,
            "s3_requests": shards * (S3_GETS_PER_SHARD * S3_GET + S3_PUTS_PER_SHARD * S3_PUT),
        }
        total = sum(parts.values())
        # The API path for the same work, one record per request: the gateway and Lambda
        # requests plus at least the same compute (the handler adds its own overhead).
        api = (API_GATEWAY_REQUEST + LAMBDA_REQUEST) * 1e6 + parts["lambda_compute"]
        out[f"per_million_{name}"] = {
            **{k: round(v, 4) for k, v in parts.items()},
            "total": round(total, 4),
            "shards": round(shards, 1),
            "rest_api_one_record_per_request": round(api, 2),
            "api_over_bulk": round(api / total, 1),
        }
    return out


if __name__ == "__main__":
    main()
