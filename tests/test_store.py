"""nerkit.store and nerkit.models_cli against moto's S3 (in-process, plus one real HTTP server)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from helpers import artifact_version, dummy_tarball, free_port

from nerkit import models_cli
from nerkit.artifact import MANIFEST, sha256_file
from nerkit.errors import (
    ArtifactError,
    ConfigError,
    IntrinsicModelError,
    LiveConflict,
    ModelNotFound,
    StoreUnavailable,
    VersionExists,
)
from nerkit.exit_codes import ExitCode
from nerkit.store import (
    ModelStore,
    Pointer,
    S3Client,
    VersionInfo,
    open_source,
    parse_s3_uri,
)
from nerkit.store import registry as store_module
from nerkit.store.cache import CACHE_MARKER, STALE_TEMP_SECONDS
from nerkit.store.cache import prune as prune_cache

BUCKET = "nerkit-models"
URI = f"s3://{BUCKET}/models"

# Fake credentials for every test, moto or not (botocore signs even unreachable requests).
pytestmark = pytest.mark.usefixtures("aws_credentials")


@pytest.fixture
def s3(moto_s3: S3Client) -> S3Client:
    moto_s3.create_bucket(Bucket=BUCKET)
    return moto_s3


@pytest.fixture
def store(s3: S3Client) -> ModelStore:
    return ModelStore(BUCKET, "models", s3)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def build_tarball(
    tmp_path: Path, version: str, *, model: bytes | None = None, **manifest: Any
) -> Path:
    """A packed artifact with dummy model/tokenizer bytes; each call gets its own directory."""
    work = Path(tempfile.mkdtemp(prefix="build-", dir=tmp_path))
    return dummy_tarball(work, version, model=model, **manifest)


def tarball_with(tmp_path: Path, version: str, info: tarfile.TarInfo, data: bytes) -> Path:
    """A valid artifact's members followed by one hand-made member."""
    source = build_tarball(tmp_path, version)
    out = source.with_name("crafted.tar.gz")
    with tarfile.open(source, "r:gz") as good, tarfile.open(out, "w:gz") as tar:
        for member in good:
            tar.addfile(member, good.extractfile(member))
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out


def put_raw(s3: S3Client, key: str, body: bytes) -> str:
    """Write an object behind the store's back (as a broken or hostile writer would)."""
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return hashlib.sha256(body).hexdigest()


def pointer_json(version: str, sha256: str = "0" * 64) -> bytes:
    """A LIVE pointer written by hand, to point the store at objects it did not upload."""
    pointer = {
        "version": version,
        "key": f"models/{version}/model.tar.gz",
        "sha256": sha256,
        "updated_at": "2026-01-01T00:00:00Z",
        "previous": None,
    }
    return json.dumps(pointer).encode()


def put_live(s3: S3Client, version: str, sha256: str) -> None:
    s3.put_object(Bucket=BUCKET, Key="models/LIVE", Body=pointer_json(version, sha256))


def publish(store: ModelStore, tmp_path: Path, *versions: str) -> None:
    for version in versions:
        store.set_live(store.upload(build_tarball(tmp_path, version)))


def live_of(store: ModelStore) -> str | None:
    pointer = store.live()
    return pointer.version if pointer else None


