"""NerEngine on the tiny artifact: offsets on any Unicode, long-text windows, batching, casing."""

from __future__ import annotations

import copy
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import BertForTokenClassification

from nerkit import engine as engine_module
from nerkit.artifact import ArtifactError, extract, read_manifest
from nerkit.decoding import AGGREGATIONS, DECODINGS
from nerkit.engine import (
    Entity,
    InvalidTextError,
    NerEngine,
    UnknownLabelsError,
    assign_windows,
    plan_windows,
)
from nerkit.features import LOWER, TITLE, UPPER
from nerkit.training.export import build_artifact, export_onnx, quantize_int8

REPO = Path(__file__).resolve().parents[1]
UNICODE_TEXTS = [
    "Cafe\u0301 au  lait\n",  # combining accent, stripped by the uncased normaliser
    "José👍🏽 met 😀 in 東京",  # emoji with skin tone, CJK
    "👨\u200d👩\u200d👧 family\tday",  # ZWJ sequence, tab
    "Paris\u200d! e\u0301te\u0301 Ångström",  # trailing ZWJ, two combining accents
    "  İstanbul  and ﬁne\u00a0Straße  ",  # İ lower-cases to two characters, NBSP
    "Zero\u200bwidth\ufeff and Ǆemal\r\nnext",  # format characters, CRLF
    "\u2764\ufe0f 🇫🇷 flag   ",  # variation selector, regional indicators
    "",
    " \n\t ",
]
LONG_TEXT = " ".join(
    [
        "Angela Merkel met Barack Obama in Berlin on Tuesday.",
        "The European Union and Microsoft signed a deal in New York.",
        "José Müller moved from São Paulo to Zürich in 2019!",
        "Apple's CEO Tim Cook visited Tokyo, Japan.",
        "Cafe\u0301 de Flore 👨\u200d👩\u200d👧 is in Paris.",
    ]
    * 6
)


def _continues_character(text: str, index: int) -> bool:
    """Whether a span boundary at ``index`` would cut a user-perceived character."""
    if index in (0, len(text)):
        return False
    char = text[index]
    if unicodedata.category(char).startswith("M") or char in "\u200d\ufe0f":
        return True
    if 0x1F3FB <= ord(char) <= 0x1F3FF:  # emoji skin tone
        return True
    return text[index - 1] == "\u200d" and ord(char) >= 0x1F000  # emoji after a ZWJ


def assert_well_formed(text: str, entities: list[Entity]) -> None:
    previous_end = 0
    for entity in entities:
        assert 0 <= entity.start < entity.end <= len(text), entity
        assert entity.word == text[entity.start : entity.end]
        assert entity.word == entity.word.strip(), entity
        assert not _continues_character(text, entity.start), entity
        assert not _continues_character(text, entity.end), entity
        assert entity.start >= previous_end, "entities overlap or are out of order"
        previous_end = entity.end


def _artifact(
    model: torch.nn.Module,
    out_dir: Path,
    tokenizer_json: Path,
    *,
    max_seq_length: int = 64,
    casing: str | None = None,
) -> Path:
    onnx_path = out_dir.with_name(out_dir.name + ".onnx")
    export_onnx(model, onnx_path, with_casing=casing is not None)
    manifest = {
        "name": out_dir.name,
        "version": "test-1",
        "labels": ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"],
        "max_seq_length": max_seq_length,
        "casing": casing,
    }
    build_artifact(out_dir, onnx_path=onnx_path, tokenizer_json=tokenizer_json, manifest=manifest)
    return out_dir


def _variant(source: Path, out_dir: Path, **changes: Any) -> Path:
    """A copy of an artifact with manifest fields changed (checksums rewritten)."""
    manifest = {**read_manifest(source), **changes}
    build_artifact(
        out_dir,
        onnx_path=source / "model.onnx",
        tokenizer_json=source / "tokenizer.json",
        manifest=manifest,
    )
    return out_dir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine")


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> BertForTokenClassification:
    return BertForTokenClassification.from_pretrained(str(tiny_model_dir)).eval()


@pytest.fixture(scope="module")
def engine(tiny_artifact_dir: Path) -> NerEngine:
    return NerEngine.load(tiny_artifact_dir)


