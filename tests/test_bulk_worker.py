"""The bulk worker against moto's S3 (and local files): formats, shards, bad records,
exactly-once outputs, skipping finished shards and stopping before a deadline."""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from bulk_helpers import read_jsonl, run_outputs
from helpers import FAKE_AWS_ENV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from nerkit.api.schemas import EntityOut
from nerkit.bulk.locations import location
from nerkit.bulk.plan import EntityOptions, Job, plan
from nerkit.bulk.records import MAX_LINE_BYTES
from nerkit.bulk.runner import run_local, run_shard
from nerkit.bulk.worker import STOP_MARGIN_SECONDS, marker_key, process_shard
from nerkit.engine import NerEngine

BUCKET = "bulk-test-bucket"
TEXTS = [
    "Angela Merkel met Tim Cook of Apple in Berlin.",
    "Paris is the capital of France.",
    "The United Nations met in New York on Monday.",
    "Ada Lovelace worked with Charles Babbage in London.",
]


@pytest.fixture(scope="module")
def engine(tiny_artifact_dir: Path) -> NerEngine:
    return NerEngine.load(tiny_artifact_dir)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


def job(**overrides: Any) -> Job:
    values: dict[str, Any] = {
        "input": f"s3://{BUCKET}/bulk/input/",
        "output": f"s3://{BUCKET}/bulk/output/run1",
        "model_uri": "unused-engine-is-given",
        "model_version": "test-1",
    }
    return Job(**{**values, **overrides})


def run(engine: NerEngine, the_job: Job, **kwargs: Any) -> dict[str, Any]:
    return run_local(the_job, engine_for=lambda: (engine, "test-1"), **kwargs)


def expected_entities(engine: NerEngine, text: str, **options: Any) -> list[dict[str, Any]]:
    [found] = engine.predict([text], **options)
    return [EntityOut.of(entity).model_dump() for entity in found]


def put(s3: Any, key: str, body: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"bulk/input/{key}", Body=body)


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def test_jsonl_with_extra_fields_keeps_order_ids_and_fields(s3: Any, engine: NerEngine) -> None:
    rows = [
        {"id": f"doc-{i}", "text": t, "lang": "en", "meta": {"n": i}} for i, t in enumerate(TEXTS)
    ]
    put(s3, "a.jsonl", jsonl(rows))
    summary = run(engine, job())
    results, errors = run_outputs(location(job().output))
    assert errors == []
    assert [r["id"] for r in results] == [row["id"] for row in rows]
    for row, result in zip(rows, results, strict=True):
        assert result["lang"] == "en" and result["meta"] == row["meta"]
        assert "text" not in result
        assert result["entities"] == expected_entities(engine, row["text"])
        assert result["truncated"] is False
        for entity in result["entities"]:
            assert row["text"][entity["start"] : entity["end"]] == entity["word"]
    assert summary["totals"]["documents"] == len(rows)
    assert summary["totals"]["entities"] == sum(len(r["entities"]) for r in results)
    assert summary["model_version"] == "test-1" and summary["status"] == "SUCCEEDED"


def test_configurable_fields_and_options(s3: Any, engine: NerEngine) -> None:
    rows = [{"key": i, "body": t} for i, t in enumerate(TEXTS)]
    put(s3, "a.jsonl", jsonl(rows))
    options = EntityOptions(aggregation="first", decoding="argmax", min_score=0.5, max_entities=1)
    the_job = job(id_field="key", text_field="body", entities=options)
    run(engine, the_job)
    results, _ = run_outputs(location(the_job.output))
    assert [r["id"] for r in results] == [0, 1, 2, 3]
    for row, result in zip(rows, results, strict=True):
        full = expected_entities(
            engine, row["body"], aggregation="first", decoding="argmax", min_score=0.5
        )
        assert result["entities"] == full[:1]
        assert result["truncated"] == (len(full) > 1)


def test_plain_text_ids_are_key_and_line_and_blank_lines_are_skipped(
    s3: Any, engine: NerEngine
) -> None:
    put(s3, "notes.txt", f"{TEXTS[0]}\r\n\n{TEXTS[1]}\n   \n{TEXTS[2]}".encode())
    run(engine, job())
    results, errors = run_outputs(location(job().output))
    uri = f"s3://{BUCKET}/bulk/input/notes.txt"
    assert [r["id"] for r in results] == [f"{uri}:1", f"{uri}:3", f"{uri}:5"]
    assert results[0]["entities"] == expected_entities(engine, TEXTS[0])
    assert errors == []


