"""Deploy and configure perpdex with ape, on any network, idempotently.

Every contract and every configuration step is checked against the chain first: re-running
against an existing deployment does nothing twice, and a deployment interrupted half-way
resumes where it stopped. Progress is written to `deployments/<chain_id>.json` after each
contract, in a format any client can use without this repository:

    {"chain_id", "block", "contracts": {name: {"address", "abi"}},
     "markets": [{"id", "symbol", "aggregators": [...]}]}

On local networks (ape's embedded chain, anvil) the mock USDC and one mock Chainlink
aggregator per market are deployed too; elsewhere the collateral and the aggregators come from
the markets config (`"collateral"` and each market's `"aggregators"`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from perpdex.config import DEFAULT_MARKETS_FILE, MarketConfig, load_markets, params_tuple
from perpdex.model import GlobalParams

FEED_DECIMALS = 8
DEPLOYMENTS_DIR = Path(__file__).resolve().parent.parent / "deployments"
CORE_CONTRACTS = ("collateral", "oracle", "vault", "exchange", "liquidity_vault", "liquidator", "insurance_fund", "lens")
log = logging.getLogger("perpdex.deploy")


@dataclass
class Deployment:
    collateral: object
    oracle: object
    vault: object
    exchange: object
    liquidity_vault: object
    liquidator: object
    insurance_fund: object
    lens: object
    markets: list[MarketConfig]
    aggregators: dict[int, list] = field(default_factory=dict)

    @property
    def contracts(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in CORE_CONTRACTS}


def manifest_path(chain_id: int, directory: Path = DEPLOYMENTS_DIR) -> Path:
    return Path(directory) / f"{chain_id}.json"


class Deployer:
    """Deploys what is missing, configures what is not configured, records everything."""

    def __init__(
        self,
        account,
        markets_file: Path | str = DEFAULT_MARKETS_FILE,
        manifest_dir: Path | None = None,
        adl_keepers: tuple[str, ...] = (),
    ):
        from ape import chain, project

        self.account = account
        self.project = project
        self.chain = chain
        self.markets, self.globals = load_markets(markets_file)
        self.raw_config = json.loads(Path(markets_file).read_text())
        self.local = chain.provider.network.name == "local"
        self.path = manifest_path(chain.chain_id, manifest_dir) if manifest_dir else None
        self.manifest = self._load_manifest()
        self.actions: list[str] = []  # what this run did (empty on a re-run)
        self.adl_keepers = (account.address, *adl_keepers)

    # -- manifest ------------------------------------------------------------------------------

    def _load_manifest(self) -> dict:
        if self.path and self.path.exists():
            manifest = json.loads(self.path.read_text())
            if manifest.get("chain_id") == self.chain.chain_id:
                return manifest
        return {"chain_id": self.chain.chain_id, "block": None, "contracts": {}, "markets": []}

    def _save(self) -> None:
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.manifest, indent=2) + "\n")

    def _has_code(self, address: str) -> bool:
        return len(self.chain.provider.get_code(address)) > 0

    def _contract(self, name: str, contract_type: str, *args):
        """The recorded instance if its code is on chain, else a fresh deployment."""
        container = getattr(self.project, contract_type)
        recorded = self.manifest["contracts"].get(name)
        if recorded and self._has_code(recorded["address"]):
            return container.at(recorded["address"])
        instance = container.deploy(*args, sender=self.account)
        if self.manifest["block"] is None:
            self.manifest["block"] = self.chain.blocks.head.number
        self.manifest["contracts"][name] = {
            "address": instance.address,
            "abi": [item.model_dump(mode="json", by_alias=True) for item in container.contract_type.abi],
        }
        self.actions.append(f"deployed {name} at {instance.address}")
        self._save()
        return instance

    def _wire(self, current: str, wanted: str, description: str, fn) -> None:
        """A set-once link: set it if unset, leave it if right, refuse if it points elsewhere."""
        if current == wanted:
            return
        if int(current, 16) != 0:
            raise SystemExit(f"{description} already points to {current}, not {wanted}: inconsistent deployment")
        fn(wanted, sender=self.account)
        self.actions.append(description)

    def _step(self, done: bool, description: str, fn, *args) -> None:
        if done:
            return
        fn(*args, sender=self.account)
        self.actions.append(description)

    # -- the deployment ------------------------------------------------------------------------

    def run(self) -> Deployment:
        collateral = self._collateral()
        aggregators = self._aggregators()
        oracle = self._contract("oracle", "IndexOracle")
        vault = self._contract("vault", "Vault", collateral.address)
        exchange = self._contract("exchange", "Exchange", vault.address, oracle.address)
        liquidity_vault = self._contract(
            "liquidity_vault", "LiquidityVault", vault.address, exchange.address, "perpdex LP", "pLP"
        )
        liquidator = self._contract("liquidator", "Liquidator", exchange.address, vault.address)
        insurance_fund = self._contract("insurance_fund", "InsuranceFund", vault.address, 0)
        lens = self._contract("lens", "Lens", exchange.address, vault.address)

        self._step(oracle.configurator() == exchange.address, "oracle configurator", oracle.set_configurator, exchange.address)
        self._wire(vault.exchange(), exchange.address, "vault exchange", vault.set_exchange)
        self._wire(vault.liquidity_vault(), liquidity_vault.address, "vault liquidity vault", vault.set_liquidity_vault)
        self._wire(vault.liquidator(), liquidator.address, "vault liquidator", vault.set_liquidator)
        self._wire(vault.insurance_fund(), insurance_fund.address, "vault insurance fund", vault.set_insurance_fund)
        self._wire(exchange.liquidator(), liquidator.address, "exchange liquidator", exchange.set_liquidator)
        for keeper in self.adl_keepers:
            self._step(liquidator.adl_keeper(keeper), f"ADL keeper role for {keeper}", liquidator.set_adl_keeper, keeper, True)
        g = self.globals
        current = (
            exchange.insurance_fee_share(), exchange.protocol_fee_share(),
            exchange.keeper_min_reward(), exchange.keeper_reward_share(),
        )
        wanted = (g.insurance_fee_share, g.protocol_fee_share, g.keeper_min_reward, g.keeper_reward_share)
        self._step(current == wanted, "global parameters", exchange.set_global_params, *wanted)
        for m in self.markets:
            feeds = [(agg.address, m.heartbeat) for agg in aggregators[m.id]]
            listed = exchange.market_params(m.id).skew_scale != 0
            self._step(
                listed, f"listed {m.symbol}", exchange.list_market,
                m.id, m.symbol, feeds, m.max_deviation, params_tuple(m.params),
            )
        self.manifest["markets"] = [
            {"id": m.id, "symbol": m.symbol, "aggregators": [a.address for a in aggregators[m.id]]} for m in self.markets
        ]
        self._save()
        return Deployment(
            collateral, oracle, vault, exchange, liquidity_vault, liquidator, insurance_fund, lens, self.markets,
            aggregators,
        )

    def _collateral(self):
        if self.local:
            return self._contract("collateral", "MockUSDC", "USD Coin", "USDC", 6)
        address = self.raw_config.get("collateral")
        if not address:
            raise SystemExit("markets config needs a \"collateral\" address on a non-local network")
        contract = self.project.MockUSDC.at(address)  # any ERC-20 ABI will do for the calls we make
        self.manifest["contracts"]["collateral"] = {"address": address, "abi": []}
        return contract

    def _aggregators(self) -> dict[int, list]:
        result: dict[int, list] = {}
        by_id = {m["id"]: m for m in self.raw_config["markets"]}
        for m in self.markets:
            if self.local:
                answer = int(m.initial_price * 10**FEED_DECIMALS)
                result[m.id] = [
                    self._contract(f"aggregator_{m.symbol}", "MockAggregator", FEED_DECIMALS, f"{m.symbol} / mock", answer)
                ]
            else:
                addresses = by_id[m.id].get("aggregators") or []
                if not addresses:
                    raise SystemExit(f"market {m.symbol} needs \"aggregators\" on a non-local network")
                result[m.id] = [self.project.MockAggregator.at(a) for a in addresses]
        return result


def deploy(account, markets_file: Path | str = DEFAULT_MARKETS_FILE, manifest_dir: Path | None = None) -> Deployment:
    """Deploy or complete a deployment; returns handles to every contract."""
    return Deployer(account, markets_file, manifest_dir).run()


def deploy_local(deployer, markets_file: Path | str = DEFAULT_MARKETS_FILE) -> Deployment:
    """A fresh deployment with mocks, nothing written to disk (demo, tests, benchmarks)."""
    return Deployer(deployer, markets_file, manifest_dir=None).run()
