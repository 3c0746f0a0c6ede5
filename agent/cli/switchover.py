"""`binkeeper switchover --to NODE`: hand the primary over to NODE's server on purpose.

The request goes to the leader (docs/failover.md): give the admin URL of every agent (or
`--config` of any agent and `--url` of the others); agents that do not lead answer 421 and
the next one is asked. Prints the new primary and how long each step took; exit 1 when it
was refused (the reason is printed) or no agent answered as leader.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from agent.cli.primary import agent_url
from agent.cli.status import ask, fetch_status

TIMEOUT = 60.0  # seconds: the leader answers once the new primary is ready (or 30 s passed)


def post_switchover(url: str, to: str | None, token: str | None,
                    ca_file: str | None) -> dict[str, Any]:
    status = fetch_status(url, token=token, ca_file=ca_file)
    timelines = status.get("timelines") or []
    if not timelines:
        raise ValueError(f"{url} serves no timeline")
    timeline = timelines[0]["timeline_id"]
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v1/timelines/{timeline}/switchover", method="POST",
        data=json.dumps({"to": to} if to else {}).encode(),
        headers={"Content-Type": "application/json"})
    return ask(request, TIMEOUT, token, ca_file)


def main(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("BINKEEPER_TOKEN")
    urls = list(args.url or [])
    if args.config is not None:
        args.url = None
        first = agent_url(args)
        if first is None:
            return 1
        urls.insert(0, first)
    if not urls:
        urls = ["http://127.0.0.1:7676"]
    for url in urls:
        try:
            answer = post_switchover(url, args.to, token, args.ca)
        except urllib.error.HTTPError as exc:
            body = _error_body(exc)
            if exc.code == 421:
                print(f"{url}: not the leader (the leader is {body.get('leader') or 'unknown'})",
                      file=sys.stderr)
                continue
            print(f"binkeeper switchover: refused by {url} ({exc.code}): "
                  f"{body.get('error', exc.reason)}", file=sys.stderr)
            return 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            print(f"binkeeper switchover: cannot reach {url}: {exc}", file=sys.stderr)
            continue
        state = "ready" if answer.get("ready") else "recorded, not yet ready"
        print(f"primary: {answer['to']} (beside {answer['node']}), {state}, epoch "
              f"{answer['epoch']}; old primary {answer['from']} read-only and drained in "
              f"{answer['fenced_s']:.2f}s, new one recorded at {answer['recorded_s']:.2f}s, "
              f"ready at {answer['ready_s']:.2f}s")
        return 0 if answer.get("ready") else 1
    print("binkeeper switchover: no agent answered as the leader; give every agent's --url",
          file=sys.stderr)
    return 1


def _error_body(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        body = json.load(exc)
    except (ValueError, OSError):
        return {}
    return body if isinstance(body, dict) else {}
