"""The ``api=http`` front door on the synthesized template: an HTTP API with a JWT authorizer
in place of the REST API, its routes and scopes, throttles, access logs, alarm and outputs;
with the Cognito user pool the stack creates and with an external OIDC issuer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_integrations as integrations

from infra.admin import ADMIN_BURST, ADMIN_RATE, ADMIN_ROUTES
from infra.app import build_app
from infra.http_api import ACCESS_LOG_FORMAT, ADMIN_SCOPE, INVOKE_SCOPE, route_key
from infra.serving import KEYED_METHODS, OPEN_ROUTES
from infra.settings import Settings, SettingsError
from nerkit.api.settings import Settings as AppSettings

pytestmark = pytest.mark.slow

ISSUER = "https://login.example.com/tenant/"


def synth(tmp_path_factory: pytest.TempPathFactory, context: dict[str, str]) -> dict[str, Any]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(context, outdir=str(outdir), environ={})
    return app.synth().get_stack_by_name(stack.stack_name).template


@pytest.fixture(scope="module")
def cognito(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synth(tmp_path_factory, {"api": "http"})


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synth(
        tmp_path_factory,
        {
            "api": "http",
            "jwt_issuer": ISSUER,
            "jwt_audience": "nerkit-api,nerkit-batch",
            "cors_origins": "https://app.example.com",
            "enable_page": "false",
        },
    )


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in template["Resources"].items() if v["Type"] == kind}


def only(template: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    (item,) = of_type(template, kind).items()
    return item


def function_id(template: dict[str, Any], prefix: str) -> str:
    (name,) = [k for k in of_type(template, "AWS::Lambda::Function") if k.startswith(prefix)]
    return name


def routes(template: dict[str, Any]) -> dict[str, tuple[str, list[str], str]]:
    """Route key -> (authorization type, scopes, logical id of the function it invokes)."""
    integrations = of_type(template, "AWS::ApiGatewayV2::Integration")
    table = {}
    for route in of_type(template, "AWS::ApiGatewayV2::Route").values():
        (integration,) = [
            part["Ref"] for part in route["Target"]["Fn::Join"][1] if isinstance(part, dict)
        ]
        target = integrations[integration]
        assert target["IntegrationType"] == "AWS_PROXY"
        assert target["PayloadFormatVersion"] == "2.0"
        table[route["RouteKey"]] = (
            route["AuthorizationType"],
            route.get("AuthorizationScopes", []),
            target["IntegrationUri"]["Fn::GetAtt"][0],
        )
    return table


def test_no_rest_api_no_keys_no_usage_plans(cognito: dict[str, Any]) -> None:
    kinds = {r["Type"] for r in cognito["Resources"].values()}
    assert not {k for k in kinds if k.startswith("AWS::ApiGateway::")}, kinds
    assert "AWS::ApiGatewayV2::Api" in kinds
    (api,) = of_type(cognito, "AWS::ApiGatewayV2::Api").values()
    assert api["ProtocolType"] == "HTTP"
    assert "CorsConfiguration" not in api  # no cors_origins: no preflights


def test_every_route_and_its_authorization(cognito: dict[str, Any]) -> None:
    serving = function_id(cognito, "ServingFunction")
    admin = function_id(cognito, "AdminFunction")
    expected = {
        **{route_key(m, p): ("JWT", [INVOKE_SCOPE], serving) for m, p in KEYED_METHODS},
        **{route_key(m, p): ("JWT", [ADMIN_SCOPE], admin) for m, p in ADMIN_ROUTES},
        **{route_key("GET", p): ("NONE", [], serving) for p in OPEN_ROUTES},
        "GET /": ("NONE", [], serving),  # the page
    }
    assert routes(cognito) == expected
    # Every JWT route uses the one authorizer.
    authorizer, _ = only(cognito, "AWS::ApiGatewayV2::Authorizer")
    for route in of_type(cognito, "AWS::ApiGatewayV2::Route").values():
        if route["AuthorizationType"] == "JWT":
            assert route["AuthorizerId"] == {"Ref": authorizer}


def test_the_user_pool_issues_client_credentials_tokens_with_the_scopes(
    cognito: dict[str, Any],
) -> None:
    pool, props = only(cognito, "AWS::Cognito::UserPool")
    assert props["AdminCreateUserConfig"] == {"AllowAdminCreateUserOnly": True}
    _, server = only(cognito, "AWS::Cognito::UserPoolResourceServer")
    scopes = {f"{server['Identifier']}/{s['ScopeName']}" for s in server["Scopes"]}
    assert scopes == {INVOKE_SCOPE, ADMIN_SCOPE}
    clients = of_type(cognito, "AWS::Cognito::UserPoolClient")
    granted = {}
    for name, client in clients.items():
        assert client["AllowedOAuthFlows"] == ["client_credentials"]
        assert client["GenerateSecret"] is True
        granted[name.split("UserPool")[1][:-8]] = {
            scope["Fn::Join"][1][1].lstrip("/") for scope in client["AllowedOAuthScopes"]
        }
    # Only the admin client may get an admin token.
    assert granted == {"Client": {"invoke"}, "AdminClient": {"invoke", "admin"}}
    _, authorizer = only(cognito, "AWS::ApiGatewayV2::Authorizer")
    assert authorizer["AuthorizerType"] == "JWT"
    assert authorizer["IdentitySource"] == ["$request.header.Authorization"]
    assert authorizer["JwtConfiguration"] == {
        "Issuer": {"Fn::GetAtt": [pool, "ProviderURL"]},
        "Audience": [{"Ref": name} for name in clients],
    }
    _, domain = only(cognito, "AWS::Cognito::UserPoolDomain")
    assert domain["UserPoolId"] == {"Ref": pool}


def test_the_stage_throttles_logs_and_measures_every_route(cognito: dict[str, Any]) -> None:
    defaults = Settings()
    _, stage = only(cognito, "AWS::ApiGatewayV2::Stage")
    # $default: no stage name in the path the app routes on.
    assert stage["StageName"] == "$default"
    assert stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"] == {
        "DetailedMetricsEnabled": True,
        "ThrottlingRateLimit": defaults.throttle_rate,
        "ThrottlingBurstLimit": defaults.throttle_burst,
    }
    open_limits = (defaults.open_throttle_rate, defaults.open_throttle_burst)
    expected = {route_key("GET", p): open_limits for p in (*OPEN_ROUTES, "")}
    expected |= {route_key(m, p): (ADMIN_RATE, ADMIN_BURST) for m, p in ADMIN_ROUTES}
    assert {
        key: (value["ThrottlingRateLimit"], value["ThrottlingBurstLimit"])
        for key, value in stage["RouteSettings"].items()
    } == expected
    assert all(value["DetailedMetricsEnabled"] for value in stage["RouteSettings"].values())


def test_access_logs_are_json_without_user_text(cognito: dict[str, Any]) -> None:
    _, stage = only(cognito, "AWS::ApiGatewayV2::Stage")
    settings = stage["AccessLogSettings"]
    assert json.loads(settings["Format"]) == ACCESS_LOG_FORMAT
    # The route's template, never the path, query string or body (the user's text).
    variables = set(ACCESS_LOG_FORMAT.values())
    assert "$context.routeKey" in variables
    assert not [v for v in variables if "path" in v.lower() or "body" in v.lower()]
    (log_group,) = settings["DestinationArn"]["Fn::GetAtt"][:1]
    groups = of_type(cognito, "AWS::Logs::LogGroup")
    assert groups[log_group]["RetentionInDays"] == Settings().log_retention_days


def test_the_5xx_alarm_watches_the_keyed_routes_of_the_http_api(cognito: dict[str, Any]) -> None:
    api, _ = only(cognito, "AWS::ApiGatewayV2::Api")
    (alarm,) = [
        a for name, a in of_type(cognito, "AWS::CloudWatch::Alarm").items() if "Api5xx" in name
    ]
    watched: dict[str, set[tuple[str, str]]] = {}
    for query in alarm["Metrics"]:
        if "MetricStat" not in query:
            continue
        metric = query["MetricStat"]["Metric"]
        dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        assert dimensions["ApiId"] == {"Ref": api}
        assert dimensions["Stage"] == "$default"
        watched.setdefault(metric["MetricName"], set()).add(
            (dimensions["Method"], dimensions["Resource"])
        )
    keyed = {(method, f"/{path}") for method, path in KEYED_METHODS}
    assert watched == {"5xx": keyed, "Count": keyed}


def test_outputs_say_how_to_get_a_token_and_no_api_keys(cognito: dict[str, Any]) -> None:
    outputs = cognito["Outputs"]
    assert {"ApiUrl", "UserPoolId", "TokenUrl", "ClientId", "AdminClientId"} <= set(outputs)
    assert not {"ApiKeyId", "AdminApiKeyId"} & set(outputs)
    api, _ = only(cognito, "AWS::ApiGatewayV2::Api")
    pieces = outputs["ApiUrl"]["Value"]["Fn::Join"][1]
    assert {"Ref": api} in pieces
    # The $default stage: the API's root, no stage segment.
    assert flat(outputs["ApiUrl"]["Value"]) == "https://<>.execute-api.<>.<>/"
    assert flat(outputs["TokenUrl"]["Value"]) == "https://<>.auth.<>.amazoncognito.com/oauth2/token"


def flat(value: dict[str, Any]) -> str:
    """A joined output value with each intrinsic shown as <>."""
    return "".join(p if isinstance(p, str) else "<>" for p in value["Fn::Join"][1])


def test_the_admin_function_checks_the_scope_the_authorizer_requires(
    cognito: dict[str, Any],
) -> None:
    admin = of_type(cognito, "AWS::Lambda::Function")[function_id(cognito, "AdminFunction")]
    variables = admin["Environment"]["Variables"]
    assert "ADMIN_KEY_IDS" not in variables
    assert variables["ADMIN_SCOPE"] == ADMIN_SCOPE == AppSettings().admin_scope
    # The page (served by this API) may upload datasets: the bucket's one CORS origin.
    api, _ = only(cognito, "AWS::ApiGatewayV2::Api")
    (rule,) = [
        rule
        for bucket in of_type(cognito, "AWS::S3::Bucket").values()
        for rule in bucket.get("CorsConfiguration", {}).get("CorsRules", [])
    ]
    assert rule["AllowedMethods"] == ["POST"]
    assert {"Ref": api} in rule["AllowedOrigins"][0]["Fn::Join"][1]


def test_an_oidc_issuer_replaces_the_user_pool(oidc: dict[str, Any]) -> None:
    kinds = {r["Type"] for r in oidc["Resources"].values()}
    assert not {k for k in kinds if k.startswith("AWS::Cognito::")}
    _, authorizer = only(oidc, "AWS::ApiGatewayV2::Authorizer")
    assert authorizer["JwtConfiguration"] == {
        "Issuer": ISSUER,
        "Audience": ["nerkit-api", "nerkit-batch"],
    }
    assert not {"UserPoolId", "TokenUrl", "ClientId", "AdminClientId"} & set(oidc["Outputs"])
    # No page: no GET /. The preflights are the gateway's (the token header allowed).
    assert "GET /" not in routes(oidc)
    _, api = only(oidc, "AWS::ApiGatewayV2::Api")
    cors = api["CorsConfiguration"]
    assert cors["AllowOrigins"] == ["https://app.example.com"]
    assert "Authorization" in cors["AllowHeaders"]


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        ({"api": "grpc"}, "api must be rest or http"),
        ({"jwt_issuer": ISSUER, "jwt_audience": "x"}, "apply only with api=http"),
        ({"api": "http", "jwt_issuer": ISSUER}, "go together"),
        ({"api": "http", "jwt_audience": "x"}, "go together"),
        ({"api": "http", "jwt_issuer": "http://x.example.com", "jwt_audience": "x"}, "https://"),
    ],
)
def test_front_door_settings_are_checked(context: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        Settings.load(context.get, environ={})


def test_a_new_open_http_route_fails_cdk_nag(tmp_path: Path) -> None:
    """The open routes are acknowledged one by one: a route added later without the
    authorizer is checked afresh."""
    app, stack = build_app({"api": "http"}, outdir=str(tmp_path), environ={})
    assert stack.serving.front_door is not None
    stack.serving.front_door.api.add_routes(
        path="/debug",
        methods=[apigwv2.HttpMethod.GET],
        integration=integrations.HttpLambdaIntegration("Debug", stack.serving.function),
    )
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    failures = {
        (v["ruleName"], c["constructPath"])
        for plugin in report["pluginReports"]
        for v in plugin["violations"]
        for c in v["violatingConstructs"]
    }
    assert failures == {
        ("AwsSolutions-APIG4", "Nerkit-prod/Serving/HttpApi/Api/GET--debug/Resource")
    }
