"""`binkeeper status --watch`: a live terminal view of the group for an operator to keep
open during a failover — the primary, each agent's role and LSNs, each server's role and
lag, the replicas each agent feeds. Refreshed every second from the agents' admin APIs;
an agent that does not answer is shown as such, never hides the others."""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

Fetch = Callable[[str], dict[str, Any]]


def snapshot(urls: list[str], fetch: Fetch) -> dict[str, dict[str, Any] | str]:
    """Each URL's /v1/status, or why it could not be had."""
    out: dict[str, dict[str, Any] | str] = {}
    for url in urls:
        try:
            out[url] = fetch(url)
        except urllib.error.HTTPError as exc:
            out[url] = f"refused: {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            out[url] = f"unreachable: {getattr(exc, 'reason', exc)}"
    return out


def _timeline(status: dict[str, Any]) -> dict[str, Any]:
    timelines = status.get("timelines") or []
    return timelines[0] if timelines else {}


def view(statuses: dict[str, dict[str, Any] | str]) -> Group:
    answered = {url: s for url, s in statuses.items() if isinstance(s, dict)}
    # The group as the leader sees it (it alone probes the servers and tracks members).
    leader = next((s for s in answered.values() if _timeline(s).get("role") == "leader"),
                  next(iter(answered.values()), None))
    tl = _timeline(leader) if leader is not None else {}
    failover = tl.get("failover") or {}
    primary = tl.get("primary")
    if primary:
        head = Text(f"primary {primary['host']}:{primary['port']} (beside {primary['node']})",
                    style="bold green")
    elif failover.get("switchover_to"):
        head = Text(f"switching over to {failover['switchover_to']}", style="bold yellow")
    elif tl.get("promoting"):
        promoting = tl["promoting"]
        head = Text(f"promoting {promoting['host']}:{promoting['port']} "
                    f"(beside {promoting['node']})", style="bold yellow")
    else:
        head = Text("no primary", style="bold red")
    head.append(f"   epoch {failover.get('epoch', 0)} ({failover.get('reason') or '-'})"
                f"   committed {tl.get('committed_gtid') or '-'}")
    parts: list[Any] = [head]
    if failover.get("waiting"):
        parts.append(Text(f"failover: {failover['waiting']}", style="red"))

    agents = Table(title="agents", title_justify="left")
    for column in ("agent", "role", "term", "commit LSN", "flush LSN", "lag (bytes / s)",
                   "replicas", "disk"):
        agents.add_column(column, justify="right" if "LSN" in column else "left")
    lag = {m["id"]: m for m in tl.get("members") or []}
    for url, status in statuses.items():
        if isinstance(status, str):
            agents.add_row(url, Text(status, style="red"), "", "", "", "", "", "")
            continue
        own = _timeline(status)
        node = status.get("node_id", url)
        member = lag.get(node) or {}
        behind = ("-" if member.get("lag_bytes") is None or own.get("role") == "leader"
                  else f"{member['lag_bytes']} / {member.get('lag_s') or 0:.1f}")
        replication = own.get("replication") or {}
        disk = "FULL" if own.get("disk_full") else f"{(own.get('wal_bytes') or 0) >> 20} MiB"
        agents.add_row(node, own.get("role", "?"), str(own.get("term", "")),
                       str(own.get("commit_lsn", "")), str(own.get("flush_lsn", "")), behind,
                       str(replication.get("connections", "-")), disk)
    parts.append(agents)

    servers = Table(title="servers", title_justify="left")
    for column in ("beside", "role", "address", "applied GTID", "lag (txns)", "note"):
        servers.add_column(column)
    for server in tl.get("servers") or []:
        style = {"primary": "green", "down": "red", "fenced": "red"}.get(server["role"], "")
        servers.add_row(server["node"], Text(server["role"], style=style),
                        server.get("address") or "-", server.get("applied_gtid") or "-",
                        "-" if server.get("lag") is None else str(server["lag"]),
                        server.get("error") or "")
    parts.append(servers)
    return Group(*parts)


def watch(urls: list[str], fetch: Fetch, count: int | None = None,
          console: Console | None = None, interval: float = 1.0) -> int:
    """Refresh the view every INTERVAL until interrupted (or COUNT refreshes)."""
    console = console or Console()
    shown = 0
    try:
        with Live(view(snapshot(urls, fetch)), console=console, auto_refresh=False) as live:
            while True:
                shown += 1
                if count is not None and shown >= count:
                    break
                time.sleep(interval)
                live.update(view(snapshot(urls, fetch)), refresh=True)
    except KeyboardInterrupt:
        pass
    return 0
