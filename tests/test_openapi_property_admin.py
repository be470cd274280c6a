"""Schemathesis over every admin operation (``nerkit.api.admin``), in-process, against moto.

As tests/test_openapi_property.py does for the serving operations: positive and negative
modes, every check but ``max_response_time`` (a wall-clock limit), a bounded, seeded number of
cases per operation (``FUZZ_EXAMPLES``, ``FUZZ_SEED``, as ``make fuzz`` sets them). Each case
comes as an admin: through ``LocalApiKeys``, ``make run``'s stand-in for API Gateway, which
puts the admin key's id into the event exactly where the gateway does
(``requestContext.identity.apiKeyId``). Behind it: moto's Step Functions (the state machine)
and S3 (the datasets prefix and a model store with v1, v2, v3, v3 LIVE).

Rules JSON Schema cannot state are documented responses, not failures: an unknown version or
run is a 404, a taken job name or a stale ``expected_current`` a 409. Refusals the schema
cannot foresee are named in ``UNPUBLISHED_ADMIN_RULES`` (justified there).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import schemathesis
from admin_helpers import ADMIN_KEY_ID, admin_aws, admin_settings, published_store
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.types import ASGIApp

from nerkit.api.admin import AdminServices
from nerkit.api.admin_schemas import UNPUBLISHED_ADMIN_RULES
from nerkit.api.app import create_app
from nerkit.api.local_gateway import LocalApiKeys

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("FUZZ_SEED", "15"))
ADMIN_KEY = "fuzz-admin-key"
STATE_MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:nerkit-prod-training"
# The datasets prefix of the schema's example, so the example run starts.
DATASETS_URI = "s3://my-bucket/datasets"
# The document does not depend on AWS; only the admin operations are fuzzed here.
schema = schemathesis.openapi.from_dict(
    create_app(admin_settings(STATE_MACHINE_ARN, DATASETS_URI=DATASETS_URI)).openapi(),
    config=SchemathesisConfig.from_dict(
        {"seed": SEED, "generation": {"mode": "all", "max-examples": EXAMPLES}}
    ),
).include(tag="admin")


@pytest.fixture
def app(aws_credentials: None, tmp_path: Path) -> Iterator[ASGIApp]:
    with admin_aws() as aws:
        published_store(aws.s3, tmp_path)
        yield admin_app(aws)


def admin_app(aws: SimpleNamespace) -> ASGIApp:
    """The admin app on ``aws``, behind local API keys: ``ADMIN_KEY`` is the admin key."""
    app = create_app(admin_settings(aws.state_machine_arn, DATASETS_URI=DATASETS_URI))
    app.state.admin = AdminServices(app.state.settings, stepfunctions=aws.sfn, s3=aws.s3)
    return LocalApiKeys(app, {ADMIN_KEY: ADMIN_KEY_ID})


def refused_for_a_named_exclusion(response: Response | Any) -> bool:
    if response.status_code != 422:
        return False
    details = response.json()["error"]["details"]
    return bool(details) and {detail["type"] for detail in details} <= UNPUBLISHED_ADMIN_RULES


@schema.parametrize()
@settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_every_admin_operation_keeps_its_documented_contract(case: Case, app: ASGIApp) -> None:
    response = case.call(app=app, headers={"x-api-key": ADMIN_KEY})
    assert response.status_code != 403, "the case was not sent as an admin"
    excluded = [positive_data_acceptance] if refused_for_a_named_exclusion(response) else []
    case.validate_response(response, excluded_checks=excluded, transport_kwargs={"app": app})
