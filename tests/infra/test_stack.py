"""The synthesized CloudFormation template (aws_cdk.assertions), default settings; plus the
settings parser. One synth for the whole module."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from aws_cdk.assertions import Match, Template

from infra.app import build_app
from infra.log_groups import RETENTION
from infra.serving import GATEWAY_ERRORS, error_template, gateway_response_headers
from infra.settings import LOG_RETENTION_DAYS, Settings, SettingsError
from nerkit.api.schemas import ErrorResponse
from nerkit.pipeline.start import build_input

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(outdir=str(outdir), environ={})
    assembly = app.synth()
    return assembly.get_stack_by_name(stack.stack_name).template, outdir


@pytest.fixture(scope="module")
def raw(synth: tuple[dict[str, Any], Path]) -> dict[str, Any]:
    return synth[0]


@pytest.fixture(scope="module")
def template(raw: dict[str, Any]) -> Template:
    return Template.from_json(raw)


def resources(raw: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in raw["Resources"].items() if v["Type"] == kind}


def only(raw: dict[str, Any], kind: str, prefix: str) -> tuple[str, dict[str, Any]]:
    (item,) = [(k, v) for k, v in resources(raw, kind).items() if k.startswith(prefix)]
    return item


def flat(value: Any) -> str:
    """A CloudFormation value as one string (intrinsics shown as <...>)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        return "".join(flat(part) for part in value["Fn::Join"][1])
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    return json.dumps(value)


