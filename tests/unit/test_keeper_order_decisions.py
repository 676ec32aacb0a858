"""The keeper's order decisions (perpdex.keeper.orders) with no chain: rounds and orders in
plain Python, executions replayed on the reference model.

What a keeper must get right: a market order executes at the first round published after its
delay and at no later one; a trigger order at a crossing round (that round triggers it, the one
before does not), for every kind and side; expired orders are cancelled from the moment the
contract allows it and not before; reading a feed's history is bounded."""

import subprocess
import sys
from dataclasses import replace

import pytest

from perpdex.config import load_markets
from perpdex.fixed_point import WAD
from perpdex.keeper.core import Snapshot, states_from_model, take_turn
from perpdex.keeper.orders import (
    CANCEL,
    DISAGREE,
    EXECUTE,
    STALE,
    WAIT_HISTORY,
    WAIT_NO_ROUND,
    WAIT_NOT_TRIGGERED,
    Execution,
    Feed,
    FeedRound,
    MarketFeeds,
    OrderAction,
    choose_execution,
    decide_orders,
    feed_round,
    load_feed,
    market_order_execution,
    round_price,
    search_first_round,
    simulate_execution,
    trigger_order_executions,
    walk_feed,
)
from perpdex.model import ExchangeModel, ModelRevert
from perpdex.orders import (
    KIND_LIMIT,
    KIND_MARKET,
    KIND_STOP_LOSS,
    KIND_TAKE_PROFIT,
    STATE_CANCELLED,
    STATE_OPEN,
    Order,
    OrderParams,
    order_id_of,
)

