"""The keeper's transport over ape: it reads chain state and sends transactions, and decides
nothing. Everything here takes a block (the keeper reads one consistent head per round) or
targets the pending state (simulations see the transactions already in the node's pool).

- **Indexing**: the vault's, exchange's, liquidator's and order book's logs in block ranges
  (`ChainClient.fetch_logs`), as plain `LogEntry` records.
- **State**: markets and globals into an `ExchangeModel` (one Lens call when deployed), accounts
  (Lens batches), order parameters, feeds and their rounds.
- **Simulate, then send**: every transaction is first an eth_call on the pending state; `send`
  retries once on a nonce error.
- **Errors**: reverts (with the contract's reason), transient RPC trouble, nonce errors.
- **Checkpoint**: the keeper's indexed state, written atomically.

`ape run keeper` runs on a node through `perpdex.keeper.rpc_client.RpcClient`, which inherits
the reads here and replaces ape's calls and transactions with JSON-RPC; this ape transport
serves the keeper on ape's own test chain (tests/integration).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perpdex.keeper.core import AccountKey, AccountState, Snapshot
from perpdex.keeper.orders import FeedRound, feed_round
from perpdex.keeper.reads import Views, ViewReverted
from perpdex.model import LIQUIDITY_VAULT, ExchangeModel, GlobalParams, MarketState
from perpdex.orders import OrderParams
from perpdex.snapshot import market_params

LENS_BATCH = 200  # accounts per Lens.accounts eth_call (the Lens takes up to 500)
NONCE_ERRORS = ("nonce too low", "replacement transaction underpriced", "already known", "invalid nonce", "nonce too high")
INDEXED_EVENTS = (
    ("vault", "Deposit"), ("vault", "Withdraw"), ("vault", "PairSettled"), ("exchange", "Trade"),
    ("liquidator", "AdlKeeperSet"), ("liquidator", "DeficitRecorded"), ("liquidator", "DeficitWrittenOff"),
)
ORDER_EVENTS = (
    ("vault", "FeeEscrowed"), ("vault", "EscrowReleased"),
    ("order_book", "OrderCommitted"), ("order_book", "OrderExecuted"), ("order_book", "OrderCancelled"),
    ("order_book", "OrderParamsSet"), ("oracle", "FeedsSet"),
)


# =============================================================================================
# Errors
# =============================================================================================


def revert_reason(err: Exception) -> str | None:
    """The contract's reason string when `err` is a revert, else None."""
    from ape.exceptions import ContractLogicError

    if isinstance(err, ViewReverted):
        return err.reason
    if isinstance(err, ContractLogicError):
        return str(err.revert_message or err)
    return None


def is_rpc_error(err: Exception) -> bool:
    """Transient provider trouble (logged as a warning before the backoff), as opposed to a
    revert or a bug (logged with its traceback). A provider lacking an API is a bug, not
    trouble: it is not listed."""
    from ape.exceptions import ContractLogicError, ProviderError, TransactionError
    from web3.exceptions import ContractLogicError as Web3ContractLogicError
    from web3.exceptions import Web3Exception

    if isinstance(err, (ContractLogicError, Web3ContractLogicError)):
        return False
    return isinstance(err, (ConnectionError, TimeoutError, OSError, ProviderError, TransactionError, Web3Exception))


def is_nonce_error(err: Exception) -> bool:
    text = str(err).lower()
    return any(marker in text for marker in NONCE_ERRORS)


# =============================================================================================
# Checkpoint
# =============================================================================================


def read_checkpoint(path: Path | None) -> dict | None:
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text())


