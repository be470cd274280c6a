"""Bulk extraction: a Step Functions Distributed Map over shards, one worker Lambda per shard.

::

    Plan (Lambda: list the input, cut shards, pin the model, write the shard manifest)
      v
    Shards (Distributed Map; ItemReader: the manifest; one item = one shard)
      |  Work (Lambda) -> ShardDone? --no (stopped before its deadline)--> Work
      |                        └─yes-> ShardComplete
      v  (a Map failure is caught: the summary still runs)
    Summary (Lambda: summary.json from the shards' markers; EMF metrics)
      v
    RunComplete? -> Succeeded | RunIncomplete (Fail)

The execution input is built by ``nerkit-bulk start``. All three functions run the serving
image (no torch) with their own CMD, memory and timeout. ``ItemBatcher`` is not used: a shard
already batches thousands of records, and one item per shard keeps the definition runnable by
moto's interpreter (the tests execute the synthesized definition). The tolerated failure
percentage comes through the plan's result (``ToleratedFailurePercentagePath``).

S3 layout in the data bucket: ``bulk/input/`` (read), ``bulk/output/`` (results, markers,
summaries), ``bulk/manifests/`` (shard manifests), ``bulk/map-results/`` (Step Functions'
ResultWriter). Settings may add whole other buckets to read from or write to.
"""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, CfnElement, Duration, Size, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.log_groups import log_group
from infra.nag import acknowledge, acknowledge_wildcard, flatten
from infra.serving import (
    acknowledge_tracing,
    lambda_architecture,
    lambda_tracing,
    serving_image,
)
from infra.settings import BULK_PREFIX, MB_PER_VCPU, Settings
from infra.storage import Storage
from nerkit.api.emf import (
    BULK_SERVICE,
    DOCUMENTS,
    ENTITIES,
    MISSING_SHARDS,
    NAMESPACE,
    RECORD_ERRORS,
    SERVICE,
)

INPUT_PREFIX = f"{BULK_PREFIX}/input"
OUTPUT_PREFIX = f"{BULK_PREFIX}/output"
MANIFEST_PREFIX = f"{BULK_PREFIX}/manifests"
MAP_RESULTS_PREFIX = f"{BULK_PREFIX}/map-results"
# Lambda's maximum: the worker stops taking records 2 minutes before it (nerkit.bulk.worker).
WORKER_TIMEOUT = Duration.minutes(15)
# A run of 100M documents at the default concurrency is well under a day (docs/DEPLOY.md).
RUN_TIMEOUT = Duration.hours(48)
# Lambda errors worth retrying: throttling and the service's own faults.
_TRANSIENT = [
    "Lambda.TooManyRequestsException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
]
PERIOD = Duration.minutes(5)


class _ManifestReader(sfn.S3JsonItemReader):
    """The shard manifest as the Map's items. CDK would grant GetObject on the whole bucket
    for a key chosen at run time; manifests only ever live under ``bulk/manifests/``."""

    def __init__(self, bucket: s3.IBucket) -> None:
        super().__init__(bucket=bucket, key=sfn.JsonPath.string_at("$.plan.manifestKey"))
        self._resource = bucket.arn_for_objects(f"{MANIFEST_PREFIX}/*")

    def provide_policy_statements(self) -> list[iam.PolicyStatement]:
        return [iam.PolicyStatement(actions=["s3:GetObject"], resources=[self._resource])]


class _MapResultWriter(sfn.ResultWriterV2):
    """Step Functions' export of the child executions' results, under its own prefix
    (CDK would grant the writes on the whole bucket)."""

    def __init__(self, bucket: s3.IBucket) -> None:
        super().__init__(bucket=bucket, prefix=MAP_RESULTS_PREFIX)
        self._resource = bucket.arn_for_objects(f"{MAP_RESULTS_PREFIX}/*")

    def provide_policy_statements(self) -> list[iam.PolicyStatement]:
        return [
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                resources=[self._resource],
            )
        ]


