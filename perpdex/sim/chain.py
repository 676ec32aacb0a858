"""The simulator's chain: perpdex deployed on titanoboa, a fixed clock, and every transaction's
events kept by block.

`deploy` is the one place the stack is put together (mock USDC, a sequencer-uptime feed, the
oracle, vault, exchange, liquidity vault, liquidator, insurance fund, order book and lens, one
mock Chainlink aggregator per market), in the order tests/system.py does it; a contract added
to the deployment is added there.

`Chain` owns the clock: the simulation sets the timestamp (candle time, never wall time) and
every transaction is mined in a block of its own, numbered from 1, so that two runs of one seed
send the same transactions at the same times and end in the same state. `Chain.transact` calls
a contract function as a sender, turns a revert into `SimRevert` with the contract's reason
string, and keeps the transaction's decoded events (`LogEntry`, as the keeper's ape transport
gives them) for the keeper's indexing and the report.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boa
from eth_abi import decode as abi_decode

from perpdex import compiled
from perpdex.config import DEFAULT_MARKETS_FILE, MarketConfig, load_markets, load_order_params, params_tuple
from perpdex.keeper.chain import LogEntry
from perpdex.lp_flows import LpParams
from perpdex.model import GlobalParams
from perpdex.orders import OrderParams

CONTRACTS = Path(__file__).resolve().parent.parent.parent / "contracts"
FEED_DECIMALS = 8
TOKEN_DECIMALS = 6
SEQUENCER_GRACE_PERIOD = 3_600
ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)


class SimRevert(Exception):
    """A transaction the contracts refused, with their reason string."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class SimDeployment:
    """The deployed contracts (titanoboa handles), named as perpdex.deploy.Deployment names them."""

    owner: str
    collateral: Any
    sequencer: Any
    oracle: Any
    vault: Any
    exchange: Any
    liquidity_vault: Any
    liquidator: Any
    insurance_fund: Any
    order_book: Any
    lens: Any
    markets: list[MarketConfig]
    aggregators: dict[int, Any] = field(default_factory=dict)  # market -> its one feed
    block: int = 0  # where the keeper starts indexing

    @property
    def contracts(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in ("collateral", "oracle", "vault", "exchange", "liquidity_vault", "liquidator",
                         "insurance_fund", "order_book", "lens")
        }


@dataclass(frozen=True)
class DeployConfig:
    """What a deployment is made of: markets (with their first prices), globals, order and LP
    parameters, the liquidation capacity and deficit grace period (None: the contracts')."""

    markets: tuple[MarketConfig, ...]
    globals: GlobalParams
    order_params: OrderParams
    lp_params: LpParams = LpParams(min_delay=1, max_age=7200, cooldown=0, execution_fee=0)
    capacity_multiplier: int | None = None
    deficit_grace_period: int | None = None

    @classmethod
    def from_file(cls, path: Path | str = DEFAULT_MARKETS_FILE) -> DeployConfig:
        markets, globals_ = load_markets(path)
        return cls(tuple(markets), globals_, load_order_params(path))


def _load(name: str, *args) -> Any:
    compiled.install()  # as `make compile` compiled it, when it did
    return boa.load(str(CONTRACTS / name), *args)


