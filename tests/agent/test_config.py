from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, parse_config

GOOD = """
node_id = "a1"
data_dir = "/var/lib/binkeeper"
listen_peer = "127.0.0.1:5454"
listen_mysql = "127.0.0.1:3307"
listen_http = "127.0.0.1:7676"
[[peers]]
id = "a2"
addr = "127.0.0.1:5455"
[[peers]]
id = "a3"
addr = "127.0.0.1:5456"
[failover]
enabled = true
primary_timeout_ms = 2000
[mariadb]
host = "127.0.0.1"
port = 3306
user = "root"
password = ""
timeline = "main"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_design_example_parses(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.node_id == "a1"
    assert [p.id for p in config.peers] == ["a2", "a3"]
    assert str(config.peers[1].addr) == "127.0.0.1:5456"
    assert config.listen_mysql is not None and config.listen_mysql.port == 3307
    assert config.member_ids == ("a1", "a2", "a3")
    assert len(config.timeline_id) == 32 and int(config.timeline_id, 16) >= 0
    assert config.failover.enabled and config.failover.primary_timeout_ms == 2000


def test_timeline_id_is_the_same_on_every_agent(tmp_path: Path) -> None:
    a1 = load_config(write(tmp_path, GOOD))
    a2 = load_config(write(tmp_path, GOOD.replace('node_id = "a1"', 'node_id = "a9"')))
    assert a1.timeline_id == a2.timeline_id


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda t: t + 'colour = "blue"\n', "mariadb.colour"),
        (lambda t: 'colour = "blue"\n' + t, "colour"),
        (lambda t: t.replace("port = 3306", 'port = "3306"'), "mariadb.port"),
        (lambda t: t.replace("port = 3306", "port = 99999"), "mariadb.port"),
        (
            lambda t: t.replace('listen_peer = "127.0.0.1:5454"', 'listen_peer = "nowhere"'),
            "listen_peer",
        ),
        (lambda t: t.replace('addr = "127.0.0.1:5456"', 'addr = "127.0.0.1:x"'), "peers[1].addr"),
        (lambda t: t.replace('id = "a3"', 'id = "a2"'), "duplicate"),
        (lambda t: t.replace('node_id = "a1"\n', ""), "node_id"),
        (lambda t: t.replace('id = "a2"', 'id = "a2"\nweight = 3'), "peers[0].weight"),
        (lambda t: t.replace('node_id = "a1"', 'node_id = "a 1"'), "node_id"),
        (lambda t: 'preferred_leader = "zz"\n' + t, "preferred_leader"),
        (lambda t: "join = 1\n" + t, "join"),
        (lambda t: t.replace("primary_timeout_ms = 2000", "primary_timeout_ms = 0"),
         "failover.primary_timeout_ms"),
        (lambda t: t.replace("enabled = true", 'enabled = "yes"'), "failover.enabled"),
        (lambda t: t.replace("enabled = true", "enable = true"), "failover.enable"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, edit, key: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, edit(GOOD)))


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "node_id = \n"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml")


def test_consensus_table_validated() -> None:
    base = {"node_id": "a", "data_dir": "/d", "listen_peer": "127.0.0.1:1"}
    config = parse_config({**base, "consensus": {"tick_ms": 20}})
    assert config.consensus.tick_ms == 20
    with pytest.raises(ConfigError, match=r"consensus\.tick_ms"):
        parse_config({**base, "consensus": {"tick_ms": 0}})
    with pytest.raises(ConfigError, match=r"consensus\.heartbeat_ticks"):
        parse_config({**base, "consensus": {"heartbeat_ticks": 10, "election_ticks": 5}})
