"""Start a training pipeline execution (SageMaker training -> quality gate -> publish).

Usage, with the outputs file that ``npx cdk deploy --outputs-file cdk-outputs.json`` writes::

    python -m nerkit.pipeline.start --stack-output cdk-outputs.json \\
        --train s3://<bucket>/datasets/conll03/train/ \\
        --validation s3://<bucket>/datasets/conll03/validation/ \\
        [--test s3://<bucket>/datasets/conll03/test/] [--hp epochs=3 --hp lr=5e-5] \\
        [--job-name nerkit-prod-my-run] [--stack Nerkit-prod]

or from one input, holding out validation (and test) inside the job::

    python -m nerkit.pipeline.start --stack-output cdk-outputs.json \\
        --train s3://<bucket>/datasets/mine/ --split 0.1,0.1 [--max-sentences 2000]

Exit status (``nerkit.exit_codes``): 0 started, 1 error (an AWS call failed), 2 usage
(bad arguments or outputs file).

It uses the caller's own AWS credentials (``states:StartExecution`` on the state machine is
what protects the pipeline); nothing here needs an API key. The execution and the SageMaker
job share one name, so the same run cannot be started twice.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from nerkit.cli_text import plain
from nerkit.exit_codes import ExitCode
from nerkit.split_options import add_split_arguments, split_arguments_as_hyperparameters

REQUIRED_CHANNELS = ("train",)
# validation is optional only when the job holds it out of train (validation_split).
OPTIONAL_CHANNELS = ("validation", "test")
# SageMaker training job names: 1-63 characters, alphanumerics and hyphens.
# Anchored: JSON Schema's pattern (the admin route publishes it) matches anywhere otherwise.
JOB_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
_JOB_NAME_RE = re.compile(JOB_NAME_PATTERN)
# SageMaker's limits for hyperparameter keys and values, and how many a job may have.
HP_KEY_MAX, HP_VALUE_MAX, MAX_HYPERPARAMETERS = 256, 2500, 100

# boto3 generates its clients at runtime and ships no type stubs.
StepFunctionsClient = Any


# The kind of a refusal of where validation data comes from (a channel or validation_split).
VALIDATION_SOURCE = "validation_source"


class StartError(ValueError):
    """The run cannot be started as asked; the message says what to fix, ``kind`` which rule
    it broke (the admin API's error detail type)."""

    def __init__(self, message: str, kind: str = "invalid_run") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class StackOutputs:
    """What a run needs from the deployed stack (``cdk deploy --outputs-file``)."""

    state_machine_arn: str
    datasets_uri: str
    job_prefix: str

    @classmethod
    def read(cls, path: Path, stack: str | None = None) -> StackOutputs:
        outputs, stack = read_outputs(path, stack)
        try:
            return cls(
                state_machine_arn=outputs["StateMachineArn"],
                datasets_uri=outputs["DatasetsUri"],
                job_prefix=outputs["TrainingJobPrefix"],
            )
        except KeyError as exc:
            raise StartError(f"stack {stack} in {path} has no output {exc}") from None


def read_outputs(path: Path, stack: str | None = None) -> tuple[dict[str, Any], str]:
    """One stack's outputs from a ``cdk deploy --outputs-file`` JSON, and the stack's name
    (``stack`` may be omitted when the file holds one stack)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StartError(f"cannot read stack outputs {path}: {exc}") from None
    if not isinstance(document, dict) or not document:
        raise StartError(f"{path} is not a `cdk deploy --outputs-file` JSON object")
    if stack is None:
        if len(document) != 1:
            raise StartError(f"{path} holds stacks {sorted(document)}: choose one with --stack")
        stack = next(iter(document))
    outputs = document.get(stack)
    if not isinstance(outputs, dict):
        raise StartError(f"{path} has no stack {stack!r}")
    return outputs, stack


def parse_hyperparameters(pairs: Sequence[str]) -> dict[str, str]:
    """``["epochs=3", "lr=5e-5"]`` -> ``{"epochs": "3", "lr": "5e-5"}``: SageMaker passes
    hyperparameters to the container as strings, so they are sent as strings."""
    hyperparameters: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise StartError(f"hyperparameter {pair!r} is not key=value")
        hyperparameters[key] = value
    return hyperparameters


def _check_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """As strings (the SageMaker contract), within SageMaker's limits."""
    if len(hyperparameters) > MAX_HYPERPARAMETERS:
        raise StartError(f"at most {MAX_HYPERPARAMETERS} hyperparameters")
    checked = {str(key).strip(): str(value) for key, value in hyperparameters.items()}
    for key, value in checked.items():
        if not key:
            raise StartError("a hyperparameter has an empty name")
        if len(key) > HP_KEY_MAX or len(value) > HP_VALUE_MAX:
            raise StartError(f"hyperparameter {key!r} exceeds SageMaker's size limits")
    return checked


def data_hyperparameters(args: argparse.Namespace) -> dict[str, str]:
    try:
        return split_arguments_as_hyperparameters(args)
    except ValueError as exc:
        raise StartError(str(exc)) from None


def default_job_name(prefix: str, now: datetime | None = None) -> str:
    return prefix + (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")


def build_input(
    *,
    job_name: str,
    channels: Mapping[str, str],
    hyperparameters: Mapping[str, Any],
    datasets_uri: str | None = None,
    job_prefix: str | None = None,
) -> dict[str, Any]:
    """The execution input the state machine expects (infra/training.py), validated here so
    a mistake fails now rather than minutes later inside SageMaker: the one check of a run's
    input, for this CLI and the admin API (``POST /v1/training-runs``) alike."""
    if not _JOB_NAME_RE.fullmatch(job_name):
        raise StartError(
            f"job name {job_name!r}: 1-63 letters, digits and hyphens, starting and ending "
            "with a letter or digit"
        )
    if job_prefix and not job_name.startswith(job_prefix):
        raise StartError(f"job name {job_name!r} must start with {job_prefix!r}", "job_prefix")
    missing = [name for name in REQUIRED_CHANNELS if not channels.get(name)]
    if missing:
        raise StartError(f"missing channel(s): {', '.join(missing)}")
    _check_validation_source(channels, hyperparameters)
    _check_gate_inputs(hyperparameters)
    unknown = sorted(set(channels) - {*REQUIRED_CHANNELS, *OPTIONAL_CHANNELS})
    if unknown:
        raise StartError(f"unknown channel(s): {', '.join(unknown)}")
    selected = {name: uri for name, uri in channels.items() if uri}
    for name, uri in selected.items():
        if not uri.startswith("s3://"):
            raise StartError(f"channel {name}: {uri!r} is not an s3:// URI")
        # The training role may read the datasets prefix only.
        if datasets_uri and not uri.startswith(datasets_uri.rstrip("/") + "/"):
            raise StartError(
                f"channel {name}: {uri} is outside {datasets_uri}/", "outside_datasets"
            )
    return {
        "jobName": job_name,
        "channels": selected,
        "hyperparameters": _check_hyperparameters(hyperparameters),
    }


# A train+validation release run writes reference_validation_f1 as the gate's metric; in the
# pipeline that number would be whatever the caller typed, so such runs stay on the local CLI
# (nerkit-train train --reference), which reads it from the reference model's manifest.
_GATE_INPUTS = ("train_channels", "reference_validation_f1", "reference_model")


def _check_gate_inputs(hyperparameters: Mapping[str, Any]) -> None:
    """Refuse hyperparameters that would set the quality gate's own metric."""
    given = [name for name in _GATE_INPUTS if name in hyperparameters]
    if given:
        raise StartError(
            f"{', '.join(given)}: a run that trains on validation takes its gate metric from a "
            "reference model, which the pipeline cannot check; run it with nerkit-train train "
            "--reference and publish it through the gate (nerkit-models publish)"
        )


def _check_validation_source(
    channels: Mapping[str, str], hyperparameters: Mapping[str, Any]
) -> None:
    """Validation data comes from a channel or from a split of train: exactly one of them."""
    splits = _float(hyperparameters.get("validation_split", "0")) > 0
    if channels.get("validation") and splits:
        raise StartError(
            "give a validation channel or validation_split (--split), not both", VALIDATION_SOURCE
        )
    if not channels.get("validation") and not splits:
        raise StartError(
            "missing channel: validation (give --validation, or --split 0.1 to hold out 10% "
            "of train)",
            VALIDATION_SOURCE,
        )
    if channels.get("test") and not channels.get("validation"):
        raise StartError(
            "a test channel needs a validation channel; with --split the test set is held "
            "out of train too (--split 0.1,0.1)",
            VALIDATION_SOURCE,
        )


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StartError(f"validation_split={value!r} is not a number", VALIDATION_SOURCE) from None


def start_training(
    state_machine_arn: str,
    execution_input: Mapping[str, Any],
    *,
    client: StepFunctionsClient | None = None,
) -> str:
    """Start the execution (named after the job); return its ARN."""
    client = client or boto3.client("stepfunctions")
    response = client.start_execution(
        stateMachineArn=state_machine_arn,
        name=execution_input["jobName"],
        input=json.dumps(execution_input),
    )
    return response["executionArn"]


def main(argv: Sequence[str] | None = None, *, client: StepFunctionsClient | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nerkit.pipeline.start",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--stack-output",
        type=Path,
        required=True,
        help="the JSON written by `npx cdk deploy --outputs-file`",
    )
    parser.add_argument("--stack", help="stack name, if the outputs file holds several")
    parser.add_argument("--train", required=True, help="s3:// prefix of the train channel")
    parser.add_argument(
        "--validation", help="s3:// prefix of the validation set (or --split to hold it out)"
    )
    parser.add_argument("--test", help="s3:// prefix of the test set (optional)")
    add_split_arguments(parser)
    parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter for the training job (repeatable)",
    )
    parser.add_argument("--job-name", help="default: <TrainingJobPrefix><UTC timestamp>")
    args = parser.parse_args(argv)
    try:
        outputs = StackOutputs.read(args.stack_output, args.stack)
        execution_input = build_input(
            job_name=args.job_name or default_job_name(outputs.job_prefix),
            channels={"train": args.train, "validation": args.validation, "test": args.test},
            hyperparameters={**parse_hyperparameters(args.hp), **data_hyperparameters(args)},
            datasets_uri=outputs.datasets_uri,
            job_prefix=outputs.job_prefix,
        )
    except StartError as exc:
        parser.error(str(exc))
    arn = start_training(outputs.state_machine_arn, execution_input, client=client)
    print(json.dumps({"executionArn": arn, "input": execution_input}, indent=2))
    print(f"Follow it: aws stepfunctions describe-execution --execution-arn {arn}", file=sys.stderr)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
