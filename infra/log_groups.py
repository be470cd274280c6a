"""Log groups: every one with the deployment's retention (none left to grow forever)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.settings import Settings

# One entry per value infra.settings.LOG_RETENTION_DAYS admits.
RETENTION = {
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}


def log_group(
    scope: Construct,
    construct_id: str,
    settings: Settings,
    *,
    log_group_name: str | None = None,
    removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
) -> logs.LogGroup:
    """A log group with the deployment's retention; by default removed with the stack (the
    bucket, not the logs, is what outlives a deployment)."""
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=log_group_name,
        retention=RETENTION[settings.log_retention_days],
        removal_policy=removal_policy,
    )
