"""Admin API routes that change a timeline: membership changes and leadership transfer.

    GET  /v1/timelines/{timeline}/members
    POST /v1/timelines/{timeline}/members   {"action": "add_learner", "id": "a4", "addr": "h:p"}
                                            {"action": "promote", "id": "a4"}
                                            {"action": "remove", "id": "a2"}
    POST /v1/timelines/{timeline}/transfer  {"to": "a2"}

`{timeline}` is the timeline id or its name. Changes go to the leader (421 with the leader's
id otherwise); a change not allowed now (one at a time, learner not caught up) is a 409.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import consensus
from agent.timeline import CommitOutcomeUnknown

if TYPE_CHECKING:
    from agent.run import Agent

TRANSFER_TIMEOUT = 10.0


def membership_json(membership: consensus.Membership) -> dict[str, Any]:
    return {
        "generation": membership.generation,
        "voters": sorted(membership.voters),
        "learners": sorted(membership.learners),
        "addresses": dict(membership.addresses),
    }


def admin_routes(agent: Agent) -> list[Route]:
    def timeline_known(request: Request) -> bool:
        name = request.path_params["timeline"]
        return name in (agent.config.timeline_id, agent.config.mariadb.timeline)

    def error(status: int, text: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": text, **extra}, status_code=status)

    async def body_of(request: Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def members(request: Request) -> JSONResponse:
        if not timeline_known(request) or agent.node is None:
            return error(404, "no such timeline here")
        node = agent.node
        if request.method == "GET":
            return JSONResponse(membership_json(node.core.membership))
        body = await body_of(request)
        if body is None or not isinstance(body.get("id"), str):
            return error(400, 'expected JSON {"action": ..., "id": ...}')
        action, member = body.get("action"), body["id"]

        def build(current: consensus.Membership) -> consensus.Membership:
            voters, learners = set(current.voters), set(current.learners)
            addresses = dict(current.addresses)
            if action == "add_learner":
                if not isinstance(body.get("addr"), str) or ":" not in body["addr"]:
                    raise ValueError('add_learner needs "addr": "host:port"')
                learners.add(member)
                addresses[member] = body["addr"]
            elif action == "promote":
                if member not in learners:
                    raise ValueError(f"{member} is not a learner")
                learners.discard(member)
                voters.add(member)
            elif action == "remove":
                if member not in voters | learners:
                    raise ValueError(f"{member} is not a member")
                voters.discard(member)
                learners.discard(member)
                addresses.pop(member, None)
            else:
                raise ValueError("action must be add_learner, promote or remove")
            return consensus.Membership(current.generation, frozenset(voters),
                                        frozenset(learners), tuple(sorted(addresses.items())))

        try:
            membership = await node.change_membership(build)
        except consensus.NotLeader as exc:
            return error(421, str(exc), leader=exc.leader_hint)
        except (consensus.ConfigChangeError, ValueError) as exc:
            return error(409, str(exc))
        except CommitOutcomeUnknown as exc:
            return error(503, f"leadership changed before the change committed: {exc}")
        return JSONResponse(membership_json(membership))

    async def transfer(request: Request) -> JSONResponse:
        if not timeline_known(request) or agent.node is None:
            return error(404, "no such timeline here")
        body = await body_of(request)
        if body is None or not isinstance(body.get("to"), str):
            return error(400, 'expected JSON {"to": NODE_ID}')
        node = agent.node
        try:
            await node.transfer_leadership(body["to"])
        except consensus.NotLeader as exc:
            return error(421, str(exc), leader=exc.leader_hint)
        except ValueError as exc:
            return error(409, str(exc))
        with trio.move_on_after(TRANSFER_TIMEOUT):
            # Until this agent has stepped down and heard from the new leader.
            while node.role == "leader" or node.leader is None:
                await node.wait_role_change()
            return JSONResponse({"leader": node.leader, "term": node.term})
        return error(504, f"{body['to']} did not take over within {TRANSFER_TIMEOUT}s")

    return [
        Route("/v1/timelines/{timeline}/members", members, methods=["GET", "POST"]),
        Route("/v1/timelines/{timeline}/transfer", transfer, methods=["POST"]),
    ]