def entries(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


# -- URIs ---------------------------------------------------------------------------------


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://bucket/a/b.tar.gz") == ("bucket", "a/b.tar.gz")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    for bad in ("https://bucket/key", "s3:///key", "bucket/key"):
        with pytest.raises(ConfigError):
            parse_s3_uri(bad)


def test_store_keys_with_and_without_prefix() -> None:
    assert ModelStore("b", "/models/ner/").key("v1", "model.tar.gz") == "models/ner/v1/model.tar.gz"
    assert ModelStore("b").key("LIVE") == "LIVE"
    assert ModelStore.from_uri("s3://b/models/").uri == "s3://b/models"
    assert ModelStore("b").uri == "s3://b"


# -- upload, list, manifest ---------------------------------------------------------------


def test_upload_writes_tarball_with_sha256_and_manifest_copy(
    store: ModelStore, s3: S3Client, tmp_path: Path
) -> None:
    tar = build_tarball(tmp_path, "v1")
    assert store.upload(tar) == "v1"
    obj = s3.get_object(Bucket=BUCKET, Key="models/v1/model.tar.gz")
    assert obj["Body"].read() == tar.read_bytes()
    assert obj["Metadata"]["sha256"] == sha256_file(tar)
    copy = s3.get_object(Bucket=BUCKET, Key="models/v1/manifest.json")["Body"].read()
    with tarfile.open(tar, "r:gz") as archive:
        inner = archive.extractfile(MANIFEST)
        assert inner is not None
        assert copy == inner.read()
    assert store.manifest("v1")["version"] == "v1"


def test_versions_lists_manifest_copies_oldest_first(store: ModelStore, tmp_path: Path) -> None:
    metrics = {"validation": {"f1": 0.9}}
    store.upload(build_tarball(tmp_path, "b-new", created_at="2026-02-01T00:00:00Z"))
    store.upload(
        build_tarball(tmp_path, "a-old", created_at="2026-01-01T00:00:00Z", metrics=metrics)
    )
    assert store.versions() == [
        VersionInfo("a-old", "2026-01-01T00:00:00Z", metrics),
        VersionInfo("b-new", "2026-02-01T00:00:00Z", {}),
    ]


def test_versions_skip_an_upload_without_its_manifest_copy(
    store: ModelStore, s3: S3Client, tmp_path: Path
) -> None:
    store.upload(build_tarball(tmp_path, "v1"))
    put_raw(s3, "models/v2/model.tar.gz", b"upload in progress")
    assert [info.version for info in store.versions()] == ["v1"]


def test_manifest_of_a_missing_version(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound, match="version v9 not found in s3://nerkit-models/models"):
        store.manifest("v9")


def test_upload_refuses_to_overwrite_a_version(
    store: ModelStore, s3: S3Client, tmp_path: Path
) -> None:
    first = build_tarball(tmp_path, "v1")
    store.upload(first)
    with pytest.raises(VersionExists, match="version v1 already exists"):
        store.upload(build_tarball(tmp_path, "v1", model=b"different weights"))
    stored = s3.get_object(Bucket=BUCKET, Key="models/v1/model.tar.gz")["Body"].read()
    assert stored == first.read_bytes()


def test_upload_of_identical_bytes_completes_an_interrupted_upload(
    store: ModelStore, s3: S3Client, tmp_path: Path
) -> None:
    tar = build_tarball(tmp_path, "v1")
    store.upload(tar)
    s3.delete_object(Bucket=BUCKET, Key="models/v1/manifest.json")  # as if the step died
    assert store.upload(tar) == "v1"
    assert store.manifest("v1")["version"] == "v1"


def test_upload_verifies_before_writing_anything(
    store: ModelStore, s3: S3Client, tmp_path: Path
) -> None:
    garbage = tmp_path / "model.tar.gz"
    garbage.write_bytes(b"not a tarball")
    with pytest.raises(ArtifactError, match="not a readable"):
        store.upload(garbage)
    with pytest.raises(ArtifactError, match=re.escape("invalid model version '../escape'")):
        store.upload(build_tarball(tmp_path, "../escape"))
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


# -- LIVE pointer -------------------------------------------------------------------------


def test_set_live_writes_the_pointer(store: ModelStore, s3: S3Client, tmp_path: Path) -> None:
    assert store.live() is None
    tar = build_tarball(tmp_path, "v1")
    store.upload(tar)
    pointer = store.set_live("v1")
    assert (pointer.version, pointer.key, pointer.previous) == (
        "v1",
        "models/v1/model.tar.gz",
        None,
    )
    assert pointer.sha256 == sha256_file(tar)
    assert store.live() == pointer
    raw = json.loads(s3.get_object(Bucket=BUCKET, Key="models/LIVE")["Body"].read())
    assert set(raw) == {"version", "key", "sha256", "updated_at", "previous", "history"}

    store.upload(build_tarball(tmp_path, "v2"))
    assert store.set_live("v2").previous == "v1"
    raw = json.loads(s3.get_object(Bucket=BUCKET, Key="models/LIVE")["Body"].read())
    assert raw["history"] == ["v1"]
    assert store.live() == Pointer(**{**raw, "history": tuple(raw["history"])})


def test_set_live_of_the_live_version_changes_nothing(store: ModelStore, tmp_path: Path) -> None:
    publish(store, tmp_path, "v1")
    before = store.live()
    assert store.set_live("v1") == before
    assert store.live() == before


def test_set_live_of_a_missing_version(store: ModelStore, tmp_path: Path) -> None:
    publish(store, tmp_path, "v1")
    with pytest.raises(ModelNotFound, match="version v9 not found"):
        store.set_live("v9")
    assert live_of(store) == "v1"


def test_set_live_checks_the_expected_current_version(store: ModelStore, tmp_path: Path) -> None:
    store.upload(build_tarball(tmp_path, "v1"))
    store.upload(build_tarball(tmp_path, "v2"))
    with pytest.raises(LiveConflict, match="LIVE in s3://nerkit-models/models is None"):
        store.set_live("v1", expected_current="v0")
    store.set_live("v1", expected_current=None)
    with pytest.raises(LiveConflict, match="is 'v1', expected None"):
        store.set_live("v2", expected_current=None)
    assert store.set_live("v2", expected_current="v1").version == "v2"


class KeyRecorder:
    """An S3 client that records the keys of the object requests made through it."""

    def __init__(self, s3: S3Client, keys: list[str]) -> None:
        self._s3 = s3
        self._keys = keys

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._s3, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if "Key" in kwargs:
                self._keys.append(kwargs["Key"])
            return method(*args, **kwargs)

        return call


class RaceOnLiveWrite:
    """An S3 client through which a competing publisher moves LIVE just before our write."""

    def __init__(self, s3: S3Client, compete: Callable[[], object]) -> None:
        self._s3 = s3
        self._compete: Callable[[], object] | None = compete

    def put_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith("LIVE") and self._compete is not None:
            compete, self._compete = self._compete, None
            compete()
        return self._s3.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


@pytest.mark.parametrize("live_before", [None, "v1"])
def test_a_publisher_that_loses_the_race_gets_live_conflict(
    store: ModelStore, s3: S3Client, tmp_path: Path, live_before: str | None
) -> None:
    for version in ("v1", "v2", "v3"):
        store.upload(build_tarball(tmp_path, version))
    if live_before:
        store.set_live(live_before)
    rival = ModelStore(BUCKET, "models", s3)
    racer = ModelStore(BUCKET, "models", RaceOnLiveWrite(s3, lambda: rival.set_live("v2")))
    with pytest.raises(LiveConflict, match="changed during the update"):
        racer.set_live("v3")
    pointer = store.live()
    assert pointer is not None
    assert (pointer.version, pointer.previous) == ("v2", live_before)


def test_repeated_rollbacks_walk_back_through_the_history(
    store: ModelStore, tmp_path: Path
) -> None:
    publish(store, tmp_path, "v1", "v2", "v3")
    assert store.live().history == ("v2", "v1")  # type: ignore[union-attr]
    pointer = store.rollback()
    assert (pointer.version, pointer.previous, pointer.history) == ("v2", "v1", ("v1",))
    # A second rollback goes further back (it used to flip back to v3).
    pointer = store.rollback()
    assert (pointer.version, pointer.previous, pointer.history) == ("v1", None, ())
    assert store.live() == pointer
    with pytest.raises(LiveConflict, match="has no previous version"):
        store.rollback()


def test_rollback_to_a_version_of_the_history_drops_the_newer_entries(
    store: ModelStore, tmp_path: Path
) -> None:
    publish(store, tmp_path, "v1", "v2", "v3", "v4")
    assert store.rollback(to="v2").history == ("v1",)
    assert store.rollback().version == "v1"


def test_rollback_to_a_version_never_live_is_undone_by_the_next_rollback(
    store: ModelStore, tmp_path: Path
) -> None:
    publish(store, tmp_path, "v1", "v2")
    store.upload(build_tarball(tmp_path, "v3"))  # stored, never live (say the gate refused it)
    pointer = store.rollback(to="v3")
    assert (pointer.version, pointer.history) == ("v3", ("v2", "v1"))
    assert store.rollback().version == "v2"
    assert store.rollback().version == "v1"


def test_the_history_is_bounded_and_holds_no_duplicates(store: ModelStore, tmp_path: Path) -> None:
    versions = [f"v{index}" for index in range(store_module.MAX_HISTORY + 3)]
    publish(store, tmp_path, *versions)
    history = store.live().history  # type: ignore[union-attr]
    assert history == tuple(reversed(versions[:-1]))[: store_module.MAX_HISTORY]
    # A version set live again (a publisher's choice) leaves the history once, as current.
    pointer = store.set_live("v3")
    assert pointer.history[0] == versions[-1] and "v3" not in pointer.history


def test_rollback_checks_the_expected_current_version(store: ModelStore, tmp_path: Path) -> None:
    publish(store, tmp_path, "v1", "v2")
    with pytest.raises(LiveConflict, match="is 'v2', expected 'v1'"):
        store.rollback(expected_current="v1")
    assert store.rollback(expected_current="v2").version == "v1"


def test_a_pointer_written_before_the_history_rolls_back_to_its_previous(
    store: ModelStore, s3: S3Client, tmp_path: Path
) -> None:
    for version in ("v1", "v2"):
        store.upload(build_tarball(tmp_path, version))
    sha256 = s3.head_object(Bucket=BUCKET, Key="models/v2/model.tar.gz")["Metadata"]["sha256"]
    old = {**json.loads(pointer_json("v2", sha256)), "previous": "v1"}
    put_raw(s3, "models/LIVE", json.dumps(old).encode())
    assert store.live().history == ("v1",)  # type: ignore[union-attr]
    assert store.rollback().version == "v1"


def test_moving_live_reads_only_manifest_copies_and_live(
    store: ModelStore, s3: S3Client, tmp_path: Path
) -> None:
    """What the admin API's role may read in the model store (infra/admin.py): the sha256
    a pointer needs comes from the manifest copy's metadata, not from the tarball."""
    publish(store, tmp_path, "v1", "v2")
    touched: list[str] = []
    spy = ModelStore(BUCKET, "models", KeyRecorder(s3, touched))
    spy.rollback()
    assert set(touched) == {"models/LIVE", "models/v1/manifest.json"}


def test_rollback_with_nothing_to_roll_back_to(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"no LIVE model .* nothing to roll back"):
        store.rollback()
    publish(store, tmp_path, "v1")
    with pytest.raises(LiveConflict, match=r"LIVE version v1 .* has no previous version"):
        store.rollback()
    with pytest.raises(ModelNotFound, match="version v7 not found"):
        store.rollback(to="v7")
    with pytest.raises(LiveConflict, match="v1 is already live"):
        store.rollback(to="v1")
    assert live_of(store) == "v1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid pointer JSON"),
        (b'["v1"]', "not valid pointer JSON"),
        (b'{"version": "v1"}', "not valid pointer JSON"),
        (pointer_json("../.."), "invalid version, key or sha256"),
        (pointer_json("v1", sha256="abc"), "invalid version, key or sha256"),
    ],
)
def test_a_corrupt_pointer_is_refused(
    store: ModelStore, s3: S3Client, cache: Path, body: bytes, message: str
) -> None:
    put_raw(s3, "models/LIVE", body)
    with pytest.raises(ArtifactError, match=message):
        store.fetch(cache)
    assert entries(cache) == []


