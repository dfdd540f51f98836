"""The endpoints every service exposes for its operators: `/healthz`, `/readyz`, `/metrics`.

- `GET /healthz`: the process is alive and serving HTTP (never touches a dependency, so a
  broker outage does not get healthy pods restarted).
- `GET /readyz`: every readiness check passes (the database answers, the bus is connected,
  ...); 503 names the failing checks, so the pod is taken out of the load balancer.
- `GET /metrics`: the `RuntimeMetrics` registry in Prometheus text format.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from convohub.runtime.metrics import RuntimeMetrics

__all__ = ["ReadinessCheck", "ops_router"]

ReadinessCheck = Callable[[], Awaitable[bool]]
DEFAULT_CHECK_TIMEOUT_SECONDS = 2.0


async def _run_check(check: ReadinessCheck, seconds: float) -> str:
    """`ok`, or why the check failed (the exception's type only: messages may hold DSNs)."""
    try:
        async with asyncio.timeout(seconds):
            passed = await check()
    except TimeoutError:
        return f"timed out after {seconds:g}s"
    except Exception as error:
        return f"raised {type(error).__name__}"
    return "ok" if passed else "failed"


def ops_router(
    metrics: RuntimeMetrics,
    readiness_checks: Mapping[str, ReadinessCheck],
    *,
    check_timeout: float = DEFAULT_CHECK_TIMEOUT_SECONDS,
) -> APIRouter:
    """A router with `/healthz`, `/readyz` and `/metrics` (see the module doc).

    Readiness checks run concurrently, each bounded by `check_timeout` seconds; a check
    that returns False, raises or times out fails.
    """
    router = APIRouter(tags=["operations"])
    checks = dict(readiness_checks)

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Every dependency answers",
        responses={503: {"description": "At least one readiness check failed."}},
    )
    async def readyz() -> JSONResponse:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(checks[name], check_timeout) for name in names))
        outcome = dict(zip(names, results, strict=True))
        failing = [name for name, result in outcome.items() if result != "ok"]
        if failing:
            body = {"status": "unavailable", "failing": failing, "checks": outcome}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "checks": outcome})

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics(request: Request) -> Response:
        body, content_type = metrics.exposition(request.headers.get("accept", ""))
        return Response(content=body, media_type=content_type)

    return router
