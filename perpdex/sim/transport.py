"""The keeper's transport on the simulator's titanoboa chain.

`perpdex.keeper.Keeper` decides over the reference model and asks its `client` for every read
and transaction (perpdex/keeper/chain.py is the ape one, perpdex/keeper/rpc_client.py the JSON-RPC one). `BoaClient` gives the same methods over
a `SimDeployment` and a `Chain`, so the simulator runs the keeper's own passes (liquidations,
ADL, write-offs, order and LP request executions) unchanged. titanoboa keeps no history: every
read is of the current state, which is the head the keeper asks for ("pending" included, as
nothing waits in a pool); a simulation is the transaction run inside an anchor and undone.
Accounts are read straight from storage (perpdex.raw_state), markets with one Lens call.

The keeper simulates every order execution, then sends the pass's executions in one
`execute_orders` (which runs each order as `execute_order` would, one after the other). So
that each execution runs once, not twice, a simulated execution is run for real and kept aside
(`Chain.speculate`), the next simulated execution on top of it; when the keeper then sends
exactly those executions, what was kept is mined as that one transaction; anything else the
keeper does first (a read, another transaction) undoes them, and it goes on as usual. The same
holds for every transaction the keeper simulates before sending it (cancellations, liquidation
batches, ADL, LP request executions and cancellations). Each
simulation in a batch thus sees the state the batch will have reached by then (an eth_call on
the pending state sees the orders before it unexecuted), which is what the transaction does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from perpdex.keeper.chain import INDEXED_EVENTS, ORDER_EVENTS, FeedConfig, LogEntry, install_lens_markets
from perpdex.keeper.core import AccountKey, AccountState, Snapshot
from perpdex.keeper.orders import FeedRound, feed_round
from perpdex.lp_flows import LpRequest
from perpdex.model import LIQUIDITY_VAULT, ExchangeModel, GlobalParams
from perpdex.orders import OrderParams
from perpdex.raw_state import RawState
from perpdex.sim.chain import Chain, Receipt, SimDeployment, SimRevert

ZERO_ADDRESS = "0x" + "00" * 20
CHAIN_ID = 31337
KEEPER_EVENTS = frozenset(INDEXED_EVENTS + ORDER_EVENTS)  # (contract, event) the keeper indexes


def _settled(method: Callable) -> Callable:
    """The client method runs on the chain's own state: speculations kept aside are undone first."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.chain.speculating:
            self.chain.drop_speculation()
        return method(self, *args, **kwargs)

    return wrapper


class MarketSnapshot(NamedTuple):
    """Lens.vy's MarketSnapshot."""

    market_id: int
    index_price: int
    long_oi: int
    short_oi: int
    funding_per_unit: int
    last_funding_time: int
    open_notional_sum: int
    params: Any


class SimAccount:
    """A keeper's account: what `Keeper` reads of it."""

    def __init__(self, address: str):
        self.address = address


