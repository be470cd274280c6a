"""Fault injection (issue 15): a stalled S3, and a release that passes every check but cannot run.

S3 is moto_server behind ``StallingEndpoint``, a loopback TCP relay that stops answering on
command, so the real botocore client meets a real silent socket. The S3 clients under test use
the serving configuration with smaller timeouts, so the tests run fast; the configuration's own
numbers are checked by arithmetic. No test measures wall-clock time.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from fastapi.testclient import TestClient
from helpers import FakeClock, artifact_version

from nerkit.api.app import create_app
from nerkit.api.model import ModelHolder
from nerkit.api.settings import Settings
from nerkit.artifact import extract, pack, write_manifest
from nerkit.engine import NerEngine
from nerkit.errors import StoreUnavailable
from nerkit.store import ModelStore, open_source
from nerkit.store.s3 import (
    CLIENT_OPTIONS,
    REQUEST_BUDGET_SECONDS,
    S3_CALL_BUDGET_SECONDS,
    retry_pause_limit,
)

BUCKET = "nerkit-fault-models"
MODEL_PREFIX = f"s3://{BUCKET}/models"
TEXT = "Angela Merkel met Tim Cook of Apple in Berlin on Monday."
# Small enough to keep the tests fast, large enough for moto_server on a busy machine.
CLIENT_CONFIG = Config(**CLIENT_OPTIONS)  # what new_s3_client configures
TEST_TIMEOUTS = Config(connect_timeout=2, read_timeout=2)


class StallingEndpoint:
    """An HTTP endpoint on 127.0.0.1 relaying to ``upstream`` until ``stall``: then every new
    connection is accepted and read but never answered (``"silent"``), or gets only the
    upstream's response headers (``"headers"``: the body never comes). ``stalled`` counts the
    connections accepted while stalling: botocore opens one per attempt."""

    def __init__(self, upstream: str | None = None) -> None:
        self._upstream = upstream.removeprefix("http://").split(":") if upstream else None
        self._mode = "silent" if upstream is None else "relay"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.stalled = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self, mode: str) -> None:
        """Stall from now on; relayed connections are closed, so pooled ones are not reused."""
        with self._lock:
            self._mode = mode
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)

    def resume(self) -> None:
        with self._lock:
            self._mode = "relay"

    def close(self) -> None:
        self.stall("closed")
        _close(self._listener)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self._mode
                if mode != "relay":
                    self.stalled += 1
                self._sockets.append(client)
            if mode in ("relay", "headers"):
                upstream = self._connect_upstream()
                threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
                headers_only = mode == "headers"
                threading.Thread(
                    target=_pipe, args=(upstream, client, headers_only), daemon=True
                ).start()
            else:
                threading.Thread(target=_drain, args=(client,), daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        assert self._upstream is not None
        host, port = self._upstream
        upstream = socket.create_connection((host, int(port)))
        with self._lock:
            self._sockets.append(upstream)
        return upstream


def _pipe(source: socket.socket, dest: socket.socket, headers_only: bool = False) -> None:
    """Copy bytes until either side closes; ``headers_only``: stop after the first response's
    header block and hold the connection open."""
    seen = b""
    try:
        while chunk := source.recv(65536):
            if headers_only:
                seen += chunk
                end = seen.find(b"\r\n\r\n")
                if end >= 0:
                    dest.sendall(seen[: end + 4])
                    _drain(dest)
                    return
                continue
            dest.sendall(chunk)
    except OSError:
        pass
    _close(dest)


def _drain(sock: socket.socket) -> None:
    """Read and drop what the client sends, answering nothing, until it gives up."""
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def s3_client(endpoint: str) -> Any:
    """The serving S3 client configuration (attempts, retry mode) with the tests' timeouts."""
    return boto3.client("s3", endpoint_url=endpoint, config=CLIENT_CONFIG.merge(TEST_TIMEOUTS))


@pytest.fixture
def silent_s3(aws_credentials: None) -> Iterator[StallingEndpoint]:
    endpoint = StallingEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture
def stallable_s3(aws_credentials: None, moto_server: str) -> Iterator[StallingEndpoint]:
    """moto_server, with the models bucket, behind a relay the test can stall."""
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=BUCKET)
    endpoint = StallingEndpoint(moto_server)
    yield endpoint
    endpoint.close()


# -- item 3: a stalled S3 costs a request at most the S3 budget ---------------------------


def test_the_s3_clients_worst_case_is_inside_the_request_budget(
    silent_s3: StallingEndpoint,
) -> None:
    store = ModelStore(BUCKET, "models", s3_client(silent_s3.url))
    with pytest.raises(StoreUnavailable, match="cannot reach S3"):
        store.live()
    # How many attempts botocore makes, counted on the wire, not read from its docs.
    attempts = silent_s3.stalled
    backoff = sum(retry_pause_limit(retry) for retry in range(1, attempts))
    per_attempt = CLIENT_CONFIG.connect_timeout + CLIENT_CONFIG.read_timeout
    worst_case = attempts * per_attempt + backoff
    assert attempts == CLIENT_CONFIG.retries["total_max_attempts"] == 2
    assert worst_case <= S3_CALL_BUDGET_SECONDS < REQUEST_BUDGET_SECONDS
    # What is left must hold a cold model load and the largest inference
    # (docs/RELIABILITY.md: ~12 s for MAX_TOTAL_CHARS of adversarial text on one core).
    assert REQUEST_BUDGET_SECONDS - S3_CALL_BUDGET_SECONDS >= 15


