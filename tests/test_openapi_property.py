"""Schemathesis over every operation of the OpenAPI document, in-process, on the tiny model.

Positive and negative modes with every check schemathesis has (``max_response_time``, a
wall-clock limit, needs a limit and is not one of them): no 5xx, every response as documented,
every schema-invalid request refused and every schema-valid request accepted, apart from the
named exclusions: the rules JSON Schema cannot express (``UNPUBLISHED_RULES``, justified in
nerkit.api.schemas): the texts' total characters, the served model's entity types and lone
surrogates. ``make test`` runs a bounded, seeded number of cases per operation;
``make fuzz`` a long run (``FUZZ_EXAMPLES``, ``FUZZ_SEED``, which it prints).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import positive_data_acceptance

from nerkit.api.app import create_app
from nerkit.api.schemas import UNPUBLISHED_RULES
from nerkit.api.settings import Settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("FUZZ_SEED", "15"))
# Per-text limits small enough for quick cases; MAX_TOTAL_CHARS below MAX_TEXTS x
# MAX_TEXT_CHARS as in the defaults, so the rule the schema cannot state is exercised.
# The body limit admits every schema-valid body, even with every character \u-escaped.
SETTINGS = Settings(max_texts=4, max_text_chars=200, max_total_chars=500, max_body_bytes=1 << 20)
# The document does not depend on the model, so it is read from an app that has none; the
# test sends each case to an app that serves the tiny model.
schema = schemathesis.openapi.from_dict(
    create_app(SETTINGS).openapi(),
    config=SchemathesisConfig.from_dict(
        {"seed": SEED, "generation": {"mode": "all", "max-examples": EXAMPLES}}
    ),
)


@pytest.fixture(scope="module")
def app(tiny_artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    model = {"model_uri": str(tiny_artifact_dir), "model_cache_dir": tmp_path_factory.mktemp("c")}
    return create_app(SETTINGS.model_copy(update=model))


def refused_for_a_named_exclusion(response: Response | Any) -> bool:
    if response.status_code != 422:
        return False
    details = response.json()["error"]["details"]
    return bool(details) and {detail["type"] for detail in details} <= UNPUBLISHED_RULES


@schema.parametrize()
@settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_keeps_its_documented_contract(case: Case, app: FastAPI) -> None:
    response = case.call(app=app)
    excluded = [positive_data_acceptance] if refused_for_a_named_exclusion(response) else []
    case.validate_response(response, excluded_checks=excluded, transport_kwargs={"app": app})


def test_the_hugging_face_parameters_are_fuzzed() -> None:
    """The property test's cases of the Hugging Face route set each of its ``parameters``."""
    operation = schema["/v1/hf/token-classification"]["POST"]
    generated: set[str] = set()

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(max_examples=EXAMPLES, database=None, derandomize=True)
    def collect(case: Case) -> None:
        parameters = case.body.get("parameters") if isinstance(case.body, dict) else None
        if isinstance(parameters, dict):
            generated.update(name for name, value in parameters.items() if value is not None)

    collect()
    assert generated == {"aggregation_strategy", "ignore_labels", "stride"}
