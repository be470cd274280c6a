"""The admin routes (nerkit.api.admin) through Mangum with real API Gateway events, against
moto: Step Functions (start, list, describe), S3 (model store, presigned uploads).

Authorization is what API Gateway hands the app: ``requestContext.identity.apiKeyId`` of a
REST event (the admin key's id, or a client key's), or the JWT claims of an HTTP API event.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import httpx
import pytest
from admin_helpers import (
    ADMIN_KEY_ID,
    BUCKET,
    DATASETS,
    MODEL_URI,
    PREFIX,
    admin_aws,
    admin_settings,
    published_store,
)
from mangum import Mangum

from nerkit.api.admin import AdminServices
from nerkit.api.admin_schemas import UploadRequest
from nerkit.api.app import create_app
from nerkit.api.settings import Settings
from nerkit.pipeline.datasets import UploadError, check_name, presigned_upload
from nerkit.store import ModelStore

EVENTS = Path(__file__).resolve().parent / "events"
CLIENT_KEY_ID = "clientkey1"
STAGE = "prod"
ROUTES = [
    (
        "POST",
        "/v1/training-runs",
        {"train": f"{DATASETS}/a/train/", "validation": f"{DATASETS}/a/v/"},
    ),
    ("GET", "/v1/training-runs", None),
    ("GET", "/v1/training-runs/nerkit-prod-x", None),
    ("POST", "/v1/datasets/uploads", {"dataset": "a", "channel": "train", "filename": "t.csv"}),
    ("GET", "/v1/models", None),
    ("PUT", "/v1/models/live", {"version": "v1"}),
]


@pytest.fixture
def aws(aws_credentials: None) -> Iterator[SimpleNamespace]:
    with admin_aws() as aws:
        yield aws


@pytest.fixture
def handler(aws: SimpleNamespace) -> Mangum:
    app = create_app(admin_settings(aws.state_machine_arn))
    app.state.admin = AdminServices(app.state.settings, stepfunctions=aws.sfn, s3=aws.s3)
    return Mangum(app, lifespan="off")


def lambda_context() -> SimpleNamespace:
    return SimpleNamespace(aws_request_id="req-1", get_remaining_time_in_millis=lambda: 29_000)


def rest_event(
    method: str, path: str, body: Any = None, key_id: str | None = ADMIN_KEY_ID
) -> dict[str, Any]:
    """A REST (v1) proxy event of the prod stage; ``key_id`` is the API key API Gateway
    validated (``None``: a method without a key)."""
    event = json.loads((EVENTS / "rest_v1_post_entities.json").read_text())
    path, _, query = path.partition("?")
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["resource"] = event["requestContext"]["resourcePath"] = "/{proxy+}"
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    event["requestContext"]["stage"] = STAGE
    event["requestContext"]["path"] = f"/{STAGE}{path}"
    event["queryStringParameters"] = dict(p.split("=") for p in query.split("&")) if query else None
    event["multiValueQueryStringParameters"] = (
        {k: [v] for k, v in event["queryStringParameters"].items()} if query else None
    )
    if key_id is not None:
        event["requestContext"]["identity"]["apiKeyId"] = key_id
    event["body"] = json.dumps(body) if body is not None else None
    event["headers"] = {**(event.get("headers") or {}), "content-type": "application/json"}
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    return event


def call(
    handler: Mangum, method: str, path: str, body: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    response = handler(rest_event(method, path, body, **kwargs), lambda_context())
    return response["statusCode"], json.loads(response["body"])


def wait_until_ended(sfn: Any, arn: str) -> None:
    for _ in range(200):  # moto runs executions in a thread; this bounds the poll, not time
        if sfn.describe_execution(executionArn=arn)["status"] != "RUNNING":
            return
        time.sleep(0.05)
    raise AssertionError("the execution did not end")


# -- authorization ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"), [route for route in ROUTES if route[2] is not None]
)
def test_an_admin_body_over_max_body_bytes_is_a_413(
    aws: SimpleNamespace, method: str, path: str, body: Any
) -> None:
    """FastAPI parses the admin routes' bodies; MAX_BODY_BYTES bounds them as it bounds the
    inference routes', in the error envelope, whether or not the size is declared."""
    app = create_app(admin_settings(aws.state_machine_arn, MAX_BODY_BYTES="64"))
    app.state.admin = AdminServices(app.state.settings, stepfunctions=aws.sfn, s3=aws.s3)
    handler = Mangum(app, lifespan="off")
    padded = {**body, "padding": "x" * 100}
    for declared in (True, False):
        event = rest_event(method, path, padded)
        if declared:
            event["headers"]["content-length"] = str(len(event["body"]))
            event["multiValueHeaders"]["content-length"] = [event["headers"]["content-length"]]
        response = handler(event, lambda_context())
        assert response["statusCode"] == 413
        assert json.loads(response["body"])["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_client_key_gets_403_in_the_envelope_on_every_admin_route(
    handler: Mangum, aws: SimpleNamespace, method: str, path: str, body: Any
) -> None:
    for key_id in (CLIENT_KEY_ID, None):
        status, error = call(handler, method, path, body, key_id=key_id)
        assert status == 403
        assert error["error"]["code"] == "forbidden"
        assert error["error"]["request_id"] == "req-1"
    assert aws.sfn.list_executions(stateMachineArn=aws.state_machine_arn)["executions"] == []
    assert "Contents" not in aws.s3.list_objects_v2(Bucket=BUCKET)


