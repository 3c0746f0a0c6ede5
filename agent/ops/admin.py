"""Admin API routes that change a timeline: membership changes and leadership transfer.

    GET  /v1/timelines/{timeline}/members
    POST /v1/timelines/{timeline}/members   {"action": "add_learner", "id": "a4", "addr": "h:p"}
                                            {"action": "promote", "id": "a4"}
                                            {"action": "remove", "id": "a2"}
    POST /v1/timelines/{timeline}/transfer  {"to": "a2"}

`{timeline}` is the timeline id or its name. Changes go to the leader (421 with the leader's
id otherwise); a malformed request is a 400 naming the field; a change not allowed now (one
at a time, learner not caught up) is a 409. Handlers reach a timeline only through
`agent.node.handle.TimelineHandle`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent.node.handle import (
    ChangeRefused,
    CommitOutcomeUnknown,
    NotLeader,
    TimelineHandle,
    TransferTimeout,
)

TRANSFER_TIMEOUT = 10.0
MAX_BODY = 64 << 10  # an admin request is a few dozen bytes; more is refused (413)


class BodyTooLarge(Exception):
    pass

# Finds the timeline a path names (its id or its name), or None.
TimelineLookup = Callable[[str], TimelineHandle | None]


def error(status: int, text: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": text, **extra}, status_code=status)


async def body_of(request: Request) -> dict[str, Any] | None:
    """The JSON object in the body, None if it is not one; read at most MAX_BODY bytes."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise BodyTooLarge
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep
        return None
    return body if isinstance(body, dict) else None


async def answered(call: Awaitable[dict[str, Any]]) -> JSONResponse:
    """CALL's result, or the status code its error means."""
    try:
        return JSONResponse(await call)
    except NotLeader as exc:
        return error(421, str(exc), leader=exc.leader_hint)
    except ChangeRefused as exc:
        return error(409, str(exc))
    except ValueError as exc:  # malformed: the message names the field
        return error(400, str(exc))
    except CommitOutcomeUnknown as exc:
        return error(503, f"leadership changed before the change committed: {exc}")
    except TransferTimeout as exc:
        return error(504, str(exc))


def bounded(endpoint: Callable[[Request], Awaitable[JSONResponse]]
            ) -> Callable[[Request], Awaitable[JSONResponse]]:
    """ENDPOINT, answering 413 to a body over MAX_BODY."""
    async def guarded(request: Request) -> JSONResponse:
        try:
            return await endpoint(request)
        except BodyTooLarge:
            return error(413, f"request body over {MAX_BODY} bytes")
    return guarded


def admin_routes(lookup: TimelineLookup) -> list[Route]:
    async def members(request: Request) -> JSONResponse:
        timeline = lookup(request.path_params["timeline"])
        if timeline is None:
            return error(404, "no such timeline here")
        if request.method == "GET":
            return JSONResponse(timeline.membership())
        body = await body_of(request)
        if body is None or not isinstance(body.get("id"), str):
            return error(400, 'expected JSON {"action": ..., "id": ...}')
        action, addr = body.get("action"), body.get("addr")
        if not isinstance(action, str):
            return error(400, '"action" must be add_learner, promote or remove')
        if addr is not None and not isinstance(addr, str):
            return error(400, '"addr" must be "host:port"')
        return await answered(timeline.change_membership(action, body["id"], addr))

    async def transfer(request: Request) -> JSONResponse:
        timeline = lookup(request.path_params["timeline"])
        if timeline is None:
            return error(404, "no such timeline here")
        body = await body_of(request)
        if body is None or not isinstance(body.get("to"), str):
            return error(400, 'expected JSON {"to": NODE_ID}')
        return await answered(timeline.transfer_leadership(body["to"], TRANSFER_TIMEOUT))

    return [
        Route("/v1/timelines/{timeline}/members", bounded(members), methods=["GET", "POST"]),
        Route("/v1/timelines/{timeline}/transfer", bounded(transfer), methods=["POST"]),
    ]
