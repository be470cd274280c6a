"""``POST /v1/hf/token-classification``: the Hugging Face Inference API's token-classification
contract, checked with the clients users run (huggingface_hub's InferenceClient against
``make run``'s server; the SageMaker predictor's request through the Lambda handler), against
``POST /v1/entities`` and against the transformers pipeline itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_lambda_events import EVENT_MAKERS, handler, invoke, json_body  # noqa: F401
from test_run_local import EXIT_WAIT_S, OutputReader, run_local  # noqa: F401

from nerkit.api.app import create_app
from nerkit.api.hf import PATH, TRUNCATED_HEADER
from nerkit.api.settings import Settings
from nerkit.engine import NerEngine

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
TEXTS = [
    "Angela Merkel met Tim Cook of Apple in Berlin.",
    "Jean-Luc Picard commands the USS Enterprise from São Paulo.",
    "Manchester United beat Real Madrid 3-1 at Old Trafford!",
]
STRATEGIES = ["simple", "first", "average", "max"]
# The parameters the tests send, each as the client's keyword arguments.
OPTIONS: list[dict[str, Any]] = [
    {},
    *({"aggregation_strategy": strategy} for strategy in STRATEGIES),
    {"aggregation_strategy": "none"},
    {"aggregation_strategy": "first", "ignore_labels": ["O", "PER"]},
    {"aggregation_strategy": "simple", "ignore_labels": []},
    {"aggregation_strategy": "none", "ignore_labels": ["O", "B-LOC"]},
    {"aggregation_strategy": "max", "stride": 16},
]


def hf(client: TestClient, body: Any) -> Any:
    return client.post(PATH, json=body)


def entities_for(client: TestClient, texts: list[str], options: dict[str, Any]) -> list[Any]:
    """What ``POST /v1/entities`` says for the same texts and (grouped) options, in the
    contract's shape: a list of entity lists."""
    ignored = set(options.get("ignore_labels", ["O"]))
    types = [name for name in client.get("/v1/model").json()["entity_types"] if name not in ignored]
    body: dict[str, Any] = {
        "texts": texts,
        "aggregation": options.get("aggregation_strategy", "simple"),
        "decoding": "argmax",
    }
    if not types:
        return [[] for _ in texts]
    body["labels"] = types
    answer = client.post("/v1/entities", json=body)
    assert answer.status_code == 200, answer.text
    return [result["entities"] for result in answer.json()["results"]]


# -- the contract, in process ---------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        o
        for o in OPTIONS
        if o.get("aggregation_strategy") != "none" and "O" in o.get("ignore_labels", ["O"])
    ],
)
def test_grouped_results_equal_the_entities_route(
    client: TestClient, options: dict[str, Any]
) -> None:
    batch = hf(client, {"inputs": TEXTS, "parameters": options})
    assert batch.status_code == 200, batch.text
    expected = entities_for(client, TEXTS, options)
    assert batch.json() == expected
    assert sum(map(len, expected)) >= 3  # means something only if entities are found
    for text, want in zip(TEXTS, expected, strict=True):
        single = hf(client, {"inputs": text, "parameters": options})
        assert single.json() == want  # one text: a bare list, not a list of lists


def test_default_is_simple_aggregation_ignoring_o(client: TestClient) -> None:
    default = hf(client, {"inputs": TEXTS[0]}).json()
    assert default == hf(client, {"inputs": TEXTS[0], "parameters": {}}).json()
    assert default == hf(client, {"inputs": TEXTS[0], "parameters": None}).json()
    nulls = {"aggregation_strategy": None, "ignore_labels": None, "stride": None}
    assert default == hf(client, {"inputs": TEXTS[0], "parameters": nulls}).json()
    assert default == entities_for(client, TEXTS[:1], {"aggregation_strategy": "simple"})[0]
    assert all(set(e) == {"entity_group", "score", "word", "start", "end"} for e in default)
    assert all(e["entity_group"] != "O" for e in default)


def test_argmax_decoding_differs_from_the_entity_routes_default(client: TestClient) -> None:
    """The route decodes as the pipeline does (argmax), not with /v1/entities' viterbi: on
    this model the two disagree on some text, and the route follows argmax there."""
    ours = hf(client, {"inputs": TEXTS}).json()
    viterbi = client.post("/v1/entities", json={"texts": TEXTS}).json()["results"]
    assert ours != [result["entities"] for result in viterbi]
    assert ours == entities_for(client, TEXTS, {})


def test_ignoring_nothing_returns_the_o_groups_too(client: TestClient) -> None:
    text = TEXTS[0]
    everything = hf(client, {"inputs": text, "parameters": {"ignore_labels": []}}).json()
    assert {e["entity_group"] for e in everything} >= {"O"}
    without_o = [e for e in everything if e["entity_group"] != "O"]
    assert without_o == hf(client, {"inputs": text}).json()
    for entity in everything:
        assert entity["word"] == text[entity["start"] : entity["end"]]


