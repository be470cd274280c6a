"""The gate Lambda: check a SageMaker-trained model and publish it if it passes.

Step Functions invokes ``handler`` after the training job with::

    {"modelArtifact": "s3://<bucket>/training/<job>/output/model.tar.gz",
     "trainingJob": "<job>", "minF1": 0.8, "mustBeatLive": true}

SageMaker tars ``/opt/ml/model`` into that ``model.tar.gz`` with the files at the top level,
which is exactly the artifact layout (docs/ARCHITECTURE.md). The gate downloads it, extracts
and verifies it (checksums, safe paths), re-packs the verified files into the canonical
deterministic tarball and hands that to ``nerkit.publish.publish`` — the same rule the
``nerkit-train train --publish`` CLI applies: validation F1 >= ``minF1`` and, with ``mustBeatLive``,
> the live model's. The version is stored either way (for inspection); only a pass moves
``LIVE`` (``MODEL_URI`` = ``s3://bucket/prefix``), and serving picks the new version up
within ``MODEL_REFRESH_SECONDS``.

A rejected or unreadable model raises (``GateFailed``, a ``nerkit.errors.ModelError``,
``InvalidGateInput``) with a message that says why; the state machine turns it into its
``ModelRejected`` state.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerkit.artifact import pack
from nerkit.errors import ConfigError
from nerkit.publish import GateFailed, publish
from nerkit.store import ModelStore, open_source, parse_model_uri
from nerkit.store.uri import S3Tarball

__all__ = ["GateFailed", "GateRequest", "InvalidGateInput", "handler", "run_gate"]

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)


class InvalidGateInput(ValueError):
    """The event is not what the state machine sends."""


@dataclass(frozen=True)
class GateRequest:
    model_artifact: str
    min_f1: float
    must_beat_live: bool
    training_job: str | None = None

    @classmethod
    def from_event(cls, event: Any) -> GateRequest:
        if not isinstance(event, dict):
            raise InvalidGateInput("the gate event must be a JSON object")
        artifact = event.get("modelArtifact")
        if not isinstance(artifact, str) or not _is_s3_tarball(artifact):
            raise InvalidGateInput(
                f"modelArtifact must be an s3:// URI of a .tar.gz, not {artifact!r}"
            )
        min_f1 = event.get("minF1")
        if isinstance(min_f1, bool) or not isinstance(min_f1, int | float) or not 0 <= min_f1 <= 1:
            raise InvalidGateInput(f"minF1 must be a number within 0..1, not {min_f1!r}")
        must_beat_live = event.get("mustBeatLive", False)
        if not isinstance(must_beat_live, bool):
            raise InvalidGateInput(f"mustBeatLive must be true or false, not {must_beat_live!r}")
        job = event.get("trainingJob")
        return cls(artifact, float(min_f1), must_beat_live, job if isinstance(job, str) else None)


def run_gate(request: GateRequest, store: ModelStore, workdir: Path) -> dict[str, Any]:
    """Download, verify, gate and publish ``request.model_artifact``; return the outcome.

    Raises ``GateFailed`` when the model does not pass (LIVE untouched).
    """
    candidate_source = open_source(request.model_artifact, workdir / "extracted", s3=store.s3)
    candidate = candidate_source.fetch()
    live = store.live()
    if live is not None and live.version == candidate.version:
        # A retried invocation whose first attempt already published: comparing the model
        # with itself would reject it, and there is nothing left to do.
        return _outcome(request, candidate.version, reason="already live")
    tarball = workdir / "model.tar.gz"
    pack(candidate.path, tarball)
    decision, pointer = publish(
        store,
        tarball,
        min_f1=request.min_f1,
        must_beat_live=request.must_beat_live,
        # No ONNX Runtime on this runtime (infra/assets.py): serving's model holder runs the
        # trial before the swap instead, and keeps its model if the trial fails.
        trial_run=None,
    )
    if pointer is None:
        raise GateFailed(f"model {candidate.version} rejected: {decision.reason}")
    return _outcome(
        request,
        pointer.version,
        reason=decision.reason,
        f1=decision.f1,
        previous=pointer.previous,
        previousF1=decision.live_f1,
    )


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = GateRequest.from_event(event)
    try:
        store = ModelStore.from_uri(os.environ.get("MODEL_URI", ""))
    except ConfigError:
        raise InvalidGateInput("MODEL_URI must be s3://bucket/prefix (the model store)") from None
    logger.info(json.dumps({"gate": "start", **event}))
    # /tmp survives between invocations of a warm Lambda: clean up after every run.
    with tempfile.TemporaryDirectory(prefix="nerkit-gate-") as scratch:
        try:
            outcome = run_gate(request, store, Path(scratch))
        except GateFailed as exc:
            logger.info(json.dumps({"gate": "rejected", "reason": str(exc)}))
            raise
    logger.info(json.dumps({"gate": "published", **outcome}))
    return outcome


def _is_s3_tarball(uri: str) -> bool:
    try:
        return isinstance(parse_model_uri(uri), S3Tarball)
    except ConfigError:
        return False


def _outcome(request: GateRequest, version: str, **fields: Any) -> dict[str, Any]:
    """The state's ``$.gate``: camelCase, like the rest of the execution's JSON."""
    return {
        "published": True,
        "version": version,
        "trainingJob": request.training_job,
        "modelArtifact": request.model_artifact,
        "minF1": request.min_f1,
        "mustBeatLive": request.must_beat_live,
        **fields,
    }
