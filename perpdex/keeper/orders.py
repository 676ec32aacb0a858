"""Order execution decisions (DESIGN.md, Orders): which open orders to execute at which oracle
rounds, and which to cancel, from the orders and the feeds' recent rounds.

Plain Python, no chain client: the transport (perpdex.keeper.chain) indexes the orders from the
order book's events and reads the feeds' rounds through a `fetch(round_id)` callback given to
`load_feed`; tests and simulators give a dictionary lookup instead.

- A **market order** executes at the first round of each feed published at or after its
  `not_before` whose previous round is older (`market_order_execution`), only while
  `now < expiry`; from `expiry` on anyone may cancel it and takes the fee.
- A **trigger order** (limit, stop-loss, take-profit) executes at a round published in
  `[not_before, expiry)` that triggers it while its previous round does not (the crossing),
  while `now <= published + max_order_age` (`trigger_order_executions`); from
  `expiry + max_order_age` no round can execute it and anyone may cancel it for the fee. An
  owner's cancellation counts only for rounds published after it: until no earlier crossing
  can execute any more, the cancelled order is still executed at one ("late").
- Whether an execution fills, is cancelled by the contract (fee still to the executor) or would
  revert (a trigger order beyond its acceptable price keeps resting) is for the reference model
  to say: `choose_execution` replays each candidate round on `perpdex.model` and returns the
  first that does not revert; `apply_execution` carries a sent execution into the snapshot, so
  that the next order of the pass is simulated after it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from perpdex.keeper.core import AccountKey, AccountState, Snapshot
from perpdex.model import LIQUIDITY_VAULT, ExchangeModel, ModelRevert
from perpdex.oracle import MAX_PRICE, feeds_disagree, median, normalize
from perpdex.orders import (
    KIND_MARKET,
    STATE_CANCELLED,
    STATE_OPEN,
    ExecutionResult,
    Order,
    OrderParams,
    RoundPrice,
    decode_order_id,
    triggered,
)

MAX_WALK = 256  # rounds read back per feed and pass (the walk stops earlier at `since`)
MAX_SEARCH = 64  # reads of one search for a market order's first round beyond the walk
MAX_CANDIDATES = 8  # crossing rounds tried per trigger order and pass, earliest first
PHASE_MASK = 2**64 - 1  # a Chainlink round id: phase << 64 | round within the phase

EXECUTE, CANCEL = "execute", "cancel"
# why an order waits (the keeper logs it when it changes)
WAIT_NO_ROUND = "no round published since the order's delay ended"
WAIT_HISTORY = "the first round after the order's delay is beyond the rounds read"
WAIT_NOT_TRIGGERED = "no crossing round"
WAIT_NO_FEEDS = "no round history of the market"
# orders the contract would refuse whatever the round (they wait for their expiry)
ROUND_UNUSABLE = "oracle: the round cannot be used"
STALE = "oracle: stale price"
NO_PREVIOUS = "oracle: no previous round"
FUTURE = "oracle: future timestamp"
DISAGREE = "oracle: feeds disagree"


# =============================================================================================
# Rounds
# =============================================================================================


@dataclass(frozen=True)
class FeedRound:
    """One aggregator round, as `IndexOracle.round_price` sees it."""

    round_id: int
    price: int  # WAD; 0 when the round cannot be used (incomplete, non-positive, out of range)
    updated_at: int


def feed_round(round_id: int, answer: int, started_at: int, updated_at: int, answered_in_round: int, decimals: int) -> FeedRound:
    """A raw `getRoundData` answer, normalised and checked as IndexOracle._validated does (all
    but the staleness, which depends on when it is used)."""
    complete = updated_at != 0 and started_at != 0 and answered_in_round >= round_id
    price = normalize(answer, decimals) if complete and answer > 0 else 0
    if not 0 < price <= MAX_PRICE:
        price = 0
    return FeedRound(round_id, price, updated_at)


@dataclass
class Feed:
    """A feed's heartbeat and the rounds read of it: the latest one and those before it back to
    the oldest publication time that matters, plus any found by a search."""

    heartbeat: int
    rounds: dict[int, FeedRound] = field(default_factory=dict)
    latest: int = 0  # the latest round id, 0 before the first round
    complete: bool = True  # False: the walk was capped before the oldest round that matters
    _timeline: list[tuple[int, int]] | None = field(default=None, repr=False)

    @property
    def timeline(self) -> list[tuple[int, int]]:
        """(updated_at, round id) of the rounds read, in publication order."""
        if self._timeline is None:
            self._timeline = sorted((r.updated_at, r.round_id) for r in self.rounds.values())
        return self._timeline

    def first_round_since(self, t: int) -> int | str:
        """The round published at or after `t` whose previous round was published before it;
        WAIT_NO_ROUND when the latest round is older than `t`, WAIT_HISTORY when the rounds read
        do not reach back to it."""
        latest = self.rounds.get(self.latest)
        if latest is None or latest.updated_at < t:
            return WAIT_NO_ROUND
        timeline = self.timeline
        i = bisect.bisect_left(timeline, (t, -1))
        for _, rid in timeline[i:]:  # in publication order: normally the first one
            previous = self.rounds.get(rid - 1)
            if previous is not None and previous.updated_at < t:
                return rid
        return WAIT_HISTORY

    def latest_at(self, t: int) -> FeedRound | None:
        """The last round published at or before `t`, among those read."""
        i = bisect.bisect_right(self.timeline, (t, 2**256))
        return self.rounds[self.timeline[i - 1][1]] if i else None


@dataclass
class MarketFeeds:
    """A market's feeds in configuration order (the order of `round_ids`)."""

    feeds: list[Feed]
    max_deviation: int = 0