class BoaClient:
    """`perpdex.keeper.chain.ChainClient`'s methods on titanoboa, for the keeper `account`."""

    def __init__(self, deployment: SimDeployment, chain: Chain, account: SimAccount):
        self.deployment = deployment
        self.chain = chain
        self.account = account
        self.address = account.address
        self.order_book = deployment.order_book
        self.raw = RawState(deployment)
        self.on_nonce_retry = None
        self.lp_client = BoaLpClient(self)
        self.liquidatable_before: set[AccountKey] = set()  # evidence for invariant 5
        ex, lq = deployment.exchange, deployment.liquidator
        # parameters the simulation sets once, before the replay
        self._globals = GlobalParams(
            ex.insurance_fee_share(), ex.protocol_fee_share(), ex.keeper_min_reward(), ex.keeper_reward_share()
        )
        self._liquidation = (lq.max_pnl_factor(), lq.target_pnl_factor(), lq.capacity_multiplier(),
                             lq.deficit_grace_period())
        self._market_ids = [ex.market_ids(i) for i in range(ex.market_count())]
        self._aggregators: dict[str, Any] = {a.address: a for a in deployment.aggregators.values()}
        self._kept: list[tuple] = []  # what the chain's speculations are, in order
        self._reads_key: tuple | None = None  # (chain version, time) of `_reads`
        self._params: dict[int, Any] | None = None  # market -> its parameters as the Lens gave them
        self._reads: tuple = ()
        self._evidence: set[AccountKey] = set()  # liquidatable before the liquidation kept aside

    @staticmethod
    def revert_reason(err: Exception) -> str | None:
        return err.reason if isinstance(err, SimRevert) else None

    @staticmethod
    def is_rpc_error(err: Exception) -> bool:
        return False  # no network

    @property
    def chain_id(self) -> int:
        return CHAIN_ID

    def head(self) -> tuple[int, int]:
        return self.chain.block, self.chain.now

    @property
    def nonce(self) -> int:
        return 0

    # -- indexing --------------------------------------------------------------------------------

    def fetch_logs(self, start: int, stop: int) -> list[LogEntry]:
        return self.chain.logs_between(start, stop, KEEPER_EVENTS)

    # -- markets and globals ---------------------------------------------------------------------

    def market_list(self, block: int) -> list[int]:
        return self._market_ids

    def read_snapshot(self, block: int, timestamp: int, unpriced: Callable[[int, str | None], None]) -> Snapshot:
        max_pnl, target_pnl, multiplier, grace = self._liquidation
        model = ExchangeModel(globals=self._globals, now=timestamp, max_pnl_factor=max_pnl, target_pnl_factor=target_pnl)
        model.cash[LIQUIDITY_VAULT] = self.raw.system_cash()[0]
        markets, total_deficit, windows = self._market_reads()
        install_lens_markets(model, markets, unpriced)
        model.total_uncovered_deficit = total_deficit
        model.capacity_multiplier = multiplier
        model.deficit_grace_period = grace
        for m in model.params:
            model.uncovered_deficit[m] = self.raw.uncovered_deficit(m)
            model.deficit_side[m] = self.raw.deficit_side(m)
            window_index, used = windows[m]
            if used:
                model.liquidation_windows[m] = (int(window_index), int(used))
        return Snapshot(model, block)

    def _market_reads(self) -> tuple:
        """The Lens markets, the total uncovered deficit and the liquidation windows: contract
        calls, made again only once a transaction was sent or the clock moved (the keeper's
        passes and the step checks read them several times on one state)."""
        key = (self.chain.version, self.chain.now)
        if self._reads_key != key:
            lq = self.deployment.liquidator
            self._reads = (self._markets(), lq.total_uncovered_deficit(),
                           {m: tuple(lq.liquidation_window(m)) for m in self._market_ids})
            self._reads_key = key
        return self._reads

    def _markets(self) -> list[MarketSnapshot]:
        """`Lens.markets()`: the first time from the Lens; then the parameters as it gave them
        (only the owner changes them, which a replay never does once deployed), the state from
        storage (as the Lens's own views read it) and the index from `Exchange.index_price` (an
        oracle refusal reverts as the Lens's call would)."""
        if self._params is None:
            snapshots = self.deployment.lens.markets()
            self._params = {int(m.market_id): m.params for m in snapshots}
            return snapshots
        raw, ex = self.raw, self.deployment.exchange
        out = []
        for m in self._market_ids:
            long_oi, short_oi = raw.open_interest(m)
            fpu, last = raw.funding(m)
            out.append(MarketSnapshot(m, ex.index_price(m), long_oi, short_oi, fpu, last, raw.open_notional_sum(m),
                                      self._params[m]))
        return out

    def forget_reads(self) -> None:
        """The state was changed behind the chain's back (a test's planted change): read again."""
        self._reads_key = None
        self._params = None

    # -- accounts --------------------------------------------------------------------------------

    def read_account(self, key: AccountKey, block: int | str = "latest") -> AccountState:
        owner, sub = key
        cash, mask = self.raw.account(owner, sub)
        state = AccountState(cash)
        market_id = 0
        while mask >> market_id:
            if (mask >> market_id) & 1:
                position = self.raw.position(owner, sub, market_id)
                if position[0] != 0:
                    state.positions[market_id] = position
            market_id += 1
        return state

    def read_accounts(self, keys: list[AccountKey], block: int | str = "latest") -> dict[AccountKey, AccountState]:
        return {key: self.read_account(key) for key in keys}

    # -- transactions ----------------------------------------------------------------------------

    def send(self, method, *args) -> Receipt:
        return self.chain.transact(self.address, method, *args)

    def _call(self, method, *args) -> Any:
        return self.chain.call(self.address, method, *args)

    def _speculate(self, key: tuple, method, *args, stack: bool = False) -> Any:
        """`method(*args)` run for real and kept aside under `key` (after those kept before
        when `stack`, else alone); SimRevert as a simulation would raise it."""
        if not stack:
            self.chain.drop_speculation()
        if not self.chain.speculating:
            self._kept = []
        result = self.chain.speculate(self.address, method, *args)
        self._kept.append(key)
        return result

    def _kept_aside(self, keys: list[tuple]) -> bool:
        """Whether exactly these transactions are kept aside, in this order; if others are,
        they are undone."""
        if self.chain.speculating and self._kept == keys:
            return True
        self.chain.drop_speculation()
        return False

    def settle(self) -> None:
        """Undo what is still kept aside (simulated, never sent): the chain is as the keeper left it."""
        self.chain.drop_speculation()

    # -- liquidation -----------------------------------------------------------------------------

    def simulate_liquidations(self, batch: list[AccountKey]) -> int:
        self.chain.drop_speculation()
        self._evidence = {key for key in batch if self.deployment.liquidator.is_liquidatable(*key)}
        return self._speculate(("liquidate_many", tuple(batch)), self.deployment.liquidator.liquidate_many, list(batch))

    def is_liquidatable(self, key: AccountKey, block: int | str = "pending") -> bool:
        return self.deployment.liquidator.is_liquidatable(*key)

    def liquidate_many(self, batch: list[AccountKey]) -> Receipt:
        """Send the batch; the accounts the contract finds liquidatable right before it are kept
        (`liquidatable_before`) for the simulation's check that no healthy account was."""
        if self._kept_aside([("liquidate_many", tuple(batch))]):
            self.liquidatable_before.update(self._evidence)
            return self.chain.mine_speculation()
        self.liquidatable_before.update(key for key in batch if self.is_liquidatable(key))
        return self.send(self.deployment.liquidator.liquidate_many, list(batch))

    def liquidations(self, receipt: Receipt) -> list:
        return receipt.events("Liquidation")

    # -- auto-deleveraging -----------------------------------------------------------------------

    def is_adl_keeper(self, address: str | None = None) -> bool:
        return self.deployment.liquidator.adl_keeper(address or self.address)

    def pnl_factor(self, market_id: int, block: int) -> int:
        return self.deployment.liquidator.pnl_factor(market_id)

    def adl_score(self, key: AccountKey, market_id: int, block: int) -> int:
        return self.deployment.liquidator.adl_score(key[0], key[1], market_id)

    def simulate_adl(self, call_args: tuple) -> int:
        return self._speculate(("auto_deleverage", call_args), self.deployment.liquidator.auto_deleverage, *call_args)

    def auto_deleverage(self, call_args: tuple) -> Receipt:
        if self._kept_aside([("auto_deleverage", call_args)]):
            return self.chain.mine_speculation()
        return self.send(self.deployment.liquidator.auto_deleverage, *call_args)

    def adl_events(self, receipt: Receipt) -> list:
        return receipt.events("AutoDeleveraged")

    # -- deficits --------------------------------------------------------------------------------

    def deficit_record(self, key: AccountKey, market_id: int, block: int) -> tuple[int, int, int]:
        return tuple(self.deployment.liquidator.deficit_record(key[0], key[1], market_id))

    def write_off(self, key: AccountKey, market_id: int) -> Receipt:
        return self.send(self.deployment.liquidator.write_off, key[0], key[1], market_id)

    def write_off_events(self, receipt: Receipt) -> list:
        return receipt.events("DeficitWrittenOff", source="liquidator")

    # -- orders ----------------------------------------------------------------------------------

    def order_params(self, block: int) -> OrderParams:
        p = self.order_book.order_params()
        return OrderParams(int(p.min_order_delay), int(p.max_order_age), int(p.execution_fee), int(p.max_open_orders))

    def cancelled_at(self, order_id: int, block: int) -> int | None:
        try:
            return int(self.order_book.order(order_id).cancelled_at)
        except Exception:
            return None  # the slot was reused: the view refuses the old id

    def market_feeds(self, market_id: int, block: int) -> tuple[list[FeedConfig], int]:
        oracle = self.deployment.oracle
        feeds = [FeedConfig(str(f.aggregator), int(f.heartbeat), int(f.decimals)) for f in oracle.feeds(market_id)]
        return feeds, int(oracle.max_deviation(market_id))

    def latest_round(self, feed: FeedConfig, block: int) -> FeedRound | None:
        raw = self._aggregators[feed.aggregator].latestRoundData()
        if int(raw[0]) == 0:
            return None
        return feed_round(*(int(x) for x in raw), feed.decimals)

    def round_fetcher(self, feed: FeedConfig, block: int) -> Callable[[int], FeedRound | None]:
        aggregator = self._aggregators[feed.aggregator]

        def fetch(round_id: int) -> FeedRound | None:
            try:
                raw = aggregator.getRoundData(round_id)
            except Exception:
                return None  # no such round
            if int(raw[0]) != round_id:
                return None
            return feed_round(*(int(x) for x in raw), feed.decimals)

        return fetch

    def simulate_execute_order(self, order_id: int, round_ids: Iterable[int]) -> bool:
        """Run for real and kept aside, on top of the executions kept aside before it (the
        batch the keeper is putting together)."""
        rounds = tuple(int(r) for r in round_ids)
        if any(key[0] != "execute_order" for key in self._kept):
            self.chain.drop_speculation()
        return self._speculate(("execute_order", order_id, rounds), self.order_book.execute_order, order_id,
                               list(rounds), stack=True)

    def execute_order(self, order_id: int, round_ids: Iterable[int]) -> Receipt:
        rounds = tuple(int(r) for r in round_ids)
        if self._kept_aside([("execute_order", order_id, rounds)]):
            return self.chain.mine_speculation()
        return self.send(self.order_book.execute_order, order_id, list(rounds))

    def execute_orders(self, order_ids: list[int], round_ids: list[list[int]]) -> Receipt:
        wanted = [("execute_order", o, tuple(int(r) for r in rs)) for o, rs in zip(order_ids, round_ids, strict=True)]
        if self._kept_aside(wanted):
            return self.chain.mine_speculation(result=len(wanted))  # every one acted: none reverted
        return self.send(self.order_book.execute_orders, order_ids, round_ids)

    def simulate_cancel_order(self, order_id: int) -> None:
        self.chain.drop_speculation()
        self._speculate(("cancel_order", order_id), self.order_book.cancel_order, order_id)

    def cancel_order(self, order_id: int) -> Receipt:
        if self._kept_aside([("cancel_order", order_id)]):
            return self.chain.mine_speculation()
        return self.send(self.order_book.cancel_order, order_id)

    def refresh_open_interest_room(self) -> Receipt:
        return self.send(self.order_book.refresh_open_interest_room)

    def order_events(self, receipt: Receipt) -> tuple[list, list]:
        return receipt.events("OrderExecuted"), receipt.events("OrderCancelled")


