"""The model store under the exact S3 permissions the template grants its roles.

The roles may list the bucket only with an ``s3:prefix`` condition. On real S3, a GET or HEAD
of a missing key is answered 404 only to a caller whose ``s3:ListBucket`` applies to that
request (AWS's GetObject reference), and a GET carries no ``s3:prefix``: a fresh store's
missing LIVE reads as 403 AccessDenied to these roles. moto evaluates identity policies but
not the ``s3:prefix`` condition key (its ``access_control`` supplies only ``sts:ExternalId``,
so a conditioned statement never matches), and answers a missing key 404 to anyone allowed
to GET it. So the S3 authorization is emulated at the boto boundary instead, on moto's S3:
each request is checked against the role's statements from the synthesized template (actions,
resources and the ``StringLike`` ``s3:prefix`` condition), and a missing key answers 403
unless ListBucket applies without a prefix, as S3 documents.
"""

from __future__ import annotations

import fnmatch
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from helpers import dummy_artifact

from infra.bulk import INPUT_PREFIX, MANIFEST_PREFIX, OUTPUT_PREFIX
from nerkit.api.app import create_app
from nerkit.api.settings import Settings
from nerkit.artifact import pack, read_manifest, write_manifest
from nerkit.bulk.locations import LocationError, S3Location
from nerkit.bulk.model import pin_version
from nerkit.bulk.plan import JobError
from nerkit.bulk.worker import marker_key, read_marker
from nerkit.pipeline.gate import handler
from nerkit.store import ModelStore
from nerkit.store import registry as registry_module

pytestmark = pytest.mark.slow

BUCKET = "nerkit-permissions-data"
S3_ARN = f"arn:aws:s3:::{BUCKET}"


# -- the template's statements ------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from infra.app import build_app

    app, stack = build_app(outdir=str(tmp_path_factory.mktemp("cdk.out")), environ={})
    template: dict[str, Any] = app.synth().get_stack_by_name(stack.stack_name).template
    return template


