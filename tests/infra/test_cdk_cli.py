"""The real, pinned CDK CLI (package.json) synthesizes the app from cdk.json, cdk-nag included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.assets import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cli_synth(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    if shutil.which("npx") is None:
        pytest.skip("npx (Node.js) is not installed: the CDK CLI cannot run here")
    outdir = tmp_path_factory.mktemp("cli.out")
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    # A synth must not depend on the caller's AWS account (it would pin account/region).
    for name in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION"):
        env.pop(name, None)
    result = subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "--quiet", "-o", str(outdir)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    return result, outdir


def test_pinned_cli_is_the_one_that_runs() -> None:
    if shutil.which("npx") is None:
        pytest.skip("npx (Node.js) is not installed: the CDK CLI cannot run here")
    pinned = json.loads((REPO_ROOT / "package.json").read_text())["devDependencies"]["aws-cdk"]
    version = subprocess.run(
        ["npx", "--no-install", "cdk", "--version"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert version.startswith(pinned), version


def test_cdk_synth_succeeds_and_writes_the_stack(
    cli_synth: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, outdir = cli_synth
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    template = json.loads((outdir / "Nerkit-prod.template.json").read_text())
    kinds = {resource["Type"] for resource in template["Resources"].values()}
    assert {
        "AWS::S3::Bucket",
        "AWS::Lambda::Function",
        "AWS::ApiGateway::RestApi",
        "AWS::ApiGateway::UsagePlan",
        "AWS::StepFunctions::StateMachine",
        "AWS::CloudWatch::Dashboard",
    } <= kinds
    # The CLI adds asset metadata: the serving image and the training image are both there.
    assets = json.loads((outdir / "Nerkit-prod.assets.json").read_text())
    assert len(assets["dockerImages"]) == 2


def test_cdk_synth_runs_cdk_nag_and_it_passes(
    cli_synth: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, outdir = cli_synth
    assert result.returncode == 0, result.stderr[-4000:]
    (plugin,) = json.loads((outdir / "validation-report.json").read_text())["pluginReports"]
    assert plugin["pluginName"] == "AwsSolutions"
    assert plugin["conclusion"] == "success"
    assert plugin["violations"] == []
