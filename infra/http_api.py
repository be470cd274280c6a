"""The HTTP API front door (``api=http``): API Gateway HTTP API with a JWT authorizer.

About 70% cheaper than REST per request ($1.00 instead of $3.50 per million), for what REST
has and this has not: API keys, usage plans (per-client quotas), request validation, gateway
responses (the gateway's own 401/404/429 are in its own shape, docs/DEPLOY.md) and WAF.

* **Tokens**: a JWT authorizer on every ``/v1`` route. The issuer is ``jwt_issuer`` (any
  OIDC issuer, tokens for ``jwt_audience``) or, without one, a Cognito user pool created
  here: a resource server with the scopes ``nerkit/invoke`` and ``nerkit/admin``, a hosted
  domain for the token endpoint and two client-credentials app clients (machine clients):
  one that may invoke, one that may also administer.
* **Routes**: the keyed routes need ``INVOKE_SCOPE``, the admin routes (added by
  ``infra.admin``) ``ADMIN_SCOPE``; ``/health``, ``/ready`` and the page are open. Anything
  else: the gateway's 404, no Lambda invocation.
* **Stage**: ``$default`` (no stage prefix in the path, which the app routes on), the
  throttles of the REST stage as default route settings, the open and admin routes' own
  lower limits as per-route settings, detailed (per-route) metrics, JSON access logs.
"""

from __future__ import annotations

import json

import jsii
from aws_cdk import Aws, Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_lambda as lambda_
from aws_cdk.aws_logs import ILogGroup
from constructs import Construct

from infra.log_groups import log_group
from infra.nag import acknowledge
from infra.settings import Settings

RESOURCE_SERVER = "nerkit"
INVOKE_SCOPE = f"{RESOURCE_SERVER}/invoke"
ADMIN_SCOPE = f"{RESOURCE_SERVER}/admin"
# One JSON object per request: who (the token's subject, a client id for machine clients),
# which route, how it ended. No body, no query string, no path beyond the route's template.
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "requestTimeEpoch": "$context.requestTimeEpoch",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "subject": "$context.authorizer.claims.sub",
    "routeKey": "$context.routeKey",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "integrationStatus": "$context.integrationStatus",
    "errorMessage": "$context.error.message",
    "authorizerError": "$context.authorizer.error",
}
_OPEN_ROUTE = (
    "Open on purpose (liveness, readiness or the static page): it exposes no data or model "
    "and has its own low throttle (open_throttle_rate/burst) in the stage's route settings."
)


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogSettings:
    """JSON access logs (``ACCESS_LOG_FORMAT``) to ``logs`` (an interface in CDK, no struct)."""

    def __init__(self, logs: ILogGroup) -> None:
        self._logs = logs

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return apigwv2.LogGroupLogDestination(self._logs)

    @property
    def format(self) -> apigw.AccessLogFormat:
        return apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT))


def route_key(method: str, path: str) -> str:
    """The HTTP API's name of a route (``POST /v1/entities``), as in route settings."""
    return f"{method} /{path}"


