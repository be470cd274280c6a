"""The admin side of ``make run``: a local admin key and a stand-in training pipeline on
moto's Step Functions, so the admin routes and the page's Models and Train panels work
locally through the same checks as deployed (``nerkit.api.authz``).

Nothing trains locally: the stand-in pipeline waits a few seconds and ends FAILED with
``NoTrainingLocally``, which the page shows like any failed run.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import boto3

from nerkit.api.local_gateway import LOCAL_ADMIN_KEY_ID, new_key

JOB_PREFIX = "nerkit-local-"
STAND_IN_PIPELINE: dict[str, Any] = {
    "Comment": "make run: no SageMaker here",
    "StartAt": "Training",
    "States": {
        "Training": {"Type": "Wait", "Seconds": 3, "Next": "NoTraining"},
        "NoTraining": {
            "Type": "Fail",
            "Error": "NoTrainingLocally",
            "Cause": "make run has no SageMaker: deploy the stack to train",
        },
    },
}


def enable_admin(
    endpoint: str, bucket: str, pipeline: dict[str, Any] | None = None
) -> tuple[str, dict[str, str]]:
    """Create the stand-in pipeline (or ``pipeline``) on moto (``endpoint``; boto3 must
    point there already); return a new local admin key and the environment of the app that
    turns the admin routes on."""
    config = json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode()
    request = urllib.request.Request(f"{endpoint}/moto-api/config", data=config, method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    arn = boto3.client("stepfunctions").create_state_machine(
        name="nerkit-local-training",
        definition=json.dumps(pipeline or STAND_IN_PIPELINE),
        roleArn="arn:aws:iam::123456789012:role/nerkit-local",
    )["stateMachineArn"]
    key = new_key()
    env = {
        "ENABLE_ADMIN": "true",
        "ADMIN_KEY_IDS": LOCAL_ADMIN_KEY_ID,
        "LOCAL_ADMIN_KEY": key,
        "STATE_MACHINE_ARN": arn,
        "DATASETS_URI": f"s3://{bucket}/datasets",
        "TRAINING_JOB_PREFIX": JOB_PREFIX,
        # moto's path-style bucket URL, where the page POSTs uploads (its CSP allows it).
        "UPLOAD_URL": f"{endpoint}/{bucket}",
    }
    return key, env
