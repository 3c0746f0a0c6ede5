#!/usr/bin/python3
"""The agent image's HEALTHCHECK: GET /healthz of the agent whose config is
$BINKEEPER_CONFIG (default /etc/binkeeper/agent.toml), over loopback. Exit 0 when it
answers 200, 1 otherwise (with the reason on stderr, which `docker inspect` shows).

Standard library only: it runs every few seconds, so it starts fast. With [tls] the admin
API is HTTPS: the certificate must chain to [tls].ca_file; the host name is not checked,
since this asks the agent of this very container, over loopback, whether it is up."""

import os
import ssl
import sys
import tomllib
import urllib.request


def main() -> int:
    path = os.environ.get("BINKEEPER_CONFIG", "/etc/binkeeper/agent.toml")
    try:
        with open(path, "rb") as handle:
            config = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        print(f"healthcheck: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    listen = config.get("listen_http")
    if not isinstance(listen, str) or ":" not in listen:
        print(f"healthcheck: {path} sets no listen_http", file=sys.stderr)
        return 1
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    tls = config.get("tls")
    context = None
    if isinstance(tls, dict):
        context = ssl.create_default_context(cafile=tls.get("ca_file"))
        context.check_hostname = False
    scheme = "https" if context is not None else "http"
    url = f"{scheme}://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            ok = response.status == 200
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
