"""Alarms (to an SNS topic) and a CloudWatch dashboard for serving and training.

The service's own metrics come from its request log lines in CloudWatch Embedded Metric
Format (``nerkit/api/logs.py``, names in ``nerkit/api/emf.py``): namespace ``nerkit``, dimensions
``Service`` (the function name) and ``Route``. Graphs use SEARCH expressions so every route
shows up without listing the routes here.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.serving import KEYED_METHODS
from infra.settings import Settings
from nerkit.api.emf import ENTITIES, ERRORS, LATENCY, NAMESPACE, ROUTE, SERVICE, TEXTS

PERIOD = Duration.minutes(5)


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        function: lambda_.IFunction,
        api: apigw.RestApi | apigwv2.HttpApi,
        state_machine: sfn.StateMachine,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self, "Alarms", display_name=f"nerkit {settings.stage} alarms", enforce_ssl=True
        )
        if settings.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))
        self.alarms = self._alarms(settings.stage, function, api, state_machine)
        action = cw_actions.SnsAction(self.topic)
        for alarm in self.alarms:
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
        self.dashboard = self._dashboard(settings, function, api, state_machine)

    def _alarm(
        self,
        metric: cw.Metric | cw.MathExpression,
        alarm_id: str,
        description: str,
        *,
        threshold: float,
        periods: int,
        comparison: cw.ComparisonOperator,
    ) -> cw.Alarm:
        # No data means no traffic or no runs: never an alarm.
        return metric.create_alarm(
            self,
            alarm_id,
            alarm_description=description,
            threshold=threshold,
            evaluation_periods=periods,
            comparison_operator=comparison,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )

    def _alarms(
        self,
        stage: str,
        function: lambda_.IFunction,
        api: apigw.RestApi | apigwv2.HttpApi,
        state_machine: sfn.StateMachine,
    ) -> list[cw.Alarm]:
        at_least_one = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        # A handled request never raises, so any Lambda error is a crash, timeout or OOM.
        errors = self._alarm(
            function.metric_errors(period=PERIOD, statistic="Sum"),
            "FunctionErrors",
            "The serving Lambda failed (crash, timeout or out of memory).",
            threshold=1,
            periods=1,
            comparison=at_least_one,
        )
        throttles = self._alarm(
            function.metric_throttles(period=PERIOD, statistic="Sum"),
            "FunctionThrottles",
            "Lambda refused invocations: concurrency limit reached.",
            threshold=1,
            periods=1,
            comparison=at_least_one,
        )
        # Only the keyed routes: /ready answers 503 until the first model is published, and
        # such 5xx responses are no incident.
        server_errors = self._alarm(
            _keyed_server_error_percent(api, stage),
            "Api5xx",
            "More than 1% of the keyed API requests (POST /v1/entities, POST "
            "/v1/hf/token-classification, GET /v1/model) got a "
            "5xx in two 5-minute periods.",
            threshold=1,
            periods=2,
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
        )
        training = self._alarm(
            state_machine.metric_failed(period=PERIOD, statistic="Sum"),
            "TrainingFailed",
            "A training run failed or its model was rejected by the gate.",
            threshold=1,
            periods=1,
            comparison=at_least_one,
        )
        return [errors, throttles, server_errors, training]

    def _dashboard(
        self,
        settings: Settings,
        function: lambda_.IFunction,
        api: apigw.RestApi | apigwv2.HttpApi,
        state_machine: sfn.StateMachine,
    ) -> cw.Dashboard:
        dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"nerkit-{settings.stage}")
        dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24, height=3)
        )
        dashboard.add_widgets(
            _graph(
                "Latency by route (ms, p50 / p99)",
                _emf(function, LATENCY, "p50"),
                _emf(function, LATENCY, "p99"),
            ),
            _graph(
                "Texts and entities",
                _emf(function, TEXTS, "Sum"),
                _emf(function, ENTITIES, "Sum"),
            ),
            _graph("Service errors (5xx responses)", _emf(function, ERRORS, "Sum")),
        )
        dashboard.add_widgets(
            _graph(
                "API requests and errors",
                api.metric_count(period=PERIOD),
                api.metric_client_error(period=PERIOD),
                api.metric_server_error(period=PERIOD),
            ),
            _graph(
                "API latency (ms)",
                api.metric_latency(period=PERIOD, statistic="p50"),
                api.metric_latency(period=PERIOD, statistic="p99"),
                api.metric_integration_latency(period=PERIOD, statistic="p99"),
            ),
        )
        dashboard.add_widgets(
            _graph(
                "Lambda invocations, errors, throttles",
                function.metric_invocations(period=PERIOD),
                function.metric_errors(period=PERIOD),
                function.metric_throttles(period=PERIOD),
            ),
            _graph(
                "Lambda duration (ms)",
                function.metric_duration(period=PERIOD, statistic="p50"),
                function.metric_duration(period=PERIOD, statistic="p99"),
            ),
            _graph(
                "Training runs",
                state_machine.metric_started(period=PERIOD),
                state_machine.metric_succeeded(period=PERIOD),
                state_machine.metric_failed(period=PERIOD),
            ),
        )
        return dashboard


def _keyed_server_error_percent(
    api: apigw.RestApi | apigwv2.HttpApi, stage: str
) -> cw.MathExpression:
    """Percent of the keyed methods' requests answered with a 5xx (API Gateway's per-method
    metrics, which the stage's detailed metrics turn on)."""
    # The two kinds name the API, the stage and the 5xx metric differently (an HTTP API's
    # per-route metrics come from its $default stage's detailed metrics).
    if isinstance(api, apigwv2.HttpApi):
        api_dimension, stage, server_errors = {"ApiId": api.api_id}, "$default", "5xx"
    else:
        api_dimension, server_errors = {"ApiName": api.rest_api_name}, "5XXError"
    metrics: dict[str, cw.IMetric] = {}
    for index, (method, path) in enumerate(KEYED_METHODS):
        dimensions = {**api_dimension, "Stage": stage, "Method": method, "Resource": f"/{path}"}
        for prefix, name in (("errors", server_errors), ("requests", "Count")):
            metrics[f"{prefix}{index}"] = cw.Metric(
                namespace="AWS/ApiGateway",
                metric_name=name,
                dimensions_map=dimensions,
                statistic="Sum",
                period=PERIOD,
            )
    errors = " + ".join(k for k in metrics if k.startswith("errors"))
    requests = " + ".join(k for k in metrics if k.startswith("requests"))
    return cw.MathExpression(
        expression=f"100 * ({errors}) / ({requests})",
        using_metrics=metrics,
        label="keyed routes 5xx %",
        period=PERIOD,
    )


def _emf(function: lambda_.IFunction, metric: str, statistic: str) -> cw.MathExpression:
    """One line per route of an EMF metric of this function."""
    search = (
        f'SEARCH(\'{{{NAMESPACE},{ROUTE},{SERVICE}}} MetricName="{metric}" '
        f"{SERVICE}=\"{function.function_name}\"', '{statistic}', {int(PERIOD.to_seconds())})"
    )
    return cw.MathExpression(expression=search, label=f"{metric} {statistic}", period=PERIOD)


def _graph(title: str, *metrics: cw.IMetric) -> cw.GraphWidget:
    return cw.GraphWidget(title=title, left=list(metrics), width=8, height=6)