def statements(raw: dict[str, Any], role_prefix: str | None = None) -> Iterator[dict[str, Any]]:
    for policy in resources(raw, "AWS::IAM::Policy").values():
        roles = [flat(r) for r in policy["Properties"].get("Roles", [])]
        if role_prefix is None or any(r.startswith(f"<{role_prefix}") for r in roles):
            yield from policy["Properties"]["PolicyDocument"]["Statement"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- storage --------------------------------------------------------------------------------


def test_stack_resources_carry_the_cost_allocation_tags(raw: dict[str, Any]) -> None:
    _, bucket = only(raw, "AWS::S3::Bucket", "StorageData")
    tags = {t["Key"]: t["Value"] for t in bucket["Properties"]["Tags"]}
    assert tags == {"project": "nerkit", "stage": "prod"} == Settings().tags


def test_data_bucket_is_private_encrypted_versioned_logged_and_retained(
    raw: dict[str, Any], template: Template
) -> None:
    logical, bucket = only(raw, "AWS::S3::Bucket", "StorageData")
    log_logical, _ = only(raw, "AWS::S3::Bucket", "StorageAccessLogs")
    props = bucket["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {rule["Id"]: rule for rule in props["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 30
    }
    assert rules["expire-noncurrent-versions"]["AbortIncompleteMultipartUpload"]
    # Expirations on a versioned bucket leave delete markers; they are cleaned up too.
    assert rules["expire-noncurrent-versions"]["ExpiredObjectDeleteMarker"] is True
    assert "Prefix" not in rules["expire-noncurrent-versions"]
    for rule_id, prefix in (
        ("expire-checkpoints", "checkpoints/"),
        ("expire-training-output", "training/"),
    ):
        assert rules[rule_id]["Prefix"] == prefix
        assert rules[rule_id]["ExpirationInDays"] > 0
        assert rules[rule_id]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": log_logical}
    for name in (logical, log_logical):
        assert raw["Resources"][name]["DeletionPolicy"] == "Retain"
        assert raw["Resources"][name]["UpdateReplacePolicy"] == "Retain"


def test_access_log_bucket_is_secure_too(raw: dict[str, Any]) -> None:
    _, bucket = only(raw, "AWS::S3::Bucket", "StorageAccessLogs")
    props = bucket["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ] == {"SSEAlgorithm": "AES256"}
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert "LifecycleConfiguration" in props


def test_both_buckets_deny_requests_without_tls(raw: dict[str, Any]) -> None:
    policies = resources(raw, "AWS::S3::BucketPolicy").values()
    denied = set()
    for policy in policies:
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                assert statement["Effect"] == "Deny"
                assert statement["Action"] == "s3:*"
                assert statement["Principal"] == {"AWS": "*"}
                denied.add(flat(policy["Properties"]["Bucket"]))
    assert denied == {
        f"<{only(raw, 'AWS::S3::Bucket', prefix)[0]}>"
        for prefix in ("StorageData", "StorageAccessLogs")
    }


# -- serving --------------------------------------------------------------------------------


def test_serving_function_is_a_container_image_with_the_model_uri(raw: dict[str, Any]) -> None:
    _, function = only(raw, "AWS::Lambda::Function", "ServingFunction")
    props = function["Properties"]
    data_bucket, _ = only(raw, "AWS::S3::Bucket", "StorageData")
    assert props["PackageType"] == "Image"
    assert props["Architectures"] == ["x86_64"]
    assert props["MemorySize"] == 1769
    assert props["Timeout"] == 29
    assert props["EphemeralStorage"] == {"Size": 512}
    assert "ReservedConcurrentExecutions" not in props
    env = props["Environment"]["Variables"]
    assert flat(env["MODEL_URI"]) == f"s3://<{data_bucket}>/models/ner"
    assert env["MODEL_REFRESH_SECONDS"] == "60"
    assert env["NER_THREADS"] == "1"
    assert env["ENABLE_PAGE"] == "true"
    assert "CORS_ORIGINS" not in env
    assert props["LoggingConfig"]["LogGroup"] == {
        "Ref": only(raw, "AWS::Logs::LogGroup", "ServingFunctionLogs")[0]
    }


def _method_paths(raw: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(HTTP method, resource path) -> method properties."""
    parts = {
        name: (res["Properties"]["PathPart"], res["Properties"]["ParentId"])
        for name, res in resources(raw, "AWS::ApiGateway::Resource").items()
    }

    def path(resource_id: Any) -> str:
        if "Ref" not in resource_id:
            return ""  # Fn::GetAtt RootResourceId
        part, parent = parts[resource_id["Ref"]]
        return f"{path(parent)}/{part}"

    return {
        (m["Properties"]["HttpMethod"], path(m["Properties"]["ResourceId"]) or "/"): m["Properties"]
        for m in resources(raw, "AWS::ApiGateway::Method").values()
    }


def test_api_key_is_required_on_ner_routes_only(raw: dict[str, Any]) -> None:
    from infra.admin import ADMIN_ROUTES

    methods = _method_paths(raw)

    assert set(methods) == {
        ("POST", "/v1/entities"),
        ("POST", "/v1/hf/token-classification"),
        ("GET", "/v1/model"),
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/"),
        # Keyed too (tests/infra/test_admin_stack.py).
        *((method, f"/{path}") for method, path in ADMIN_ROUTES),
    }
    for key in [
        ("POST", "/v1/entities"),
        ("POST", "/v1/hf/token-classification"),
        ("GET", "/v1/model"),
    ]:
        assert methods[key]["ApiKeyRequired"] is True
    for key in [("GET", "/health"), ("GET", "/ready"), ("GET", "/")]:
        assert methods[key].get("ApiKeyRequired", False) is False
    for props in methods.values():
        assert props["Integration"]["Type"] == "AWS_PROXY"


def test_entities_body_is_validated(raw: dict[str, Any]) -> None:
    entities = _method_paths(raw)[("POST", "/v1/entities")]
    validator = raw["Resources"][entities["RequestValidatorId"]["Ref"]]["Properties"]
    assert validator["ValidateRequestBody"] is True
    model = raw["Resources"][entities["RequestModels"]["application/json"]["Ref"]]
    assert model["Properties"]["Schema"]["type"] == "object"


def test_usage_plan_throttles_and_quota_with_a_key(raw: dict[str, Any], template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "Throttle": {"RateLimit": 50, "BurstLimit": 100},
            "Quota": {"Limit": 100000, "Period": "DAY"},
            "ApiStages": [Match.object_like({"Stage": Match.any_value()})],
        },
    )
    template.resource_count_is("AWS::ApiGateway::ApiKey", 2)  # the client key and the admin's
    _, link = only(raw, "AWS::ApiGateway::UsagePlanKey", "ServingApiUsagePlan")
    assert link["Properties"]["KeyType"] == "API_KEY"


def test_stage_has_json_access_logs_method_throttling_and_no_body_logging(
    raw: dict[str, Any],
) -> None:
    _, stage = only(raw, "AWS::ApiGateway::Stage", "Serving")
    props = stage["Properties"]
    access_format = json.loads(props["AccessLogSetting"]["Format"])
    assert access_format["requestId"] == "$context.requestId"
    assert access_format["apiKeyId"] == "$context.identity.apiKeyId"
    assert access_format["status"] == "$context.status"
    access_logs, _ = only(raw, "AWS::Logs::LogGroup", "ServingAccessLogs")
    assert flat(props["AccessLogSetting"]["DestinationArn"]).endswith(f":log-group:<{access_logs}>")
    (settings,) = [s for s in props["MethodSettings"] if s["HttpMethod"] == "*"]
    assert settings["ResourcePath"] == "/*"
    assert settings["ThrottlingRateLimit"] == 50
    assert settings["ThrottlingBurstLimit"] == 100
    assert settings["LoggingLevel"] == "ERROR"
    assert settings["DataTraceEnabled"] is False
    assert props["StageName"] == "prod"


def test_open_routes_have_their_own_low_throttles(raw: dict[str, Any]) -> None:
    _, stage = only(raw, "AWS::ApiGateway::Stage", "Serving")
    # Method settings name resources with "/" escaped as "~1"; the root is "/".
    overrides = {
        (s["HttpMethod"], s["ResourcePath"][1:].replace("~1", "/") or "/"): s
        for s in stage["Properties"]["MethodSettings"]
        if s["HttpMethod"] != "*"
    }
    open_methods = {
        key
        for key, props in _method_paths(raw).items()
        if not props.get("ApiKeyRequired") and key[0] != "OPTIONS"
    }
    # Every open route has its own limits, and no keyed route does (they keep the stage's).
    assert set(overrides) == open_methods == {("GET", "/health"), ("GET", "/ready"), ("GET", "/")}
    defaults = Settings()
    assert defaults.open_throttle_rate < defaults.throttle_rate
    assert defaults.open_throttle_burst < defaults.throttle_burst
    for settings in overrides.values():
        assert settings["ThrottlingRateLimit"] == 5
        assert settings["ThrottlingBurstLimit"] == 10
        # A method's own settings must not turn data tracing (request bodies) on.
        assert settings["LoggingLevel"] == "ERROR"
        assert settings["DataTraceEnabled"] is False
        assert settings["MetricsEnabled"] is True


_GATEWAY_SAYS = 'API "Gateway" says'


def _render(template: str) -> dict[str, Any]:
    """A gateway response body as API Gateway would send it: messageString is its message
    already quoted as JSON, requestId a UUID."""
    filled = template.replace("$context.error.messageString", json.dumps(_GATEWAY_SAYS))
    return json.loads(filled.replace("$context.requestId", "c0ffee00-0000-4000-8000-000000000000"))


def test_gateway_errors_use_the_app_error_envelope(raw: dict[str, Any]) -> None:
    api, _ = only(raw, "AWS::ApiGateway::RestApi", "ServingApi")
    _, deployment = only(raw, "AWS::ApiGateway::Deployment", "ServingApiDeployment")
    responses: dict[str, dict[str, Any]] = {}
    for name, resource in resources(raw, "AWS::ApiGateway::GatewayResponse").items():
        props = resource["Properties"]
        assert props["RestApiId"] == {"Ref": api}
        # The stage serves the gateway responses of its deployment: a change must redeploy.
        assert name in deployment["DependsOn"]
        responses[props["ResponseType"]] = props
    assert {
        "DEFAULT_4XX",
        "DEFAULT_5XX",
        "BAD_REQUEST_BODY",
        "ACCESS_DENIED",
        "INVALID_API_KEY",
        "MISSING_AUTHENTICATION_TOKEN",
        "THROTTLED",
        "QUOTA_EXCEEDED",
    } <= set(responses)
    bodies = {}
    for response_type, props in responses.items():
        # No CORS origins by default, so no CORS header.
        assert props["ResponseParameters"] == {
            "gatewayresponse.header.Content-Type": "'application/json'"
        }, response_type
        assert list(props["ResponseTemplates"]) == ["application/json"]
        body = _render(props["ResponseTemplates"]["application/json"])
        # The model the app documents for its own errors, field for field.
        assert ErrorResponse.model_validate(body).model_dump() == body, response_type
        assert body["error"]["details"] == []
        assert body["error"]["request_id"] == "c0ffee00-0000-4000-8000-000000000000"
        bodies[response_type] = body["error"]
    # The catch-alls pass API Gateway's own message through; the others say what to do.
    assert bodies["DEFAULT_4XX"]["message"] == bodies["DEFAULT_5XX"]["message"] == _GATEWAY_SAYS
    assert bodies["DEFAULT_4XX"]["code"] == "http_error"
    assert bodies["DEFAULT_5XX"]["code"] == "internal_error"
    assert bodies["BAD_REQUEST_BODY"]["code"] == "invalid_json"
    assert bodies["INVALID_API_KEY"]["code"] == "invalid_api_key"
    assert "x-api-key" in bodies["INVALID_API_KEY"]["message"]
    assert bodies["THROTTLED"]["code"] == "throttled"
    assert bodies["QUOTA_EXCEEDED"]["code"] == "quota_exceeded"
    # No method uses IAM auth: this type only means "no such route", which the app calls 404.
    assert bodies["MISSING_AUTHENTICATION_TOKEN"]["code"] == "not_found"
    assert {t for t, r in responses.items() if "StatusCode" in r} == {
        "MISSING_AUTHENTICATION_TOKEN"
    }
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == "404"


def test_error_template_escapes_its_message_as_json() -> None:
    message = 'a "quoted" \\ message'
    assert _render(error_template("timeout", message))["error"]["message"] == message
    # Every listed response renders to valid JSON whatever its message.
    for _, _, code, text in GATEWAY_ERRORS:
        assert _render(error_template(code, text))["error"]["code"] == code


@pytest.mark.parametrize(
    ("origins", "allowed"),
    [
        ((), None),
        (("https://app.example.com",), "'https://app.example.com'"),
        (("*",), "'*'"),
        # One header value cannot list several origins; error bodies carry no data.
        (("https://a.example.com", "https://b.example.org"), "'*'"),
    ],
)
def test_gateway_errors_carry_cors_headers_when_origins_are_set(
    origins: tuple[str, ...], allowed: str | None
) -> None:
    headers = gateway_response_headers(Settings(cors_origins=origins))
    assert headers.get("Access-Control-Allow-Origin") == allowed
    assert headers["Content-Type"] == "'application/json'"


def test_serving_role_reads_the_model_prefix_only(raw: dict[str, Any]) -> None:
    data_bucket, _ = only(raw, "AWS::S3::Bucket", "StorageData")
    s3_statements = [
        s
        for s in statements(raw, "ServingFunctionRole")
        if any(a.startswith("s3:") for a in as_list(s["Action"]))
    ]
    by_action = {tuple(as_list(s["Action"])): s for s in s3_statements}
    assert set(by_action) == {("s3:GetObject",), ("s3:ListBucket",)}
    assert flat(by_action[("s3:GetObject",)]["Resource"]) == f"<{data_bucket}.Arn>/models/ner/*"
    listing = by_action[("s3:ListBucket",)]
    assert flat(listing["Resource"]) == f"<{data_bucket}.Arn>"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["models/ner/*"]}}


# -- training pipeline ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def definition(raw: dict[str, Any]) -> dict[str, Any]:
    _, machine = only(raw, "AWS::StepFunctions::StateMachine", "Training")
    # Intrinsics become placeholders; the JSON structure stays intact.
    text = "".join(
        part if isinstance(part, str) else "TOKEN"
        for part in machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    )
    return json.loads(text)


def test_state_machine_trains_gates_and_fails_with_the_reason(
    raw: dict[str, Any], definition: dict[str, Any]
) -> None:
    states = definition["States"]
    gate_function, _ = only(raw, "AWS::Lambda::Function", "TrainingGateFunction")
    for name in ("Train", "TrainWithTest"):
        train = states[name]
        assert train["Resource"] == "arn:TOKEN:states:::sagemaker:createTrainingJob.sync"
        assert train["Next"] == "Gate"
        params = train["Parameters"]
        assert params["HyperParameters.$"] == "$.hyperparameters"
        assert params["TrainingJobName.$"] == "$.jobName"
        assert params["EnableManagedSpotTraining"] is True
        assert params["StoppingCondition"] == {
            "MaxRuntimeInSeconds": 3 * 3600,
            "MaxWaitTimeInSeconds": 6 * 3600,
        }
        assert "checkpoints/{}/" in params["CheckpointConfig"]["S3Uri.$"]
        assert params["OutputDataConfig"]["S3OutputPath"] == "s3://TOKEN/training/"
        assert params["ResourceConfig"]["InstanceType"] == "ml.g6.xlarge"
        # Run-time jobs carry the stack's cost-allocation tags.
        assert params["Tags"] == [
            {"Key": "project", "Value": "nerkit"},
            {"Key": "stage", "Value": "prod"},
        ]
    channels = [c["ChannelName"] for c in states["TrainWithTest"]["Parameters"]["InputDataConfig"]]
    assert channels == ["train", "validation", "test"]
    assert len(states["Train"]["Parameters"]["InputDataConfig"]) == 2
    gate = states["Gate"]
    assert gate["Type"] == "Task"
    assert gate["Parameters"]["modelArtifact.$"] == "$.training.modelArtifact"
    assert gate["Parameters"]["minF1"] == 0.8
    assert gate["Parameters"]["mustBeatLive"] is True
    assert gate["Catch"][0]["Next"] == "GatePassed?"
    assert states["GatePassed?"]["Default"] == "Published"
    assert states["ModelRejected"] == {
        "Type": "Fail",
        "ErrorPath": "$.gate.Error",
        "CausePath": "$.gate.Cause",
    }
    assert states["InvalidInput"]["Type"] == "Fail"
    # The gate task invokes the gate function.
    _, machine = only(raw, "AWS::StepFunctions::StateMachine", "Training")
    tokens = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    assert {"Fn::GetAtt": [gate_function, "Arn"]} in tokens


def test_start_cli_input_satisfies_the_state_machine(definition: dict[str, Any]) -> None:
    """The contract between nerkit.pipeline.start and ValidateInput/HasTestChannel."""
    required = [
        rule["Variable"] for rule in definition["States"]["ValidateInput"]["Choices"][0]["And"]
    ]
    sent = build_input(
        job_name="nerkit-prod-1",
        channels={"train": "s3://b/datasets/t", "validation": "s3://b/datasets/v"},
        hyperparameters={"epochs": 1},
    )

    def present(path: str) -> bool:
        node: Any = sent
        for key in path.removeprefix("$.").split("."):
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return True

    assert all(present(path) for path in required)
    test_rule = definition["States"]["HasTestChannel"]["Choices"][0]
    assert test_rule["Variable"] == "$.channels.test"


def test_a_run_without_validation_channel_trains_on_train_only(
    definition: dict[str, Any],
) -> None:
    """Input that nerkit.pipeline.start builds with --split reaches the TrainSplit state."""
    states = definition["States"]
    required = [rule["Variable"] for rule in states["ValidateInput"]["Choices"][0]["And"]]
    sent = build_input(
        job_name="nerkit-prod-1",
        channels={"train": "s3://b/datasets/t"},
        hyperparameters={"validation_split": "0.1"},
    )
    assert required == ["$.jobName", "$.channels.train", "$.hyperparameters"]
    assert sent["jobName"] and sent["channels"]["train"] and "hyperparameters" in sent
    (rule,) = states["HasValidationChannel"]["Choices"]
    assert rule == {
        "Variable": "$.channels.validation",
        "IsPresent": True,
        "Next": "HasTestChannel",
    }
    assert "validation" not in sent["channels"]
    assert states["HasValidationChannel"]["Default"] == "TrainSplit"
    split = states["TrainSplit"]["Parameters"]["InputDataConfig"]
    assert [channel["ChannelName"] for channel in split] == ["train"]
    assert states["TrainSplit"]["Next"] == "Gate"


def test_state_machine_logs_everything_and_traces_only_with_tracing(raw: dict[str, Any]) -> None:
    _, machine = only(raw, "AWS::StepFunctions::StateMachine", "Training")
    props = machine["Properties"]
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    # tracing is off by default (test_nag's flipped variant turns it on).
    assert props.get("TracingConfiguration", {"Enabled": False}) == {"Enabled": False}


def test_gate_function_is_python_with_the_store_uri(raw: dict[str, Any]) -> None:
    _, function = only(raw, "AWS::Lambda::Function", "TrainingGateFunction")
    props = function["Properties"]
    data_bucket, _ = only(raw, "AWS::S3::Bucket", "StorageData")
    assert props["Handler"] == "nerkit.pipeline.gate.handler"
    assert props["Runtime"] == "python3.14"
    assert (
        flat(props["Environment"]["Variables"]["MODEL_URI"]) == f"s3://<{data_bucket}>/models/ner"
    )


def test_gate_asset_holds_only_the_gate_modules(
    raw: dict[str, Any], synth: tuple[dict[str, Any], Path]
) -> None:
    _, function = only(raw, "AWS::Lambda::Function", "TrainingGateFunction")
    asset_hash = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    root = synth[1] / f"asset.{asset_hash}"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    # The nerkit package without the subpackages of other runtimes (training, api).
    assert files and all(f.startswith("nerkit/") and f.endswith(".py") for f in files)
    assert not [f for f in files if f.startswith(("nerkit/training/", "nerkit/api/"))]
    # The handler imports from the asset alone, and none of those runtimes' libraries.
    check = (
        f"import sys; sys.path.insert(0, {str(root)!r}); import nerkit.pipeline.gate as g; "
        f"assert g.__file__.startswith({str(root)!r}); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'numpy', 'onnxruntime', 'tokenizers', 'fastapi', 'torch', 'transformers'}))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", check], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


def test_image_assets_carry_no_virtualenv_or_node_modules(
    synth: tuple[dict[str, Any], Path],
) -> None:
    outdir = synth[1]
    images = [
        p for p in outdir.glob("asset.*") if (p / "lambda").is_dir() or (p / "training").is_dir()
    ]
    assert len(images) == 2
    for image in images:
        names = {p.relative_to(image).parts[0] for p in image.rglob("*")}
        assert names <= {"lambda", "training", "nerkit"}
    serving = next(p for p in images if (p / "lambda").is_dir())
    assert (serving / "lambda" / "Dockerfile").is_file()
    assert not (serving / "nerkit" / "training").exists()


def test_sagemaker_role_is_limited_to_its_prefixes_image_and_logs(raw: dict[str, Any]) -> None:
    data_bucket, _ = only(raw, "AWS::S3::Bucket", "StorageData")
    role_statements = list(statements(raw, "TrainingSageMakerRole"))
    s3_resources = {
        flat(resource)
        for s in role_statements
        if any(a.startswith("s3:") for a in as_list(s["Action"]))
        for resource in as_list(s["Resource"])
    }
    assert s3_resources == {
        f"<{data_bucket}.Arn>/datasets/*",
        f"<{data_bucket}.Arn>/training/*",
        f"<{data_bucket}.Arn>/checkpoints/*",
        f"<{data_bucket}.Arn>",
    }
    star = [s for s in role_statements if s["Resource"] == "*"]
    assert {a for s in star for a in as_list(s["Action"])} == {
        "ecr:GetAuthorizationToken",
        "cloudwatch:PutMetricData",
    }
    ecr_pull = next(s for s in role_statements if "ecr:BatchGetImage" in as_list(s["Action"]))
    assert "container-assets" in flat(ecr_pull["Resource"])
    (assume,) = raw["Resources"][only(raw, "AWS::IAM::Role", "TrainingSageMakerRole")[0]][
        "Properties"
    ]["AssumeRolePolicyDocument"]["Statement"]
    assert assume["Principal"] == {"Service": "sagemaker.amazonaws.com"}


def test_state_machine_role_is_scoped_to_this_deployments_jobs(raw: dict[str, Any]) -> None:
    role_statements = list(statements(raw, "TrainingStateMachineRole"))
    training = next(
        s for s in role_statements if "sagemaker:CreateTrainingJob" in as_list(s["Action"])
    )
    assert flat(training["Resource"]).endswith(":training-job/nerkit-prod-*")
    pass_role = next(s for s in role_statements if s["Action"] == "iam:PassRole")
    assert pass_role["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }


def _typed_task_actions() -> set[str]:
    """What the pinned aws-cdk-lib's typed SageMakerCreateTrainingJob (.sync) grants its
    state machine's role: the reference our hand-written statements must cover."""
    app = App()
    stack = Stack(app, "TypedTask")
    task = tasks.SageMakerCreateTrainingJob(
        stack,
        "Train",
        training_job_name="nerkit-prod-x",
        integration_pattern=sfn.IntegrationPattern.RUN_JOB,
        algorithm_specification=tasks.AlgorithmSpecification(
            training_image=tasks.DockerImage.from_registry("example/image")
        ),
        input_data_config=[
            tasks.Channel(
                channel_name="train",
                data_source=tasks.DataSource(
                    s3_data_source=tasks.S3DataSource(
                        s3_location=tasks.S3Location.from_json_expression("$.train")
                    )
                ),
            )
        ],
        output_data_config=tasks.OutputDataConfig(
            s3_output_location=tasks.S3Location.from_json_expression("$.output")
        ),
    )
    machine = sfn.StateMachine(
        stack, "Machine", definition_body=sfn.DefinitionBody.from_chainable(task)
    )
    template = app.synth().get_stack_by_name("TypedTask").template
    role = stack.get_logical_id(machine.role.node.default_child)
    return {
        action
        for statement in statements(template, role)
        for action in as_list(statement["Action"])
    }


def test_state_machine_role_grants_everything_the_typed_training_task_grants(
    raw: dict[str, Any],
) -> None:
    expected = _typed_task_actions()
    assert "sagemaker:AddTags" in expected  # the .sync integration tags the job
    granted = {
        action
        for statement in statements(raw, "TrainingStateMachineRole")
        for action in as_list(statement["Action"])
    }
    assert expected <= granted, sorted(expected - granted)


def test_no_s3_permission_anywhere_has_a_star_resource(raw: dict[str, Any]) -> None:
    for statement in statements(raw):
        actions = as_list(statement["Action"])
        if any(a.startswith("s3:") for a in actions):
            for resource in as_list(statement["Resource"]):
                assert resource != "*", statement
                assert "StorageData" in flat(resource), statement


def test_the_default_stack_sets_the_accounts_api_gateway_logging_role(raw: dict[str, Any]) -> None:
    """api_gateway_account_role (default on) makes this stack own the account-wide setting;
    test_nag's flipped variant checks the stack without it."""
    _, account = only(raw, "AWS::ApiGateway::Account", "ServingApi")
    role, _ = only(raw, "AWS::IAM::Role", "ServingApiCloudWatchRole")
    assert account["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": [role, "Arn"]}


def test_only_the_api_gateway_logging_role_uses_a_managed_policy(raw: dict[str, Any]) -> None:
    managed = {
        name: [flat(arn) for arn in role["Properties"].get("ManagedPolicyArns", [])]
        for name, role in resources(raw, "AWS::IAM::Role").items()
        if role["Properties"].get("ManagedPolicyArns")
    }
    assert len(managed) == 1
    ((name, arns),) = managed.items()
    assert name.startswith("ServingApiCloudWatchRole")
    assert arns == [
        "arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
    ]


# -- operations -----------------------------------------------------------------------------


def test_every_log_group_has_a_retention(raw: dict[str, Any]) -> None:
    groups = resources(raw, "AWS::Logs::LogGroup")
    # function, access, execution, gate, state machine, admin; bulk: three functions, state
    # machine
    assert len(groups) == 10
    # SageMaker's account-wide group is left alone unless manage_sagemaker_log_group.
    assert not [
        g
        for g in groups.values()
        if "LogGroupName" in g["Properties"]
        and g["Properties"]["LogGroupName"] == "/aws/sagemaker/TrainingJobs"
    ]
    assert {g["Properties"]["RetentionInDays"] for g in groups.values()} == {30}


def test_alarms_on_errors_throttles_5xx_and_training_notify_the_topic(raw: dict[str, Any]) -> None:
    topic, _ = only(raw, "AWS::SNS::Topic", "MonitoringAlarms")
    alarms = resources(raw, "AWS::CloudWatch::Alarm").values()
    metrics = {
        (a["Properties"]["Namespace"], a["Properties"]["MetricName"])
        for a in alarms
        if "MetricName" in a["Properties"]
    }
    assert metrics == {
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/States", "ExecutionsFailed"),
        ("AWS/States", "ExecutionsTimedOut"),  # bulk runs (tests/infra/test_bulk_stack.py)
    }
    (api_5xx,) = [a["Properties"] for a in alarms if "Metrics" in a["Properties"]]
    assert api_5xx["Threshold"] == 1
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}]


def test_api_5xx_alarm_watches_the_keyed_routes_only(raw: dict[str, Any]) -> None:
    """/ready is 503 until a model is published: a fresh stack must not alarm on it."""
    (alarm,) = [
        a["Properties"]
        for name, a in resources(raw, "AWS::CloudWatch::Alarm").items()
        if name.startswith("MonitoringApi5xx")
    ]
    watched: dict[str, set[tuple[str, str]]] = {}
    expressions = []
    for query in alarm["Metrics"]:
        if "Expression" in query:
            expressions.append(query["Expression"])
            continue
        metric = query["MetricStat"]["Metric"]
        dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        assert metric["Namespace"] == "AWS/ApiGateway"
        assert dims["ApiName"] == "nerkit-prod" and dims["Stage"] == "prod"
        watched.setdefault(metric["MetricName"], set()).add((dims["Method"], dims["Resource"]))
    keyed = {
        ("POST", "/v1/entities"),
        ("POST", "/v1/hf/token-classification"),
        ("GET", "/v1/model"),
    }
    assert watched == {"5XXError": keyed, "Count": keyed}
    (expression,) = expressions
    assert expression.startswith("100 * (")


def test_dashboard_shows_the_service_emf_metrics(raw: dict[str, Any]) -> None:
    from nerkit.api.logs import NAMESPACE

    _, dashboard = only(raw, "AWS::CloudWatch::Dashboard", "Monitoring")
    body = flat(dashboard["Properties"]["DashboardBody"])
    assert NAMESPACE == "nerkit"  # the namespace the serving app writes
    for metric in ("Latency", "Texts", "Entities", "Errors"):
        assert f'{{{NAMESPACE},Route,Service}} MetricName=\\"{metric}\\"' in body
    function, _ = only(raw, "AWS::Lambda::Function", "ServingFunction")
    assert f'Service=\\"<{function}>\\"' in body


def test_outputs(raw: dict[str, Any]) -> None:
    assert {
        "ApiUrl",
        "ApiKeyId",
        "BucketName",
        "StateMachineArn",
        "ModelUri",
        "DatasetsUri",
        "TrainingJobPrefix",
    } <= set(raw["Outputs"])
    assert raw["Outputs"]["TrainingJobPrefix"]["Value"] == "nerkit-prod-"


# -- settings -------------------------------------------------------------------------------


def test_settings_context_beats_environment_beats_default() -> None:
    context = {"lambda_memory_mb": "3538", "cors_origins": "https://a.example, https://b.example"}
    environ = {"NERKIT_LAMBDA_MEMORY_MB": "2048", "NERKIT_STAGE": "dev", "NERKIT_SPOT": "off"}

    settings = Settings.load(context.get, environ)

    assert settings.lambda_memory_mb == 3538
    assert settings.ner_threads == 2
    assert settings.stage == "dev"
    assert settings.spot is False
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.reserved_concurrency is None
    assert Settings.load({}.get, {}) == Settings()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("on", True), ("1", True), ("yes", True), ("off", False), ("0", False)],
)
def test_settings_parse_booleans_from_context_and_environment(raw: str, expected: bool) -> None:
    assert Settings.load({"tracing": raw}.get, {}).tracing is expected
    assert Settings.load({}.get, {"NERKIT_TRACING": raw}).tracing is expected


