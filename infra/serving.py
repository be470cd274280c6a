"""Serving: the container Lambda behind an API Gateway REST API with API keys and a usage plan.

Routes (all one Lambda proxy integration; FastAPI routes inside):

* ``POST /v1/entities``, ``POST /v1/hf/token-classification`` (the Hugging Face contract),
  ``GET /v1/model``: API key required (usage plan: throttle + quota).
* ``GET /health``, ``GET /ready``: open, for load balancers and uptime checks; they reveal
  nothing but liveness and whether a model is loaded.
* ``GET /`` (``enable_page``): the static HTML page. It is open, but it is only HTML/JS: it
  asks the user for an API key and sends it as ``x-api-key`` to the keyed routes, so it
  grants nothing by itself. With the page off the route does not exist at the gateway (and
  the app refuses it too, ``ENABLE_PAGE=false``).

Anything else is answered by API Gateway itself (404 ``not_found``, no Lambda invocation).
Errors API Gateway produces on its own (no or a bad key, throttling, quota, a body that is not
a JSON object, integration failures) use the app's error envelope too (``GATEWAY_ERRORS``),
so clients parse one shape whoever answered.
REST by default because only REST has API keys, usage plans and request validation; with
``api=http`` an HTTP API with a JWT authorizer takes its place (``infra.http_api``).
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Duration, Size
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.assets import REPO_ROOT, docker_excludes
from infra.http_api import INVOKE_SCOPE, HttpFrontDoor
from infra.log_groups import log_group
from infra.nag import acknowledge
from infra.settings import API_GATEWAY_TIMEOUT_SECONDS, Settings
from infra.storage import Storage

SERVING_DOCKERFILE = "lambda/Dockerfile"
_ARCHITECTURES = {
    "x86_64": (lambda_.Architecture.X86_64, ecr_assets.Platform.LINUX_AMD64),
    "arm64": (lambda_.Architecture.ARM_64, ecr_assets.Platform.LINUX_ARM64),
}
# One JSON object per request. apiKeyId says which client called; no body, no query string
# (the user's text never reaches the access log).
_ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTime",
    "requestTimeEpoch": "$context.requestTimeEpoch",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "apiKeyId": "$context.identity.apiKeyId",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "integrationStatus": "$context.integrationStatus",
    "errorType": "$context.error.responseType",
    "errorMessage": "$context.error.message",
    "xrayTraceId": "$context.xrayTraceId",
}
# The open GET routes besides the page (which exists only with enable_page).
OPEN_ROUTES = ("health", "ready")
# API Gateway's own errors as (response type, status override, code, message) in the app's
# envelope (nerkit.api.errors). Codes reuse the app's where the meaning is the same; a None
# message passes API Gateway's own (the catch-alls cover types not listed, e.g. 413).
GATEWAY_ERRORS: tuple[tuple[apigw.ResponseType, str | None, str, str | None], ...] = (
    # The validator's only check is "a JSON object": bad JSON and a JSON array both land here.
    (apigw.ResponseType.BAD_REQUEST_BODY, None, "invalid_json", "the body must be a JSON object"),
    (
        apigw.ResponseType.INVALID_API_KEY,
        None,
        "invalid_api_key",
        "send a valid API key in the x-api-key header",
    ),
    # No authorizer or resource policy today; kept so a later one answers in the same shape.
    (apigw.ResponseType.ACCESS_DENIED, None, "forbidden", "access denied"),
    # No method uses IAM auth, so this type only ever means "no such route": the app answers
    # unknown paths with 404 not_found, and so does the gateway (instead of a 403).
    (
        apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN,
        "404",
        "not_found",
        "no such route; check the method and the path",
    ),
    (apigw.ResponseType.THROTTLED, None, "throttled", "too many requests; retry in a moment"),
    (
        apigw.ResponseType.QUOTA_EXCEEDED,
        None,
        "quota_exceeded",
        "this API key has used up its daily request quota",
    ),
    (
        apigw.ResponseType.INTEGRATION_TIMEOUT,
        None,
        "timeout",
        f"the request took longer than {API_GATEWAY_TIMEOUT_SECONDS} s; "
        "send fewer or shorter texts",
    ),
    (apigw.ResponseType.DEFAULT_4_XX, None, "http_error", None),
    # A crashed or throttled Lambda, a malformed proxy response: the app says internal_error.
    (apigw.ResponseType.DEFAULT_5_XX, None, "internal_error", None),
)


_KEYED_AUTH = (
    "Clients authenticate with API keys bound to a usage plan (per-client throttle and "
    "quota), as the service requires; no user pool or authorizer."
)
_OPEN_AUTH = (
    "Open on purpose (liveness, readiness or the static page): it exposes no data or model "
    "and has its own low throttle (open_throttle_rate/burst)."
)


def error_template(code: str, message: str | None) -> str:
    """A gateway response body in the app's envelope. ``$context.error.messageString`` is API
    Gateway's message already quoted as a JSON string; ``$context.requestId`` is a UUID (the
    access logs' ``requestId``); ``details`` is empty, as API Gateway gives none."""
    quoted = "$context.error.messageString" if message is None else json.dumps(message)
    return (
        f'{{"error": {{"code": {json.dumps(code)}, "message": {quoted}, "details": [], '
        f'"request_id": "$context.requestId"}}}}'
    )