MARKETS, GLOBALS = load_markets()
BTC = 0
HEARTBEAT = 3600
PARAMS = OrderParams(min_order_delay=1, max_order_age=3600, execution_fee=WAD // 2)
TRADER = "0x" + "ab" * 20
EXECUTOR = "0x" + "ee" * 20
ORDER_ID = order_id_of(TRADER, 0, 0, 1)
T0 = 1_700_000_000


def usd(price: float) -> int:
    return int(price * 100) * WAD // 100


def make_feed(points: list[tuple[int, float]], first_id: int = 1, heartbeat: int = HEARTBEAT) -> Feed:
    """Consecutive rounds from `first_id`: (updated_at, price in USD)."""
    rounds = {first_id + i: FeedRound(first_id + i, usd(p), t) for i, (t, p) in enumerate(points)}
    return Feed(heartbeat, rounds, first_id + len(points) - 1)


def make_order(kind: int = KIND_MARKET, size: int = WAD, trigger: float = 0, not_before: int = T0 + 1,
               expiry: int | None = None, acceptable: int | None = None, **changes) -> Order:
    if expiry is None:
        expiry = not_before - 1 + PARAMS.max_order_age if kind == KIND_MARKET else not_before + 30 * 86400
    if acceptable is None:
        acceptable = 2**128 - 1 if size > 0 else 0
    order = Order(TRADER, 0, BTC, size, acceptable, kind, usd(trigger), kind in (KIND_STOP_LOSS, KIND_TAKE_PROFIT),
                  not_before, expiry, PARAMS.execution_fee, STATE_OPEN)
    return replace(order, **changes)


def one_market(*points_per_feed, max_deviation: int = 0) -> dict[int, MarketFeeds]:
    return {BTC: MarketFeeds([make_feed(points) for points in points_per_feed], max_deviation)}


# =============================================================================================
# Market orders
# =============================================================================================


def test_a_market_order_executes_at_the_first_round_after_its_delay_and_at_no_later_one():
    order = make_order(not_before=T0 + 5)
    markets = one_market([(T0 - 60, 40_000), (T0 + 2, 40_100), (T0 + 7, 40_200), (T0 + 9, 40_300), (T0 + 12, 40_400)])
    decisions = decide_orders({ORDER_ID: order}, markets, T0 + 13, PARAMS)

    (action,) = decisions.actions
    assert action.action == EXECUTE and action.due_since == T0 + 7
    (execution,) = action.executions
    assert execution.round_ids == (3,)
    assert execution.round_price.price == usd(40_200) and execution.round_price.previous == usd(40_100)
    assert execution.round_price.previous_published == T0 + 2 < order.not_before

    # the model (the contract's mirror) fills at the first round and refuses the next one
    snapshot, states = trader_world()
    result = simulate_execution(snapshot, states, ORDER_ID, order, execution, EXECUTOR, T0 + 13, PARAMS)
    assert result.filled and result.size_delta == WAD
    later = round_price(markets[BTC], (4,), T0 + 13)
    with pytest.raises(ModelRevert, match="order: not the first round after the order's delay"):
        simulate_execution(snapshot, states, ORDER_ID, order, Execution(ORDER_ID, (4,), later), EXECUTOR, T0 + 13, PARAMS)


def test_a_round_published_exactly_at_the_end_of_the_delay_is_the_first_round():
    order = make_order(not_before=T0 + 5)
    markets = one_market([(T0, 40_000), (T0 + 5, 40_100), (T0 + 6, 40_200)])
    assert market_order_execution(ORDER_ID, order, markets[BTC], T0 + 7).round_ids == (2,)


def test_a_market_order_waits_for_its_round_and_is_cancelled_from_its_expiry_on():
    order = make_order(not_before=T0 + 5, expiry=T0 + 60)
    before_delay = one_market([(T0 - 30, 40_000), (T0 + 3, 40_100)])  # published before not_before only
    decisions = decide_orders({ORDER_ID: order}, before_delay, T0 + 59, PARAMS)
    assert decisions.actions == [] and decisions.waiting == {ORDER_ID: WAIT_NO_ROUND}

    decisions = decide_orders({ORDER_ID: order}, before_delay, T0 + 60, PARAMS)
    assert decisions.actions == [OrderAction(CANCEL, ORDER_ID, due_since=T0 + 60)]
    # a round that came too late does not execute it either: the contract refuses from expiry on
    late_round = one_market([(T0 + 3, 40_100), (T0 + 61, 40_200)])
    assert decide_orders({ORDER_ID: order}, late_round, T0 + 62, PARAMS).actions[0].action == CANCEL


def test_a_first_round_older_than_the_heartbeat_cannot_execute_and_the_order_expires():
    order = make_order(not_before=T0 + 5, expiry=T0 + 7_200)
    markets = one_market([(T0, 40_000), (T0 + 6, 40_100)])
    decisions = decide_orders({ORDER_ID: order}, markets, T0 + 6 + HEARTBEAT + 1, PARAMS)
    assert decisions.actions == [] and decisions.waiting == {ORDER_ID: STALE}
    assert decide_orders({ORDER_ID: order}, markets, T0 + 7_200, PARAMS).actions[0].action == CANCEL


def test_with_several_feeds_each_feed_names_its_first_round_and_the_median_prices_it():
    order = make_order(not_before=T0 + 10)
    markets = one_market(
        [(T0, 40_000), (T0 + 11, 40_100), (T0 + 20, 41_000)],
        [(T0 + 1, 40_010), (T0 + 5, 40_020), (T0 + 14, 40_060)],
        [(T0 + 2, 39_990), (T0 + 12, 40_080), (T0 + 15, 40_500)],
        max_deviation=WAD // 100,
    )
    execution = market_order_execution(ORDER_ID, order, markets[BTC], T0 + 21)
    assert execution.round_ids == (2, 3, 2)
    rp = execution.round_price
    assert rp.price == usd(40_080) and rp.published == T0 + 11 and rp.previous_published == T0 + 5
    assert rp.previous == usd(40_000)  # median of 40,000, 40,020 and 39,990

    split = one_market([(T0, 40_000), (T0 + 11, 40_100)], [(T0, 40_000), (T0 + 11, 42_000)], max_deviation=WAD // 100)
    assert market_order_execution(ORDER_ID, order, split[BTC], T0 + 12) == DISAGREE


# =============================================================================================
# Trigger orders
# =============================================================================================

DOWN = [40_000, 39_500, 38_900, 38_500, 39_600, 39_000]  # crosses 39,000 down at rounds 3 and 6 (at it)
UP = [40_000, 40_500, 41_100, 41_500, 40_400, 41_000]  # crosses 41,000 up at rounds 3 and 6 (at it)


@pytest.mark.parametrize(
    "kind, size, trigger, path",
    [
        (KIND_LIMIT, WAD, 39_000, DOWN),  # buy at or below the limit
        (KIND_LIMIT, -WAD, 41_000, UP),  # sell at or above the limit
        (KIND_STOP_LOSS, -WAD, 39_000, DOWN),  # a long's stop: sells when the index falls through it
        (KIND_STOP_LOSS, WAD, 41_000, UP),  # a short's stop: buys when the index rises through it
        (KIND_TAKE_PROFIT, -WAD, 41_000, UP),  # a long's take-profit
        (KIND_TAKE_PROFIT, WAD, 39_000, DOWN),  # a short's take-profit
    ],
    ids=["limit-buy", "limit-sell", "stop-long", "stop-short", "take-profit-long", "take-profit-short"],
)
def test_trigger_orders_execute_at_crossing_rounds_only(kind, size, trigger, path):
    order = make_order(kind, size, trigger, not_before=T0 + 1)
    markets = one_market([(T0 + 10 * i, p) for i, p in enumerate(path)])
    now = T0 + 10 * len(path)
    executions = trigger_order_executions(ORDER_ID, order, markets[BTC], now, PARAMS)
    assert [e.round_ids for e in executions] == [(3,), (6,)]  # not round 4: triggered, but so was round 3
    assert executions[0].round_price.price == usd(path[2]) and executions[0].round_price.previous == usd(path[1])

    (action,) = decide_orders({ORDER_ID: order}, markets, now, PARAMS).actions
    assert action.action == EXECUTE and action.executions == tuple(executions) and action.due_since == T0 + 20

    # the other side of the same trigger crosses it the other way: when the path turns back
    mirrored = replace(order, size_delta=-size)
    assert [e.round_ids for e in trigger_order_executions(ORDER_ID, mirrored, markets[BTC], now, PARAMS)] == [(5,)]


def test_a_trigger_order_ignores_rounds_before_its_commit_after_its_expiry_and_older_than_the_maximum_age():
    stop = make_order(KIND_STOP_LOSS, -WAD, 39_000, not_before=T0 + 15, expiry=T0 + 45)
    path = [(T0, 40_000), (T0 + 10, 38_000), (T0 + 20, 40_000), (T0 + 30, 38_500), (T0 + 40, 39_500),
            (T0 + 50, 38_000)]
    markets = one_market(path)
    # round 2 crossed before the commit, round 6 after the expiry: only round 4 counts
    assert [e.round_ids for e in trigger_order_executions(ORDER_ID, stop, markets[BTC], T0 + 51, PARAMS)] == [(4,)]
    # the crossing may be executed until max_order_age after it was published, not later
    at_limit = T0 + 30 + PARAMS.max_order_age
    assert [e.round_ids for e in trigger_order_executions(ORDER_ID, stop, markets[BTC], at_limit, PARAMS)] == [(4,)]
    fresh = {BTC: MarketFeeds([replace(markets[BTC].feeds[0], heartbeat=10 * HEARTBEAT)])}
    assert trigger_order_executions(ORDER_ID, stop, fresh[BTC], at_limit + 1, PARAMS) == []
    # no crossing and not yet expired: it rests; from expiry + max_order_age anyone cancels it
    resting = make_order(KIND_STOP_LOSS, -WAD, 30_000, not_before=T0 + 15, expiry=T0 + 45)
    decisions = decide_orders({ORDER_ID: resting}, markets, T0 + 45 + PARAMS.max_order_age - 1, PARAMS)
    assert decisions.actions == [] and decisions.waiting == {ORDER_ID: WAIT_NOT_TRIGGERED}
    decisions = decide_orders({ORDER_ID: resting}, markets, T0 + 45 + PARAMS.max_order_age, PARAMS)
    assert decisions.actions == [OrderAction(CANCEL, ORDER_ID, due_since=T0 + 45 + PARAMS.max_order_age)]


def test_an_owner_cancellation_counts_only_for_rounds_published_after_it():
    path = [(T0, 40_000), (T0 + 10, 38_500), (T0 + 20, 40_000), (T0 + 30, 38_000)]
    markets = one_market(path)
    cancelled = make_order(KIND_STOP_LOSS, -WAD, 39_000, not_before=T0 + 5, state=STATE_CANCELLED,
                           cancelled_at=T0 + 15)
    # the crossing at T0 + 10 came before the cancellation: still executed there ("late")
    (action,) = decide_orders({ORDER_ID: cancelled}, markets, T0 + 31, PARAMS).actions
    assert [e.round_ids for e in action.executions] == [(2,)]
    # once that crossing is older than max_order_age, nothing can execute it any more
    decisions = decide_orders({ORDER_ID: cancelled}, markets, T0 + 15 + PARAMS.max_order_age, PARAMS)
    assert decisions.actions == [] and decisions.finished == [ORDER_ID]
    # an order cancelled before any crossing: nothing to execute, and no cancellation to send
    early = replace(cancelled, cancelled_at=T0 + 8)
    decisions = decide_orders({ORDER_ID: early}, markets, T0 + 31, PARAMS)
    assert decisions.actions == [] and decisions.waiting == {ORDER_ID: WAIT_NOT_TRIGGERED}


# =============================================================================================
# Reading the history: bounded
# =============================================================================================


class History:
    """A feed's rounds published every `step` seconds; counts the reads."""

    def __init__(self, count: int, step: int = 10, first_id: int = (1 << 64) + 1):
        self.first_id, self.count, self.step = first_id, count, step
        self.reads = 0

    def at(self, round_id: int) -> FeedRound | None:
        i = round_id - self.first_id
        return FeedRound(round_id, usd(40_000 + i), T0 + self.step * i) if 0 <= i < self.count else None

    def fetch(self, round_id: int) -> FeedRound | None:
        self.reads += 1
        return self.at(round_id)

    @property
    def latest(self) -> FeedRound:
        return self.at(self.first_id + self.count - 1)


def test_the_walk_stops_at_the_first_round_older_than_needed():
    history = History(1_000)
    since = history.latest.updated_at - 35  # rounds at -30, -20, -10, 0 count; the one at -40 is their previous
    rounds, complete = walk_feed(history.fetch, history.latest, since)
    assert complete and len(rounds) == 5 and history.reads == 4
    assert min(r.updated_at for r in rounds.values()) == history.latest.updated_at - 40

    again, _ = walk_feed(history.fetch, history.latest, since, cache=rounds)  # the next pass: cached
    assert again == rounds and history.reads == 4


def test_the_walk_is_capped_and_a_search_finds_a_market_orders_round_far_back():
    history = History(100_000)
    not_before = T0 + 10 * 12_345 + 3  # round index 12,346 is the first at or after it
    rounds, complete = walk_feed(history.fetch, history.latest, not_before, cap=50)
    assert not complete and len(rounds) == 50 and history.reads == 49

    history.reads = 0
    found = search_first_round(history.fetch, history.latest, not_before, rounds)
    first = history.first_id + 12_346
    assert first in found and first - 1 in found
    assert history.reads <= 2 * 17 + 2  # galloping then bisecting: logarithmic in 87,000 rounds

    feed = load_feed(history.fetch, history.latest, HEARTBEAT, not_before, anchors=[not_before], cap=50)
    assert feed.first_round_since(not_before) == first
    # without the search the order could not be placed: it waits rather than guessing a round
    walked_only = load_feed(history.fetch, history.latest, HEARTBEAT, not_before, cap=50)
    assert walked_only.first_round_since(not_before) == WAIT_HISTORY


def test_raw_rounds_are_normalised_and_unusable_ones_marked():
    assert feed_round(5, 4_000_012_345_678, T0, T0, 5, 8) == FeedRound(5, 40_000_123_456_780_000_000_000, T0)
    assert feed_round(5, 4_000_000_000_000, T0, T0, 4, 8).price == 0  # answered in an earlier round
    assert feed_round(5, -1, T0, T0, 5, 8).price == 0
    assert feed_round(5, 1, 0, T0, 5, 8).price == 0  # never started


# =============================================================================================
# Simulation on the model
# =============================================================================================


def trader_world(collateral_usd: int = 10_000, position: int = 0) -> tuple[Snapshot, dict]:
    model = ExchangeModel(globals=GLOBALS, now=T0)
    for m in MARKETS:
        model.index[m.id] = int(m.initial_price) * WAD
        model.list_market(m.id, m.params)
    model.lp_deposit("lp", 1_000_000 * 10**6)
    model.deposit((TRADER, 0), collateral_usd * 10**6)
    if position:
        model.trade((TRADER, 0), BTC, position, 2**256 - 1 if position > 0 else 0)
    model.order_params = PARAMS
    return Snapshot(model), states_from_model(model)


def test_a_trigger_order_beyond_its_acceptable_price_at_one_crossing_is_tried_at_the_next():
    snapshot, states = trader_world(position=WAD)
    stop = make_order(KIND_STOP_LOSS, -WAD, 39_000, not_before=T0 + 1, acceptable=usd(38_000))
    markets = one_market([(T0, 40_000), (T0 + 10, 37_000), (T0 + 20, 39_500), (T0 + 30, 38_800)])
    (action,) = decide_orders({ORDER_ID: stop}, markets, T0 + 31, PARAMS).actions
    assert [e.round_ids for e in action.executions] == [(2,), (4,)]

    execution, result, _ = choose_execution(snapshot, states, stop, action, EXECUTOR, T0 + 31, PARAMS)
    assert execution.round_ids == (4,)  # at 37,000 the fill is below the 38,000 minimum: it keeps resting
    assert result.filled and result.size_delta == -WAD and result.fill_price >= usd(38_000)
    assert result.fee == PARAMS.execution_fee


def test_the_model_says_when_the_contract_cancels_instead_of_filling():
    snapshot, states = trader_world(collateral_usd=100)
    too_big = make_order(size=WAD)  # 40,000 USD on 100 USD of margin
    markets = one_market([(T0, 40_000), (T0 + 2, 40_000)])
    (action,) = decide_orders({ORDER_ID: too_big}, markets, T0 + 3, PARAMS).actions
    execution, result, _ = choose_execution(snapshot, states, too_big, action, EXECUTOR, T0 + 3, PARAMS)
    assert execution is not None and not result.filled
    assert result.reason == "exchange: insufficient margin" and result.fee == PARAMS.execution_fee

    nothing_to_reduce = make_order(KIND_STOP_LOSS, -WAD, 39_000)  # the position is gone
    markets = one_market([(T0, 40_000), (T0 + 10, 38_500)])
    (action,) = decide_orders({ORDER_ID: nothing_to_reduce}, markets, T0 + 11, PARAMS).actions
    _, result, _ = choose_execution(snapshot, states, nothing_to_reduce, action, EXECUTOR, T0 + 11, PARAMS)
    assert not result.filled and result.reason == "order: nothing left to reduce"

    # a late execution reverts instead (the owner's cancellation stands): nothing is sent
    late = replace(nothing_to_reduce, state=STATE_CANCELLED, cancelled_at=T0 + 20)
    (action,) = decide_orders({ORDER_ID: late}, markets, T0 + 21, PARAMS).actions
    assert choose_execution(snapshot, states, late, action, EXECUTOR, T0 + 21, PARAMS) == (
        None, "order: nothing left to reduce", None
    )
    assert snapshot.model.cash_of((TRADER, 0)) == states[(TRADER, 0)].cash  # the snapshot is untouched


def test_the_decision_core_imports_no_chain_client():
    code = (
        "import sys, perpdex.keeper, perpdex.keeper.orders, perpdex.keeper.adl, perpdex.keeper.core;"
        "print(sorted(m for m in ('ape', 'web3', 'boa') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_keepers_that_know_each_other_take_turns_per_order_each_order_starting_with_another():
    keepers = ["0xCC", "0xaa", "0xBb"]
    for first in range(3):
        for now in range(95, 140):  # at most one keeper may send at any moment
            assert sum(take_turn(k, keepers, 100, now, 4, 2, first=first)[0] for k in keepers) <= 1
    starters = [next(k for k in keepers if take_turn(k, keepers, 100, 100, 4, 2, first=f)[0]) for f in range(3)]
    assert sorted(s.lower() for s in starters) == ["0xaa", "0xbb", "0xcc"]  # the orders' work is spread
    assert take_turn("0xaa", ["0xaa"], 100, 100, 4, 2) == (True, 100)  # alone: at once
