"""Bulk extraction's infrastructure: the synthesized template (functions, IAM, state machine,
alarms, nag) and the synthesized state machine executed end to end by moto's Step Functions
interpreter, its Lambda tasks routed in-process to the handlers the functions' CMDs name."""

from __future__ import annotations

import gzip
import importlib
import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from bulk_helpers import run_outputs
from helpers import FAKE_AWS_ENV
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

from infra.app import build_app
from nerkit.bulk.cli import execution_status
from nerkit.bulk.cli import main as bulk_cli
from nerkit.bulk.locations import location
from nerkit.bulk.worker import STOP_MARGIN_SECONDS
from nerkit.store import ModelStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BUCKET = "nerkit-bulk-e2e"
ACCOUNT, REGION = "123456789012", "us-east-1"
CUSTOM = {
    "bulk_max_concurrency": "7",
    "bulk_tolerated_failure_percent": "2.5",
    "bulk_read_buckets": "corpus-in",
    "bulk_write_buckets": "results-out",
    "bulk_worker_memory_mb": "3538",
    "lambda_ephemeral_mb": "4096",
    "tracing": "true",
}
# Never reached: a safety net so a stuck execution fails the test instead of hanging it.
EXECUTION_WAIT_S = 300


def synth(tmp_path_factory: pytest.TempPathFactory, context: dict[str, str]) -> dict[str, Any]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(context, outdir=str(outdir), environ={})
    # Raises ValidationFailed on any cdk-nag finding that is not acknowledged.
    return app.synth().get_stack_by_name(stack.stack_name).template


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synth(tmp_path_factory, {})


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synth(tmp_path_factory, CUSTOM)


def resources(template: dict[str, Any], kind: str, prefix: str = "") -> dict[str, Any]:
    return {
        k: v for k, v in template["Resources"].items() if v["Type"] == kind and k.startswith(prefix)
    }


def one(template: dict[str, Any], kind: str, prefix: str) -> tuple[str, dict[str, Any]]:
    [(key, value)] = resources(template, kind, prefix).items()
    return key, value


def resolve(value: Any, refs: dict[str, str]) -> Any:
    """A template value with intrinsics replaced by ``refs`` (``Ref`` names and
    ``Logical.Attr``), as CloudFormation would at deploy time."""
    if isinstance(value, list):
        return [resolve(item, refs) for item in value]
    if not isinstance(value, dict):
        return value
    if "Ref" in value:
        return refs[value["Ref"]]
    if "Fn::GetAtt" in value:
        return refs[".".join(value["Fn::GetAtt"])]
    if "Fn::Join" in value:
        delimiter, parts = value["Fn::Join"]
        return delimiter.join(str(resolve(part, refs)) for part in parts)
    return {key: resolve(item, refs) for key, item in value.items()}


def statements_of(template: dict[str, Any], role_prefix: str) -> list[dict[str, Any]]:
    found = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        roles = [role.get("Ref", "") for role in policy["Properties"].get("Roles", [])]
        if any(role.startswith(role_prefix) for role in roles):
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def flat(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def s3_grants(template: dict[str, Any], role_prefix: str) -> set[tuple[str, str]]:
    """(action, resource with the data bucket as <bucket>) of a role's S3 statements."""
    grants = set()
    for statement in statements_of(template, role_prefix):
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        targets = (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        )
        for action in actions:
            if not action.startswith("s3:"):
                continue
            for target in targets:
                text = resolve(target, _symbolic_refs(template))
                condition = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
                grants.add((action, f"{text} {sorted(condition)}" if condition else text))
    return grants


def _symbolic_refs(template: dict[str, Any]) -> dict[str, str]:
    refs = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
    for key in template["Resources"]:
        data = key.startswith("StorageData")
        refs[key] = "<bucket>" if data else f"<{key}>"
        refs[f"{key}.Arn"] = "arn:aws:s3:::<bucket>" if data else f"<{key}.Arn>"
    return refs


# -- template ---------------------------------------------------------------------------------


def test_three_functions_run_the_serving_image_with_their_own_entrypoints(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO / "lambda"))
    _, serving = one(template, "AWS::Lambda::Function", "ServingFunction")
    expected = {
        "BulkPlanFunction": ("bulk_handler.plan", 900),
        "BulkWorkerFunction": ("bulk_handler.worker", 900),
        "BulkSummaryFunction": ("bulk_handler.summary", 300),
    }
    for prefix, (command, timeout) in expected.items():
        _, function = one(template, "AWS::Lambda::Function", prefix)
        properties = function["Properties"]
        assert properties["Code"] == serving["Properties"]["Code"]  # the same image asset
        assert properties["ImageConfig"]["Command"] == [command]
        assert properties["Timeout"] == timeout
        module, name = command.split(".")
        assert callable(getattr(importlib.import_module(module), name))
    _, worker = one(template, "AWS::Lambda::Function", "BulkWorkerFunction")
    assert worker["Properties"]["MemorySize"] == 1769