def gateway_response_headers(settings: Settings) -> dict[str, str]:
    """Headers of every gateway response, as API Gateway mapping values (quoted literals)."""
    headers = {"Content-Type": "'application/json'"}
    if settings.cors_origins:
        # Without CORS headers a browser on an allowed origin sees a gateway 403/429 as a
        # network error. A gateway response cannot pick one of several origins per request,
        # so with more than one it allows any: these bodies hold only a code, a message and a
        # request id (anyone gets the same with curl) and no CORS credentials (cookies) are
        # involved; the app's own responses and the preflights keep the origin list.
        origins = settings.cors_origins
        headers["Access-Control-Allow-Origin"] = f"'{origins[0] if len(origins) == 1 else '*'}'"
    return headers


# The keyed methods (what clients pay for); with CORS origins each route also has an open
# OPTIONS (preflight) method.
KEYED_METHODS = (
    ("POST", "v1/entities"),
    ("POST", "v1/hf/token-classification"),
    ("GET", "v1/model"),
)
KEYED_ROUTES = tuple(path for _, path in KEYED_METHODS)


def serving_image(settings: Settings, cmd: list[str] | None = None) -> lambda_.DockerImageCode:
    """The serving image (the serving, admin and bulk functions run the same asset, built
    once); ``cmd`` picks another entrypoint than the image's CMD."""
    return lambda_.DockerImageCode.from_image_asset(
        str(REPO_ROOT),
        file=SERVING_DOCKERFILE,
        exclude=docker_excludes(SERVING_DOCKERFILE),
        platform=_ARCHITECTURES[settings.architecture][1],
        cmd=cmd,
    )


def lambda_architecture(settings: Settings) -> lambda_.Architecture:
    return _ARCHITECTURES[settings.architecture][0]


def lambda_tracing(settings: Settings) -> lambda_.Tracing:
    return lambda_.Tracing.ACTIVE if settings.tracing else lambda_.Tracing.DISABLED


def acknowledge_tracing(role: iam.IRole, settings: Settings) -> None:
    """With tracing, accept the '*' statements CDK adds for X-Ray, on the exact policy that
    carries them (call it once the function exists: CDK adds them then)."""
    if settings.tracing:
        acknowledge(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray tracing (tracing=true): xray:PutTraceSegments and "
            "xray:PutTelemetryRecords have no resource-level permissions.",
        )


def open_method_paths(settings: Settings) -> list[str]:
    """Stage method-settings keys (``/<resource>/<METHOD>``; ``//GET`` is the root) of the
    methods that need no API key: the open routes, the page and the CORS preflights."""
    paths = [f"/{route}/GET" for route in OPEN_ROUTES]
    if settings.enable_page:
        paths.append("//GET")
    if settings.cors_origins:
        paths += [f"/{route}/OPTIONS" for route in KEYED_ROUTES]
    return paths


