"""What goes into the three code assets: the serving image, the training image, the gate Lambda.

All three are built from the repository root because they need the ``nerkit`` package. CDK
copies an asset's source directory into ``cdk.out`` at synth time, so an unfiltered root would
drag ``.venv`` (GBs), ``node_modules`` and ``cdk.out`` itself along; the filters below keep
each asset to the files its image or function actually uses, which also keeps asset hashes
(and so redeploys) tied to relevant changes only.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import IgnoreMode
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent

# Never part of any image, whatever a .dockerignore re-includes (applied last, so they win).
_NEVER_IN_IMAGES = (
    ".git",
    ".venv",
    "node_modules",
    "cdk.out",
    "**/__pycache__",
    "**/*.pyc",
    ".pytest_cache",
    ".ruff_cache",
)

# The gate Lambda runs on the managed Python runtime (boto3 included) and imports
# nerkit.pipeline, the gate rule (publish), the store and the artifact format: it gets the
# nerkit package without the subpackages that need other runtimes, training (torch) and api
# (FastAPI, ONNX Runtime). Folders, not a list of modules kept in step by hand.
# Gitignore semantics: ignore every top-level entry, re-include nerkit/, then narrow it.
GATE_CODE_PATTERNS = (
    "/*",
    "!/nerkit/",
    "/nerkit/training/",
    "/nerkit/api/",
    "__pycache__/",
    "*.pyc",
)


def docker_excludes(dockerfile: str) -> list[str]:
    """Docker-ignore patterns for an image built from the repository root with ``dockerfile``.

    The image's own ``<Dockerfile>.dockerignore`` (what BuildKit reads for that Dockerfile)
    is the source of truth; CDK only reads a ``.dockerignore`` at the context root, so its
    patterns are passed explicitly, plus the Dockerfile and ignore file themselves (CDK
    re-includes only a Dockerfile at the root).
    """
    ignore_file = REPO_ROOT / f"{dockerfile}.dockerignore"
    patterns: list[str] = []
    if ignore_file.is_file():
        for line in ignore_file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line)
        patterns.append(f"!{dockerfile}.dockerignore")
    patterns.append(f"!{dockerfile}")
    return [*patterns, *_NEVER_IN_IMAGES]


def gate_code() -> lambda_.AssetCode:
    return lambda_.Code.from_asset(
        str(REPO_ROOT), exclude=list(GATE_CODE_PATTERNS), ignore_mode=IgnoreMode.GIT
    )
