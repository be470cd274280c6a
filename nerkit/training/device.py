"""Where training runs: the GPU on a GPU instance, the CPU elsewhere, never silently the CPU
on a GPU instance.

torch reports an unusable CUDA (a host driver too old for the wheel's CUDA runtime, no device
visible to the container) only as ``torch.cuda.is_available() == False``; training would then
go on for hours on the CPU at GPU prices. SageMaker says which instance the job runs on in
``/opt/ml/input/config/resourceconfig.json`` (``current_instance_type``); on a GPU family
without a usable CUDA the job stops at once with the reason, which ``job.main`` writes to
SageMaker's failure file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from nerkit.training.paths import JobPaths

# SageMaker's NVIDIA GPU families: ml.g4dn, ml.g5, ml.g6, ml.g6e, ml.p3, ml.p4d, ml.p5, ...
_GPU_INSTANCE_RE = re.compile(r"ml\.[gp]\d")


class CudaUnusableError(RuntimeError):
    """The instance has an NVIDIA GPU, but torch cannot use it."""


def resource_config(paths: JobPaths) -> Path:
    return paths.root / "input" / "config" / "resourceconfig.json"


def instance_type(paths: JobPaths) -> str | None:
    """The SageMaker instance type the job runs on; None outside SageMaker."""
    path = resource_config(paths)
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("current_instance_type")


def has_gpu(instance: str | None) -> bool:
    return instance is not None and _GPU_INSTANCE_RE.match(instance) is not None


def cuda_error() -> str:
    """Why torch cannot use CUDA, in torch's words (empty when it can)."""
    if torch.cuda.is_available():
        return ""
    try:
        torch.cuda.init()
    except Exception as exc:  # torch raises RuntimeError or AssertionError, with the reason
        return f"{type(exc).__name__}: {exc}"
    return "torch.cuda.is_available() is False"


def training_device(paths: JobPaths | None = None) -> torch.device:
    """The GPU when CUDA works; the CPU on an instance without one; otherwise an error."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    instance = instance_type(paths or JobPaths.from_env())
    if has_gpu(instance):
        build = (
            f"torch {torch.__version__} needs a driver for CUDA {torch.version.cuda}"
            if torch.version.cuda
            else f"torch {torch.__version__} is a CPU-only build"
        )
        raise CudaUnusableError(
            f"{instance} has an NVIDIA GPU but CUDA is unusable ({cuda_error()}); {build}. "
            "Refusing to train on the CPU at GPU prices: use an instance type whose driver "
            "supports this CUDA version (docs/DEPLOY.md, 'The training instance and its CUDA "
            "build')."
        )
    return torch.device("cpu")