# -- fetch --------------------------------------------------------------------------------


def test_fetch_follows_live(store: ModelStore, cache: Path, tmp_path: Path) -> None:
    publish(store, tmp_path, "v1")
    loaded = store.fetch(cache)
    assert (loaded.path, loaded.version) == (cache / "v1", "v1")
    assert loaded.source == "s3://nerkit-models/models/v1/model.tar.gz"
    assert loaded.manifest["version"] == "v1"
    assert (loaded.path / "model.onnx").read_bytes() == b"onnx v1"
    assert entries(cache) == ["v1"]  # no temp download or staging left behind

    publish(store, tmp_path, "v2")
    assert store.fetch(cache).path == cache / "v2"
    assert store.fetch(cache, version="v1").version == "v1"


def test_fetch_reuses_a_verified_extraction_and_repairs_a_damaged_one(
    store: ModelStore, s3: S3Client, cache: Path, tmp_path: Path
) -> None:
    publish(store, tmp_path, "v1")
    store.fetch(cache)
    (cache / "v1" / "model.onnx").write_bytes(b"tampered")
    assert (store.fetch(cache).path / "model.onnx").read_bytes() == b"onnx v1"
    # With the object gone, only the cached extraction can satisfy the next fetch.
    s3.delete_object(Bucket=BUCKET, Key="models/v1/model.tar.gz")
    assert store.fetch(cache).version == "v1"


