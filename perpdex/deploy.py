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

Ownership ends with the Timelock (contracts/Timelock.vy, recorded as the manifest's
`"timelock"`): every parameter, listing and role is set first by the deploying account, then
each contract's ownership is transferred to the timelock, which accepts them in one operation
of its own. The timelock is deployed with a minimum delay of 0 and proposer and executor roles
for the deploying account only; the same operation that accepts the ownerships also grants the
final roles (`TimelockPlan`), withdraws the deploying account's if it is not among them, and
raises the delay to its final value, so the handover is atomic and needs no wait. After it,
a re-run that finds a setting to change (a new market in the config, changed order
parameters) schedules the changes through the timelock as one batch: executed at once on local
networks (the clock moves over the short delay), scheduled elsewhere, to be executed by running
`ape run deploy` again once the delay has passed. docs/governance.md has the delay's reasoning.

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
from perpdex.governance import CANCELLER_ROLE, EXECUTOR_ROLE, PROPOSER_ROLE, Call, Governance, GovernanceError
from perpdex.node import follow_interval_mining
from perpdex.snapshot import market_params

FEED_DECIMALS = 8
ZERO_ADDRESS = "0x" + "00" * 20
DEPLOYMENTS_DIR = Path(__file__).resolve().parent.parent / "deployments"
CORE_CONTRACTS = (
    "collateral", "oracle", "vault", "exchange", "liquidity_vault", "liquidator", "insurance_fund", "lens", "order_book",
    "timelock",
)
# manifests written before the Lens or the Timelock existed still load; the keeper reads without them
OPTIONAL_CONTRACTS = ("lens", "timelock")
# the contracts with an owner (snekmate's ownable_2step), all handed over to the timelock
OWNED_CONTRACTS = ("oracle", "vault", "exchange", "liquidity_vault", "liquidator", "insurance_fund", "order_book")
LOCAL_TIMELOCK_DELAY = 2  # seconds: setup on devnets and in tests goes through the timelock quickly
NETWORK_TIMELOCK_DELAY = 86_400  # 24 hours, the least on any non-local network
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
    timelock: object | None = None  # the owner of every contract (None: the deploying account owns them)

    @property
    def contracts(self) -> dict[str, object]:
        """Every contract of the deployment by manifest name (those it does not have left out)."""
        return {name: c for name in CORE_CONTRACTS if (c := getattr(self, name)) is not None}


@dataclass(frozen=True)
class TimelockPlan:
    """Who governs once the deployment is handed over. `delay` in seconds (None: 2 s on local
    networks, 24 hours elsewhere); no proposers: the deploying account; no executors: the
    proposers; cancellers besides the proposers (a guardian that can stop a hostile change)."""

    delay: int | None = None
    proposers: tuple[str, ...] = ()
    executors: tuple[str, ...] = ()
    cancellers: tuple[str, ...] = ()


