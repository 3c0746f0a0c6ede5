"""The demo clients' small parts (agent/harness/compose.py) that need no containers: the
kill time as `docker inspect` prints it, and the writer's log read as it grows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from agent.harness.compose import LoggedHistory, Outcomes, parse_time


def test_parse_time_takes_docker_inspect_and_epoch_seconds() -> None:
    expected = dt.datetime(2026, 11, 25, 15, 5, 17, 985123, tzinfo=dt.UTC).timestamp()
    assert parse_time("2026-11-25T15:05:17.985123456Z") == expected
    assert parse_time("2026-11-25T15:05:17Z") == expected - 0.985123
    assert parse_time("1795618954.25") == 1795618954.25


def test_outcomes_are_read_as_the_log_grows(tmp_path: Path) -> None:
    path = tmp_path / "writer" / "outcomes.log"
    server: tuple[str, int] | None = ("db1", 3306)
    history = LoggedHistory(path, lambda: server)
    history.ack(1, ("db1", 3306))
    history.record(2, "unknown")
    outcomes = Outcomes(path).refresh()
    assert set(outcomes.acked) == {1} and outcomes.unknown == {2}
    with path.open("a") as handle:
        handle.write("A 3 db2:3306 1795618954.5")  # not yet a whole line
    assert 3 not in outcomes.refresh().acked
    with path.open("a") as handle:
        handle.write("00\n")
    server = ("db2", 3306)
    history.record(4, "failed")
    outcomes.refresh()
    assert outcomes.acked[3] == ("db2:3306", 1795618954.5)
    assert outcomes.failed == {4}
    assert outcomes.first_ack("db2:3306", 0) == 1795618954.5
    assert outcomes.count_on("db1:3306") == 1
    assert history.counts == {"A": 1, "F": 1, "U": 1}
    history.close()
