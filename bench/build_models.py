"""The two models the benchmark compares, built in a child process of their own.

``python bench/build_models.py SPEC.json`` prints ``{"ours", "ours_description", "hf_dir"}``
as its last line. It imports torch, which the benchmark's parent must not: Linux carries
peak RSS across fork and exec, so every worker would report the parent's.

- baseline: MiniLM-L6 with a seeded random 9-label head, in Hugging Face format;
- ours: the given artifact, or a stand-in exported from the baseline's model the way
  training exports (ONNX, int8) when there is none.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForTokenClassification
from transformers.utils import logging as hf_logging

from nerkit.artifact import MANIFEST, pack
from nerkit.labels import bio_labels
from nerkit.training.base_model import DEFAULT_BASE_MODEL_ORIGIN, resolve_base_model
from nerkit.training.export import build_artifact, export_onnx, quantize_int8
from nerkit.training.hyperparameters import DEFAULT_BASE_MODEL
from nerkit.training.manifest import serving_fields, untrained_manifest

LABELS = bio_labels(["LOC", "MISC", "ORG", "PER"])  # CoNLL-2003's
SEED = 0
STANDIN_MAX_SEQ_LENGTH = 256


def prepare_models(model: Path, work: Path) -> dict[str, str]:
    hf_dir = build_baseline_model(work / "baseline-hf")
    if model.exists():
        return {
            "ours": str(model),
            "ours_description": f"{model} ({describe_artifact(model)})",
            "hf_dir": str(hf_dir),
        }
    description = (
        f"STAND-IN (no artifact at {model}): MiniLM-L6 + random 9-label head (seed {SEED}), "
        "ONNX int8-dynamic, no casing features"
    )
    tarball = build_standin_artifact(hf_dir, work)
    return {"ours": str(tarball), "ours_description": description, "hf_dir": str(hf_dir)}


def build_baseline_model(out_dir: Path) -> Path:
    """MiniLM-L6 encoder from the pip package + a 9-label head (random, seeded), HF format."""
    if (out_dir / "config.json").is_file():
        return out_dir
    base = str(resolve_base_model(DEFAULT_BASE_MODEL))
    torch.manual_seed(SEED)
    hf_logging.set_verbosity_error()  # "classifier newly initialized" is the point here
    model = BertForTokenClassification.from_pretrained(
        base,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    ).eval()
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(out_dir)
    return out_dir


def build_standin_artifact(hf_dir: Path, work: Path) -> Path:
    """The baseline's model exported like training does: ONNX, int8, artifact, tarball."""
    tarball = work / "standin.tar.gz"
    if tarball.is_file():
        return tarball
    model = BertForTokenClassification.from_pretrained(str(hf_dir)).eval()
    onnx_dir = work / "standin-onnx"
    export_onnx(model, onnx_dir / "fp32.onnx", with_casing=False)
    quantize_int8(onnx_dir / "fp32.onnx", onnx_dir / "model.onnx")
    manifest = untrained_manifest(
        name="bench-standin",
        version="bench-standin-1",
        serving=serving_fields(LABELS, max_seq_length=STANDIN_MAX_SEQ_LENGTH, casing=False),
        quantization="int8-dynamic",
    )
    artifact_dir = work / "standin-artifact"
    build_artifact(
        artifact_dir,
        onnx_path=onnx_dir / "model.onnx",
        tokenizer_json=hf_dir / "tokenizer.json",
        manifest={**manifest, "base_model": DEFAULT_BASE_MODEL_ORIGIN},
        optimize=True,
    )
    pack(artifact_dir, tarball)
    return tarball


def describe_artifact(model: Path) -> str:
    """name/version/quantization/casing from the manifest, read without extracting the model."""
    if model.is_dir():
        manifest = json.loads((model / MANIFEST).read_text())
    else:
        with tarfile.open(model, "r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            manifest = json.loads(member.read()) if member else {}
    keys = ("name", "version", "quantization", "casing", "max_seq_length")
    return ", ".join(f"{key}={manifest.get(key)}" for key in keys)


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(prepare_models(Path(spec["model"]), Path(spec["work"]))), flush=True)