def test_none_returns_every_labelled_token(client: TestClient) -> None:
    text = TEXTS[0]
    tokens = hf(client, {"inputs": text, "parameters": {"aggregation_strategy": "none"}}).json()
    assert tokens, "the tiny model labels some tokens"
    for token in tokens:
        assert set(token) == {"entity", "score", "index", "word", "start", "end"}
        assert token["entity"] != "O"
        assert token["word"] == text[token["start"] : token["end"]]
    assert [t["index"] for t in tokens] == sorted({t["index"] for t in tokens})
    everything = hf(
        client,
        {"inputs": text, "parameters": {"aggregation_strategy": "none", "ignore_labels": []}},
    ).json()
    assert [t for t in everything if t["entity"] != "O"] == tokens
    # Indices count [CLS]: the first token is 1, and no token is skipped.
    assert [t["index"] for t in everything] == list(range(1, len(everything) + 1))


def test_none_matches_the_transformers_pipeline(
    tiny_artifact_dir: Path, tiny_model_dir: Path
) -> None:
    from transformers import pipeline

    classifier = pipeline("token-classification", model=str(tiny_model_dir))
    engine = NerEngine.load(tiny_artifact_dir)
    texts = [*TEXTS, "Tabs\tand\nnewlines\nbetween Amsterdam\tand Rotterdam"]
    expected = classifier(texts, aggregation_strategy="none", ignore_labels=[])
    ours = engine.predict_tokens(texts, decoding="argmax")
    for text, want, got in zip(texts, expected, ours, strict=True):
        assert [(t["entity"], t["index"], t["start"], t["end"]) for t in want] == [
            (t.entity, t.index, t.start, t.end) for t in got
        ], text
        for pipe_token, token in zip(want, got, strict=True):
            assert token.score == pytest.approx(float(pipe_token["score"]), abs=1e-4)
            assert token.word == text[token.start : token.end]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_o_groups_match_the_transformers_pipeline(
    tiny_artifact_dir: Path, tiny_model_dir: Path, strategy: str
) -> None:
    """With ``ignore_labels: []`` the pipeline returns the O groups too; so does the engine."""
    from transformers import pipeline

    classifier = pipeline("token-classification", model=str(tiny_model_dir))
    engine = NerEngine.load(tiny_artifact_dir)
    expected = classifier(TEXTS, aggregation_strategy=strategy, ignore_labels=[])
    ours = engine.predict(TEXTS, aggregation=strategy, decoding="argmax", outside=True)
    for text, want, got in zip(TEXTS, expected, ours, strict=True):
        assert [(e["entity_group"], e["start"], e["end"]) for e in want] == [
            (e.entity_group, e.start, e.end) for e in got
        ], text
        assert "O" in {e.entity_group for e in got}


def test_none_follows_viterbi_when_asked(tiny_artifact_dir: Path) -> None:
    """The engine's per-token mode honours ``decoding`` like ``predict`` does."""
    engine = NerEngine.load(tiny_artifact_dir)
    for text in TEXTS:
        [tokens] = engine.predict_tokens([text], decoding="viterbi")
        labels = [t.entity for t in tokens]
        for previous, label in zip(["O", *labels], labels, strict=False):
            if label.startswith("I-"):
                assert previous in (f"B-{label[2:]}", label), (text, labels)


def test_stride_changes_nothing_on_a_long_text(settings: Settings) -> None:
    limits = {"max_text_chars": 2000, "max_total_chars": 2000, "max_body_bytes": 20_000}
    client = TestClient(create_app(settings.model_copy(update=limits)))
    long_text = " ".join(TEXTS * 3)
    every_token = {"aggregation_strategy": "none", "ignore_labels": []}
    # More than one window: a window holds 62 content tokens of the tiny model.
    assert len(hf(client, {"inputs": long_text, "parameters": every_token}).json()) > 62
    answers = [
        hf(client, {"inputs": long_text, "parameters": {"stride": stride}}).json()
        for stride in (None, 0, 8, 1000)
    ]
    assert answers[0] and all(answer == answers[0] for answer in answers)
    assert answers[0] == entities_for(client, [long_text], {})[0]


