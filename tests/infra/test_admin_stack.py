"""The admin side of the template (infra/admin.py): its least-privilege role, its routes on
the REST API, its key and usage plan, the bucket's CORS; and the inference role unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_stack import _method_paths, as_list, flat, only, resources, statements

from infra.admin import ADMIN_ROUTES
from infra.app import build_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(outdir=str(outdir), environ={})
    return app.synth().get_stack_by_name(stack.stack_name).template


def policy(
    raw: dict[str, Any], role_prefix: str
) -> set[tuple[tuple[str, ...], tuple[str, ...], str]]:
    """Every statement of the role's policies as (actions, resources, condition JSON)."""
    return {
        (
            tuple(sorted(as_list(s["Action"]))),
            tuple(sorted(flat(r) for r in as_list(s["Resource"]))),
            json.dumps(s.get("Condition"), sort_keys=True),
        )
        for s in statements(raw, role_prefix)
    }


def test_the_inference_role_stays_read_only_exactly_as_before(raw: dict[str, Any]) -> None:
    bucket, _ = only(raw, "AWS::S3::Bucket", "StorageData")
    logs, _ = only(raw, "AWS::Logs::LogGroup", "ServingFunctionLogs")
    assert policy(raw, "ServingFunctionRole") == {
        (("s3:GetObject",), (f"<{bucket}.Arn>/models/ner/*",), "null"),
        (
            ("s3:ListBucket",),
            (f"<{bucket}.Arn>",),
            json.dumps({"StringLike": {"s3:prefix": ["models/ner/*"]}}),
        ),
        (("logs:CreateLogStream", "logs:PutLogEvents"), (f"<{logs}.Arn>",), "null"),
    }


def test_the_admin_role_is_least_privilege(raw: dict[str, Any]) -> None:
    bucket, _ = only(raw, "AWS::S3::Bucket", "StorageData")
    machine, _ = only(raw, "AWS::StepFunctions::StateMachine", "TrainingStateMachine")
    logs, _ = only(raw, "AWS::Logs::LogGroup", "AdminFunctionLogs")
    executions = (
        f"arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:<{machine}.Name>:*"
    )
    assert policy(raw, "AdminFunctionRole") == {
        (("states:ListExecutions", "states:StartExecution"), (f"<{machine}>",), "null"),
        (("states:DescribeExecution",), (executions,), "null"),
        (
            ("s3:GetObject",),
            (f"<{bucket}.Arn>/models/ner/*/manifest.json", f"<{bucket}.Arn>/models/ner/LIVE"),
            "null",
        ),
        # Writes: the LIVE pointer and dataset uploads, nothing else (CDK merges the two).
        (
            ("s3:PutObject",),
            (f"<{bucket}.Arn>/datasets/*", f"<{bucket}.Arn>/models/ner/LIVE"),
            "null",
        ),
        (
            ("s3:ListBucket",),
            (f"<{bucket}.Arn>",),
            json.dumps({"StringLike": {"s3:prefix": ["datasets/*", "models/ner/*"]}}),
        ),
        (("logs:CreateLogStream", "logs:PutLogEvents"), (f"<{logs}.Arn>",), "null"),
    }


