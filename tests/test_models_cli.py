"""``nerkit-models`` for a newcomer: a readable ``list``, the local store of ``make run`` in one
step (``--local``), and its name in ``--help``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import boto3
import pytest
from helpers import FAKE_AWS_ENV, free_port

from nerkit import models_cli
from nerkit.exit_codes import ExitCode
from nerkit.store import ModelStore, VersionInfo
from nerkit.store.local import LOCAL_BUCKET, LOCAL_STORE_URI, announce, announcement


def test_list_is_a_table_with_live_marked() -> None:
    versions = [
        VersionInfo("v1", "2026-11-01T00:00:00Z", {"validation": {"f1": 0.9}}),
        VersionInfo("v2-long-name", None, {"validation": {"f1": 0.91234}, "test": {"f1": 0.88}}),
    ]
    table = models_cli.version_table("s3://b/m", "v1", versions).splitlines()
    assert table == [
        "s3://b/m: 2 versions, LIVE: v1",
        "LIVE  VERSION       CREATED               VALIDATION F1  TEST F1",
        "*     v1            2026-11-01T00:00:00Z  0.9000         -",
        "      v2-long-name  -                     0.9123         0.8800",
    ]
    assert models_cli.version_table("s3://b/m", None, []) == "s3://b/m: 0 versions, nothing LIVE"


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--local rewrites the AWS environment of the process: restore it after the test, and
    keep this test's announcements apart from any real `make run`."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.mark.slow
def test_local_reaches_the_store_of_make_run_in_one_step(
    moto_server: str,
    isolated_env: None,
    tiny_artifact_tar: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=LOCAL_BUCKET)
    announce(port, moto_server)  # what run_local.py does once its S3 is up
    os.environ.pop("AWS_ACCESS_KEY_ID")  # --local needs no AWS settings of the user's

    local = ["--local", "--port", str(port)]
    assert models_cli.main(["upload", str(tiny_artifact_tar), *local]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["version"] == "test-1"
    assert models_cli.main(["list", *local]) == ExitCode.OK
    assert capsys.readouterr().out.startswith(f"{LOCAL_STORE_URI}: 1 version, nothing LIVE")
    ModelStore.from_uri(LOCAL_STORE_URI).set_live("test-1")  # the environment --local set
    assert models_cli.main(["list", *local]) == ExitCode.OK
    table = capsys.readouterr().out.splitlines()
    assert table[0] == f"{LOCAL_STORE_URI}: 1 version, LIVE: test-1"
    assert table[2].split() == ["*", "test-1", "2026-01-01T00:00:00Z", "-", "-"]


def test_local_without_make_run_says_what_to_do(
    isolated_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    assert models_cli.main(["list", "--local", "--port", str(port)]) == ExitCode.ERROR
    error = json.loads(capsys.readouterr().err)["error"]
    assert error.startswith(f"no `make run` found on port {port}: start one")

    announcement(port).write_text(json.dumps({"endpoint": "http://x", "pid": 2**22 + 1}))
    assert models_cli.main(["list", "--local", "--port", str(port)]) == ExitCode.ERROR
    assert "has stopped" in json.loads(capsys.readouterr().err)["error"]


def test_help_names_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        models_cli.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: nerkit-models ")
    assert "python -m" not in out
