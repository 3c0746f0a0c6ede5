"""The admin HTTP API: health, metrics and status; timelines' routes come from elsewhere.

Starlette app served by hypercorn's trio worker, so it shares the agent's event loop.
Handlers read state through a small provider object; they never touch the consensus core.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from agent.config import Address
from agent.ops.auth import TokenAuth
from agent.tls import TlsFiles

StatusProvider = Callable[[], dict[str, Any]]
# The Prometheus exposition for a scrape's Accept header: (body, content type).
MetricsRenderer = Callable[[str | None], tuple[bytes, str]]


def make_app(status: StatusProvider, extra_routes: list[Route] | None = None,
             auth: TokenAuth | None = None, metrics: MetricsRenderer | None = None
             ) -> Starlette:
    """/healthz and /metrics are open (DESIGN.md: Prometheus scrapes without a token);
    every other route is behind AUTH's token check (when it has a secret): GET needs a
    "read" token, anything else an "admin" one."""
    guard = auth.guard if auth is not None else (lambda endpoint: endpoint)

    async def healthz(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    async def metrics_text(request: Request) -> Response:
        assert metrics is not None
        body, content_type = metrics(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def v1_status(_request: Request) -> JSONResponse:
        return JSONResponse(status())

    guarded = [Route(route.path, guard(route.endpoint), methods=sorted(route.methods or []))
               for route in (extra_routes or [])]
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            *([Route("/metrics", metrics_text)] if metrics is not None else []),
            Route("/v1/status", guard(v1_status)),
            *guarded,
        ]
    )


async def serve_http(
    app: Starlette,
    address: Address,
    *,
    tls: TlsFiles | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    config = HypercornConfig()
    config.bind = [str(address)]
    config.accesslog = None
    config.errorlog = logging.getLogger("binkeeper.http")
    config.graceful_timeout = 1.0
    if tls is not None:  # HTTPS with the agent's certificate; clients need no certificate
        config.certfile = str(tls.cert_file)
        config.keyfile = str(tls.key_file)
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]
