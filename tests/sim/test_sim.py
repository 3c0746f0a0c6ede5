"""The deterministic simulator over many seeds, and proof that its checkers bite."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from consensus import Config
from tests.sim.sim import LivenessFailure, SafetyViolation, Simulation, run_seed

CI_SEEDS = 2000
CHUNKS = 8


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_seeds(chunk: int) -> None:
    size = CI_SEEDS // CHUNKS
    for seed in range(chunk * size, (chunk + 1) * size):
        run_seed(seed)


def test_same_seed_same_run() -> None:
    first, second = Simulation(12345), Simulation(12345)
    first.run()
    second.run()
    assert first.trace == second.trace and first.committed == second.committed


def minority_quorum(flushed: Mapping[str, int], voters: frozenset[str]) -> int:
    """Broken on purpose: counts a record committed once ANY voter has it."""
    return max((flushed.get(v, 0) for v in voters), default=0)


def test_broken_quorum_rule_is_caught() -> None:
    def break_quorum(config: Config) -> None:
        config.quorum_rule = minority_quorum

    for seed in range(CI_SEEDS):
        try:
            Simulation(seed, config_hook=break_quorum).run()
        except SafetyViolation as exc:
            assert f"seed {seed}" in str(exc) and "rerun" in str(exc)
            return
        except LivenessFailure:
            continue
    pytest.fail(f"a minority quorum went unnoticed for {CI_SEEDS} seeds")
