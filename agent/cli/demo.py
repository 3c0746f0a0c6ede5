"""`binkeeper demo`: the one product command that runs the harness (throwaway mariadbd
servers, an agent process beside each, an OLTP writer); see agent/harness/demo.py."""

from __future__ import annotations

import argparse

from agent.harness.demo import main as demo_main


def main(args: argparse.Namespace) -> int:
    return demo_main(args)
