"""The page's admin panels (Models, Train) in headless Chromium against the real app with
the admin routes on, on moto_server (S3 and Step Functions), behind the local stand-in for
API Gateway's keys (``nerkit.api.local_gateway``, what ``make run`` uses).

The upload goes from the browser to moto's S3 with the presigned form (cross-origin, as from
the deployed page to the bucket), the run goes through moto's Step Functions with a stand-in
pipeline that ends with a gate verdict, and a promotion moves LIVE in the model store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import boto3
import httpx
import pytest
from helpers import FAKE_AWS_ENV, dummy_tarball, free_port

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

from nerkit.store import ModelStore  # noqa: E402
from scripts.local_admin import enable_admin  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
STARTUP_WAIT_S = 300.0
WAIT_MS = 60_000
BUCKET = "nerkit-page-admin"
CLIENT_KEY = "not-an-admin-key"
# A pipeline that ends as a passed gate does (nerkit.pipeline.gate's outcome in $.gate).
PIPELINE = {
    "StartAt": "Training",
    "States": {
        "Training": {"Type": "Wait", "Seconds": 2, "Next": "Gate"},
        "Gate": {
            "Type": "Pass",
            "Result": {"published": True, "version": "v9", "reason": "validation F1 0.91 >= 0.8"},
            "ResultPath": "$.gate",
            "End": True,
        },
    },
}

pytestmark = pytest.mark.slow


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited during startup:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer in {STARTUP_WAIT_S:.0f} s:\n{log.read_text()}")


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def site(
    tiny_artifact_tar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    """moto_server with the model store (test-1 and v2, v2 LIVE) and the stand-in pipeline,
    and the app (admin on) under uvicorn; yields its URL, the admin key and AWS clients."""
    work = tmp_path_factory.mktemp("page-admin")
    moto_port, app_port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{moto_port}"
    env = {**os.environ, **FAKE_AWS_ENV, "AWS_ENDPOINT_URL": endpoint}
    env.pop("AWS_PROFILE", None)
    processes = [
        start(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            env,
            work / "moto.log",
        )
    ]
    try:
        wait_for(f"{endpoint}/moto-api/", processes[0], work / "moto.log")
        with pytest.MonkeyPatch.context() as patch:
            for name, value in {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
                patch.setenv(name, value)
            s3, sfn = boto3.client("s3"), boto3.client("stepfunctions")
            s3.create_bucket(Bucket=BUCKET)
            store = ModelStore(BUCKET, "models", s3)
            store.set_live(store.upload(tiny_artifact_tar))
            metrics = {"validation": {"f1": 0.88, "per_type": {"PER": {"f1": 0.93}}}}
            store.set_live(store.upload(dummy_tarball(work, "v2", metrics=metrics)))
            key, admin_env = enable_admin(endpoint, BUCKET, PIPELINE)
        app_env = {
            **env,
            **admin_env,
            "MODEL_URI": f"s3://{BUCKET}/models",
            "MODEL_CACHE_DIR": str(work / "cache"),
            "MODEL_REFRESH_SECONDS": "0",
            "ENABLE_PAGE": "true",
        }
        processes.append(
            start(
                [sys.executable, "-m", "uvicorn", "nerkit.api.local_gateway:local_app",
                 "--factory", "--port", str(app_port)],
                app_env,
                work / "app.log",
            )
        )  # fmt: skip
        url = f"http://127.0.0.1:{app_port}/"
        wait_for(f"{url}health", processes[1], work / "app.log")
        yield SimpleNamespace(
            url=url, key=key, s3=s3, sfn=sfn, store=ModelStore(BUCKET, "models", s3)
        )
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=60)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


def enter_key(page: Page, key: str) -> None:
    page.fill("#api-key", key)
    page.dispatch_event("#api-key", "change")


def test_the_admin_panels_stay_hidden_for_a_client_key(page: Page, site: SimpleNamespace) -> None:
    page.goto(site.url)
    enter_key(page, CLIENT_KEY)
    page.wait_for_load_state("networkidle")
    expect(page.locator("#models-panel")).to_be_hidden()
    expect(page.locator("#train-panel")).to_be_hidden()
    refused = httpx.get(f"{site.url}v1/models", headers={"x-api-key": CLIENT_KEY}, timeout=30)
    assert refused.status_code == 403


def test_upload_start_follow_and_promote_from_the_page(
    page: Page, site: SimpleNamespace, tmp_path: Path
) -> None:
    page.goto(site.url)
    expect(page.locator("#models-panel")).to_be_hidden()
    enter_key(page, site.key)

    # Models: versions newest first, F1 per type, the LIVE marker.
    expect(page.locator("#models-panel")).to_be_visible()
    rows = page.locator("#model-rows tr")
    expect(rows).to_have_count(2)
    v2 = page.locator('#model-rows tr[data-version="v2"]')
    expect(v2).to_contain_text("LIVE")
    expect(v2).to_contain_text("PER 0.930")
    expect(v2).to_contain_text("0.880")

    # Train: upload the train and validation files, start, follow until the gate's verdict.
    train = tmp_path / "train.conll"
    train.write_text("Paris B-LOC\nis O\nnice O\n")
    validation = tmp_path / "dev.jsonl"
    validation.write_text(json.dumps({"text": "Ada", "entities": [[0, 3, "PER"]]}) + "\n")
    page.fill("#dataset-name", "mine")
    page.set_input_files("#train-file", str(train))
    page.set_input_files("#validation-file", str(validation))
    page.fill("#hp-epochs", "2")
    page.click("#train-submit")
    status = page.locator("#run-status")
    expect(status).to_contain_text("RUNNING")
    expect(status).to_have_attribute("data-status", "SUCCEEDED")
    expect(status).to_contain_text("Gate: passed (validation F1 0.91 >= 0.8)")
    expect(page.locator("#error")).to_be_hidden()

    keys = sorted(item["Key"] for item in site.s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert [k for k in keys if not k.startswith("models/")] == [
        "datasets/mine/train/train.conll",
        "datasets/mine/validation/dev.jsonl",
    ]
    body = site.s3.get_object(Bucket=BUCKET, Key="datasets/mine/train/train.conll")["Body"]
    assert body.read() == train.read_bytes()
    sfn = site.sfn
    (machine,) = sfn.list_state_machines()["stateMachines"]
    (execution,) = sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]
    sent = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert sent["channels"] == {
        "train": f"s3://{BUCKET}/datasets/mine/train/",
        "validation": f"s3://{BUCKET}/datasets/mine/validation/",
    }
    assert sent["hyperparameters"]["epochs"] == "2"

    # Promote (a rollback to test-1), confirmed in the dialog.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('#model-rows tr[data-version="test-1"] button').click()
    expect(page.locator('#model-rows tr[data-version="test-1"]')).to_contain_text("LIVE")
    assert site.store.live().version == "test-1"
    # Dismissing the confirmation changes nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator('#model-rows tr[data-version="v2"] button').click()
    page.wait_for_load_state("networkidle")
    assert site.store.live().version == "test-1"