def _value(value: Any, bucket_id: str) -> str:
    """A resource ARN of the template with the data bucket's ARN filled in."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return "".join(_value(part, bucket_id) for part in value["Fn::Join"][1])
    if value.get("Fn::GetAtt") == [bucket_id, "Arn"]:
        return S3_ARN
    return "<other resource>"


def s3_statements(template: dict[str, Any], role_prefix: str) -> list[dict[str, Any]]:
    """The S3 statements of the role whose logical id starts with ``role_prefix``."""
    resources = template["Resources"]
    (bucket_id,) = [
        k for k, v in resources.items() if v["Type"] == "AWS::S3::Bucket" and "Data" in k
    ]
    found = []
    for policy in resources.values():
        if policy["Type"] != "AWS::IAM::Policy":
            continue
        roles = [role.get("Ref", "") for role in policy["Properties"].get("Roles", [])]
        if not any(role.startswith(role_prefix) for role in roles):
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = _list(statement["Action"])
            if any(action.startswith("s3:") for action in actions):
                found.append(
                    {
                        "Effect": statement["Effect"],
                        "Action": actions,
                        "Resource": [_value(r, bucket_id) for r in _list(statement["Resource"])],
                        "Condition": statement.get("Condition", {}),
                    }
                )
    assert found, f"no S3 statements for {role_prefix}"
    return found


def model_prefix(template: dict[str, Any]) -> str:
    """The store's prefix, from the gate function's MODEL_URI."""
    (gate,) = [
        v
        for k, v in template["Resources"].items()
        if v["Type"] == "AWS::Lambda::Function" and k.startswith("TrainingGateFunction")
    ]
    uri = gate["Properties"]["Environment"]["Variables"]["MODEL_URI"]
    return str(uri["Fn::Join"][1][-1]).strip("/")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- S3's authorization, emulated on moto -------------------------------------------------


class Policy:
    """Identity-policy evaluation for S3 requests: Allow statements by action, resource and
    ``StringLike`` conditions (all this template uses; anything else is refused loudly)."""

    def __init__(self, statements: list[dict[str, Any]]) -> None:
        self.statements = statements

    def allows(self, action: str, resource: str, context: dict[str, str]) -> bool:
        allowed = False
        for statement in self.statements:
            if not any(fnmatch.fnmatchcase(action, a) for a in statement["Action"]):
                continue
            if not any(fnmatch.fnmatchcase(resource, r) for r in statement["Resource"]):
                continue
            if not self._conditions_hold(statement["Condition"], context):
                continue
            if statement["Effect"] == "Deny":
                return False
            allowed = True
        return allowed

    @staticmethod
    def _conditions_hold(conditions: dict[str, Any], context: dict[str, str]) -> bool:
        for operator, keys in conditions.items():
            assert operator == "StringLike", f"condition {operator} is not emulated"
            for key, patterns in keys.items():
                # A key the request does not carry fails the condition (no IfExists here).
                if key not in context:
                    return False
                if not any(fnmatch.fnmatchcase(context[key], p) for p in _list(patterns)):
                    return False
        return True


def _request(operation: str, params: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """The IAM action, resource and condition keys of an S3 API call."""
    bucket = params["Bucket"]
    if operation in ("GetObject", "HeadObject"):
        return "s3:GetObject", f"arn:aws:s3:::{bucket}/{params['Key']}", {}
    if operation == "PutObject":
        return "s3:PutObject", f"arn:aws:s3:::{bucket}/{params['Key']}", {}
    if operation in ("ListObjectsV2", "ListObjects"):
        context = {"s3:prefix": params["Prefix"]} if "Prefix" in params else {}
        return "s3:ListBucket", f"arn:aws:s3:::{bucket}", context
    return f"s3:{operation}", f"arn:aws:s3:::{bucket}", {}


def _denied(operation: str) -> dict[str, Any]:
    # A HEAD response has no body: botocore reports its status as the code.
    code = "403" if operation == "HeadObject" else "AccessDenied"
    return {"Error": {"Code": code, "Message": "Access Denied"}}


def as_role(client: Any, policy: Policy) -> Any:
    """``client`` (on moto) answering as S3 answers a caller with ``policy``."""
    events = client.meta.events

    def remember_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["api_params"] = dict(params)

    def authorize(model: Any, context: dict[str, Any], **_: Any) -> Any:
        action, resource, keys = _request(model.name, context["api_params"])
        if policy.allows(action, resource, keys):
            return None
        parsed = {**_denied(model.name), "ResponseMetadata": {"HTTPStatusCode": 403}}
        return AWSResponse(f"https://{BUCKET}.s3.amazonaws.com", 403, {}, None), parsed

    def missing_key_without_list(
        parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        status = parsed.get("ResponseMetadata", {}).get("HTTPStatusCode")
        bucket = context["api_params"]["Bucket"]
        if status == 404 and not policy.allows("s3:ListBucket", f"arn:aws:s3:::{bucket}", {}):
            parsed.update(_denied(model.name))
            parsed["ResponseMetadata"]["HTTPStatusCode"] = 403

    events.register("before-parameter-build.s3.*", remember_params)
    events.register("before-call.s3.*", authorize)
    for operation in ("GetObject", "HeadObject"):
        events.register(f"after-call.s3.{operation}", missing_key_without_list)
    return client


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def admin(moto_s3: Any) -> Any:
    """The deployer's own client (no emulated policy), to set the scene."""
    moto_s3.create_bucket(Bucket=BUCKET)
    return moto_s3


@pytest.fixture
def role_client(
    template: dict[str, Any], admin: Any, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], Any]:
    """Make the store's S3 client (``new_s3_client``) that of a role of the template."""

    def use(role_prefix: str) -> Any:
        client = as_role(boto3.client("s3"), Policy(s3_statements(template, role_prefix)))
        monkeypatch.setattr(registry_module, "new_s3_client", lambda: client)
        return client

    return use


@pytest.fixture
def prefix(template: dict[str, Any]) -> Iterator[str]:
    yield model_prefix(template)


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


# -- tests --------------------------------------------------------------------------------


def test_the_emulation_answers_as_s3_documents(
    role_client: Callable[[str], Any], admin: Any, prefix: str
) -> None:
    serving = role_client("ServingFunctionRole")
    with pytest.raises(ClientError) as missing:
        serving.get_object(Bucket=BUCKET, Key=f"{prefix}/LIVE")
    assert _code(missing) == "AccessDenied", "a missing key reads 403 without a bare ListBucket"
    with pytest.raises(ClientError) as head:
        serving.head_object(Bucket=BUCKET, Key=f"{prefix}/v1/model.tar.gz")
    assert _code(head) == "403"
    listed = serving.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/LIVE", MaxKeys=1)
    assert "Contents" not in listed, "a list under the model prefix is allowed"
    for denied in (
        lambda: serving.list_objects_v2(Bucket=BUCKET),
        lambda: serving.list_objects_v2(Bucket=BUCKET, Prefix="training/"),
        lambda: serving.put_object(Bucket=BUCKET, Key=f"{prefix}/LIVE", Body=b"{}"),
    ):
        with pytest.raises(ClientError) as refused:
            denied()
        assert _code(refused) == "AccessDenied"
    admin.put_object(Bucket=BUCKET, Key=f"{prefix}/LIVE", Body=b"{}")
    assert serving.get_object(Bucket=BUCKET, Key=f"{prefix}/LIVE")["Body"].read() == b"{}"