def phase_round(round_id: int) -> int:
    return round_id & PHASE_MASK


def walk_feed(
    fetch: Callable[[int], FeedRound | None],
    latest: FeedRound,
    since: int,
    cache: Mapping[int, FeedRound] | None = None,
    cap: int = MAX_WALK,
) -> tuple[dict[int, FeedRound], bool]:
    """The rounds from `latest` back while they were published at or after `since`, and the
    first one published before it (the previous round of the oldest that counts): at most
    `cap` rounds, each taken from `cache` or read with `fetch`. Returns the rounds and whether
    the walk saw every round that matters (False: it was capped; the start of the feed's
    history, or of its phase, ends it complete)."""
    cache = cache or {}
    rounds = {latest.round_id: latest}
    current = latest
    while current.updated_at >= since:
        rid = current.round_id - 1
        if phase_round(rid) < 1:
            return rounds, True
        if len(rounds) >= cap:
            return rounds, False
        previous = cache.get(rid)
        if previous is None:
            previous = fetch(rid)
            if previous is None:
                return rounds, True
        rounds[rid] = previous
        current = previous
    return rounds, True


def search_first_round(
    fetch: Callable[[int], FeedRound | None], latest: FeedRound, t: int, known: Mapping[int, FeedRound], cap: int = MAX_SEARCH
) -> dict[int, FeedRound]:
    """The round published at or after `t` whose previous round is older, found by galloping
    back from `latest` then bisecting (publication times grow with round ids): O(log n) reads
    for a round n rounds back, at most `cap`. Returns the rounds read (the found round and its
    previous among them when found)."""
    found: dict[int, FeedRound] = {}
    reads = [0]

    def get(rid: int) -> FeedRound | None:
        if rid in known:
            return known[rid]
        if rid in found:
            return found[rid]
        if reads[0] >= cap or phase_round(rid) < 1:
            return None
        reads[0] += 1
        r = fetch(rid)
        if r is not None:
            found[rid] = r
        return r

    high, step = latest.round_id, 1  # high: published at or after t
    low = None  # published before t
    while low is None:
        rid = max(latest.round_id - step, (latest.round_id & ~PHASE_MASK) | 1)
        r = get(rid)
        if r is None:
            return found
        if r.updated_at < t:
            low = rid
        else:
            high = rid
            if phase_round(rid) == 1:
                return found  # the phase's first round: nothing before it
            step *= 2
    while high - low > 1:
        middle = (low + high) // 2
        r = get(middle)
        if r is None:
            return found
        if r.updated_at < t:
            low = middle
        else:
            high = middle
    return found


