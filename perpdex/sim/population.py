"""Who trades in a simulation: traders, LPs and whales drawn from a seeded distribution.

Every draw comes from one `numpy.random.Generator` seeded with the run's seed, in a fixed order,
so a seed names one population exactly. The distribution (all parameters in
`PopulationConfig`):

- **entry time**: uniform over the first `entry_span` of the replay window, to the second;
- **market**: uniform over the replay's markets; **side**: long with probability `long_share`;
- **collateral**: log-normal, median `collateral_median_usd`, log-sd `collateral_sigma`, to the
  cent, at least 10 USD;
- **leverage**: log-uniform between `leverage_min` and the market's maximum (the inverse of its
  initial requirement: initial margin ratio + liquidation penalty + taker fee), at most
  `leverage_max` when given; the size is collateral x leverage / the price at entry;
- **stop-loss** with probability `stop_loss_share`: a reduce-only stop-loss order committed
  after the opening fill, its trigger a uniform 30-80 % of the way from the fill price to the
  liquidation price (a distance of 1/leverage); **take-profit** with probability
  `take_profit_share`: triggered at a gain of 50-200 % of the margin;
- **exit** with probability `exit_share`: a reduce-only market order closing the position after
  an exponential holding time of mean `holding_hours`;
- **LPs**: `lps` two-step deposits at the window's start, log-normal around `lp_median_usd`;
- **whales**: `whales` traders at the market's maximum leverage with `whale_usd` each, entering
  at uniform times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from eth_utils import keccak, to_checksum_address


@dataclass(frozen=True)
class PopulationConfig:
    traders: int = 200
    long_share: float = 0.6
    collateral_median_usd: float = 2_000.0
    collateral_sigma: float = 1.0
    leverage_min: float = 1.0
    leverage_max: float | None = None  # None: each market's maximum
    stop_loss_share: float = 0.3
    take_profit_share: float = 0.2
    exit_share: float = 0.3
    holding_hours: float = 48.0
    entry_span: float = 0.8  # share of the window over which traders enter
    lps: int = 3
    lp_median_usd: float = 500_000.0
    whales: int = 0
    whale_usd: float = 250_000.0


@dataclass(frozen=True)
class Trader:
    address: str
    market: int
    side: int  # +1 long, -1 short
    collateral_usd: float
    leverage: float
    entry_time: int
    stop_loss: float | None  # fraction of the distance to liquidation (0.3-0.8)
    take_profit: float | None  # gain as a fraction of the margin (0.5-2)
    exit_time: int | None
    whale: bool = False


@dataclass(frozen=True)
class Lp:
    address: str
    deposit_usd: float


@dataclass(frozen=True)
class Population:
    traders: tuple[Trader, ...]
    lps: tuple[Lp, ...]


def address_of(role: str, index: int, seed: int) -> str:
    """A fixed address per (role, index, seed): runs of one seed use the same accounts."""
    return to_checksum_address(keccak(text=f"perpdex-sim/{seed}/{role}/{index}")[-20:])


def sample_population(
    config: PopulationConfig, seed: int, markets: list[int], max_leverage: dict[int, float], start: int, end: int
) -> Population:
    """The population of `config` for a replay of [start, end) over `markets`, whose maximum
    leverages are `max_leverage`."""
    rng = np.random.default_rng(seed)
    span = max(1, int((end - start) * config.entry_span))
    traders = []
    for i in range(config.traders + config.whales):
        whale = i >= config.traders
        market = markets[int(rng.integers(len(markets)))]
        side = 1 if rng.random() < config.long_share else -1
        entry = start + int(rng.integers(span))
        top = max_leverage[market] if config.leverage_max is None else min(config.leverage_max, max_leverage[market])
        low = min(config.leverage_min, top)
        leverage = math.exp(rng.uniform(math.log(low), math.log(top)))
        collateral = round(max(10.0, config.collateral_median_usd * math.exp(config.collateral_sigma * rng.normal())), 2)
        stop = float(rng.uniform(0.3, 0.8)) if rng.random() < config.stop_loss_share else None
        take = float(rng.uniform(0.5, 2.0)) if rng.random() < config.take_profit_share else None
        holding = rng.exponential(config.holding_hours * 3600)
        exit_time = entry + 60 + int(holding) if rng.random() < config.exit_share else None
        if whale:
            leverage, collateral, stop, take, exit_time = top, config.whale_usd, None, None, None
        traders.append(Trader(
            address_of("whale" if whale else "trader", i, seed), market, side, collateral, round(leverage, 4), entry,
            stop, take, exit_time, whale,
        ))
    lps = tuple(
        Lp(address_of("lp", j, seed), round(config.lp_median_usd * math.exp(0.5 * rng.normal()), 2))
        for j in range(config.lps)
    )
    return Population(tuple(traders), lps)