def http_api_event(method: str, path: str, claims: dict[str, Any] | None) -> dict[str, Any]:
    event = json.loads((EVENTS / "http_v2_post_entities.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["body"] = None
    if claims is not None:
        event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    return event


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"sub": "ops-client", "scope": "nerkit/predict nerkit/admin"}, 200),
        ({"sub": "app-client", "scope": "nerkit/predict"}, 403),
        ({"sub": "app-client", "scope": "nerkit/admin-ish"}, 403),
        (None, 403),
    ],
)
def test_behind_an_http_api_the_admin_scope_of_the_jwt_decides(
    handler: Mangum, claims: dict[str, Any] | None, status: int
) -> None:
    response = handler(http_api_event("GET", "/v1/models", claims), lambda_context())
    assert response["statusCode"] == status


def test_admin_routes_do_not_exist_where_admin_is_off(aws: SimpleNamespace) -> None:
    settings = Settings.from_env({"MODEL_URI": MODEL_URI, "ADMIN_KEY_IDS": ADMIN_KEY_ID})
    handler = Mangum(create_app(settings), lifespan="off")
    for method, path, body in ROUTES:
        status, error = call(handler, method, path, body)
        assert status in (404, 405) and error["error"]["code"] in (
            "not_found",
            "method_not_allowed",
        )
    assert "/v1/models" not in create_app(settings).openapi()["paths"]


def test_admin_settings_need_the_pipeline() -> None:
    from nerkit.api.settings import SettingsError

    with pytest.raises(SettingsError, match=r"ENABLE_ADMIN needs .*STATE_MACHINE_ARN"):
        Settings.from_env(
            {"ENABLE_ADMIN": "true", "MODEL_URI": MODEL_URI, "DATASETS_URI": DATASETS}
        )


def test_the_admin_routes_are_documented(handler: Mangum, aws: SimpleNamespace) -> None:
    schema = create_app(admin_settings(aws.state_machine_arn)).openapi()
    for method, path, _ in ROUTES:
        template = "/v1/training-runs/{run_id}" if path.endswith("nerkit-prod-x") else path
        operation = schema["paths"][template][method.lower()]
        assert operation["summary"] and "403" in operation["responses"]


# -- training runs ------------------------------------------------------------------------


