"""Training pipeline: Step Functions runs a SageMaker training job, then the quality gate.

::

    ValidateInput ──(bad input)──> InvalidInput (Fail)
         │
    HasValidationChannel ──> HasTestChannel ──> TrainWithTest (train, validation, test) ─┐
         │                        └───────────> Train (train, validation) ───────────────┤
         └─────────────────> TrainSplit (train; the job holds out validation/test) ──────┤
                                                                v
                       Gate (Lambda: check F1, publish, move LIVE; errors are caught)
                                                                v
                       GatePassed? ──> Published (Succeed)
                                └───> ModelRejected (Fail with the gate's error and reason)

The execution input is built by ``python -m nerkit.pipeline.start``::

    {"jobName": "nerkit-prod-20261123-130000",
     "channels": {"train": "s3://...", "validation": "s3://...", "test": "s3://..."},
     "hyperparameters": {"epochs": "3"}}

The training states are ``CustomState`` s holding the ``sagemaker:createTrainingJob.sync``
integration (the RUN_JOB pattern: Step Functions waits for the job to finish). The typed
``SageMakerCreateTrainingJob`` task renders the same integration but cannot express managed
spot training (``EnableManagedSpotTraining``, ``MaxWaitTimeInSeconds``, ``CheckpointConfig``)
nor take the hyperparameters object from the execution input, both of which this pipeline
needs; its IAM statements are reproduced here, scoped to this deployment's job-name prefix.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.assets import REPO_ROOT, docker_excludes, gate_code
from infra.log_groups import log_group
from infra.nag import acknowledge, acknowledge_wildcard
from infra.settings import Settings
from infra.storage import CHECKPOINT_PREFIX, TRAINING_OUTPUT_PREFIX, Storage

TRAINING_DOCKERFILE = "training/Dockerfile"
SAGEMAKER_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
SAGEMAKER_METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"
CHANNELS = ("train", "validation", "test")
# The gate's and SageMaker's own time (image pull, upload) on top of the job's limits.
PIPELINE_OVERHEAD_SECONDS = 3600


class TrainingPipeline(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, storage: Storage
    ) -> None:
        super().__init__(scope, construct_id)
        self.settings = settings
        self.storage = storage
        self.image = ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(REPO_ROOT),
            file=TRAINING_DOCKERFILE,
            exclude=docker_excludes(TRAINING_DOCKERFILE),
            # SageMaker training instances are x86_64.
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
        if settings.manage_sagemaker_log_group:
            # Account-wide: every training job of the region logs here, whatever stack
            # started it. Retained, so deleting this stage keeps the other stages' logs.
            log_group(
                self,
                "SageMakerLogs",
                settings,
                log_group_name=SAGEMAKER_LOG_GROUP,
                removal_policy=RemovalPolicy.RETAIN,
            )
        self.sagemaker_role = self._sagemaker_role()
        self.gate_function = self._gate_function()
        self.state_machine = self._state_machine()
        self._grant_training_integration()

    @property
    def job_arn_pattern(self) -> str:
        return Stack.of(self).format_arn(
            service="sagemaker",
            resource="training-job",
            resource_name=f"{self.settings.training_job_prefix}*",
        )

    def _sagemaker_role(self) -> iam.Role:
        """What a training job may do: read datasets, write its output and checkpoints, pull
        its image, write its logs and metrics. Nothing else."""
        s, storage = self.settings, self.storage
        role = iam.Role(
            self,
            "SageMakerRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="nerkit training jobs: datasets in, model and checkpoints out",
        )
        storage.grant(
            role,
            ["s3:GetObject"],
            s.datasets_prefix,
            why="the objects of the run's channels, which each run chooses under this prefix.",
        )
        storage.grant(
            role,
            ["s3:PutObject"],
            TRAINING_OUTPUT_PREFIX,
            why="SageMaker writes <prefix>/<job>/output/model.tar.gz; job names are per run.",
        )
        # A resumed spot job downloads its checkpoints; a running one uploads new ones.
        storage.grant(
            role,
            ["s3:GetObject", "s3:PutObject"],
            CHECKPOINT_PREFIX,
            why="spot checkpoints live under <prefix>/<job>/; job names are per run.",
        )
        storage.grant_list(role, s.datasets_prefix, CHECKPOINT_PREFIX)
        # The image's asset repository (CDK bootstrap); the ECR login before the pull is
        # among the unscoped actions below.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                ],
                resources=[self.image.repository.repository_arn],
            )
        )
        log_group_arn = Stack.of(self).format_arn(
            service="logs",
            resource="log-group",
            resource_name=SAGEMAKER_LOG_GROUP,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                ],
                resources=[log_group_arn, f"{log_group_arn}:*"],
            )
        )
        # The two actions without resource-level permissions sit in a policy of their own,
        # so that the "*" acknowledgment covers them and nothing added later to the role.
        unscoped = iam.Policy(
            self,
            "SageMakerUnscopedPolicy",
            roles=[role],
            statements=[
                iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
                # In AWS's list of a training job's execution-role permissions (its metrics);
                # the condition pins the namespace.
                iam.PolicyStatement(
                    actions=["cloudwatch:PutMetricData"],
                    resources=["*"],
                    conditions={
                        "StringEquals": {"cloudwatch:namespace": SAGEMAKER_METRIC_NAMESPACE}
                    },
                ),
            ],
        )
        acknowledge(
            unscoped,
            "AwsSolutions-IAM5[Resource::*]",
            "Only the two actions without resource-level permissions: "
            "ecr:GetAuthorizationToken (the ECR login before the pull, which is scoped to the "
            "image repository) and cloudwatch:PutMetricData (conditioned on the SageMaker "
            "training namespace).",
        )
        acknowledge_wildcard(
            role,
            f"{log_group_arn}:*",
            "SageMaker names a job's log streams <job>/algo-1-<time> inside its one log group "
            f"{SAGEMAKER_LOG_GROUP}; the wildcard covers those streams only.",
        )
        return role

    def _gate_function(self) -> lambda_.Function:
        s, storage = self.settings, self.storage
        logs = log_group(self, "GateLogs", s)
        role = iam.Role(
            self,
            "GateRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="nerkit quality gate: read training output, publish to the model store",
        )
        logs.grant_write(role)
        storage.grant(
            role,
            ["s3:GetObject"],
            TRAINING_OUTPUT_PREFIX,
            why="the candidate model.tar.gz of the job that just finished (name per run).",
        )
        # Conditional PUTs (If-Match on LIVE, If-None-Match on versions) need only PutObject.
        storage.grant(
            role,
            ["s3:GetObject", "s3:PutObject"],
            s.model_prefix,
            why="uploads a new version directory, reads the live manifest and moves LIVE.",
        )
        storage.grant_list(role, s.model_prefix, TRAINING_OUTPUT_PREFIX)
        return lambda_.Function(
            self,
            "GateFunction",
            description=f"nerkit {s.stage}: quality gate and publish of a trained model",
            # Pure Python on the managed runtime (boto3 included): no image to build, and
            # arm64 is the cheaper architecture for code without native dependencies.
            runtime=lambda_.Runtime.PYTHON_3_14,
            architecture=lambda_.Architecture.ARM_64,
            handler="nerkit.pipeline.gate.handler",
            code=gate_code(),
            role=role,
            # Downloading, verifying (sha256) and re-packing a model is I/O and hashing; more
            # memory buys network and CPU. /tmp holds the tarball, its extraction and the
            # re-packed tarball.
            memory_size=1024,
            ephemeral_storage_size=Size.mebibytes(2048),
            timeout=Duration.minutes(5),
            environment={"MODEL_URI": storage.uri(s.model_prefix)},
            log_group=logs,
        )

    def _state_machine(self) -> sfn.StateMachine:
        s = self.settings
        invalid = sfn.Fail(
            self,
            "InvalidInput",
            error="InvalidInput",
            cause="The execution input needs jobName, channels.train and hyperparameters "
            "(and channels.validation unless hyperparameters.validation_split holds it out of "
            "train); start runs with python -m nerkit.pipeline.start.",
        )
        gate = tasks.LambdaInvoke(
            self,
            "Gate",
            lambda_function=self.gate_function,
            payload=sfn.TaskInput.from_object(
                {
                    "modelArtifact": sfn.JsonPath.string_at("$.training.modelArtifact"),
                    "trainingJob": sfn.JsonPath.string_at("$.training.jobName"),
                    # Deploy-time thresholds: changing the bar is a reviewed change.
                    "minF1": s.gate_min_f1,
                    "mustBeatLive": s.gate_must_beat_live,
                }
            ),
            payload_response_only=True,
            result_path="$.gate",
        )
        verdict = (
            sfn.Choice(self, "GatePassed?")
            .when(
                sfn.Condition.is_present("$.gate.Error"),
                sfn.Fail(
                    self,
                    "ModelRejected",
                    error_path="$.gate.Error",
                    cause_path="$.gate.Cause",
                ),
            )
            .otherwise(sfn.Succeed(self, "Published"))
        )
        # Every gate failure (rejected, invalid artifact, Lambda error) ends in ModelRejected
        # with its reason; the training job's own failure fails the execution directly.
        gate.add_catch(verdict, errors=[sfn.Errors.ALL], result_path="$.gate")
        gate.next(verdict)
        with_validation = (
            sfn.Choice(self, "HasTestChannel")
            .when(
                sfn.Condition.is_present("$.channels.test"),
                self._training_state("TrainWithTest", CHANNELS).next(gate),
            )
            .otherwise(self._training_state("Train", CHANNELS[:2]).next(gate))
        )
        # Without a validation channel the job splits train (validation_split, checked by
        # nerkit.pipeline.start and again by the job).
        training = (
            sfn.Choice(self, "HasValidationChannel")
            .when(sfn.Condition.is_present("$.channels.validation"), with_validation)
            .otherwise(self._training_state("TrainSplit", CHANNELS[:1]).next(gate))
        )
        # IsPresent only: other comparisons on a missing path are runtime errors, not false.
        valid_input = sfn.Condition.and_(
            *(
                sfn.Condition.is_present(path)
                for path in (
                    "$.jobName",
                    "$.channels.train",
                    "$.hyperparameters",
                )
            )
        )
        definition = (
            sfn.Choice(self, "ValidateInput").when(valid_input, training).otherwise(invalid)
        )
        limit = s.max_wait_seconds if s.spot else s.max_runtime_seconds
        machine = sfn.StateMachine(
            self,
            "StateMachine",
            comment="Train a NER model on SageMaker, gate it on F1 and publish it",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=Duration.seconds(limit + PIPELINE_OVERHEAD_SECONDS),
            tracing_enabled=s.tracing,
            logs=sfn.LogOptions(
                destination=log_group(
                    self,
                    "StateMachineLogs",
                    s,
                    # The vendedlogs prefix keeps the log resource policy small.
                    log_group_name=f"/aws/vendedlogs/states/nerkit-{s.stage}-training",
                ),
                level=sfn.LogLevel.ALL,
                include_execution_data=True,
            ),
        )
        if not s.tracing:
            acknowledge(
                machine,
                "AwsSolutions-SF2",
                "X-Ray follows the deployment's tracing setting (off by default, like the "
                "Lambda and the API stage); every execution event is logged (level ALL).",
            )
        return machine

    def _training_state(self, state_id: str, channels: tuple[str, ...]) -> sfn.CustomState:
        return sfn.CustomState(self, state_id, state_json=self._training_task(channels))

    def _training_task(self, channels: tuple[str, ...]) -> dict[str, Any]:
        s, bucket = self.settings, self.storage.bucket.bucket_name
        stopping: dict[str, Any] = {"MaxRuntimeInSeconds": s.max_runtime_seconds}
        parameters: dict[str, Any] = {
            "TrainingJobName.$": "$.jobName",
            "RoleArn": self.sagemaker_role.role_arn,
            "AlgorithmSpecification": {
                "TrainingImage": self.image.image_uri,
                "TrainingInputMode": "File",
            },
            # All values are strings (the SageMaker contract); the start CLI makes them so.
            "HyperParameters.$": "$.hyperparameters",
            "InputDataConfig": [
                {
                    "ChannelName": name,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri.$": f"$.channels.{name}",
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                }
                for name in channels
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/{TRAINING_OUTPUT_PREFIX}/"},
            "ResourceConfig": {
                "InstanceCount": 1,
                "InstanceType": s.training_instance_type,
                "VolumeSizeInGB": s.training_volume_gb,
            },
            "StoppingCondition": stopping,
            # The pretrained encoder ships inside the image and SageMaker itself moves the
            # channels and the model: the container needs no network at all.
            "EnableNetworkIsolation": True,
            # Jobs are created at run time, outside CloudFormation: tag them like the stack
            # so their cost is attributed (the state machine may sagemaker:AddTags).
            "Tags": [{"Key": key, "Value": value} for key, value in s.tags.items()],
        }
        if s.spot:
            stopping["MaxWaitTimeInSeconds"] = s.max_wait_seconds
            parameters["EnableManagedSpotTraining"] = True
            parameters["CheckpointConfig"] = {
                "S3Uri.$": f"States.Format('s3://{bucket}/{CHECKPOINT_PREFIX}/{{}}/', $.jobName)"
            }
        return {
            "Type": "Task",
            "Comment": f"SageMaker training job on {s.training_instance_type}"
            + (" (managed spot)" if s.spot else ""),
            "Resource": f"arn:{Stack.of(self).partition}:states:::sagemaker:createTrainingJob.sync",
            "Parameters": parameters,
            # Keep the state small: the gate needs only the artifact and the job name.
            "ResultSelector": {
                "jobName.$": "$.TrainingJobName",
                "modelArtifact.$": "$.ModelArtifacts.S3ModelArtifacts",
            },
            "ResultPath": "$.training",
        }

    def _grant_training_integration(self) -> None:
        """The state machine's rights for createTrainingJob.sync (as the typed task would
        grant them, but limited to this deployment's job names)."""
        stack = Stack.of(self)
        statements = [
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:ListTags",
                    # The .sync integration tags the job it creates (aws/aws-cdk#32294).
                    "sagemaker:AddTags",
                ],
                resources=[self.job_arn_pattern],
            ),
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.sagemaker_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            ),
            # .sync learns about the job's end through this managed EventBridge rule.
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(
                        service="events",
                        resource="rule",
                        resource_name="StepFunctionsGetEventsForSageMakerTrainingJobsRule",
                    )
                ],
            ),
        ]
        # A policy of its own: the role's default policy holds what CDK grants (logging,
        # X-Ray, invoking the gate), whose "*" acknowledgment must not cover these.
        jobs = iam.Policy(
            self, "TrainingJobsPolicy", roles=[self.state_machine.role], statements=statements
        )
        acknowledge_wildcard(
            jobs,
            self.job_arn_pattern,
            "Training job names are chosen per run; the pattern admits only this "
            "deployment's prefix (the start CLI and IAM agree on it).",
        )
        granted_by_cdk = self.state_machine.role.node.find_child("DefaultPolicy")
        acknowledge_wildcard(
            granted_by_cdk,
            f"{self.gate_function.function_arn}:*",
            "CDK's grant for invoking the gate Lambda covers its versions/aliases (ARN:*); "
            "it is still this one function.",
        )
        acknowledge(
            granted_by_cdk,
            "AwsSolutions-IAM5[Resource::*]",
            "Granted by CDK for the state machine's own logging (logs:*LogDelivery, "
            "DescribeLogGroups/ResourcePolicies, PutResourcePolicy) and X-Ray tracing: "
            "CloudWatch Logs vended delivery and X-Ray have no resource-level permissions.",
        )
