"""The plan pins a model version: a requested version and entity types are checked against
the store before any shard runs, so a typo fails the run at once, not in every worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from helpers import FAKE_AWS_ENV
from moto import mock_aws

from nerkit.artifact import read_manifest
from nerkit.bulk.handlers import plan_handler
from nerkit.bulk.model import pin_version
from nerkit.bulk.plan import JobError
from nerkit.decoding import OUTSIDE, entity_group_name
from nerkit.store import ModelStore

BUCKET = "nerkit-bulk-model"
MODEL_URI = f"s3://{BUCKET}/models/ner"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tiny_artifact_tar: Path) -> Iterator[tuple[Any, str]]:
    """A store whose only version is LIVE; the client and that version."""
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        models = ModelStore(BUCKET, "models/ner", client)
        version = models.upload(tiny_artifact_tar)
        models.set_live(version)
        yield client, version


def an_entity_type(tiny_artifact_dir: Path) -> str:
    labels = read_manifest(tiny_artifact_dir)["labels"]
    return next(entity_group_name(label) for label in labels if label != OUTSIDE)


def test_a_requested_version_that_exists_is_pinned(
    store: tuple[Any, str], tiny_artifact_dir: Path
) -> None:
    _, version = store
    assert pin_version(MODEL_URI, version, [an_entity_type(tiny_artifact_dir)]) == version
    assert pin_version(MODEL_URI) == version  # LIVE


@pytest.mark.parametrize(
    ("requested", "message"),
    [("v404", "model version v404 not found"), ("../v1", "invalid model version")],
)
def test_a_requested_version_that_does_not_exist_or_cannot_is_a_job_error(
    store: tuple[Any, str], requested: str, message: str
) -> None:
    with pytest.raises(JobError, match=message):
        pin_version(MODEL_URI, requested)


@pytest.mark.parametrize("requested", [True, False])
def test_entity_types_the_pinned_version_lacks_are_a_job_error(
    store: tuple[Any, str], tiny_artifact_dir: Path, requested: bool
) -> None:
    _, version = store
    known = an_entity_type(tiny_artifact_dir)
    with pytest.raises(JobError, match=r"unknown entity types \['FOOD'\]"):
        pin_version(MODEL_URI, version if requested else None, [known, "FOOD"])


def test_the_plan_fails_on_a_typo_before_writing_a_manifest(
    store: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = store
    client.put_object(Bucket=BUCKET, Key="bulk/input/a.jsonl", Body=b'{"text": "Paris"}\n')
    monkeypatch.setenv("BULK_MODEL_URI", MODEL_URI)
    monkeypatch.setenv("BULK_MANIFEST_URI", f"s3://{BUCKET}/bulk/manifests")
    monkeypatch.setenv("BULK_INPUT_LOCATIONS", f"s3://{BUCKET}/bulk/input/")
    monkeypatch.setenv("BULK_OUTPUT_LOCATIONS", f"s3://{BUCKET}/bulk/output/")
    request = {
        "input": f"s3://{BUCKET}/bulk/input/",
        "output": f"s3://{BUCKET}/bulk/output/run-1/",
        "modelVersion": "v-typo",
    }
    with pytest.raises(JobError, match="model version v-typo not found"):
        plan_handler({"request": request, "runId": "run-1"}, None)
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="bulk/manifests/")
    assert "Contents" not in listed