class BulkExtraction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        storage: Storage,
        model_uri: str,
        topic: sns.ITopic,
        dashboard: cw.Dashboard,
    ) -> None:
        super().__init__(scope, construct_id)
        self.settings, self.storage, self.model_uri = settings, storage, model_uri
        bucket = storage.bucket.bucket_name
        self.input_locations = [f"s3://{bucket}/{INPUT_PREFIX}/"] + [
            f"s3://{b}/" for b in settings.bulk_read_buckets
        ]
        self.output_locations = [f"s3://{bucket}/{OUTPUT_PREFIX}/"] + [
            f"s3://{b}/" for b in settings.bulk_write_buckets
        ]
        environment = {
            "BULK_MODEL_URI": model_uri,
            "BULK_MANIFEST_URI": storage.uri(MANIFEST_PREFIX),
            "BULK_INPUT_LOCATIONS": ",".join(self.input_locations),
            "BULK_OUTPUT_LOCATIONS": ",".join(self.output_locations),
            "BULK_TOLERATED_FAILURE_PERCENT": str(settings.bulk_tolerated_failure_percent),
            "NER_THREADS": str(max(1, settings.bulk_worker_memory_mb // MB_PER_VCPU)),
        }
        self.plan_function = self._function(
            "Plan",
            "bulk_handler.plan",
            "list the input, cut shards, pin the model version",
            memory_mb=MB_PER_VCPU,
            timeout=Duration.minutes(15),
            environment=environment,
        )
        self.worker_function = self._function(
            "Worker",
            "bulk_handler.worker",
            "named-entity recognition over one shard",
            memory_mb=settings.bulk_worker_memory_mb,
            timeout=WORKER_TIMEOUT,
            environment=environment,
        )
        self.summary_function = self._function(
            "Summary",
            "bulk_handler.summary",
            "the run summary from the shards' markers",
            memory_mb=1024,
            timeout=Duration.minutes(5),
            environment=environment,
        )
        self._grant_access()
        self.state_machine = self._state_machine()
        self.alarms = self._alarms(topic)
        self._dashboard(dashboard)

    # -- functions and their rights ---------------------------------------------------------

    def _function(
        self,
        name: str,
        handler: str,
        what: str,
        *,
        memory_mb: int,
        timeout: Duration,
        environment: dict[str, str],
    ) -> lambda_.DockerImageFunction:
        s = self.settings
        role = iam.Role(
            self,
            f"{name}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"nerkit bulk {name.lower()}: {what}",
        )
        logs = log_group(self, f"{name}Logs", s)
        logs.grant_write(role)
        function = lambda_.DockerImageFunction(
            self,
            f"{name}Function",
            description=f"nerkit {s.stage} bulk: {what}",
            # The serving image (same asset, built once) with this function's entrypoint.
            code=serving_image(s, cmd=[handler]),
            architecture=lambda_architecture(s),
            role=role,
            memory_size=memory_mb,
            timeout=timeout,
            # /tmp holds the model, as in serving.
            ephemeral_storage_size=Size.mebibytes(s.lambda_ephemeral_mb),
            environment=environment,
            log_group=logs,
            tracing=lambda_tracing(s),
        )
        acknowledge_tracing(role, s)
        return function

    def _grant_access(self) -> None:
        """Plan: list and read the input, write manifests, read LIVE. Worker: read the input
        and the model, read and write the output. Summary: manifests in, output out."""
        s, storage = self.settings, self.storage
        plan, worker, summary = (
            self.plan_function.role,
            self.worker_function.role,
            self.summary_function.role,
        )
        assert isinstance(plan, iam.Role) and isinstance(worker, iam.Role)
        assert isinstance(summary, iam.Role)
        for role in (plan, worker):
            storage.grant(
                role,
                ["s3:GetObject"],
                INPUT_PREFIX,
                why="the run's input objects, which each run chooses under this prefix.",
            )
            storage.grant(
                role,
                ["s3:GetObject"],
                s.model_prefix,
                why="the LIVE pointer and the versioned model tarballs it names.",
            )
        for role in (worker, summary):
            # GetObject: completion markers, so a rerun skips finished shards.
            storage.grant(
                role,
                ["s3:GetObject", "s3:PutObject"],
                OUTPUT_PREFIX,
                why="results, errors, markers and summaries under each run's output prefix.",
            )
        storage.grant(
            plan,
            ["s3:PutObject"],
            MANIFEST_PREFIX,
            why="one shard manifest per run, named after the execution.",
        )
        storage.grant(
            summary,
            ["s3:GetObject"],
            MANIFEST_PREFIX,
            why="the run's shard manifest, named after the execution.",
        )
        storage.grant_list(plan, INPUT_PREFIX, s.model_prefix)
        storage.grant_list(worker, s.model_prefix, OUTPUT_PREFIX)
        storage.grant_list(summary, OUTPUT_PREFIX)
        self._grant_buckets(s.bulk_read_buckets, [plan, worker], ["s3:GetObject"], "read input")
        self._grant_buckets(
            s.bulk_write_buckets,
            [worker, summary],
            ["s3:GetObject", "s3:PutObject"],
            "write results and read markers",
        )

    def _grant_buckets(
        self, buckets: tuple[str, ...], roles: list[iam.Role], actions: list[str], why: str
    ) -> None:
        partition = Stack.of(self).partition
        for bucket in buckets:
            arn = f"arn:{partition}:s3:::{bucket}"
            for role in roles:
                role.add_to_policy(iam.PolicyStatement(actions=actions, resources=[f"{arn}/*"]))
                role.add_to_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[arn]))
                acknowledge_wildcard(
                    role,
                    f"{arn}/*",
                    f"bulk_read_buckets/bulk_write_buckets name {bucket} as a whole bucket to "
                    f"{why}; object names are chosen per run.",
                )

    # -- the state machine ------------------------------------------------------------------

    def _invoke(
        self, state_id: str, function: lambda_.IFunction, **kwargs: object
    ) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self,
            state_id,
            lambda_function=function,
            payload_response_only=True,
            retry_on_service_exceptions=False,
            **kwargs,  # type: ignore[arg-type]
        )
        task.add_retry(
            errors=_TRANSIENT,
            interval=Duration.seconds(2),
            max_attempts=6,
            backoff_rate=2.0,
            jitter_strategy=sfn.JitterType.FULL,
        )
        # S3 trouble the function's own retries did not absorb (nerkit.bulk.locations).
        task.add_retry(
            errors=["LocationError"],
            interval=Duration.seconds(5),
            max_attempts=3,
            backoff_rate=3.0,
        )
        return task

    def _state_machine(self) -> sfn.StateMachine:
        s, bucket = self.settings, self.storage.bucket
        plan = self._invoke(
            "Plan",
            self.plan_function,
            payload=sfn.TaskInput.from_object(
                {
                    "request": sfn.JsonPath.entire_payload,
                    "runId": sfn.JsonPath.string_at("$$.Execution.Name"),
                }
            ),
            result_path="$.plan",
        )
        work = self._invoke("Work", self.worker_function)
        shard_done = (
            sfn.Choice(self, "ShardDone?")
            .when(
                sfn.Condition.boolean_equals("$.complete", True), sfn.Succeed(self, "ShardComplete")
            )
            .otherwise(work)
        )
        work.next(shard_done)
        shards = sfn.DistributedMap(
            self,
            "Shards",
            item_reader=_ManifestReader(bucket),
            map_execution_type=sfn.StateMachineType.STANDARD,
            max_concurrency=s.bulk_max_concurrency,
            tolerated_failure_percentage_path="$.plan.toleratedFailurePercentage",
            result_writer_v2=_MapResultWriter(bucket),
            result_path=sfn.JsonPath.DISCARD,
        )
        shards.item_processor(work)
        summary = self._invoke(
            "Summary",
            self.summary_function,
            payload=sfn.TaskInput.from_object({"plan": sfn.JsonPath.object_at("$.plan")}),
            result_path="$.summary",
        )
        # Too many failed shards fail the Map: the summary still says which ones.
        shards.add_catch(summary, errors=[sfn.Errors.ALL], result_path="$.mapError")
        verdict = (
            sfn.Choice(self, "RunComplete?")
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_not_present("$.mapError"),
                    sfn.Condition.string_equals("$.summary.status", "SUCCEEDED"),
                ),
                sfn.Succeed(self, "Succeeded"),
            )
            .otherwise(
                sfn.Fail(
                    self,
                    "RunIncomplete",
                    error="BulkRunIncomplete",
                    cause="Some shards did not complete; summary.json in the output lists them.",
                )
            )
        )
        definition = plan.next(shards).next(summary).next(verdict)
        state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            comment="Bulk named-entity recognition over S3 (nerkit-bulk start)",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=RUN_TIMEOUT,
            tracing_enabled=s.tracing,
            logs=sfn.LogOptions(
                destination=log_group(
                    self,
                    "StateMachineLogs",
                    s,
                    log_group_name=f"/aws/vendedlogs/states/nerkit-{s.stage}-bulk",
                ),
                level=sfn.LogLevel.ALL,
                # States carry paths and counts only, never text; kept out all the same.
                include_execution_data=False,
            ),
        )
        self._acknowledge_state_machine(state_machine)
        if not s.tracing:
            acknowledge(
                state_machine,
                "AwsSolutions-SF2",
                "X-Ray follows the deployment's tracing setting (off by default, like the "
                "Lambdas and the API stage); every execution event is logged (level ALL).",
            )
        return state_machine

    def _acknowledge_state_machine(self, state_machine: sfn.StateMachine) -> None:
        role, bucket = state_machine.role, self.storage.bucket
        for prefix, why in (
            (MANIFEST_PREFIX, "the Map reads the run's shard manifest (named per execution)"),
            (MAP_RESULTS_PREFIX, "the Map's ResultWriter exports child results per Map run"),
        ):
            acknowledge_wildcard(
                role, bucket.arn_for_objects(f"{prefix}/*"), f"{prefix}/* only: {why}."
            )
        for function in (self.plan_function, self.worker_function, self.summary_function):
            acknowledge_wildcard(
                role,
                f"{function.function_arn}:*",
                "CDK's grant for invoking a Lambda covers its versions/aliases (ARN:*); it is "
                "still this one function.",
            )
        # The Distributed Map's child executions: CDK grants Describe/Stop/Redrive on this
        # state machine's executions, whose names Step Functions picks per Map run. cdk-nag
        # names the state machine's name (a Select of its ARN) as raw JSON in the finding.
        executions = flatten(
            role,
            Stack.of(self).format_arn(
                service="states",
                resource="execution",
                resource_name="NAME",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            ),
        )
        arn_ref = {"Ref": Stack.of(self).get_logical_id(_element(state_machine))}
        name = json.dumps({"Fn::Select": [6, {"Fn::Split": [":", arn_ref]}]}, separators=(",", ":"))
        for suffix in (":*", "/*:*"):
            acknowledge(
                state_machine,  # CDK's DistributedMapPolicy sits beside the role
                f"AwsSolutions-IAM5[Resource::{executions.removesuffix('NAME')}{name}{suffix}]",
                "Distributed Map child executions of this state machine only; Step Functions "
                "names them per Map run.",
            )
        acknowledge(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5[Resource::*]",
            "Granted by CDK for the state machine's own logging (logs:*LogDelivery, "
            "DescribeLogGroups/ResourcePolicies, PutResourcePolicy) and X-Ray tracing, which "
            "have no resource-level permissions.",
        )

    # -- alarms and dashboard ---------------------------------------------------------------

    def _alarms(self, topic: sns.ITopic) -> list[cw.Alarm]:
        action = cw_actions.SnsAction(topic)
        alarms = []
        for alarm_id, metric, what in (
            ("RunFailed", self.state_machine.metric_failed, "failed (or ended incomplete)"),
            ("RunTimedOut", self.state_machine.metric_timed_out, "timed out"),
        ):
            alarm = metric(period=PERIOD, statistic="Sum").create_alarm(
                self,
                alarm_id,
                alarm_description=f"A bulk extraction run {what}.",
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
            alarms.append(alarm)
        return alarms

    def _dashboard(self, dashboard: cw.Dashboard) -> None:
        def per_run(name: str) -> cw.Metric:
            return cw.Metric(
                namespace=NAMESPACE,
                metric_name=name,
                dimensions_map={SERVICE: BULK_SERVICE},
                statistic="Sum",
                period=PERIOD,
            )

        sm, worker = self.state_machine, self.worker_function
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Bulk runs",
                left=[
                    sm.metric_started(period=PERIOD),
                    sm.metric_succeeded(period=PERIOD),
                    sm.metric_failed(period=PERIOD),
                    sm.metric_timed_out(period=PERIOD),
                ],
                width=8,
                height=6,
            ),
            cw.GraphWidget(
                title="Bulk documents and record errors (per finished run)",
                left=[per_run(DOCUMENTS), per_run(ENTITIES)],
                right=[per_run(RECORD_ERRORS), per_run(MISSING_SHARDS)],
                width=8,
                height=6,
            ),
            cw.GraphWidget(
                title="Bulk workers",
                left=[
                    worker.metric_invocations(period=PERIOD),
                    worker.metric_errors(period=PERIOD),
                    worker.metric_throttles(period=PERIOD),
                ],
                right=[worker.metric_duration(period=PERIOD, statistic="p99")],
                width=8,
                height=6,
            ),
        )


def _element(construct: Construct) -> CfnElement:
    child = construct.node.default_child
    assert isinstance(child, CfnElement)
    return child
