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

`load_deployment` is the one way back from a manifest to contract handles (the wallet CLI, the
keeper and the pusher all use it): it checks the chain id, that every recorded address has
code, and carries the deployment block (where the keeper starts indexing events).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import click

from perpdex.config import DEFAULT_MARKETS_FILE, MarketConfig, load_markets, load_order_params, params_tuple
from perpdex.node import follow_interval_mining
from perpdex.snapshot import market_params

FEED_DECIMALS = 8
ZERO_ADDRESS = "0x" + "00" * 20
DEPLOYMENTS_DIR = Path(__file__).resolve().parent.parent / "deployments"
CORE_CONTRACTS = (
    "collateral", "oracle", "vault", "exchange", "liquidity_vault", "liquidator", "insurance_fund", "lens", "order_book",
)
OPTIONAL_CONTRACTS = ("lens",)  # manifests written before the Lens existed still load; the keeper reads without it
# manifest name -> project contract type, where it is not the name in CamelCase
CONTRACT_TYPES = {
    "collateral": "MockUSDC",  # any ERC-20 ABI does for the calls the tools make
    "oracle": "IndexOracle",
    "aggregator": "MockAggregator",  # AggregatorV3Interface
}
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
    order_book: object
    markets: list[MarketConfig]
    aggregators: dict[int, list] = field(default_factory=dict)
    block: int | None = None  # the block of the first deployment transaction

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
        self.order_params = load_order_params(markets_file)
        self.raw_config = json.loads(Path(markets_file).read_text())
        self.local = chain.provider.network.name == "local"
        follow_interval_mining(chain.provider)
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
        # no L2 sequencer-uptime feed on the chains deployed so far (the feed is fixed at deployment)
        oracle = self._contract("oracle", "IndexOracle", ZERO_ADDRESS, 0)
        vault = self._contract("vault", "Vault", collateral.address)
        exchange = self._contract("exchange", "Exchange", vault.address, oracle.address)
        liquidity_vault = self._contract(
            "liquidity_vault", "LiquidityVault", vault.address, exchange.address, "perpdex LP", "pLP"
        )
        liquidator = self._contract("liquidator", "Liquidator", exchange.address, vault.address)
        insurance_fund = self._contract("insurance_fund", "InsuranceFund", vault.address, 0)
        lens = self._contract("lens", "Lens", exchange.address, vault.address)
        order_book = self._contract(
            "order_book", "OrderBook", exchange.address, vault.address, oracle.address, self.order_params.as_tuple()
        )

        self._step(oracle.configurator() == exchange.address, "oracle configurator", oracle.set_configurator, exchange.address)
        self._wire(vault.exchange(), exchange.address, "vault exchange", vault.set_exchange)
        self._wire(vault.liquidity_vault(), liquidity_vault.address, "vault liquidity vault", vault.set_liquidity_vault)
        self._wire(vault.liquidator(), liquidator.address, "vault liquidator", vault.set_liquidator)
        self._wire(vault.insurance_fund(), insurance_fund.address, "vault insurance fund", vault.set_insurance_fund)
        self._wire(exchange.liquidator(), liquidator.address, "exchange liquidator", exchange.set_liquidator)
        self._wire(exchange.order_book(), order_book.address, "exchange order book", exchange.set_order_book)
        self._wire(vault.order_book(), order_book.address, "vault order book", vault.set_order_book)
        self._step(
            tuple(order_book.order_params()) == self.order_params.as_tuple(), "order parameters",
            order_book.set_order_params, self.order_params.as_tuple(),
        )
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
            collateral, oracle, vault, exchange, liquidity_vault, liquidator, insurance_fund, lens, order_book,
            self.markets, aggregators, self.manifest["block"],
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


# =============================================================================================
# From a manifest back to contract handles
# =============================================================================================


class ManifestError(click.ClickException):
    """A manifest that cannot be used on the connected chain; printed without a traceback."""

    def show(self, file=None) -> None:
        click.echo(self.format_message(), err=True)


def default_manifest_path() -> Path:
    """deployments/<chain_id>.json of the connected chain."""
    from ape import chain

    return manifest_path(chain.chain_id)


def contract_type_name(key: str) -> str:
    """Manifest key -> project contract type: 'liquidity_vault' -> 'LiquidityVault'."""
    if key.startswith("aggregator"):
        return CONTRACT_TYPES["aggregator"]
    return CONTRACT_TYPES.get(key) or "".join(part.capitalize() for part in key.split("_"))


def _contract_at(key: str, address: str, abi: list | None = None):
    """A handle through the project's contract type (the manifest's ABI for a type the project
    does not have); refuses an address without code (a manifest of a restarted devnet)."""
    from ape import Contract, chain, project

    if len(chain.provider.get_code(address)) == 0:
        raise ManifestError(
            f"no {key} contract at {address} on chain {chain.chain_id}: the manifest is stale "
            "(a restarted devnet?); deploy again with `ape run deploy`"
        )
    container = getattr(project, contract_type_name(key), None)
    if container is not None:
        return container.at(address)
    return Contract(address, abi=abi)


def _listed_market(exchange, oracle, entry: dict) -> MarketConfig:
    """A listed market as configured on chain (the manifest records only its id and symbol).
    `initial_price` only seeds the mock feeds of a new deployment: 0 here."""
    market_id = int(entry["id"])
    feeds = oracle.feeds(market_id)
    return MarketConfig(
        id=market_id,
        symbol=entry["symbol"],
        initial_price=Decimal(0),
        heartbeat=min((int(f.heartbeat) for f in feeds), default=0),
        max_deviation=int(oracle.max_deviation(market_id)),
        params=market_params(exchange.market_params(market_id)),
    )


def load_deployment(path: Path | str | None = None) -> Deployment:
    """Handles to a deployed perpdex from its manifest (deployments/<chain_id>.json of the
    connected chain by default), with the deployment block.

    Needs a connected provider on the manifest's chain; raises ManifestError for a missing or
    incomplete manifest, another chain, or an address without code. Also makes ape wait for
    receipts on a node that mines on an interval (perpdex.node)."""
    from ape import chain

    follow_interval_mining(chain.provider)
    path = Path(path) if path else default_manifest_path()
    if not path.exists():
        raise ManifestError(f"no deployment manifest at {path}: deploy first with `ape run deploy`")
    manifest = json.loads(path.read_text())
    if int(manifest.get("chain_id", -1)) != chain.chain_id:
        raise ManifestError(f"{path} is for chain {manifest.get('chain_id')}, connected to chain {chain.chain_id}")
    recorded = manifest.get("contracts", {})
    missing = [name for name in CORE_CONTRACTS if name not in recorded and name not in OPTIONAL_CONTRACTS]
    if missing:
        raise ManifestError(f"{path} is incomplete (missing {', '.join(missing)}): run `ape run deploy` again")
    contracts = {
        name: _contract_at(name, recorded[name]["address"], recorded[name].get("abi")) if name in recorded else None
        for name in CORE_CONTRACTS
    }
    entries = manifest.get("markets", [])
    aggregators = {int(m["id"]): [_contract_at("aggregator", a) for a in m.get("aggregators", [])] for m in entries}
    markets = [_listed_market(contracts["exchange"], contracts["oracle"], m) for m in entries]
    block = None if manifest.get("block") is None else int(manifest["block"])
    return Deployment(**contracts, markets=markets, aggregators=aggregators, block=block)