def test_start_a_run_sends_exactly_what_the_cli_sends(
    handler: Mangum, aws: SimpleNamespace
) -> None:
    from nerkit.pipeline.start import build_input

    body = {
        "train": f"{DATASETS}/conll03/train/",
        "validation": f"{DATASETS}/conll03/validation/",
        "hyperparameters": {"epochs": 3, "learning_rate": 5e-5, "fp16": True},
        "job_name": "nerkit-prod-run-1",
    }
    status, started = call(handler, "POST", "/v1/training-runs", body)
    assert status == 201 and started["id"] == "nerkit-prod-run-1"
    sent = json.loads(aws.sfn.describe_execution(executionArn=started["execution_arn"])["input"])
    expected = build_input(
        job_name="nerkit-prod-run-1",
        channels={"train": body["train"], "validation": body["validation"], "test": None},
        hyperparameters=body["hyperparameters"],
        datasets_uri=DATASETS,
        job_prefix=PREFIX,
    )
    assert sent == expected == started["input"]
    assert sent["hyperparameters"] == {"epochs": "3", "learning_rate": "5e-05", "fp16": "True"}

    # A job name is used once (while the run is going, Step Functions answers the same
    # request with the same execution instead).
    wait_until_ended(aws.sfn, started["execution_arn"])
    status, error = call(handler, "POST", "/v1/training-runs", body)
    assert (status, error["error"]["code"]) == (409, "conflict")


def test_a_run_without_a_job_name_gets_the_deployment_prefix(handler: Mangum) -> None:
    body = {"train": f"{DATASETS}/a/train/", "validation": f"{DATASETS}/a/validation/"}
    status, started = call(handler, "POST", "/v1/training-runs", body)
    assert status == 201 and started["id"].startswith(PREFIX)


def test_a_run_can_hold_validation_out_of_train(handler: Mangum) -> None:
    """As with nerkit.pipeline.start --split: no validation channel, validation_split."""
    body = {"train": f"{DATASETS}/one/train/", "hyperparameters": {"validation_split": 0.1}}
    status, started = call(handler, "POST", "/v1/training-runs", body)
    assert status == 201, started
    assert started["input"]["channels"] == {"train": body["train"]}
    status, error = call(handler, "POST", "/v1/training-runs", {"train": body["train"]})
    assert status == 422, error


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": "s3://elsewhere/train/"}, "outside s3://nerkit-data/datasets/"),
        ({"job_name": "other-team-run"}, "must start with 'nerkit-prod-'"),
        ({"hyperparameters": {"k": "v" * 2501}}, "exceeds SageMaker's size limits"),
    ],
)
def test_a_run_is_refused_exactly_as_the_cli_refuses_it(
    handler: Mangum, aws: SimpleNamespace, change: dict[str, Any], message: str
) -> None:
    body = {"train": f"{DATASETS}/a/train/", "validation": f"{DATASETS}/a/v/", **change}
    status, error = call(handler, "POST", "/v1/training-runs", body)
    assert (status, error["error"]["code"]) == (422, "validation_error")
    assert message in error["error"]["details"][0]["msg"]
    assert aws.sfn.list_executions(stateMachineArn=aws.state_machine_arn)["executions"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"train": f"{DATASETS}/a/"},
        {"train": f"{DATASETS}/a/", "validation": f"{DATASETS}/b/", "extra": 1},
        {"train": "x" * 2000, "validation": f"{DATASETS}/b/"},
        {"train": f"{DATASETS}/a/", "validation": f"{DATASETS}/b/",
         "hyperparameters": {f"h{i}": 1 for i in range(101)}},
    ],
)  # fmt: skip
def test_a_malformed_run_request_is_a_422(handler: Mangum, body: dict[str, Any]) -> None:
    status, error = call(handler, "POST", "/v1/training-runs", body)
    assert (status, error["error"]["code"]) == (422, "validation_error")


