"""`binkeeper primary`: HOST:PORT of the group's current primary, nothing else — for
scripts, proxies and writers. Exit 1 while there is none (or the agent cannot be asked)."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error

from agent.cli.status import fetch_status
from agent.config import ConfigError, load_config


def agent_url(args: argparse.Namespace) -> str | None:
    """--url, or the admin listener named by --config (https when it has [tls])."""
    if args.config is None:
        return str(args.url)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"binkeeper: {exc}", file=sys.stderr)
        return None
    if config.listen_http is None:
        print(f"binkeeper: {args.config} has no listen_http", file=sys.stderr)
        return None
    if args.ca is None and config.tls is not None:
        args.ca = str(config.tls.ca_file)
    scheme = "https" if config.tls is not None else "http"
    return f"{scheme}://{config.listen_http}"


def main(args: argparse.Namespace) -> int:
    url = agent_url(args)
    if url is None:
        return 1
    try:
        status = fetch_status(url, token=args.token or os.environ.get("BINKEEPER_TOKEN"),
                              ca_file=args.ca)
    except urllib.error.HTTPError as exc:
        print(f"binkeeper primary: {url} refused: {exc.code}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"binkeeper primary: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    timelines = status.get("timelines") or []
    primary = timelines[0].get("primary") if timelines else None
    if not primary:
        print("binkeeper primary: no primary is recorded yet", file=sys.stderr)
        return 1
    print(f"{primary['host']}:{primary['port']}")
    return 0