def test_gzip_jsonl_and_text(s3: Any, engine: NerEngine) -> None:
    put(s3, "a.jsonl.gz", gzip.compress(jsonl([{"id": 1, "text": TEXTS[0]}])))
    put(s3, "b.txt.gz", gzip.compress(TEXTS[1].encode() + b"\n"))
    summary = run(engine, job(), shard_bytes=8)  # gzip objects are never cut
    results, _ = run_outputs(location(job().output))
    assert [r["id"] for r in results] == [1, f"s3://{BUCKET}/bulk/input/b.txt.gz:1"]
    assert results[1]["entities"] == expected_entities(engine, TEXTS[1])
    assert summary["shards"]["total"] == 2


def test_empty_input_files_give_an_empty_complete_run(s3: Any, engine: NerEngine) -> None:
    put(s3, "empty.jsonl", b"")
    put(s3, "blank.txt", b"\n\n")
    summary = run(engine, job())
    assert summary["status"] == "SUCCEEDED"
    assert summary["totals"] == {"documents": 0, "entities": 0, "errors": 0}
    assert summary["shards"]["total"] == 1  # blank.txt: a shard without records


BAD_LINES: list[tuple[bytes, str]] = [
    (b"\xff\xfe not utf-8", "invalid_encoding"),
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "not_object"),
    (b'{"id": 1}', "missing_field"),
    (b'{"id": 1, "text": 42}', "invalid_field"),
    (b'{"id": 1, "text": "   "}', "empty_text"),
    (b'{"id": 1, "text": "\\ud800 lone"}', "invalid_text"),
    (b"", "empty_line"),
    (json.dumps({"id": "big", "text": "x" * (10 << 20)}).encode(), "text_too_long"),
    (b'{"text": "' + b"y" * (MAX_LINE_BYTES + 10) + b'"}', "line_too_long"),
]


def test_bad_records_of_every_kind_are_reported_and_never_lose_neighbours(
    s3: Any, engine: NerEngine
) -> None:
    lines = []
    for index, (bad, _) in enumerate(BAD_LINES):
        lines.append(json.dumps({"id": f"good-{index}", "text": TEXTS[index % 4]}).encode())
        lines.append(bad)
    lines.append(json.dumps({"id": "last", "text": TEXTS[0]}).encode())
    put(s3, "mixed.jsonl", b"\n".join(lines) + b"\n")
    # Small shards: bad lines, a 10 MB line among them, also sit at shard edges.
    summary = run(engine, job(), shard_bytes=1 << 20)
    results, errors = run_outputs(location(job().output))
    assert [r["id"] for r in results] == [f"good-{i}" for i in range(len(BAD_LINES))] + ["last"]
    uri = f"s3://{BUCKET}/bulk/input/mixed.jsonl"
    assert [(e["file"], e["line"], e["reason"]) for e in errors] == [
        (uri, 2 * (i + 1), reason) for i, (_, reason) in enumerate(BAD_LINES)
    ]
    assert summary["totals"]["errors"] == len(BAD_LINES)
    assert summary["totals"]["documents"] == len(BAD_LINES) + 1


def test_a_lone_surrogate_in_a_passed_through_field_is_kept_as_an_escape(
    s3: Any, engine: NerEngine
) -> None:
    put(s3, "a.jsonl", b'{"id": "\\udc00x", "text": "Paris is nice."}\n')
    run(engine, job())
    results, _ = run_outputs(location(job().output))
    assert results[0]["id"] == "\udc00x"


@st.composite
def corpora(draw: st.DrawFn) -> tuple[bytes, list[str], int]:
    """JSONL bytes (records, blank and broken lines, LF or CRLF, a final break or not),
    the ids of its records in order, and a shard size that cuts anywhere."""
    kinds = draw(
        st.lists(st.sampled_from(["record", "record", "record", "blank", "junk"]), max_size=40)
    )
    lines, ids = [], []
    for index, kind in enumerate(kinds):
        if kind == "record":
            text = draw(st.sampled_from(TEXTS))[: draw(st.integers(1, 60))] + "é"
            ids.append(f"r{index}")
            lines.append(json.dumps({"id": ids[-1], "text": text}, ensure_ascii=False).encode())
        else:
            lines.append(b"" if kind == "blank" else b"{junk")
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    body = newline.join(lines) + (newline if draw(st.booleans()) else b"")
    return body, ids, draw(st.integers(1, max(1, len(body) + 5)))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(corpora())
