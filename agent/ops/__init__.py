"""Operating an agent over HTTP: the app and server (`http_api`), timeline admin routes
(`admin`, through agent.node.handle only) and event-loop health (`loop_health`). Later:
metrics and authentication."""
