"""What every service's HTTP API shares: RFC 9457 problem responses and API-key auth.

Errors. Every 4xx and 5xx is `application/problem+json`::

    {"type": "https://convohub.dev/problems/validation", "title": "Invalid request",
     "status": 422, "code": "validation", "detail": "...",
     "errors": [{"field": "body.text", "message": "Field required"}]}

Raise `Problem(status, code, detail)` from a route; `install_problem_handlers(app)` turns
it, FastAPI's validation errors and Starlette's HTTP errors into that shape, and any
unexpected exception into a 500 problem that names no internals.

Auth. A caller presents an API key of `convohub.yaml` as `Authorization: Bearer KEY` or
`X-API-Key: KEY`. A route parameter annotated `AnyRole`, `Supervisor` or `Admin` (or
`Annotated[Principal, Depends(require(role))]`) gets the caller's `Principal` (tenant, role,
agent), or the request is answered 401 (no or unknown key) / 403 (role too low). Tenant
isolation is the route's job: load by `(principal.tenant_id, id)` and answer 404 for
another tenant's ids, exactly as for ids that do not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from convohub.runtime.config import ApiKey, HubConfig, Role, Tenant
from convohub.runtime.service import ServiceNotStartedError

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "Admin",
    "AnyRole",
    "Principal",
    "Problem",
    "Supervisor",
    "authenticate",
    "hub_config",
    "install_problem_handlers",
    "problem_response",
    "require",
]

log = structlog.get_logger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://convohub.dev/problems/"
_ROLE_RANK = {Role.AGENT: 1, Role.SUPERVISOR: 2, Role.ADMIN: 3}


class Problem(Exception):
    """An error answer: `status`, a stable machine-readable `code`, a human `detail`, and
    optional extension members (for example `errors` or `retry_after`)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.extensions = extensions


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
        **extensions,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def _field(location: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in location)


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of `app` an RFC 9457 problem (see the module doc)."""

    @app.exception_handler(Problem)
    async def on_problem(_: Request, error: Problem) -> JSONResponse:
        return problem_response(
            error.status, error.code, error.detail, headers=error.headers, **error.extensions
        )

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(item.get("loc", ())), "message": item.get("msg", "invalid")}
            for item in error.errors()
        ]
        fields = ", ".join(entry["field"] for entry in errors) or "the request"
        return problem_response(422, "validation", f"invalid: {fields}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        phrase = HTTPStatus(error.status_code).phrase
        detail = error.detail if isinstance(error.detail, str) else phrase
        return problem_response(error.status_code, code, detail, headers=error.headers)

    @app.exception_handler(ServiceNotStartedError)
    async def on_not_started(_: Request, error: ServiceNotStartedError) -> JSONResponse:
        return problem_response(503, "starting", str(error), headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path, method=request.method)
        return problem_response(500, "internal", "an unexpected error; it has been logged")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's tenant and role, and the agent a personal key acts as."""

    tenant: Tenant
    api_key: ApiKey

    @property
    def tenant_id(self) -> str:
        return self.tenant.id

    @property
    def role(self) -> Role:
        return self.api_key.role

    @property
    def agent_id(self) -> str | None:
        return self.api_key.agent_id

    def has(self, role: Role) -> bool:
        """Whether this caller's role is at least `role` (agent < supervisor < admin)."""
        return _ROLE_RANK[self.role] >= _ROLE_RANK[role]

    def allows_channel(self, channel_id: str) -> bool:
        return self.api_key.allows_channel(channel_id)


def hub_config(request: Request) -> HubConfig:
    """The `convohub.yaml` the serving app was built with (`app.state.hub_config`)."""
    config = getattr(request.app.state, "hub_config", None)
    if config is None:
        raise ServiceNotStartedError("the hub's configuration is not loaded")
    return config  # type: ignore[no-any-return]


def presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def authenticate(request: Request) -> Principal:
    """The caller's principal; 401 problem when no key or an unknown key is presented."""
    key = presented_key(request)
    if not key:
        raise Problem(
            401,
            "unauthenticated",
            "present an API key as `Authorization: Bearer KEY` or `X-API-Key: KEY`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = hub_config(request).find_api_key(key)
    if found is None:
        raise Problem(
            401, "unauthenticated", "unknown API key", headers={"WWW-Authenticate": "Bearer"}
        )
    tenant, api_key = found
    return Principal(tenant=tenant, api_key=api_key)


def require(role: Role) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency: the caller's `Principal`, holding at least `role` (else 403)."""

    async def dependency(request: Request) -> Principal:
        principal = authenticate(request)
        if not principal.has(role):
            raise Problem(
                403, "forbidden", f"this needs the {role.value} role; the key has {principal.role}"
            )
        return principal

    return dependency


AnyRole = Annotated[Principal, Depends(require(Role.AGENT))]
"""A route parameter typed `AnyRole` gets the caller's principal (any valid key)."""
Supervisor = Annotated[Principal, Depends(require(Role.SUPERVISOR))]
"""A supervisor's or an admin's principal; agents get 403."""
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
"""An admin's principal; everyone else gets 403."""
