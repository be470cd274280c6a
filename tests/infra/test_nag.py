"""The independent template checks on the real app, with default and with every option
flipped: cdk-nag AwsSolutions (no unacknowledged finding, every acknowledgment with a written
reason, on the exact construct) and cfn-lint (no error, no warning but CDK's own redundant
role dependencies). Tiny bad stacks and templates prove both checks can fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from cfnlint.api import ManualArgs, lint

from infra.app import build_app
from infra.nag import acknowledge, acknowledge_wildcard, add_checks

pytestmark = pytest.mark.slow

# Every option away from its default, so acknowledgments that depend on options are checked.
CUSTOM = {
    "stage": "dev",
    "architecture": "arm64",
    "tracing": "true",
    "cors_origins": "https://a.example.com,https://b.example.org",
    "enable_page": "false",
    "reserved_concurrency": "5",
    "alarm_email": "ops@example.com",
    "spot": "false",
    "api_gateway_account_role": "false",
    "manage_sagemaker_log_group": "true",
}
# The HTTP API front door: with the Cognito user pool the stack creates, and with an external
# OIDC issuer and every other option flipped.
HTTP = {"api": "http"}
HTTP_CUSTOM = {
    **CUSTOM,
    "api": "http",
    "jwt_issuer": "https://login.example.com/tenant/",
    "jwt_audience": "nerkit-api",
}
# What may be acknowledged at all; anything else must be fixed, not acknowledged.
ACCEPTED_RULES = {
    "AwsSolutions-IAM4",  # the API Gateway account logging role's managed policy
    "AwsSolutions-IAM5",  # prefix-scoped S3 objects, job-name patterns, no-resource actions
    "AwsSolutions-APIG3",  # no WAF
    "AwsSolutions-APIG4",  # API keys instead of an authorizer
    "AwsSolutions-COG4",  # no Cognito
    "AwsSolutions-COG8",  # api=http: a user pool of app clients only, no Plus plan
    "AwsSolutions-SF2",  # state machine X-Ray follows the tracing setting (off by default)
}


def report(outdir: Path) -> dict[str, Any]:
    (plugin,) = json.loads((outdir / "validation-report.json").read_text())["pluginReports"]
    assert plugin["pluginName"] == "AwsSolutions"
    return plugin


def synth_app(
    tmp_path_factory: pytest.TempPathFactory, context: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(context, outdir=str(outdir), environ={})
    # Raises ValidationFailed on any unacknowledged finding.
    assembly = app.synth()
    return report(outdir), assembly.get_stack_by_name(stack.stack_name).template


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    return synth_app(tmp_path_factory, {})


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    return synth_app(tmp_path_factory, CUSTOM)


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    return synth_app(tmp_path_factory, HTTP)


@pytest.fixture(scope="module")
def http_custom(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Any], dict[str, Any]]:
    return synth_app(tmp_path_factory, HTTP_CUSTOM)


VARIANTS = ["default", "custom", "http", "http_custom"]


def assert_clean(plugin: dict[str, Any]) -> None:
    assert plugin["violations"] == []
    assert plugin["conclusion"] == "success"
    assert plugin["suppressedViolations"], "the report should list the acknowledged findings"
    for finding in plugin["suppressedViolations"]:
        assert finding["ruleName"].split("[")[0] in ACCEPTED_RULES, finding["ruleName"]
        assert len(finding["reason"]) >= 40, finding


def test_default_app_has_no_unacknowledged_findings(default: tuple[dict, dict]) -> None:
    plugin, _ = default
    assert_clean(plugin)
    rules = {finding["ruleName"] for finding in plugin["suppressedViolations"]}
    # The resource wildcards are the bucket prefixes, one log group and the job names.
    assert "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:" \
        "<AWS::AccountId>:training-job/nerkit-prod-*]" in rules  # fmt: skip
    assert not any("Action::" in rule for rule in rules), "no wildcard actions"


def test_every_option_flipped_has_no_unacknowledged_findings(custom: tuple[dict, dict]) -> None:
    plugin, _ = custom
    assert_clean(plugin)


@pytest.mark.parametrize("variant", ["http", "http_custom"])
def test_the_http_front_door_has_no_unacknowledged_findings(
    variant: str, request: pytest.FixtureRequest
) -> None:
    plugin, template = request.getfixturevalue(variant)
    assert_clean(plugin)
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert "AWS::ApiGatewayV2::Api" in kinds
    assert not [k for k in kinds if k.startswith("AWS::ApiGateway::")]


def test_the_flipped_options_take_effect(custom: tuple[dict, dict]) -> None:
    _, template = custom
    resources = template["Resources"]
    (function,) = [
        r["Properties"]
        for name, r in resources.items()
        if name.startswith("ServingFunction") and r["Type"] == "AWS::Lambda::Function"
    ]
    assert function["Architectures"] == ["arm64"]
    assert function["ReservedConcurrentExecutions"] == 5
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["Environment"]["Variables"]["ENABLE_PAGE"] == "false"
    assert (
        function["Environment"]["Variables"]["CORS_ORIGINS"]
        == "https://a.example.com,https://b.example.org"
    )
    methods = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApiGateway::Method"
    ]
    preflights = [m for m in methods if m["HttpMethod"] == "OPTIONS"]
    assert len(preflights) == 3  # /v1/entities, /v1/hf/token-classification and /v1/model
    for preflight in preflights:
        assert preflight["AuthorizationType"] == "NONE"
        assert not preflight.get("ApiKeyRequired")
        assert preflight["Integration"]["Type"] == "MOCK"
    # No page: the root resource has no GET, and so no throttle of its own.
    assert not [m for m in methods if "RootResourceId" in json.dumps(m["ResourceId"])]
    (stage,) = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApiGateway::Stage"
    ]
    overrides = {(s["HttpMethod"], s["ResourcePath"]): s for s in stage["MethodSettings"]}
    assert sorted(overrides) == [
        ("*", "/*"),
        ("GET", "/~1health"),
        ("GET", "/~1ready"),
        # The preflights are open too: they get the open routes' throttle, not the stage's.
        ("OPTIONS", "/~1v1~1entities"),
        ("OPTIONS", "/~1v1~1hf~1token-classification"),
        ("OPTIONS", "/~1v1~1model"),
    ]
    for key, settings in overrides.items():
        if key[0] != "*":
            assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (5, 10)
    # Gateway errors reach browsers on the allowed origins (two of them: any origin).
    gateway_responses = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::ApiGateway::GatewayResponse"
    ]
    assert gateway_responses
    for response in gateway_responses:
        params = response["ResponseParameters"]
        assert params["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'"
    definition = "".join(
        part if isinstance(part, str) else "TOKEN"
        for r in resources.values()
        if r["Type"] == "AWS::StepFunctions::StateMachine"
        for part in r["Properties"]["DefinitionString"]["Fn::Join"][1]
    )
    assert "EnableManagedSpotTraining" not in definition
    assert "MaxWaitTimeInSeconds" not in definition
    # The account-wide API Gateway logging role is left alone: no Account resource, no role
    # with the managed policy; the stage still logs (the account's role is a prerequisite).
    kinds = {r["Type"] for r in resources.values()}
    assert "AWS::ApiGateway::Account" not in kinds
    assert not [r for r in resources.values() if r["Properties"].get("ManagedPolicyArns")]
    assert "AccessLogSetting" in stage
    machines = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    assert len(machines) == 2  # training and bulk extraction
    for machine in machines:
        assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}
    (sagemaker_logs,) = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::Logs::LogGroup"
        and r["Properties"].get("LogGroupName") == "/aws/sagemaker/TrainingJobs"
    ]
    assert sagemaker_logs["Properties"]["RetentionInDays"] == 30
    assert sagemaker_logs["DeletionPolicy"] == "Retain"
    subscriptions = [r for r in resources.values() if r["Type"] == "AWS::SNS::Subscription"]
    assert [s["Properties"]["Endpoint"] for s in subscriptions] == ["ops@example.com"]


# Findings whose id names no resource: acknowledged only on the exact construct they concern.
GENERIC_FINDINGS = {
    "AwsSolutions-IAM5[Resource::*]",
    "AwsSolutions-APIG3",
    "AwsSolutions-APIG4",
    "AwsSolutions-COG4",
    "AwsSolutions-COG8",
    "AwsSolutions-SF2",
}
# Every action granted on Resource "*" anywhere: those without resource-level permissions.
UNSCOPED_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_generic_findings_are_acknowledged_on_the_exact_construct(
    variant: str, request: pytest.FixtureRequest
) -> None:
    plugin, _ = request.getfixturevalue(variant)
    for finding in plugin["suppressedViolations"]:
        rule = finding["ruleName"]
        # IAM4 names the managed policy, not the role that carries it.
        if rule in GENERIC_FINDINGS or rule.split("[")[0] == "AwsSolutions-IAM4":
            for construct in finding["violatingConstructs"]:
                assert construct["constructPath"] == finding["acknowledgedAt"] + "/Resource", rule


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_actions_without_resource_level_permissions_get_a_star(
    variant: str, request: pytest.FixtureRequest
) -> None:
    _, template = request.getfixturevalue(variant)
    starred = {
        action
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::IAM::Policy"
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
        if statement["Resource"] == "*"
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    assert starred <= UNSCOPED_ACTIONS, sorted(starred - UNSCOPED_ACTIONS)


def test_a_new_open_method_or_star_statement_fails_cdk_nag(tmp_path: Path) -> None:
    """The acknowledgments are scoped: what is added later is checked afresh."""
    app, stack = build_app(outdir=str(tmp_path), environ={})
    stack.serving.api.root.add_resource("debug").add_method("GET", apigw.MockIntegration())
    stack.training.sagemaker_role.add_to_policy(
        iam.PolicyStatement(actions=["sagemaker:ListTrainingJobs"], resources=["*"])
    )
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    failures = {
        (v["ruleName"], c["constructPath"])
        for v in report(tmp_path)["violations"]
        for c in v["violatingConstructs"]
    }
    assert ("AwsSolutions-APIG4", "Nerkit-prod/Serving/Api/Default/debug/GET/Resource") in failures
    assert (
        "AwsSolutions-IAM5[Resource::*]",
        "Nerkit-prod/Training/SageMakerRole/DefaultPolicy/Resource",
    ) in failures


# Regions whose resource specifications cfn-lint checks the templates against.
LINT_REGIONS = ["us-east-1", "eu-west-1"]


def cfn_lint(template: dict[str, Any]) -> list[Any]:
    return list(lint(json.dumps(template), config=ManualArgs(regions=LINT_REGIONS)))


def cdk_role_dependency(match: Any, template: dict[str, Any]) -> bool:
    """W3005 on a DependsOn that aws-cdk-lib itself adds from a Lambda function or state
    machine to its role, next to the role's policy; the GetAtt of the role already orders
    them, so the entry is redundant and harmless (CloudFormation accepts it)."""
    if match.rule.id != "W3005":
        return False
    _, logical_id, key, index = match.path
    resource = template["Resources"][logical_id]
    depended = template["Resources"][resource[key][index]]
    return (
        resource["Type"] in ("AWS::Lambda::Function", "AWS::StepFunctions::StateMachine")
        and depended["Type"] == "AWS::IAM::Role"
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_cfn_lint_passes_every_variant(variant: str, request: pytest.FixtureRequest) -> None:
    _, template = request.getfixturevalue(variant)
    matches = cfn_lint(template)
    assert [m for m in matches if not cdk_role_dependency(m, template)] == []
    # The known ones: the serving, admin, gate and three bulk functions, and the two state
    # machines.
    assert len(matches) == 8


def test_cfn_lint_reports_a_broken_template() -> None:
    template = {
        "Resources": {
            "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"VersioningConfig": {}}},
            "Queue": {"Type": "AWS::SQS::Queue", "DependsOn": ["Nowhere"]},
        }
    }
    rules = {m.rule.id for m in cfn_lint(template)}
    assert {"E3002", "E3005"} <= rules, rules


def _bad_app(outdir: Path, *, acknowledged: bool) -> App:
    app = App(outdir=str(outdir))
    stack = Stack(app, "Bad")
    bucket = s3.Bucket(stack, "Open", removal_policy=RemovalPolicy.DESTROY)
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects("x/*")])
    )
    if acknowledged:
        acknowledge(bucket, "AwsSolutions-S1", "Test: a bucket without access logs, on purpose.")
        acknowledge_wildcard(role, bucket.arn_for_objects("x/*"), "Test: the x/ prefix only.")
    add_checks(app)
    return app


def test_a_bad_stack_fails_the_synth(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        _bad_app(tmp_path, acknowledged=False).synth()

    plugin = report(tmp_path)
    assert plugin["conclusion"] == "failure"
    rules = {v["ruleName"] for v in plugin["violations"]}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules
    assert any(rule.startswith("AwsSolutions-IAM5[Resource::<Open") for rule in rules)


def test_acknowledging_moves_only_the_named_findings(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        _bad_app(tmp_path, acknowledged=True).synth()

    plugin = report(tmp_path)
    violations = {v["ruleName"] for v in plugin["violations"]}
    suppressed = {v["ruleName"] for v in plugin["suppressedViolations"]}
    assert "AwsSolutions-S10" in violations  # not acknowledged: still fails
    assert "AwsSolutions-S1" in suppressed
    # acknowledge_wildcard names the finding exactly as cdk-nag does.
    assert any(rule.startswith("AwsSolutions-IAM5[Resource::<Open") for rule in suppressed)
    assert not any(rule.startswith("AwsSolutions-IAM5") for rule in violations)
