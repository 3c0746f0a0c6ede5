"""The admin API behind bearer tokens, and listeners that would take anyone refused at
start: every refusal is tried (no token, bad signature, expired, wrong scope)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio

from agent.config import ConfigError, parse_config
from agent.harness.ports import free_port
from agent.ops.auth import issue_token
from agent.process import Agent

SECRET = b"0123456789abcdef0123456789abcdef-test"


def config_text(tmp_path: Path, http: str, extra: str = "") -> str:
    return (f'node_id = "a1"\ndata_dir = "{tmp_path / "data"}"\n'
            f'listen_peer = "127.0.0.1:{free_port()}"\nlisten_http = "{http}"\n{extra}')


def request(url: str, token: str | None = None, body: dict[str, Any] | None = None
            ) -> tuple[int, dict[str, Any] | str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            raw = response.read().decode()
            return response.status, json.loads(raw) if raw.startswith("{") else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read().decode())


async def test_tokens_guard_the_admin_api(tmp_path: Path) -> None:
    secret_file = tmp_path / "admin.secret"
    secret_file.write_bytes(SECRET)
    port = free_port()
    text = config_text(tmp_path, f"127.0.0.1:{port}",
                       f'[admin]\njwt_secret_file = "{secret_file}"\n')
    config_file = tmp_path / "agent.toml"
    config_file.write_text(text)
    agent = Agent(parse_config(tomllib.loads(text)))
    base = f"http://127.0.0.1:{port}"
    members = f"{base}/v1/timelines/main/members"
    read = issue_token(SECRET, "read", 60)
    admin = issue_token(SECRET, "admin", 60)
    forged = issue_token(b"another secret of at least thirty-two bytes", "admin", 60)
    expired = jwt.encode({"scope": "admin", "exp": 1}, SECRET, algorithm="HS256")
    unscoped = jwt.encode({"exp": 2**40}, SECRET, algorithm="HS256")
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)

        def check() -> None:
            assert request(f"{base}/healthz")[0] == 200  # open
            for token in (None, forged, expired, unscoped, "not.a.jwt"):
                status, body = request(f"{base}/v1/status", token)
                assert status == 401 and "token" in body["error"], (token, status, body)
            assert request(f"{base}/v1/status", read)[0] == 200
            assert request(members, read)[0] == 200
            status, body = request(members, read, {"action": "remove", "id": "a9"})
            assert status == 403 and "'admin' is needed" in body["error"]
            status, body = request(members, admin, {"action": "explode", "id": "a9"})
            assert status == 400  # through the check, refused by the route itself
            # the CLI: a token from the config, and status with it
            made = subprocess.run([sys.executable, "-m", "agent", "token", "--config",
                                   str(config_file), "--scope", "read"],
                                  capture_output=True, text=True, timeout=60)
            assert made.returncode == 0, made.stderr
            shown = subprocess.run([sys.executable, "-m", "agent", "status", "--url", base,
                                    "--token", made.stdout.strip()],
                                   capture_output=True, text=True, timeout=60)
            assert shown.returncode == 0 and "node a1" in shown.stdout, shown.stderr
            refused = subprocess.run([sys.executable, "-m", "agent", "status", "--url", base],
                                     capture_output=True, text=True, timeout=60)
            assert refused.returncode == 1 and "401" in refused.stderr

        await trio.to_thread.run_sync(check)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("listeners", "key"), [
    ('listen_http = "0.0.0.0:7676"\n', "admin].jwt_secret_file"),
    ('listen_http = "127.0.0.1:7676"\nlisten_mysql = "10.0.0.5:3307"\n',
     "replication].password"),
])
def test_a_listener_beyond_loopback_without_credentials_is_refused(
        tmp_path: Path, listeners: str, key: str) -> None:
    text = (f'node_id = "a1"\ndata_dir = "{tmp_path}"\nlisten_peer = "127.0.0.1:5454"\n'
            + listeners)
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_config(tomllib.loads(text))


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.secret"
    short.write_text("too short")
    text = (f'node_id = "a1"\ndata_dir = "{tmp_path}"\nlisten_peer = "127.0.0.1:5454"\n'
            f'listen_http = "127.0.0.1:7676"\n[admin]\njwt_secret_file = "{short}"\n')
    with pytest.raises(ConfigError, match=r"admin.jwt_secret_file: .* at least 32"):
        parse_config(tomllib.loads(text))
    long = tmp_path / "long.secret"
    long.write_bytes(SECRET)
    parse_config(tomllib.loads(text.replace(str(short), str(long))))  # accepted
