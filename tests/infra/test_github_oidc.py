"""The optional GitHub OIDC deploy stack: only synthesized when asked for; trust pinned to the
repository and environment; its only permission is to assume the CDK bootstrap roles; nag
and cfn-lint clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_nag import cdk_role_dependency, cfn_lint, report

from infra.app import build_app
from infra.github_oidc import STACK_NAME
from infra.settings import Settings, SettingsError

pytestmark = pytest.mark.slow

REPO = "acme/nerkit"
PROVIDER_ARN = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"


def synth(tmp_path: Path, context: dict[str, str]) -> tuple[dict[str, Any], Any]:
    app, _ = build_app(context, outdir=str(tmp_path), environ={})
    assembly = app.synth()  # raises on any unacknowledged cdk-nag finding
    return report(tmp_path), assembly


@pytest.fixture(scope="module")
def created(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    plugin, assembly = synth(tmp_path_factory.mktemp("oidc"), {"github_repo": REPO})
    return plugin, assembly.get_stack_by_name(STACK_NAME).template


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_a_bare_app_has_only_the_service_stack(tmp_path: Path) -> None:
    _, assembly = synth(tmp_path, {})
    assert [s.stack_name for s in assembly.stacks] == ["Nerkit-prod"]


def test_provider_is_githubs_with_the_sts_audience(created: tuple[dict, dict]) -> None:
    _, template = created
    (provider,) = of_type(template, "AWS::IAM::OIDCProvider").values()
    assert provider["Properties"]["Url"] == "https://token.actions.githubusercontent.com"
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]


def test_each_environment_role_trusts_only_this_repo_and_environment(
    created: tuple[dict, dict],
) -> None:
    _, template = created
    (provider_id,) = of_type(template, "AWS::IAM::OIDCProvider")
    roles = {
        r["Properties"]["RoleName"]: r["Properties"]
        for r in of_type(template, "AWS::IAM::Role").values()
    }
    assert set(roles) == {"nerkit-github-deploy-dev", "nerkit-github-deploy-prod"}
    for environment in ("dev", "prod"):
        (trust,) = roles[f"nerkit-github-deploy-{environment}"]["AssumeRolePolicyDocument"][
            "Statement"
        ]
        assert trust["Effect"] == "Allow"
        assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert trust["Principal"] == {"Federated": {"Ref": provider_id}}
        assert trust["Condition"] == {
            "StringEquals": {
                "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                "token.actions.githubusercontent.com:sub": f"repo:{REPO}:environment:{environment}",
            }
        }
        assert "ManagedPolicyArns" not in roles[f"nerkit-github-deploy-{environment}"]


def test_roles_may_only_assume_the_cdk_bootstrap_roles(created: tuple[dict, dict]) -> None:
    _, template = created
    policies = of_type(template, "AWS::IAM::Policy").values()
    assert len(policies) == 2
    for policy in policies:
        (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Action"] == "sts:AssumeRole"
        assert json.dumps(statement["Resource"]).endswith(':role/cdk-hnb659fds-*"]]}')
        assert statement["Condition"] == {
            "ForAnyValue:StringEquals": {
                "iam:ResourceTag/aws-cdk:bootstrap-role": [
                    "deploy",
                    "file-publishing",
                    "image-publishing",
                    "lookup",
                ]
            }
        }


def test_the_stack_passes_cdk_nag_and_cfn_lint(created: tuple[dict, dict]) -> None:
    plugin, template = created
    assert plugin["conclusion"] == "success"
    assert plugin["violations"] == []
    assert [m for m in cfn_lint(template) if not cdk_role_dependency(m, template)] == []
    outputs = template["Outputs"]
    assert {"DeployRoleArnDev", "DeployRoleArnProd"} <= set(outputs)


def test_an_existing_provider_is_imported_not_created(tmp_path: Path) -> None:
    context = {
        "github_repo": REPO,
        "github_environments": "staging",
        "github_oidc_provider_arn": PROVIDER_ARN,
    }
    _, assembly = synth(tmp_path, context)
    template = assembly.get_stack_by_name(STACK_NAME).template
    assert not of_type(template, "AWS::IAM::OIDCProvider")
    (role,) = of_type(template, "AWS::IAM::Role").values()
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Federated": PROVIDER_ARN}
    assert trust["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == (
        f"repo:{REPO}:environment:staging"
    )


@pytest.mark.parametrize(
    "context",
    [
        {"github_repo": "nerkit"},
        {"github_repo": REPO, "github_environments": "Prod!"},
        {"github_repo": REPO, "github_oidc_provider_arn": "arn:aws:iam::1:oidc-provider/x"},
    ],
)
def test_bad_github_settings_are_refused(context: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="github"):
        Settings.load(context.get, {})
