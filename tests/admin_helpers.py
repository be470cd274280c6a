"""Shared by the admin tests: moto's Step Functions and S3 as the admin routes find them, the
admin app's settings and a model store with published versions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
from helpers import dummy_tarball
from moto import mock_aws

from nerkit.api.settings import Settings
from nerkit.store import ModelStore, S3Client

BUCKET = "nerkit-data"
DATASETS = f"s3://{BUCKET}/datasets"
MODEL_URI = f"s3://{BUCKET}/models/ner"
ADMIN_KEY_ID = "adminkey01"
PREFIX = "nerkit-prod-"
# Stands in for the pipeline (infra/training.py) with what a finished run leaves: a passed
# gate's outcome in $.gate, or a rejection failing the execution with GateFailed.
PIPELINE = {
    "StartAt": "Verdict",
    "States": {
        "Verdict": {
            "Type": "Choice",
            "Choices": [
                {
                    "Variable": "$.hyperparameters.verdict",
                    "StringEquals": "reject",
                    "Next": "ModelRejected",
                }
            ],
            "Default": "Gate",
        },
        "Gate": {
            "Type": "Pass",
            "Result": {
                "published": True,
                "version": "v3",
                "reason": "validation F1 0.91 >= 0.80",
                "f1": 0.91,
                "previous": "v2",
                "previousF1": 0.88,
            },
            "ResultPath": "$.gate",
            "End": True,
        },
        "ModelRejected": {
            "Type": "Fail",
            "Error": "GateFailed",
            "Cause": json.dumps(
                {"errorMessage": "model v4 rejected: validation F1 0.5 < 0.8", "errorType": "x"}
            ),
        },
    },
}


@contextmanager
def admin_aws() -> Iterator[SimpleNamespace]:
    """moto with Step Functions executing definitions; the bucket and the state machine
    (needs fake credentials: the ``aws_credentials`` fixture)."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        sfn = boto3.client("stepfunctions")
        arn = sfn.create_state_machine(
            name="nerkit-prod-training",
            definition=json.dumps(PIPELINE),
            roleArn="arn:aws:iam::123456789012:role/nerkit-sfn",
        )["stateMachineArn"]
        yield SimpleNamespace(s3=s3, sfn=sfn, state_machine_arn=arn)


def admin_settings(state_machine_arn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "MODEL_URI": MODEL_URI,
        "ENABLE_PAGE": "false",
        "ENABLE_ADMIN": "true",
        "ADMIN_KEY_IDS": f"{ADMIN_KEY_ID},otherkey2",
        "STATE_MACHINE_ARN": state_machine_arn,
        "DATASETS_URI": DATASETS,
        "TRAINING_JOB_PREFIX": PREFIX,
        "MAX_UPLOAD_BYTES": "1000",
        **overrides,
    }
    return Settings.from_env(values)


def published_store(s3: S3Client, work: Path) -> ModelStore:
    """The store at MODEL_URI with v1, v2, v3 published in turn (v3 LIVE, history v2, v1)."""
    store = ModelStore.from_uri(MODEL_URI, s3)
    for index, (version, f1) in enumerate((("v1", 0.8), ("v2", 0.81), ("v3", 0.82))):
        metrics = {
            "validation": {
                "f1": f1,
                "per_type": {"PER": {"f1": 0.9}, "LOC": {"f1": 0.7}},
            },
            "test": {"f1": 0.75},
        }
        (work / version).mkdir()
        tarball = dummy_tarball(
            work / version, version, metrics=metrics, created_at=f"2026-11-0{index + 1}T00:00:00Z"
        )
        store.set_live(store.upload(tarball))
    return store
