"""The `binkeeper` command line: one subcommand per job, each in its own module of this
package, imported only when that subcommand runs."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand path -> "module:function"; each handler takes the parsed args, returns an exit code.
Handler = Callable[[argparse.Namespace], int]


def _lazy(target: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        module_name, func_name = target.split(":")
        func: Handler = getattr(importlib.import_module(module_name), func_name)
        return func(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="binkeeper", description="Binkeeper: a quorum safekeeper for MariaDB binlogs."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    wal = sub.add_parser("wal", help="offline checks of a WAL data directory")
    wal_sub = wal.add_subparsers(dest="wal_command", required=True)
    verify = wal_sub.add_parser("verify", help="check every record and the control file")
    verify.add_argument("dir", help="an agent's data_dir, or one timeline's WAL directory")
    verify.set_defaults(handler=_lazy("agent.cli.wal:verify_main"))
    dump = wal_sub.add_parser("dump", help="list records: LSN, term, size, GTID")
    dump.add_argument("dir", help="an agent's data_dir, or one timeline's WAL directory")
    dump.add_argument("--from-lsn", type=int, default=0, help="first LSN to list")
    dump.add_argument("--payload-sha", action="store_true", help="print a digest of each payload")
    dump.set_defaults(handler=_lazy("agent.cli.wal:dump_main"))

    run = sub.add_parser("run", help="run one agent")
    run.add_argument("--config", required=True, help="the agent's TOML config file")
    run.set_defaults(handler=_lazy("agent.cli.run:main"))

    status = sub.add_parser("status", help="the cluster as this agent sees it")
    status.add_argument("--url", action="append", default=None,
                        help="an agent's admin API (default http://127.0.0.1:7676); with "
                             "--watch, repeat it for each agent")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.add_argument("--watch", action="store_true",
                        help="a live view of the group, refreshed every second (Ctrl-C ends)")
    status.add_argument("--count", type=int, default=None,
                        help="with --watch: stop after this many refreshes (scripts, tests)")
    status.add_argument("--token", default=None,
                        help="a bearer token for the admin API (default: $BINKEEPER_TOKEN)")
    status.add_argument("--ca", default=None,
                        help="the CA that signed the agent's certificate (https URLs)")
    status.set_defaults(handler=_lazy("agent.cli.status:main"))

    primary = sub.add_parser("primary", help="HOST:PORT of the current primary (exit 1: none)")
    where = primary.add_mutually_exclusive_group()
    where.add_argument("--url", default="http://127.0.0.1:7676", help="an agent's admin API")
    where.add_argument("--config", default=None, help="an agent's config: its listen_http")
    primary.add_argument("--token", default=None, help="default: $BINKEEPER_TOKEN")
    primary.add_argument("--ca", default=None, help="the CA of an https admin API")
    primary.set_defaults(handler=_lazy("agent.cli.primary:main"))

    switchover = sub.add_parser(
        "switchover", help="hand the primary over to another agent's server, losing nothing")
    switchover.add_argument("--to", default=None,
                            help="the node whose server becomes the primary (default: the "
                                 "most advanced replica)")
    switchover.add_argument("--url", action="append", default=None,
                            help="an agent's admin API; repeat for each agent (the leader "
                                 "answers)")
    switchover.add_argument("--config", default=None, help="an agent's config: its listen_http")
    switchover.add_argument("--token", default=None, help="an admin-scope token "
                                                          "(default: $BINKEEPER_TOKEN)")
    switchover.add_argument("--ca", default=None, help="the CA of an https admin API")
    switchover.set_defaults(handler=_lazy("agent.cli.switchover:main"))

    token = sub.add_parser("token", help="a bearer token for an agent's admin API")
    token.add_argument("--config", required=True, help="the agent's TOML config file")
    token.add_argument("--scope", choices=["read", "admin"], default="read")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.add_argument("--subject", default="operator", help="who it is for (logged)")
    token.set_defaults(handler=_lazy("agent.cli.token:main"))

    certs = sub.add_parser("certs", help="a CA and per-agent certificates for [tls]")
    certs.add_argument("--out", required=True,
                       help="directory for the PEM files (its ca.pem/ca.key are reused)")
    certs.add_argument("--days", type=int, default=825, help="validity")
    certs.add_argument("nodes", nargs="+", metavar="NODE[=HOST,...]",
                       help="a node id, and the names/addresses clients reach it by")
    certs.set_defaults(handler=_lazy("agent.cli.certs:main"))

    restore = sub.add_parser(
        "restore", help="committed history up to a GTID or a time, into a server (applied "
                        "by its own replication from an agent) or as binlog files")
    restore.add_argument("--timeline", default=None, help="refuse an agent serving another")
    target = restore.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-gtid", default=None, help="stop after this GTID, e.g. 0-1-42")
    target.add_argument("--to-time", default=None,
                        help="stop before the first commit after this time (UTC)")
    destination = restore.add_mutually_exclusive_group(required=True)
    destination.add_argument("--out", default=None, help="an empty directory for the files")
    destination.add_argument(
        "--target", default=None,
        help="apply to this server, which replicates from the agent until the restore point "
             "(an empty server, or one an interrupted restore left: it resumes): "
             "mysql://USER[:PASSWORD]@HOST[:PORT]")
    restore.add_argument("--config", default=None,
                         help="an agent's config: its listen_mysql and [replication] user")
    restore.add_argument("--from", dest="source", default=None,
                         help="an agent's replication port, HOST:PORT (default 127.0.0.1:3307)")
    restore.add_argument("--user", default=None)
    restore.add_argument("--password", default=None)
    restore.add_argument("--ssl-ca", default=None,
                         help="TLS, verifying the agent against this CA (default with --config: "
                              "its [tls].ca_file)")
    restore.add_argument("--stall-timeout", type=float, default=600.0, metavar="SECONDS",
                         help="with --target: give up when the target applies nothing for "
                              "this long (default 600)")
    restore.set_defaults(handler=_lazy("agent.cli.restore:main"))

    demo = sub.add_parser("demo", help="run the end-to-end demo on this machine")
    demo.add_argument("--keep", action="store_true", help="keep the temporary directory")
    demo.add_argument("--transactions", type=int, default=None, help="how many to write")
    demo.set_defaults(handler=_lazy("agent.cli.demo:main"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
