"""``scripts/run_local.py`` (``make run``) end to end: moto S3, publish, serve, clean shutdown."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from helpers import FAKE_AWS_ENV, free_port

from nerkit.store.local import announcement

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "run_local.py"
# Generous: moto and the app import a lot on a shared, busy CI machine.
STARTUP_WAIT_S = 300.0
EXIT_WAIT_S = 60.0

pytestmark = pytest.mark.slow


def moto_children(parent: int) -> list[int]:
    """Children of ``parent`` running moto's server, from /proc (ppid follows the name)."""
    children = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue  # exited while listing
        if ppid == parent and b"moto.server" in cmdline:
            children.append(int(proc.name))
    return children


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class OutputReader:
    """Drains a process's output in a thread (a full pipe would block it) into a queue."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(
            target=lambda: [self.lines.put(line) for line in stream], daemon=True
        ).start()

    def wait_for(self, pattern: str, process: subprocess.Popen[str]) -> re.Match[str]:
        deadline = time.monotonic() + STARTUP_WAIT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        pytest.fail(f"no line matching {pattern!r}; output:\n{''.join(self.seen)}")


@pytest.fixture
def run_local(tiny_artifact_tar: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--model", str(tiny_artifact_tar)],
        env={**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1"},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_local_serves_the_s3_model_and_stops_cleanly(
    run_local: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = run_local
    output = OutputReader(process)
    moto_endpoint = output.wait_for(r"Local S3 \(moto_server\): (http://\S+)", process)[1]
    url = output.wait_for(rf"Page: (http://127\.0\.0\.1:{port}/)\s*$", process)[1]
    moto_pids = moto_children(process.pid)
    assert moto_pids, "moto_server should run as a child of run_local.py"

    answer = httpx.post(
        f"{url}v1/entities", json={"text": "Angela Merkel met Tim Cook in Berlin."}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == "test-1"  # the version published to (and read from) S3
    assert all(
        {"entity_group", "score", "word", "start", "end"} <= set(e) for e in body["entities"]
    )
    # Locally each request is one short human line, not CloudWatch's JSON.
    output.wait_for(
        r"^\d\d:\d\d:\d\d POST /v1/entities 200 [\d.]+ ms  model test-1  1 text", process
    )
    assert not any('"_aws"' in line for line in output.seen)
    page = httpx.get(url, timeout=60)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "v1/entities" in page.text

    # The local store in one step, as the banner says (no AWS settings of the user's).
    assert any(f"nerkit-models list --local --port {port}" in line for line in output.seen)
    listing = subprocess.run(
        [sys.executable, "-m", "nerkit.models_cli", "list", "--local", "--port", str(port)],
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        capture_output=True,
        text=True,
        timeout=EXIT_WAIT_S,
    )
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[2].split()[:2] == ["*", "test-1"]

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=EXIT_WAIT_S) == 0, "".join(output.seen)
    assert not announcement(port).exists()
    assert not [pid for pid in moto_pids if process_exists(pid)], "moto_server was left running"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{moto_endpoint}/moto-api/", timeout=10)


def serve_and_ask(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Run run_local.py with ``args``; return one answer of its API and its output so far."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env={**os.environ, **env, "PORT": str(port), "PYTHONUNBUFFERED": "1"},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = OutputReader(process)
        url = output.wait_for(rf"Page: (http://127\.0\.0\.1:{port}/)\s*$", process)[1]
        answer = httpx.post(f"{url}v1/entities", json={"text": "Tim Cook"}, timeout=60)
        assert answer.status_code == 200, answer.text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=EXIT_WAIT_S) == 0, "".join(output.seen)
        return answer.json(), output.seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_local_serves_a_model_directory(tiny_artifact_dir: Path) -> None:
    body, output = serve_and_ask(["--model", str(tiny_artifact_dir)], {})
    assert body["model_version"] == "test-1"
    assert any("is LIVE at s3://nerkit-local-models/models" in line for line in output)


def test_run_local_serves_an_s3_model_without_a_local_s3(
    moto_server: str, tiny_artifact_tar: Path
) -> None:
    """``make run MODEL=s3://...``: the app reads that URI with the caller's credentials."""
    env = {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": moto_server}
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name=FAKE_AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket="mine")
    s3.upload_file(str(tiny_artifact_tar), "mine", "models/ner/my.tar.gz")
    body, output = serve_and_ask(["--model", "s3://mine/models/ner/my.tar.gz"], env)
    assert body["model_version"] == "test-1"
    assert any("Serving s3://mine/models/ner/my.tar.gz from S3" in line for line in output)
    assert not any("moto_server" in line for line in output)


def test_make_run_passes_model_to_the_script() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "run", "MODEL=s3://b/models/ner"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=EXIT_WAIT_S,
        check=True,
    )
    assert "scripts/run_local.py --model 's3://b/models/ner'" in dry_run.stdout


def test_run_local_without_an_artifact_says_how_to_get_one(tmp_path: Path) -> None:
    missing = tmp_path / "model.tar.gz"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(missing)],
        env={**os.environ, "PORT": str(free_port())},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=EXIT_WAIT_S,
    )
    assert result.returncode == 1
    assert f"model {missing} is not a file or directory" in result.stderr


def test_run_local_prints_an_admin_key_that_the_admin_routes_accept(
    run_local: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = run_local
    output = OutputReader(process)
    key = output.wait_for(r"Admin key \(local.*\): (\S+)\s*$", process)[1]
    url = output.wait_for(rf"Page: (http://127\.0\.0\.1:{port}/)\s*$", process)[1]

    models = httpx.get(f"{url}v1/models", headers={"x-api-key": key}, timeout=60)
    assert models.status_code == 200, models.text
    assert models.json()["live"] == "test-1"
    for headers in ({}, {"x-api-key": "not-the-key"}):
        refused = httpx.get(f"{url}v1/models", headers=headers, timeout=60)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
    run = {
        "train": "s3://nerkit-local-models/datasets/a/train/",
        "validation": "s3://nerkit-local-models/datasets/a/validation/",
    }
    started = httpx.post(f"{url}v1/training-runs", json=run, headers={"x-api-key": key}, timeout=60)
    assert started.status_code == 201, started.text
    assert started.json()["id"].startswith("nerkit-local-")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=EXIT_WAIT_S) == 0, "".join(output.seen)
