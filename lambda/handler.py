"""Lambda entrypoint (``CMD ["handler.handler"]``): the FastAPI app behind API Gateway.

Lifespan is off because Mangum would run it on every invocation; the model loads lazily and
stays loaded across invocations. Stage prefixes are handled inside the app
(``nerkit.api.gateway``), so Mangum's ``api_gateway_base_path`` keeps its default.
"""

from mangum import Mangum

from nerkit.api.app import app

handler = Mangum(app, lifespan="off")
