"""The images' pinned requirements install on their base images: pip resolves each image's
requirements (dependencies included) against PyPI for the base's Python, glibc and CPU, wheels
only, as ``pip install`` inside that image would.

There is no Docker engine here, so this is the check that catches a base image too old for a
wheel: the serving image was on ``public.ecr.aws/lambda/python:3.11`` (Amazon Linux 2, glibc
2.26), where onnxruntime 1.32 and numpy 2.4 have no wheel; the last test shows the check
refuses exactly that base. ``pip install --dry-run --report`` reads wheel metadata only
(PyPI serves it separately, PEP 658), so torch's CUDA build and its nvidia-* dependencies
cost kilobytes, not gigabytes. pip evaluates dependencies' environment markers for the
interpreter and machine it runs on, not the target: the one CPU-dependent marker among the
serving dependencies (huggingface_hub's hf-xet) holds on x86_64 and aarch64 alike, and the
training image is x86_64 only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPI = "https://pypi.org/simple"
# Legacy manylinux names, by the glibc minor version they stand for (PEP 600).
LEGACY_MANYLINUX = {5: "manylinux1", 12: "manylinux2010", 17: "manylinux2014"}


@dataclass(frozen=True)
class Base:
    python: str  # "3.12"
    glibc_minor: int  # glibc 2.<minor>: wheels tagged manylinux_2_<m> with m <= minor run


# Every base image a Dockerfile here starts FROM; a new base must be added (with its glibc)
# before its image is trusted to build.
BASES = {
    # Amazon Linux 2023.
    "public.ecr.aws/lambda/python:3.12": Base("3.12", 34),
    # Debian bookworm, glibc 2.36; the tag moves with Debian's releases, whose newer glibc
    # only admits more wheels.
    "python:3.11-slim-bookworm": Base("3.11", 36),
}
# What the serving image used to be built on: Amazon Linux 2 (glibc 2.26).
AMAZON_LINUX_2 = Base("3.12", 26)
# The serving function runs on either (settings.architecture: x86_64 or arm64); SageMaker
# training instances are x86_64.
SERVING_ARCHES = ("x86_64", "aarch64")
TRAINING_ARCH = "x86_64"
# Pins whose release has no wheel at all; pip builds them from source in the image, which
# works anywhere because they are pure Python. Their own dependencies still need wheels.
PURE_PYTHON_SDISTS = {"seqeval"}


def base_image(dockerfile: str) -> str:
    (image,) = re.findall(r"^FROM\s+(\S+)", (REPO_ROOT / dockerfile).read_text(), re.MULTILINE)
    return image


def requirement_lines(path: str) -> list[str]:
    lines = (REPO_ROOT / path).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def no_deps_pins(dockerfile: str) -> list[str]:
    """Packages the Dockerfile installs on their own with ``pip install --no-deps``."""
    text = (REPO_ROOT / dockerfile).read_text()
    return [
        pin
        for group in re.findall(r"pip install --no-deps ([^\n&\\]+)", text)
        for pin in group.split()
    ]


def image_torch_pin(dockerfile: str) -> str:
    """The torch build the Dockerfile installs in place of the requirements' CPU pin."""
    (pin,) = re.findall(r"pip install (torch==\S+)", (REPO_ROOT / dockerfile).read_text())
    return pin


def training_image_pins() -> list[str]:
    """What the training image installs: its requirements, with the Dockerfile's torch."""
    pins = requirement_lines("training/requirements.txt")
    local_torch = [pin for pin in pins if Requirement(pin).name == "torch"]
    assert local_torch == ["torch==2.13.0"], "the local CPU wheel stays pinned in the file"
    return [pin for pin in pins if pin not in local_torch] + [
        image_torch_pin("training/Dockerfile")
    ]