def test_fetch_does_not_reuse_another_tarball_of_the_same_version_name(
    s3: S3Client, cache: Path, tmp_path: Path
) -> None:
    # Two stores sharing one cache, each with its own "v1": the sha256 marker tells them apart.
    first, second = ModelStore(BUCKET, "first", s3), ModelStore(BUCKET, "second", s3)
    first.set_live(first.upload(build_tarball(tmp_path, "v1", model=b"first model")))
    second.set_live(second.upload(build_tarball(tmp_path, "v1", model=b"second model")))
    assert (first.fetch(cache).path / "model.onnx").read_bytes() == b"first model"
    assert (second.fetch(cache).path / "model.onnx").read_bytes() == b"second model"


def test_fetch_without_live(store: ModelStore, cache: Path) -> None:
    with pytest.raises(ModelNotFound, match="no LIVE model in s3://nerkit-models/models"):
        store.fetch(cache)


def test_fetch_of_a_missing_version(store: ModelStore, cache: Path) -> None:
    with pytest.raises(ModelNotFound, match="version v9 not found"):
        store.fetch(cache, version="v9")


def test_pointer_to_a_missing_version(store: ModelStore, s3: S3Client, cache: Path) -> None:
    put_live(s3, "v9", "0" * 64)
    with pytest.raises(
        ModelNotFound, match=re.escape("not found: s3://nerkit-models/models/v9/model.tar.gz")
    ):
        store.fetch(cache)
    assert entries(cache) == []


def test_missing_bucket(s3: S3Client, cache: Path) -> None:
    with pytest.raises(ModelNotFound, match="bucket no-such-bucket does not exist"):
        open_source("s3://no-such-bucket/models", cache, s3=s3).fetch()
    with pytest.raises(ModelNotFound, match="bucket no-such-bucket does not exist"):
        ModelStore("no-such-bucket", "models", s3).versions()


def test_corrupt_tarball_in_s3(store: ModelStore, s3: S3Client, cache: Path) -> None:
    put_live(s3, "v1", put_raw(s3, "models/v1/model.tar.gz", b"\x1f\x8b garbage"))
    with pytest.raises(ArtifactError, match=r"not a readable \.tar\.gz"):
        store.fetch(cache)
    assert entries(cache) == []


