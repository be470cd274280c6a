"""The serving HTTP API (FastAPI): ``nerkit.api.app`` builds it, ``lambda/handler.py`` serves it.

One module per concern: ``settings`` (environment), ``model`` (load, preload and refresh),
``schemas`` (bodies), ``body`` (reading JSON safely), ``errors`` (the error envelope),
``gateway`` (API Gateway stage prefixes), ``logs`` (request logs and EMF metrics),
``headers`` (security headers and the page's Content-Security-Policy), ``inference`` (the
engine call both inference routes share), ``hf`` (the Hugging Face contract), ``blocking``
(where blocking work runs), ``docs`` (offline Swagger UI), ``admin``/``admin_schemas`` and
``authz`` (admin routes and who may call them), ``local_gateway`` (make run's stand-in for
API Gateway's keys). ``emf`` and ``origins``
hold what the stack (``infra/``) shares: the metric names and the CORS origin rule; they
import nothing.
"""
