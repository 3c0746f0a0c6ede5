"""A fault-injecting TCP proxy for partition tests: forwards one direction of agent traffic.

`block()` cuts every open connection and refuses new ones until `unblock()`; the agents on
either side see exactly what a network partition looks like to TCP.
"""

from __future__ import annotations

import trio

from agent.harness.ports import free_port


class FaultProxy:
    def __init__(self, target_port: int, listen_port: int | None = None) -> None:
        self.target_port = target_port
        self.listen_port = listen_port or free_port()
        self.blocked = False
        self.forwarded = 0  # connections let through (a count of who has been talking)
        self._conn_scopes: set[trio.CancelScope] = set()

    def block(self) -> None:
        self.blocked = True
        for scope in list(self._conn_scopes):
            scope.cancel()

    def unblock(self) -> None:
        self.blocked = False

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.listen_port, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self.blocked:
                return
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
            except OSError:
                return
            self.forwarded += 1
            async with upstream:
                with trio.CancelScope() as scope:
                    self._conn_scopes.add(scope)
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                            nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
                    finally:
                        self._conn_scopes.discard(scope)

    @staticmethod
    async def _pump(
        src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()
