"""lambda/handler.py invoked with API Gateway proxy events: REST (v1) and HTTP API (v2).

The events in tests/events follow the samples of the API Gateway developer guide; each test
changes only what it is about (method, path, body, stage).
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import nerkit.api
from nerkit.api.gateway import split_prefix

REPO = Path(__file__).resolve().parent.parent
EVENTS = Path(__file__).resolve().parent / "events"
STAGE = "prod"
TEXT = "Angela Merkel met Tim Cook in Berlin."


@pytest.fixture(scope="module")
def handler(
    tiny_artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleType]:
    """lambda/handler.py imported as Lambda imports it: the app is built from the environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_URI", str(tiny_artifact_dir))
        patch.setenv("MODEL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        patch.delenv("API_BASE_PATH", raising=False)
        # A fresh nerkit.api.app, so its module-level app reads the environment set above.
        patch.delitem(sys.modules, "nerkit.api.app", raising=False)
        patch.delattr(nerkit.api, "app", raising=False)
        spec = importlib.util.spec_from_file_location("handler", REPO / "lambda" / "handler.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


def context(request_id: str = "7f3c1c2e-0b8a-4d0f-9b1e-1a2b3c4d5e6f") -> SimpleNamespace:
    """The attributes of awslambdaric's LambdaContext that a handler may read."""
    return SimpleNamespace(
        aws_request_id=request_id,
        function_name="nerkit-serving",
        function_version="$LATEST",
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:nerkit-serving",
        memory_limit_in_mb=2048,
        log_group_name="/aws/lambda/nerkit-serving",
        log_stream_name="2026/11/23/[$LATEST]0123456789abcdef",
        get_remaining_time_in_millis=lambda: 29_000,
    )


def rest_event(
    method: str = "POST", path: str = "/v1/entities", body: str | None = None, stage: str = STAGE
) -> dict[str, Any]:
    """A REST API (v1) proxy event through the execute-api URL of ``stage``: ``path`` is
    relative to the stage, ``requestContext.path`` is what the client asked for."""
    event = json.loads((EVENTS / "rest_v1_post_entities.json").read_text())
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["pathParameters"] = {"proxy": path.lstrip("/")} if path != "/" else None
    event["resource"] = event["requestContext"]["resourcePath"] = (
        "/{proxy+}" if path != "/" else "/"
    )
    event["requestContext"]["stage"] = stage
    event["requestContext"]["path"] = f"/{stage}{path}"
    event["body"] = body
    return event


def http_event(
    method: str = "POST",
    path: str = "/v1/entities",
    body: str | None = None,
    stage: str = "$default",
) -> dict[str, Any]:
    """An HTTP API (v2) proxy event; a named stage appears at the start of the raw path."""
    event = json.loads((EVENTS / "http_v2_post_entities.json").read_text())
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = raw_path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["stage"] = stage
    event["body"] = body
    if body is None:
        del event["headers"]["content-length"], event["headers"]["content-type"]
    else:
        event["headers"]["content-length"] = str(len(body.encode()))
    return event


def with_body(event: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """``event`` with a base64-encoded body, as API Gateway sends binary media types."""
    event = copy.deepcopy(event)
    event["body"] = base64.b64encode(raw).decode()
    event["isBase64Encoded"] = True
    return event


EVENT_MAKERS = {"rest_v1": rest_event, "http_v2": http_event}


@pytest.fixture(params=sorted(EVENT_MAKERS))
def make_event(request: pytest.FixtureRequest) -> Any:
    return EVENT_MAKERS[request.param]


def invoke(handler: ModuleType, event: dict[str, Any], request_id: str = "req-1") -> Any:
    response = handler.handler(event, context(request_id))
    headers = {name.lower(): value for name, value in response["headers"].items()}
    return response["statusCode"], headers, response


def json_body(response: dict[str, Any]) -> Any:
    assert response["isBase64Encoded"] is False
    return json.loads(response["body"])


def test_event_samples_are_untouched_proxy_events(handler: ModuleType) -> None:
    """The samples as stored work on their own: v1 through stage prod, v2 on $default."""
    for name in ("rest_v1_post_entities.json", "http_v2_post_entities.json"):
        status, headers, response = invoke(handler, json.loads((EVENTS / name).read_text()))
        assert status == 200, response
        assert headers["content-type"] == "application/json"
        assert json_body(response)["model_version"] == "test-1"


def test_post_entities(handler: ModuleType, make_event: Any) -> None:
    body = json.dumps({"texts": [TEXT, "Paris"], "aggregation": "max"})
    status, headers, response = invoke(handler, make_event(body=body), "req-entities")
    assert status == 200, response
    assert headers["x-request-id"] == "req-entities"
    assert headers["x-content-type-options"] == "nosniff"
    result = json_body(response)
    assert result["model_version"] == "test-1"
    assert len(result["results"]) == 2
    for entity in result["results"][0]["entities"]:
        assert entity["word"] == TEXT[entity["start"] : entity["end"]]


def test_base64_encoded_body(handler: ModuleType, make_event: Any) -> None:
    text = "Zoë Saldaña flew to São Paulo."
    plain = make_event(body=json.dumps({"text": text}, ensure_ascii=False))
    encoded = with_body(plain, json.dumps({"text": text}, ensure_ascii=False).encode())
    status, _, response = invoke(handler, encoded)
    assert status == 200, response
    expected = json_body(invoke(handler, plain)[2])["entities"]
    assert json_body(response)["entities"] == expected


def test_ready(handler: ModuleType, make_event: Any) -> None:
    status, _, response = invoke(handler, make_event("GET", "/ready"))
    assert status == 200
    assert json_body(response) == {
        "status": "ready",
        "model_version": "test-1",
        "refresh_error": None,
    }


def test_page(handler: ModuleType, make_event: Any) -> None:
    status, headers, response = invoke(handler, make_event("GET", "/"))
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert response["isBase64Encoded"] is False
    assert "<html" in response["body"].lower()
    # Security headers survive Mangum and API Gateway's header maps.
    assert headers["content-security-policy"].startswith("default-src 'none'; script-src 'sha256-")
    assert (headers["x-content-type-options"], headers["referrer-policy"]) == (
        "nosniff",
        "no-referrer",
    )


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ('{"text": ', 400, "invalid_json"),
        ('{"text": "   "}', 422, "validation_error"),
        ('{"text": "a", "min_score": "high"}', 422, "validation_error"),
    ],
)
def test_bad_requests_are_json_errors(
    handler: ModuleType, make_event: Any, body: str, status: int, code: str
) -> None:
    got, headers, response = invoke(handler, make_event(body=body), "req-bad")
    assert got == status
    assert headers["content-type"] == "application/json"
    error = json_body(response)["error"]
    assert (error["code"], error["request_id"]) == (code, "req-bad")


def test_non_utf8_base64_body(handler: ModuleType, make_event: Any) -> None:
    status, _, response = invoke(handler, with_body(make_event(body=""), b'{"text": "\xff"}'))
    assert status == 400
    assert json_body(response)["error"]["code"] == "invalid_encoding"


def test_unknown_path_is_a_json_404(handler: ModuleType, make_event: Any) -> None:
    status, _, response = invoke(handler, make_event("GET", "/v1/nothing-here"))
    assert status == 404
    assert json_body(response)["error"]["code"] == "not_found"


@pytest.mark.parametrize("kind", sorted(EVENT_MAKERS))
def test_docs_behind_a_stage_prefix(handler: ModuleType, kind: str) -> None:
    make = EVENT_MAKERS[kind]
    status, _, docs = invoke(handler, make("GET", "/docs", stage=STAGE))
    assert status == 200
    assert f"'/{STAGE}/openapi.json'" in docs["body"]
    # Swagger UI's own files come from the app, under the stage, not from a CDN.
    assert f"/{STAGE}/docs-assets/swagger-ui-bundle.js" in docs["body"]
    assert "cdn." not in docs["body"]
    status, _, script = invoke(
        handler, make("GET", "/docs-assets/swagger-ui-bundle.js", stage=STAGE)
    )
    assert status == 200 and not script.get("isBase64Encoded")
    assert "SwaggerUIBundle" in script["body"]
    status, _, schema = invoke(handler, make("GET", "/openapi.json", stage=STAGE))
    assert status == 200
    assert json_body(schema)["servers"] == [{"url": f"/{STAGE}"}]
    # Routing ignores the prefix: the stage's routes are the app's routes.
    status, _, _ = invoke(handler, make(body=json.dumps({"text": TEXT}), stage=STAGE))
    assert status == 200


def test_docs_without_a_stage_prefix(handler: ModuleType) -> None:
    status, _, docs = invoke(handler, http_event("GET", "/docs"))
    assert status == 200
    assert "'/openapi.json'" in docs["body"]
    assert "servers" not in json_body(invoke(handler, http_event("GET", "/openapi.json"))[2])


def test_request_log_carries_the_lambda_request_id(
    handler: ModuleType, make_event: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    invoke(handler, make_event(body=json.dumps({"text": TEXT})), "lambda-request-42")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [line] = [line for line in lines if line.get("logger") == "nerkit.api.request"]
    assert (line["request_id"], line["route"], line["status"]) == (
        "lambda-request-42",
        "/v1/entities",
        200,
    )
    assert TEXT not in json.dumps(lines)


def rest(path: str, public: str) -> dict[str, Any]:
    return {"resource": "/{proxy+}", "path": path, "requestContext": {"path": public}}


def http(path: str, stage: str) -> dict[str, Any]:
    return {"version": "2.0", "requestContext": {"stage": stage, "http": {"path": path}}}


@pytest.mark.parametrize(
    ("event", "base_path", "expected"),
    [
        # REST API through execute-api: the stage is in requestContext.path only.
        (rest("/v1/entities", "/prod/v1/entities"), "", ("/prod", "/v1/entities")),
        (rest("/", "/prod"), "", ("/prod", "/")),
        (rest("/", "/prod/"), "", ("/prod", "/")),
        # A stage named like a route is still only a prefix.
        (rest("/v1/entities", "/v1/v1/entities"), "", ("/v1", "/v1/entities")),
        # REST API through a custom domain: both paths carry the base path mapping.
        (rest("/ner/v1/entities", "/ner/v1/entities"), "/ner", ("/ner", "/v1/entities")),
        (rest("/ner", "/ner"), "/ner", ("/ner", "/")),
        (rest("/v1/entities", "/v1/entities"), "", ("", "/v1/entities")),
        # HTTP API: a named stage leads the path; $default has none.
        (http("/prod/v1/entities", "prod"), "", ("/prod", "/v1/entities")),
        (http("/prod", "prod"), "", ("/prod", "/")),
        (http("/v1/entities", "$default"), "", ("", "/v1/entities")),
        # HTTP API through a custom domain: the API mapping never reaches the event.
        (http("/v1/entities", "$default"), "/ner", ("/ner", "/v1/entities")),
    ],
)
def test_split_prefix(event: dict[str, Any], base_path: str, expected: tuple[str, str]) -> None:
    routed = event.get("path") or event["requestContext"]["http"]["path"]
    assert split_prefix(event, routed, base_path) == expected