@pytest.fixture(scope="module")
def context_free_model(tiny_model: BertForTokenClassification) -> BertForTokenClassification:
    """The tiny model with attention outputs and position embeddings zeroed: a token's
    logits depend on its own id only, so windows cannot change any score."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.bert.embeddings.position_embeddings.weight.zero_()
        for layer in model.bert.encoder.layer:
            layer.attention.output.dense.weight.zero_()
            layer.attention.output.dense.bias.zero_()
    return model


@pytest.fixture(scope="module")
def every_token_b_per(tiny_model: BertForTokenClassification) -> BertForTokenClassification:
    """Predicts B-PER for every token: each token (``simple``) or word is one entity."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[7] = 10.0  # B-PER
    return model


@pytest.fixture(scope="module")
def all_b_artifact(
    every_token_b_per: BertForTokenClassification, workdir: Path, tiny_model_dir: Path
) -> Path:
    return _artifact(
        every_token_b_per, workdir / "all-b", tiny_model_dir / "tokenizer.json", max_seq_length=16
    )


def test_importing_the_engine_does_not_import_torch_or_transformers() -> None:
    code = (
        "import sys, nerkit.engine; "
        "heavy = sorted({'torch', 'transformers'} & set(sys.modules)); "
        "sys.exit(f'imported {heavy}' if heavy else 0)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr


def test_manifest_and_labels(engine: NerEngine) -> None:
    assert engine.manifest["version"] == "test-1"
    assert engine.labels[0] == "O"
    assert engine.entity_types == ["LOC", "MISC", "ORG", "PER"]


@pytest.mark.parametrize("decoding", DECODINGS)
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_offsets_are_exact_on_any_unicode(
    engine: NerEngine, aggregation: str, decoding: str
) -> None:
    results = engine.predict(UNICODE_TEXTS, aggregation=aggregation, decoding=decoding)
    for text, entities in zip(UNICODE_TEXTS, results, strict=True):
        assert_well_formed(text, entities)
    assert sum(map(len, results)) > 10  # the model finds entities in these texts


def test_every_token_maps_to_its_whole_surface(all_b_artifact: Path) -> None:
    engine = NerEngine.load(all_b_artifact)
    words = [[e.word for e in row] for row in engine.predict(UNICODE_TEXTS)]
    assert words == [
        ["Cafe\u0301", "au", "lai", "t"],
        ["José👍🏽", "met", "😀", "in", "東", "京"],
        ["👨\u200d👩\u200d👧", "family", "day"],
        ["Paris\u200d", "!", "e\u0301t", "e\u0301", "Ång", "ström"],
        ["İstanbul", "and", "ﬁ", "ne", "St", "raße"],
        ["Zero", "wi", "dt", "h", "and", "Ǆemal", "next"],
        ["\u2764\ufe0f", "🇫🇷", "flag"],
        [],
        [],
    ]


def test_word_strategies_join_subwords(all_b_artifact: Path) -> None:
    engine = NerEngine.load(all_b_artifact)
    texts = ["  İstanbul  and ﬁne\u00a0Straße  ", "Paris\u200d! e\u0301te\u0301 Zero\u200bwidth"]
    first = engine.predict(texts, aggregation="first")
    assert [(e.word, e.start, e.end) for e in first[0]] == [
        ("İstanbul", 2, 10),
        ("and", 12, 15),
        ("ﬁne", 16, 19),
        ("Straße", 20, 26),
    ]
    # As in the pipeline, a token whose surface is longer than its normalised form ("e\u0301t"
    # vs "et") counts as a subword, so the decomposed word joins the word before it.
    assert [e.word for e in first[1]] == ["Paris\u200d", "! e\u0301te\u0301", "Zero\u200bwidth"]


def _tokenizer(path: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@pytest.mark.parametrize(
    ("length", "capacity", "stride"),
    [
        (1, 14, 3),
        (14, 14, 3),
        (15, 14, 3),
        (100, 14, 3),
        (100, 14, 0),
        (100, 14, 13),
        (517, 254, 63),
    ],
)
def test_windows_cover_every_token_with_the_most_context(
    length: int, capacity: int, stride: int
) -> None:
    starts = plan_windows(length, capacity, stride)
    ends = np.minimum(starts + capacity, length)
    assert starts[0] == 0 and ends[-1] == length
    assert np.all(np.diff(starts) > 0)
    assert np.all(ends[:-1] - starts[1:] >= min(stride, length - capacity))  # overlap
    chosen = assign_windows(length, starts, capacity)
    for token in range(length):
        window = chosen[token]
        assert starts[window] <= token < ends[window]

        def context(w: int, t: int = token) -> int:
            left = t - starts[w] if starts[w] > 0 else length
            right = ends[w] - 1 - t if ends[w] < length else length
            return min(left, right)

        candidates = [w for w in range(len(starts)) if starts[w] <= token < ends[w]]
        assert context(window) == max(context(w) for w in candidates)
        assert context(window) >= (stride - 1) // 2


@pytest.fixture(scope="module")
def context_free_engines(
    context_free_model: BertForTokenClassification, workdir: Path, tiny_model_dir: Path
) -> tuple[Path, Path]:
    tokenizer_json = tiny_model_dir / "tokenizer.json"
    small = _artifact(context_free_model, workdir / "cf-16", tokenizer_json, max_seq_length=16)
    return small, _variant(small, workdir / "cf-512", max_seq_length=512)


@pytest.mark.parametrize("stride", [0, 5, 13])
def test_long_text_windows_lose_and_double_nothing(
    context_free_engines: tuple[Path, Path], stride: int
) -> None:
    small, large = context_free_engines
    windowed = NerEngine.load(small, stride=stride)
    whole = NerEngine.load(large)
    assert len(_tokenizer(small / "tokenizer.json").encode(LONG_TEXT).ids) > 200
    for aggregation in AGGREGATIONS:
        [got] = windowed.predict([LONG_TEXT], aggregation=aggregation)
        [want] = whole.predict([LONG_TEXT], aggregation=aggregation)
        assert_well_formed(LONG_TEXT, got)
        assert [(e.entity_group, e.start, e.end) for e in got] == [
            (e.entity_group, e.start, e.end) for e in want
        ]
        assert [e.score for e in got] == pytest.approx([e.score for e in want], abs=1e-5)
        assert len(got) > 20


def test_long_text_gets_one_entity_per_token(all_b_artifact: Path) -> None:
    encoding = _tokenizer(all_b_artifact / "tokenizer.json").encode(LONG_TEXT)
    expected = [
        (start, end)
        for (start, end), special in zip(
            encoding.offsets, encoding.special_tokens_mask, strict=True
        )
        if not special
    ]
    [entities] = NerEngine.load(all_b_artifact).predict([LONG_TEXT])
    # Snapping only ever extends a token over the combining accent after "Cafe".
    got = [(e.start, e.end) for e in entities]
    assert len(got) == len(expected) > 16 * 10
    assert [start for start, _ in got] == [start for start, _ in expected]
    assert sum(g != e for g, e in zip(got, expected, strict=True)) == LONG_TEXT.count("e\u0301")


def test_long_text_on_a_contextual_model_is_well_formed(
    tiny_artifact_dir: Path, workdir: Path
) -> None:
    engine = NerEngine.load(_variant(tiny_artifact_dir, workdir / "tiny-16", max_seq_length=16))
    for aggregation in AGGREGATIONS:
        [entities] = engine.predict([LONG_TEXT], aggregation=aggregation)
        assert_well_formed(LONG_TEXT, entities)
        assert entities[-1].start > len(LONG_TEXT) - 100  # the last window is decoded too


class _RecordingSession:
    """Wraps an InferenceSession and records the shapes of every batch it runs."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.shapes: list[tuple[int, ...]] = []

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> Any:
        self.shapes.append(feeds["input_ids"].shape)
        return self._session.run(outputs, feeds)


@pytest.fixture
def mixed_texts() -> list[str]:
    return [LONG_TEXT, "Paris", UNICODE_TEXTS[1], "", LONG_TEXT[:300], "Obama met Merkel."]


def _comparable(results: list[list[Entity]]) -> Iterator[list[tuple[str, int, int]]]:
    for entities in results:
        yield [(e.entity_group, e.start, e.end) for e in entities]


@pytest.mark.parametrize("max_seq_length", [16, 64])
def test_batching_does_not_change_results(
    tiny_artifact_dir: Path, workdir: Path, mixed_texts: list[str], max_seq_length: int
) -> None:
    artifact = _variant(
        tiny_artifact_dir, workdir / f"batch-{max_seq_length}", max_seq_length=max_seq_length
    )
    engine = NerEngine.load(artifact, batch_size=3)
    for aggregation in AGGREGATIONS:
        together = engine.predict(mixed_texts, aggregation=aggregation)
        alone = [engine.predict([text], aggregation=aggregation)[0] for text in mixed_texts]
        assert list(_comparable(together)) == list(_comparable(alone))
        for batched, single in zip(together, alone, strict=True):
            assert [e.score for e in batched] == pytest.approx([e.score for e in single], abs=1e-5)


def test_batches_are_sorted_by_length_and_pad_little(
    tiny_artifact_dir: Path, workdir: Path, mixed_texts: list[str]
) -> None:
    engine = NerEngine.load(
        _variant(tiny_artifact_dir, workdir / "sorted-16", max_seq_length=16), batch_size=4
    )
    windows = [
        w
        for i, text in enumerate(mixed_texts)
        for w in engine._windows(i, engine._document(text, engine._encode([text])[0]))
    ]
    batches = engine._batches(windows)
    assert sorted(i for batch in batches for i in batch) == list(range(len(windows)))
    lengths = [[len(windows[i].ids) for i in batch] for batch in batches]
    assert all(len(batch) <= 4 for batch in lengths)
    assert [b[0] for b in lengths] == sorted(b[0] for b in lengths)
    # Only similar lengths share a batch: padding stays a small fraction of the work.
    assert all(max(b) <= 1.25 * min(b) + 4 for b in lengths)
    assert any(len(b) > 1 for b in lengths)

    recorder = _RecordingSession(engine._session)
    engine._session = recorder
    engine.predict(mixed_texts)
    widths = [width for _, width in recorder.shapes]
    assert widths == sorted(widths) and max(widths) <= 16
    assert sum(rows for rows, _ in recorder.shapes) == len(windows)


def test_int8_results_do_not_depend_on_the_request(
    tiny_artifact_dir: Path, workdir: Path, mixed_texts: list[str]
) -> None:
    """Dynamic int8 scales activations per batch: the engine must not batch such models."""
    int8 = workdir / "int8.onnx"
    quantize_int8(tiny_artifact_dir / "model.onnx", int8)
    directory = workdir / "int8-artifact"
    build_artifact(
        directory,
        onnx_path=int8,
        tokenizer_json=tiny_artifact_dir / "tokenizer.json",
        manifest={**read_manifest(tiny_artifact_dir), "quantization": "int8"},
    )
    engine = NerEngine.load(directory)
    assert engine._batch_size == 1
    together = engine.predict(mixed_texts)
    alone = [engine.predict([text])[0] for text in mixed_texts]
    assert together == alone  # scores included, exactly


def test_labels_and_min_score_filter(engine: NerEngine) -> None:
    texts = [LONG_TEXT[:400]]
    [everything] = engine.predict(texts)
    [people] = engine.predict(texts, labels={"PER"})
    assert people == [e for e in everything if e.entity_group == "PER"] != []
    threshold = float(np.median([e.score for e in everything]))
    [confident] = engine.predict(texts, min_score=threshold)
    assert confident == [e for e in everything if e.score >= threshold]
    assert 0 < len(confident) < len(everything)


class CountingLabels(list[str]):
    """A ``labels`` list that counts how often the engine reads it."""

    iterations = 0
    lookups = 0

    def __iter__(self) -> Iterator[str]:
        self.iterations += 1
        return super().__iter__()

    def __contains__(self, item: object) -> bool:
        self.lookups += 1
        return super().__contains__(item)


def test_labels_are_read_once_per_request_however_many_entities(engine: NerEngine) -> None:
    # A list scanned once per entity made a repeated list (["PER"] * 200_000) cost minutes.
    texts = [LONG_TEXT]
    [everything] = engine.predict(texts)
    labels = CountingLabels(["PER", "LOC"] * 50)
    [kept] = engine.predict(texts, labels=labels)
    assert kept == [e for e in everything if e.entity_group in {"PER", "LOC"}] != []
    assert (labels.iterations, labels.lookups) == (1, 0)


def test_self_test_passes_a_model_that_runs(engine: NerEngine) -> None:
    engine.self_test()


def test_self_test_refuses_a_max_seq_length_beyond_the_graphs_positions(
    tiny_artifact_dir: Path, workdir: Path
) -> None:
    # The tiny graph has 512 positions. A release claiming more loads fine, and then every
    # text longer than 512 tokens fails: only running a full window shows it.
    claims_1024 = NerEngine.load(
        _variant(tiny_artifact_dir, workdir / "claims-1024", max_seq_length=1024)
    )
    with pytest.raises(ArtifactError, match=r"window of max_seq_length \(1024\) tokens"):
        claims_1024.self_test()
    at_the_limit = _variant(tiny_artifact_dir, workdir / "claims-512", max_seq_length=512)
    NerEngine.load(at_the_limit).self_test()


def test_self_test_refuses_scores_that_are_not_finite(
    tiny_model: BertForTokenClassification, workdir: Path, tiny_model_dir: Path
) -> None:
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.classifier.bias[1] = float("inf")  # softmax: inf - inf is NaN
    engine = NerEngine.load(_artifact(model, workdir / "nan", tiny_model_dir / "tokenizer.json"))
    with pytest.raises(ArtifactError, match="not finite"):
        engine.self_test()


def test_self_test_blames_memory_not_the_artifact(
    tiny_artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = NerEngine.load(tiny_artifact_dir)

    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Failed to allocate memory for requested buffer of size 1048576")

    monkeypatch.setattr(engine._session, "run", out_of_memory)
    with pytest.raises(MemoryError):
        engine.self_test()


def test_bad_requests_are_refused(engine: NerEngine) -> None:
    with pytest.raises(UnknownLabelsError, match="unknown entity types") as unknown:
        engine.predict(["x"], labels=["PER", "PERSON", "LOC", "GPE", "PERSON"])
    assert unknown.value.unknown == ["PERSON", "GPE"]
    assert unknown.value.known == engine.entity_types
    with pytest.raises(ValueError, match="aggregation"):
        engine.predict(["x"], aggregation="none")
    with pytest.raises(TypeError):
        engine.predict("a single string")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text 1 is not a string"):
        engine.predict(["fine", b"bytes"])  # type: ignore[list-item]
    # A lone surrogate (JSON can carry one) is found by index, even among valid non-ASCII.
    with pytest.raises(InvalidTextError, match="surrogate") as invalid:
        engine.predict(["São Paulo", "Zoë", "bad \ud800 text", "fine"])
    assert invalid.value.index == 2
    assert isinstance(invalid.value, ValueError)
    assert engine.predict([]) == []


def test_bad_settings_are_refused(tiny_artifact_dir: Path) -> None:
    with pytest.raises(ValueError, match="stride"):
        NerEngine.load(tiny_artifact_dir, stride=62)  # 64 minus [CLS] and [SEP]
    with pytest.raises(ValueError, match="threads"):
        NerEngine.load(tiny_artifact_dir, threads=0)


def test_the_packed_artifact_loads_and_predicts_the_same(
    tiny_artifact_tar: Path, engine: NerEngine, tmp_path: Path
) -> None:
    extract(tiny_artifact_tar, tmp_path / "model")
    assert NerEngine.load(tmp_path / "model").predict(UNICODE_TEXTS) == engine.predict(
        UNICODE_TEXTS
    )


def test_a_tampered_artifact_is_refused(tiny_artifact_dir: Path, workdir: Path) -> None:
    copy_dir = _variant(tiny_artifact_dir, workdir / "tampered")
    with (copy_dir / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match=r"model\.onnx"):
        NerEngine.load(copy_dir)


def test_the_manifest_transition_prior_steers_viterbi(
    tiny_artifact_dir: Path, workdir: Path, engine: NerEngine
) -> None:
    n = len(engine.labels)
    favour_o = [0.0] + [-30.0] * (n - 1)  # log-probabilities: only O ever happens
    transitions = {"weight": 1.0, "start": favour_o, "matrix": [favour_o] * n}
    prior_dir = _variant(tiny_artifact_dir, workdir / "prior", transitions=transitions)
    steered = NerEngine.load(prior_dir)
    assert sum(map(len, engine.predict(UNICODE_TEXTS))) > 0
    assert steered.predict(UNICODE_TEXTS) == [[] for _ in UNICODE_TEXTS]
    assert steered.predict(UNICODE_TEXTS, decoding="argmax") == engine.predict(
        UNICODE_TEXTS, decoding="argmax"
    )
    off = {**transitions, "weight": 0.0}
    unweighted = NerEngine.load(_variant(tiny_artifact_dir, workdir / "prior-off", transitions=off))
    assert unweighted.predict(UNICODE_TEXTS) == engine.predict(UNICODE_TEXTS)


@pytest.mark.parametrize(
    "transitions",
    [
        {"weight": 1.0, "start": [0.0] * 3, "matrix": [[0.0] * 9] * 9},
        {"weight": 1.0, "start": [0.0] * 9, "matrix": [[0.0] * 9] * 8},
        {"weight": 1.0, "start": [0.0] * 9},
        {"weight": -1.0, "start": [0.0] * 9, "matrix": [[0.0] * 9] * 9},
        {"weight": 1.0, "start": [None] * 9, "matrix": [[0.0] * 9] * 9},
        {"weight": "x", "start": [0.0] * 9, "matrix": [[0.0] * 9] * 9},
        [1, 2],
    ],
)
def test_malformed_transitions_are_refused(
    tiny_artifact_dir: Path, tmp_path: Path, transitions: Any
) -> None:
    broken = _variant(tiny_artifact_dir, tmp_path / "model", transitions=transitions)
    with pytest.raises(ArtifactError, match="transitions"):
        NerEngine.load(broken)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RuntimeError("Failed to allocate memory for requested buffer of size 4096"), MemoryError),
        (RuntimeError("std::bad_alloc"), MemoryError),
        (MemoryError(), MemoryError),
        (RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF"), ArtifactError),
    ],
)
def test_too_little_memory_is_not_blamed_on_the_artifact(
    tiny_artifact_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    expected: type[Exception],
) -> None:
    """Serving remembers a release that fails with ArtifactError; memory may be back later."""

    def failing_session(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(engine_module.ort, "InferenceSession", failing_session)
    with pytest.raises(expected) as raised:
        NerEngine.load(tiny_artifact_dir)
    assert not isinstance(raised.value, ArtifactError) or expected is ArtifactError


class CasingTagger(torch.nn.Module):
    """Labels a token from its casing alone: Title -> B-PER, UPPER -> B-ORG, lower -> O.

    Token embeddings are zero, so ids cannot tell "Paris" from "paris"; only casing_ids can.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tokens = torch.nn.Embedding(30522, 3)
        self.casing = torch.nn.Embedding(7, 3)
        self.classifier = torch.nn.Linear(3, 9)
        with torch.no_grad():
            self.tokens.weight.zero_()
            self.casing.weight.zero_()  # other shapes: all-zero logits, argmax O
            self.casing.weight[TITLE] = torch.tensor([1.0, 0.0, 0.0])
            self.casing.weight[UPPER] = torch.tensor([0.0, 1.0, 0.0])
            self.casing.weight[LOWER] = torch.tensor([0.0, 0.0, 1.0])
            self.classifier.weight.zero_()
            self.classifier.bias.zero_()
            self.classifier.weight[7, 0] = 10.0  # B-PER
            self.classifier.weight[5, 1] = 10.0  # B-ORG
            self.classifier.weight[0, 2] = 10.0  # O

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, casing_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.tokens(input_ids) + self.casing(casing_ids)
        return self.classifier(hidden * attention_mask.unsqueeze(-1))


@pytest.fixture(scope="module")
def casing_artifact(workdir: Path, tiny_model_dir: Path) -> Path:
    return _artifact(
        CasingTagger().eval(),
        workdir / "casing",
        tiny_model_dir / "tokenizer.json",
        casing="token_shape_v1",
    )


def test_casing_ids_are_fed_when_the_manifest_says_so(casing_artifact: Path) -> None:
    texts = ["Paris visited NASA today", "paris visited nasa today", "PARIS Visited Nasa"]
    tokenizer = _tokenizer(casing_artifact / "tokenizer.json")
    assert tokenizer.encode(texts[0]).ids == tokenizer.encode(texts[1]).ids
    engine = NerEngine.load(casing_artifact)
    got = [[(e.entity_group, e.word) for e in row] for row in engine.predict(texts)]
    assert got == [
        [("PER", "Paris"), ("ORG", "NASA")],
        [],
        [("ORG", "PARIS"), ("PER", "Visited"), ("PER", "Nasa")],
    ]


def test_casing_graph_and_manifest_must_agree(
    casing_artifact: Path, tiny_artifact_dir: Path, workdir: Path
) -> None:
    with pytest.raises(ArtifactError, match="casing"):
        NerEngine.load(_variant(casing_artifact, workdir / "casing-null", casing=None))
    with pytest.raises(ArtifactError, match="casing"):
        NerEngine.load(_variant(tiny_artifact_dir, workdir / "no-casing", casing="token_shape_v1"))
    with pytest.raises(ArtifactError, match="unsupported casing"):
        NerEngine.load(_variant(casing_artifact, workdir / "casing-v9", casing="shape_v9"))
