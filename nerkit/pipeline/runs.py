"""Training runs as the admin API shows them: Step Functions executions of the pipeline,
read back with their status, input and the quality gate's verdict.

An execution is named after its training job (``nerkit.pipeline.start``), so a run's id is
that name. The gate's verdict comes from the execution: a run that passed ends SUCCEEDED with
the gate's outcome in ``$.gate`` (``nerkit.pipeline.gate``); a rejected model fails the
execution with the error ``GateFailed`` and the gate's message as the cause; any other failure
(the training job's, a crashed gate) fails before a verdict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config

from nerkit.pipeline.start import StepFunctionsClient

# Inside an API request (API Gateway: 29 s): each call at most 2 attempts of 2 s connect +
# 5 s read; the describes of a listing run side by side, so a listing costs about one call.
CLIENT_CONFIG = Config(
    connect_timeout=2, read_timeout=5, retries={"mode": "standard", "total_max_attempts": 2}
)
MAX_LISTED_RUNS = 20
_PARALLEL_DESCRIBES = 8
# The gate's error type for a model it refused (nerkit.publish.GateFailed).
GATE_REFUSED = "GateFailed"
_MAX_MESSAGE_CHARS = 1000


def new_client() -> StepFunctionsClient:
    return boto3.client("stepfunctions", config=CLIENT_CONFIG)


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str | None = None
    version: str | None = None
    f1: float | None = None
    previous_version: str | None = None
    previous_f1: float | None = None


@dataclass(frozen=True)
class Run:
    id: str
    status: str
    started_at: datetime
    ended_at: datetime | None = None
    channels: dict[str, str] = field(default_factory=dict)
    hyperparameters: dict[str, str] = field(default_factory=dict)
    gate: GateVerdict | None = None
    error: str | None = None


def execution_arn(state_machine_arn: str, name: str) -> str:
    """The ARN of execution ``name`` of the state machine (the two ARNs differ in one word)."""
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


def describe_run(client: StepFunctionsClient, arn: str) -> Run:
    """The run of execution ``arn`` (botocore's ``ExecutionDoesNotExist`` when absent)."""
    execution = client.describe_execution(executionArn=arn)
    run_input = _json_object(execution.get("input"))
    status = execution["status"]
    gate, error = None, None
    if status == "SUCCEEDED":
        gate = _verdict(_json_object(execution.get("output")).get("gate"))
    elif status in ("FAILED", "TIMED_OUT", "ABORTED"):
        message = _cause_message(execution.get("cause")) or status.lower()
        code = execution.get("error")
        if code == GATE_REFUSED:
            gate = GateVerdict(passed=False, reason=message)
        error = f"{code}: {message}" if code else message
    return Run(
        id=execution["name"],
        status=status,
        started_at=execution["startDate"],
        ended_at=execution.get("stopDate"),
        channels=_strings(run_input.get("channels")),
        hyperparameters=_strings(run_input.get("hyperparameters")),
        gate=gate,
        error=error,
    )


def recent_runs(client: StepFunctionsClient, state_machine_arn: str, limit: int) -> list[Run]:
    """The ``limit`` (at most ``MAX_LISTED_RUNS``) most recent runs, newest first."""
    limit = max(1, min(limit, MAX_LISTED_RUNS))
    listed = client.list_executions(stateMachineArn=state_machine_arn, maxResults=limit)
    arns = [item["executionArn"] for item in listed["executions"]][:limit]
    with ThreadPoolExecutor(max_workers=_PARALLEL_DESCRIBES) as pool:
        runs = list(pool.map(lambda arn: describe_run(client, arn), arns))
    return sorted(runs, key=lambda run: run.started_at, reverse=True)


def _verdict(outcome: Any) -> GateVerdict | None:
    if not isinstance(outcome, dict):
        return None
    return GateVerdict(
        passed=bool(outcome.get("published")),
        reason=_text(outcome.get("reason")),
        version=_text(outcome.get("version")),
        f1=number(outcome.get("f1")),
        previous_version=_text(outcome.get("previous")),
        previous_f1=number(outcome.get("previousF1")),
    )


def _cause_message(cause: Any) -> str | None:
    """A Lambda error's cause is JSON with ``errorMessage``; other causes are plain text."""
    if not isinstance(cause, str) or not cause:
        return None
    parsed = _json_object(cause)
    message = parsed.get("errorMessage") if parsed else cause
    return str(message)[:_MAX_MESSAGE_CHARS]


def _json_object(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> dict[str, str]:
    items: Iterator[tuple[Any, Any]] = iter(value.items()) if isinstance(value, dict) else iter(())
    return {str(key): str(item) for key, item in items}


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None


def number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number (not a bool), else ``None``."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
