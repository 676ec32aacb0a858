"""What one simulation run is: price files, window, oracle, keeper, population, parameters.

Parameters a risk team varies are named as the contracts name them, in human units (0.04 =
4 %), and apply to every market: `market_params` overrides `MarketParams` fields (and
`max_leverage`, which sets the initial margin ratio to 1/max_leverage - the liquidation
penalty, and the maintenance margin ratio to at most half of it); `global_params` overrides
`GlobalParams` fields. `SimConfig.replace` takes any of them by name (what sweeps vary).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from perpdex.config import DEFAULT_MARKETS_FILE, to_wad
from perpdex.lp_flows import LpParams
from perpdex.model import GlobalParams, MarketParams
from perpdex.sim.chain import DeployConfig
from perpdex.sim.population import PopulationConfig
from perpdex.sim.publication import DEVIATION, HEARTBEAT

DATA = Path(__file__).resolve().parent.parent.parent / "data" / "prices"
MARCH_2020 = ((0, "btc-usdt_2020-03_1h.csv"), (1, "eth-usdt_2020-03_1h.csv"))
MARCH_2020_WINDOW = (1583625600, 1584403200)  # 8 March 2020 00:00 - 17 March 00:00 UTC: 216 hours


@dataclass(frozen=True)
class SimConfig:
    prices: tuple[tuple[int, str], ...] = MARCH_2020  # (market id, CSV: a path, or a name in data/prices)
    start: int | None = MARCH_2020_WINDOW[0]  # UTC seconds; None: the files' start
    end: int | None = MARCH_2020_WINDOW[1]
    resample: int | None = None  # seconds per step; None: the files' own spacing
    deviation: float = DEVIATION  # the feeds' deviation threshold
    heartbeat: int = HEARTBEAT  # seconds
    keeper_latency_blocks: int = 1  # blocks between an oracle round and the keeper's transactions
    block_time: int = 2  # seconds per block
    seed: int = 0
    population: PopulationConfig = field(default_factory=PopulationConfig)
    markets_file: str = str(DEFAULT_MARKETS_FILE)
    market_params: tuple[tuple[str, float], ...] = ()
    global_params: tuple[tuple[str, float], ...] = ()
    lp_seed_usd: float = 3_000_000.0  # the owner's first deposit into the liquidity vault
    insurance_seed_usd: float = 0.0  # donated to the insurance fund before the replay
    slippage: float = 0.01  # traders' acceptable price distance on market orders
    check_every_round: bool = False  # invariants after every keeper pass, not only every step

    def replace(self, **changes) -> SimConfig:
        """A copy with fields, population fields, market or global parameters changed by name."""
        own, population, market, globals_ = {}, {}, dict(self.market_params), dict(self.global_params)
        for name, value in changes.items():
            if name in SimConfig.__dataclass_fields__:
                own[name] = value
            elif name in PopulationConfig.__dataclass_fields__:
                population[name] = value
            elif name in MarketParams.__dataclass_fields__ or name == "max_leverage":
                market[name] = value
            elif name in GlobalParams.__dataclass_fields__:
                globals_[name] = value
            else:
                raise ValueError(f"unknown parameter {name!r}")
        if population:
            own["population"] = dataclasses.replace(own.get("population", self.population), **population)
        own["market_params"] = tuple(sorted(market.items()))
        own["global_params"] = tuple(sorted(globals_.items()))
        return dataclasses.replace(self, **own)

    def price_files(self) -> dict[int, Path]:
        files = {}
        for market, name in self.prices:
            path = Path(name)
            files[market] = path if path.exists() else DATA / name
        return files

    def deploy_config(self) -> DeployConfig:
        """The markets of the price files, with the overrides applied."""
        base = DeployConfig.from_file(self.markets_file)
        wanted = {m for m, _ in self.prices}
        markets = []
        for m in base.markets:
            if m.id not in wanted:
                continue
            markets.append(dataclasses.replace(m, params=market_overrides(m.params, dict(self.market_params))))
        globals_ = dataclasses.replace(base.globals, **{k: to_wad(v) for k, v in self.global_params})
        return DeployConfig(tuple(markets), globals_, base.order_params,
                            LpParams(min_delay=1, max_age=7200, cooldown=0, execution_fee=0))


def market_overrides(params: MarketParams, overrides: dict[str, float]) -> MarketParams:
    values = {k: to_wad(v) for k, v in overrides.items() if k != "max_leverage"}
    params = dataclasses.replace(params, **values)
    if "max_leverage" in overrides:
        initial = to_wad(1 / overrides["max_leverage"]) - params.liquidation_penalty_ratio
        params = dataclasses.replace(
            params, initial_margin_ratio=initial,
            maintenance_margin_ratio=min(params.maintenance_margin_ratio, initial // 2),
        )
    return params


def max_leverage(params: MarketParams) -> float:
    """The leverage a trader can open at with a margin to spare for fees and price impact."""
    requirement = (params.initial_margin_ratio + params.liquidation_penalty_ratio + params.taker_fee) / 10**18
    return 0.9 / requirement
