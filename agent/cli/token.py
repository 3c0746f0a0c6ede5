"""`binkeeper token --config FILE [--scope read|admin] [--ttl SECONDS]`: a bearer token for
the admin API, signed with the agent's `[admin].jwt_secret_file`."""

from __future__ import annotations

import argparse
import sys

from agent.config import ConfigError, load_config
from agent.ops.auth import issue_token


def main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"binkeeper token: {exc}", file=sys.stderr)
        return 2
    if config.admin.jwt_secret is None:
        print("binkeeper token: the config sets no [admin].jwt_secret_file", file=sys.stderr)
        return 2
    if args.ttl <= 0:
        print("binkeeper token: --ttl must be positive", file=sys.stderr)
        return 2
    print(issue_token(config.admin.jwt_secret, args.scope, args.ttl, args.subject))
    return 0
