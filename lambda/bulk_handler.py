"""Bulk extraction's Lambda entrypoints in the serving image (``infra/bulk.py`` sets each
function's CMD): ``bulk_handler.plan``, ``bulk_handler.worker``, ``bulk_handler.summary``."""

from nerkit.bulk.handlers import plan_handler as plan
from nerkit.bulk.handlers import summary_handler as summary
from nerkit.bulk.handlers import worker_handler as worker

__all__ = ["plan", "summary", "worker"]
