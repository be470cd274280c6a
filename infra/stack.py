"""The one stack of a deployment: storage, serving, the training pipeline, admin and monitoring."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack, Tags
from constructs import Construct

from infra.admin import Admin
from infra.bulk import INPUT_PREFIX, OUTPUT_PREFIX, BulkExtraction
from infra.monitoring import Monitoring
from infra.serving import Serving
from infra.settings import Settings
from infra.storage import Storage
from infra.training import TrainingPipeline


class NerkitStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"nerkit NER service ({settings.stage}): API, model store, training",
            **kwargs,
        )
        for key, value in settings.tags.items():
            Tags.of(self).add(key, value)
        self.settings = settings
        self.storage = Storage(self, "Storage")
        self.serving = Serving(self, "Serving", settings=settings, storage=self.storage)
        self.training = TrainingPipeline(self, "Training", settings=settings, storage=self.storage)
        self.admin = Admin(
            self,
            "Admin",
            settings=settings,
            storage=self.storage,
            serving=self.serving,
            state_machine=self.training.state_machine,
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            settings=settings,
            function=self.serving.function,
            api=self.serving.api,
            state_machine=self.training.state_machine,
        )
        # Bulk extraction (infra/bulk.py): its alarms and graphs join the monitoring's.
        self.bulk = BulkExtraction(
            self,
            "Bulk",
            settings=settings,
            storage=self.storage,
            model_uri=self.serving.model_uri,
            topic=self.monitoring.topic,
            dashboard=self.monitoring.dashboard,
        )
        self._outputs()

    def _outputs(self) -> None:
        # Output names are read by nerkit.pipeline.start (from `cdk deploy --outputs-file`).
        outputs = {
            **self._front_door_outputs(),
            "BucketName": (self.storage.bucket.bucket_name, "Datasets, training output, models"),
            "AccessLogBucketName": (
                self.storage.log_bucket.bucket_name,
                "Server access logs of BucketName (retained like it)",
            ),
            "ModelUri": (self.serving.model_uri, "The model store (MODEL_URI of the Lambda)"),
            "DatasetsUri": (
                self.storage.uri(self.settings.datasets_prefix),
                "Upload training channels under this prefix",
            ),
            "StateMachineArn": (
                self.training.state_machine.state_machine_arn,
                "Training pipeline; start runs with python -m nerkit.pipeline.start",
            ),
            "TrainingJobPrefix": (
                self.settings.training_job_prefix,
                "Training job names must start with this (IAM is scoped to it)",
            ),
            "DashboardName": (self.monitoring.dashboard.dashboard_name, "CloudWatch dashboard"),
            "AlarmTopicArn": (self.monitoring.topic.topic_arn, "Subscribe to get alarms"),
        }
        # Read by nerkit-bulk start.
        outputs["BulkStateMachineArn"] = (
            self.bulk.state_machine.state_machine_arn,
            "Bulk extraction; start runs with nerkit-bulk start",
        )
        outputs["BulkInputUri"] = (self.storage.uri(INPUT_PREFIX), "Put bulk input under here")
        outputs["BulkOutputUri"] = (self.storage.uri(OUTPUT_PREFIX), "Bulk outputs go under here")
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description)

    def _front_door_outputs(self) -> dict[str, tuple[str, str]]:
        front_door, serving = self.serving.front_door, self.serving
        if front_door is None:
            assert serving.api_key is not None and self.admin.api_key is not None
            return {
                "ApiUrl": (serving.api.url, "Base URL of the API (stage included)"),
                "ApiKeyId": (
                    serving.api_key.key_id,
                    "aws apigateway get-api-key --api-key <id> --include-value",
                ),
                "AdminApiKeyId": (
                    self.admin.api_key.key_id,
                    "The admin key (training, uploads, LIVE): aws apigateway get-api-key "
                    "--api-key <id> --include-value",
                ),
            }
        outputs = {"ApiUrl": (front_door.url, "Base URL of the API (send a bearer token)")}
        if front_door.user_pool is not None and front_door.token_url is not None:
            secret = (
                "; its secret: aws cognito-idp describe-user-pool-client --user-pool-id "
                "<UserPoolId> --client-id <id> --query UserPoolClient.ClientSecret"
            )
            outputs |= {
                "UserPoolId": (front_door.user_pool.user_pool_id, "Issues the API's tokens"),
                "TokenUrl": (front_door.token_url, "Client-credentials token endpoint"),
                "ClientId": (
                    front_door.clients["Client"].user_pool_client_id,
                    "App client with the nerkit/invoke scope" + secret,
                ),
                "AdminClientId": (
                    front_door.clients["AdminClient"].user_pool_client_id,
                    "App client with nerkit/invoke and nerkit/admin" + secret,
                ),
            }
        return outputs
