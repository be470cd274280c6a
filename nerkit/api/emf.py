"""The CloudWatch metric names the request log lines and the bulk summary carry (Embedded
Metric Format).

``nerkit.api.logs`` and ``nerkit.bulk.handlers`` write them; the stack's dashboards and
alarms (``infra/monitoring.py``, ``infra/bulk.py``) read them, so all import these names.
"""

from __future__ import annotations

NAMESPACE = "nerkit"
# Dimensions of every API metric: the Lambda function name and the route template.
SERVICE = "Service"
ROUTE = "Route"

LATENCY = "Latency"  # Milliseconds, per request
ERRORS = "Errors"  # Count: 1 for a 5xx response, else 0
TEXTS = "Texts"  # Count: texts tagged (successful POST /v1/entities)
ENTITIES = "Entities"  # Count: entities returned (successful POST /v1/entities; a bulk run)

# Bulk runs: one line per finished run, its only dimension SERVICE = BULK_SERVICE.
BULK_SERVICE = "bulk"
DOCUMENTS = "Documents"  # Count: records tagged
RECORD_ERRORS = "RecordErrors"  # Count: records that could not be tagged
MISSING_SHARDS = "MissingShards"  # Count: shards without a completion marker
