"""Blocking work (loading the model, inference) called from the app's async code.

Where it runs depends on who delivered the request:

- Lambda (Mangum: the scope carries the invocation's ``aws.context``; ``aws.event`` alone is
  not enough, since make run's stand-in for API Gateway's keys adds one): one environment
  serves one invocation at a time and nothing else waits on the event loop, so the work runs
  right here, on the invoking thread. A hand-off to a worker thread would only add latency,
  and anyio would start a new worker for every invocation (its pool belongs to the
  invocation's root task, which ends with it).
- Any other server (uvicorn in ``make run``) serves many requests at once: the work goes to
  the thread pool, so CPU-bound inference never blocks the event loop.

The app's endpoints and dependencies are ``async`` for the same reason: FastAPI runs sync
ones in its thread pool whoever delivered the request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(scope: Scope, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``func(*args, **kwargs)``, on this thread inside Lambda (Mangum put the event in the
    request's scope), else in the thread pool."""
    if "aws.context" in scope:
        return func(*args, **kwargs)
    return await run_in_threadpool(func, *args, **kwargs)
