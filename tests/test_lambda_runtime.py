"""lambda/handler.py under the real Lambda runtime client (awslambdaric), end to end.

A small Runtime API server (the 2018-06-01 protocol Lambda speaks to the runtime) runs in a
thread: it hands out queued events on ``/invocation/next`` and records what the runtime posts
back. ``python -m awslambdaric handler.handler`` runs as a subprocess in lambda/, as in the
image, and must load its model during init, answer REST (v1) and HTTP API (v2) events, keep
its model across invocations, report a broken model as a 503 and a broken configuration as an
init error.
"""

from __future__ import annotations

import fnmatch
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from helpers import FAKE_AWS_ENV

from nerkit.store import ModelStore

REPO = Path(__file__).resolve().parent.parent
LAMBDA_DIR = REPO / "lambda"
EVENTS = Path(__file__).resolve().parent / "events"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:nerkit-serving"
TEXT = "Angela Merkel met Tim Cook in Berlin."
# Safety nets only, so a broken runtime fails the test instead of hanging CI; never asserted.
WAIT_S = 120.0

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Post:
    """Something the runtime sent back: a response, an invocation error or an init error."""

    kind: str
    request_id: str | None
    body: Any
    headers: dict[str, str]


class RuntimeApi:
    """The Lambda Runtime API, enough of it for awslambdaric: next, response, error, init."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.posts: queue.Queue[Post] = queue.Queue()
        # Set when the runtime first asks for an event: its init phase is over.
        self.polled = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def invoke(self, event: dict[str, Any]) -> Post:
        """Queue ``event`` for the runtime's next poll and wait for what it posts back."""
        request_id = str(uuid.uuid4())
        self.events.put((request_id, event))
        post = self.posts.get(timeout=WAIT_S)
        assert post.request_id == request_id
        return post

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                assert self.path == "/2018-06-01/runtime/invocation/next"
                api.polled.set()
                request_id, event = api.events.get()  # a real Lambda also blocks here
                body = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header(
                    "Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000)
                )
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN)
                self.send_header(
                    "Lambda-Runtime-Trace-Id",
                    "Root=1-65f0c1a2-1a2b3c4d5e6f7a8b9c0d1e2f;Parent=53995c3f42cd8ad8;Sampled=0",
                )
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                match = re.fullmatch(
                    r"/2018-06-01/runtime/(?:invocation/([^/]+)/(response|error)|init/(error))",
                    self.path,
                )
                assert match, self.path
                request_id, kind = match[1], match[2] or "init_error"
                api.posts.put(Post(kind, request_id, json.loads(raw), dict(self.headers)))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test asserts on what was posted, not on access logs."""

        return Handler

    def __enter__(self) -> RuntimeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Runtime:
    """The awslambdaric process and where its stdout goes."""

    process: subprocess.Popen[bytes]
    stdout: Path

    def log_lines(self) -> list[dict[str, Any]]:
        text = self.stdout.read_text(encoding="utf-8", errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def runtime_api() -> Iterator[RuntimeApi]:
    with RuntimeApi() as api:
        yield api


@pytest.fixture
def start_runtime(runtime_api: RuntimeApi, tmp_path: Path) -> Iterator[Any]:
    """Start ``python -m awslambdaric handler.handler`` in lambda/ with extra environment."""
    started: list[Runtime] = []

    def start(**env: str) -> Runtime:
        stdout = tmp_path / f"runtime-{len(started)}.log"
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO),
            "AWS_LAMBDA_RUNTIME_API": runtime_api.address,
            "AWS_LAMBDA_FUNCTION_NAME": "nerkit-serving",
            **FAKE_AWS_ENV,
            "MODEL_CACHE_DIR": str(tmp_path / "model-cache"),
            **env,
        }
        with stdout.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "awslambdaric", "handler.handler"],
                cwd=LAMBDA_DIR,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        runtime = Runtime(process, stdout)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        if runtime.process.poll() is None:
            runtime.process.kill()
        runtime.process.wait(timeout=WAIT_S)


def rest_event(body: str) -> dict[str, Any]:
    event = json.loads((EVENTS / "rest_v1_post_entities.json").read_text())
    event["body"] = body
    return event


def http_event(method: str, path: str, body: str | None = None) -> dict[str, Any]:
    event = json.loads((EVENTS / "http_v2_post_entities.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["body"] = body
    event["headers"]["content-length"] = str(len((body or "").encode()))
    return event


def response_of(post: Post) -> tuple[int, Any]:
    assert post.kind == "response", post
    return post.body["statusCode"], json.loads(post.body["body"])


def assert_serves_two_invocations_with_one_load(
    api: RuntimeApi, runtime: Runtime, version: str
) -> None:
    first = api.invoke(rest_event(json.dumps({"text": TEXT})))
    status, body = response_of(first)
    assert status == 200, body
    assert body["model_version"] == version
    for entity in body["entities"]:
        assert entity["word"] == TEXT[entity["start"] : entity["end"]]

    second = api.invoke(http_event("POST", "/v1/entities", json.dumps({"texts": [TEXT, "Paris"]})))
    status, body = response_of(second)
    assert status == 200, body
    assert body["model_version"] == version and len(body["results"]) == 2

    assert runtime.process.poll() is None, "the runtime keeps running between invocations"
    lines = runtime.log_lines()
    loads = [line for line in lines if line.get("message") == "model loaded"]
    assert len(loads) == 1, "the second invocation reuses the model loaded by the first"
    requests = [line for line in lines if line.get("logger") == "nerkit.api.request"]
    assert [line["request_id"] for line in requests] == [first.request_id, second.request_id]
    assert {line["Service"] for line in requests} == {"nerkit-serving"}


def test_local_artifact(
    runtime_api: RuntimeApi, start_runtime: Any, tiny_artifact_tar: Path
) -> None:
    runtime = start_runtime(MODEL_URI=str(tiny_artifact_tar))
    assert runtime_api.polled.wait(WAIT_S)
    messages = [line.get("message") for line in runtime.log_lines()]
    assert "model loaded" in messages, "the model loads during init (PRELOAD_MODEL)"
    assert_serves_two_invocations_with_one_load(runtime_api, runtime, "test-1")


def test_s3_model_behind_the_live_pointer(
    runtime_api: RuntimeApi,
    start_runtime: Any,
    moto_server: str,
    tiny_artifact_tar: Path,
    aws_credentials: None,
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server)
    s3.create_bucket(Bucket="nerkit-models")
    store = ModelStore("nerkit-models", "models", s3)
    store.set_live(store.upload(tiny_artifact_tar))
    runtime = start_runtime(MODEL_URI="s3://nerkit-models/models", AWS_ENDPOINT_URL_S3=moto_server)
    assert_serves_two_invocations_with_one_load(runtime_api, runtime, "test-1")


def test_broken_model_is_a_503_not_a_crash(runtime_api: RuntimeApi, start_runtime: Any) -> None:
    runtime = start_runtime(MODEL_URI="/nonexistent/model.tar.gz")
    status, body = response_of(runtime_api.invoke(rest_event(json.dumps({"text": TEXT}))))
    assert status == 503
    assert body["error"]["code"] == "model_unavailable"
    assert body["error"]["details"][0]["type"] == "no_live_model"
    assert "/nonexistent" not in json.dumps(body)
    # The failed init load, then the first request's own attempt: details in the log only.
    failures = [line for line in runtime.log_lines() if line.get("message") == "model load failed"]
    assert [line["error"] for line in failures] == ["no model at /nonexistent/model.tar.gz"] * 2
    status, body = response_of(runtime_api.invoke(http_event("GET", "/health")))
    assert (status, body) == (200, {"status": "ok"})
    assert runtime.process.poll() is None


def test_invalid_configuration_is_an_init_error(
    runtime_api: RuntimeApi, start_runtime: Any
) -> None:
    runtime = start_runtime(MODEL_URI="/models/x", MAX_TEXTS="none")
    post = runtime_api.posts.get(timeout=WAIT_S)
    assert post.kind == "init_error"
    assert post.headers["Lambda-Runtime-Function-Error-Type"] == post.body["errorType"]
    assert post.body["errorType"] == "SettingsError"
    assert "MAX_TEXTS='none'" in post.body["errorMessage"]
    assert runtime.process.wait(timeout=WAIT_S) == 1


def build_context(context: Path, ignore_file: Path) -> Path:
    """The repository's files that a .dockerignore leaves in the build context, copied to
    ``context``: the last pattern matching a path or one of its parents decides."""
    patterns = [
        line.strip()
        for line in ignore_file.read_text().splitlines()
        if line.strip()[:1] not in ("", "#")
    ]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        parts = Path(name).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        kept = True
        for pattern in patterns:
            negated, glob = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
            if any(fnmatch.fnmatchcase(candidate, glob) for candidate in candidates):
                kept = negated
        if kept and (REPO / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, context / name)
    return context


def test_image_layout_imports_without_training_code(tmp_path: Path) -> None:
    """The files lambda/Dockerfile copies (from the build context its .dockerignore leaves)
    are enough to import the handler, and importing it pulls in neither torch nor
    transformers (cold start, image size)."""
    task_root = tmp_path / "task"
    context = build_context(tmp_path / "context", LAMBDA_DIR / "Dockerfile.dockerignore")
    dockerfile = (LAMBDA_DIR / "Dockerfile").read_text().replace("\\\n", " ")
    for line in dockerfile.splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or not words[-1].startswith("${LAMBDA_TASK_ROOT}"):
            continue
        dest = task_root / words[-1].removeprefix("${LAMBDA_TASK_ROOT}").strip("/")
        for source in map(context.joinpath, words[1:-1]):
            if source.is_dir():  # Docker copies a directory's contents
                shutil.copytree(
                    source, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, dest / source.name)
    assert (task_root / "handler.py").is_file()
    assert not (task_root / "nerkit" / "training").exists()
    check = (
        "import sys, handler; "
        "assert handler.handler.app.title == 'nerkit'; "
        "heavy = sorted({'torch', 'transformers'} & set(sys.modules)); "
        "assert not heavy, heavy"
    )
    # -S skips site-packages' .pth files, so the editable nerkit install is out of reach and
    # only the copied files can satisfy ``import nerkit``.
    site_packages = sysconfig.get_paths()["purelib"]
    result = subprocess.run(
        [sys.executable, "-S", "-c", check],
        cwd=task_root,
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join([str(task_root), site_packages]),
            "MODEL_URI": "s3://build-smoke-test/models",
        },
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