for _name in ("read_snapshot", "read_account", "read_accounts", "send", "_call", "is_liquidatable", "is_adl_keeper",
              "pnl_factor", "adl_score", "deficit_record", "order_params", "cancelled_at", "market_feeds",
              "latest_round", "round_fetcher"):
    setattr(BoaClient, _name, _settled(getattr(BoaClient, _name)))


class BoaLpClient:
    """`perpdex.keeper.lp_pass.LpClient`'s methods on titanoboa."""

    def __init__(self, client: BoaClient):
        self.client = client
        self.vault = client.deployment.liquidity_vault

    def last_request_id(self, block: int) -> int:
        self.client.settle()
        return int(self.vault.last_request_id())

    def is_lp_executor(self, block: int) -> bool:
        self.client.settle()
        return bool(self.vault.lp_executor(self.client.account))

    def request(self, request_id: int, block: int | str) -> LpRequest | None:
        self.client.settle()
        r = self.vault.request(request_id)
        if str(r[0]).lower() == ZERO_ADDRESS:
            return None
        return LpRequest(str(r[0]), str(r[1]), bool(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6]))

    def _method(self, redemption: bool):
        return self.vault.execute_redeem if redemption else self.vault.execute_deposit

    def _key(self, action) -> tuple:
        return ("lp_execute", action.redemption, action.request_id, repr(action.round_ids))

    def simulate_execute(self, action) -> bool:
        return self.client._speculate(self._key(action), self._method(action.redemption), action.request_id,
                                      [list(i) for i in action.round_ids])

    def execute(self, action) -> Receipt:
        if self.client._kept_aside([self._key(action)]):
            return self.client.chain.mine_speculation()
        return self.client.send(self._method(action.redemption), action.request_id, [list(i) for i in action.round_ids])

    def simulate_cancel(self, request_id: int) -> None:
        self.client._speculate(("lp_cancel", request_id), self.vault.cancel_request, request_id)

    def cancel(self, request_id: int) -> Receipt:
        if self.client._kept_aside([("lp_cancel", request_id)]):
            return self.client.chain.mine_speculation()
        return self.client.send(self.vault.cancel_request, request_id)

    def events(self, receipt: Receipt) -> list:
        return [*receipt.events("DepositExecuted"), *receipt.events("RedeemExecuted"), *receipt.events("RequestCancelled")]