def load_feed(
    fetch: Callable[[int], FeedRound | None],
    latest: FeedRound | None,
    heartbeat: int,
    since: int,
    anchors: Iterable[int] = (),
    cache: Mapping[int, FeedRound] | None = None,
    cap: int = MAX_WALK,
) -> Feed:
    """A feed's rounds for the orders of its market: the walk back from `latest` to `since`
    (the oldest publication time an order may still execute at), and, for each time of
    `anchors` (market orders' `not_before`) beyond the walk, the round found by a search."""
    if latest is None:
        return Feed(heartbeat)
    rounds, complete = walk_feed(fetch, latest, since, cache, cap)
    if not complete:
        oldest = min(r.updated_at for r in rounds.values())
        for t in sorted(set(anchors)):
            if oldest > t:
                rounds.update(search_first_round(fetch, latest, t, {**(cache or {}), **rounds}))
    return Feed(heartbeat, rounds, latest.round_id, complete)


def round_price(market: MarketFeeds, round_ids: tuple[int, ...], now: int) -> RoundPrice | str:
    """IndexOracle.round_price at `now` from the rounds read: the RoundPrice, or why the
    contract would refuse these rounds (or WAIT_HISTORY for a round not read)."""
    if len(round_ids) != len(market.feeds) or not round_ids:
        return ROUND_UNUSABLE
    prices, previous, published, previous_published = [], [], [], []
    for feed, rid in zip(market.feeds, round_ids):
        if phase_round(rid) <= 1:
            return NO_PREVIOUS
        r, p = feed.rounds.get(rid), feed.rounds.get(rid - 1)
        if r is None or p is None:
            return WAIT_HISTORY
        if r.price == 0 or p.price == 0:
            return ROUND_UNUSABLE
        if r.updated_at > now or p.updated_at > now:
            return FUTURE
        if now - r.updated_at > feed.heartbeat:
            return STALE
        prices.append(r.price)
        previous.append(p.price)
        published.append(r.updated_at)
        previous_published.append(p.updated_at)
    if len(prices) > 1 and feeds_disagree(prices, market.max_deviation):
        return DISAGREE
    return RoundPrice(median(prices), median(previous), min(published), max(previous_published))


# =============================================================================================
# Decisions
# =============================================================================================


@dataclass(frozen=True)
class Execution:
    """`execute_order(order_id, round_ids)` and what the oracle returns for those rounds."""

    order_id: int
    round_ids: tuple[int, ...]
    round_price: RoundPrice


@dataclass(frozen=True)
class OrderAction:
    action: str  # EXECUTE or CANCEL
    order_id: int
    executions: tuple[Execution, ...] = ()  # EXECUTE: the rounds to try, in this order
    due_since: int = 0  # when the action became possible: turns between keepers start there


@dataclass
class OrderDecisions:
    actions: list[OrderAction] = field(default_factory=list)
    waiting: dict[int, str] = field(default_factory=dict)  # order -> why not now
    finished: list[int] = field(default_factory=list)  # cancelled orders no round can execute any more


def is_late(order: Order) -> bool:
    """A trigger order its owner cancelled: still executable at a crossing published before."""
    return order.state == STATE_CANCELLED and order.cancelled_at != 0


def walk_since(order: Order, params: OrderParams, now: int) -> int:
    """The oldest publication time of a round the order may execute at (or that the search for
    a market order's first round needs)."""
    if order.kind == KIND_MARKET:
        return order.not_before
    return max(order.not_before, now - params.max_order_age)


def execution_window_end(order: Order) -> int:
    """A trigger order executes only at rounds published before this."""
    return min(order.expiry, order.cancelled_at) if is_late(order) else order.expiry


def market_order_execution(order_id: int, order: Order, market: MarketFeeds, now: int) -> Execution | str:
    """The market order's execution round (each feed's first round published at or after
    `not_before`), or why there is none yet (a WAIT_* reason) or will never be (an oracle
    reason: the order waits for its expiry)."""
    round_ids = []
    for feed in market.feeds:
        first = feed.first_round_since(order.not_before)
        if isinstance(first, str):
            return first
        round_ids.append(first)
    rp = round_price(market, tuple(round_ids), now)
    if isinstance(rp, str):
        return rp
    return Execution(order_id, tuple(round_ids), rp)


