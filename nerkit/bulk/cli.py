"""``nerkit-bulk``: entity extraction over files, here (``run``) or on AWS (``start``, ``status``).

::

    nerkit-bulk run --input docs.jsonl --output out/ [--model s3://bucket/models/ner]
    nerkit-bulk start --stack-output cdk-outputs.json --input s3://B/bulk/input/corpus/ \\
        --output s3://B/bulk/output/run1/ [--model-version V]
    nerkit-bulk status <execution ARN>

``run`` executes the same worker code as the Lambda, shard after shard, and shows progress;
``start`` starts the deployed state machine with the caller's AWS credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nerkit.bulk.locations import LocationError, location
from nerkit.bulk.model import pin_version
from nerkit.bulk.plan import DEFAULT_SHARD_BYTES, JobError, Shard
from nerkit.bulk.progress import ProgressReporter
from nerkit.bulk.request import build_request, job_from_request
from nerkit.bulk.runner import DEFAULT_CACHE_DIR, run_local
from nerkit.engine import UnknownLabelsError
from nerkit.errors import ModelError
from nerkit.exit_codes import ExitCode
from nerkit.pipeline.start import StartError, read_outputs

# The committed default model, when running from a checkout of the repository.
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "default" / "model.tar.gz"
# Step Functions execution names: 1-80 characters.
_MAX_NAME = 80

# boto3 generates its clients at runtime and ships no type stubs.
StepFunctionsClient = Any


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="a file, directory or s3:// URI/prefix")
    parser.add_argument("--output", required=True, help="a directory or s3:// prefix")
    parser.add_argument("--model-version", help="default: the LIVE version when the run starts")
    parser.add_argument("--format", choices=["auto", "jsonl", "text"], default="auto")
    parser.add_argument("--id-field", default="id", help="JSON Lines field of the id")
    parser.add_argument("--text-field", default="text", help="JSON Lines field of the text")
    parser.add_argument("--max-text-chars", type=int, help="longer texts are errors (100000)")
    parser.add_argument("--aggregation", choices=["simple", "first", "average", "max"])
    parser.add_argument("--decoding", choices=["viterbi", "argmax"])
    parser.add_argument("--labels", nargs="+", metavar="TYPE", help="keep only these types")
    parser.add_argument("--min-score", type=float, default=0.0)
    parser.add_argument("--max-entities", type=int, help="per record (20000)")
    parser.add_argument("--shard-mb", type=float, help="target shard size (4)")


def _request(args: argparse.Namespace) -> dict[str, Any]:
    return build_request(
        input=args.input,
        output=args.output,
        model_version=args.model_version,
        format=args.format,
        id_field=args.id_field,
        text_field=args.text_field,
        max_text_chars=args.max_text_chars,
        aggregation=args.aggregation or "simple",
        decoding=args.decoding or "viterbi",
        labels=args.labels,
        min_score=args.min_score,
        max_entities=args.max_entities,
        shard_bytes=int(args.shard_mb * (1 << 20)) if args.shard_mb else None,
    )


def cmd_run(args: argparse.Namespace) -> int:
    request = _request(args)
    model_uri = args.model or os.environ.get("MODEL_URI") or str(DEFAULT_MODEL)
    version = pin_version(model_uri, args.model_version, args.labels)
    job = job_from_request(request, model_uri=model_uri, model_version=version)
    reporter = ProgressReporter(sys.stderr)

    def planned(shards: list[Shard]) -> None:
        sizes = {obj.uri: obj.size for obj in location(job.input).list_objects()}
        reporter.planned(
            sum((s.end if s.end is not None else sizes[s.uri]) - s.start for s in shards)
        )

    summary = run_local(
        job,
        shard_bytes=request.get("shardBytes", DEFAULT_SHARD_BYTES),
        cache_dir=args.cache_dir,
        threads=args.threads,
        on_plan=planned,
        on_documents=reporter.advance,
    )
    reporter.finish()
    print(json.dumps({k: v for k, v in summary.items() if k != "per_shard"}, indent=2))
    return 0 if summary["status"] == "SUCCEEDED" else 1


def cmd_start(args: argparse.Namespace, client: StepFunctionsClient | None) -> int:
    outputs, _ = read_outputs(args.stack_output, args.stack)
    if "BulkStateMachineArn" not in outputs:
        raise StartError(f"{args.stack_output} has no BulkStateMachineArn output")
    request = _request(args)
    name = args.name or "bulk-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    if not 1 <= len(name) <= _MAX_NAME:
        raise StartError(f"execution names are 1-{_MAX_NAME} characters")
    client = client or _stepfunctions()
    response = client.start_execution(
        stateMachineArn=outputs["BulkStateMachineArn"], name=name, input=json.dumps(request)
    )
    arn = response["executionArn"]
    print(json.dumps({"executionArn": arn, "input": request}, indent=2))
    print(f"Follow it: nerkit-bulk status {arn}", file=sys.stderr)
    return 0


def execution_status(arn: str, client: StepFunctionsClient) -> dict[str, Any]:
    """What ``status`` prints: the execution, its Map run's item counts, the summary."""
    execution = client.describe_execution(executionArn=arn)
    request = json.loads(execution.get("input") or "{}")
    status: dict[str, Any] = {
        "executionArn": arn,
        "status": execution["status"],
        "startDate": str(execution["startDate"]),
        "stopDate": str(execution["stopDate"]) if execution.get("stopDate") else None,
    }
    for map_run in client.list_map_runs(executionArn=arn).get("mapRuns", []):
        counts = client.describe_map_run(mapRunArn=map_run["mapRunArn"]).get("itemCounts", {})
        status["shards"] = {
            key: counts.get(key, 0)
            for key in ("total", "succeeded", "failed", "running", "pending")
        }
    if execution.get("error"):
        status["error"] = {"error": execution["error"], "cause": execution.get("cause")}
    output = request.get("output")
    raw = location(output).get("summary.json") if output else None
    if raw is not None:
        summary = json.loads(raw)
        if summary.get("run_id") == execution.get("name"):
            status["summary"] = {k: v for k, v in summary.items() if k != "per_shard"}
            started = datetime.fromisoformat(summary["timings"]["started_at"])
            finished = datetime.fromisoformat(summary["timings"]["finished_at"])
            seconds = (finished - started).total_seconds()
            status["documents_per_second"] = (
                round(summary["totals"]["documents"] / seconds, 1) if seconds > 0 else None
            )
    return status


