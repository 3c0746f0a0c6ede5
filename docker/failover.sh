#!/usr/bin/env bash
# Kill the primary's MariaDB container with SIGKILL, then tell the failover as the agents and
# the writer saw it, and the verdict: every commit acknowledged to the writer is on the new
# primary, nothing refused was kept, the other replica has the same history; and the time
# from the kill to a writable primary. Exit 0 only when the verdict passes.
#
# Run it after `docker compose up -d` (docker/README.md). COMPOSE and DOCKER name the
# commands to use (defaults `docker compose` and `docker`); the container test sets them to
# its own daemon and the local override:
#   COMPOSE="docker compose -f docker-compose.yml -f docker-compose.local.yml" ./failover.sh
set -euo pipefail
cd "$(dirname "$0")"
read -r -a compose <<< "${COMPOSE:-docker compose}"
docker=${DOCKER:-docker}
clients=("${compose[@]}" exec -T writer python3 -m agent.harness.compose)

# The primary as the agents name it (HOST:PORT; HOST is its compose service), once a replica
# can take over and the writer has commits acknowledged.
primary=$("${clients[@]}" target)
service=${primary%%:*}
container=$("${compose[@]}" ps -q "$service")
if [ -z "$container" ]; then
  echo "failover.sh: no running container for service $service (the primary $primary)" >&2
  exit 1
fi
echo ">>> docker kill (SIGKILL) of $service, the primary ($primary)"
"$docker" kill --signal KILL "$container" > /dev/null
# When it died, by the engine's clock (the containers' clock, also on Docker Desktop).
for _ in $(seq 1 100); do
  [ "$("$docker" inspect --format '{{.State.Running}}' "$container")" = false ] && break
  sleep 0.05
done
killed_at=$("$docker" inspect --format '{{.State.FinishedAt}}' "$container")
status=0
"${clients[@]}" failover --killed "$primary" --killed-at "$killed_at" || status=$?
echo "(the killed server rejoins as a replica when started again: ${compose[*]} start $service)"
exit "$status"