def test_checksum_mismatch_between_pointer_and_object(
    store: ModelStore, s3: S3Client, cache: Path, tmp_path: Path
) -> None:
    publish(store, tmp_path, "v1")
    forged = build_tarball(tmp_path, "v1", model=b"swapped weights").read_bytes()
    put_raw(s3, "models/v1/model.tar.gz", forged)
    with pytest.raises(ArtifactError, match="checksum mismatch: s3://nerkit-models/models/v1"):
        store.fetch(cache)
    assert entries(cache) == []


def test_path_traversal_tarball_in_s3(
    store: ModelStore, s3: S3Client, tmp_path: Path, cache: Path
) -> None:
    crafted = tarball_with(tmp_path, "v1", tarfile.TarInfo("../escape"), b"pwned")
    put_live(s3, "v1", put_raw(s3, "models/v1/model.tar.gz", crafted.read_bytes()))
    with pytest.raises(ArtifactError, match=re.escape("unsafe path in artifact: '../escape'")):
        store.fetch(cache)
    assert entries(cache) == []
    assert not (tmp_path / "escape").exists()


def test_tarball_of_another_version(store: ModelStore, s3: S3Client, tmp_path: Path) -> None:
    other = build_tarball(tmp_path, "v2").read_bytes()
    put_live(s3, "v1", put_raw(s3, "models/v1/model.tar.gz", other))
    with pytest.raises(ArtifactError, match="holds version v2, not v1"):
        store.fetch(tmp_path / "cache")


def test_access_denied(cache: Path) -> None:
    client = boto3.client("s3")
    stubber = Stubber(client)
    stubber.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
    # A denied GET may hide an absent key: the store asks a list, denied here as well.
    stubber.add_client_error(
        "list_objects_v2", service_error_code="AccessDenied", http_status_code=403
    )
    with stubber, pytest.raises(StoreUnavailable, match="access denied to s3://private/models/"):
        open_source("s3://private/models", cache, s3=client).fetch()


@pytest.mark.parametrize(("listed", "live"), [([], None), (["models/LIVE-old"], None)])
def test_a_denied_read_of_an_absent_live_is_no_live(listed: list[str], live: None) -> None:
    """Roles that may list only under a prefix get 403 for a missing key: the store asks a
    list of that key, and a list without it means "absent"."""
    client = boto3.client("s3")
    stubber = Stubber(client)
    stubber.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
    contents = [{"Key": key} for key in listed]
    stubber.add_response(
        "list_objects_v2",
        {"Contents": contents, "KeyCount": len(contents)} if contents else {"KeyCount": 0},
        {"Bucket": "private", "Prefix": "models/LIVE", "MaxKeys": 1},
    )
    with stubber:
        assert ModelStore("private", "models", client).live() is live


def test_a_denied_read_of_a_present_key_stays_denied() -> None:
    client = boto3.client("s3")
    stubber = Stubber(client)
    stubber.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
    stubber.add_response("list_objects_v2", {"Contents": [{"Key": "models/v1/manifest.json"}]})
    with stubber, pytest.raises(StoreUnavailable, match="access denied"):
        ModelStore("private", "models", client).manifest("v1")


def test_transient_intrinsic_and_configuration_errors_are_apart(store: ModelStore) -> None:
    assert not issubclass(StoreUnavailable, IntrinsicModelError)
    assert issubclass(ArtifactError, IntrinsicModelError)
    assert issubclass(ModelNotFound, IntrinsicModelError)
    assert not issubclass(ConfigError, IntrinsicModelError)
    for bad_uri in ("s3://b/models/x.tar.gz", "/tmp/model", "gs://b/models"):
        with pytest.raises(ConfigError):
            ModelStore.from_uri(bad_uri)
    with pytest.raises(ConfigError, match="invalid model version"):
        store.set_live("../escape")
    with pytest.raises(ConfigError, match="unsupported model URI"):
        open_source("https://example.com/model.tar.gz", Path())


def test_unreachable_endpoint(cache: Path) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(StoreUnavailable, match="cannot reach S3 for s3://bkt/models/LIVE"):
        open_source("s3://bkt/models", Path(), s3=client).live()


# -- model sources: open_source(...).fetch() and .live() ------------------------------


def test_resolve_follows_live_for_a_prefix(s3: S3Client, cache: Path, tmp_path: Path) -> None:
    # No client passed: the store creates its own, which moto intercepts as well.
    publish(ModelStore(BUCKET, "models"), tmp_path, "v1", "v2")
    loaded = open_source(URI, cache).fetch()
    assert (loaded.version, loaded.path) == ("v2", cache / "v2")