def test_roles_read_only_the_input_and_write_only_the_output(template: dict[str, Any]) -> None:
    worker_role = one(template, "AWS::IAM::Role", "BulkWorkerRole")[0]
    plan_role = one(template, "AWS::IAM::Role", "BulkPlanRole")[0]
    summary_role = one(template, "AWS::IAM::Role", "BulkSummaryRole")[0]
    bucket = "arn:aws:s3:::<bucket>"
    listing = f"{bucket} {{prefixes}}"
    assert s3_grants(template, worker_role) == {
        ("s3:GetObject", f"{bucket}/bulk/input/*"),
        ("s3:GetObject", f"{bucket}/models/ner/*"),
        ("s3:GetObject", f"{bucket}/bulk/output/*"),
        ("s3:PutObject", f"{bucket}/bulk/output/*"),
        ("s3:ListBucket", listing.format(prefixes=["bulk/output/*", "models/ner/*"])),
    }
    assert s3_grants(template, plan_role) == {
        ("s3:GetObject", f"{bucket}/bulk/input/*"),
        ("s3:GetObject", f"{bucket}/models/ner/*"),
        ("s3:PutObject", f"{bucket}/bulk/manifests/*"),
        ("s3:ListBucket", listing.format(prefixes=["bulk/input/*", "models/ner/*"])),
    }
    assert s3_grants(template, summary_role) == {
        ("s3:GetObject", f"{bucket}/bulk/manifests/*"),
        ("s3:GetObject", f"{bucket}/bulk/output/*"),
        ("s3:PutObject", f"{bucket}/bulk/output/*"),
        ("s3:ListBucket", listing.format(prefixes=["bulk/output/*"])),
    }
    machine_role = one(template, "AWS::IAM::Role", "BulkStateMachineRole")[0]
    assert {resource for _, resource in s3_grants(template, machine_role)} == {
        f"{bucket}/bulk/manifests/*",
        f"{bucket}/bulk/map-results/*",
    }


def test_the_functions_follow_the_ephemeral_storage_and_tracing_settings(
    template: dict[str, Any], custom: dict[str, Any]
) -> None:
    for prefix in ("BulkPlanFunction", "BulkWorkerFunction", "BulkSummaryFunction"):
        default = one(template, "AWS::Lambda::Function", prefix)[1]["Properties"]
        configured = one(custom, "AWS::Lambda::Function", prefix)[1]["Properties"]
        assert default["EphemeralStorage"] == {"Size": 512}
        assert configured["EphemeralStorage"] == {"Size": 4096}
        assert default.get("TracingConfig", {"Mode": "PassThrough"})["Mode"] != "Active"
        assert configured["TracingConfig"] == {"Mode": "Active"}


