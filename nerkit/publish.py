"""The quality gate, and publishing a model only when it passes.

One decision shared by the CLIs (``nerkit-train train --publish``, ``nerkit-models publish``)
and the training pipeline's gate Lambda, so a model goes live by the same rule wherever it was
trained. The CLIs also demand a trial run of the model; the gate Lambda cannot (``publish``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nerkit.errors import ArtifactError
from nerkit.store import ModelStore, Pointer

# The metric the gate reads: validation entity F1 of the served (quantized) artifact,
# measured through the serving engine by the training job.
GATE_METRIC = ("validation", "f1")


class GateFailed(Exception):
    """The candidate does not meet the gate; the message says why."""


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    f1: float
    min_f1: float
    live_version: str | None
    live_f1: float | None
    reason: str


def gate_metric(manifest: dict[str, Any]) -> float:
    """The candidate's validation F1 from its manifest; a clear error if it is missing."""
    value: Any = manifest.get("metrics", {})
    for key in GATE_METRIC:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ArtifactError(
            f"manifest of {manifest.get('version', '?')} has no metrics.validation.f1: "
            "was it produced by the training job?"
        )
    return float(value)


def decide(
    manifest: dict[str, Any],
    *,
    min_f1: float,
    live_manifest: dict[str, Any] | None = None,
) -> GateDecision:
    """Pass if F1 >= ``min_f1`` and, when ``live_manifest`` is given, F1 > the live model's.

    A live model without a validation F1 (published by hand, or before the gate existed)
    gives nothing to compare with: the candidate then passes on ``min_f1`` alone, and the
    reason says so.
    """
    f1 = gate_metric(manifest)
    live_version = live_manifest.get("version") if live_manifest else None
    live_f1 = _optional_metric(live_manifest) if live_manifest else None
    if f1 < min_f1:
        reason = f"validation F1 {f1:.4f} is below the gate's minimum {min_f1:.4f}"
        return GateDecision(False, f1, min_f1, live_version, live_f1, reason)
    if live_f1 is not None and f1 <= live_f1:
        reason = f"validation F1 {f1:.4f} does not beat live {live_version} ({live_f1:.4f})"
        return GateDecision(False, f1, min_f1, live_version, live_f1, reason)
    reason = f"validation F1 {f1:.4f} >= {min_f1:.4f}"
    if live_f1 is not None:
        reason += f" and beats live {live_version} ({live_f1:.4f})"
    elif live_manifest:
        reason += f"; live {live_version} has no validation F1 to compare with"
    return GateDecision(True, f1, min_f1, live_version, live_f1, reason)


def _optional_metric(manifest: dict[str, Any]) -> float | None:
    try:
        return gate_metric(manifest)
    except ArtifactError:
        return None


def publish(
    store: ModelStore,
    tar_path: Path,
    *,
    min_f1: float,
    must_beat_live: bool = False,
    trial_run: Callable[[Path], None] | None,
) -> tuple[GateDecision, Pointer | None]:
    """Upload the candidate as a new version; move LIVE only if it passes the gate.

    ``trial_run`` (``nerkit.engine.trial_run``, which needs ONNX Runtime) first proves that
    the candidate runs, and raises before anything is stored if it cannot; ``None`` skips
    it, for the training pipeline's gate Lambda, which has no ONNX Runtime (serving's model
    holder still runs the trial before a swap; docs/RELIABILITY.md).
    The version is uploaded either way (kept for inspection, never served); LIVE moves
    conditionally on the pointer read for the comparison, so a concurrent publish cannot
    be overwritten unseen.
    """
    if trial_run is not None:
        trial_run(tar_path)
    version = store.upload(tar_path)
    live = store.live()
    live_manifest = store.manifest(live.version) if (must_beat_live and live) else None
    decision = decide(store.manifest(version), min_f1=min_f1, live_manifest=live_manifest)
    if not decision.passed:
        return decision, None
    pointer = store.set_live(version, expected_current=live.version if live else None)
    return decision, pointer


def publish_report(
    store: ModelStore, decision: GateDecision, pointer: Pointer | None
) -> dict[str, Any]:
    """What the CLIs print after ``publish``: the decision, whether the candidate went LIVE,
    and the LIVE pointer now (on a refusal: the one that still serves, or ``None`` if none)."""
    live = pointer if decision.passed else store.live()
    return {
        "gate": asdict(decision),
        "published": decision.passed,
        "live": asdict(live) if live else None,
    }