def test_serving_answers_no_live_model_for_an_empty_store_then_loads_the_first_release(
    role_client: Callable[[str], Any],
    prefix: str,
    tiny_artifact_dir: Path,
    tmp_path: Path,
) -> None:
    role_client("ServingFunctionRole")
    settings = Settings(
        model_uri=f"s3://{BUCKET}/{prefix}",
        model_cache_dir=tmp_path / "cache",
        model_refresh_seconds=0,
    )
    client = TestClient(create_app(settings))
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["error"]["details"][0]["type"] == "no_live_model"

    # Published by the deployer's client; serving reads it under its own role.
    ModelStore(BUCKET, prefix, boto3.client("s3")).set_live(
        ModelStore(BUCKET, prefix, boto3.client("s3")).upload(
            _packed(tiny_artifact_dir, tmp_path, "v1")
        )
    )
    client = TestClient(create_app(settings))
    assert client.get("/ready").json()["model_version"] == "v1"


def test_the_gate_publishes_the_first_model_into_an_empty_store(
    role_client: Callable[[str], Any],
    admin: Any,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODEL_URI", f"s3://{BUCKET}/{prefix}")
    key = "training/nerkit-job-1/output/model.tar.gz"
    admin.upload_file(str(_sagemaker_tarball(tmp_path, "v1", f1=0.9)), BUCKET, key)
    role_client("TrainingGateRole")

    outcome = handler(
        {
            "modelArtifact": f"s3://{BUCKET}/{key}",
            "trainingJob": "nerkit-job-1",
            "minF1": 0.5,
            "mustBeatLive": True,
        },
        None,
    )

    assert (outcome["published"], outcome["version"], outcome["previous"]) == (True, "v1", None)
    live = ModelStore(BUCKET, prefix, admin).live()
    assert live is not None and live.version == "v1"


def _packed(source: Path, tmp_path: Path, version: str) -> Path:
    """A copy of the artifact in ``source`` as ``version``, packed."""
    model_dir = tmp_path / "artifacts" / version
    model_dir.mkdir(parents=True)
    manifest = read_manifest(source)
    for name in manifest["files"]:
        (model_dir / name).write_bytes((source / name).read_bytes())
    write_manifest(model_dir, {**manifest, "version": version})
    tar_path = tmp_path / "artifacts" / f"{version}.tar.gz"
    pack(model_dir, tar_path)
    return tar_path


def _sagemaker_tarball(tmp_path: Path, version: str, *, f1: float) -> Path:
    """What a training job leaves: its own tar of /opt/ml/model."""
    metrics = {"validation": {"f1": f1}}
    model_dir = dummy_artifact(tmp_path / "job" / version, version, metrics=metrics)
    tarball = tmp_path / "job" / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return tarball


def test_the_admin_role_lists_versions_and_moves_live_but_reads_no_tarball(
    role_client: Callable[[str], Any],
    admin: Any,
    prefix: str,
    tiny_artifact_dir: Path,
    tmp_path: Path,
) -> None:
    deployer = ModelStore(BUCKET, prefix, admin)
    for version in ("v1", "v2", "v3"):
        deployer.set_live(deployer.upload(_packed(tiny_artifact_dir, tmp_path, version)))
    client = role_client("AdminFunctionRole")
    store = ModelStore(BUCKET, prefix, client)

    assert [info.version for info in store.versions()] == ["v1", "v2", "v3"]
    assert store.rollback().version == "v2"  # what PUT /v1/models/live does
    assert store.rollback().version == "v1"
    assert deployer.live().version == "v1"  # type: ignore[union-attr]
    client.put_object(Bucket=BUCKET, Key="datasets/mine/train/a.conll", Body=b"x")
    for denied in (
        lambda: client.get_object(Bucket=BUCKET, Key=f"{prefix}/v1/model.tar.gz"),
        lambda: client.put_object(Bucket=BUCKET, Key=f"{prefix}/v9/model.tar.gz", Body=b"x"),
        lambda: client.put_object(Bucket=BUCKET, Key="training/x/output/model.tar.gz", Body=b"x"),
        lambda: client.get_object(Bucket=BUCKET, Key="datasets/mine/train/a.conll"),
    ):
        with pytest.raises(ClientError) as refused:
            denied()
        assert _code(refused) == "AccessDenied"


# -- bulk extraction's roles ----------------------------------------------------------------


def bulk_role(template: dict[str, Any], role_prefix: str) -> Any:
    return as_role(boto3.client("s3"), Policy(s3_statements(template, role_prefix)))


@pytest.mark.parametrize("role", ["BulkWorkerRole", "BulkSummaryRole"])
def test_a_fresh_runs_missing_marker_reads_as_absent_to_the_bulk_roles(
    template: dict[str, Any], admin: Any, role: str
) -> None:
    output = S3Location(f"s3://{BUCKET}/{OUTPUT_PREFIX}/run-1/", bulk_role(template, role))
    assert read_marker(output, "s00000") is None
    admin.put_object(
        Bucket=BUCKET, Key=f"{OUTPUT_PREFIX}/run-1/{marker_key('s00000')}", Body=b'{"done": 1}'
    )
    assert read_marker(output, "s00000") == {"done": 1}


def test_the_bulk_plan_lists_an_input_prefix_named_without_its_slash(
    template: dict[str, Any], admin: Any
) -> None:
    for name in ("b.jsonl", "a.jsonl"):
        admin.put_object(Bucket=BUCKET, Key=f"{INPUT_PREFIX}/docs/{name}", Body=b"{}\n")
    plan = bulk_role(template, "BulkPlanRole")
    # The HEAD of "docs" (is it one object?) is denied: docs is no key, so the prefix is listed.
    listed = S3Location(f"s3://{BUCKET}/{INPUT_PREFIX}/docs", plan).list_objects()
    assert [obj.uri for obj in listed] == [
        f"s3://{BUCKET}/{INPUT_PREFIX}/docs/a.jsonl",
        f"s3://{BUCKET}/{INPUT_PREFIX}/docs/b.jsonl",
    ]
    (one,) = S3Location(f"s3://{BUCKET}/{INPUT_PREFIX}/docs/a.jsonl", plan).list_objects()
    assert one.size == 3


def test_the_summary_reads_its_manifest_and_a_missing_one_is_an_error(
    template: dict[str, Any], admin: Any
) -> None:
    summary = S3Location(
        f"s3://{BUCKET}/{MANIFEST_PREFIX}/", bulk_role(template, "BulkSummaryRole")
    )
    admin.put_object(Bucket=BUCKET, Key=f"{MANIFEST_PREFIX}/run-1.json", Body=b"[]")
    assert summary.get("run-1.json") == b"[]"
    # It may not list manifests: a denied GET it cannot tell from absent stays a denial.
    with pytest.raises(LocationError, match="access denied"):
        summary.get("run-2.json")


def test_a_denied_key_that_exists_stays_an_error_for_bulk(admin: Any) -> None:
    """Listing the key shows it is there: the denial is real, not an absent key."""
    policy = Policy(
        [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [S3_ARN],
                "Condition": {"StringLike": {"s3:prefix": [f"{OUTPUT_PREFIX}/*"]}},
            },
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"{S3_ARN}/{OUTPUT_PREFIX}/open/*"],
                "Condition": {},
            },
        ]
    )
    output = S3Location(f"s3://{BUCKET}/{OUTPUT_PREFIX}/", as_role(boto3.client("s3"), policy))
    admin.put_object(Bucket=BUCKET, Key=f"{OUTPUT_PREFIX}/closed/marker.json", Body=b"{}")
    assert output.get("closed/absent.json") is None
    with pytest.raises(LocationError, match="access denied"):
        output.get("closed/marker.json")
    with pytest.raises(LocationError, match="access denied"):
        S3Location(f"s3://{BUCKET}/{OUTPUT_PREFIX}/closed/marker.json", output.s3).list_objects()


def test_the_bulk_plan_role_checks_a_requested_version_in_the_store(
    role_client: Callable[[str], Any],
    admin: Any,
    prefix: str,
    tiny_artifact_dir: Path,
    tmp_path: Path,
) -> None:
    deployer = ModelStore(BUCKET, prefix, admin)
    deployer.set_live(deployer.upload(_packed(tiny_artifact_dir, tmp_path, "v1")))
    role_client("BulkPlanRole")
    uri = f"s3://{BUCKET}/{prefix}"

    assert pin_version(uri, "v1", ["PER"]) == "v1"
    with pytest.raises(JobError, match="model version v2 not found"):
        pin_version(uri, "v2")
    with pytest.raises(JobError, match="unknown entity types"):
        pin_version(uri, None, ["FOOD"])