def test_extra_buckets_are_granted_as_configured(custom: dict[str, Any]) -> None:
    worker_role = one(custom, "AWS::IAM::Role", "BulkWorkerRole")[0]
    plan_role = one(custom, "AWS::IAM::Role", "BulkPlanRole")[0]
    worker = s3_grants(custom, worker_role)
    assert ("s3:GetObject", "arn:aws:s3:::corpus-in/*") in worker
    assert ("s3:PutObject", "arn:aws:s3:::results-out/*") in worker
    assert ("s3:PutObject", "arn:aws:s3:::corpus-in/*") not in worker
    assert ("s3:PutObject", "arn:aws:s3:::results-out/*") not in s3_grants(custom, plan_role)
    _, function = one(custom, "AWS::Lambda::Function", "BulkWorkerFunction")
    variables = resolve(function["Properties"]["Environment"]["Variables"], _symbolic_refs(custom))
    assert variables["BULK_INPUT_LOCATIONS"] == "s3://<bucket>/bulk/input/,s3://corpus-in/"
    assert variables["BULK_OUTPUT_LOCATIONS"] == "s3://<bucket>/bulk/output/,s3://results-out/"
    assert variables["BULK_TOLERATED_FAILURE_PERCENT"] == "2.5"
    assert variables["NER_THREADS"] == "2"
    assert function["Properties"]["MemorySize"] == 3538


def definition(template: dict[str, Any], refs: dict[str, str] | None = None) -> dict[str, Any]:
    _, machine = one(template, "AWS::StepFunctions::StateMachine", "BulkStateMachine")
    return json.loads(
        resolve(machine["Properties"]["DefinitionString"], refs or _symbolic_refs(template))
    )


def test_the_map_reads_the_manifest_with_the_configured_limits(
    template: dict[str, Any], custom: dict[str, Any]
) -> None:
    shards = definition(template)["States"]["Shards"]
    assert shards["ItemProcessor"]["ProcessorConfig"] == {
        "Mode": "DISTRIBUTED",
        "ExecutionType": "STANDARD",
    }
    assert shards["ItemReader"]["Parameters"]["Key.$"] == "$.plan.manifestKey"
    assert shards["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
    assert shards["MaxConcurrency"] == 100
    assert shards["ToleratedFailurePercentagePath"] == "$.plan.toleratedFailurePercentage"
    assert shards["ResultWriter"]["Parameters"]["Prefix"] == "bulk/map-results"
    assert "ItemBatcher" not in shards
    work = shards["ItemProcessor"]["States"]["Work"]
    assert "Lambda.TooManyRequestsException" in work["Retry"][0]["ErrorEquals"]
    assert work["Retry"][0]["BackoffRate"] > 1
    assert definition(custom)["States"]["Shards"]["MaxConcurrency"] == 7


def test_failed_and_timed_out_runs_alarm_and_outputs_name_the_machine(
    template: dict[str, Any],
) -> None:
    machine = one(template, "AWS::StepFunctions::StateMachine", "BulkStateMachine")[0]
    alarms = {
        alarm["Properties"]["MetricName"]
        for alarm in resources(template, "AWS::CloudWatch::Alarm", "Bulk").values()
        if alarm["Properties"]["Dimensions"][0]["Value"] == {"Ref": machine}
    }
    assert alarms == {"ExecutionsFailed", "ExecutionsTimedOut"}
    assert template["Outputs"]["BulkStateMachineArn"]["Value"] == {"Ref": machine}
    assert "BulkInputUri" in template["Outputs"] and "BulkOutputUri" in template["Outputs"]


def test_the_dashboard_graphs_the_metrics_the_summary_writes(
    template: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from nerkit.api import emf
    from nerkit.bulk import handlers

    totals = {"documents": 3, "entities": 5, "errors": 1}
    summary = {"totals": totals, "shards": {"missing": ["s1"]}, "run_id": "r", "status": "x"}
    handlers._emit_metrics(summary)
    line = json.loads(capsys.readouterr().out)
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert (directive["Namespace"], directive["Dimensions"]) == (emf.NAMESPACE, [[emf.SERVICE]])
    assert line[emf.SERVICE] == emf.BULK_SERVICE
    written = [metric["Name"] for metric in directive["Metrics"]]
    assert written == [emf.DOCUMENTS, emf.ENTITIES, emf.RECORD_ERRORS, emf.MISSING_SHARDS]
    assert [line[name] for name in written] == [3, 5, 1, 1]
    (dashboard,) = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = flat(dashboard["Properties"]["DashboardBody"])
    for name in written:
        graphed = [emf.NAMESPACE, name, emf.SERVICE, line[emf.SERVICE]]
        assert json.dumps(graphed, separators=(",", ":"))[1:-1].replace('"', '\\"') in body, name


# -- end to end in moto -----------------------------------------------------------------------


class _Context:
    """A Lambda context whose deadline is near after the first check, so each worker
    invocation does two batches and stops: the state machine's loop must carry on."""

    def __init__(self) -> None:
        self.checks = 0

    def get_remaining_time_in_millis(self) -> int:
        self.checks += 1
        return 900_000 if self.checks == 1 else int((STOP_MARGIN_SECONDS - 1) * 1000)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "model-cache"))
    monkeypatch.syspath_prepend(str(REPO / "lambda"))
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with mock_aws(config=config):  # type: ignore[arg-type]
        yield


