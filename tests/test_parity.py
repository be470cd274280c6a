"""Parity with transformers: the engine vs the token-classification pipeline, decoding vs the
pipeline's own aggregation code, and the exported / quantized ONNX graphs vs torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import BertForTokenClassification, pipeline
from transformers.pipelines.token_classification import (
    AggregationStrategy,
    TokenClassificationPipeline,
)

from nerkit.decoding import AGGREGATIONS, decode
from nerkit.engine import NerEngine
from nerkit.training.export import export_onnx, quantize_int8

SENTENCES = [
    "Angela Merkel met Barack Obama in Berlin on Tuesday.",
    "The European Union and Microsoft signed a deal in New York.",
    "Apple's CEO Tim Cook visited Tokyo, Japan, in 2019.",
    "Jean-Luc Picard commands the USS Enterprise (NCC-1701-D).",
    "O'Brien and McDonald's opened 3,000 stores across the U.S.A.",
    "Dr. Martin Luther King Jr. spoke in Washington, D.C.",
    "She flew from São Paulo to Zürich via Frankfurt am Main.",
    "José Müller and François Hollande met Łukasz in Kraków.",
    "Cafe\u0301 de Flore is on Boulevard Saint-Germain, Paris.",
    "Nikola Tesla was born in Smiljan, Austrian Empire (today's Croatia).",
    "東京 and 北京 are capitals; Москва is too.",
    "Apple Inc. reported $89.5 billion revenue for Q4 2023.",
    "Manchester United beat Real Madrid 3-1 at Old Trafford!",
    "The well-known rock'n'roll band played at Madison Square Garden.",
    "Emails: info@example.com, visit https://www.example.org/path?q=1.",
    "Prime Minister Narendra Modi met President Emmanuel Macron.",
    "I love 🍕 and 🇮🇹 Italy! 👨\u200d👩\u200d👧 Family trip to Rome.",
    "   Leading and trailing spaces around London   ",
    "Tabs\tand\nnewlines\nbetween Amsterdam\tand Rotterdam",
    "ALL CAPS HEADLINE: NASA LAUNCHES ARTEMIS FROM FLORIDA",
    "lowercase mentions of google, amazon and seattle",
    "Numbers like 1,234.56 and 7th or 21st-century aren't entities.",
    "Hyphenated names: Mary-Jane Watson-Parker and Anne-Marie.",
    "Quotes \"Hamlet\" by Shakespeare and 'Les Misérables' by Hugo.",
    "The Nile flows through Egypt, Sudan and Uganda.",
    "Ünïcödé àccents ëverywhere in Ísafjörður and Þórshöfn.",
    "x [SEP] y [CLS] z [UNK] w",
    "Mixed scripts: Παρίσι, Париж and パリ mean Paris.",
    "Zero\u200bwidth space and soft\u00adhyphen in Rotterdam",
    "Amazon.com's Jeff Bezos met Elon Musk at SpaceX HQ.",
]


@pytest.fixture(scope="module")
def engine(tiny_artifact_dir: Path) -> NerEngine:
    return NerEngine.load(tiny_artifact_dir)


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path) -> Iterator[Any]:
    # torch's intra-op threads only contend with each other on a model this small.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield pipeline("token-classification", model=str(tiny_model_dir))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> BertForTokenClassification:
    return BertForTokenClassification.from_pretrained(str(tiny_model_dir)).eval()


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_engine_matches_transformers_pipeline(
    engine: NerEngine, classifier: Any, aggregation: str
) -> None:
    expected = classifier(SENTENCES, aggregation_strategy=aggregation)
    ours = engine.predict(SENTENCES, aggregation=aggregation, decoding="argmax")
    multi_token = 0
    for text, want, got in zip(SENTENCES, expected, ours, strict=True):
        assert [(e["entity_group"], e["start"], e["end"]) for e in want] == [
            (e.entity_group, e.start, e.end) for e in got
        ], text
        for pipe_entity, entity in zip(want, got, strict=True):
            assert entity.score == pytest.approx(float(pipe_entity["score"]), abs=1e-4)
            assert entity.word == text[entity.start : entity.end]
            multi_token += " " in entity.word
    # The comparison means something only if the model predicts grouped entities.
    assert multi_token >= 3


def test_strategies_disagree_on_this_model(engine: NerEngine) -> None:
    """Guard for the parity test: word strategies are exercised only if subwords disagree."""
    results = {a: engine.predict(SENTENCES, aggregation=a, decoding="argmax") for a in AGGREGATIONS}
    assert results["simple"] != results["first"]
    assert results["first"] != results["average"] or results["first"] != results["max"]


def _pipeline_stub(labels: list[str]) -> TokenClassificationPipeline:
    """The real pipeline class with only what its aggregation code reads."""
    stub = TokenClassificationPipeline.__new__(TokenClassificationPipeline)
    stub.model = SimpleNamespace(config=SimpleNamespace(id2label=dict(enumerate(labels))))
    stub.tokenizer = SimpleNamespace(convert_tokens_to_string=" ".join)
    return stub


def _random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    labels = list(rng.choice([["O", "B-A", "I-A", "B-B", "I-B"], ["O", "A", "B", "B-C", "I-C"]]))
    length = int(rng.integers(1, 25))
    # Peaked random distributions: clear winners. Some rows are a shuffle of the previous
    # one: the same top score for another label, a tie that strategies must break alike.
    scores = rng.dirichlet(np.full(len(labels), 0.3), size=length).astype(np.float32)
    for row in range(1, length):
        if rng.random() < 0.2:
            scores[row] = rng.permutation(scores[row - 1])
    subword = rng.random(length) < 0.4
    return scores, subword, labels


def test_decoding_matches_pipeline_aggregation_code_on_random_scores() -> None:
    rng = np.random.default_rng(7)
    for _ in range(400):
        scores, subword, labels = _random_case(rng)
        text = " ".join(["ab"] * len(scores))
        offsets = np.array([[3 * i, 3 * i + 2] for i in range(len(scores))])
        pre_entities = [
            {
                "word": text[start:end],
                "scores": row,
                "start": int(start),
                "end": int(end),
                "index": i,
                "is_subword": bool(flag),
            }
            for i, (row, (start, end), flag) in enumerate(
                zip(scores, offsets, subword, strict=True)
            )
        ]
        stub = _pipeline_stub(labels)
        for aggregation in AGGREGATIONS:
            grouped = stub.aggregate(pre_entities, AggregationStrategy(aggregation))
            want = [g for g in grouped if g["entity_group"] != "O"]
            got = decode(text, scores, offsets, subword, labels, aggregation, "argmax")
            assert [(g["entity_group"], g["start"], g["end"]) for g in want] == [
                (e.entity_group, e.start, e.end) for e in got
            ], (aggregation, labels, scores, subword)
            for g, e in zip(want, got, strict=True):
                assert e.score == pytest.approx(float(g["score"]), abs=1e-6)


def _onnx_logits(path: Path, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    return session.run(["logits"], feeds)[0]


def _batch(tiny_model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.enable_padding(pad_id=0)
    encodings = tokenizer.encode_batch(SENTENCES[:8])
    input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
    return input_ids, np.array([e.attention_mask for e in encodings], dtype=np.int64)


def test_exported_graph_has_the_contract_signature_and_matches_torch(
    tiny_model: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "model.onnx"
    export_onnx(tiny_model, path, with_casing=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {node.name: (node.type, node.shape) for node in session.get_inputs()}
    assert inputs == {
        "input_ids": ("tensor(int64)", ["batch", "sequence"]),
        "attention_mask": ("tensor(int64)", ["batch", "sequence"]),
    }
    [output] = session.get_outputs()
    assert (output.name, output.type, output.shape) == (
        "logits",
        "tensor(float)",
        ["batch", "sequence", 9],
    )
    assert onnx.load(str(path)).opset_import[0].version == 17
    input_ids, attention_mask = _batch(tiny_model_dir)
    with torch.no_grad():
        expected = tiny_model(
            input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
        ).logits.numpy()
    np.testing.assert_allclose(_onnx_logits(path, input_ids, attention_mask), expected, atol=1e-4)
    assert tiny_model.training is False


def test_export_restores_training_mode(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = BertForTokenClassification.from_pretrained(str(tiny_model_dir)).train()
    export_onnx(model, tmp_path / "model.onnx", with_casing=False)
    assert model.training


@pytest.mark.slow
def test_int8_quantization_stays_close_to_fp32(
    tiny_artifact_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    fp32 = tiny_artifact_dir / "model.onnx"
    input_ids, attention_mask = _batch(tiny_model_dir)
    reference = _onnx_logits(fp32, input_ids, attention_mask)
    real = attention_mask.astype(bool)
    for embeddings in (True, False):
        int8 = tmp_path / f"model-{embeddings}.onnx"
        quantize_int8(fp32, int8, quantize_embeddings=embeddings)
        ops = [node.op_type for node in onnx.load(str(int8)).graph.node]
        assert "MatMulInteger" in ops
        # Gather quantization puts a DequantizeLinear after each embedding table.
        assert ("DequantizeLinear" in ops) == embeddings
        logits = _onnx_logits(int8, input_ids, attention_mask)
        spread = reference[real].max() - reference[real].min()
        assert np.abs(logits - reference)[real].max() < 0.05 * spread
        agreement = (logits.argmax(-1) == reference.argmax(-1))[real].mean()
        assert agreement > 0.9
    assert (tmp_path / "model-True.onnx").stat().st_size < fp32.stat().st_size / 2


@pytest.mark.slow
def test_int8_quantization_keeps_excluded_nodes_in_fp32(
    tiny_artifact_dir: Path, tmp_path: Path
) -> None:
    fp32 = tiny_artifact_dir / "model.onnx"
    classifier = [
        node.name
        for node in onnx.load(str(fp32)).graph.node
        if node.op_type == "MatMul" and "classifier" in node.name
    ]
    assert classifier, "the exported graph names its classifier MatMul"
    int8 = tmp_path / "model.onnx"
    quantize_int8(fp32, int8, quantize_embeddings=False, exclude_nodes=classifier)
    kept = {node.name: node.op_type for node in onnx.load(str(int8)).graph.node}
    assert all(kept.get(name) == "MatMul" for name in classifier)
    with pytest.raises(ValueError, match="not in the graph"):
        quantize_int8(fp32, tmp_path / "bad.onnx", exclude_nodes=["no-such-node"])
