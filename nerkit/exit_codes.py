"""Exit statuses shared by every nerkit command line.

``nerkit-train``, ``nerkit-models``, ``nerkit-bulk`` and ``python -m nerkit.pipeline.start``
exit with these, so scripts and CI can tell a refused model from a broken run.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # the command failed: bad data, a missing file, an unreadable artifact, AWS
    USAGE = 2  # bad arguments (argparse's own status)
    GATE_REFUSED = 3  # the quality gate kept the model from going live (uploaded, not LIVE)