def deploy(template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, int]]:
    """The bucket, the three functions and the state machine in moto, from the template; the
    functions' environment is applied to this process, where their handlers will run."""
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    role = boto3.client("iam").create_role(RoleName="bulk", AssumeRolePolicyDocument="{}")["Role"]
    refs = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
    bucket_id = one(template, "AWS::S3::Bucket", "StorageData")[0]
    refs[bucket_id] = BUCKET
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("unused.py", "")
    handlers: dict[str, Any] = {}
    calls: dict[str, int] = {}
    for logical_id, function in resources(template, "AWS::Lambda::Function", "Bulk").items():
        arn = boto3.client("lambda").create_function(
            FunctionName=logical_id,
            Role=role["Arn"],
            Runtime="python3.12",
            Handler="unused.handler",
            Code={"ZipFile": code.getvalue()},
        )["FunctionArn"]
        refs[f"{logical_id}.Arn"] = arn
        module, name = function["Properties"]["ImageConfig"]["Command"][0].split(".")
        handlers[logical_id] = getattr(importlib.import_module(module), name)
        calls[name] = 0
        for key, value in resolve(function["Properties"]["Environment"]["Variables"], refs).items():
            monkeypatch.setenv(key, value)

    def invoke(
        self: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response: Any
    ) -> bytes:
        logical_id = function_name.split(":function:")[-1].split(":")[0]
        handler = handlers[logical_id]
        calls[handler.__name__.removesuffix("_handler")] += 1
        try:
            return json.dumps(handler(json.loads(body), _Context())).encode()
        except Exception as exc:
            # What the Lambda runtime answers for an exception the handler raised.
            response["x-amz-function-error"] = "Unhandled"
            error = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            return json.dumps(error).encode()

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
    machine = boto3.client("stepfunctions").create_state_machine(
        name="bulk", definition=json.dumps(definition(template, refs)), roleArn=role["Arn"]
    )
    return machine["stateMachineArn"], calls


def wait(arn: str) -> dict[str, Any]:
    client = boto3.client("stepfunctions")
    deadline = time.monotonic() + EXECUTION_WAIT_S
    while time.monotonic() < deadline:
        execution = client.describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING":
            return execution
        time.sleep(0.2)
    raise AssertionError("the execution did not finish")


def corpus() -> tuple[dict[str, bytes], list[Any]]:
    """A few hundred records in JSONL, gzip'd JSONL and plain text, and their ids in order."""
    sentences = [
        "Angela Merkel met Tim Cook of Apple in Berlin.",
        "Paris is the capital of France.",
        "The United Nations met in New York on Monday.",
    ]
    files, ids = {}, []
    rows_a = [{"id": f"a{i}", "text": sentences[i % 3], "src": "a"} for i in range(180)]
    files["a.jsonl"] = b"".join(json.dumps(row).encode() + b"\n" for row in rows_a)
    ids += [row["id"] for row in rows_a]
    rows_b = [{"id": f"b{i}", "text": sentences[(i + 1) % 3]} for i in range(70)]
    files["b.jsonl.gz"] = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows_b))
    ids += [row["id"] for row in rows_b]
    files["c.txt"] = "".join(f"{sentences[i % 3]}\n" for i in range(60)).encode()
    ids += [f"s3://{BUCKET}/bulk/input/corpus/c.txt:{i + 1}" for i in range(60)]
    return files, ids