def test_list_and_describe_runs_with_the_gate_verdict(
    handler: Mangum, aws: SimpleNamespace
) -> None:
    channels = {"train": f"{DATASETS}/a/train/", "validation": f"{DATASETS}/a/validation/"}
    for name, verdict in (("nerkit-prod-good", "pass"), ("nerkit-prod-bad", "reject")):
        body = {**channels, "job_name": name, "hyperparameters": {"verdict": verdict}}
        status, started = call(handler, "POST", "/v1/training-runs", body)
        assert status == 201
        wait_until_ended(aws.sfn, started["execution_arn"])

    status, good = call(handler, "GET", "/v1/training-runs/nerkit-prod-good")
    assert status == 200
    assert (good["status"], good["channels"], good["error"]) == ("SUCCEEDED", channels, None)
    assert good["gate"] == {
        "passed": True,
        "reason": "validation F1 0.91 >= 0.80",
        "version": "v3",
        "f1": 0.91,
        "previous_version": "v2",
        "previous_f1": 0.88,
    }
    assert good["started_at"] and good["ended_at"]

    status, bad = call(handler, "GET", "/v1/training-runs/nerkit-prod-bad")
    assert (status, bad["status"]) == (200, "FAILED")
    assert bad["gate"]["passed"] is False
    assert bad["gate"]["reason"] == "model v4 rejected: validation F1 0.5 < 0.8"

    status, listing = call(handler, "GET", "/v1/training-runs?limit=5")
    assert status == 200
    assert {run["id"] for run in listing["runs"]} == {"nerkit-prod-good", "nerkit-prod-bad"}
    status, listing = call(handler, "GET", "/v1/training-runs?limit=1")
    assert len(listing["runs"]) == 1
    assert call(handler, "GET", "/v1/training-runs?limit=500")[0] == 422


def test_an_unknown_or_malformed_run_id(handler: Mangum) -> None:
    status, error = call(handler, "GET", "/v1/training-runs/nerkit-prod-nope")
    assert (status, error["error"]["code"]) == (404, "not_found")
    status, error = call(handler, "GET", "/v1/training-runs/bad_name!")
    assert (status, error["error"]["code"]) == (422, "validation_error")


def test_a_405_allows_every_method_of_the_path(handler: Mangum) -> None:
    # /v1/training-runs has a GET route and a POST route; Starlette's 405 named one of them.
    response = handler(rest_event("DELETE", "/v1/training-runs"), lambda_context())
    assert response["statusCode"] == 405
    assert json.loads(response["body"])["error"]["code"] == "method_not_allowed"
    allow = {method.strip() for method in response["headers"]["allow"].split(",")}
    assert {"GET", "POST"} <= allow


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/training-runs"), ("POST", "/v1/datasets/uploads"), ("PUT", "/v1/models/live")],
)
def test_an_unreadable_body_is_a_documented_400(handler: Mangum, method: str, path: str) -> None:
    event = rest_event(method, path)
    event["body"] = base64.b64encode(b"\xff\xfe{").decode()
    event["isBase64Encoded"] = True
    response = handler(event, lambda_context())
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["code"] == "bad_request"
    documented = handler.app.openapi()["paths"][path][method.lower()]["responses"]
    assert "400" in documented


@pytest.mark.parametrize(
    ("field", "rule", "accepted", "refused"),
    [
        ("dataset", check_name, ["a", "conll-03.v2", "a.b.c", "x."], ["a..b", "-a", "a/b", "a\n"]),
        ("filename", None, ["t.csv", "T.CSV", "a.b.JsonL"], ["t.exe", "t..csv", "csv", "t.csv\n"]),
    ],
)
def test_the_upload_schema_publishes_exactly_the_upload_rules(
    aws: SimpleNamespace, field: str, rule: Any, accepted: list[str], refused: list[str]
) -> None:
    pattern = UploadRequest.model_json_schema()["properties"][field]["pattern"]
    # JSON Schema's "$" is the end of the string (Python's also matches before a final "\n").
    whole = pattern.removeprefix("^").removesuffix("$")
    for name in accepted + refused:
        published = re.fullmatch(whole, name) is not None
        try:
            if rule is not None:
                rule(field, name)
            else:
                presigned_upload(
                    aws.s3,
                    DATASETS,
                    dataset="a",
                    channel="train",
                    filename=name,
                    max_bytes=10,
                )
            checked = True
        except UploadError:
            checked = False
        assert published == checked == (name in accepted), name


def test_aws_failures_are_a_503_without_details(aws: SimpleNamespace) -> None:
    app = create_app(admin_settings(aws.state_machine_arn.replace("123456789012", "999999999999")))
    app.state.admin = AdminServices(app.state.settings, stepfunctions=aws.sfn, s3=aws.s3)
    status, error = call(Mangum(app, lifespan="off"), "GET", "/v1/training-runs")
    assert (status, error["error"]["code"]) == (503, "upstream_unavailable")
    assert "999999999999" not in json.dumps(error)


