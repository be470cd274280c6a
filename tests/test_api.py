"""The HTTP API (nerkit.api) through Starlette's TestClient, on the tiny real ONNX artifact.

S3 is moto (in-process) where a LIVE pointer is needed; nothing else is mocked except the
clock of the model holder, so refresh timing is deterministic, and, where a test is about the
holder's decisions, the model source it calls (wrapped to count calls, or faked).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from fastapi.testclient import TestClient
from helpers import FakeClock, artifact_version
from jsonschema import Draft202012Validator

from nerkit.api.app import create_app
from nerkit.api.errors import MAX_ERROR_DETAILS
from nerkit.api.headers import page_csp
from nerkit.api.model import LOAD_RETRY_SECONDS, ModelHolder
from nerkit.api.schemas import (
    MAX_LABEL_CHARS,
    MAX_LABELS,
    NON_BLANK,
    UNPUBLISHED_RULES,
    Aggregation,
    Decoding,
    EntitiesRequest,
)
from nerkit.api.settings import Settings, SettingsError
from nerkit.decoding import AGGREGATIONS, DECODINGS
from nerkit.engine import NerEngine
from nerkit.errors import ArtifactError, StoreUnavailable
from nerkit.store import LoadedArtifact, ModelStore, Pointer, open_source
from nerkit.store import registry as registry_module

TEXT = "Angela Merkel met Tim Cook of Apple in Berlin on Monday, then flew to Paris."
# Accents, a combining mark, CJK, an emoji with a skin tone and a ZWJ family: offsets must
# count code points of the caller's text whatever the tokenizer does to it.
UNICODE_TEXT = (
    "Zoë Saldaña and Jose\u0301 Martí flew 北京 → São Paulo "
    "with 👩🏽\u200d🔬 Ana and 👨\u200d👩\u200d👧 kids."
)
SECRET = "Xylophone Quetzalcoatl Wimbledon"
BUCKET = "nerkit-api-models"
MODEL_PREFIX = f"s3://{BUCKET}/models"


@pytest.fixture
def aws_env(moto_s3: Any) -> Any:
    """moto S3 (fake credentials, see conftest) with the models bucket."""
    moto_s3.create_bucket(Bucket=BUCKET)
    return moto_s3


def post(client: TestClient, body: Any) -> Any:
    # ASCII JSON with \u escapes: the only way a lone surrogate can travel, so tests can send
    # one (raw UTF-8 bodies are in test_raw_bodies).
    content = json.dumps(body).encode()
    return client.post(
        "/v1/entities", content=content, headers={"content-type": "application/json"}
    )


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with this status and code; return ``error``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


class Calls:
    """Wraps a model source's method (``live``, ``fetch``) and records every call."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.function(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.calls)


class Source:
    """The model source ``settings`` name, with its ``live`` and ``fetch`` recorded
    (``checks``, ``loads``); a test may replace either function."""

    def __init__(self, settings: Settings) -> None:
        real = open_source(settings.model_uri, settings.model_cache_dir)
        self.uri = real.uri
        self.checks, self.loads = Calls(real.live), Calls(real.fetch)

    def live(self) -> Pointer | None:
        result: Pointer | None = self.checks()
        return result

    def fetch(
        self, pointer: Pointer | None = None, *, keep: Collection[Path] | None = None
    ) -> LoadedArtifact:
        result: LoadedArtifact = self.loads(pointer, keep=keep)
        return result


def pointer(version: str, sha256: str = "0" * 64) -> Pointer:
    return Pointer(version, f"models/{version}/model.tar.gz", sha256, "2026-01-01T00:00:00Z", None)


def request_lines(output: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "nerkit.api.request"]


# -- liveness, readiness, model info ------------------------------------------------------


