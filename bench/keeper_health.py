"""Benchmark: one full off-chain health recomputation of 10,000 sub-accounts.

`python bench/keeper_health.py [--accounts N] [--budget SECONDS]`

Builds a snapshot of the two configured markets (config/markets.json) with skew and pending
funding, and N synthetic sub-accounts with random positions in one or both markets, then times
`Snapshot.evaluate` (what the keeper runs on every pass: equity, initial and maintenance of
every account at the new prices, and the liquidatable list) with time.perf_counter, best of 5.
Exits non-zero above the budget (1 s by default). Also checks a sample against the reference
model, so the figure is for the exact computation.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from perpdex.config import load_markets
from perpdex.fixed_point import WAD
from perpdex.keeper.core import AccountState, Snapshot
from perpdex.model import ExchangeModel, MarketState

NOW = 1_700_000_000


def synthetic(accounts: int, seed: int = 1) -> tuple[Snapshot, dict]:
    rng = random.Random(seed)
    markets, globals_ = load_markets()
    model = ExchangeModel(globals=globals_, now=NOW)
    for m in markets:
        model.params[m.id] = m.params
        model.index[m.id] = int(m.initial_price) * WAD * rng.randint(90, 110) // 100
        model.markets[m.id] = MarketState(
            long_oi=1_000 * WAD, short_oi=700 * WAD, funding_per_unit=rng.randint(-10**20, 10**20),
            last_funding_time=NOW - 1_800, open_notional_sum=0,
        )
    states: dict[tuple[str, int], AccountState] = {}
    for i in range(accounts):
        state = AccountState(cash=rng.randint(100, 50_000) * WAD)
        for m in markets:
            if i % 3 == m.id or i % 3 == 2:  # one market, the other, or both
                price = int(m.initial_price) * WAD
                size = rng.choice([1, -1]) * rng.randint(1, 10**24 // price) * WAD // 10  # up to ~100,000 USD
                basis = size * price * rng.randint(95, 105) // 100 // WAD
                state.positions[m.id] = (size, basis, rng.randint(-10**20, 10**20))
        states[(f"0x{i // 4:040x}", i % 4)] = state
    return Snapshot(model), states


def check_sample(snapshot: Snapshot, states: dict, sample: int = 50) -> None:
    """The timed code gives the reference model's numbers."""
    for key in list(states)[:sample]:
        model = snapshot.account_model({key: states[key]}, writable=False)
        view = model.account_view(key)
        assert snapshot.health(states[key]) == (view.equity, view.initial, view.maintenance), key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds allowed for one recomputation")
    args = parser.parse_args()

    snapshot, states = synthetic(args.accounts)
    check_sample(snapshot, states)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        evaluation = snapshot.evaluate(states)
        timings.append(time.perf_counter() - started)
    best = min(timings)
    positions = sum(len(s.positions) for s in states.values())
    print(
        f"keeper health: {args.accounts:,} sub-accounts, {positions:,} positions, "
        f"{len(evaluation.liquidatable):,} liquidatable: best of 5 {best * 1000:.1f} ms "
        f"(budget {args.budget * 1000:.0f} ms; runs {', '.join(f'{t * 1000:.1f}' for t in timings)} ms)"
    )
    return 0 if best < args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
