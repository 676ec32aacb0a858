"""Deploy and configure perpdex with ape, on any network.

On local networks (ape's embedded chain, anvil) this also deploys the mock USDC and one mock
Chainlink aggregator per market. `scripts/deploy.py` is the `ape run` entry point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from perpdex.config import DEFAULT_MARKETS_FILE, MarketConfig, load_markets, params_tuple
from perpdex.model import GlobalParams

FEED_DECIMALS = 8


@dataclass
class Deployment:
    collateral: object
    oracle: object
    vault: object
    exchange: object
    liquidity_vault: object
    liquidator: object
    insurance_fund: object
    markets: list[MarketConfig]
    aggregators: dict[int, list] = field(default_factory=dict)

    @property
    def contracts(self) -> dict[str, object]:
        return {
            "vault": self.vault,
            "exchange": self.exchange,
            "oracle": self.oracle,
            "liquidity_vault": self.liquidity_vault,
            "liquidator": self.liquidator,
            "insurance_fund": self.insurance_fund,
            "collateral": self.collateral,
        }


def deploy_local(deployer, markets_file: Path | str = DEFAULT_MARKETS_FILE) -> Deployment:
    """Deploy everything, mocks included, from `deployer` (an ape account)."""
    from ape import project

    markets, globals_ = load_markets(markets_file)
    usdc = project.MockUSDC.deploy("USD Coin", "USDC", 6, sender=deployer)
    aggregators = {
        m.id: [
            project.MockAggregator.deploy(
                FEED_DECIMALS, f"{m.symbol} / mock", int(m.initial_price * 10**FEED_DECIMALS), sender=deployer
            )
        ]
        for m in markets
    }
    return deploy_core(deployer, usdc, markets, globals_, aggregators)


def deploy_core(deployer, collateral, markets: list[MarketConfig], globals_: GlobalParams, aggregators) -> Deployment:
    """Deploy oracle, vault, exchange and liquidity vault on `collateral`, list `markets`."""
    from ape import project

    oracle = project.IndexOracle.deploy(sender=deployer)
    vault = project.Vault.deploy(collateral.address, sender=deployer)
    exchange = project.Exchange.deploy(vault.address, oracle.address, sender=deployer)
    liquidity_vault = project.LiquidityVault.deploy(
        vault.address, exchange.address, "perpdex LP", "pLP", sender=deployer
    )
    liquidator = project.Liquidator.deploy(exchange.address, vault.address, sender=deployer)
    insurance_fund = project.InsuranceFund.deploy(vault.address, 0, sender=deployer)
    oracle.set_configurator(exchange.address, sender=deployer)
    vault.set_exchange(exchange.address, sender=deployer)
    vault.set_liquidity_vault(liquidity_vault.address, sender=deployer)
    vault.set_liquidator(liquidator.address, sender=deployer)
    vault.set_insurance_fund(insurance_fund.address, sender=deployer)
    exchange.set_liquidator(liquidator.address, sender=deployer)
    liquidator.set_adl_keeper(deployer.address, True, sender=deployer)
    exchange.set_global_params(
        globals_.insurance_fee_share,
        globals_.protocol_fee_share,
        globals_.keeper_min_reward,
        globals_.keeper_reward_share,
        sender=deployer,
    )
    for m in markets:
        feeds = [(agg.address, m.heartbeat) for agg in aggregators[m.id]]
        exchange.list_market(m.id, m.symbol, feeds, m.max_deviation, params_tuple(m.params), sender=deployer)
    return Deployment(
        collateral, oracle, vault, exchange, liquidity_vault, liquidator, insurance_fund, markets, aggregators
    )