def test_every_record_appears_exactly_once_in_order_whatever_the_cuts(
    engine: NerEngine, monkeypatch: pytest.MonkeyPatch, corpus: tuple[bytes, list[str], int]
) -> None:
    body, ids, shard_bytes = corpus
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        put(boto3.client("s3"), "c.jsonl", body)
        summary = run(engine, job(), shard_bytes=shard_bytes)
        results, errors = run_outputs(location(job().output))
    assert [r["id"] for r in results] == ids
    lines = body.split(b"\n") if body else []
    if body.endswith(b"\n"):
        lines.pop()
    assert len(errors) == sum(1 for line in lines if line.rstrip(b"\r") in (b"", b"{junk"))
    shards = summary["per_shard"]
    assert len(shards) == summary["shards"]["total"] == summary["shards"]["completed"]
    for before, after in itertools.pairwise(shards):
        assert before["end"] == after["start"]


def test_byte_range_shards_cut_at_line_ends_and_count_lines(s3: Any) -> None:
    lines = [f"line {i} " + "x" * (i % 7) for i in range(50)]
    body = "\n".join(lines).encode()
    put(s3, "t.txt", body)
    source = location(f"s3://{BUCKET}/bulk/input/")
    shards = plan(job(), source, shard_bytes=37)
    assert len(shards) > 5
    assert shards[0].start == 0 and shards[-1].end == len(body)
    for before, after in itertools.pairwise(shards):
        assert before.end == after.start
        assert body[after.start - 1 : after.start] == b"\n"
        assert after.first_line == body[: after.start].count(b"\n") + 1
    assert len({shard.id for shard in shards}) == len(shards)


def test_a_second_run_skips_finished_shards_unless_input_or_model_changed(
    s3: Any, engine: NerEngine
) -> None:
    put(s3, "a.jsonl", jsonl([{"id": 1, "text": TEXTS[0]}]))
    put(s3, "b.jsonl", jsonl([{"id": 2, "text": TEXTS[1]}]))
    source, output = location(job().input), location(job().output)
    shards = plan(job(), source)
    calls: list[int] = []

    def counting() -> tuple[NerEngine, str]:
        calls.append(1)
        return engine, "test-1"

    def outcomes(the_job: Job) -> list[bool]:
        return [
            run_shard(the_job, s, source=source, output=output, engine_for=counting).skipped
            for s in plan(the_job, source)
        ]

    assert outcomes(job()) == [False, False]
    assert outcomes(job()) == [True, True]
    put(s3, "b.jsonl", jsonl([{"id": 2, "text": TEXTS[2]}]))  # new ETag
    assert outcomes(job()) == [True, False]
    assert outcomes(job(model_version="test-2")) == [False, False]
    marker = json.loads(output.get(marker_key(shards[0].id)) or b"")
    assert marker["shard"]["etag"] and marker["model_version"] == "test-1"


def test_a_worker_stops_before_its_deadline_and_resumes_without_duplicates(
    s3: Any, engine: NerEngine
) -> None:
    rows = [{"id": i, "text": TEXTS[i % 4]} for i in range(100)]
    put(s3, "a.jsonl", jsonl(rows))
    the_job = job()
    source, output = location(the_job.input), location(the_job.output)
    [shard] = plan(the_job, source)
    clock = iter([1000.0] + [STOP_MARGIN_SECONDS - 1] * 1000)
    first = process_shard(
        the_job,
        shard,
        source=source,
        output=output,
        engine_for=lambda: (engine, "test-1"),
        time_left=lambda: next(clock),
    )
    assert not first.complete and first.resume is not None
    assert output.get(marker_key(shard.id)) is None  # not done yet
    [part] = first.resume["parts"]
    done_ids = [r["id"] for r in read_jsonl(output, part)]
    assert done_ids == list(range(len(done_ids))) and 0 < len(done_ids) < 100
    final = process_shard(
        the_job,
        shard,
        source=source,
        output=output,
        engine_for=lambda: (engine, "test-1"),
        resume=first.resume,
    )
    assert final.complete and final.documents == 100
    marker = json.loads(output.get(marker_key(shard.id)) or b"")
    assert marker["parts"][0] == part and len(marker["parts"]) == 2
    ids = [r["id"] for key in marker["parts"] for r in read_jsonl(output, key)]
    assert ids == list(range(100))


def test_a_local_run_writes_the_same_layout(tmp_path: Path, engine: NerEngine) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(jsonl([{"id": 1, "text": TEXTS[0]}]))
    the_job = job(input=str(tmp_path / "in"), output=str(tmp_path / "out"))
    run(engine, the_job)
    results, _ = run_outputs(location(the_job.output))
    assert results[0]["entities"] == expected_entities(engine, TEXTS[0])
    assert not list((tmp_path / "out").rglob(".*partial*"))
