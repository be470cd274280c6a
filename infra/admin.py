"""Admin: the routes that train and manage models (``nerkit.api.admin``), on their own
function, role, API key and usage plan.

* **Function**: the serving image with ``ENABLE_ADMIN`` on (and the page off, no preload:
  it never predicts). Separate from the serving function so that the public inference path
  keeps its read-only role.
* **Role**, exactly: start, list and describe executions of the training state machine;
  list the datasets and model prefixes; read the model store's ``LIVE`` pointer and manifest
  copies (``*/manifest.json``, which carry each tarball's sha256); write ``LIVE`` and objects
  under the datasets prefix (presigned uploads act with the signer's rights). No tarball
  reads, no version writes, no deletes.
* **Authorization**: API Gateway requires an API key on every admin route; the app allows
  only the admin key, by its id (``ADMIN_KEY_IDS``), so a client key gets the app's 403.
  The admin key has its own usage plan with low limits (a person at a page or a script).
  With ``api=http`` there are no keys: the JWT authorizer requires ``ADMIN_SCOPE`` on every
  admin route, the app checks it again (``ADMIN_SCOPE``), and the stage's route settings
  give these routes the same low limits (all admins together).
* **Bucket CORS**: the page (served by this API) may POST uploads to the bucket; one rule,
  that origin and that method only.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.http_api import ADMIN_SCOPE
from infra.log_groups import log_group
from infra.nag import acknowledge, acknowledge_wildcard
from infra.serving import (
    Serving,
    acknowledge_tracing,
    lambda_architecture,
    lambda_tracing,
    serving_image,
)
from infra.settings import API_GATEWAY_TIMEOUT_SECONDS, Settings
from infra.storage import Storage

# (method, path) of every admin route; all go to the admin function, all need a key.
ADMIN_ROUTES = (
    ("GET", "v1/training-runs"),
    ("POST", "v1/training-runs"),
    ("GET", "v1/training-runs/{run_id}"),
    ("POST", "v1/datasets/uploads"),
    ("GET", "v1/models"),
    ("PUT", "v1/models/live"),
)
# A person or a script managing models: a few requests a second at most.
ADMIN_RATE, ADMIN_BURST, ADMIN_QUOTA_PER_DAY = 2.0, 5, 2_000
# Dataset files a presigned upload admits (CoNLL-2003 train is ~3 MB).
MAX_UPLOAD_BYTES = 1 << 30
# Listing runs describes up to 20 executions and listing models reads every manifest copy:
# I/O bound, so the smallest size that imports the app quickly.
ADMIN_MEMORY_MB = 1024


class Admin(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        storage: Storage,
        serving: Serving,
        state_machine: sfn.StateMachine,
    ) -> None:
        super().__init__(scope, construct_id)
        self.settings = settings
        self.storage = storage
        self.state_machine = state_machine
        # REST: the admin API key; HTTP API: a token with ADMIN_SCOPE instead.
        self.api_key: apigw.ApiKey | None = None
        if serving.front_door is None:
            self.api_key = apigw.ApiKey(
                self,
                "ApiKey",
                api_key_name=f"nerkit-{settings.stage}-admin",
                description="Admin: start training runs, upload datasets, move LIVE",
            )
        self.role = self._role()
        self.function = self._function(serving)
        if serving.front_door is not None:
            serving.front_door.add_routes(
                ADMIN_ROUTES,
                self.function,
                scope=ADMIN_SCOPE,
                throttle=(ADMIN_RATE, ADMIN_BURST),
            )
            self._bucket_cors(serving.front_door.api.api_id)
            return
        assert isinstance(serving.api, apigw.RestApi)
        self._routes(serving.api)
        self._usage_plan(serving.api)
        self._bucket_cors(serving.api.rest_api_id)

    def _role(self) -> iam.Role:
        s, storage, bucket = self.settings, self.storage, self.storage.bucket
        role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="nerkit admin Lambda: training runs, dataset uploads, the LIVE pointer",
        )
        machine = self.state_machine.state_machine_arn
        executions = Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{self.state_machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["states:StartExecution", "states:ListExecutions"], resources=[machine]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[executions])
        )
        acknowledge_wildcard(
            role,
            executions,
            "Executions of the one training state machine; each run names its own.",
        )
        manifests = bucket.arn_for_objects(f"{s.model_prefix}/*/manifest.json")
        live = bucket.arn_for_objects(f"{s.model_prefix}/LIVE")
        role.add_to_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[live, manifests])
        )
        role.add_to_policy(iam.PolicyStatement(actions=["s3:PutObject"], resources=[live]))
        acknowledge_wildcard(
            role,
            manifests,
            "The manifest copy of every stored version (versions are named per release); "
            "tarballs stay unreadable.",
        )
        storage.grant(
            role,
            ["s3:PutObject"],
            s.datasets_prefix,
            why="presigned dataset uploads (they act with this role's rights); the route "
            "fixes each key to <prefix>/<dataset>/<channel>/<file>.",
        )
        storage.grant_list(role, s.datasets_prefix, s.model_prefix)
        return role

    def _function(self, serving: Serving) -> lambda_.DockerImageFunction:
        s = self.settings
        logs = log_group(self, "FunctionLogs", s)
        logs.grant_write(self.role)
        function = lambda_.DockerImageFunction(
            self,
            "Function",
            description=f"nerkit {s.stage}: admin routes (training runs, uploads, LIVE)",
            code=serving_image(s),
            architecture=lambda_architecture(s),
            role=self.role,
            memory_size=ADMIN_MEMORY_MB,
            timeout=Duration.seconds(API_GATEWAY_TIMEOUT_SECONDS),
            environment={
                "MODEL_URI": serving.model_uri,
                "ENABLE_ADMIN": "true",
                "ENABLE_PAGE": "false",
                "PRELOAD_MODEL": "false",
                **(
                    {"ADMIN_KEY_IDS": self.api_key.key_id}
                    if self.api_key
                    else {"ADMIN_SCOPE": ADMIN_SCOPE}
                ),
                "STATE_MACHINE_ARN": self.state_machine.state_machine_arn,
                "DATASETS_URI": self.storage.uri(s.datasets_prefix),
                "TRAINING_JOB_PREFIX": s.training_job_prefix,
                "UPLOAD_URL": self.storage.upload_url,
                "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            },
            log_group=logs,
            tracing=lambda_tracing(s),
        )
        acknowledge_tracing(self.role, s)
        return function

    def _routes(self, api: apigw.RestApi) -> None:
        integration = apigw.LambdaIntegration(self.function, proxy=True, allow_test_invoke=False)
        for method, path in ADMIN_ROUTES:
            resource = api.root.resource_for_path(path)
            added = resource.add_method(method, integration, api_key_required=True)
            # Acknowledged method by method, so a method added without a key is still found.
            for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
                acknowledge(
                    added,
                    rule,
                    "Admins authenticate with the admin API key (its own usage plan); the app "
                    "allows only that key's id; no user pool or authorizer.",
                )

    def _usage_plan(self, api: apigw.RestApi) -> None:
        plan = api.add_usage_plan(
            "AdminUsagePlan",
            name=f"nerkit-{self.settings.stage}-admin",
            description="Admin key: low limits (people and scripts managing models)",
            throttle=apigw.ThrottleSettings(rate_limit=ADMIN_RATE, burst_limit=ADMIN_BURST),
            quota=apigw.QuotaSettings(limit=ADMIN_QUOTA_PER_DAY, period=apigw.Period.DAY),
        )
        plan.add_api_stage(stage=api.deployment_stage)
        plan.add_api_key(self.api_key)

    def _bucket_cors(self, api_id: str) -> None:
        """The page (served by the API ``api_id``, from its own origin) may POST uploads."""
        stack = Stack.of(self)
        origin = f"https://{api_id}.execute-api.{stack.region}.{stack.url_suffix}"
        self.storage.bucket.add_cors_rule(
            allowed_methods=[s3.HttpMethods.POST],
            allowed_origins=[origin],
            max_age=600,
        )