# -- dataset uploads ----------------------------------------------------------------------


def test_an_upload_form_pins_the_key_under_the_datasets_prefix(handler: Mangum) -> None:
    body = {"dataset": "conll03", "channel": "train", "filename": "train.conll"}
    status, upload = call(handler, "POST", "/v1/datasets/uploads", body)
    assert status == 201
    assert upload["uri"] == f"{DATASETS}/conll03/train/train.conll"
    assert upload["channel_uri"] == f"{DATASETS}/conll03/train/"
    policy = json.loads(base64.b64decode(upload["fields"]["policy"]))
    conditions = policy["conditions"]
    # S3 accepts the form only for exactly this bucket and key, within the size limit.
    assert {"bucket": BUCKET} in conditions
    assert {"key": "datasets/conll03/train/train.conll"} in conditions
    assert ["content-length-range", 1, 1000] in conditions
    assert not [c for c in conditions if isinstance(c, list) and c[0] == "starts-with"]
    assert upload["fields"]["key"] == "datasets/conll03/train/train.conll"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"dataset": "../models", "channel": "train", "filename": "a.csv"}, "dataset"),
        ({"dataset": "a/b", "channel": "train", "filename": "a.csv"}, "dataset"),
        ({"dataset": "a", "channel": "dev", "filename": "a.csv"}, "channel"),
        ({"dataset": "a", "channel": "train", "filename": "a.exe"}, "extension"),
        ({"dataset": "a", "channel": "train", "filename": "../../LIVE.csv"}, "filename"),
    ],
)
def test_an_upload_outside_the_rules_is_refused(
    handler: Mangum, body: dict[str, str], message: str
) -> None:
    status, error = call(handler, "POST", "/v1/datasets/uploads", body)
    assert (status, error["error"]["code"]) == (422, "validation_error")
    assert message in error["error"]["details"][0]["msg"]