def app_on(endpoint: StallingEndpoint, settings: Settings, clock: FakeClock) -> TestClient:
    """The app, its model holder reading S3 through ``endpoint``."""
    source = open_source(MODEL_PREFIX, settings.model_cache_dir, s3=s3_client(endpoint.url))
    holder = ModelHolder(settings, source=source, clock=clock)
    return TestClient(create_app(settings, model=holder))


@pytest.fixture
def s3_settings(tmp_path: Path) -> Settings:
    return Settings(
        model_uri=MODEL_PREFIX, model_cache_dir=tmp_path / "cache", model_refresh_seconds=60.0
    )


@pytest.mark.parametrize("stall", ["silent", "headers"])
def test_a_stalled_s3_leaves_the_served_model_serving(
    stallable_s3: StallingEndpoint,
    s3_settings: Settings,
    moto_server: str,
    tiny_artifact_dir: Path,
    tmp_path: Path,
    stall: str,
) -> None:
    store = ModelStore.from_uri(MODEL_PREFIX, boto3.client("s3", endpoint_url=moto_server))
    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v1")))
    clock = FakeClock()
    client = app_on(stallable_s3, s3_settings, clock)
    assert client.get("/ready").json()["model_version"] == "v1"

    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v2")))
    stallable_s3.stall(stall)
    clock.now += 60
    response = client.post("/v1/entities", json={"text": TEXT})
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "v1"
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert (ready.json()["model_version"], ready.json()["refresh_error"]) == (
        "v1",
        "store_unavailable",
    )
    assert stallable_s3.stalled >= 1, "the refresh met the stalled endpoint"

    stallable_s3.resume()
    clock.now += 60
    assert client.post("/v1/entities", json={"text": TEXT}).json()["model_version"] == "v2"
    assert client.get("/ready").json()["refresh_error"] is None


@pytest.mark.parametrize("stall", ["silent", "headers"])
def test_a_first_load_from_a_stalled_s3_is_a_503_with_the_reason(
    stallable_s3: StallingEndpoint,
    s3_settings: Settings,
    moto_server: str,
    tiny_artifact_dir: Path,
    tmp_path: Path,
    stall: str,
) -> None:
    store = ModelStore.from_uri(MODEL_PREFIX, boto3.client("s3", endpoint_url=moto_server))
    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v1")))
    stallable_s3.stall(stall)
    client = app_on(stallable_s3, s3_settings, FakeClock())
    response = client.post("/v1/entities", json={"text": TEXT})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_unavailable"
    assert [detail["type"] for detail in error["details"]] == ["store_unavailable"]
    assert client.get("/health").status_code == 200


# -- item 4: a release that passes every check but cannot run never serves -----------------

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default" / "model.tar.gz"


def repacked(dest: Path, version: str, **manifest: Any) -> Path:
    """The default model as ``version``, manifest entries replaced, checksums recomputed."""
    model_dir = dest / version
    original = extract(DEFAULT_MODEL, model_dir)
    write_manifest(model_dir, {**original, "version": version, **manifest})
    tar_path = dest / f"{version}.tar.gz"
    pack(model_dir, tar_path)
    return tar_path


@pytest.fixture
def default_releases(tmp_path: Path) -> dict[str, Path]:
    """A good release and one claiming 1,024 tokens per window: its graph has 512 positions,
    so it loads, and fails on every text longer than 512 tokens."""
    return {
        "v1": repacked(tmp_path, "v1"),
        "v2-1024": repacked(tmp_path, "v2-1024", max_seq_length=1024),
    }


def test_an_unrunnable_release_never_replaces_the_served_model(
    moto_s3: Any,
    s3_settings: Settings,
    default_releases: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trial_runs: list[str] = []
    real_self_test = NerEngine.self_test

    def counted_self_test(engine: NerEngine) -> None:
        trial_runs.append(engine.manifest["version"])
        real_self_test(engine)

    monkeypatch.setattr(NerEngine, "self_test", counted_self_test)
    moto_s3.create_bucket(Bucket=BUCKET)
    store = ModelStore.from_uri(MODEL_PREFIX, moto_s3)
    store.set_live(store.upload(default_releases["v1"]))
    clock = FakeClock()
    holder = ModelHolder(s3_settings, clock=clock)
    client = TestClient(create_app(s3_settings, model=holder))
    assert client.get("/ready").json() == {
        "status": "ready",
        "model_version": "v1",
        "refresh_error": None,
    }

    store.set_live(store.upload(default_releases["v2-1024"]))
    for _ in range(2):
        clock.now += 60
        long_text = "Angela Merkel met Tim Cook in Berlin. " * 80  # over 512 tokens
        response = client.post("/v1/entities", json={"text": long_text})
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == "v1"
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "model_version": "v1",
            "refresh_error": "failed_trial_run",
        }
    status = holder.status()
    assert "max_seq_length (1024)" in (status.error_detail or "")
    # Remembered as bad like any fault of a release: not tried again at the second check.
    assert (status.loads, trial_runs) == (1, ["v1", "v2-1024"])


def test_an_unrunnable_first_release_is_a_503_with_the_reason(
    moto_s3: Any, s3_settings: Settings, default_releases: dict[str, Path]
) -> None:
    moto_s3.create_bucket(Bucket=BUCKET)
    store = ModelStore.from_uri(MODEL_PREFIX, moto_s3)
    store.set_live(store.upload(default_releases["v2-1024"]))
    client = TestClient(create_app(s3_settings))
    for path in ("/ready", "/v1/model"):
        response = client.get(path)
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "model_unavailable"
        assert error["details"] == [
            {
                "loc": [],
                "type": "failed_trial_run",
                "msg": "the model loaded but failed its trial run",
            }
        ]
    assert client.get("/health").status_code == 200
