"""The CDK app: ``npx cdk synth`` runs ``python -m infra.app`` (cdk.json).

Settings come from CDK context (``-c key=value``) and ``NERKIT_*`` environment variables
(``infra/settings.py``); the AwsSolutions cdk-nag pack runs on every synth and fails it on
any finding that is not acknowledged in code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from aws_cdk import App, Environment

from infra.assets import REPO_ROOT
from infra.github_oidc import STACK_NAME as GITHUB_STACK_NAME
from infra.github_oidc import GithubDeployStack
from infra.nag import add_checks
from infra.settings import Settings
from infra.stack import NerkitStack


def cdk_json_context() -> dict[str, Any]:
    """The context block of cdk.json (feature flags), which the CLI passes to the app; an app
    built in-process (tests, ``python -m infra.app``) gets it from here instead."""
    return json.loads((REPO_ROOT / "cdk.json").read_text()).get("context", {})


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[App, NerkitStack]:
    app = App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    settings = Settings.load(app.node.try_get_context, environ)
    # Account and region from the CLI's credentials when there are any; otherwise an
    # environment-agnostic template (synth needs no AWS access).
    env = Environment(
        account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")
    )
    stack = NerkitStack(app, settings.stack_name, settings=settings, env=env)
    if settings.github_repo:
        # Only when asked for: a bare `cdk deploy` still deploys the one service stack.
        GithubDeployStack(app, GITHUB_STACK_NAME, settings=settings, env=env)
    add_checks(app)
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