def test_a_presigned_upload_lands_under_the_datasets_prefix_and_nowhere_else(
    moto_server: str, aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form is POSTed with httpx to a real HTTP S3 (moto_server), as a browser or curl
    would, with no AWS credentials of its own."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    settings = admin_settings("arn:aws:states:us-east-1:123456789012:stateMachine:x")
    app = create_app(settings)
    app.state.admin = AdminServices(settings, s3=s3)
    handler = Mangum(app, lifespan="off")
    body = {"dataset": "mine", "channel": "validation", "filename": "dev.jsonl"}
    status, upload = call(handler, "POST", "/v1/datasets/uploads", body)
    assert status == 201
    content = b'{"text": "Paris", "entities": [[0, 5, "LOC"]]}\n'
    response = httpx.post(
        upload["url"], data=upload["fields"], files={"file": ("dev.jsonl", content)}, timeout=30
    )
    assert response.status_code in (200, 201, 204)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == ["datasets/mine/validation/dev.jsonl"]
    assert s3.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read() == content


def test_the_upload_url_can_name_the_bucket_endpoint(aws: SimpleNamespace) -> None:
    url = f"https://{BUCKET}.s3.us-east-1.amazonaws.com/"
    app = create_app(admin_settings(aws.state_machine_arn, UPLOAD_URL=url))
    app.state.admin = AdminServices(app.state.settings, s3=aws.s3)
    body = {"dataset": "a", "channel": "test", "filename": "t.zip"}
    status, upload = call(Mangum(app, lifespan="off"), "POST", "/v1/datasets/uploads", body)
    assert (status, upload["url"]) == (201, url)


# -- models -------------------------------------------------------------------------------


@pytest.fixture
def store(aws: SimpleNamespace, tmp_path: Path) -> ModelStore:
    return published_store(aws.s3, tmp_path)


def test_list_models(handler: Mangum, store: ModelStore) -> None:
    status, listing = call(handler, "GET", "/v1/models")
    assert status == 200
    assert (listing["live"], listing["history"]) == ("v3", ["v2", "v1"])
    assert [(v["version"], v["live"]) for v in listing["versions"]] == [
        ("v3", True), ("v2", False), ("v1", False),
    ]  # fmt: skip
    newest = listing["versions"][0]
    assert newest["validation"] == {"f1": 0.82, "per_type": {"PER": 0.9, "LOC": 0.7}}
    assert newest["test"] == {"f1": 0.75, "per_type": {}}
    assert newest["created_at"] == "2026-11-03T00:00:00Z"


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_repeated_rollbacks_walk_back_and_are_audited(handler: Mangum, store: ModelStore) -> None:
    audit, recorder = logging.getLogger("nerkit.api.audit"), Recorder()
    audit.addHandler(recorder)
    try:
        status, live = call(handler, "PUT", "/v1/models/live", {"version": "v2"})
        assert (status, live["version"], live["history"], live["changed"]) == (
            200,
            "v2",
            ["v1"],
            True,
        )
        status, live = call(handler, "PUT", "/v1/models/live", {"version": "v1"})
        assert (status, live["version"], live["history"]) == (200, "v1", [])
        # The same store operation as the CLI's rollback: nothing further back.
        status, live = call(handler, "PUT", "/v1/models/live", {"version": "v1"})
        assert (status, live["changed"]) == (200, False)
        # Promoting a version that is not in the history remembers the current one.
        status, live = call(handler, "PUT", "/v1/models/live", {"version": "v3"})
        assert (live["version"], live["history"]) == ("v3", ["v1"])
    finally:
        audit.removeHandler(recorder)
    lines = [record.fields for record in recorder.records]
    who = f"api-key:{ADMIN_KEY_ID}"
    assert lines[0] == {"who": who, "action": "set_live", "from": "v3", "to": "v2", "changed": True}
    assert [(line["from"], line["to"]) for line in lines] == [
        ("v3", "v2"), ("v2", "v1"), ("v1", "v1"), ("v1", "v3"),
    ]  # fmt: skip
    assert store.live().version == "v3"  # type: ignore[union-attr]


def test_set_live_refuses_a_stale_view_and_unknown_versions(
    handler: Mangum, store: ModelStore
) -> None:
    body = {"version": "v1", "expected_current": "v2"}
    status, error = call(handler, "PUT", "/v1/models/live", body)
    assert (status, error["error"]["code"]) == (409, "conflict")
    status, error = call(handler, "PUT", "/v1/models/live", {"version": "v9"})
    assert (status, error["error"]["code"]) == (404, "not_found")
    status, error = call(handler, "PUT", "/v1/models/live", {"version": "../x"})
    assert (status, error["error"]["code"]) == (422, "validation_error")
    assert store.live().version == "v3"  # type: ignore[union-attr]


@pytest.mark.parametrize("url", ["ftp://bucket/", "*", "https://", "bucket.s3.amazonaws.com"])
def test_an_upload_url_must_be_http(url: str) -> None:
    from nerkit.api.settings import SettingsError

    with pytest.raises(SettingsError, match="UPLOAD_URL"):
        Settings.from_env({"UPLOAD_URL": url})


def test_list_models_is_bounded(handler: Mangum, store: ModelStore) -> None:
    status, listing = call(handler, "GET", "/v1/models?limit=1")
    assert (status, len(listing["versions"])) == (200, 1)
    assert call(handler, "GET", "/v1/models?limit=101")[0] == 422


def test_the_admin_routes_import_nothing_the_serving_image_lacks() -> None:
    """The admin function runs the serving image, which has no nerkit.training (torch)."""
    import subprocess
    import sys

    code = (
        "import sys, nerkit.api.admin; "
        "print([m for m in sys.modules if m.startswith(('nerkit.training', 'torch'))])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_a_non_ascii_key_is_refused_not_an_error() -> None:
    """make run's key check compares bytes: a key with any character is a 403, never a 500."""
    import asyncio

    from nerkit.api.local_gateway import LocalApiKeys

    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["aws.event"]["requestContext"]["identity"])

    gateway = LocalApiKeys(app, {"the-key": "admin-id"})
    for key in ("clé", "the-key"):
        scope = {"type": "http", "path": "/v1/models", "headers": [(b"x-api-key", key.encode())]}
        asyncio.run(gateway(scope, None, None))
    assert seen == [{}, {"apiKeyId": "admin-id"}]