def platforms(base: Base, arch: str) -> list[str]:
    """Every manylinux platform tag whose wheels run on ``base`` (pip does not widen a
    ``manylinux_2_X`` tag to older glibc versions by itself)."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(base.glibc_minor, 4, -1)]
    legacy = [
        f"{name}_{arch}" for minor, name in LEGACY_MANYLINUX.items() if minor <= base.glibc_minor
    ]
    return tags + legacy


def pip_env() -> dict[str, str]:
    """pip as the image runs it: PyPI only. This machine's pip configuration adds local wheel
    directories and caps torch, which the images do not see."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def pip_resolve(
    tmp_path: Path, requirements: list[str], *, target: tuple[Base, str] | None, no_deps: bool
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """``pip install --dry-run`` of ``requirements`` for ``target`` (base, CPU), or for this
    machine when None; the result and the report's list of what would be installed."""
    report = tmp_path / f"report-{uuid.uuid4().hex}.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--quiet", "--report", str(report), "--index-url", PYPI]
    if no_deps:
        command.append("--no-deps")
    if target is not None:
        base, arch = target
        command += ["--only-binary=:all:", "--implementation", "cp"]
        command += ["--python-version", base.python, "--abi", "cp" + base.python.replace(".", "")]
        command += [arg for tag in platforms(base, arch) for arg in ("--platform", tag)]
    result = subprocess.run(
        [*command, *requirements],
        env=pip_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    installed = json.loads(report.read_text())["install"] if result.returncode == 0 else []
    return result, installed


def assert_resolved(
    result: subprocess.CompletedProcess[str], installed: list[dict[str, Any]], pins: list[str]
) -> None:
    assert result.returncode == 0, result.stderr
    found = {
        (canonicalize_name(item["metadata"]["name"]), item["metadata"]["version"])
        for item in installed
    }
    for pin in pins:
        requirement = Requirement(pin)
        (version,) = [spec.version for spec in requirement.specifier]
        assert (canonicalize_name(requirement.name), version) in found, pin
    for item in installed:
        assert item["download_info"]["url"].endswith(".whl"), item["download_info"]["url"]


@pytest.fixture(scope="module")
def pypi_reachable() -> None:
    try:
        urllib.request.urlopen(f"{PYPI}/pip/", timeout=20).close()
    except (urllib.error.URLError, TimeoutError) as exc:
        pytest.skip(f"PyPI is unreachable ({exc}): cannot resolve the images' requirements")


def test_every_dockerfile_starts_from_a_known_base() -> None:
    assert base_image("lambda/Dockerfile") in BASES
    assert base_image("training/Dockerfile") in BASES


@pytest.mark.usefixtures("pypi_reachable")
@pytest.mark.parametrize("arch", SERVING_ARCHES)
def test_serving_requirements_install_on_the_lambda_base(tmp_path: Path, arch: str) -> None:
    base = BASES[base_image("lambda/Dockerfile")]
    pins = requirement_lines("lambda/requirements.txt")

    result, installed = pip_resolve(tmp_path, pins, target=(base, arch), no_deps=False)

    assert_resolved(result, installed, pins)


@pytest.mark.usefixtures("pypi_reachable")
def test_serving_requirements_do_not_install_on_amazon_linux_2(tmp_path: Path) -> None:
    """The old base (lambda/python:3.11, glibc 2.26) is refused: the check can fail."""
    pins = requirement_lines("lambda/requirements.txt")

    result, _ = pip_resolve(tmp_path, pins, target=(AMAZON_LINUX_2, "x86_64"), no_deps=False)

    assert result.returncode != 0, "resolved for glibc 2.26: is the check still platform-bound?"
    # onnxruntime 1.32 ships manylinux_2_28 wheels only, numpy 2.4 manylinux_2_27 and up.
    assert re.search(r"No matching distribution found for (onnxruntime|numpy)==", result.stderr)


@pytest.mark.usefixtures("pypi_reachable")
def test_training_requirements_install_on_the_training_base(tmp_path: Path) -> None:
    base = BASES[base_image("training/Dockerfile")]
    pins = training_image_pins()
    binary = [pin for pin in pins if Requirement(pin).name not in PURE_PYTHON_SDISTS]
    sdists = [pin for pin in pins if Requirement(pin).name in PURE_PYTHON_SDISTS]
    assert {Requirement(pin).name for pin in sdists} == PURE_PYTHON_SDISTS, "stale exemption"
    # The source-only pins' own dependencies, from their metadata (built here from the sdist).
    result, built = pip_resolve(tmp_path, sdists, target=None, no_deps=True)
    assert result.returncode == 0, result.stderr
    environment = {"python_version": base.python, "extra": ""}
    their_deps = [
        str(requirement)
        for item in built
        for requirement in map(Requirement, item["metadata"].get("requires_dist", []))
        if requirement.marker is None or requirement.marker.evaluate(environment)
    ]
    assert their_deps, "seqeval depends on numpy and scikit-learn (a compiled package)"

    result, installed = pip_resolve(
        tmp_path, binary + their_deps, target=(base, TRAINING_ARCH), no_deps=False
    )
    assert_resolved(result, installed, binary)
    # torch's CUDA 12 build, with its CUDA runtime as wheels: CUDA 12's minor-version
    # compatibility runs it on the 535 driver AWS documents for ml.g6 (docs/DEPLOY.md); a
    # CUDA 13 runtime would need a 580 driver.
    versions = {item["metadata"]["name"]: item["metadata"]["version"] for item in installed}
    assert versions["nvidia-cuda-runtime-cu12"].startswith("12.")
    assert not [name for name in versions if name.endswith("-cu13")], sorted(versions)

    extra = no_deps_pins("training/Dockerfile")
    assert extra, "the Dockerfile installs the pretrained encoder with --no-deps"
    result, installed = pip_resolve(tmp_path, extra, target=(base, TRAINING_ARCH), no_deps=True)
    assert_resolved(result, installed, extra)