def deploy(config: DeployConfig, owner: str, first_prices: dict[int, int]) -> SimDeployment:
    """Deploy and configure perpdex as `owner` on titanoboa's current environment; each market's
    feed starts at `first_prices[market]` (feed units, 8 decimals)."""
    with boa.env.prank(owner):
        usdc = _load("mocks/MockUSDC.vy", "USD Coin", "USDC", TOKEN_DECIMALS)
        sequencer = _load("mocks/MockAggregator.vy", 0, "L2 Sequencer Uptime Status Feed", 0)
        sequencer.set_round(1, 0, 1, 1, 1)  # up since the epoch's first second
        oracle = _load("IndexOracle.vy", sequencer.address, SEQUENCER_GRACE_PERIOD)
        vault = _load("Vault.vy", usdc.address)
        exchange = _load("Exchange.vy", vault.address, oracle.address)
        oracle.set_configurator(exchange.address)
        vault.set_exchange(exchange.address)
        liquidity_vault = _load("LiquidityVault.vy", vault.address, exchange.address, "perpdex LP", "pLP")
        vault.set_liquidity_vault(liquidity_vault.address)
        liquidator = _load("Liquidator.vy", exchange.address, vault.address)
        exchange.set_liquidator(liquidator.address)
        vault.set_liquidator(liquidator.address)
        insurance_fund = _load("InsuranceFund.vy", vault.address, 0)
        vault.set_insurance_fund(insurance_fund.address)
        order_book = _load("OrderBook.vy", exchange.address, vault.address, oracle.address, config.order_params.as_tuple())
        exchange.set_order_book(order_book.address)
        vault.set_order_book(order_book.address)
        lens = _load("Lens.vy", exchange.address, vault.address)
        liquidity_vault.set_lp_params(config.lp_params.as_tuple())
        g = config.globals
        exchange.set_global_params(g.insurance_fee_share, g.protocol_fee_share, g.keeper_min_reward, g.keeper_reward_share)
        if config.capacity_multiplier is not None or config.deficit_grace_period is not None:
            liquidator.set_liquidation_params(
                config.capacity_multiplier if config.capacity_multiplier is not None else liquidator.capacity_multiplier(),
                config.deficit_grace_period if config.deficit_grace_period is not None
                else liquidator.deficit_grace_period(),
            )
        d = SimDeployment(owner, usdc, sequencer, oracle, vault, exchange, liquidity_vault, liquidator, insurance_fund,
                          order_book, lens, list(config.markets))
        for m in config.markets:
            agg = _load("mocks/MockAggregator.vy", FEED_DECIMALS, f"{m.symbol} feed", first_prices[m.id])
            exchange.list_market(m.id, m.symbol, [(agg.address, m.heartbeat)], m.max_deviation, params_tuple(m.params))
            d.aggregators[m.id] = agg
    return d


@dataclass
class Receipt:
    """A mined simulated transaction: its block and decoded events."""

    txn_hash: str
    block: int
    logs: list[LogEntry]
    result: Any = None
    sources: list[str] = field(default_factory=list)  # the emitting contract's deployment name, per log

    def events(self, name: str, source: str | None = None) -> list[Any]:
        """The events called `name` (emitted by the contract `source` when given: the vault and
        the liquidator both have a DeficitWrittenOff), their arguments as attributes."""
        return [EventArgs(log.args) for i, log in enumerate(self.logs)
                if log.event == name and (source is None or self.sources[i] == source)]


class EventArgs(dict):
    """An event's arguments, read as attributes (`event.owner`) or items."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


def revert_reason_of(output: bytes) -> str:
    """The reason string of a revert's output (Error(string)), or a description of it."""
    if output[:4] == ERROR_SELECTOR:
        return abi_decode(["string"], output[4:])[0]
    return f"revert 0x{output.hex()}" if output else "revert without a reason"


