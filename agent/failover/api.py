"""The switchover route of the admin API (docs/failover.md):

    POST /v1/timelines/{timeline}/switchover   {"to": "a2"}   (or {}: the best replica)

Answered by the leader once the new primary is ready, with the timings of each step; 421
with the leader's id elsewhere, 409 when it cannot be done now (the message says why), 400
for a malformed body.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent.failover.controller import FailoverController
from agent.ops.admin import answered, body_of, bounded, error

# The controller of the timeline a path names (its id or its name), or None.
ControllerLookup = Callable[[str], FailoverController | None]


def switchover_routes(lookup: ControllerLookup) -> list[Route]:
    async def switchover(request: Request) -> JSONResponse:
        controller = lookup(request.path_params["timeline"])
        if controller is None:
            return error(404, "no such timeline here, or no [mariadb] on this agent")
        body = await body_of(request)
        if body is None or not (body.get("to") is None or isinstance(body.get("to"), str)):
            return error(400, 'expected JSON {"to": NODE_ID} (or {} for the best replica)')
        return await answered(controller.switchover(body.get("to")))

    return [Route("/v1/timelines/{timeline}/switchover", bounded(switchover),
                  methods=["POST"])]