def test_truncated_answer_says_so_in_a_header(settings: Settings) -> None:
    capped = TestClient(create_app(settings.model_copy(update={"max_entities": 2})))
    answer = capped.post(PATH, json={"inputs": TEXTS, "parameters": {"ignore_labels": []}})
    assert answer.status_code == 200
    assert sum(map(len, answer.json())) == 2
    assert answer.headers[TRUNCATED_HEADER] == "true"
    small = capped.post(
        PATH,
        json={"inputs": "Paris", "parameters": {"ignore_labels": ["LOC", "PER", "ORG", "MISC"]}},
    )
    assert TRUNCATED_HEADER not in small.headers


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        (
            {"inputs": TEXTS[0], "parameters": {"top_k": 3}},
            ["parameters", "top_k"],
            "extra_forbidden",
        ),
        ({"inputs": TEXTS[0], "options": {"wait_for_model": True}}, ["options"], "extra_forbidden"),
        (
            {"inputs": TEXTS[0], "parameters": {"aggregation_strategy": "mean"}},
            ["parameters", "aggregation_strategy"],
            "literal_error",
        ),
        (
            {"inputs": TEXTS[0], "parameters": {"stride": -1}},
            ["parameters", "stride"],
            "greater_than_equal",
        ),
        ({"inputs": TEXTS[0], "parameters": {"stride": "8"}}, ["parameters", "stride"], "int_type"),
        (
            {"inputs": TEXTS[0], "parameters": {"ignore_labels": "O"}},
            ["parameters", "ignore_labels"],
            "list_type",
        ),
        (
            {"inputs": TEXTS[0], "parameters": {"ignore_labels": ["O"] * 257}},
            ["parameters", "ignore_labels"],
            "too_long",
        ),
        ({"inputs": 5}, ["inputs"], "inputs_type"),
        ({"inputs": "   "}, ["inputs"], "empty_text"),
        ({"inputs": "x" * 301}, ["inputs"], "text_too_long"),
        ({"inputs": ["a", " "]}, ["inputs", 1], "empty_text"),
        ({"inputs": ["a"] * 5}, ["inputs"], "too_many_texts"),
        ({"inputs": ["x" * 300] * 3}, ["inputs"], "too_much_text"),
        ({"inputs": []}, ["inputs"], "too_short"),
        ({"parameters": {}}, ["inputs"], "missing"),
        ({"text": TEXTS[0]}, ["text"], "extra_forbidden"),
    ],
)
def test_bad_requests_are_422_in_the_error_envelope(
    client: TestClient, body: Any, loc: list[Any], kind: str
) -> None:
    answer = hf(client, body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    assert {"loc": loc, "type": kind} in [
        {"loc": d["loc"], "type": d["type"]} for d in error["details"]
    ]


def test_body_errors_are_shared_with_the_entities_route(client: TestClient) -> None:
    assert (
        client.post(
            PATH, content=b'{"inputs": ', headers={"content-type": "application/json"}
        ).json()["error"]["code"]
        == "invalid_json"
    )
    assert (
        client.post(PATH, content=b"inputs=x", headers={"content-type": "text/plain"}).status_code
        == 415
    )
    assert client.post(PATH, json={"inputs": "x" * 5000}).status_code == 413
    lone = client.post(
        PATH, content=b'{"inputs": ["ok", "\\ud800"]}', headers={"content-type": "application/json"}
    )
    assert lone.status_code == 422
    assert lone.json()["error"]["details"][0]["loc"] == ["inputs", 1]
    assert client.get(PATH).json()["error"]["code"] == "method_not_allowed"


def test_openapi_documents_the_route(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][PATH]["post"]
    assert operation["tags"] == ["Hugging Face compatible"]
    content = operation["requestBody"]["content"]["application/json"]
    assert set(content["schema"]["properties"]) == {"inputs", "parameters"}
    assert {"one text", "batch, per word", "tokens"} <= set(content["examples"])
    assert "simple" in operation["description"] and "stride" in operation["description"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(operation["responses"])


# -- the SageMaker predictor's request through the Lambda handler ---------------------------


def sagemaker_body(data: Any) -> str:
    """What ``HuggingFacePredictor.predict(data)`` sends: its JSONSerializer's ``json.dumps``
    (content type application/json)."""
    return json.dumps(data)


@pytest.mark.parametrize("kind", sorted(EVENT_MAKERS))
def test_sagemaker_request_through_the_lambda_handler(
    handler: ModuleType,  # noqa: F811
    settings: Settings,
    kind: str,
) -> None:
    make = EVENT_MAKERS[kind]
    in_process = TestClient(create_app(settings))
    for data in (
        {"inputs": TEXTS[0]},
        {"inputs": TEXTS, "parameters": {"aggregation_strategy": "average"}},
        {"inputs": TEXTS[1], "parameters": {"aggregation_strategy": "none"}},
    ):
        status, headers, response = invoke(handler, make(path=PATH, body=sagemaker_body(data)))
        assert status == 200, response
        assert headers["content-type"] == "application/json"
        assert json_body(response) == hf(in_process, data).json()
    status, _, response = invoke(
        handler,
        make(path=PATH, body=sagemaker_body({"inputs": TEXTS[0], "parameters": {"top_k": 1}})),
    )
    assert status == 422
    assert json_body(response)["error"]["details"][0]["loc"] == ["parameters", "top_k"]


# -- the real clients against make run's server ---------------------------------------------


def readme_snippet(name: str) -> str:
    """The python block after ``<!-- snippet: name -->`` in the README, run as users would."""
    match = re.search(
        rf"<!-- snippet: {re.escape(name)} -->\s*```python\n(.*?)```", README.read_text(), re.S
    )
    assert match, f"README has no snippet {name!r}"
    return match.group(1)


# Runs in its own process, as a user's script does: huggingface_hub reads HF_HUB_OFFLINE
# once, at import, and then refuses every request (loopback included); so the variable is
# cleared for the client's process only.
CLIENT_DRIVER = """
import json, os, sys
from huggingface_hub import InferenceClient

client = InferenceClient(base_url=os.environ["NERKIT_URL"] + "/v1/hf/token-classification",
                         headers={"x-api-key": os.environ["NERKIT_API_KEY"]})
texts, options = json.loads(sys.stdin.read())
print(json.dumps([[{k: v for k, v in vars(e).items() if v is not None}
                   for e in client.token_classification(text, **option)]
                  for option in options for text in texts]))
"""


def client_env(url: str) -> dict[str, str]:
    env = {**os.environ, "NERKIT_URL": url, "NERKIT_API_KEY": "local-runs-need-no-key"}
    # huggingface_hub reads either (the Makefile exports both) as "offline".
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(name, None)
    return env


def run_python(code: str, url: str, stdin: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        env=client_env(url),
        capture_output=True,
        text=True,
        timeout=EXIT_WAIT_S,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def served(run_local: tuple[subprocess.Popen[str], int]) -> Iterator[str]:  # noqa: F811
    process, port = run_local
    output = OutputReader(process)
    output.wait_for(rf"Page: (http://127\.0\.0\.1:{port}/)\s*$", process)
    yield f"http://127.0.0.1:{port}"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=EXIT_WAIT_S) == 0


@pytest.mark.slow
def test_real_clients_against_make_run(served: str, settings: Settings) -> None:
    import httpx

    answers = json.loads(run_python(CLIENT_DRIVER, served, json.dumps([TEXTS, OPTIONS])))
    assert len(answers) == len(OPTIONS) * len(TEXTS)
    expected = []
    for option in OPTIONS:
        direct = httpx.post(
            f"{served}{PATH}", json={"inputs": TEXTS, "parameters": option}, timeout=60
        )
        assert direct.status_code == 200, direct.text
        expected.extend(direct.json())
    assert answers == expected
    # The grouped answers are /v1/entities' (argmax) for the same texts and options.
    in_process = TestClient(create_app(settings))
    for index, option in enumerate(OPTIONS):
        if option.get("aggregation_strategy") == "none" or "O" not in option.get(
            "ignore_labels", ["O"]
        ):
            continue
        got = answers[index * len(TEXTS) : (index + 1) * len(TEXTS)]
        assert got == entities_for(in_process, TEXTS, option)

    # The README's snippets, verbatim, answer what the route answers for their requests.
    hub = run_python(readme_snippet("huggingface-hub") + SHOW_HUB, served).splitlines()[-1]
    shown = json.loads(hub)
    direct = httpx.post(
        f"{served}{PATH}",
        json={"inputs": shown["text"], "parameters": {"aggregation_strategy": "first"}},
        timeout=60,
    )
    assert shown["entities"] == direct.json() != []
    sagemaker = run_python(readme_snippet("sagemaker") + SHOW_SAGEMAKER, served).splitlines()[-1]
    shown = json.loads(sagemaker)
    assert (
        shown["result"] == httpx.post(f"{served}{PATH}", json=shown["payload"], timeout=60).json()
    )
    assert isinstance(shown["payload"]["inputs"], list) and len(shown["result"]) == len(
        shown["payload"]["inputs"]
    )


SHOW_HUB = """
import json
print(json.dumps({"text": text, "entities": [
    {k: v for k, v in vars(e).items() if v is not None} for e in entities]}))
"""
SHOW_SAGEMAKER = """
print(json.dumps({"payload": payload, "result": result}))
"""


def test_an_integral_float_stride_is_an_integer(client: TestClient) -> None:
    """JSON Schema counts 8.0 as an integer, so the published schema admits it."""
    for stride, status in ((8.0, 200), (8.5, 422), ("8", 422)):
        response = client.post(PATH, json={"inputs": "Paris", "parameters": {"stride": stride}})
        assert response.status_code == status, (stride, response.text)
