"""Request and response bodies of the admin routes (``nerkit.api.admin``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from nerkit.api.schemas import NON_BLANK
from nerkit.pipeline.datasets import CHANNELS, FILENAME_PATTERN, MAX_NAME_CHARS, NAME_PATTERN
from nerkit.pipeline.runs import MAX_LISTED_RUNS
from nerkit.pipeline.start import (
    HP_KEY_MAX,
    HP_VALUE_MAX,
    JOB_NAME_PATTERN,
    MAX_HYPERPARAMETERS,
    VALIDATION_SOURCE,
)
from nerkit.store.uri import VERSION_PATTERN

# An S3 URI's key is at most 1,024 bytes; with "s3://" and a bucket name this bounds it.
S3Uri = Annotated[str, Field(min_length=6, max_length=1100, pattern=r"^s3://")]
# Rules the routes check with the command lines' code (nerkit.pipeline.start,
# nerkit.pipeline.datasets, nerkit.store.uri) are published from the same constants
# (``json_schema_extra``), so a client generated from the schema knows them and the checks,
# with their messages, stay in one place.
HyperparameterValue = (
    Annotated[str, Field(json_schema_extra={"maxLength": HP_VALUE_MAX})] | int | float | bool
)
# The rules of a request the published schema cannot state, as the types of their 422
# details: they depend on the deployment (its job prefix, its datasets prefix) or on a
# hyperparameter's value (validation data from a channel or from validation_split, not both).
UNPUBLISHED_ADMIN_RULES = frozenset({"job_prefix", "outside_datasets", VALIDATION_SOURCE})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingRunRequest(_Strict):
    train: S3Uri = Field(description="s3:// prefix of the train channel, under the datasets URI")
    validation: S3Uri | None = Field(
        None,
        description="s3:// prefix of the validation channel; without one, validation_split "
        "(a hyperparameter) holds validation out of train",
    )
    test: S3Uri | None = Field(None, description="s3:// prefix of the test channel (optional)")
    hyperparameters: dict[Annotated[str, Field(max_length=HP_KEY_MAX)], HyperparameterValue] = (
        Field(
            default_factory=dict,
            max_length=MAX_HYPERPARAMETERS,
            description="Sent to the training job as strings (e.g. epochs, learning_rate)",
            json_schema_extra={"propertyNames": {"maxLength": HP_KEY_MAX, "pattern": NON_BLANK}},
        )
    )
    job_name: Annotated[str, Field(json_schema_extra={"pattern": JOB_NAME_PATTERN})] | None = Field(
        None,
        description="Default: the deployment's job prefix and a UTC timestamp",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "train": "s3://my-bucket/datasets/conll03/train/",
                    "validation": "s3://my-bucket/datasets/conll03/validation/",
                    "hyperparameters": {"epochs": 3, "learning_rate": 5e-5},
                }
            ]
        },
    )


class TrainingRunStarted(BaseModel):
    id: str = Field(description="The run's id: its execution's and training job's name")
    execution_arn: str
    input: dict[str, Any] = Field(description="The execution input, as nerkit.pipeline.start")


class GateVerdictOut(BaseModel):
    passed: bool
    reason: str | None = None
    version: str | None = None
    f1: float | None = Field(None, description="The candidate's validation F1")
    previous_version: str | None = None
    previous_f1: float | None = None


class TrainingRunOut(BaseModel):
    id: str
    status: str = Field(description="RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED")
    started_at: datetime
    ended_at: datetime | None = None
    channels: dict[str, str]
    hyperparameters: dict[str, str]
    gate: GateVerdictOut | None = Field(None, description="Absent until the gate has decided")
    error: str | None = None


class TrainingRunList(BaseModel):
    runs: list[TrainingRunOut] = Field(description=f"Newest first, at most {MAX_LISTED_RUNS}")


class UploadRequest(_Strict):
    dataset: str = Field(
        max_length=MAX_NAME_CHARS,
        description="A name for the dataset, e.g. conll03",
        json_schema_extra={"pattern": NAME_PATTERN},
    )
    channel: str = Field(
        description="The dataset's channel", json_schema_extra={"enum": list(CHANNELS)}
    )
    filename: str = Field(
        max_length=MAX_NAME_CHARS,
        description="CoNLL, CSV, JSONL or zip file name",
        json_schema_extra={"pattern": FILENAME_PATTERN},
    )


class UploadOut(BaseModel):
    url: str = Field(description="POST a multipart form here: the fields, then `file`")
    fields: dict[str, str]
    uri: str = Field(description="Where the file will be")
    channel_uri: str = Field(description="The prefix to give a training run for this channel")
    max_bytes: int
    expires_in: int = Field(description="Seconds the upload form stays valid")


class Scores(BaseModel):
    f1: float | None = None
    per_type: dict[str, float] = Field(default_factory=dict, description="F1 per entity type")


class ModelVersionOut(BaseModel):
    version: str
    created_at: str | None = None
    live: bool
    validation: Scores | None = None
    test: Scores | None = None


class ModelList(BaseModel):
    live: str | None
    history: list[str] = Field(description="Versions live before it, newest first (rollback)")
    versions: list[ModelVersionOut] = Field(
        description="Newest first: the `limit` versions stored last"
    )


class SetLiveRequest(_Strict):
    version: str = Field(
        description="The stored version to make LIVE",
        json_schema_extra={"pattern": VERSION_PATTERN},
    )
    expected_current: str | None = Field(
        None,
        max_length=128,
        description="Refuse (409) unless this version is LIVE now: guards a stale view",
    )


class LiveOut(BaseModel):
    version: str
    previous: str | None
    history: list[str]
    updated_at: str
    changed: bool