def test_the_synthesized_state_machine_runs_a_job_end_to_end(
    aws: None,
    template: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tiny_artifact_tar: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    machine_arn, calls = deploy(template, monkeypatch)
    store = ModelStore(BUCKET, "models/ner")
    store.set_live(store.upload(tiny_artifact_tar))
    files, ids = corpus()
    s3 = boto3.client("s3")
    for name, body in files.items():
        s3.put_object(Bucket=BUCKET, Key=f"bulk/input/corpus/{name}", Body=body)
    outputs = tmp_path / "cdk-outputs.json"
    outputs.write_text(json.dumps({"Nerkit-prod": {"BulkStateMachineArn": machine_arn}}))
    output_uri = f"s3://{BUCKET}/bulk/output/run1"
    client = boto3.client("stepfunctions")
    args = ["start", "--stack-output", str(outputs), "--input", f"s3://{BUCKET}/bulk/input/corpus/",
            "--output", output_uri, "--shard-mb", "0.004", "--name", "run1"]  # fmt: skip
    assert bulk_cli(args, client=client) == 0
    arn = json.loads(capsys.readouterr().out)["executionArn"]

    execution = wait(arn)
    assert execution["status"] == "SUCCEEDED", execution
    results, errors = run_outputs(location(output_uri))
    assert [row["id"] for row in results] == ids  # every record once, in input order
    assert errors == []
    assert all(row["src"] == "a" for row in results[:180])
    summary = json.loads(location(output_uri).get("summary.json") or b"")
    assert summary["status"] == "SUCCEEDED" and summary["run_id"] == "run1"
    assert summary["model_version"] == "test-1"
    assert summary["totals"]["documents"] == len(ids)
    assert summary["totals"]["entities"] == sum(len(row["entities"]) for row in results)
    shards = summary["shards"]["total"]
    assert shards >= 4 and summary["shards"]["completed"] == shards
    assert calls["plan"] == 1 and calls["summary"] == 1
    assert calls["worker"] > shards  # shards over two batches were continued by the loop

    status = execution_status(arn, client)
    assert status["status"] == "SUCCEEDED"
    assert status["summary"]["totals"]["documents"] == len(ids)
    assert status["shards"]["succeeded"] == shards and status["shards"]["failed"] == 0
    assert status["documents_per_second"] > 0


def test_a_run_outside_the_allowed_locations_fails_in_the_plan(
    aws: None, template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    machine_arn, calls = deploy(template, monkeypatch)
    request = {"input": f"s3://{BUCKET}/models/ner/", "output": f"s3://{BUCKET}/bulk/output/x"}
    client = boto3.client("stepfunctions")
    arn = client.start_execution(stateMachineArn=machine_arn, input=json.dumps(request))[
        "executionArn"
    ]
    execution = wait(arn)
    assert execution["status"] == "FAILED"
    assert execution.get("error") == "JobError"
    assert calls["worker"] == 0


def test_an_empty_input_prefix_runs_to_an_empty_summary(
    aws: None, template: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tiny_artifact_tar: Path
) -> None:
    machine_arn, calls = deploy(template, monkeypatch)
    store = ModelStore(BUCKET, "models/ner")
    store.set_live(store.upload(tiny_artifact_tar))
    output = f"s3://{BUCKET}/bulk/output/empty"
    request = {"input": f"s3://{BUCKET}/bulk/input/nothing/", "output": output}
    client = boto3.client("stepfunctions")
    arn = client.start_execution(stateMachineArn=machine_arn, input=json.dumps(request))[
        "executionArn"
    ]
    assert wait(arn)["status"] == "SUCCEEDED"
    summary = json.loads(location(output).get("summary.json") or b"")
    assert summary["shards"]["total"] == 0 and summary["totals"]["documents"] == 0
    assert calls["worker"] == 0 and calls["summary"] == 1
