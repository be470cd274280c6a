"""The Hugging Face route at the gateway: declared (the REST API has no proxy resource, so an
undeclared path is API Gateway's own 404), behind the same API key, usage plan, throttle,
body check and Lambda as ``POST /v1/entities``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.app import build_app
from nerkit.api.app import create_app
from nerkit.api.hf import PATH
from nerkit.api.settings import Settings as ApiSettings

pytestmark = pytest.mark.slow
ENTITIES = ("POST", "/v1/entities")
HF = ("POST", PATH)


def synth(outdir: Path, context: dict[str, Any] | None = None) -> dict[str, Any]:
    app, stack = build_app(context, outdir=str(outdir), environ={})
    template: dict[str, Any] = app.synth().get_stack_by_name(stack.stack_name).template
    return template


def methods(raw: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(HTTP method, resource path) -> the method's properties."""
    resources = raw["Resources"]
    parts = {
        name: (res["Properties"]["PathPart"], res["Properties"]["ParentId"])
        for name, res in resources.items()
        if res["Type"] == "AWS::ApiGateway::Resource"
    }

    def path(resource_id: Any) -> str:
        if "Ref" not in resource_id:
            return ""  # the root (Fn::GetAtt RootResourceId)
        part, parent = parts[resource_id["Ref"]]
        return f"{path(parent)}/{part}"

    return {
        (res["Properties"]["HttpMethod"], path(res["Properties"]["ResourceId"]) or "/"): res[
            "Properties"
        ]
        for res in resources.values()
        if res["Type"] == "AWS::ApiGateway::Method"
    }


def stage_id(raw: dict[str, Any]) -> str:
    [name] = [k for k, r in raw["Resources"].items() if r["Type"] == "AWS::ApiGateway::Stage"]
    return name


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synth(tmp_path_factory.mktemp("cdk.out"))


def test_no_proxy_resource_covers_undeclared_paths(raw: dict[str, Any]) -> None:
    # A greedy path variable ({proxy+}) would route any path; a plain one ({run_id}) is one
    # declared route with a parameter.
    assert not [path for _, path in methods(raw) if "+}" in path]


def test_route_is_keyed_like_the_entities_route(raw: dict[str, Any]) -> None:
    declared = methods(raw)
    hf, entities = declared[HF], declared[ENTITIES]
    assert hf["ApiKeyRequired"] is True
    # Same Lambda proxy integration, same body check (a JSON object) before any invocation.
    for field in ("Integration", "RequestValidatorId", "RequestModels", "AuthorizationType"):
        assert hf.get(field) == entities.get(field), field
    assert hf["Integration"]["Type"] == "AWS_PROXY"


def test_route_keeps_the_keyed_throttle_and_the_usage_plan(raw: dict[str, Any]) -> None:
    resources = raw["Resources"].values()
    [stage] = [r["Properties"] for r in resources if r["Type"] == "AWS::ApiGateway::Stage"]
    overridden = {s["ResourcePath"] for s in stage["MethodSettings"] if s["HttpMethod"] != "*"}
    # No method settings of its own: the stage's keyed-route limits apply, as on /v1/entities.
    assert "/" + PATH.lstrip("/").replace("/", "~1") not in overridden
    # The clients' plan (the admin key has a plan of its own, tests/infra/test_admin_stack.py).
    [plan] = [
        r["Properties"]
        for logical_id, r in raw["Resources"].items()
        if r["Type"] == "AWS::ApiGateway::UsagePlan"
        and logical_id.startswith("ServingApiUsagePlan")
    ]
    # The usage plan covers the whole stage with one throttle and quota for every keyed
    # method (no per-method entries), this one included.
    [api_stage] = plan["ApiStages"]
    assert api_stage["Stage"] == {"Ref": stage_id(raw)}
    assert not api_stage.get("Throttle")


def test_every_v1_route_of_the_app_is_declared_with_a_key(raw: dict[str, Any]) -> None:
    declared = methods(raw)
    paths = create_app(ApiSettings(preload_model=False)).openapi()["paths"]
    routes = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1/")
        for method in operations
    }
    assert HF in routes
    for key in routes:
        assert declared[key]["ApiKeyRequired"] is True, key


def test_cors_preflight_is_answered_for_the_route(tmp_path: Path) -> None:
    declared = methods(synth(tmp_path, {"cors_origins": "https://app.example"}))
    assert ("OPTIONS", PATH) in declared
    assert declared[("OPTIONS", PATH)]["Integration"]["Type"] == "MOCK"
