"""`binkeeper status`: the cluster as one agent sees it, from its admin API."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any


def fetch_status(url: str, timeout: float = 5.0, token: str | None = None,
                 ca_file: str | None = None) -> dict[str, Any]:
    """The agent's /v1/status."""
    return ask(urllib.request.Request(url.rstrip("/") + "/v1/status"), timeout, token, ca_file)


def ask(request: urllib.request.Request, timeout: float, token: str | None,
        ca_file: str | None) -> dict[str, Any]:
    """REQUEST to an agent's admin API, its JSON answer; an https URL is verified against
    CA_FILE (default: the system's CAs), host name included."""
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    https = request.full_url.startswith("https:")
    context = ssl.create_default_context(cafile=ca_file) if https else None
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        data: dict[str, Any] = json.load(response)
    return data


def render(status: dict[str, Any]) -> str:
    lines = [f"node {status['node_id']}"]
    for tl in status.get("timelines", []):
        lines.append(
            f"timeline {tl['name']} ({tl['timeline_id']}): term {tl['term']}, "
            f"role {tl['role']}, leader {tl['leader'] or '-'}, commit_lsn {tl['commit_lsn']}, "
            f"flush_lsn {tl['flush_lsn']}, committed_gtid {tl.get('committed_gtid') or '-'}"
        )
        primary = tl.get("primary")
        failover = tl.get("failover") or {}
        promoting = tl.get("promoting")
        if primary:
            lines.append(f"  primary: {primary['host']}:{primary['port']} "
                         f"(beside {primary['node']})")
        elif failover.get("switchover_to"):
            lines.append(f"  primary: none for clients, switching over to "
                         f"{failover['switchover_to']}")
        elif promoting:
            lines.append(f"  primary: none for clients yet, promoting {promoting['host']}:"
                         f"{promoting['port']} (beside {promoting['node']})")
        else:
            lines.append("  primary: none recorded")
        for server in tl.get("servers") or []:
            lines.append(f"  server {server['node']:<10} {server['role']:<10} "
                         f"{server.get('address') or '-':<22} applied "
                         f"{server.get('applied_gtid') or '-'} lag "
                         f"{'-' if server.get('lag') is None else server['lag']}"
                         + (f" ({server['error']})" if server.get("error") else ""))
        waiting = failover.get("waiting")
        if waiting:
            lines.append(f"  failover: {waiting}")
        if tl.get("disk_full"):
            lines.append(f"  DISK FULL: not acknowledging ({tl.get('disk_error')})")
        lines.append(f"  {'member':<12} {'role':<8} {'flush_lsn':>14} {'match_lsn':>14}")
        for member in tl.get("members", []):
            flush = member.get("flush_lsn")
            match = member.get("match_lsn")
            lines.append(
                f"  {member['id']:<12} {member['role']:<8} "
                f"{'-' if flush is None else flush:>14} {'-' if match is None else match:>14}"
            )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("BINKEEPER_TOKEN")
    urls = args.url or ["http://127.0.0.1:7676"]
    if args.watch:
        from agent.cli.watch import watch  # rich only when watching

        return watch(urls, lambda url: fetch_status(url, token=token, ca_file=args.ca),
                     count=args.count)
    url = urls[0]
    try:
        status = fetch_status(url, token=token, ca_file=args.ca)
    except urllib.error.HTTPError as exc:
        print(f"binkeeper status: {url} refused: {exc.code} {exc.read().decode()}",
              file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"binkeeper status: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0