def test_resolve_single_object(s3: S3Client, cache: Path, tmp_path: Path) -> None:
    sha256 = put_raw(s3, "exports/ner.tar.gz", build_tarball(tmp_path, "v5").read_bytes())
    loaded = open_source(f"s3://{BUCKET}/exports/ner.tar.gz", cache, s3=s3).fetch()
    assert loaded.version == "v5"
    assert loaded.path == cache / f"_sha256-{sha256[:16]}"
    assert loaded.source == f"s3://{BUCKET}/exports/ner.tar.gz"
    with pytest.raises(
        ModelNotFound, match=re.escape("not found: s3://nerkit-models/exports/none.tar.gz")
    ):
        open_source(f"s3://{BUCKET}/exports/none.tar.gz", cache, s3=s3).fetch()


def test_resolve_local_tarball_and_its_cache(tmp_path: Path, cache: Path) -> None:
    tar = build_tarball(tmp_path, "v3")
    loaded = open_source(str(tar), cache).fetch()
    assert loaded.version == "v3"
    assert loaded.path.parent == cache
    inode = loaded.path.stat().st_ino
    # Re-extraction would replace the directory (new inode); reuse keeps it.
    assert open_source(str(tar), cache).fetch().path.stat().st_ino == inode


def test_resolve_local_directory_is_verified_in_place(tmp_path: Path, cache: Path) -> None:
    tar = build_tarball(tmp_path, "v4")
    model_dir = tar.parent / "model"
    loaded = open_source(str(model_dir), cache).fetch()
    assert (loaded.path, loaded.version, loaded.source) == (model_dir, "v4", str(model_dir))
    assert not cache.exists()
    (model_dir / "model.onnx").write_bytes(b"onnx v5")  # same size, other bytes
    with pytest.raises(ArtifactError, match=r"checksum mismatch: model\.onnx"):
        open_source(str(model_dir), cache).fetch()


