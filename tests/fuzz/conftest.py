"""Hypothesis profiles and step accounting for the stateful fuzzers (tests/fuzz/test_stateful.py:
trading, liquidation, liquidity vault; tests/fuzz/test_orders_stateful.py: orders).

Profiles (registered here, selected with PERPDEX_FUZZ_PROFILE; never loaded as the global
default, so the other test modules keep their own hypothesis settings):
- "quick" (default, part of `make test`): each of the four machines runs up to
  max_examples x stateful_step_count = 12 x 50 = 600 steps. Hypothesis ends some examples
  early (40-45 of 50 steps run on average), so the four together run ~2,200 steps (>= 2,000)
  in about the time the three machines took before trades became two-step orders (a trade
  now costs a commit, a round and an execution, each compared with the model).
- "long" (`make fuzz`): examples of up to 100 steps. tests/fuzz/run_long.py runs each machine
  in rounds, setting PERPDEX_FUZZ_MAX_EXAMPLES per round, until 100,000 steps have run in
  total (examples end early at different rates per machine: 60-90 of their 100 steps).

Cost: after every step the machines check the invariants and compare everything the contracts
store with the model, the order book's slots included, by reading storage directly
(tests/raw_state.py, tests/fuzz/base.py); every view is compared every VIEW_CHECK_EVERY steps.
A trade is a market order (commit, a new round, a keeper's execution, each compared), so a
machine runs 30-60 steps per second per core.

PERPDEX_FUZZ_MAX_EXAMPLES and PERPDEX_FUZZ_STEP_COUNT override the profile's max_examples and
stateful_step_count (per machine), e.g. to fit a time budget.

Every rule a machine runs is counted; the session summary prints steps and steps per second per
machine, and when PERPDEX_FUZZ_STATS names a file the same figures are written there as JSON
(run_long.py reads them).
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, settings

PROFILE_ENV = "PERPDEX_FUZZ_PROFILE"
STATS_ENV = "PERPDEX_FUZZ_STATS"
MAX_EXAMPLES_ENV = "PERPDEX_FUZZ_MAX_EXAMPLES"
STEP_COUNT_ENV = "PERPDEX_FUZZ_STEP_COUNT"

_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("quick", max_examples=12, stateful_step_count=50, **_COMMON)
settings.register_profile("long", max_examples=400, stateful_step_count=100, **_COMMON)

_stats_key = pytest.StashKey[dict]()


def profile_name() -> str:
    name = os.environ.get(PROFILE_ENV, "quick")
    if name not in ("quick", "long"):
        raise pytest.UsageError(f"{PROFILE_ENV} must be 'quick' or 'long', not {name!r}")
    return name


@pytest.fixture(scope="session")
def fuzz_settings() -> settings:
    overrides = {}
    if os.environ.get(MAX_EXAMPLES_ENV):
        overrides["max_examples"] = int(os.environ[MAX_EXAMPLES_ENV])
    if os.environ.get(STEP_COUNT_ENV):
        overrides["stateful_step_count"] = int(os.environ[STEP_COUNT_ENV])
    return settings(settings.get_profile(profile_name()), **overrides)


@pytest.fixture(scope="session")
def fuzz_stats(request) -> dict:
    """machine name -> {"steps", "examples", "seconds" (inside examples), "wall_seconds" (the
    whole hypothesis run), "events": {name: count}}."""
    return request.config.stash.setdefault(_stats_key, {})


def pytest_terminal_summary(terminalreporter, config):
    stats = config.stash.get(_stats_key, None)
    if not stats:
        return
    terminalreporter.write_sep("-", f"perpdex fuzz ({profile_name()} profile)")
    total_steps = total_seconds = 0
    for name, s in stats.items():
        # wall time of the whole hypothesis run (generation and shrinking included)
        seconds = s.get("wall_seconds", s["seconds"])
        rate = s["steps"] / seconds if seconds else 0.0
        total_steps += s["steps"]
        total_seconds += seconds
        terminalreporter.write_line(
            f"{name}: {s['steps']} steps in {s['examples']} examples, {seconds:.1f} s, {rate:.1f} steps/s"
        )
        if s["events"]:
            events = ", ".join(f"{k} {v}" for k, v in sorted(s["events"].items()))
            terminalreporter.write_line(f"    {events}")
    rate = total_steps / total_seconds if total_seconds else 0.0
    terminalreporter.write_line(f"total: {total_steps} steps, {total_seconds:.1f} s, {rate:.1f} steps/s")
    path = os.environ.get(STATS_ENV)
    if path:
        with open(path, "w") as f:
            json.dump({"profile": profile_name(), "machines": stats}, f, indent=2)