class Chain:
    """The fixed clock, the block counter and the event log of one simulated chain."""

    def __init__(self, start_time: int):
        self.env = boa.env
        self.block = 0
        self.transactions = 0
        self.logs: list[LogEntry] = []  # every event of every mined transaction, in order
        self._log_blocks: list[int] = []  # the block of each entry of `logs`
        self.block_times: dict[int, int] = {}  # block -> its timestamp (blocks with events)
        self.log_sources: list[str] = []  # the emitting contract's deployment name, per entry of `logs`
        self._last_sources: list[str] = []
        self._decoders: dict[bytes, dict[int, tuple[Any, str]]] = {}
        self._speculation: tuple[Any, list] | None = None  # (state snapshot, [(result, logs, sources)])
        self.version = 0  # changes whenever a transaction may have changed the state (for read caches)
        self.set_time(start_time)
        self._recording = True

    # -- clock -----------------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return self.env.evm.patch.timestamp

    def set_time(self, timestamp: int) -> None:
        """Move the clock (never backwards)."""
        self.env.evm.patch.timestamp = max(timestamp, getattr(self, "_last_time", 0))
        self._last_time = self.env.evm.patch.timestamp

    # -- events ----------------------------------------------------------------------------------

    def watch(self, contracts: dict[str, Any]) -> None:
        """Decode the events of these contracts, by deployment name (others are left out)."""
        for source, c in contracts.items():
            decoders = {}
            for event_id, event_t in c.event_for.items():
                decoders[event_id] = (c, event_t.name, source)
            self._decoders[c.address.canonical_address] = decoders

    def _decode(self, computation) -> list[LogEntry]:
        from boa.contracts.event_decoder import RawLogEntry

        entries = []
        for raw in sorted(computation.get_raw_log_entries()):
            entry = RawLogEntry(*raw)
            decoders = self._decoders.get(entry.address)
            if not decoders or not entry.topics:
                continue
            found = decoders.get(entry.topics[0])
            if found is None:
                continue
            contract, name, source = found
            args = contract.decode_log(entry)._asdict()
            args.pop("address", None)
            entries.append(LogEntry(name, args, self.block, len(entries)))
            self._last_sources.append(source)
        return entries

    # -- transactions ----------------------------------------------------------------------------

    def transact(self, sender: str, method, *args) -> Receipt:
        """`method(*args)` sent by `sender`, mined in a block of its own; SimRevert on a revert
        (the block is not used)."""
        self.block += 1
        try:
            result, logs, sources = self._execute(sender, method, args)
        except BaseException:
            self.block -= 1
            self.env.evm.patch.block_number = self.block
            raise
        return self._mined(logs, sources, result)

    def _execute(self, sender: str, method, args: tuple) -> tuple[Any, list[LogEntry], list[str]]:
        """Run `method(*args)` from `sender` in block `self.block`: its result, decoded events
        and their sources; SimRevert on a revert (nothing it wrote stays)."""
        contract = method.contract
        self.env.evm.patch.block_number = self.block
        self.version += 1
        try:
            with self.env.prank(sender):
                result = method(*args)
        except Exception as err:
            computation = getattr(contract, "_computation", None)
            if computation is not None and computation.is_error:
                raise SimRevert(revert_reason_of(bytes(computation.output))) from err
            raise
        self._last_sources = []
        logs = self._decode(contract._computation) if self._decoders else []
        return result, logs, self._last_sources

    def _mined(self, logs: list[LogEntry], sources: list[str], result: Any) -> Receipt:
        """Record a transaction mined in block `self.block` with these events."""
        if self._recording:
            self.logs.extend(logs)
            self._log_blocks.extend(log.block for log in logs)
            self.log_sources.extend(sources)
            if logs:
                self.block_times[self.block] = self.now
            self.transactions += 1
        return Receipt(f"0x{self.block:064x}", self.block, logs, result, list(sources))

    # -- speculation -----------------------------------------------------------------------------

    def speculate(self, sender: str, method, *args) -> Any:
        """Run `method(*args)` from `sender` for real in the next block, kept aside: a run of
        speculations is then either mined as one transaction (`mine_speculation`, when that
        transaction is exactly their sequence) or undone (`drop_speculation`). The first
        speculation opens the run at the current state; SimRevert on a revert (the run stays
        as it was)."""
        if self._speculation is None:
            self._speculation = (self.env.evm.snapshot(), [])
        self.block += 1
        try:
            result, logs, sources = self._execute(sender, method, args)
        finally:
            self.block -= 1
            self.env.evm.patch.block_number = self.block
        self._speculation[1].append((result, logs, sources))
        return result

    @property
    def speculating(self) -> int:
        """How many speculations are kept aside."""
        return 0 if self._speculation is None else len(self._speculation[1])

    def drop_speculation(self) -> None:
        """Undo the speculations kept aside, if any."""
        if self._speculation is not None:
            snapshot, _ = self._speculation
            self._speculation = None
            self.env.evm.revert(snapshot)
            self.version += 1

    def mine_speculation(self, result: Any = None) -> Receipt:
        """Keep what the speculations did, mined as one transaction in the next block (their
        events in order, renumbered), returning `result` (None: the last speculation's)."""
        snapshot, runs = self._speculation
        self._speculation = None
        self.env.evm.vm.state.commit(snapshot)
        self.block += 1
        self.env.evm.patch.block_number = self.block
        logs, sources = [], []
        for _, run_logs, run_sources in runs:
            for log in run_logs:
                logs.append(LogEntry(log.event, log.args, self.block, len(logs)))
            sources.extend(run_sources)
        return self._mined(logs, sources, runs[-1][0] if result is None else result)

    def call(self, sender: str, method, *args) -> Any:
        """`method(*args)` as an eth_call on the current state: nothing it writes stays, nor its
        events; SimRevert on a revert."""
        with self.simulation():
            return self.transact(sender, method, *args).result

    @contextlib.contextmanager
    def simulation(self) -> Iterator[None]:
        block, recording = self.block, self._recording
        self._recording = False
        try:
            with self.env.anchor():
                yield
        finally:
            self.version += 1
            self.block, self._recording = block, recording
            self.env.evm.patch.block_number = block

    def logs_between(self, start: int, stop: int, wanted: frozenset | None = None) -> list[LogEntry]:
        """The events of blocks start..stop (the log is in block order); only the (contract
        name, event name) pairs of `wanted` when given."""
        blocks = self._log_blocks
        first, last = bisect.bisect_left(blocks, start), bisect.bisect_right(blocks, stop)
        if wanted is None:
            return self.logs[first:last]
        sources = self.log_sources
        return [self.logs[i] for i in range(first, last) if (sources[i], self.logs[i].event) in wanted]
