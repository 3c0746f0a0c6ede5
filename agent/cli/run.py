"""`binkeeper run --config FILE`: one agent, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import sys

from agent.config import ConfigError, load_config
from agent.process import Agent, run_agent, setup_logging


def main(args: argparse.Namespace) -> int:
    setup_logging()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"binkeeper run: {exc}", file=sys.stderr)
        return 2
    return run_agent(Agent(config))