def test_settings_read_the_given_environment_and_name_the_bad_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NERKIT_STAGE", "ambient")
    # The mapping given replaces os.environ entirely.
    assert Settings.load({}.get, {}).stage == "prod"
    assert Settings.load({}.get, None).stage == "ambient"
    with pytest.raises(SettingsError, match="environment NERKIT_SPOT='maybe'"):
        Settings.load({}.get, {"NERKIT_SPOT": "maybe"})
    # "none" clears an optional value; a JSON list works like a comma-separated one.
    settings = Settings.load(
        {"reserved_concurrency": "none", "cors_origins": '["https://a.example"]'}.get,
        {"NERKIT_RESERVED_CONCURRENCY": "5"},
    )
    assert settings.reserved_concurrency is None
    assert settings.cors_origins == ("https://a.example",)


def test_every_allowed_retention_maps_to_a_cloudwatch_value() -> None:
    assert set(RETENTION) == set(LOG_RETENTION_DAYS)


def test_settings_accept_typed_cdk_json_values() -> None:
    context = {"reserved_concurrency": 5, "enable_page": False, "cors_origins": ["*"]}

    settings = Settings.load(context.get, {})

    assert (settings.reserved_concurrency, settings.enable_page) == (5, False)
    assert settings.cors_origins == ("*",)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"lambda_memory_mb": "64"}, "lambda_memory_mb"),
        ({"lambda_timeout_seconds": "60"}, "lambda_timeout_seconds"),
        ({"architecture": "sparc"}, "architecture"),
        ({"spot": "maybe"}, "context spot=.maybe.: .*valid boolean"),
        ({"lambda_memory_mb": "lots"}, "lambda_memory_mb"),
        ({"max_wait_seconds": "60", "max_runtime_seconds": "120"}, "max_wait_seconds"),
        ({"model_prefix": "/models"}, "model_prefix"),
        ({"model_prefix": "datasets/models"}, "contain each other"),
        ({"datasets_prefix": "training"}, "reserved"),
        ({"cors_origins": "example.com"}, "cors_origins"),
        ({"stage": "Prod"}, "stage"),
        ({"log_retention_days": "8"}, "log_retention_days"),
        ({"gate_min_f1": "1.5"}, "gate_min_f1"),
        ({"open_throttle_burst": "0"}, "open_throttle_burst"),
        ({"open_throttle_rate": "0"}, "open_throttle_rate"),
    ],
)
def test_settings_refuse_invalid_values(context: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(context.get, {})