def candidate_rounds(market: MarketFeeds, start: int, end: int) -> list[tuple[int, ...]]:
    """Round-id tuples (one per feed) whose earliest publication is in [start, end), in
    publication order: with one feed, its rounds; with several, the feeds' latest rounds as of
    each publication in the window."""
    feeds = market.feeds
    if not feeds:
        return []
    if len(feeds) == 1:
        return [(rid,) for t, rid in feeds[0].timeline if start <= t < end]
    times = sorted({t for feed in feeds for t, _ in feed.timeline if start <= t < end})
    tuples: list[tuple[int, ...]] = []
    for t in times:
        rounds = [feed.latest_at(t) for feed in feeds]
        if all(r is not None and start <= r.updated_at for r in rounds):
            ids = tuple(r.round_id for r in rounds)
            if not tuples or tuples[-1] != ids:
                tuples.append(ids)
    return tuples


def trigger_order_executions(
    order_id: int, order: Order, market: MarketFeeds, now: int, params: OrderParams, limit: int = MAX_CANDIDATES,
    prices: dict[tuple[int, ...], RoundPrice | str] | None = None,
) -> list[Execution]:
    """The crossing rounds the trigger order may execute at now, earliest first: published in
    [not_before, expiry) (before the owner's cancellation for a late execution), no more than
    `max_order_age` ago, triggering the order while their previous round does not. `prices`:
    the market's `round_price`s at `now` computed so far (filled in), shared by the orders of
    one market in one decision (thousands of resting orders look at the same rounds)."""
    start = max(order.not_before, now - params.max_order_age)
    end = execution_window_end(order)
    found: list[Execution] = []
    if prices is None:
        prices = {}
    for ids in candidate_rounds(market, start, end):
        rp = prices.get(ids)
        if rp is None:
            rp = prices[ids] = round_price(market, ids, now)
        if isinstance(rp, str) or not start <= rp.published < end:
            continue
        if triggered(order.kind, order.size_delta, order.trigger_price, rp.price) and not triggered(
            order.kind, order.size_delta, order.trigger_price, rp.previous
        ):
            found.append(Execution(order_id, ids, rp))
            if len(found) >= limit:
                break
    return found


def decide_orders(
    orders: Mapping[int, Order], markets: Mapping[int, MarketFeeds], now: int, params: OrderParams
) -> OrderDecisions:
    """What to do with every indexed order at time `now` (the next block's earliest
    timestamp), in the orders' order (the keeper gives them in commit order)."""
    decisions = OrderDecisions()
    prices: dict[int, dict] = {}  # market -> round ids -> round_price at `now`
    for order_id, order in orders.items():
        late = is_late(order)
        if order.state != STATE_OPEN and not late:
            decisions.finished.append(order_id)
            continue
        if order.kind == KIND_MARKET:
            if now >= order.expiry:
                decisions.actions.append(OrderAction(CANCEL, order_id, due_since=order.expiry))
                continue
            market = markets.get(order.market_id)
            if market is None:
                decisions.waiting[order_id] = WAIT_NO_FEEDS
                continue
            execution = market_order_execution(order_id, order, market, now)
            if isinstance(execution, str):
                decisions.waiting[order_id] = execution
            else:
                decisions.actions.append(
                    OrderAction(EXECUTE, order_id, (execution,), due_since=execution.round_price.published)
                )
            continue
        if now >= execution_window_end(order) + params.max_order_age:
            if late:
                decisions.finished.append(order_id)  # no crossing left to execute it at
            else:
                decisions.actions.append(
                    OrderAction(CANCEL, order_id, due_since=order.expiry + params.max_order_age)
                )
            continue
        market = markets.get(order.market_id)
        if market is None:
            decisions.waiting[order_id] = WAIT_NO_FEEDS
            continue
        executions = trigger_order_executions(
            order_id, order, market, now, params, prices=prices.setdefault(order.market_id, {})
        )
        if executions:
            decisions.actions.append(
                OrderAction(EXECUTE, order_id, tuple(executions), due_since=executions[0].round_price.published)
            )
        else:
            decisions.waiting[order_id] = WAIT_NOT_TRIGGERED
    return decisions


# =============================================================================================
# Simulation on the reference model
# =============================================================================================


