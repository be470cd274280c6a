"""The engines a worker measures, behind one interface: ours, the baseline, the Lambda handler.

Each engine has an importer and a loader. Their imports sit inside those functions on
purpose: importing is a phase the cold-start measurement times, so nothing here may import
an engine's modules before the worker asks.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The baseline pipeline's batch size for a request of many texts.
INNER_BATCH = 32


@dataclass(frozen=True)
class Runner:
    """One engine behind a common interface: one text per call, or a request of many."""

    one: Callable[[str], Any]
    many: Callable[[list[str]], Any]


def import_ours() -> None:
    # The modules serving needs; nerkit.engine brings artifact, decoding and features.
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401
    import tokenizers  # noqa: F401

    import nerkit.engine  # noqa: F401


def load_ours(spec: dict[str, Any], scratch: Path) -> Runner:
    from nerkit.artifact import extract
    from nerkit.engine import NerEngine

    model = Path(spec["model"])
    # A tarball is extracted (and verified) like serving does into its cache; this is what
    # a local-file model source does, without importing boto3 for S3 we do not use.
    model_dir = model
    if model.is_file():
        model_dir = scratch / "model"
        extract(model, model_dir)
    engine = NerEngine.load(model_dir, threads=1)
    return Runner(one=lambda text: engine.predict([text]), many=engine.predict)


def import_baseline() -> None:
    import torch

    # Same thread budget as ours (intra-op 1, and no inter-op pool).
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    from transformers import pipeline  # noqa: F401


def load_baseline(spec: dict[str, Any], scratch: Path) -> Runner:
    from transformers import pipeline

    pipe = pipeline(
        "token-classification",
        model=spec["hf_dir"],
        aggregation_strategy="simple",
        device=-1,
    )
    return Runner(one=pipe, many=lambda texts: pipe(texts, batch_size=INNER_BATCH))


def import_handler() -> None:
    import_ours()
    import fastapi  # noqa: F401
    import mangum  # noqa: F401


def load_handler(spec: dict[str, Any], scratch: Path) -> Runner:
    """lambda/handler.py as Lambda runs it: the app reads MODEL_URI from the environment."""
    return handler_runner(import_handler_module(spec, scratch))


def import_handler_module(spec: dict[str, Any], scratch: Path) -> ModuleType:
    """Import lambda/handler.py (of ``spec["repo"]``, default this checkout) with the
    environment Lambda gives it (the function name turns on preloading), serving
    ``spec["model"]`` unless MODEL_URI is set already (an S3 store)."""
    os.environ.setdefault("MODEL_URI", spec["model"])
    os.environ.setdefault("MODEL_CACHE_DIR", str(scratch / "cache"))
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", LambdaContext.function_name)
    handler_path = Path(spec.get("repo", REPO)) / "lambda" / "handler.py"
    module_spec = importlib.util.spec_from_file_location("handler", handler_path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def handler_engine(module: ModuleType) -> Runner:
    """The engine the imported handler serves with (the same session), called directly."""
    engine = module.app.state.model.get().engine
    return Runner(one=lambda text: engine.predict([text]), many=engine.predict)


def framework_floor(engine: Runner) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The least a FastAPI app behind Mangum does with the same engine (``floor_app``); an
    answer other than 200 raises."""
    from floor_app import floor_handler

    handler = floor_handler(engine.one)

    def call(event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = handler(event, LambdaContext())
        if response["statusCode"] != 200:
            raise RuntimeError(f"floor answered {response['statusCode']}: {response['body']}")
        return response

    return call


def invoke(module: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    """One Lambda invocation of the imported handler; an answer other than 200 raises."""
    response: dict[str, Any] = module.handler(event, LambdaContext())
    if response["statusCode"] != 200:
        raise RuntimeError(f"handler answered {response['statusCode']}: {response['body']}")
    return response


def handler_runner(module: ModuleType) -> Runner:
    def one(text: str) -> Any:
        return json.loads(invoke(module, rest_event({"text": text}))["body"])["entities"]

    return Runner(one=one, many=lambda texts: invoke(module, rest_event({"texts": texts})))


class LambdaContext:
    """What the app reads of awslambdaric's context object."""

    aws_request_id = "00000000-0000-4000-8000-000000000000"
    function_name = "nerkit-bench"
    memory_limit_in_mb = 1769

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def rest_event(body: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event for POST /v1/entities on stage prod."""
    headers = {"content-type": "application/json", "x-api-key": "bench"}
    return {
        "resource": "/{proxy+}",
        "path": "/v1/entities",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": "v1/entities"},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": "POST",
            "path": "/prod/v1/entities",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "192.0.2.10"},
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


IMPORTERS: dict[str, Callable[[], None]] = {
    "ours": import_ours,
    "baseline": import_baseline,
    "handler": import_handler,
    # The stack's floor: what the handler imports, and the engine loaded from a local
    # tarball (extracted and verified), without the app and without S3.
    "stack": import_handler,
}
LOADERS: dict[str, Callable[[dict[str, Any], Path], Runner]] = {
    "ours": load_ours,
    "baseline": load_baseline,
    "handler": load_handler,
    "stack": load_ours,
}
