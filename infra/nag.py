"""cdk-nag (AwsSolutions pack) wiring and the one way this project acknowledges a finding.

cdk-nag 3 runs as a CDK validation plugin: a finding that is not acknowledged fails the synth
(``ValidationFailed``) and lands in ``cdk.out/validation-report.json``. Acknowledgments sit
next to the construct they concern, each with the specific reason the finding is accepted.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, App, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

PACK = "AwsSolutions"


def add_checks(app: App) -> None:
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept finding ``rule`` (e.g. ``AwsSolutions-S1`` or ``AwsSolutions-IAM5[Resource::*]``)
    on ``scope`` and everything below it."""
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{PACK}::{rule}", reason=reason))


def acknowledge_wildcard(scope: IConstruct, resource: str, reason: str) -> None:
    """Accept the IAM5 finding for the wildcard ``resource`` (an ARN, tokens allowed) granted
    to ``scope`` (a role or its policy)."""
    acknowledge(scope, f"AwsSolutions-IAM5[Resource::{flatten(scope, resource)}]", reason)


def flatten(scope: IConstruct, value: Any) -> str:
    """A value as cdk-nag names it in findings (its ``flattenCfnReference``): ``Ref`` and
    ``Fn::GetAtt`` become ``<Name>``/``<LogicalId.Attr>``, joins are joined. Resolving first
    makes the name right whether account and region are tokens or literals."""

    def visit(node: Any) -> str:
        if node is None:
            return ""
        if isinstance(node, str):
            return node.replace("${", "<").replace("}", ">")
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return delimiter.join(visit(item) for item in items)
        if "Fn::Sub" in node:
            return visit(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{visit(resource)}.{visit(attribute)}>"
        if "Ref" in node:
            return f"<{visit(node['Ref'])}>"
        raise ValueError(f"cannot flatten {node!r}")

    return visit(Stack.of(scope).resolve(value))
