"""The keeper's passes: the decisions of core, adl and orders fed with what chain reads.

One pass (`Keeper.run_once`):
1. **Index.** The vault's `Deposit`, `Withdraw`, `PairSettled`, `FeeEscrowed`,
   `EscrowReleased`, the exchange's `Trade`, the order book's `OrderCommitted`,
   `OrderExecuted`, `OrderCancelled`, `OrderParamsSet` and the oracle's `FeedsSet` logs from
   the last checkpointed block + 1 to the head.
   `Deposit`, `Trade` and `OrderCommitted` reveal sub-accounts; every one of these events marks
   the sub-accounts it names as touched. Nothing else changes a trader's cash or positions, so
   the cached state of the others stays exact. The order events keep the open orders (and the
   trigger orders their owners cancelled, while an earlier crossing may still execute them).
2. **Snapshot.** Every market's parameters, index, open interest, funding state, open notional
   sum and the globals at that same head block into a `perpdex.model.ExchangeModel`; the
   touched sub-accounts re-read; for markets with orders, the feeds' rounds back to the oldest
   one an order may execute at (cached between passes: a round never changes).
3. **Health.** Every cached sub-account against the new prices and funding (`Snapshot.evaluate`).
4. **Liquidate.** Batches of `liquidate_many`, each simulated with eth_call on the pending state
   first (another keeper's transaction already in the node's pool counts) and sent only when
   the contract agrees with the model; an account another keeper took first is a lost race.
5. **Auto-deleverage** (ADL keeper role): plans from `adl.plan_adl`, replayed on the model,
   checked against the contract's views, simulated and sent in this keeper's turn (`adl_turn`).
6. **Orders.** `orders.decide_orders`: execute what has its round, cancel what expired (the
   canceller takes the fee). An execution is replayed on the model at each candidate round
   (`choose_execution`: a trigger order beyond its acceptable price at one crossing is tried
   at the next), simulated with eth_call on the pending state, and sent only if that does not
   revert; an order another keeper took first is a lost race, never a reverted transaction.
   Keepers that know of each other (`order_keepers`) take turns per order (`take_turn`, in
   seconds from the moment the order became executable) so that two of them never send for the
   same order in the same block.
   Then the **LP requests** (`lp_pass`, `lp_decisions.decide_lp_requests`), last, so that the
   flows come after what the round's liquidations and trades book (docs/SECURITY.md, finding
   9); a keeper without the LP executor role waits `OPEN_EXECUTION_AFTER` past each request's
   `not_before`, as the contract asks.
7. **Checkpoint.** `{version, chain_id, exchange, block, accounts, adl_keepers, deficit_since,
   orders}` written atomically (tmp + rename).

Steps 2-5 repeat while a round sent something to liquidate or deleverage, up to `max_rounds`.
`run_forever` wraps passes with exponential backoff on RPC errors and stops on a
`threading.Event` (set by SIGINT/SIGTERM in `ape run keeper`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any

from perpdex.keeper.adl import (
    ADL_RACE_REASONS,
    ADL_TURN_BLOCKS,
    ADL_TURN_MARGIN,
    TRIGGER_DEFICIT,
    TRIGGER_PNL_FACTOR,
    AdlPlan,
    adl_turn,
    plan_adl,
    replay_adl,
)
from perpdex.keeper.chain import ChainClient, FeedConfig, LogEntry, read_checkpoint, write_checkpoint
from perpdex.keeper.core import MAX_BATCH, AccountKey, AccountState, Evaluation, Health, Snapshot
from perpdex.keeper.log import LOGGER, Ratio, Size, Usd, emit
from perpdex.keeper.order_pass import ORDER_TURN_MARGIN, OrderPasses
from perpdex.keeper.lp_pass import LpPasses
from perpdex.keeper.write_off_pass import WriteOffPass
from perpdex.keeper.orders import (
    MAX_WALK,
    Feed,
    FeedRound,
    MarketFeeds,
    cancelled_by_owner,
    is_late,
    load_feed,
    order_from_event,
    walk_since,
)
from perpdex.model import ModelRevert
from perpdex.orders import KIND_MARKET, STATE_OPEN, Order, OrderParams

CHECKPOINT_VERSION = 3  # 2: ADL keepers and deficit blocks (for ADL turns); 3: orders
ORDER_TURN_SECONDS = 4  # seconds per keeper's turn on an order, when several keepers know of each other
OWNER_CANCELLATION = "cancelled by owner"  # the reason of an owner's cancellation of a trigger order


@dataclass
class PassReport:
    block: int = 0
    accounts: int = 0
    liquidatable: int = 0  # distinct accounts found liquidatable during the pass
    liquidated: int = 0  # liquidations by this keeper
    keeper_reward: int = 0  # WAD credited to this keeper
    adl_targets: int = 0  # positions auto-deleveraged by this keeper
    orders: int = 0  # orders indexed as open (or executable late) at the end of the pass
    orders_executed: int = 0  # filled by this keeper
    orders_cancelled: int = 0  # cancelled by this keeper: at execution (the contract's reason) or expired
    order_fees: int = 0  # WAD of execution fees earned
    cancel_reasons: Counter = field(default_factory=Counter)
    errors: int = 0
    lost_races: int = 0  # accounts or orders another keeper acted on first
    transactions: int = 0
    new_accounts: int = 0
    refreshed: int = 0
    unpriced: int = 0
    rounds: int = 0
    duration: float = 0.0
    liquidatable_accounts: set[AccountKey] = field(default_factory=set, repr=False)


class Keeper(OrderPasses, WriteOffPass, LpPasses):
    """Liquidation, ADL and order keeper over a perpdex.deploy.Deployment (ape contract
    handles). Order execution is on when the deployment has an order book. Every chain read and
    transaction goes through `client` (default: `ChainClient` over ape, as on ape's test chain);
    the other transports provide the same methods: `RpcClient` on a node (`ape run keeper`,
    perpdex/keeper/rpc_client.py), `BoaClient` on the simulator's titanoboa chain."""

    def __init__(
        self,
        deployment,
        account,
        checkpoint_path: Path | None = None,
        batch_size: int = 20,
        logger: logging.Logger | None = None,
        *,
        start_block: int | None = None,
        log_chunk: int = 2000,
        max_rounds: int = 6,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        adl_turn_blocks: int = ADL_TURN_BLOCKS,
        execute_orders: bool = True,
        order_keepers: tuple[str, ...] = (),
        order_turn_seconds: int = ORDER_TURN_SECONDS,
        max_walk: int = MAX_WALK,
        client: ChainClient | None = None,
    ):
        self.client = client or ChainClient(deployment, account)
        self.deployment = deployment
        self.account = account
        self.address = account.address
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.batch_size = max(1, min(batch_size, MAX_BATCH))
        self.log = logger or logging.getLogger(LOGGER)
        self.log_chunk = log_chunk
        self.max_rounds = max_rounds
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        if adl_turn_blocks <= ADL_TURN_MARGIN:
            raise ValueError(f"an ADL turn needs more than {ADL_TURN_MARGIN} blocks")
        if order_turn_seconds <= ORDER_TURN_MARGIN:
            raise ValueError(f"an order turn needs more than {ORDER_TURN_MARGIN} seconds")
        self.adl_turn_blocks = adl_turn_blocks
        self.executes_orders = execute_orders and self.client.order_book is not None
        self.order_keepers = {self.address, *order_keepers}
        self.order_turn_seconds = order_turn_seconds
        self.max_walk = max_walk
        self.client.on_nonce_retry = lambda err: self._emit(
            logging.WARNING, "tx.nonce_retry", error=str(err)[:200], nonce=self.client.nonce
        )

        self.accounts: set[AccountKey] = set()
        self.states: dict[AccountKey, AccountState] = {}
        self.stale: set[AccountKey] = set()  # accounts to re-read at the next sync
        self.snapshot: Snapshot | None = None
        self.evaluation: Evaluation | None = None
        self.last_report: PassReport | None = None
        # the head block of the last pass that ran to its end (run_forever skips a poll that
        # finds the same head: nothing on chain changes between blocks)
        self.completed_block: int | None = None
        self._warned: set[str] = set()
        self.adl_keepers: dict[str, bool] = {}  # ADL role by address, from AdlKeeperSet events
        self.deficit_since: dict[int, int] = {}  # market -> block of its last DeficitRecorded event
        self._pnl_trigger_since: dict[int, int] = {}  # market -> first block we saw trigger 2 hold
        self._turn_logged: dict[int, int] = {}  # market -> the next ADL turn last logged
        # orders, in commit order: open ones, and trigger orders their owner cancelled while an
        # earlier crossing may still execute them
        self.orders: dict[int, Order] = {}
        self._owner_cancelled: set[int] = set()  # cancelled_at still to read
        self.order_params: OrderParams | None = None  # from OrderParamsSet events (read once if none seen)
        self._feeds: dict[int, tuple[list[FeedConfig], int]] = {}  # market -> feeds; dropped on FeedsSet
        self.order_markets: dict[int, MarketFeeds] = {}
        self._rounds: dict[str, dict[int, FeedRound]] = {}  # aggregator -> rounds read (they never change)
        self._waiting: dict[int, str] = {}  # order -> why it waits, as last logged
        self._order_turn_logged: dict[int, int] = {}  # order -> its next turn, as last logged
        self._stop = threading.Event()
        first = start_block if start_block is not None else getattr(deployment, "block", None) or 0
        self.block = first - 1  # the last block indexed
        self._load_checkpoint()

    # -- logging ---------------------------------------------------------------------------------

    def _emit(self, level: int, event: str, **fields: Any) -> None:
        emit(self.log, level, event, **fields)

    def _warn_once(self, key: str, event: str, level: int = logging.WARNING, **fields: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._emit(level, event, **fields)

    def _unpriced(self, market_id: int, reason: str | None) -> None:
        if reason is None:
            self._warned.discard(f"unpriced:{market_id}")
        else:
            self._warn_once(f"unpriced:{market_id}", "market.unpriced", market=market_id, reason=reason)

    # -- checkpoint ------------------------------------------------------------------------------

    def _load_checkpoint(self) -> None:
        path = self.checkpoint_path
        data = read_checkpoint(path)
        if data is None:
            return
        exchange = self.deployment.exchange.address
        if data.get("chain_id") != self.client.chain_id or data.get("exchange", exchange) != exchange:
            self._emit(logging.WARNING, "checkpoint.ignored", path=path, reason="other chain or deployment")
            return
        if data.get("version") != CHECKPOINT_VERSION:  # lacks what this version needs: index from the start
            self._emit(logging.WARNING, "checkpoint.ignored", path=path, reason="older format")
            return
        self.block = int(data["block"])
        self.accounts = {(owner, int(sub)) for owner, sub in data["accounts"]}
        self.adl_keepers = {k: True for k in data["adl_keepers"]}
        self.deficit_since = {int(m): int(b) for m, b in data["deficit_since"].items()}
        self.orders = {int(order_id): Order(*fields) for order_id, fields in data.get("orders", [])}
        self.stale = set(self.accounts)  # nothing is cached yet: read everyone once
        self._emit(
            logging.INFO, "checkpoint.loaded", path=path, block=self.block, accounts=len(self.accounts),
            orders=len(self.orders),
        )

    def save_checkpoint(self) -> None:
        """Atomically replace the checkpoint: a crash leaves the old or the new one, whole."""
        if self.checkpoint_path is None:
            return  # no checkpoint kept: nothing to build
        write_checkpoint(self.checkpoint_path, {
            "version": CHECKPOINT_VERSION,
            "chain_id": self.client.chain_id,
            "exchange": self.deployment.exchange.address,
            "block": self.block,
            "accounts": sorted([owner, sub] for owner, sub in self.accounts),
            "adl_keepers": sorted(k for k, allowed in self.adl_keepers.items() if allowed),
            "deficit_since": {str(m): b for m, b in sorted(self.deficit_since.items())},
            "orders": [[str(order_id), list(astuple(order))] for order_id, order in self.orders.items()],
        })

    # -- indexing --------------------------------------------------------------------------------

    def _touch(self, key: AccountKey, report: PassReport, discover: bool = False) -> None:
        if discover and key not in self.accounts:
            self.accounts.add(key)
            report.new_accounts += 1
        if key in self.accounts:
            self.stale.add(key)

    def _apply_log(self, log: LogEntry, report: PassReport) -> None:
        args, name = log.args, log.event
        if name == "AdlKeeperSet":
            self.adl_keepers[args["keeper"]] = bool(args["allowed"])
        elif name == "DeficitRecorded":
            self.deficit_since[int(args["market_id"])] = log.block
            self._touch((args["owner"], int(args["sub_account"])), report)
        elif name == "DeficitWrittenOff":
            self._touch((args["owner"], int(args["sub_account"])), report)
        elif name == "OrderParamsSet":
            self.order_params = OrderParams(
                int(args["min_order_delay"]), int(args["max_order_age"]), int(args["execution_fee"]),
                int(args["max_open_orders"]),
            )
        elif name == "FeedsSet":
            self._feeds.pop(int(args["market_id"]), None)
        elif name == "EscrowReleased":
            self._touch((args["payee"], int(args["sub_account"])), report)
        elif name == "OrderCommitted":
            order_id = int(args["order_id"])
            self.orders[order_id] = order_from_event(args)
            self._touch((args["owner"], int(args["sub_account"])), report, discover=True)
        elif name == "OrderExecuted":
            self.orders.pop(int(args["order_id"]), None)
            self._touch((args["owner"], int(args["sub_account"])), report)
            if int(args["fee"]):  # paid to the executor by the fill's settlement (no EscrowReleased)
                self._touch((args["executor"], 0), report)
        elif name == "OrderCancelled":
            order_id = int(args["order_id"])
            order = self.orders.get(order_id)
            if args["reason"] == OWNER_CANCELLATION and order is not None and order.kind != KIND_MARKET:
                self._owner_cancelled.add(order_id)  # executable at an earlier crossing: read when
            else:
                self.orders.pop(order_id, None)
            self._touch((args["owner"], int(args["sub_account"])), report)
        else:  # Deposit, Withdraw, PairSettled, Trade, FeeEscrowed
            self._touch((args["owner"], int(args["sub_account"])), report, discover=name in ("Deposit", "Trade"))
            if name == "PairSettled":
                self._touch((args["counterparty"], int(args["counterparty_sub_account"])), report)

    def _index(self, head: int, report: PassReport) -> None:
        """Logs from the last indexed block + 1 to `head`, in chunks of `log_chunk` blocks."""
        start = self.block + 1
        while start <= head:
            stop = min(start + self.log_chunk - 1, head)
            logs = self.client.fetch_logs(start, stop)
            for log in logs:
                self._apply_log(log, report)
            self._emit(logging.DEBUG, "index.range", start=start, stop=stop, logs=len(logs))
            start = stop + 1

    # -- chain reads at one block ----------------------------------------------------------------

    def read_account(self, key: AccountKey, block: int | str = "latest") -> AccountState:
        return self.client.read_account(key, block)

    def _refresh(self, block: int, report: PassReport) -> None:
        keys = sorted(self.stale)
        self.states.update(self.client.read_accounts(keys, block))
        self.stale.difference_update(keys)
        report.refreshed += len(keys)

    def _market_feeds(self, market_id: int, block: int, since: int, anchors, warn: bool) -> MarketFeeds:
        """A market's feeds with their rounds back to `since` (and the `anchors` times), read
        once and cached per aggregator; `warn` logs a history capped by `max_walk` (trigger
        orders' crossings older than the rounds read are not seen)."""
        if market_id not in self._feeds:
            self._feeds[market_id] = self.client.market_feeds(market_id, block)
        configs, max_deviation = self._feeds[market_id]
        feeds: list[Feed] = []
        for config in configs:
            latest = self.client.latest_round(config, block)
            feed = load_feed(
                self.client.round_fetcher(config, block), latest, config.heartbeat, since, anchors,
                self._rounds.get(config.aggregator), self.max_walk,
            )
            self._rounds[config.aggregator] = feed.rounds
            if warn and not feed.complete:
                self._warn_once(
                    f"walk:{config.aggregator}:{since}", "order.history_capped", market=market_id,
                    feed=config.aggregator, rounds=len(feed.rounds), since=since,
                )
            feeds.append(feed)
        return MarketFeeds(feeds, max_deviation)

    def _sync_orders(self, block: int, timestamp: int) -> None:
        """Order parameters, owners' cancellation times, and the rounds of every market with an
        order, back to the oldest round an order may execute at."""
        for order_id in sorted(self._owner_cancelled):
            order = self.orders.get(order_id)
            at = self.client.cancelled_at(order_id, block) if order is not None else None
            if at:
                self.orders[order_id] = cancelled_by_owner(order, at)
            else:
                self.orders.pop(order_id, None)
        self._owner_cancelled.clear()
        if not self.orders:
            self.order_markets = {}
            return
        if self.order_params is None:
            self.order_params = self.client.order_params(block)
        params = self.order_params
        now = timestamp + 1
        since: dict[int, int] = {}
        anchors: dict[int, set[int]] = {}
        for order in self.orders.values():
            m = order.market_id
            since[m] = min(since.get(m, 2**64), walk_since(order, params, now))
            if order.kind == KIND_MARKET:
                anchors.setdefault(m, set()).add(order.not_before)
        self.order_markets = {
            market_id: self._market_feeds(market_id, block, since[market_id], anchors.get(market_id, ()), True)
            for market_id in sorted(since)
        }

    def sync(self, report: PassReport | None = None) -> Evaluation:
        """Index new logs, snapshot the markets, refresh touched accounts and read the rounds
        orders need, all at the head block; then evaluate every account's health."""
        report = report if report is not None else PassReport()
        number, timestamp = self.client.head()
        if number < self.block:
            # the node went back (restarted devnet, reorg deeper than our head): re-read everyone
            self._emit(logging.WARNING, "chain.rewound", head=number, indexed=self.block)
            self.block = number
            self.stale.update(self.accounts)
        self._index(number, report)
        snapshot = self.client.read_snapshot(number, timestamp, self._unpriced)
        self._refresh(number, report)
        if self.executes_orders:
            self._sync_orders(number, timestamp)
            self._sync_lp_requests(number)
        self.block = number
        self.snapshot = snapshot
        self.evaluation = snapshot.evaluate(self.states)
        self._read_deficit_records(self.evaluation, number)
        report.block = number
        report.accounts = len(self.accounts)
        report.unpriced = len(self.evaluation.unpriced)
        return self.evaluation

    def health(self, key: AccountKey) -> Health | None:
        """Off-chain health of an indexed account at the last synced block."""
        state = self.states.get(key)
        return None if state is None or self.snapshot is None else self.snapshot.health(state)

    # -- liquidation -----------------------------------------------------------------------------

    def simulate_liquidations(self, batch: list[AccountKey]) -> int:
        """How many of `batch` `liquidate_many` would liquidate now (eth_call, pending state)."""
        return self.client.simulate_liquidations(batch)

    def _still_liquidatable(self, batch: list[AccountKey], report: PassReport) -> list[AccountKey]:
        """The accounts of `batch` the contract would liquidate now. For the others: if the
        account changed since our snapshot, someone acted first (a lost race); if not, the
        price or funding moved since the snapshot block and it is healthy again."""
        still = []
        for key in batch:
            if self.client.is_liquidatable(key, "pending"):
                still.append(key)
                continue
            self.stale.add(key)
            if self.read_account(key, "pending") != self.states.get(key):
                report.lost_races += 1
                self._emit(logging.INFO, "liquidation.lost_race", owner=key[0], sub_account=key[1], stage="simulation")
            else:
                self._emit(logging.INFO, "liquidation.healthy_at_head", owner=key[0], sub_account=key[1])
        return still

    def _liquidate_batch(self, batch: list[AccountKey], report: PassReport) -> bool:
        """Simulate, drop what is no longer liquidatable, send. True when a transaction went out."""
        try:
            simulated = self.simulate_liquidations(batch)
            if simulated < len(batch):
                batch = self._still_liquidatable(batch, report)
                simulated = self.simulate_liquidations(batch) if batch else 0
            if simulated == 0:
                return False
            receipt = self.client.liquidate_many(batch)
        except Exception as err:
            reason = self.client.revert_reason(err)
            if reason is None:
                raise
            report.errors += 1
            self._emit(logging.ERROR, "liquidation.reverted", batch=len(batch), reason=reason)
            return False
        report.transactions += 1
        self._record_liquidations(receipt, batch, report)
        return True

    def _record_liquidations(self, receipt, batch: list[AccountKey], report: PassReport) -> None:
        done: set[AccountKey] = set()
        for event in self.client.liquidations(receipt):
            if event.keeper != self.address:
                continue
            key = (event.owner, int(event.sub_account))
            done.add(key)
            report.liquidated += 1
            report.keeper_reward += event.keeper_reward
            self._emit(
                logging.INFO, "liquidation.done", owner=key[0], sub_account=key[1], keeper_reward=Usd(event.keeper_reward),
                closed_notional=Usd(event.closed_notional), fully_closed=event.fully_closed, tx=receipt.txn_hash,
            )
        for key in batch:
            self.stale.add(key)
            if key not in done:
                report.lost_races += 1
                self._emit(logging.INFO, "liquidation.lost_race", owner=key[0], sub_account=key[1], stage="block")

    def _liquidate(self, evaluation: Evaluation, report: PassReport) -> bool:
        candidates = evaluation.liquidatable
        report.liquidatable_accounts.update(candidates)
        sent = False
        for i in range(0, len(candidates), self.batch_size):
            if self._stop.is_set():
                break
            sent |= self._liquidate_batch(candidates[i : i + self.batch_size], report)
        return sent

    # -- auto-deleveraging -----------------------------------------------------------------------

    def _verify_adl(self, plan: AdlPlan, report: PassReport) -> bool:
        """The plan replays on the model and the contract's views agree with the model."""
        block = self.snapshot.block
        try:
            replay_adl(self.snapshot, self.states, plan)
        except ModelRevert as err:
            report.errors += 1
            self._emit(logging.ERROR, "adl.plan_rejected", market=plan.market_id, reason=err.reason)
            return False
        if plan.trigger == TRIGGER_PNL_FACTOR:
            onchain = self.client.pnl_factor(plan.market_id, block)
            model = self.snapshot.model.pnl_factor(plan.market_id)
            if onchain != model:
                report.errors += 1
                self._emit(
                    logging.ERROR, "adl.pnl_factor_mismatch", market=plan.market_id, model=Ratio(model), chain=Ratio(onchain)
                )
                return False
        for t in plan.targets:
            onchain = self.client.adl_score(t.account, plan.market_id, block)
            if onchain != t.score:
                report.errors += 1
                self._emit(
                    logging.ERROR, "adl.score_mismatch", market=plan.market_id, owner=t.account[0],
                    sub_account=t.account[1], model=t.score, chain=onchain,
                )
                return False
        return True

    def _execute_adl(self, plan: AdlPlan, report: PassReport) -> bool:
        if not self._verify_adl(plan, report):
            return False
        try:
            # right before sending: still our turn (the pass may have outlasted it), and the call
            # succeeds on the pending state (transactions already in the node's pool included)
            if not self._adl_turn(plan, self.client.head()[0])[0]:
                self._emit(logging.INFO, "adl.turn_over", market=plan.market_id)
                return False
            closed = self.client.simulate_adl(plan.call_args())
            if closed != plan.total_size:
                report.errors += 1
                self._emit(
                    logging.ERROR, "adl.simulation_mismatch", market=plan.market_id, expected=Size(plan.total_size),
                    simulated=Size(closed),
                )
                return False
            receipt = self.client.auto_deleverage(plan.call_args())
        except Exception as err:
            reason = self.client.revert_reason(err)
            if reason is None:
                raise
            if reason in ADL_RACE_REASONS:
                report.lost_races += 1
                self._emit(logging.INFO, "adl.lost_race", market=plan.market_id, reason=reason)
            else:
                report.errors += 1
                self._emit(logging.ERROR, "adl.reverted", market=plan.market_id, reason=reason)
            self.stale.update(t.account for t in plan.targets)
            return False
        report.transactions += 1
        for event in self.client.adl_events(receipt):
            report.adl_targets += 1
            self._emit(
                logging.INFO, "adl.done", market=event.market_id, owner=event.owner, sub_account=event.sub_account,
                trigger=event.trigger, score=event.score, size_closed=Size(event.size_closed), price=Usd(event.price),
                realized_pnl=Usd(event.realized_pnl), haircut=Usd(event.haircut), tx=receipt.txn_hash,
            )
        self.stale.update(t.account for t in plan.targets)
        if plan.trigger == TRIGGER_DEFICIT:
            self.stale.add(plan.bankrupt)
        return True

    def _trigger_since(self, plan: AdlPlan, block: int) -> int:
        """The block since which the plan's trigger holds: for a deficit, the block it was
        recorded in (the same for every keeper); for the PnL factor, which no event marks, the
        first block at which this keeper saw it hold."""
        if plan.trigger == TRIGGER_DEFICIT:
            return self.deficit_since.get(plan.market_id, block)
        return self._pnl_trigger_since.setdefault(plan.market_id, block)

    def _adl_turn(self, plan: AdlPlan, block: int) -> tuple[bool, int]:
        """`adl_turn` among the indexed ADL keepers (and this one: its role is checked on chain,
        its grant may predate the indexed blocks)."""
        keepers = {k for k, allowed in self.adl_keepers.items() if allowed} | {self.address}
        return adl_turn(self.address, keepers, self._trigger_since(plan, block), block, self.adl_turn_blocks)

    def _deleverage(self, evaluation: Evaluation, report: PassReport) -> bool:
        plans, orphaned = plan_adl(self.snapshot, self.states, evaluation)
        for market_id in orphaned:
            self._warn_once(f"nobankrupt:{market_id}", "adl.no_bankrupt_account", market=market_id)
        pnl_markets = {p.market_id for p in plans if p.trigger == TRIGGER_PNL_FACTOR}
        for market_id in set(self._pnl_trigger_since) - pnl_markets:
            del self._pnl_trigger_since[market_id]  # trigger 2 no longer holds there
        if not plans:
            return False
        if not self.client.is_adl_keeper():
            self._warn_once("adl_role", "adl.no_role", keeper=self.address, markets=[p.market_id for p in plans])
            return False
        head = self.client.head()[0]
        sent = False
        for plan in plans:
            if self._stop.is_set():
                break
            ours, next_turn = self._adl_turn(plan, head)
            if not ours:
                if self._turn_logged.get(plan.market_id) != next_turn:
                    self._turn_logged[plan.market_id] = next_turn
                    self._emit(
                        logging.INFO, "adl.waiting_turn", market=plan.market_id, trigger=plan.trigger, block=head,
                        next_turn=next_turn,
                    )
                continue
            sent |= self._execute_adl(plan, report)
        return sent

    # -- passes ----------------------------------------------------------------------------------

    def run_once(self) -> PassReport:
        """Index new events, refresh state, liquidate, ADL, execute orders, checkpoint. Lost
        races are logged, never raised; RPC errors propagate (run_forever backs off and retries)."""
        started = time.perf_counter()
        report = PassReport()
        for _ in range(self.max_rounds):
            report.rounds += 1
            evaluation = self.sync(report)
            if self._stop.is_set():
                break
            if self._liquidate(evaluation, report):
                continue  # re-sync: slices left, or a bankruptcy to deleverage
            deleveraged = self._deleverage(evaluation, report)
            written_off = self._write_offs(evaluation, report)
            self._execute_orders(report)
            self._execute_lp_requests(report)
            if not (deleveraged or written_off):
                break
        self.save_checkpoint()
        if not self._stop.is_set():
            self.completed_block = report.block
        report.liquidatable = len(report.liquidatable_accounts)
        report.orders = sum(1 for o in self.orders.values() if o.state == STATE_OPEN or is_late(o))
        report.duration = time.perf_counter() - started
        self.last_report = report
        self._emit(
            logging.INFO, "pass", block=report.block, accounts=report.accounts, liquidatable=report.liquidatable,
            liquidated=report.liquidated, keeper_reward=Usd(report.keeper_reward), adl_targets=report.adl_targets,
            orders=report.orders, orders_executed=report.orders_executed, orders_cancelled=report.orders_cancelled,
            order_fees=Usd(report.order_fees), lost_races=report.lost_races, errors=report.errors,
            transactions=report.transactions, new_accounts=report.new_accounts, refreshed=report.refreshed,
            unpriced=report.unpriced, rounds=report.rounds, duration=round(report.duration, 3),
        )
        return report

    def _backoff(self, err: Exception, delay: float) -> None:
        if self.client.is_rpc_error(err):
            self._emit(logging.WARNING, "rpc.error", error=f"{type(err).__name__}: {err}"[:300], retry_in=delay)
        else:
            self.log.exception("pass failed", extra={"event": "pass.failed", "fields": {"retry_in": delay}})

    def run_with_retry(self, attempts: int = 5, stop: threading.Event | None = None) -> PassReport | None:
        """One pass for cron: retried with backoff on errors; None if every attempt failed."""
        self._stop = stop or self._stop
        delay = self.backoff_initial
        for _ in range(attempts):
            try:
                return self.run_once()
            except Exception as err:
                self._backoff(err, delay)
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, self.backoff_max)
        return None

    def run_forever(self, interval: float = 2.0, stop: threading.Event | None = None) -> None:
        """Passes every `interval` seconds until `stop` is set; exponential backoff (capped at
        `backoff_max`) while passes fail. A pass in flight completes before stopping. A poll
        that finds the head block of the last completed pass reads only the head: every state a
        pass acts on (balances, prices, order and deficit clocks) changes with a block, so a
        second pass at the same head would find what the first did."""
        self._stop = stop = stop or threading.Event()
        delay = self.backoff_initial
        self._emit(
            logging.INFO, "keeper.start", keeper=self.address, block=self.block, accounts=len(self.accounts),
            orders=self.executes_orders,
        )
        try:
            while not stop.is_set():
                try:
                    if self.completed_block is None or self.client.head()[0] != self.completed_block:
                        self.run_once()
                    delay, wait = self.backoff_initial, interval
                except Exception as err:
                    self._backoff(err, delay)
                    wait, delay = delay, min(delay * 2, self.backoff_max)
                stop.wait(wait)
        except KeyboardInterrupt:
            self._emit(logging.INFO, "keeper.interrupted")
        finally:
            self._emit(logging.INFO, "keeper.stopped", block=self.block, accounts=len(self.accounts))


def install_signal_handlers(stop: threading.Event, logger: logging.Logger | None = None) -> dict:
    """SIGINT and SIGTERM set `stop` (the keeper finishes its pass and exits). Returns the
    previous handlers. Main thread only."""
    log = logger or logging.getLogger(LOGGER)

    def handler(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        log.info(f"keeper.signal signal={name}", extra={"event": "keeper.signal", "fields": {"signal": name}})
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
