"""The training device: a GPU instance whose CUDA is unusable fails the job at once, with the
reason in SageMaker's failure file, instead of training on the CPU at GPU prices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_training import CONLL

from nerkit.training import job
from nerkit.training.device import CudaUnusableError, has_gpu, training_device
from nerkit.training.paths import JobPaths


def _simulate_broken_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU instance whose driver is too old for torch's CUDA runtime, as torch shows it."""

    def init() -> None:
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040).")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "init", init)


def _instance(root: Path, instance_type: str) -> JobPaths:
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    resource = {
        "current_host": "algo-1",
        "hosts": ["algo-1"],
        "current_instance_type": instance_type,
    }
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    return JobPaths(root)


@pytest.mark.parametrize(
    ("instance", "gpu"),
    [
        ("ml.g6.xlarge", True),
        ("ml.g4dn.xlarge", True),
        ("ml.g5.2xlarge", True),
        ("ml.p4d.24xlarge", True),
        ("ml.m5.xlarge", False),
        ("ml.c5.2xlarge", False),
        ("ml.trn1.2xlarge", False),
        (None, False),
    ],
)
def test_gpu_instance_families(instance: str | None, gpu: bool) -> None:
    assert has_gpu(instance) is gpu


def test_cpu_instances_and_local_runs_train_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _simulate_broken_cuda(monkeypatch)
    assert training_device(JobPaths(tmp_path)) == torch.device("cpu")  # no resourceconfig
    assert training_device(_instance(tmp_path, "ml.m5.xlarge")) == torch.device("cpu")


def test_a_gpu_instance_with_unusable_cuda_refuses_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _simulate_broken_cuda(monkeypatch)
    with pytest.raises(CudaUnusableError, match=r"ml\.g6\.xlarge has an NVIDIA GPU.*too old"):
        training_device(_instance(tmp_path, "ml.g6.xlarge"))


def test_the_job_fails_fast_and_writes_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    """The container contract end to end: exit code 1 and /opt/ml/output/failure."""
    _simulate_broken_cuda(monkeypatch)
    _instance(tmp_path, "ml.g4dn.xlarge")
    for channel in ("train", "validation"):
        (tmp_path / "input" / "data" / channel).mkdir(parents=True)
        (tmp_path / "input" / "data" / channel / "data.txt").write_text(CONLL)
    hyperparameters = {"base_model": str(tiny_model_dir), "epochs": "1", "max_seq_length": "32"}
    (tmp_path / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    monkeypatch.setenv("NERKIT_ML_ROOT", str(tmp_path))

    assert job.main() == 1

    failure = (tmp_path / "output" / "failure").read_text()
    assert failure.startswith("CudaUnusableError: ml.g4dn.xlarge has an NVIDIA GPU")
    assert "too old" in failure
    assert not (tmp_path / "model" / "manifest.json").exists()
    assert not (tmp_path / "checkpoints" / "checkpoint.pt").exists()
