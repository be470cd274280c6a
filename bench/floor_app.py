"""The framework floor: the least a FastAPI app behind Mangum can do with an engine, one async
route that parses the JSON body, calls the engine and answers the entities as JSON lists.

The handler's own cost is what it takes beyond this: validation and limits, the error
envelope, headers, stage prefixes and the request log line. No ``from __future__ import
annotations`` here: FastAPI reads the route's annotations, and ``Request`` must be a class
for it, not a string.
"""

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from mangum import Mangum


def floor_handler(predict_one: Callable[[str], Any]) -> Mangum:
    """A Lambda handler for ``POST /v1/entities`` on ``predict_one(text)``."""
    app = FastAPI()

    @app.post("/v1/entities")
    async def entities(request: Request) -> Response:
        [found] = predict_one(json.loads(await request.body())["text"])
        body = [[e.entity_group, e.start, e.end, float(e.score)] for e in found]
        return Response(json.dumps(body), media_type="application/json")

    return Mangum(app, lifespan="off")
