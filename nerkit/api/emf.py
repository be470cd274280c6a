"""The CloudWatch metric names the API's request log lines carry (Embedded Metric Format).

``nerkit.api.logs`` writes them; the stack's dashboard and alarms (``infra/monitoring.py``)
read them, so both import these names.
"""

from __future__ import annotations

NAMESPACE = "nerkit"
# Dimensions of every metric: the Lambda function name and the route template.
SERVICE = "Service"
ROUTE = "Route"

LATENCY = "Latency"  # Milliseconds, per request
ERRORS = "Errors"  # Count: 1 for a 5xx response, else 0
TEXTS = "Texts"  # Count: texts tagged (successful POST /v1/entities)
ENTITIES = "Entities"  # Count: entities returned (successful POST /v1/entities)
