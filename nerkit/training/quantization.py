"""Export a trained model to ONNX and choose its quantization by what the engine measures.

The fp32 export (with ONNX Runtime's BERT fusions where they apply) is the reference; int8
is kept only if its validation F1 through the serving engine stays within
``MAX_QUANTIZATION_F1_LOSS`` of it, trying embeddings quantized too (smallest) first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerkit.engine import NerEngine
from nerkit.training.data import Example
from nerkit.training.export import (
    build_artifact,
    check_onnx,
    export_onnx,
    fuse_transformer,
    quantize_int8,
)
from nerkit.training.hyperparameters import Hyperparameters
from nerkit.training.manifest import result_serving_fields, untrained_manifest
from nerkit.training.progress import stage
from nerkit.training.served import engine_scores
from nerkit.training.train import TrainResult

log = logging.getLogger(__name__)

# The int8 artifact must stay this close to the fp32 one (F1 points / 100).
MAX_QUANTIZATION_F1_LOSS = 0.003
# int8 variants, smallest first: embeddings are about half the weights.
INT8_VARIANTS = (("int8", True), ("int8-no-embeddings", False))


@dataclass(frozen=True)
class Candidate:
    """An artifact directory under evaluation and its validation scores through the engine."""

    directory: Path
    quantization: str
    scores: dict[str, Any]

    def engine(self) -> NerEngine:
        return _engine(self.directory)


@dataclass(frozen=True)
class Choice:
    """The artifact kept, the fp32 reference, every int8 variant tried, and why."""

    chosen: Candidate
    fp32: Candidate
    tried: tuple[Candidate, ...]
    reason: str

    def record(self) -> dict[str, Any]:
        """The manifest's ``quantization_choice``: what was kept, why, and what was measured."""
        return {
            "chosen": self.chosen.quantization,
            "reason": self.reason,
            "max_f1_loss": MAX_QUANTIZATION_F1_LOSS,
            "validation_f1": {
                candidate.quantization: candidate.scores["f1"]
                for candidate in (self.fp32, *self.tried)
            },
        }


def export_and_choose(
    result: TrainResult,
    hp: Hyperparameters,
    tokenizer_json: Path,
    work: Path,
    validation: Sequence[Example],
) -> Choice:
    """Export fp32, quantize if asked, and keep the smallest artifact within the F1 budget."""
    fp32_onnx = _export_fp32(result, hp, work)
    manifest = untrained_manifest(
        name=hp.name,
        version="candidate",
        serving=result_serving_fields(hp, result),
        quantization="none",
    )

    def candidate(onnx_path: Path, quantization: str) -> Candidate:
        directory = work / f"artifact-{quantization}"
        log.info("candidate %s: validation through the serving engine", quantization)
        build_artifact(
            directory,
            onnx_path=onnx_path,
            tokenizer_json=tokenizer_json,
            manifest={**manifest, "quantization": quantization},
        )
        return Candidate(directory, quantization, engine_scores(_engine(directory), validation))

    fp32 = candidate(fp32_onnx, "none")
    if hp.quantize != "int8":
        return _chosen(Choice(fp32, fp32, (), "fp32 as asked (quantize=none)"))
    tried: list[Candidate] = []
    for quantization, embeddings in INT8_VARIANTS:
        int8_onnx = work / f"model.{quantization}.onnx"
        with stage(f"quantizing to {quantization}"), _onnxruntime_notes_quiet():
            quantize_int8(fp32_onnx, int8_onnx, quantize_embeddings=embeddings)
        int8 = candidate(int8_onnx, quantization)
        tried.append(int8)
        loss = fp32.scores["f1"] - int8.scores["f1"]
        if loss <= MAX_QUANTIZATION_F1_LOSS:
            reason = (
                f"{quantization}: validation F1 {int8.scores['f1']:.4f} against fp32 "
                f"{fp32.scores['f1']:.4f}, a loss of {loss:.4f} within the "
                f"{MAX_QUANTIZATION_F1_LOSS} allowed"
            )
            return _chosen(Choice(int8, fp32, tuple(tried), reason))
    losses = ", ".join(f"{c.quantization} {fp32.scores['f1'] - c.scores['f1']:.4f}" for c in tried)
    reason = (
        f"fp32 kept, about 4x larger, because int8 lost more validation F1 than the "
        f"{MAX_QUANTIZATION_F1_LOSS} allowed (fp32 {fp32.scores['f1']:.4f}; loss: {losses})"
    )
    return _chosen(Choice(fp32, fp32, tuple(tried), reason))


def _chosen(choice: Choice) -> Choice:
    if choice.chosen is choice.fp32 and choice.tried:
        log.warning("quantization: %s", choice.reason)
    else:
        log.info("quantization: %s", choice.reason)
    return choice


@contextmanager
def _onnxruntime_notes_quiet() -> Iterator[None]:
    """ONNX Runtime's graph tools log at INFO what they do to every node: a line per tensor
    without static quantization parameters (all activations, as dynamic quantization
    intends), each fusion and removed reshape. The summary that matters is logged here
    ("fused operators", the quantization choice); their warnings and errors still show.
    Training is single-threaded around these calls, so the process-wide switch is safe."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


def _export_fp32(result: TrainResult, hp: Hyperparameters, work: Path) -> Path:
    """The fp32 ONNX graph, fused where ONNX Runtime's BERT patterns apply."""
    exported = work / "model.fp32.onnx"
    with stage("exporting to ONNX (fp32)"):
        export_onnx(result.model, exported, with_casing=hp.casing)
    config = result.model.encoder.config
    if config.model_type != "bert":  # the fusions are ONNX Runtime's BERT patterns
        return exported
    fused = work / "model.fused.onnx"
    with stage("fusing the transformer graph"), _onnxruntime_notes_quiet():
        ops = fuse_transformer(
            exported, fused, num_heads=config.num_attention_heads, hidden_size=config.hidden_size
        )
    log.info("fused operators: %s", ops)
    with stage("checking the fused graph against torch"):
        check_onnx(result.model, fused, with_casing=hp.casing)
    return fused


def _engine(directory: Path) -> NerEngine:
    return NerEngine.load(directory, threads=max(1, os.cpu_count() or 1))
