"""Where the app runs blocking work: on the invoking thread inside Lambda, in the thread pool
behind a local server (nerkit.api.blocking).

A Lambda environment serves one invocation at a time, so a hand-off to a worker thread only
adds latency, and anyio would start a new worker for each invocation. A local server serves
many requests at once, so there inference must leave the event loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from mangum import Mangum

from nerkit.api.app import create_app
from nerkit.api.settings import Settings

EVENTS = Path(__file__).resolve().parent / "events"
TEXT = "Angela Merkel met Tim Cook in Berlin."
# (method, path, body): every route that needs the model, and one that does not.
REQUESTS = [
    ("POST", "/v1/entities", json.dumps({"text": TEXT})),
    ("POST", "/v1/entities", json.dumps({"texts": [TEXT, "Paris"], "labels": ["PER"]})),
    ("GET", "/ready", None),
    ("GET", "/v1/model", None),
    ("GET", "/health", None),
]


@pytest.fixture
def app(tiny_artifact_dir: Path, tmp_path: Path) -> FastAPI:
    settings = Settings(
        model_uri=str(tiny_artifact_dir), model_cache_dir=tmp_path / "cache", preload_model=True
    )
    return create_app(settings)


@pytest.fixture
def predict_threads(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the threads the engine's ``predict`` ran on."""
    engine = app.state.model.get().engine
    threads: list[int] = []
    predict = engine.predict

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return predict(*args, **kwargs)

    monkeypatch.setattr(engine, "predict", recording)
    return threads


@pytest.fixture
def started_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of threads started while the test runs (anyio's workers included)."""
    started: list[str] = []
    start = threading.Thread.start

    def recording(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recording)
    yield started


def rest_event(method: str, path: str, body: str | None) -> dict[str, Any]:
    """The REST (v1) sample event for ``method path`` on stage prod."""
    event: dict[str, Any] = json.loads((EVENTS / "rest_v1_post_entities.json").read_text())
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    event["requestContext"]["path"] = f"/prod{path}"
    event["body"] = body
    return event


def context() -> SimpleNamespace:
    return SimpleNamespace(
        aws_request_id="req-threads",
        function_name="nerkit-serving",
        get_remaining_time_in_millis=lambda: 29_000,
    )


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
def test_a_lambda_invocation_runs_on_the_invoking_thread_and_starts_no_thread(
    app: FastAPI,
    predict_threads: list[int],
    started_threads: list[str],
    method: str,
    path: str,
    body: str | None,
) -> None:
    handler = Mangum(app, lifespan="off")
    for _ in range(3):
        response = handler(rest_event(method, path, body), context())
        assert response["statusCode"] == 200, response["body"]
    assert started_threads == []
    assert set(predict_threads) <= {threading.get_ident()}
    if path == "/v1/entities":
        assert len(predict_threads) == 3


def test_a_local_server_runs_inference_off_the_event_loop(
    app: FastAPI, predict_threads: list[int]
) -> None:
    """Served over ASGI without Lambda's event (uvicorn's case), the loop stays free."""
    loop_threads: list[int] = []

    async def requests() -> list[httpx.Response]:
        loop_threads.append(threading.get_ident())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            return list(
                await asyncio.gather(
                    *(client.post("/v1/entities", json={"text": TEXT}) for _ in range(3))
                )
            )

    responses = asyncio.run(requests())
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert len(predict_threads) == 3
    assert loop_threads[0] not in predict_threads


def test_the_first_model_load_of_a_local_server_leaves_the_event_loop(
    tiny_artifact_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without preloading, the (slow) first load runs in the thread pool too."""
    settings = Settings(model_uri=str(tiny_artifact_dir), model_cache_dir=tmp_path / "cache")
    app = create_app(settings)
    holder = app.state.model
    load_threads: list[int] = []
    get: Callable[[], Any] = holder.get

    def recording() -> Any:
        load_threads.append(threading.get_ident())
        return get()

    monkeypatch.setattr(holder, "get", recording)

    async def ready() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            return threading.get_ident(), (await client.get("/ready")).status_code

    loop_thread, status = asyncio.run(ready())
    assert status == 200
    assert load_threads and loop_thread not in load_threads


def test_behind_make_runs_key_stand_in_inference_still_leaves_the_event_loop(
    app: FastAPI, predict_threads: list[int]
) -> None:
    """make run's stand-in for API Gateway's keys puts an aws.event in the scope; it is not
    Lambda (no aws.context), so the loop must stay free for the other requests."""
    from nerkit.api.local_gateway import LocalApiKeys

    loop_threads: list[int] = []

    async def requests() -> list[httpx.Response]:
        loop_threads.append(threading.get_ident())
        transport = httpx.ASGITransport(app=LocalApiKeys(app, {"local-key": "key-id"}))
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            return list(
                await asyncio.gather(
                    *(client.post("/v1/entities", json={"text": TEXT}) for _ in range(3))
                )
            )

    responses = asyncio.run(requests())
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert len(predict_threads) == 3
    assert loop_threads[0] not in predict_threads