def install_order(model: ExchangeModel, order_id: int, order: Order) -> None:
    """Put an indexed order into a model's order book, where `perpdex.orders` keeps it."""
    _, _, slot, seq = decode_order_id(order_id)
    account = order.account
    model.order_ids[order_id] = (account, slot)
    model.order_seq[(account, slot)] = seq
    model.order_slots[(account, slot)] = order
    book = model.order_books.setdefault(account, [0, 0, 0])
    if order.state == STATE_OPEN:
        book[0] |= 1 << slot
        if order.kind == KIND_MARKET:
            book[2] += 1
    elif is_late(order):
        book[1] |= 1 << slot


def execution_model(
    snapshot: Snapshot,
    states: Mapping[AccountKey, AccountState],
    order_id: int,
    order: Order,
    executor: str,
    now: int,
    params: OrderParams,
) -> ExchangeModel:
    """A model of the snapshot holding the order's account and the executor's sub-account 0
    as cached, and the order, at time `now`."""
    account = order.account
    involved = {account: states.get(account, AccountState(0))}
    if (executor, 0) != account:
        involved[(executor, 0)] = states.get((executor, 0), AccountState(0))
    model = snapshot.account_model(involved)
    model.now = now
    model.order_params = params
    install_order(model, order_id, order)
    return model


def simulate_execution(
    snapshot: Snapshot,
    states: Mapping[AccountKey, AccountState],
    order_id: int,
    order: Order,
    execution: Execution,
    executor: str,
    now: int,
    params: OrderParams,
) -> ExecutionResult:
    """The model's `execute_order` at `execution`'s rounds for the order's account as cached:
    the fill or the cancellation; raises ModelRevert with the contract's reason when the call
    would revert. The snapshot is left untouched."""
    model = execution_model(snapshot, states, order_id, order, executor, now, params)
    return model.execute_order(order_id, executor, execution.round_price)


class Choice(NamedTuple):
    execution: Execution | None  # None: every round reverts
    result: ExecutionResult | str  # the model's fill or cancellation, or the last revert reason
    model: ExchangeModel | None  # the model after the execution


def choose_execution(
    snapshot: Snapshot,
    states: Mapping[AccountKey, AccountState],
    order: Order,
    action: OrderAction,
    executor: str,
    now: int,
    params: OrderParams,
) -> Choice:
    """The first of the action's rounds at which the model executes the order without a revert
    (filled or cancelled by the contract), with the model's result; else the last revert
    reason."""
    reason = "order: no round to try"
    for execution in action.executions:
        model = execution_model(snapshot, states, action.order_id, order, executor, now, params)
        try:
            return Choice(execution, model.execute_order(action.order_id, executor, execution.round_price), model)
        except ModelRevert as err:
            reason = err.reason
    return Choice(None, reason, None)


def apply_execution(
    snapshot: Snapshot, states: dict[AccountKey, AccountState], order: Order, executor: str, model: ExchangeModel
) -> None:
    """After an execution was sent: the snapshot's market and the cached accounts as the model
    left them, so that the next order of the same pass is simulated after this one (the next
    sync reads them from the chain again)."""
    snapshot.model.markets[order.market_id] = model.markets[order.market_id]
    snapshot.model.cash[LIQUIDITY_VAULT] = model.cash_of(LIQUIDITY_VAULT)
    for key in {order.account, (executor, 0)}:
        positions = {
            m: (p.size, p.open_notional, p.funding_snapshot) for (a, m), p in model.positions.items() if a == key and p.size
        }
        states[key] = AccountState(model.cash_of(key), positions)


def order_from_event(args: Mapping) -> Order:
    """An OrderCommitted event's arguments as the model's Order."""
    return Order(
        owner=str(args["owner"]),
        sub_account=int(args["sub_account"]),
        market_id=int(args["market_id"]),
        size_delta=int(args["size_delta"]),
        acceptable_price=int(args["acceptable_price"]),
        kind=int(args["kind"]),
        trigger_price=int(args["trigger_price"]),
        reduce_only=bool(args["reduce_only"]),
        not_before=int(args["not_before"]),
        expiry=int(args["expiry"]),
        fee=int(args["fee"]),
        state=STATE_OPEN,
    )


def cancelled_by_owner(order: Order, cancelled_at: int) -> Order:
    return replace(order, state=STATE_CANCELLED, cancelled_at=cancelled_at)