class Serving(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, storage: Storage
    ) -> None:
        super().__init__(scope, construct_id)
        self.model_uri = storage.uri(settings.model_prefix)
        self.function = self._function(settings, storage)
        self.front_door: HttpFrontDoor | None = None
        self.api_key: apigw.IApiKey | None = None
        self.api: apigw.RestApi | apigwv2.HttpApi
        if settings.api == "http":
            self.front_door = self._http_api(settings)
            self.api = self.front_door.api
            return
        self.api = self._api(settings)
        self._routes(settings)
        self._gateway_responses(settings)
        self.api_key = self._usage_plan(settings)

    def _http_api(self, settings: Settings) -> HttpFrontDoor:
        """The HTTP API front door (infra/http_api.py) with this function's routes."""
        front_door = HttpFrontDoor(self, "HttpApi", settings=settings)
        front_door.add_routes(KEYED_METHODS, self.function, scope=INVOKE_SCOPE)
        open_routes = [("GET", path) for path in OPEN_ROUTES]
        if settings.enable_page:
            open_routes.append(("GET", ""))
        front_door.add_routes(
            tuple(open_routes),
            self.function,
            scope=None,
            throttle=(settings.open_throttle_rate, settings.open_throttle_burst),
        )
        return front_door

    def _function(self, settings: Settings, storage: Storage) -> lambda_.DockerImageFunction:
        architecture = lambda_architecture(settings)
        self.log_group = log_group(self, "FunctionLogs", settings)
        # Own role instead of the default one: the default attaches the AWS managed
        # AWSLambdaBasicExecutionRole (logs on every log group of the account).
        role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="NER serving Lambda: read the model prefix, write its own log group",
        )
        self.log_group.grant_write(role)
        # Read-only, model prefix only: LIVE, version tarballs and manifest copies.
        storage.grant(
            role,
            ["s3:GetObject"],
            settings.model_prefix,
            why="the LIVE pointer and the versioned tarballs it points to; names of versions "
            "are created by each publish.",
        )
        storage.grant_list(role, settings.model_prefix)
        environment = {
            "MODEL_URI": self.model_uri,
            "MODEL_REFRESH_SECONDS": str(settings.model_refresh_seconds),
            "NER_THREADS": str(settings.ner_threads),
            "ENABLE_PAGE": str(settings.enable_page).lower(),
            # The page's CSP lets it POST dataset uploads there (the admin panels).
            "UPLOAD_URL": storage.upload_url,
        }
        if settings.cors_origins:
            environment["CORS_ORIGINS"] = ",".join(settings.cors_origins)
        function = lambda_.DockerImageFunction(
            self,
            "Function",
            description=f"nerkit {settings.stage}: named-entity recognition (ONNX Runtime)",
            code=serving_image(settings),
            architecture=architecture,
            role=role,
            memory_size=settings.lambda_memory_mb,
            timeout=Duration.seconds(settings.lambda_timeout_seconds),
            ephemeral_storage_size=Size.mebibytes(settings.lambda_ephemeral_mb),
            reserved_concurrent_executions=settings.reserved_concurrency,
            environment=environment,
            log_group=self.log_group,
            tracing=lambda_tracing(settings),
        )
        acknowledge_tracing(role, settings)
        return function

    def _api(self, settings: Settings) -> apigw.RestApi:
        self.access_logs = log_group(self, "AccessLogs", settings)
        api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"nerkit-{settings.stage}",
            description="Named-entity recognition API (API key required on /v1/*)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # Access and execution logs need the account's API Gateway CloudWatch role, an
            # account-wide setting: created here, or a prerequisite (docs/DEPLOY.md).
            cloud_watch_role=settings.api_gateway_account_role,
            deploy_options=apigw.StageOptions(
                stage_name=settings.stage,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(_ACCESS_LOG_FORMAT)),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                # Data tracing would log request bodies, i.e. the user's text.
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=settings.tracing,
                # API Gateway applies these to each method separately, all clients together:
                # the keyed routes' cap across keys (the usage plan adds one per key).
                throttling_rate_limit=settings.throttle_rate,
                throttling_burst_limit=settings.throttle_burst,
                # The open routes have no key and no usage plan: their own low limits are the
                # only bound on anonymous traffic, which would otherwise get the keyed routes'
                # limits per route and take Lambda concurrency (cold starts: /ready loads the
                # model) from keyed clients. The logging choices are restated so that data
                # tracing stays off on these methods whatever their own settings default to.
                method_options={
                    path: apigw.MethodDeploymentOptions(
                        throttling_rate_limit=settings.open_throttle_rate,
                        throttling_burst_limit=settings.open_throttle_burst,
                        logging_level=apigw.MethodLoggingLevel.ERROR,
                        data_trace_enabled=False,
                        metrics_enabled=True,
                    )
                    for path in open_method_paths(settings)
                },
            ),
        )
        # API Gateway creates its execution log group on first use with no expiry; owning
        # it here gives it the deployment's retention.
        log_group(
            self,
            "ExecutionLogs",
            settings,
            log_group_name=f"API-Gateway-Execution-Logs_{api.rest_api_id}/{settings.stage}",
        )
        if settings.api_gateway_account_role:
            acknowledge(
                api.node.find_child("CloudWatchRole"),
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                "The account-level API Gateway logging role uses the AWS managed policy made "
                "for exactly this purpose; API Gateway writes execution logs to log groups it "
                "names itself, so a hand-written policy would need the same wildcards.",
            )
        acknowledge(
            api.deployment_stage,
            "AwsSolutions-APIG3",
            "No WAF: the per-method throttles (low ones on the open routes), the usage-plan "
            "throttles and the daily quota bound abuse and cost; a WAF web ACL (~$5/month + "
            "$0.60 per 1M requests) can be associated later without changing this stack.",
        )
        return api

    def _routes(self, settings: Settings) -> None:
        integration = apigw.LambdaIntegration(self.function, proxy=True, allow_test_invoke=False)
        # A cheap structural check at the gateway (a JSON object, nothing else) rejects junk
        # without a Lambda invocation; the app validates the fields themselves, strictly and
        # with precise error locations, so the schema is not duplicated here.
        validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        body = self.api.add_model(
            "EntitiesRequest",
            content_type="application/json",
            schema=apigw.JsonSchema(
                schema=apigw.JsonSchemaVersion.DRAFT4,
                title="EntitiesRequest",
                type=apigw.JsonSchemaType.OBJECT,
            ),
        )
        keyed_methods = []
        for method, path in KEYED_METHODS:
            # POST bodies get the structural check; GETs have none.
            checks: dict[str, Any] = (
                {"request_validator": validator, "request_models": {"application/json": body}}
                if method == "POST"
                else {}
            )
            resource = self.api.root.resource_for_path(path)
            keyed_methods.append(
                resource.add_method(method, integration, api_key_required=True, **checks)
            )
            if settings.cors_origins:
                # Preflights are answered by the gateway (no key, no Lambda); the app adds the
                # CORS headers to real responses from the same list (CORS_ORIGINS).
                resource.add_cors_preflight(
                    allow_origins=list(settings.cors_origins),
                    allow_methods=["GET", "POST", "OPTIONS"],
                    allow_headers=["Content-Type", "X-Api-Key"],
                    max_age=Duration.hours(1),
                )
        open_methods = [
            self.api.root.add_resource(path).add_method("GET", integration) for path in OPEN_ROUTES
        ]
        if settings.enable_page:
            open_methods.append(self.api.root.add_method("GET", integration))
        # Acknowledged method by method: a method added later without a key fails cdk-nag.
        for method, reason in [
            *[(m, _KEYED_AUTH) for m in keyed_methods],
            *[(m, _OPEN_AUTH) for m in open_methods],
        ]:
            for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
                acknowledge(method, rule, reason)

    def _gateway_responses(self, settings: Settings) -> None:
        headers = gateway_response_headers(settings)
        for response_type, status, code, message in GATEWAY_ERRORS:
            self.api.add_gateway_response(
                response_type.response_type,
                type=response_type,
                status_code=status,
                response_headers=headers,
                templates={"application/json": error_template(code, message)},
            )

    def _usage_plan(self, settings: Settings) -> apigw.IApiKey:
        plan = self.api.add_usage_plan(
            "UsagePlan",
            name=f"nerkit-{settings.stage}",
            description="Per-key limits for the NER routes",
            throttle=apigw.ThrottleSettings(
                rate_limit=settings.throttle_rate, burst_limit=settings.throttle_burst
            ),
            quota=apigw.QuotaSettings(limit=settings.quota_per_day, period=apigw.Period.DAY),
        )
        plan.add_api_stage(stage=self.api.deployment_stage)
        key = self.api.add_api_key("ApiKey", api_key_name=f"nerkit-{settings.stage}-default")
        plan.add_api_key(key)
        return key