class HttpFrontDoor(Construct):
    """The HTTP API, its stage and authorizer; routes join with ``add_routes``."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings) -> None:
        super().__init__(scope, construct_id)
        self.settings = settings
        self.user_pool: cognito.UserPool | None = None
        self.token_url: str | None = None
        self.clients: dict[str, cognito.UserPoolClient] = {}
        if settings.jwt_issuer:
            issuer, audience = settings.jwt_issuer, list(settings.jwt_audience)
        else:
            issuer, audience = self._user_pool(settings)
        self.authorizer = authorizers.HttpJwtAuthorizer(
            "JwtAuthorizer", issuer, jwt_audience=audience
        )
        cors = None
        if settings.cors_origins:
            # Preflights are answered by the gateway (no token, no Lambda).
            cors = apigwv2.CorsPreflightOptions(
                allow_origins=list(settings.cors_origins),
                allow_methods=[apigwv2.CorsHttpMethod.GET, apigwv2.CorsHttpMethod.POST],
                allow_headers=["Content-Type", "Authorization"],
                max_age=Duration.hours(1),
            )
        self.api = apigwv2.HttpApi(
            self,
            "Api",
            api_name=f"nerkit-{settings.stage}",
            description="Named-entity recognition API (JWT with a nerkit scope on /v1/*)",
            create_default_stage=False,
            cors_preflight=cors,
        )
        self.access_logs = log_group(self, "AccessLogs", settings)
        self.stage = self.api.add_stage(
            "Stage",
            stage_name="$default",
            auto_deploy=True,
            # Every route, all clients together (no per-client limits without usage plans).
            throttle=apigwv2.ThrottleSettings(
                rate_limit=settings.throttle_rate, burst_limit=settings.throttle_burst
            ),
            detailed_metrics_enabled=True,
            access_log_settings=_AccessLogSettings(self.access_logs),
        )
        self._route_settings: dict[str, dict[str, object]] = {}
        self._integrations: dict[str, integrations.HttpLambdaIntegration] = {}

    @property
    def url(self) -> str:
        return self.stage.url

    def _user_pool(self, settings: Settings) -> tuple[str, list[str]]:
        """A user pool for machine clients only (no sign-up, no users): its token endpoint
        issues client-credentials tokens with this API's scopes."""
        pool = cognito.UserPool(
            self,
            "UserPool",
            user_pool_name=f"nerkit-{settings.stage}",
            self_sign_up_enabled=False,
            account_recovery=cognito.AccountRecovery.NONE,
            password_policy=cognito.PasswordPolicy(
                min_length=16,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
            ),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
        )
        invoke = cognito.ResourceServerScope(scope_name="invoke", scope_description="Call /v1")
        admin = cognito.ResourceServerScope(
            scope_name="admin", scope_description="Train, upload datasets, move LIVE"
        )
        server = pool.add_resource_server(
            "ResourceServer", identifier=RESOURCE_SERVER, scopes=[invoke, admin]
        )
        # The prefix must be unique in the region across all accounts.
        domain = pool.add_domain(
            "Domain",
            cognito_domain=cognito.CognitoDomainOptions(
                domain_prefix=f"nerkit-{settings.stage}-{Aws.ACCOUNT_ID}"
            ),
        )
        for name, scopes in (("Client", [invoke]), ("AdminClient", [invoke, admin])):
            self.clients[name] = pool.add_client(
                name,
                user_pool_client_name=f"nerkit-{settings.stage}-{name.lower()}",
                generate_secret=True,
                auth_flows=cognito.AuthFlow(),
                o_auth=cognito.OAuthSettings(
                    flows=cognito.OAuthFlows(client_credentials=True),
                    scopes=[cognito.OAuthScope.resource_server(server, s) for s in scopes],
                ),
                access_token_validity=Duration.hours(1),
            )
        acknowledge(
            pool,
            "AwsSolutions-COG8",
            "No users sign in to this pool (no sign-up, no users): it only issues "
            "client-credentials tokens to its app clients, so threat protection (the "
            "Plus feature plan) has no sign-ins or passwords to assess.",
        )
        self.user_pool = pool
        self.token_url = f"{domain.base_url()}/oauth2/token"
        # Cognito's access tokens carry the client id in client_id (no aud), which the
        # authorizer accepts as the audience.
        audience = [client.user_pool_client_id for client in self.clients.values()]
        return pool.user_pool_provider_url, audience

    def add_routes(
        self,
        routes: tuple[tuple[str, str], ...],
        function: lambda_.IFunction,
        *,
        scope: str | None,
        throttle: tuple[float, int] | None = None,
    ) -> list[apigwv2.HttpRoute]:
        """Route ``(method, path)`` pairs to ``function``: behind the JWT authorizer with
        ``scope``, or open (``scope=None``); ``throttle`` (rate, burst) overrides the
        stage's default for these routes."""
        # One integration per function, shared by its routes (CDK adds one invoke
        # permission per route, scoped to that route).
        name = function.node.path.replace("/", "")
        if name not in self._integrations:
            self._integrations[name] = integrations.HttpLambdaIntegration(name, function)
        integration = self._integrations[name]
        added: list[apigwv2.HttpRoute] = []
        for method, path in routes:
            added += self.api.add_routes(
                path=f"/{path}",
                methods=[apigwv2.HttpMethod(method)],
                integration=integration,
                authorizer=self.authorizer if scope else None,
                authorization_scopes=[scope] if scope else None,
            )
            if throttle:
                self._route_settings[route_key(method, path)] = {
                    "ThrottlingRateLimit": throttle[0],
                    "ThrottlingBurstLimit": throttle[1],
                    "DetailedMetricsEnabled": True,
                }
        if not scope:
            for route in added:
                acknowledge(route, "AwsSolutions-APIG4", _OPEN_ROUTE)
        cfn_stage = self.stage.node.default_child
        assert isinstance(cfn_stage, apigwv2.CfnStage)
        if self._route_settings:
            cfn_stage.route_settings = dict(self._route_settings)
        return added