def cmd_status(args: argparse.Namespace, client: StepFunctionsClient | None) -> int:
    status = execution_status(args.execution, client or _stepfunctions())
    print(json.dumps(status, indent=2, default=str))
    return 0 if status["status"] in ("RUNNING", "SUCCEEDED") else 1


def _stepfunctions() -> StepFunctionsClient:
    import boto3

    return boto3.client("stepfunctions")


def main(argv: Sequence[str] | None = None, *, client: StepFunctionsClient | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nerkit-bulk", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run here, with the same worker code as on AWS")
    _add_job_options(run)
    run.add_argument("--model", help="s3://bucket/prefix (LIVE), a .tar.gz or a directory")
    run.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    run.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    start = commands.add_parser("start", help="start a run of the deployed state machine")
    _add_job_options(start)
    start.add_argument("--stack-output", type=Path, required=True, help="cdk --outputs-file")
    start.add_argument("--stack", help="stack name, if the outputs file holds several")
    start.add_argument("--name", help="execution name (default: bulk-<UTC time>)")
    status = commands.add_parser("status", help="shards done/failed, documents/s, summary")
    status.add_argument("execution", help="the execution ARN that start printed")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "start":
            return cmd_start(args, client)
        return cmd_status(args, client)
    except (JobError, StartError, UnknownLabelsError) as exc:  # asked for what cannot run
        print(f"nerkit-bulk: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except (LocationError, ModelError) as exc:
        print(f"nerkit-bulk: error: {exc}", file=sys.stderr)
        return ExitCode.ERROR


if __name__ == "__main__":
    sys.exit(main())
