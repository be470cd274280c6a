"""The optional stack that lets GitHub Actions deploy without long-lived keys.

GitHub's OIDC provider (created here, or imported with ``github_oidc_provider_arn`` when the
account has one: there can be only one per URL) and one deploy role per GitHub environment.
A role trusts only tokens for this repository *and* that environment (``aud`` and ``sub``
conditions), and its only permission is to assume the CDK bootstrap roles (deploy, asset
publishing, lookup), which ``cdk deploy`` uses for everything else. Synthesized only with
``-c github_repo=owner/name`` (docs/DEPLOY.md, "Continuous delivery").
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, DefaultStackSynthesizer, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.nag import acknowledge_wildcard
from infra.settings import Settings

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_TOKEN_ISSUER = "token.actions.githubusercontent.com"
STS_AUDIENCE = "sts.amazonaws.com"
STACK_NAME = "NerkitGithubDeploy"
# The tag `cdk bootstrap` puts on the roles it creates.
BOOTSTRAP_ROLES = ["deploy", "file-publishing", "image-publishing", "lookup"]


def deploy_role_name(environment: str) -> str:
    return f"nerkit-github-deploy-{environment}"


class GithubDeployStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"GitHub Actions OIDC deploy roles for {settings.github_repo}",
            **kwargs,
        )
        repo = settings.github_repo
        if repo is None:
            raise ValueError("the GitHub deploy stack needs the github_repo setting")
        if settings.github_oidc_provider_arn:
            provider_arn = settings.github_oidc_provider_arn
        else:
            provider = iam.OidcProviderNative(
                self, "GithubOidcProvider", url=GITHUB_OIDC_URL, client_ids=[STS_AUDIENCE]
            )
            provider_arn = provider.oidc_provider_arn
        bootstrap_roles = self.format_arn(
            service="iam",
            region="",
            resource="role",
            resource_name=f"cdk-{DefaultStackSynthesizer.DEFAULT_QUALIFIER}-*",
        )
        for environment in settings.github_environments:
            role = iam.Role(
                self,
                f"DeployRole-{environment}",
                role_name=deploy_role_name(environment),
                description=f"GitHub Actions of {repo}, environment {environment}: cdk deploy",
                assumed_by=iam.WebIdentityPrincipal(
                    provider_arn,
                    conditions={
                        "StringEquals": {
                            f"{GITHUB_TOKEN_ISSUER}:aud": STS_AUDIENCE,
                            f"{GITHUB_TOKEN_ISSUER}:sub": f"repo:{repo}:environment:{environment}",
                        }
                    },
                ),
            )
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["sts:AssumeRole"],
                    resources=[bootstrap_roles],
                    conditions={
                        "ForAnyValue:StringEquals": {
                            "iam:ResourceTag/aws-cdk:bootstrap-role": BOOTSTRAP_ROLES
                        }
                    },
                )
            )
            acknowledge_wildcard(
                role,
                bootstrap_roles,
                "The CDK bootstrap roles of this account (default qualifier), and only those "
                "tagged by cdk bootstrap as deploy, publishing or lookup roles: cdk deploy "
                "assumes them for everything it does.",
            )
            CfnOutput(
                self,
                f"DeployRoleArn{environment.title().replace('-', '')}",
                value=role.role_arn,
                description=f"AWS_DEPLOY_ROLE_ARN of the GitHub environment {environment}",
            )