def test_health_needs_no_model(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.app.state.model.status().loads == 0


def test_ready_loads_the_model_once(client: TestClient) -> None:
    for _ in range(2):
        response = client.get("/ready")
        assert response.status_code == 200
        assert response.json() == {
            "status": "ready",
            "model_version": "test-1",
            "refresh_error": None,
        }
    status = client.app.state.model.status()
    assert (status.version, status.loads, status.error) == ("test-1", 1, None)


def test_model_info_summarises_the_manifest_without_paths(
    client: TestClient, tiny_artifact_dir: Path
) -> None:
    response = client.get("/v1/model")
    assert response.status_code == 200
    info = response.json()
    assert info == {
        "name": "tiny",
        "version": "test-1",
        "entity_types": ["LOC", "MISC", "ORG", "PER"],
        "labels": ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"],
        "max_seq_length": 64,
        "base_model": "tiny-random",
        "created_at": "2026-01-01T00:00:00Z",
        "metrics": {},
    }
    assert str(tiny_artifact_dir) not in response.text


@pytest.mark.parametrize(
    ("model_uri", "reason", "detail"),
    [
        ("/nonexistent/model", "no_live_model", "no model at /nonexistent/model"),
        ("", "not_configured", "MODEL_URI is not set"),
    ],
)
def test_unloadable_model_is_503_and_health_stays_up(
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    model_uri: str,
    reason: str,
    detail: str,
) -> None:
    client = TestClient(create_app(settings.model_copy(update={"model_uri": model_uri})))
    for response in (client.get("/ready"), client.get("/v1/model"), post(client, {"text": TEXT})):
        error = assert_error(response, 503, "model_unavailable")
        assert [(d["loc"], d["type"]) for d in error["details"]] == [([], reason)]
        assert "/nonexistent" not in response.text and "MODEL_URI" not in response.text
    assert client.get("/health").status_code == 200
    # A client's mistake is still reported as such while no model can load.
    assert_error(post(client, {"text": ""}), 422, "validation_error")
    status = client.app.state.model.status()
    assert (status.version, status.error, status.error_detail) == (None, reason, detail)
    # The details are for the operator: in the log, not in the response.
    [failure] = [
        line
        for line in map(json.loads, capsys.readouterr().out.splitlines())
        if line["message"] == "model load failed"
    ]
    assert (failure["reason"], failure["error"]) == (reason, detail)


def test_s3_failures_do_not_leak_bucket_names(aws_env: Any, settings: Settings) -> None:
    settings = settings.model_copy(update={"model_uri": MODEL_PREFIX})
    client = TestClient(create_app(settings))
    response = client.get("/ready")
    assert assert_error(response, 503, "model_unavailable")["details"][0]["type"] == (
        "no_live_model"
    )
    assert BUCKET not in response.text
    assert BUCKET in (client.app.state.model.status().error_detail or "")

    elsewhere = settings.model_copy(update={"model_uri": "s3://no-such-bucket-anywhere/m"})
    response = post(TestClient(create_app(elsewhere)), {"text": TEXT})
    assert_error(response, 503, "model_unavailable")
    assert "no-such-bucket-anywhere" not in response.text


def test_failed_first_load_is_retried_after_a_pause(settings: Settings) -> None:
    calls: list[Pointer | None] = []
    source = Source(settings)
    real_fetch = source.loads.function

    def flaky_fetch(pointer: Pointer | None, **options: Any) -> LoadedArtifact:
        calls.append(pointer)
        if len(calls) == 1:
            raise OSError("disk full at /tmp/secret")
        return real_fetch(pointer, **options)

    source.loads.function = flaky_fetch
    clock = FakeClock()
    holder = ModelHolder(settings, source=source, clock=clock)
    client = TestClient(create_app(settings, model=holder))
    response = client.get("/ready")
    error = assert_error(response, 503, "model_unavailable")
    # Not an ArtifactError: an unexpected failure, whose message the client never sees.
    assert error["details"][0]["type"] == "load_failed" and "secret" not in response.text
    assert_error(client.get("/ready"), 503, "model_unavailable")
    assert len(calls) == 1, "a load that just failed is not retried by every request"
    clock.now += LOAD_RETRY_SECONDS
    assert client.get("/ready").json()["model_version"] == "test-1"
    assert len(calls) == 2


def test_concurrent_first_requests_load_the_model_once(settings: Settings) -> None:
    calls: list[Pointer | None] = []
    source = Source(settings)
    real_fetch = source.loads.function

    def slow_fetch(pointer: Pointer | None, **options: Any) -> LoadedArtifact:
        calls.append(pointer)
        time.sleep(0.2)  # widens the window in which unsynchronised loads would overlap
        return real_fetch(pointer, **options)

    source.loads.function = slow_fetch
    holder = ModelHolder(settings, source=source)
    barrier = threading.Barrier(6)
    models: list[object] = []

    def first_request() -> None:
        barrier.wait()
        models.append(holder.get())

    threads = [threading.Thread(target=first_request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(models) == 6 and all(model is models[0] for model in models)


# -- preloading (Lambda init) ---------------------------------------------------------------


def test_preload_loads_while_the_app_is_built(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"preload_model": True}))
    assert app.state.model.status().loads == 1
    assert TestClient(app).get("/ready").json()["model_version"] == "test-1"
    assert app.state.model.status().loads == 1
    assert create_app(settings).state.model.status().loads == 0, "off unless asked for"


def test_a_failed_preload_is_retried_by_the_first_request(settings: Settings) -> None:
    source = Source(settings)
    calls = Calls(source.loads.function)
    failing = [True]

    def fetch_after_init(pointer: Pointer | None, **options: Any) -> LoadedArtifact:
        if failing[0]:
            raise StoreUnavailable("S3 is slow during init")
        return calls(pointer, **options)

    source.loads.function = fetch_after_init
    settings = settings.model_copy(update={"preload_model": True})
    holder = ModelHolder(settings, source=source, clock=FakeClock())
    app = create_app(settings, model=holder)  # does not raise
    assert holder.status().error == "store_unavailable"
    failing[0] = False
    # No LOAD_RETRY_SECONDS pause after a failed preload: the first request loads at once.
    assert TestClient(app).get("/ready").json()["model_version"] == "test-1"
    assert len(calls) == 1


def test_preload_is_the_default_inside_lambda() -> None:
    assert Settings.from_env({}).preload_model is False
    inside = {"AWS_LAMBDA_FUNCTION_NAME": "nerkit-serving"}
    assert Settings.from_env(inside).preload_model is True
    assert Settings.from_env({**inside, "PRELOAD_MODEL": "false"}).preload_model is False
    assert Settings.from_env({"PRELOAD_MODEL": "true"}).preload_model is True


# -- refreshing from the LIVE pointer -------------------------------------------------------


def test_refresh_swaps_to_a_new_live_version_and_keeps_the_old_one_when_broken(
    aws_env: Any, settings: Settings, tiny_artifact_dir: Path, tmp_path: Path
) -> None:
    store = ModelStore.from_uri(MODEL_PREFIX, aws_env)
    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v1")))
    clock = FakeClock()
    settings = settings.model_copy(
        update={"model_uri": MODEL_PREFIX, "model_refresh_seconds": 60.0}
    )
    source = Source(settings)
    calls = source.loads
    holder = ModelHolder(settings, source=source, clock=clock)
    client = TestClient(create_app(settings, model=holder))
    cache = settings.model_cache_dir

    def served_version() -> str:
        response = post(client, {"text": TEXT})
        assert response.status_code == 200, response.text
        return response.json()["model_version"]

    assert served_version() == "v1"

    broken = artifact_version(tiny_artifact_dir, tmp_path, "v2-broken", broken=True)
    store.set_live(store.upload(broken))
    clock.now += 59
    assert served_version() == "v1", "LIVE is not re-read before MODEL_REFRESH_SECONDS"
    clock.now += 1
    assert served_version() == "v1", "a version that fails to load never replaces a good one"
    ready = client.get("/ready").json()
    assert (ready["model_version"], ready["refresh_error"]) == ("v1", "load_failed")
    assert "artifact model or tokenizer" in (holder.status().error_detail or "")
    assert (holder.status().loads, len(calls)) == (1, 2)

    for _ in range(3):
        clock.now += 60
        assert served_version() == "v1"
    assert len(calls) == 2, "a release that failed to load is not downloaded again"
    assert client.get("/ready").json()["refresh_error"] == "load_failed", "LIVE is not served"

    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v3")))
    clock.now += 60
    assert served_version() == "v3"
    assert client.get("/ready").json()["refresh_error"] is None
    status = holder.status()
    assert (status.version, status.loads, status.error) == ("v3", 2, None)
    # The download of v3 made room first: only the model in use then (v1) stayed.
    assert cache_entries(cache) == ["v1", "v3"]
    assert calls.calls[-1]["keep"] == [cache / "v1"]

    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v4")))
    clock.now += 60
    assert served_version() == "v4"
    assert cache_entries(cache) == ["v3", "v4"]


def test_refresh_loads_the_release_it_checked_even_if_live_moves_meanwhile(
    aws_env: Any, settings: Settings, tiny_artifact_dir: Path, tmp_path: Path
) -> None:
    """LIVE is read once per refresh: a failure is never pinned on another release."""
    store = ModelStore.from_uri(MODEL_PREFIX, aws_env)
    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v1")))
    broken = store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v3", broken=True))
    clock = FakeClock()
    settings = settings.model_copy(
        update={"model_uri": MODEL_PREFIX, "model_refresh_seconds": 60.0}
    )
    moves = [broken]
    source = Source(settings)
    real_fetch = source.loads.function

    def live_moves_before_the_download(pointer: Pointer | None, **kwargs: Any) -> Any:
        if moves:
            store.set_live(moves.pop())
        return real_fetch(pointer, **kwargs)

    source.loads.function = live_moves_before_the_download
    holder = ModelHolder(settings, source=source, clock=clock)
    assert holder.get().version == "v1"  # LIVE was v1 when checked; v3 went live after
    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v2")))
    moves.append(broken)
    clock.now += 60
    assert (holder.get().version, holder.status().error) == ("v2", None)
    clock.now += 60
    assert (holder.get().version, holder.status().error) == ("v2", "load_failed")
    # The failure is v3's: rolling back to v2 clears it; v2 is not mistaken for a bad release.
    store.rollback("v2")
    clock.now += 60
    assert (holder.get().version, holder.status().error) == ("v2", None)


def test_too_little_memory_is_retried_not_remembered(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    live: list[Any] = [pointer("test-1")]
    holder, _, loads = fake_holder(settings, live, clock)
    holder.get()
    real_load = NerEngine.load

    def out_of_memory(*args: Any, **kwargs: Any) -> NerEngine:
        raise MemoryError("not enough memory to load the model")

    monkeypatch.setattr(NerEngine, "load", out_of_memory)
    live[0] = pointer("v2")
    clock.now += 60
    assert (holder.get().version, holder.status().error) == ("test-1", "load_failed")
    monkeypatch.setattr(NerEngine, "load", real_load)
    clock.now += 60
    holder.get()
    assert (len(loads), holder.status().loads, holder.status().error) == (3, 2, None)


def cache_entries(cache: Path) -> list[str]:
    """The model directories in the cache (not temp files, which must be gone anyway)."""
    return sorted(entry.name for entry in cache.iterdir())


def test_a_broken_first_release_is_not_downloaded_again(
    aws_env: Any, settings: Settings, tiny_artifact_dir: Path, tmp_path: Path
) -> None:
    store = ModelStore.from_uri(MODEL_PREFIX, aws_env)
    broken = artifact_version(tiny_artifact_dir, tmp_path, "v1-broken", broken=True)
    store.set_live(store.upload(broken))
    clock = FakeClock()
    settings = settings.model_copy(update={"model_uri": MODEL_PREFIX})
    source = Source(settings)
    calls = source.loads
    client = TestClient(
        create_app(settings, model=ModelHolder(settings, source=source, clock=clock))
    )
    for _ in range(3):
        error = assert_error(client.get("/ready"), 503, "model_unavailable")
        assert error["details"][0]["type"] == "load_failed"
        clock.now += LOAD_RETRY_SECONDS
    assert len(calls) == 1
    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v2")))
    assert client.get("/ready").json()["model_version"] == "v2"


def fake_holder(
    settings: Settings, live: list[Any], clock: FakeClock, **options: Any
) -> tuple[ModelHolder, Calls, Calls]:
    """A holder whose source's LIVE pointer is ``live[0]`` (a Pointer, or an exception to
    raise) and whose fetch fails for versions named ``bad-*`` (as a broken artifact does)
    and else loads the tiny artifact (version test-1)."""
    source = Source(settings)
    load_local = source.loads.function

    def live_pointer() -> Pointer | None:
        if isinstance(live[0], Exception):
            raise live[0]
        current: Pointer | None = live[0]
        return current

    def load_tiny(pointer: Pointer | None, **kwargs: Any) -> LoadedArtifact:
        if live[0].version.startswith("bad-"):
            uri = "s3://bucket/models"
            raise ArtifactError(f"checksum mismatch: {uri}/{live[0].version}/model.tar.gz")
        return load_local(None, keep=kwargs["keep"])

    source.checks.function, source.loads.function = live_pointer, load_tiny
    holder = ModelHolder(settings, source=source, clock=clock, **options)
    return holder, source.checks, source.loads


def test_refresh_error_clears_once_live_is_served_again(settings: Settings) -> None:
    clock = FakeClock()
    live: list[Any] = [pointer("test-1")]
    holder, checks, loads = fake_holder(settings, live, clock)
    assert holder.get().version == "test-1"

    live[0] = StoreUnavailable("cannot reach S3 for s3://bucket/models/LIVE")
    clock.now += 60
    holder.get()
    assert holder.status().error == "store_unavailable"
    live[0] = pointer("test-1")
    clock.now += 60
    holder.get()
    assert holder.status().error is None

    # A broken release, then a rollback to the version that serves: healthy again.
    live[0] = pointer("bad-2")
    clock.now += 60
    holder.get()
    assert holder.status().error == "load_failed"
    live[0] = pointer("test-1")
    clock.now += 60
    holder.get()
    assert holder.status().error is None
    assert (len(checks), len(loads), holder.status().loads) == (5, 2, 1)


def test_a_failed_release_is_retried_only_when_live_moves(settings: Settings) -> None:
    clock = FakeClock()
    live: list[Any] = [pointer("test-1")]
    holder, _, loads = fake_holder(settings, live, clock)
    holder.get()
    live[0] = pointer("bad-2", "2" * 64)
    for _ in range(3):
        clock.now += 60
        holder.get()
        assert holder.status().error == "load_failed"
    assert len(loads) == 2
    # The same version name with other bytes (re-published under the same name) is new.
    live[0] = pointer("bad-2", "3" * 64)
    clock.now += 60
    holder.get()
    assert len(loads) == 3


def test_store_trouble_is_retried_at_the_next_check(settings: Settings) -> None:
    """Only a fault of the artifact is remembered: S3 or the disk may work next time."""
    clock = FakeClock()
    live: list[Any] = [pointer("test-1")]
    holder, _, loads = fake_holder(settings, live, clock)
    holder.get()
    real_fetch = loads.function
    failing = [True]

    def unreachable(pointer: Pointer | None, **kwargs: Any) -> LoadedArtifact:
        if failing[0]:
            raise StoreUnavailable("cannot reach S3")
        return real_fetch(pointer, **kwargs)

    loads.function = unreachable
    live[0] = pointer("v2")
    clock.now += 60
    holder.get()
    assert holder.status().error == "store_unavailable"
    failing[0] = False
    clock.now += 60
    holder.get()
    assert (len(loads), holder.status().loads, holder.status().error) == (3, 2, None)


def test_live_is_checked_at_most_every_interval_even_when_the_check_fails(
    settings: Settings,
) -> None:
    clock = FakeClock()
    live: list[Any] = [pointer("test-1")]
    holder, checks, _ = fake_holder(settings, live, clock)
    holder.get()
    live[0] = StoreUnavailable("cannot reach S3")
    clock.now += 60
    for _ in range(5):
        holder.get()
    assert len(checks) == 2
    clock.now += 59
    holder.get()
    assert len(checks) == 2
    clock.now += 1
    holder.get()
    assert len(checks) == 3


def test_one_s3_client_serves_every_check_and_load(
    aws_env: Any,
    settings: Settings,
    tiny_artifact_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = ModelStore.from_uri(MODEL_PREFIX, aws_env)
    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v1")))
    clients = Calls(registry_module.new_s3_client)
    monkeypatch.setattr(registry_module, "new_s3_client", clients)
    clock = FakeClock()
    settings = settings.model_copy(update={"model_uri": MODEL_PREFIX})
    holder = ModelHolder(settings, clock=clock)
    assert holder.get().version == "v1"
    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v2")))
    for _ in range(2):
        clock.now += 60
        holder.get()
    assert (holder.get().version, holder.status().loads) == ("v2", 2)
    assert len(clients) == 1


def test_local_models_need_no_s3_client(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_client() -> object:
        raise AssertionError("an S3 client was made for a local model")

    monkeypatch.setattr(registry_module, "new_s3_client", no_client)
    holder = ModelHolder(settings, clock=FakeClock())
    assert holder.get().version == "test-1"


def test_refresh_off_keeps_the_first_model(
    aws_env: Any, settings: Settings, tiny_artifact_dir: Path, tmp_path: Path
) -> None:
    store = ModelStore.from_uri(MODEL_PREFIX, aws_env)
    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v1")))
    clock = FakeClock()
    settings = settings.model_copy(update={"model_uri": MODEL_PREFIX, "model_refresh_seconds": 0})
    client = TestClient(create_app(settings, model=ModelHolder(settings, clock=clock)))
    assert client.get("/ready").json()["model_version"] == "v1"
    store.set_live(store.upload(artifact_version(tiny_artifact_dir, tmp_path, "v2")))
    clock.now += 10**6
    assert client.get("/ready").json()["model_version"] == "v1"


# -- predictions ------------------------------------------------------------------------


def test_single_text(client: TestClient) -> None:
    response = post(client, {"text": TEXT})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"entities", "truncated", "model_version", "took_ms"}
    assert (body["model_version"], body["truncated"]) == ("test-1", False)
    assert isinstance(body["took_ms"], float) and body["took_ms"] >= 0
    assert body["entities"], "the tiny model finds entities in TEXT"
    for entity in body["entities"]:
        assert set(entity) == {"entity_group", "score", "word", "start", "end"}
        assert entity["entity_group"] in {"LOC", "MISC", "ORG", "PER"}
        assert entity["word"] == TEXT[entity["start"] : entity["end"]]
        assert 0 <= entity["score"] <= 1
        assert entity["score"] == round(entity["score"], 4)


def test_batch_matches_single_requests(client: TestClient) -> None:
    texts = [TEXT, "Paris", UNICODE_TEXT]
    response = post(client, {"texts": texts, "aggregation": "first"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "truncated", "model_version", "took_ms"}
    singles = [post(client, {"text": text, "aggregation": "first"}).json() for text in texts]
    assert body["results"] == [
        {"entities": single["entities"], "truncated": False} for single in singles
    ]
    assert body["truncated"] is False


def test_entities_past_max_entities_are_cut_and_flagged(settings: Settings) -> None:
    found = post(TestClient(create_app(settings)), {"text": TEXT}).json()["entities"]
    assert len(found) >= 3, "the tiny model finds several entities in TEXT"
    capped = TestClient(create_app(settings.model_copy(update={"max_entities": len(found) + 1})))

    batch = post(capped, {"texts": [TEXT, TEXT, TEXT]}).json()
    assert [(r["entities"], r["truncated"]) for r in batch["results"]] == [
        (found, False),
        (found[:1], True),
        ([], True),
    ]
    assert batch["truncated"] is True
    single = post(capped, {"text": TEXT}).json()
    assert (single["entities"], single["truncated"]) == (found, False)

    one = TestClient(create_app(settings.model_copy(update={"max_entities": 1})))
    single = post(one, {"text": TEXT}).json()
    assert (single["entities"], single["truncated"]) == (found[:1], True)


@pytest.mark.parametrize("decoding", ["viterbi", "argmax"])
@pytest.mark.parametrize("aggregation", ["simple", "first", "average", "max"])
def test_aggregations_and_decodings_match_the_engine(
    client: TestClient, tiny_artifact_dir: Path, aggregation: str, decoding: str
) -> None:
    body = {"text": TEXT, "aggregation": aggregation, "decoding": decoding}
    got = post(client, body).json()["entities"]
    engine = NerEngine.load(tiny_artifact_dir)
    expected = engine.predict([TEXT], aggregation=aggregation, decoding=decoding)[0]
    assert [(e["entity_group"], e["start"], e["end"]) for e in got] == [
        (e.entity_group, e.start, e.end) for e in expected
    ]
    assert [e["score"] for e in got] == [round(e.score, 4) for e in expected]


def test_request_options_are_the_engines() -> None:
    assert get_args(Aggregation) == AGGREGATIONS
    assert get_args(Decoding) == DECODINGS


def test_unicode_offsets_are_code_points_of_the_original_text(client: TestClient) -> None:
    for body in (
        post(client, {"text": UNICODE_TEXT}).json(),
        post(client, {"texts": [UNICODE_TEXT]}).json()["results"][0],
    ):
        assert body["entities"], "the tiny model finds entities in UNICODE_TEXT"
        for entity in body["entities"]:
            assert entity["word"] == UNICODE_TEXT[entity["start"] : entity["end"]]


def test_labels_filter(client: TestClient) -> None:
    everything = post(client, {"text": TEXT}).json()["entities"]
    types = sorted({entity["entity_group"] for entity in everything})
    assert len(types) >= 2, "the tiny model finds several entity types in TEXT"
    kept = post(client, {"text": TEXT, "labels": [types[0]]}).json()["entities"]
    assert kept == [entity for entity in everything if entity["entity_group"] == types[0]]
    repeated = post(client, {"text": TEXT, "labels": [types[0]] * MAX_LABELS})
    assert repeated.json()["entities"] == kept


def test_min_score_filter(client: TestClient) -> None:
    everything = post(client, {"text": TEXT}).json()["entities"]
    scores = sorted({entity["score"] for entity in everything})
    assert len(scores) >= 2
    # Half-way between two reported scores, so 4-decimal rounding cannot blur the cut.
    threshold = (scores[0] + scores[1]) / 2
    kept = post(client, {"text": TEXT, "min_score": threshold}).json()["entities"]
    assert kept == [entity for entity in everything if entity["score"] > threshold]
    assert post(client, {"text": TEXT, "min_score": 1}).json()["entities"] == []


# -- validation -------------------------------------------------------------------------


# Bodies the app refuses (422), where, and why; with the client fixture's limits.
INVALID_BODIES = [
    ({"text": ""}, ["text"], "empty_text"),
    ({"text": " \n\t "}, ["text"], "empty_text"),
    ({"texts": []}, ["texts"], "too_short"),
    ({"texts": ["fine", "   "]}, ["texts", 1], "empty_text"),
    ({"text": 42}, ["text"], "string_type"),
    ({"text": {"nested": "text"}}, ["text"], "string_type"),
    ({"texts": [["nested"]]}, ["texts", 0], "string_type"),
    ({"texts": "not a list"}, ["texts"], "list_type"),
    ({"text": "a", "unknown": 1}, ["unknown"], "extra_forbidden"),
    ({}, [], "text_or_texts"),
    ({"text": "a", "texts": ["b"]}, [], "text_or_texts"),
    ({"text": "a", "aggregation": "none"}, ["aggregation"], "literal_error"),
    ({"text": "a", "aggregation": 1}, ["aggregation"], "literal_error"),
    ({"text": "a", "decoding": "beam"}, ["decoding"], "literal_error"),
    ({"text": "a", "decoding": None}, ["decoding"], "literal_error"),
    ({"text": "a", "min_score": 1.5}, ["min_score"], "less_than_equal"),
    ({"text": "a", "min_score": -0.1}, ["min_score"], "greater_than_equal"),
    ({"text": "a", "min_score": "0.5"}, ["min_score"], "float_type"),
    ({"text": "a", "min_score": True}, ["min_score"], "float_type"),
    ({"text": "a", "labels": []}, ["labels"], "too_short"),
    ({"text": "a", "labels": "PER"}, ["labels"], "list_type"),
    ({"text": "a", "labels": ["PER", " "]}, ["labels", 1], "empty_label"),
    ({"text": "a", "labels": ["PER", "NOPE"]}, ["labels", 1], "unknown_label"),
    ({"text": "a", "labels": ["PER"] * (MAX_LABELS + 1)}, ["labels"], "too_long"),
    ({"text": "a", "labels": ["P" * (MAX_LABEL_CHARS + 1)]}, ["labels", 0], "string_too_long"),
    ({"text": "a" * 301}, ["text"], "text_too_long"),
    ({"texts": ["a", "b" * 301]}, ["texts", 1], "text_too_long"),
    ({"texts": ["a"] * 5}, ["texts"], "too_many_texts"),
    ({"texts": ["a" * 300, "b" * 300, "c" * 101]}, ["texts"], "too_much_text"),
    ({"texts": ["fine", "\ud800"]}, ["texts", 1], "invalid_text"),
    ({"text": "caf\udce9"}, ["text"], "invalid_text"),
    (["a"], [], "model_type"),
    ("text", [], "model_type"),
]


@pytest.mark.parametrize(("body", "loc", "error_type"), INVALID_BODIES)
def test_invalid_requests_are_422(
    client: TestClient, body: Any, loc: list[Any], error_type: str
) -> None:
    error = assert_error(post(client, body), 422, "validation_error")
    assert {"loc": loc, "type": error_type} in [
        {"loc": detail["loc"], "type": detail["type"]} for detail in error["details"]
    ]
    assert all(detail["msg"] for detail in error["details"])


def test_unknown_labels_get_a_bounded_answer(settings: Settings) -> None:
    client = TestClient(create_app(settings.model_copy(update={"max_body_bytes": 1 << 20})))
    invented = [f"TYPE{index}" for index in range(10 * MAX_LABELS)]
    # A long list of invented names is refused whole, with one detail, not one per name.
    error = assert_error(post(client, {"text": TEXT, "labels": invented}), 422, "validation_error")
    assert [(detail["loc"], detail["type"]) for detail in error["details"]] == [
        (["labels"], "too_long")
    ]
    # Within the limit, each unknown name is named once, where it is in the request.
    within = [*invented[: MAX_LABELS - 2], "PER", invented[0]]
    error = assert_error(post(client, {"text": TEXT, "labels": within}), 422, "validation_error")
    assert [detail["loc"] for detail in error["details"]] == [
        ["labels", index] for index in range(MAX_LABELS) if index != MAX_LABELS - 2
    ]
    assert {detail["type"] for detail in error["details"]} == {"unknown_label"}


@pytest.mark.parametrize(("body", "loc", "error_type"), INVALID_BODIES)
def test_the_published_schema_refuses_what_the_app_refuses(
    client: TestClient, body: Any, loc: list[Any], error_type: str
) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/entities"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    allowed = Draft202012Validator(schema).is_valid(body)
    assert allowed == (error_type in UNPUBLISHED_RULES)


def test_the_published_schema_accepts_what_the_app_accepts(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/entities"]["post"]
    request_body = operation["requestBody"]["content"]["application/json"]
    validator = Draft202012Validator(request_body["schema"])
    bodies = [example["value"] for example in request_body["examples"].values()]
    bodies += [
        {"text": "a" * 300, "labels": ["PER"] * MAX_LABELS, "min_score": 1},
        {"texts": ["\u00a0x", "\ufeff"], "text": None, "labels": ["LOC", "LOC"]},
        {"text": "\u200b", "texts": None, "labels": None, "aggregation": "max"},
    ]
    for body in bodies:
        assert validator.is_valid(body), body
        assert post(client, body).status_code == 200, body


def test_non_blank_is_pythons_idea_of_whitespace() -> None:
    # The validators use str.strip(); the published pattern must draw the same line.
    pattern = re.compile(NON_BLANK)
    for code_point in range(sys.maxunicode + 1):
        character = chr(code_point)
        assert bool(pattern.fullmatch(character)) != character.isspace(), hex(code_point)


def test_error_details_are_bounded(settings: Settings) -> None:
    # 300,000 unknown fields fit in the default body limit; the answer must stay small.
    client = TestClient(create_app(settings.model_copy(update={"max_body_bytes": 1 << 20})))
    body = {"text": "a", **{f"field{index}": 0 for index in range(1000)}}
    error = assert_error(post(client, body), 422, "validation_error")
    assert len(error["details"]) == MAX_ERROR_DETAILS + 1
    assert {detail["type"] for detail in error["details"][:-1]} == {"extra_forbidden"}
    assert error["details"][-1] == {
        "loc": [],
        "type": "more_errors",
        "msg": f"and {1000 - MAX_ERROR_DETAILS} more errors",
    }


def test_the_body_is_parsed_and_validated_off_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Megabytes of JSON take a while; on the event loop they would stall every other request.
    on_event_loop: list[bool] = []

    def recording(function: Any) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
                on_event_loop.append(True)
            except RuntimeError:
                on_event_loop.append(False)
            return function(*args, **kwargs)

        return record

    monkeypatch.setattr(json, "loads", recording(json.loads))
    monkeypatch.setattr(
        EntitiesRequest, "model_validate", recording(EntitiesRequest.model_validate)
    )
    assert post(client, {"text": TEXT}).status_code == 200
    assert on_event_loop and True not in on_event_loop


def test_too_much_text_is_refused_before_the_model_loads(settings: Settings) -> None:
    client = TestClient(create_app(settings, model=ModelHolder(settings, source=Source(settings))))
    texts = ["a" * 300, "b" * 300, "c" * 100]
    assert post(client, {"texts": texts}).status_code == 200
    error = assert_error(post(client, {"texts": [*texts, "d"]}), 422, "validation_error")
    assert error["details"] == [
        {
            "loc": ["texts"],
            "type": "too_much_text",
            "msg": "the texts are 701 characters together; the limit is 700",
        }
    ]
    unloadable = TestClient(create_app(settings.model_copy(update={"model_uri": ""})))
    assert_error(post(unloadable, {"texts": [*texts, "d"]}), 422, "validation_error")


def test_invalid_text_with_log_text_still_writes_the_request_log(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    client = TestClient(create_app(settings.model_copy(update={"log_text": True})))
    client.get("/ready")
    capsys.readouterr()
    assert_error(post(client, {"texts": [SECRET, "\ud800"]}), 422, "validation_error")
    [line] = request_lines(capsys.readouterr().out)
    assert line["status"] == 422 and "texts" not in line


def test_validation_errors_do_not_echo_the_text(client: TestClient) -> None:
    response = post(client, {"text": SECRET * 20})
    assert_error(response, 422, "validation_error")
    assert SECRET not in response.text


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b'{"text": "a"', "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b'{"text": "a", "min_score": NaN}', "application/json", 400, "invalid_json"),
        (b"[" * 100_000, "application/json", 400, "invalid_json"),
        (b'{"text": "caf\xe9"}', "application/json", 400, "invalid_encoding"),
        (b'{"text": "\\ud800"}', "application/json", 422, "validation_error"),
        (b'{"text": "a"}', "text/plain", 415, "unsupported_media_type"),
        (b"text=a", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"text": "a"}', "application/json; charset=latin-1", 415, "unsupported_media_type"),
        (b'{"text": "a"}', None, 415, "unsupported_media_type"),
        (b'{"text": "a"}', "application/json; charset=UTF-8", 200, None),
        ('{"text": "Zoë in São Paulo 😀"}'.encode(), "application/json", 200, None),
        (b'{"texts": ["ok", "\\udc80"]}', "application/json", 422, "validation_error"),
        (b'{"text": "a"}', "application/problem+json", 200, None),
    ],
)
def test_raw_bodies(
    settings: Settings, content: bytes, content_type: str | None, status: int, code: str | None
) -> None:
    client = TestClient(create_app(settings.model_copy(update={"max_body_bytes": 200_000})))
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/entities", content=content, headers=headers)
    if code is None:
        assert response.status_code == status, response.text
    else:
        assert_error(response, status, code)


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    body = json.dumps({"text": "a" * 5000}).encode()
    declared = client.post(
        "/v1/entities", content=body, headers={"content-type": "application/json"}
    )
    assert_error(declared, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:
        # A generator is sent chunked, without Content-Length: the limit applies while reading.
        yield body[:3000]
        yield body[3000:]

    streamed = client.post(
        "/v1/entities", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in streamed.request.headers
    assert_error(streamed, 413, "payload_too_large")


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    assert_error(client.get("/v2/entities"), 404, "not_found")
    wrong_method = client.get("/v1/entities")
    assert_error(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "POST"


def test_fastapi_validation_errors_use_the_envelope(settings: Settings) -> None:
    """Routes with declared parameters (none today) get the same 422 as the entities route."""
    app = create_app(settings)

    def probe(count: int) -> int:
        return count

    app.add_api_route("/probe", probe)
    error = assert_error(TestClient(app).get("/probe?count=many"), 422, "validation_error")
    assert error["details"] == [
        {"loc": ["query", "count"], "type": "int_parsing", "msg": error["details"][0]["msg"]}
    ]


def test_unexpected_error_is_a_generic_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(self: NerEngine, texts: list[str], **options: Any) -> None:
        raise RuntimeError("internal detail /opt/secret/path")

    monkeypatch.setattr(NerEngine, "predict", explode)
    response = post(client, {"text": TEXT})
    error = assert_error(response, 500, "internal_error")
    assert "secret" not in response.text and error["details"] == []
    assert response.headers["x-content-type-options"] == "nosniff"
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [trace] = [line for line in logged if line["message"] == "unhandled error"]
    assert trace["request_id"] == error["request_id"]
    assert "internal detail /opt/secret/path" in trace["exception"]
    [request] = [line for line in logged if line["logger"] == "nerkit.api.request"]
    assert (request["status"], request["Errors"]) == (500, 1)


# -- logs and metrics -------------------------------------------------------------------


def test_request_log_line_and_metrics(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = post(client, {"texts": [SECRET, TEXT]})
    assert response.status_code == 200
    n_entities = sum(len(result["entities"]) for result in response.json()["results"])
    output = capsys.readouterr().out
    assert SECRET not in output
    [line] = request_lines(output)
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["route"] == "/v1/entities" and line["method"] == "POST"
    assert line["status"] == 200
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    assert line["model_version"] == "test-1"
    assert (line["n_texts"], line["n_chars"]) == (2, len(SECRET) + len(TEXT))
    assert line["n_entities"] == n_entities
    # The line is a CloudWatch Embedded Metric Format document.
    [directive] = line["_aws"]["CloudWatchMetrics"]
    assert isinstance(line["_aws"]["Timestamp"], int)
    assert directive["Namespace"] == "nerkit"
    assert directive["Dimensions"] == [["Service", "Route"]]
    assert (line["Service"], line["Route"]) == ("nerkit", "POST /v1/entities")
    names = {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]}
    assert names == {
        "Latency": "Milliseconds",
        "Errors": "Count",
        "Texts": "Count",
        "Entities": "Count",
    }
    assert (line["Latency"], line["Errors"]) == (line["latency_ms"], 0)
    assert (line["Texts"], line["Entities"]) == (2, n_entities)


def test_log_lines_for_errors_and_other_routes(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    client.get("/health")
    client.get("/docs")
    client.get("/nowhere")
    post(client, {"text": SECRET, "min_score": 2})
    lines = request_lines(capsys.readouterr().out)
    assert [(line["Route"], line["status"]) for line in lines] == [
        ("GET /health", 200),
        ("GET /docs", 200),
        ("GET unmatched", 404),
        ("POST /v1/entities", 422),
    ]
    for line in lines:
        assert "Texts" not in line and "Entities" not in line
        assert line["Errors"] == 0
    assert len({line["request_id"] for line in lines}) == len(lines)


def test_log_text_opt_in(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    client = TestClient(create_app(settings.model_copy(update={"log_text": True})))
    capsys.readouterr()
    post(client, {"text": SECRET})
    [line] = request_lines(capsys.readouterr().out)
    assert line["texts"] == [SECRET]


# -- page, docs, CORS, settings -----------------------------------------------------------


def test_page(client: TestClient, settings: Settings) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "v1/entities" in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy == {
        "default-src": "'none'",
        "script-src": inline_hash(response.text, "script"),
        "style-src": inline_hash(response.text, "style"),
        "connect-src": "'self'",
        "img-src": "'self' data:",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
    }
    no_page = TestClient(create_app(settings.model_copy(update={"enable_page": False})))
    assert_error(no_page.get("/"), 404, "not_found")


def inline_hash(page: str, tag: str) -> str:
    """The CSP sources of the page's inline ``tag`` blocks, computed independently."""
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
    assert bodies
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
        for body in bodies
    )


def test_the_page_may_send_uploads_to_the_upload_url_only(settings: Settings) -> None:
    upload = settings.model_copy(update={"upload_url": "https://b.s3.eu-west-1.amazonaws.com/"})
    response = TestClient(create_app(upload)).get("/")
    policy = response.headers["content-security-policy"]
    assert "connect-src 'self' https://b.s3.eu-west-1.amazonaws.com;" in policy
    assert "form-action 'self'" in policy


def test_page_csp_allows_only_the_inline_blocks() -> None:
    policy = page_csp("<style>a{}</style><script>1</script><script type=module>2</script>")
    assert "script-src 'sha256-" in policy and policy.count("'sha256-") == 3
    assert "'unsafe-inline'" not in policy
    assert "script-src 'none'; style-src 'none'" in page_csp("<p>static</p>")
    with pytest.raises(ValueError, match="inline it"):
        page_csp('<script src="https://cdn.example/x.js"></script>')


def test_json_responses_are_nosniff(client: TestClient, settings: Settings) -> None:
    unloadable = TestClient(create_app(settings.model_copy(update={"model_uri": ""})))
    for response in (
        client.get("/health"),
        post(client, {"text": TEXT}),
        post(client, {"text": ""}),
        client.get("/nowhere"),
        unloadable.get("/ready"),
    ):
        assert response.headers["content-type"] == "application/json", response.text
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in response.headers


def test_openapi_and_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/health",
        "/ready",
        "/v1/model",
        "/v1/entities",
        "/v1/hf/token-classification",
    }
    post_op = schema["paths"]["/v1/entities"]["post"]
    request_schema = post_op["requestBody"]["content"]["application/json"]["schema"]
    assert set(request_schema["properties"]) == {
        "text",
        "texts",
        "aggregation",
        "decoding",
        "labels",
        "min_score",
    }
    assert {"200", "400", "413", "415", "422", "503"} <= set(post_op["responses"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "'/openapi.json'" in docs.text


def test_cors(settings: Settings, client: TestClient) -> None:
    preflight = {
        "origin": "https://example.com",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    allowed = TestClient(
        create_app(settings.model_copy(update={"cors_origins": ("https://example.com",)}))
    )
    response = allowed.options("/v1/entities", headers=preflight)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://example.com"
    other = allowed.options("/v1/entities", headers={**preflight, "origin": "https://evil.test"})
    assert other.status_code == 400
    assert "access-control-allow-origin" not in client.get("/health", headers=preflight).headers


def test_settings_from_env() -> None:
    settings = Settings.from_env(
        {
            "MODEL_URI": "s3://bucket/models",
            "MODEL_REFRESH_SECONDS": "0",
            "NER_THREADS": "2",
            "MAX_TEXTS": "8",
            "ENABLE_PAGE": "false",
            "LOG_TEXT": "true",
            "CORS_ORIGINS": "https://a.example, http://localhost:3000",
            "API_BASE_PATH": "/ner/",
            "MAX_TEXT_CHARS": "",
        }
    )
    assert settings.model_uri == "s3://bucket/models"
    assert (settings.model_refresh_seconds, settings.ner_threads, settings.max_texts) == (0, 2, 8)
    assert (settings.enable_page, settings.log_text) == (False, True)
    assert settings.cors_origins == ("https://a.example", "http://localhost:3000")
    assert settings.api_base_path == "/ner"
    assert settings.max_text_chars == 20_000
    assert (settings.max_total_chars, settings.max_entities) == (30_000, 20_000)


def test_the_request_budget_grows_with_a_larger_text_limit() -> None:
    settings = Settings.from_env({"MAX_TEXT_CHARS": "50000"})
    assert settings.max_total_chars == 50_000
    explicit = Settings.from_env({"MAX_TEXT_CHARS": "50000", "MAX_TOTAL_CHARS": "80000"})
    assert explicit.max_total_chars == 80_000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_TEXTS", "0"),
        ("MAX_TOTAL_CHARS", "19999"),
        ("MAX_ENTITIES", "0"),
        ("PRELOAD_MODEL", "maybe"),
        ("MAX_TEXT_CHARS", "many"),
        ("NER_THREADS", "-1"),
        ("MODEL_REFRESH_SECONDS", "-5"),
        ("MAX_BODY_BYTES", "1.5"),
        ("ENABLE_PAGE", "perhaps"),
        ("MODEL_URI", "s3:///no-bucket"),
        ("MODEL_URI", "https://example.com/model.tar.gz"),
        ("CORS_ORIGINS", "example.com"),
        ("API_BASE_PATH", "ner"),
    ],
)
def test_invalid_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}='{value}'"):
        Settings.from_env({name: value})


def test_create_app_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, tiny_artifact_dir: Path
) -> None:
    monkeypatch.setenv("MODEL_URI", str(tiny_artifact_dir))
    monkeypatch.setenv("MAX_TEXTS", "1")
    client = TestClient(create_app())
    assert_error(post(client, {"texts": ["a", "b"]}), 422, "validation_error")
    monkeypatch.setenv("NER_THREADS", "0")
    with pytest.raises(SettingsError, match="NER_THREADS"):
        create_app()