def write_checkpoint(path: Path | None, data: dict) -> None:
    """Atomically replace the checkpoint: a crash leaves the old or the new one, whole."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def default_checkpoint_path(chain_id: int, directory: Path | str) -> Path:
    return Path(directory) / f"keeper-{chain_id}.json"


# =============================================================================================
# The client
# =============================================================================================


def install_lens_markets(model: ExchangeModel, snapshots, unpriced: Callable[[int, str | None], None]) -> None:
    """Every market of a `Lens.markets()` answer into `model` (parameters, state, index); each
    market is reported priced to `unpriced`."""
    for m in snapshots:
        market_id = int(m.market_id)
        model.params[market_id] = market_params(m.params)
        model.markets[market_id] = MarketState(
            int(m.long_oi), int(m.short_oi), int(m.funding_per_unit), int(m.last_funding_time), int(m.open_notional_sum)
        )
        model.index[market_id] = int(m.index_price)
        unpriced(market_id, None)


@dataclass(frozen=True)
class LogEntry:
    """One decoded event log."""

    event: str
    args: dict[str, Any]
    block: int
    log_index: int


@dataclass(frozen=True)
class FeedConfig:
    aggregator: str
    heartbeat: int
    decimals: int


class ChainClient:
    """Reads and sends for the keeper, over a perpdex.deploy.Deployment (ape contract handles)
    and an ape account."""

    def __init__(self, deployment, account):
        from ape import chain

        self.chain = chain
        self.deployment = deployment
        self.account = account
        self.address = account.address
        self.order_book = getattr(deployment, "order_book", None)  # None: a deployment from before orders
        self._market_ids: list[int] = []
        self._aggregators: dict[str, Views] = {}
        self._views: dict[str, Views] = {}
        self.on_nonce_retry: Callable[[Exception], None] | None = None  # the keeper logs the retry

    # the runner asks the client what an error means: another transport has other exceptions
    revert_reason = staticmethod(revert_reason)
    is_rpc_error = staticmethod(is_rpc_error)

    @property
    def chain_id(self) -> int:
        return self.chain.chain_id

    def view(self, name: str) -> Views:
        """The deployment's contract `name` for view calls at a block (perpdex.keeper.reads)."""
        views = self._views.get(name)
        if views is None:
            views = self._views[name] = Views(getattr(self.deployment, name), self.chain.provider, self.address)
        return views

    def head(self) -> tuple[int, int]:
        """(number, timestamp) of the head block."""
        block = self.chain.blocks.head
        return block.number, block.timestamp

    @property
    def nonce(self) -> int:
        return self.account.nonce

    # -- indexing --------------------------------------------------------------------------------

    def fetch_logs(self, start: int, stop: int) -> list[LogEntry]:
        from ape.types import LogFilter
        from eth_utils import encode_hex, keccak

        d = self.deployment
        wanted = INDEXED_EVENTS + (ORDER_EVENTS if self.order_book is not None else ())
        events = [getattr(getattr(d, contract), name).abi for contract, name in wanted]
        addresses = [d.vault.address, d.exchange.address, d.liquidator.address]
        if self.order_book is not None:
            addresses += [self.order_book.address, d.oracle.address]
        log_filter = LogFilter(
            addresses=addresses,
            events=events,
            topic_filter=[[encode_hex(keccak(text=abi.selector)) for abi in events]],
            start_block=start,
            stop_block=stop,
        )
        return [
            LogEntry(log.event_name, dict(log.event_arguments), int(log.block_number), int(log.log_index))
            for log in self.chain.provider.get_contract_logs(log_filter)
        ]

    # -- markets and globals ---------------------------------------------------------------------

    def market_list(self, block: int) -> list[int]:
        exchange = self.view("exchange")
        count = exchange.market_count(block_id=block)
        if count != len(self._market_ids):
            self._market_ids = [exchange.market_ids(i, block_id=block) for i in range(count)]
        return self._market_ids

    def read_snapshot(self, block: int, timestamp: int, unpriced: Callable[[int, str | None], None]) -> Snapshot:
        """Every market, the globals and the liquidity vault's cash at `block` as a Snapshot.
        `unpriced(market, reason)` hears of each market without a valid index (reason None:
        priced again)."""
        ex, lq = self.view("exchange"), self.view("liquidator")
        model = ExchangeModel(
            globals=GlobalParams(
                insurance_fee_share=ex.insurance_fee_share(block_id=block),
                protocol_fee_share=ex.protocol_fee_share(block_id=block),
                keeper_min_reward=ex.keeper_min_reward(block_id=block),
                keeper_reward_share=ex.keeper_reward_share(block_id=block),
            ),
            now=timestamp,
            max_pnl_factor=lq.max_pnl_factor(block_id=block),
            target_pnl_factor=lq.target_pnl_factor(block_id=block),
        )
        model.cash[LIQUIDITY_VAULT] = self.view("vault").liquidity_cash(block_id=block)
        if not self._read_markets_with_lens(model, block, unpriced):
            for m in self.market_list(block):
                self._read_market(model, m, block, unpriced)
        model.total_uncovered_deficit = lq.total_uncovered_deficit(block_id=block)
        model.max_oi_ratio = self.view("liquidity_vault").max_oi_ratio(block_id=block)
        if self.order_book is not None:  # the open-interest room as cached, with its time
            room, stamp = self.view("order_book").open_interest_room(block_id=block)
            model.oi_room_cache = (int(stamp), int(room))
        model.capacity_multiplier = lq.capacity_multiplier(block_id=block)
        model.deficit_grace_period = lq.deficit_grace_period(block_id=block)
        for m in model.params:
            model.uncovered_deficit[m] = lq.uncovered_deficit(m, block_id=block)
            model.deficit_side[m] = lq.deficit_side(m, block_id=block)
            window_index, used = lq.liquidation_window(m, block_id=block)
            if used:
                model.liquidation_windows[m] = (int(window_index), int(used))
        return Snapshot(model, block)

    def _read_markets_with_lens(self, model: ExchangeModel, block: int, unpriced) -> bool:
        """Every market in one eth_call; False (read market by market) without a Lens or when
        a market has no valid price (the Lens reverts with the oracle's reason)."""
        lens = getattr(self.deployment, "lens", None)
        if lens is None:
            return False
        try:
            snapshots = self.view("lens").markets(block_id=block)
        except Exception as err:
            if self.revert_reason(err) is None:
                raise
            return False
        install_lens_markets(model, snapshots, unpriced)
        return True

    def _read_market(self, model: ExchangeModel, market_id: int, block: int, unpriced) -> None:
        ex = self.view("exchange")
        model.params[market_id] = market_params(ex.market_params(market_id, block_id=block))
        long_oi, short_oi = ex.open_interest(market_id, block_id=block)
        fpu, last = ex.funding_state(market_id, block_id=block)
        model.markets[market_id] = MarketState(long_oi, short_oi, fpu, last, ex.open_notional_sum(market_id, block_id=block))
        try:
            model.index[market_id] = ex.index_price(market_id, block_id=block)
            unpriced(market_id, None)
        except Exception as err:
            reason = self.revert_reason(err)
            if reason is None:
                raise
            unpriced(market_id, reason)

    # -- accounts --------------------------------------------------------------------------------

    def read_account(self, key: AccountKey, block: int | str = "latest") -> AccountState:
        """One account's cash and raw positions, from the vault and the exchange."""
        owner, sub = key
        cash, mask = self.view("vault").account(owner, sub, block_id=block)
        state = AccountState(cash)
        market_id = 0
        while mask >> market_id:
            if (mask >> market_id) & 1:
                size, basis, snapshot = self.view("exchange").position_state(owner, sub, market_id, block_id=block)
                if size != 0:
                    state.positions[market_id] = (size, basis, snapshot)
            market_id += 1
        return state

    def read_accounts(self, keys: list[AccountKey], block: int | str = "latest") -> dict[AccountKey, AccountState]:
        """Many accounts: through the Lens (LENS_BATCH per eth_call) when deployed, else one by one."""
        lens = getattr(self.deployment, "lens", None)
        if lens is None:
            return {key: self.read_account(key, block) for key in keys}
        states: dict[AccountKey, AccountState] = {}
        for i in range(0, len(keys), LENS_BATCH):
            for a in self.view("lens").accounts([(o, s) for o, s in keys[i : i + LENS_BATCH]], block_id=block):
                positions = {
                    int(p.market_id): (int(p.size), int(p.open_notional), int(p.funding_snapshot))
                    for p in a.positions
                    if p.size
                }
                states[(a.owner, int(a.sub_account))] = AccountState(int(a.cash), positions)
        return states

    # -- liquidation -----------------------------------------------------------------------------

    def simulate_liquidations(self, batch: list[AccountKey]) -> int:
        """eth_call `liquidate_many(batch)` from this keeper on the pending state: how many it
        would liquidate now, after the transactions already waiting in the node's pool."""
        return self.deployment.liquidator.liquidate_many.call(
            [(o, s) for o, s in batch], sender=self.account, block_id="pending"
        )

    def is_liquidatable(self, key: AccountKey, block: int | str = "pending") -> bool:
        return self.view("liquidator").is_liquidatable(*key, block_id=block)

    def liquidate_many(self, batch: list[AccountKey]):
        return self.send(self.deployment.liquidator.liquidate_many, [(o, s) for o, s in batch])

    def liquidations(self, receipt) -> list:
        return list(receipt.decode_logs(self.deployment.liquidator.Liquidation))

    # -- auto-deleveraging -----------------------------------------------------------------------

    def is_adl_keeper(self, address: str | None = None) -> bool:
        return self.deployment.liquidator.adl_keeper(address or self.address)

    def pnl_factor(self, market_id: int, block: int) -> int:
        return self.view("liquidator").pnl_factor(market_id, block_id=block)

    def adl_score(self, key: AccountKey, market_id: int, block: int) -> int:
        return self.view("liquidator").adl_score(key[0], key[1], market_id, block_id=block)

    def simulate_adl(self, call_args: tuple) -> int:
        return self.deployment.liquidator.auto_deleverage.call(*call_args, sender=self.account, block_id="pending")

    def auto_deleverage(self, call_args: tuple):
        return self.send(self.deployment.liquidator.auto_deleverage, *call_args)

    def adl_events(self, receipt) -> list:
        return list(receipt.decode_logs(self.deployment.liquidator.AutoDeleveraged))

    # -- deficits --------------------------------------------------------------------------------

    def deficit_record(self, key: AccountKey, market_id: int, block: int) -> tuple[int, int, int]:
        return tuple(self.view("liquidator").deficit_record(key[0], key[1], market_id, block_id=block))

    def write_off(self, key: AccountKey, market_id: int):
        return self.send(self.deployment.liquidator.write_off, key[0], key[1], market_id)

    def write_off_events(self, receipt) -> list:
        return list(receipt.decode_logs(self.deployment.liquidator.DeficitWrittenOff))

    # -- orders ----------------------------------------------------------------------------------

    def order_params(self, block: int) -> OrderParams:
        p = self.view("order_book").order_params(block_id=block)
        return OrderParams(int(p.min_order_delay), int(p.max_order_age), int(p.execution_fee), int(p.max_open_orders))

    def cancelled_at(self, order_id: int, block: int) -> int | None:
        """When the order's owner cancelled it (the order view), None when its slot was reused."""
        try:
            return int(self.view("order_book").order(order_id, block_id=block).cancelled_at)
        except Exception as err:
            if self.revert_reason(err) is None:
                raise
            return None

    def market_feeds(self, market_id: int, block: int) -> tuple[list[FeedConfig], int]:
        """The market's feeds in configuration order, and the feeds' allowed disagreement."""
        oracle = self.view("oracle")
        feeds = [FeedConfig(str(f.aggregator), int(f.heartbeat), int(f.decimals)) for f in oracle.feeds(market_id, block_id=block)]
        return feeds, int(oracle.max_deviation(market_id, block_id=block))

    def _aggregator(self, address: str):
        if address not in self._aggregators:
            from ape import project

            self._aggregators[address] = Views(project.MockAggregator.at(address), self.chain.provider, self.address)
        return self._aggregators[address]

    def latest_round(self, feed: FeedConfig, block: int) -> FeedRound | None:
        raw = self._aggregator(feed.aggregator).latestRoundData(block_id=block)
        if int(raw[0]) == 0:
            return None
        return feed_round(*(int(x) for x in raw), feed.decimals)

    def round_fetcher(self, feed: FeedConfig, block: int) -> Callable[[int], FeedRound | None]:
        """`fetch(round_id)` for orders.load_feed: getRoundData at `block`, None when the
        aggregator has no such round."""
        aggregator = self._aggregator(feed.aggregator)

        def fetch(round_id: int) -> FeedRound | None:
            try:
                raw = aggregator.getRoundData(round_id, block_id=block)
            except Exception as err:
                if self.revert_reason(err) is None:
                    raise
                return None
            if int(raw[0]) != round_id:
                return None
            return feed_round(*(int(x) for x in raw), feed.decimals)

        return fetch

    def simulate_execute_order(self, order_id: int, round_ids: Iterable[int]) -> bool:
        """eth_call `execute_order` on the pending state: True filled, False cancelled by the
        contract; raises the revert."""
        return self.order_book.execute_order.call(order_id, list(round_ids), sender=self.account, block_id="pending")

    def execute_order(self, order_id: int, round_ids: Iterable[int]):
        return self.send(self.order_book.execute_order, order_id, list(round_ids))

    def execute_orders(self, order_ids: list[int], round_ids: list[list[int]]):
        return self.send(self.order_book.execute_orders, order_ids, round_ids)

    def simulate_cancel_order(self, order_id: int) -> None:
        self.order_book.cancel_order.call(order_id, sender=self.account, block_id="pending")

    def cancel_order(self, order_id: int):
        return self.send(self.order_book.cancel_order, order_id)

    def refresh_open_interest_room(self):
        return self.send(self.order_book.refresh_open_interest_room)

    def order_events(self, receipt) -> tuple[list, list]:
        """(OrderExecuted, OrderCancelled) events of a receipt."""
        return (
            list(receipt.decode_logs(self.order_book.OrderExecuted)),
            list(receipt.decode_logs(self.order_book.OrderCancelled)),
        )

    # -- transactions ----------------------------------------------------------------------------

    def send(self, method: Callable, *args):
        """Send with ape's nonce management; on a nonce error (a gap after a restart, a
        replacement) retry once."""
        try:
            return method(*args, sender=self.account)
        except Exception as err:
            if revert_reason(err) is not None or not is_nonce_error(err):
                raise
            if self.on_nonce_retry is not None:
                self.on_nonce_retry(err)
            return method(*args, sender=self.account)