def test_resolve_refuses_missing_and_unsafe_local_tarballs(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(ModelNotFound, match="no model at"):
        open_source(str(tmp_path / "absent.tar.gz"), cache).fetch()
    with pytest.raises(ConfigError, match="no model URI"):
        open_source("", cache).fetch()
    crafted = tarball_with(tmp_path, "v1", _symlink("tokenizer.json", "/etc/passwd"), b"")
    with pytest.raises(ArtifactError, match="regular files only"):
        open_source(str(crafted), cache).fetch()
    assert entries(cache) == []


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def test_live_pointer(store: ModelStore, s3: S3Client, tmp_path: Path) -> None:
    assert open_source(URI, Path(), s3=s3).live() is None
    publish(store, tmp_path, "v1")
    assert open_source(URI, Path(), s3=s3).live() == store.live()
    assert open_source(f"s3://{BUCKET}/exports/ner.tar.gz", Path(), s3=s3).live() is None
    assert open_source(str(tmp_path), Path()).live() is None


def test_a_tarball_over_the_download_limit_is_refused_unread(
    store: ModelStore, s3: S3Client, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = build_tarball(tmp_path, "v1")
    store.set_live(store.upload(tar))
    monkeypatch.setattr(store_module, "MAX_DOWNLOAD_BYTES", tar.stat().st_size - 1)
    with pytest.raises(ArtifactError, match=r"v1/model\.tar\.gz is larger than"):
        store.fetch(cache)
    assert entries(cache) == []
    monkeypatch.setattr(store_module, "MAX_DOWNLOAD_BYTES", tar.stat().st_size)
    assert store.fetch(cache).version == "v1"


class LyingLength:
    """An S3 client whose objects declare a smaller size than they have."""

    def __init__(self, s3: S3Client) -> None:
        self._s3 = s3

    def get_object(self, **kwargs: Any) -> Any:
        return {**self._s3.get_object(**kwargs), "ContentLength": 1}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def test_the_download_limit_counts_the_bytes_received(
    s3: S3Client, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(ModelStore(BUCKET, "models", s3), tmp_path, "v1")
    monkeypatch.setattr(store_module, "MAX_DOWNLOAD_BYTES", 100)
    with pytest.raises(ArtifactError, match="is larger than 100 bytes"):
        ModelStore(BUCKET, "models", LyingLength(s3)).fetch(cache)
    assert entries(cache) == []


# -- the cache: one version next to the one in use --------------------------------------


def test_a_download_prunes_every_model_but_the_ones_to_keep(
    store: ModelStore, cache: Path, tmp_path: Path
) -> None:
    publish(store, tmp_path, "v1", "v2", "v3")
    for version in ("v1", "v2"):
        store.fetch(cache, version)
    local = open_source(str(build_tarball(tmp_path, "local")), cache).fetch()
    # In progress elsewhere: a staging directory and a temp download (no cache marker).
    (cache / "v9.partial-x1y2").mkdir()
    (cache / ".download-abc.tar.gz").write_bytes(b"partial")

    assert store.fetch(cache, "v3", keep=[cache / "v2"]).path == cache / "v3"
    assert entries(cache) == [".download-abc.tar.gz", "v2", "v3", "v9.partial-x1y2"]
    assert not local.path.exists()
    # Reusing a cached version downloads nothing, so it prunes nothing.
    assert store.fetch(cache, "v2", keep=[]).version == "v2"
    assert "v3" in entries(cache)
    # Without keep (library use, a shared cache), nothing is pruned.
    store.fetch(cache, "v1")
    assert {"v1", "v2", "v3"} <= set(entries(cache))


def test_resolve_prunes_before_extracting_a_new_local_tarball(tmp_path: Path, cache: Path) -> None:
    first = open_source(str(build_tarball(tmp_path, "v1")), cache).fetch(keep=[])
    second = open_source(str(build_tarball(tmp_path, "v2")), cache).fetch(keep=[first.path])
    assert sorted(path.name for path in cache.iterdir()) == sorted(
        [first.path.name, second.path.name]
    )
    # The same tarball again is reused, not pruned and re-extracted.
    inode = second.path.stat().st_ino
    again = open_source(str(build_tarball(tmp_path, "v2")), cache).fetch(keep=[])
    assert again.path.stat().st_ino == inode
    third = open_source(str(build_tarball(tmp_path, "v3")), cache).fetch(keep=[second.path])
    assert sorted(path.name for path in cache.iterdir()) == sorted(
        [second.path.name, third.path.name]
    )


def test_prune_cache(tmp_path: Path) -> None:
    assert prune_cache(tmp_path / "absent", []) == []
    cache = tmp_path / "cache"
    for name in ("a", "b", "_sha256-0123"):
        (cache / name).mkdir(parents=True)
        (cache / name / CACHE_MARKER).write_text("0" * 64)
    (cache / "no-marker").mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / CACHE_MARKER).write_text("0" * 64)
    (cache / "link").symlink_to(outside)
    assert prune_cache(cache, [cache / "a"]) == [cache / "_sha256-0123", cache / "b"]
    assert entries(cache) == ["a", "link", "no-marker"]
    assert outside.exists()


def test_prune_cache_sweeps_only_stale_temp_files(tmp_path: Path) -> None:
    """Leftovers of a killed load go; a load in progress (recent files) is left alone."""
    cache = tmp_path / "cache"
    cache.mkdir()
    old = time.time() - STALE_TEMP_SECONDS - 1
    for name in (".download-old.tar.gz", ".download-new.tar.gz"):
        (cache / name).write_bytes(b"partial")
    for name in ("v1.partial-old", "v1.partial-new"):
        (cache / name / "model").mkdir(parents=True)
    for name in (".download-old.tar.gz", "v1.partial-old"):
        os.utime(cache / name, (old, old))
    assert prune_cache(cache, []) == [cache / ".download-old.tar.gz", cache / "v1.partial-old"]
    assert entries(cache) == [".download-new.tar.gz", "v1.partial-new"]


# -- models_cli ---------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = models_cli.main(list(argv))
    out, err = capsys.readouterr()
    # Errors go to stderr; results, and the gate's report when it refuses, to stdout.
    return code, json.loads(out if code in (0, ExitCode.GATE_REFUSED) else err)


def test_cli_end_to_end(
    s3: S3Client, tmp_path: Path, tiny_artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--bucket", BUCKET, "--prefix", "models"]
    v1 = build_tarball(tmp_path, "v1")
    # publish runs the model first (a trial run): a real one, not dummy bytes.
    v2 = artifact_version(tiny_artifact_dir, tmp_path, "v2", metrics={"validation": {"f1": 0.9}})
    assert cli(capsys, "upload", str(v1), "--uri", URI) == (
        0,
        {"version": "v1", "uri": f"{URI}/v1/model.tar.gz"},
    )
    assert cli(capsys, "live", *where) == (0, None)
    code, report = cli(capsys, "publish", str(v2), *where)
    pointer = report["live"]
    assert (code, pointer["version"], pointer["previous"]) == (0, "v2", None)
    assert pointer["sha256"] == sha256_file(v2)
    assert report["gate"]["passed"] is True and report["gate"]["min_f1"] == 0.0

    code, listing = cli(capsys, "list", "--uri", URI, "--json")
    assert (code, listing["live"], listing["uri"]) == (0, "v2", URI)
    assert [item["version"] for item in listing["versions"]] == ["v1", "v2"]

    code, pointer = cli(capsys, "rollback", "--to", "v1", "--uri", URI)
    # v1 was never live: going to it remembers v2, and the next rollback returns there.
    assert (code, pointer["version"], pointer["history"]) == (0, "v1", ["v2"])
    code, pointer = cli(capsys, "rollback", "--uri", URI)
    assert (code, pointer["version"], pointer["history"]) == (0, "v2", [])
    assert cli(capsys, "live", "--uri", URI)[1]["version"] == "v2"
    assert cli(capsys, "rollback", "--uri", URI)[0] == ExitCode.ERROR


def test_cli_publish_goes_through_the_gate(
    s3: S3Client, tmp_path: Path, tiny_artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def tarball(version: str, f1: float | None) -> str:
        metrics = {} if f1 is None else {"validation": {"f1": f1}}
        return str(artifact_version(tiny_artifact_dir, tmp_path, version, metrics=metrics))

    assert cli(capsys, "publish", tarball("v1", 0.8), "--uri", URI, "--min-f1", "0.7")[0] == 0
    code, report = cli(capsys, "publish", tarball("v2", 0.6), "--uri", URI, "--min-f1", "0.7")
    # Refused: the model did not go LIVE, and the version that still serves is named.
    assert (code, report["published"], report["gate"]["passed"]) == (3, False, False)
    assert report["live"]["version"] == "v1"
    assert "below the gate's minimum" in report["gate"]["reason"]
    code, report = cli(capsys, "publish", tarball("v3", 0.75), "--uri", URI, "--must-beat-live")
    assert (code, report["gate"]["live_f1"]) == (3, 0.8)
    code, report = cli(capsys, "publish", tarball("v4", 0.85), "--uri", URI, "--must-beat-live")
    assert (code, report["live"]["version"], report["live"]["previous"]) == (0, "v4", "v1")
    code, listing = cli(capsys, "list", "--uri", URI, "--json")
    # Refused versions are stored for inspection, never served.
    assert [item["version"] for item in listing["versions"]] == ["v1", "v2", "v3", "v4"]
    assert listing["live"] == "v4"
    code, error = cli(capsys, "publish", tarball("v5", None), "--uri", URI)
    assert code == 1 and "no metrics.validation.f1" in error["error"]


def test_cli_reports_errors_as_json(
    s3: S3Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "rollback", "--uri", URI) == (
        1,
        {"error": f"no LIVE model in {URI}: nothing to roll back"},
    )
    code, error = cli(capsys, "upload", str(tmp_path / "absent.tar.gz"), "--uri", URI)
    assert code == 1
    assert "artifact not found" in error["error"]
    with pytest.raises(SystemExit) as usage:
        models_cli.main(["list", "--uri", URI, "--prefix", "other"])
    assert usage.value.code == 2


# -- a real HTTP S3 (moto_server) ---------------------------------------------------------


@pytest.mark.slow
def test_through_a_real_s3_endpoint(
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_artifact_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    metrics = {"validation": {"f1": 0.9}}
    for version in ("v1", "v2"):
        tar = artifact_version(tiny_artifact_dir, tmp_path, version, metrics=metrics)
        assert cli(capsys, "publish", str(tar), "--uri", URI)[0] == 0

    loaded = open_source(URI, tmp_path / "cache").fetch()
    onnx = (tiny_artifact_dir / "model.onnx").read_bytes()
    assert (loaded.version, (loaded.path / "model.onnx").read_bytes()) == ("v2", onnx)
    assert live_of(ModelStore.from_uri(URI)) == "v2"

    # Conditional writes over HTTP: no overwrite of a version, no lost LIVE update.
    store = ModelStore.from_uri(URI)
    with pytest.raises(VersionExists):
        store.upload(build_tarball(tmp_path, "v1", model=b"other weights"))
    store.upload(build_tarball(tmp_path, "v3"))
    racer = ModelStore.from_uri(URI, RaceOnLiveWrite(store.s3, lambda: store.rollback()))
    with pytest.raises(LiveConflict):
        racer.set_live("v3")
    assert live_of(ModelStore.from_uri(URI)) == "v1"


def test_a_full_disk_while_extracting_is_retryable_not_a_bad_model(
    store: ModelStore, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from nerkit import artifact as artifact_module

    publish(store, tmp_path, "v1")

    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(artifact_module.shutil, "copyfileobj", no_space)
        with pytest.raises(StoreUnavailable, match="No space left on device"):
            store.fetch(cache)
    assert store.fetch(cache).version == "v1"  # the same release loads once there is room


def test_versions_with_a_limit_read_only_the_manifests_stored_last(
    store: ModelStore, s3: S3Client, tmp_path: Path
) -> None:
    for version in ("v1", "v2", "v3"):
        store.upload(build_tarball(tmp_path, version))
        time.sleep(1.1)  # S3's LastModified has one-second resolution
    touched: list[str] = []
    spy = ModelStore(BUCKET, "models", KeyRecorder(s3, touched))
    assert [info.version for info in spy.versions(limit=2)] == ["v2", "v3"]
    assert sorted(touched) == ["models/v2/manifest.json", "models/v3/manifest.json"]
    assert [info.version for info in store.versions()] == ["v1", "v2", "v3"]