def test_the_admin_function_runs_the_serving_image_with_admin_on(raw: dict[str, Any]) -> None:
    _, admin = only(raw, "AWS::Lambda::Function", "AdminFunction")
    _, serving = only(raw, "AWS::Lambda::Function", "ServingFunction")
    bucket, _ = only(raw, "AWS::S3::Bucket", "StorageData")
    machine, _ = only(raw, "AWS::StepFunctions::StateMachine", "TrainingStateMachine")
    key, _ = only(raw, "AWS::ApiGateway::ApiKey", "AdminApiKey")
    assert admin["Properties"]["Code"] == serving["Properties"]["Code"]
    env = admin["Properties"]["Environment"]["Variables"]
    assert {name: flat(value) for name, value in env.items()} == {
        "MODEL_URI": f"s3://<{bucket}>/models/ner",
        "ENABLE_ADMIN": "true",
        "ENABLE_PAGE": "false",
        "PRELOAD_MODEL": "false",
        "ADMIN_KEY_IDS": f"<{key}>",
        "STATE_MACHINE_ARN": f"<{machine}>",
        "DATASETS_URI": f"s3://<{bucket}>/datasets",
        "TRAINING_JOB_PREFIX": "nerkit-prod-",
        "UPLOAD_URL": f"https://<{bucket}.RegionalDomainName>/",
        "MAX_UPLOAD_BYTES": str(1 << 30),
    }
    serving_env = serving["Properties"]["Environment"]["Variables"]
    assert "ENABLE_ADMIN" not in serving_env and "ADMIN_KEY_IDS" not in serving_env
    assert flat(serving_env["UPLOAD_URL"]) == flat(env["UPLOAD_URL"])


def test_admin_routes_need_a_key_and_reach_only_the_admin_function(raw: dict[str, Any]) -> None:
    methods = _method_paths(raw)
    admin_fn, _ = only(raw, "AWS::Lambda::Function", "AdminFunction")
    serving_fn, _ = only(raw, "AWS::Lambda::Function", "ServingFunction")
    for method, path in ADMIN_ROUTES:
        props = methods[(method, f"/{path}")]
        assert props["ApiKeyRequired"] is True
        uri = flat(props["Integration"]["Uri"])
        assert f"<{admin_fn}.Arn>" in uri and serving_fn not in uri
    for (method, path), props in methods.items():
        if (method, path.lstrip("/")) not in ADMIN_ROUTES:
            assert admin_fn not in flat(props["Integration"]["Uri"]), (method, path)


def test_the_admin_key_has_its_own_low_limit_usage_plan(raw: dict[str, Any]) -> None:
    key, _ = only(raw, "AWS::ApiGateway::ApiKey", "AdminApiKey")
    plan_name, plan = only(raw, "AWS::ApiGateway::UsagePlan", "ServingApiAdminUsagePlan")
    assert plan["Properties"]["Throttle"] == {"RateLimit": 2, "BurstLimit": 5}
    assert plan["Properties"]["Quota"] == {"Limit": 2000, "Period": "DAY"}
    links = [
        link["Properties"]
        for link in resources(raw, "AWS::ApiGateway::UsagePlanKey").values()
        if link["Properties"]["KeyId"] == {"Ref": key}
    ]
    assert links == [
        {"KeyId": {"Ref": key}, "KeyType": "API_KEY", "UsagePlanId": {"Ref": plan_name}}
    ]
    assert "StageKeys" not in raw["Resources"][key]["Properties"]


def test_the_bucket_lets_only_the_page_post_uploads(raw: dict[str, Any]) -> None:
    _, bucket = only(raw, "AWS::S3::Bucket", "StorageData")
    api, _ = only(raw, "AWS::ApiGateway::RestApi", "ServingApi")
    (rule,) = bucket["Properties"]["CorsConfiguration"]["CorsRules"]
    assert rule["AllowedMethods"] == ["POST"]
    assert [flat(origin) for origin in rule["AllowedOrigins"]] == [
        f"https://<{api}>.execute-api.<AWS::Region>.<AWS::URLSuffix>"
    ]
    assert set(rule) == {"AllowedMethods", "AllowedOrigins", "MaxAge"}


def test_outputs_name_the_admin_key(raw: dict[str, Any]) -> None:
    key, _ = only(raw, "AWS::ApiGateway::ApiKey", "AdminApiKey")
    assert raw["Outputs"]["AdminApiKeyId"]["Value"] == {"Ref": key}


def test_the_gateway_has_exactly_the_apps_admin_routes() -> None:
    from fastapi.routing import APIRoute

    from nerkit.api.admin import router

    app_routes = {
        (method, route.path.lstrip("/"))
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert app_routes == set(ADMIN_ROUTES)
