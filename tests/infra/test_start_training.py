"""nerkit.pipeline.start against moto Step Functions: the execution input the state machine
expects (channels, hyperparameters as strings, job name) and the CLI's refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from nerkit.pipeline.start import (
    StackOutputs,
    StartError,
    build_input,
    default_job_name,
    main,
    parse_hyperparameters,
    start_training,
)

STACK = "Nerkit-prod"
DATASETS = "s3://nerkit-data/datasets"
PASS_STATE = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})


@pytest.fixture
def sfn(mocked_aws: None) -> Any:
    return boto3.client("stepfunctions")


@pytest.fixture
def state_machine_arn(sfn: Any) -> str:
    return sfn.create_state_machine(
        name="nerkit-prod-training",
        definition=PASS_STATE,
        roleArn="arn:aws:iam::123456789012:role/nerkit-sfn",
    )["stateMachineArn"]


def outputs_file(tmp_path: Path, arn: str, stacks: tuple[str, ...] = (STACK,)) -> Path:
    """What `npx cdk deploy --outputs-file` writes (output names from infra/stack.py)."""
    document = {
        stack: {
            "StateMachineArn": arn,
            "DatasetsUri": DATASETS,
            "TrainingJobPrefix": "nerkit-prod-",
            "BucketName": "nerkit-data",
        }
        for stack in stacks
    }
    path = tmp_path / "cdk-outputs.json"
    path.write_text(json.dumps(document))
    return path


def test_cli_starts_an_execution_with_the_expected_input(
    sfn: Any, state_machine_arn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--stack-output", str(outputs_file(tmp_path, state_machine_arn)),
        "--train", f"{DATASETS}/conll03/train/",
        "--validation", f"{DATASETS}/conll03/validation/",
        "--test", f"{DATASETS}/conll03/test/",
        "--hp", "epochs=3",
        "--hp", "learning_rate=5e-5",
        "--hp", "note=a=b",
        "--job-name", "nerkit-prod-run-1",
    ]  # fmt: skip

    assert main(argv, client=sfn) == 0

    printed = json.loads(capsys.readouterr().out)
    execution = sfn.describe_execution(executionArn=printed["executionArn"])
    assert execution["name"] == "nerkit-prod-run-1"
    assert execution["stateMachineArn"] == state_machine_arn
    assert json.loads(execution["input"]) == {
        "jobName": "nerkit-prod-run-1",
        "channels": {
            "train": f"{DATASETS}/conll03/train/",
            "validation": f"{DATASETS}/conll03/validation/",
            "test": f"{DATASETS}/conll03/test/",
        },
        "hyperparameters": {"epochs": "3", "learning_rate": "5e-5", "note": "a=b"},
    }


def test_cli_defaults_job_name_and_leaves_out_an_absent_test_channel(
    sfn: Any, state_machine_arn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--stack-output", str(outputs_file(tmp_path, state_machine_arn)),
        "--train", f"{DATASETS}/a/train/",
        "--validation", f"{DATASETS}/a/validation/",
    ]  # fmt: skip

    main(argv, client=sfn)

    sent = json.loads(capsys.readouterr().out)["input"]
    assert sent["jobName"].startswith("nerkit-prod-")
    assert set(sent["channels"]) == {"train", "validation"}
    assert sent["hyperparameters"] == {}
    (execution,) = sfn.list_executions(stateMachineArn=state_machine_arn)["executions"]
    assert execution["name"] == sent["jobName"]


def test_start_training_as_a_function(sfn: Any, state_machine_arn: str) -> None:
    execution_input = build_input(
        job_name="nerkit-prod-fn",
        channels={"train": f"{DATASETS}/t/", "validation": f"{DATASETS}/v/"},
        hyperparameters={"epochs": 2, "fp16": True, "lr": 3e-5},
    )

    arn = start_training(state_machine_arn, execution_input, client=sfn)

    sent = json.loads(sfn.describe_execution(executionArn=arn)["input"])
    # SageMaker passes hyperparameters as strings: they are sent as strings.
    assert sent["hyperparameters"] == {"epochs": "2", "fp16": "True", "lr": "3e-05"}


def test_default_job_name_is_a_valid_sagemaker_name() -> None:
    name = default_job_name("nerkit-prod-", datetime(2026, 11, 23, 13, 0, 5, tzinfo=UTC))

    assert name == "nerkit-prod-20261123-130005"
    build_input(job_name=name, channels={"train": "s3://b/t", "validation": "s3://b/v"},
                hyperparameters={})  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": {"train": "s3://nerkit-data/datasets/t/"}}, "missing channel"),
        ({"channels": {"train": "s3://other/x/", "validation": "s3://nerkit-data/datasets/v/"}},
         "outside"),
        ({"channels": {"train": "/local/t", "validation": "s3://nerkit-data/datasets/v/"}},
         "not an s3:// URI"),
        ({"channels": {"train": "s3://nerkit-data/datasets/t/",
                       "validation": "s3://nerkit-data/datasets/v/", "dev": "s3://x/"}},
         "unknown channel"),
        ({"job_name": "other-team-run"}, "must start with"),
        ({"job_name": "nerkit-prod-bad_name"}, "job name"),
        ({"hyperparameters": {"k" * 257: "1"}}, "exceeds SageMaker's size limits"),
        ({"hyperparameters": {"epochs": "9" * 2501}}, "exceeds SageMaker's size limits"),
        ({"hyperparameters": {f"h{i}": "1" for i in range(101)}}, "at most 100"),
        ({"hyperparameters": {" ": "1"}}, "empty name"),
    ],
)  # fmt: skip
def test_build_input_refuses_what_would_fail_later(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "job_name": "nerkit-prod-ok",
        "channels": {
            "train": "s3://nerkit-data/datasets/t/",
            "validation": "s3://nerkit-data/datasets/v/",
        },
        "hyperparameters": {},
        "datasets_uri": DATASETS,
        "job_prefix": "nerkit-prod-",
        **kwargs,
    }

    with pytest.raises(StartError, match=message):
        build_input(**arguments)


def test_hyperparameters_must_be_key_value() -> None:
    with pytest.raises(StartError, match="key=value"):
        parse_hyperparameters(["epochs"])


def test_outputs_file_with_several_stacks_needs_a_choice(tmp_path: Path) -> None:
    path = outputs_file(tmp_path, "arn:aws:states:::x", stacks=("Nerkit-dev", STACK))

    with pytest.raises(StartError, match="--stack"):
        StackOutputs.read(path)
    assert StackOutputs.read(path, STACK).job_prefix == "nerkit-prod-"


def test_cli_reports_bad_arguments_without_starting_anything(
    sfn: Any, state_machine_arn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--stack-output", str(outputs_file(tmp_path, state_machine_arn)),
        "--train", "s3://somewhere-else/train/",
        "--validation", f"{DATASETS}/v/",
    ]  # fmt: skip

    with pytest.raises(SystemExit) as exited:
        main(argv, client=sfn)

    assert exited.value.code == 2
    assert "outside s3://nerkit-data/datasets/" in capsys.readouterr().err
    assert sfn.list_executions(stateMachineArn=state_machine_arn)["executions"] == []


def test_cli_starts_a_run_that_splits_one_input(
    sfn: Any, state_machine_arn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--stack-output", str(outputs_file(tmp_path, state_machine_arn)),
        "--train", f"{DATASETS}/mine/", "--split", "0.1,0.05", "--max-sentences", "500",
    ]  # fmt: skip

    assert main(argv, client=sfn) == 0

    sent = json.loads(capsys.readouterr().out)["input"]
    assert sent["channels"] == {"train": f"{DATASETS}/mine/"}
    assert sent["hyperparameters"] == {
        "validation_split": "0.1",
        "test_split": "0.05",
        "max_sentences": "500",
    }


@pytest.mark.parametrize(
    ("channels", "hyperparameters", "message"),
    [
        ({"train": "s3://b/t"}, {}, r"missing channel: validation \(give --validation, or --split"),
        ({"train": "s3://b/t", "validation": "s3://b/v"}, {"validation_split": "0.1"},
         "not both"),
        ({"train": "s3://b/t", "test": "s3://b/x"}, {"validation_split": "0.1"},
         "a test channel needs a validation channel"),
        ({"train": "s3://b/t"}, {"validation_split": "a tenth"}, "is not a number"),
    ],
)  # fmt: skip
def test_validation_comes_from_a_channel_or_a_split(
    channels: dict[str, str], hyperparameters: dict[str, str], message: str
) -> None:
    with pytest.raises(StartError, match=message):
        build_input(job_name="nerkit-prod-1", channels=channels, hyperparameters=hyperparameters)


def test_cli_refuses_a_bad_split(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = [
        "--stack-output", str(outputs_file(tmp_path, "arn:aws:states:::x")),
        "--train", f"{DATASETS}/mine/", "--split", "0.6,0.5",
    ]  # fmt: skip

    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == 2
    assert "leave nothing to train on" in capsys.readouterr().err


@pytest.mark.parametrize(
    "hyperparameters",
    [
        {"train_channels": "train,validation"},
        {"reference_validation_f1": "0.99", "reference_model": "anything"},
    ],
)
def test_a_run_cannot_set_the_gates_metric(hyperparameters: dict[str, str]) -> None:
    """reference_validation_f1 becomes the manifest's gated validation F1: typed in by the
    caller of the pipeline, it would let any model past the gate."""
    with pytest.raises(StartError, match="gate metric from a reference model"):
        build_input(
            job_name="nerkit-prod-ok",
            channels={
                "train": "s3://nerkit-data/datasets/t/",
                "validation": "s3://nerkit-data/datasets/v/",
            },
            hyperparameters=hyperparameters,
            datasets_uri=DATASETS,
            job_prefix="nerkit-prod-",
        )