def exit_queue(deployment_contracts: dict, markets: list[MarketConfig]) -> dict[str, int]:
    """The longest a trader or an LP can take to get out, in seconds, under the contracts' hard
    bounds (so whatever the owner sets the parameters to):

    - a trader's closing order executes at the first oracle round published `min_order_delay`
      after the commit (at most MAX_MIN_ORDER_DELAY), and a round comes at least every
      heartbeat; `max_order_age` only bounds how long an unexecuted order survives, and anyone
      may execute their own order, so it is no queue;
    - an LP's shares from a deposit are locked for `cooldown` (at most MAX_COOLDOWN), and a
      redemption request that no round executed lapses after `max_age` (at most MAX_MAX_AGE),
      when the LP can cancel and request again.
    """
    book, lv = deployment_contracts["order_book"], deployment_contracts["liquidity_vault"]
    heartbeat = max((m.heartbeat for m in markets), default=0)
    queues = {"trader close": int(book.MAX_MIN_ORDER_DELAY()) + heartbeat}
    if hasattr(lv, "MAX_MAX_AGE") and hasattr(lv, "MAX_COOLDOWN"):
        queues["LP redemption"] = int(lv.MAX_COOLDOWN()) + int(lv.MAX_MAX_AGE())
    return queues


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
        timelock: TimelockPlan | None = TimelockPlan(),
        insurance_target: int | None = None,
        guardian: str | None = None,
        seed_liquidity_usd: Decimal | int = 0,
    ):
        """`timelock` None keeps the deploying account as the owner of every contract (in-process
        tests and benchmarks that change parameters as they go); `insurance_target` (WAD USD)
        and the exchange's `guardian` (the deploying account by default), when given, are set
        before the handover."""
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
        self.plan = timelock
        self.insurance_target = insurance_target
        self.guardian = guardian
        self.seed_liquidity_usd = Decimal(seed_liquidity_usd)  # the owner deposits it before the handover
        self.timelock = None
        self.queued: list[Call] = []  # owner calls that go through the timelock, as one batch

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

    def _wire(self, current: str, wanted: str, description: str, contract, method: str) -> None:
        """A set-once link: set it if unset, leave it if right, refuse if it points elsewhere."""
        if current == wanted:
            return
        if int(current, 16) != 0:
            raise SystemExit(f"{description} already points to {current}, not {wanted}: inconsistent deployment")
        self._as_owner(description, contract, method, wanted)

    def _step(self, done: bool, description: str, contract, method: str, *args) -> None:
        if not done:
            self._as_owner(description, contract, method, *args)

    def _as_owner(self, description: str, contract, method: str, *args) -> None:
        """`contract.method(*args)` by its owner: the deploying account at once, the timelock
        through the batch `run` schedules at the end."""
        owner = contract.owner()
        if owner == self.account.address:
            getattr(contract, method)(*args, sender=self.account)
            self.actions.append(description)
        elif self.timelock is not None and owner == self.timelock.address:
            self.queued.append(Call.of(contract, method, *args, description=description))
        else:
            raise SystemExit(
                f"{description}: {contract.address} is owned by {owner}, neither the deploying account "
                f"{self.account.address} nor the recorded timelock; deploy from the owner's account"
            )

    # -- the deployment ------------------------------------------------------------------------

    def run(self) -> Deployment:
        collateral = self._collateral()
        if self.plan is not None and "timelock" in self.manifest["contracts"]:
            # a deployment handed over before: later settings go through its timelock
            self.timelock = self._contract("timelock", "Timelock", 0, [self.account.address], [self.account.address],
                                           ZERO_ADDRESS)
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

        self._step(oracle.configurator() == exchange.address, "oracle configurator", oracle, "set_configurator",
                   exchange.address)
        self._wire(vault.exchange(), exchange.address, "vault exchange", vault, "set_exchange")
        self._wire(vault.liquidity_vault(), liquidity_vault.address, "vault liquidity vault", vault, "set_liquidity_vault")
        self._wire(vault.liquidator(), liquidator.address, "vault liquidator", vault, "set_liquidator")
        self._wire(vault.insurance_fund(), insurance_fund.address, "vault insurance fund", vault, "set_insurance_fund")
        self._wire(exchange.liquidator(), liquidator.address, "exchange liquidator", exchange, "set_liquidator")
        self._wire(exchange.order_book(), order_book.address, "exchange order book", exchange, "set_order_book")
        self._wire(vault.order_book(), order_book.address, "vault order book", vault, "set_order_book")
        self._step(
            tuple(order_book.order_params()) == self.order_params.as_tuple(), "order parameters",
            order_book, "set_order_params", self.order_params.as_tuple(),
        )
        for keeper in self.adl_keepers:
            self._step(liquidator.adl_keeper(keeper), f"ADL keeper role for {keeper}", liquidator, "set_adl_keeper",
                       keeper, True)
            self._step(liquidity_vault.lp_executor(keeper), f"LP executor role for {keeper}", liquidity_vault,
                       "set_lp_executor", keeper, True)
        if self.guardian is not None:
            self._step(exchange.guardian() == self.guardian, f"guardian {self.guardian}", exchange, "set_guardian",
                       self.guardian)
        if self.insurance_target is not None:
            self._step(insurance_fund.target() == self.insurance_target, "insurance fund target", insurance_fund,
                       "set_target", self.insurance_target)
        g = self.globals
        current = (
            exchange.insurance_fee_share(), exchange.protocol_fee_share(),
            exchange.keeper_min_reward(), exchange.keeper_reward_share(),
        )
        wanted = (g.insurance_fee_share, g.protocol_fee_share, g.keeper_min_reward, g.keeper_reward_share)
        self._step(current == wanted, "global parameters", exchange, "set_global_params", *wanted)
        for m in self.markets:
            feeds = [(agg.address, m.heartbeat) for agg in aggregators[m.id]]
            listed = exchange.market_params(m.id).skew_scale != 0
            self._step(
                listed, f"listed {m.symbol}", exchange, "list_market",
                m.id, m.symbol, feeds, m.max_deviation, params_tuple(m.params),
            )
        if self.seed_liquidity_usd and liquidity_vault.totalSupply() == 0:
            # the liquidity vault's first capital: the owner's synchronous deposit, the only one
            # there is (LPs request and a keeper executes); minted first on local networks
            amount = int(self.seed_liquidity_usd * 10 ** int(collateral.decimals()))
            if self.local:
                collateral.mint(self.account.address, amount, sender=self.account)
            collateral.approve(liquidity_vault.address, amount, sender=self.account)
            liquidity_vault.deposit(amount, self.account.address, sender=self.account)
            self.actions.append(f"seeded the liquidity vault with {self.seed_liquidity_usd:,} USD")
        self.manifest["markets"] = [
            {"id": m.id, "symbol": m.symbol, "aggregators": [a.address for a in aggregators[m.id]]} for m in self.markets
        ]
        self._save()
        d = Deployment(
            collateral, oracle, vault, exchange, liquidity_vault, liquidator, insurance_fund, lens, order_book,
            self.markets, aggregators, self.manifest["block"],
        )
        if self.plan is not None:
            self._hand_over(d)
            d.timelock = self.timelock
        return d

    # -- the handover to the timelock -------------------------------------------------------------

    def timelock_delay(self) -> int:
        """The plan's delay, or the network's default."""
        if self.plan.delay is not None:
            return int(self.plan.delay)
        return LOCAL_TIMELOCK_DELAY if self.local else NETWORK_TIMELOCK_DELAY

    def check_delay(self, d: Deployment) -> None:
        """Off local networks: at least 24 hours, and longer than the longest exit queue."""
        delay = self.timelock_delay()
        if delay < 1:
            raise SystemExit(f"timelock delay {delay} s: it must be at least 1 s")
        if self.local:
            return
        queues = exit_queue(d.contracts, self.markets)
        worst_name, worst = max(queues.items(), key=lambda item: item[1])
        if delay < NETWORK_TIMELOCK_DELAY or delay <= worst:
            raise SystemExit(
                f"timelock delay {delay:,} s is too short for a non-local network: it must be at least "
                f"{NETWORK_TIMELOCK_DELAY:,} s (24 h) and longer than the longest exit queue, the {worst_name} "
                f"({worst:,} s under the contracts' hard bounds)"
            )

    def _hand_over(self, d: Deployment) -> None:
        """Transfer every owned contract to the timelock and have it accept (see the module)."""
        self.check_delay(d)
        me = self.account.address
        self.timelock = self._contract("timelock", "Timelock", 0, [me], [me], ZERO_ADDRESS)
        gov = Governance(self.timelock, self.account, self.chain)
        for name in OWNED_CONTRACTS:
            contract = getattr(d, name)
            if contract.owner() == me and contract.pending_owner() != self.timelock.address:
                contract.transfer_ownership(self.timelock.address, sender=self.account)
                self.actions.append(f"{name} ownership offered to the timelock")
        for name in OWNED_CONTRACTS:
            contract = getattr(d, name)
            if contract.owner() != self.timelock.address and contract.pending_owner() == self.timelock.address:
                self.queued.append(Call.of(contract, "accept_ownership", description=f"timelock accepts {name}"))
        self.queued += self._timelock_settings(gov)
        if not self.queued:
            return
        if not gov.has_role(PROPOSER_ROLE):
            listing = "\n".join(f"  {c.target} 0x{c.payload.hex()}  ({c.description})" for c in self.queued)
            raise SystemExit(
                f"{me} is not a proposer of the timelock {self.timelock.address}: have a proposer schedule "
                f"these calls as one batch (`ape run governance schedule ...`):\n{listing}"
            )
        try:
            op, outcome = gov.enact(self.queued)
        except GovernanceError as err:
            raise SystemExit(str(err)) from None
        described = "; ".join(c.description for c in self.queued)
        self.actions.append(f"through the timelock ({outcome}): {described}")
        if outcome != "executed":
            self.actions.append("run `ape run deploy` again after that time to execute it")
        self.queued = []

    def _timelock_settings(self, gov: Governance) -> list[Call]:
        """The timelock's own roles and delay. While its delay is still the bootstrap's 0, the
        plan's roles are granted and the deploying account's withdrawn if it is not in them;
        afterwards only an explicitly given delay that differs is changed (roles are for
        `ape run governance`)."""
        tl, me = self.timelock, self.account.address
        wanted_delay = self.timelock_delay()
        calls: list[Call] = []
        if gov.min_delay == 0:
            proposers = self.plan.proposers or (me,)
            executors = self.plan.executors or proposers
            grants = [(PROPOSER_ROLE, "proposer", proposers), (CANCELLER_ROLE, "canceller", proposers),
                      (CANCELLER_ROLE, "canceller", self.plan.cancellers), (EXECUTOR_ROLE, "executor", executors)]
            for role, name, holders in grants:
                for holder in holders:
                    if not tl.hasRole(role, holder):
                        calls.append(Call.of(tl, "grantRole", role, holder, description=f"{name} role for {holder}"))
            for role, name, holders in ((PROPOSER_ROLE, "proposer", proposers),
                                        (CANCELLER_ROLE, "canceller", (*proposers, *self.plan.cancellers)),
                                        (EXECUTOR_ROLE, "executor", executors)):
                if me not in holders and tl.hasRole(role, me):
                    calls.append(Call.of(tl, "revokeRole", role, me, description=f"{name} role withdrawn from {me}"))
        elif self.plan.delay is None or gov.min_delay == wanted_delay:
            return calls
        if gov.min_delay != wanted_delay:
            calls.append(Call.of(tl, "update_delay", wanted_delay, description=f"timelock delay {wanted_delay:,} s"))
        return calls

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


def deploy_local(
    deployer, markets_file: Path | str = DEFAULT_MARKETS_FILE, timelock_delay: int | None = None,
    adl_keepers: tuple[str, ...] = (), seed_liquidity_usd: int = 0,
) -> Deployment:
    """A fresh deployment with mocks, nothing written to disk (demo, tests, benchmarks).

    Without `timelock_delay` the deploying account stays the owner of every contract (tests and
    benchmarks that change parameters as they go); with it, ownership goes to a timelock with
    that delay, as `ape run deploy` does (owner actions then go through perpdex.governance).
    `seed_liquidity_usd`: the deploying account's seed of the liquidity vault (the global
    open-interest cap leaves no room to trade before the vault has capital)."""
    plan = None if timelock_delay is None else TimelockPlan(delay=timelock_delay)
    return Deployer(deployer, markets_file, manifest_dir=None, adl_keepers=adl_keepers, timelock=plan,
                    seed_liquidity_usd=seed_liquidity_usd).run()


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
