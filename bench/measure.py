"""Clocks, memory and percentiles shared by the benchmark's parent and worker processes.

Standard library only: workers import this before they pin themselves and import anything
they measure.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Modules that must not be in the serving process (docs/ARCHITECTURE.md); reported per engine.
HEAVY_MODULES = ("torch", "transformers", "tensorflow", "jax", "scipy", "pandas", "sklearn")


def clock() -> float:
    """Seconds on CLOCK_MONOTONIC: system-wide, so a parent's and a child's readings compare."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def peak_rss_mib() -> float:
    """This process's peak RSS (ru_maxrss, KiB on Linux).

    Linux carries ru_maxrss across fork and exec, so a worker reads at least its parent's
    peak: the parent therefore never imports torch (models are built in a child process).
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_since_exec_mib() -> float:
    """VmHWM: the peak RSS of this process image only; a cross-check of ``peak_rss_mib``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory() -> dict[str, float]:
    return {"rss_mib": peak_rss_mib(), "vm_hwm_mib": peak_rss_since_exec_mib()}


def heavy_modules_loaded() -> list[str]:
    return [name for name in HEAVY_MODULES if name in sys.modules]


def percentile(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile (linear interpolation between the closest ranks)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]
