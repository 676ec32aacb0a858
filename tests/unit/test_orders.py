"""The order book's kinds, fees, events and storage (DESIGN.md "Orders", contracts/OrderBook.vy).

Every commit, execution and cancellation goes through `System` (tests/system.py): it runs on the
contracts and on the reference model (perpdex/orders.py), compares the order, the escrow and the
accounts to the wei, and expects the contract to revert with the model's exact reason when the
model refuses. The `system` fixture checks the ledger identity (escrow included), zero-sum
positions and full model parity at teardown. Front-running and the options a trader might keep
are in test_front_running.py, bad input in test_order_inputs.py.
"""

from __future__ import annotations


import boa
import pytest

from perpdex.model import ModelRevert
from perpdex.orders import (
    KIND_LIMIT,
    KIND_MARKET,
    KIND_STOP_LOSS,
    KIND_TAKE_PROFIT,
    MAX_OPEN_ORDERS,
    STATE_CANCELLED,
    STATE_EXECUTED,
    STATE_OPEN,
    OrderParams,
    RoundPrice,
    decode_order_id,
    order_id_of,
)
from system import FEED_DECIMALS, HEARTBEAT, System, default_params, fresh, params_tuple, usd

BTC, ETH, MED = 0, 1, 2  # MED: a market priced by the median of three feeds (listed here)
WAD = 10**18
MAX_UINT = 2**256 - 1
FEED_TO_WAD = 10 ** (18 - FEED_DECIMALS)
FEE = 5 * WAD  # an execution fee of 5 USD where a test sets one

pytestmark = pytest.mark.ignore_isolation


# ============================================================================================
# fixtures and helpers
# ============================================================================================


@pytest.fixture(scope="module")
def world(world):
    """The session's deployment plus the liquidity vault's capital."""
    with fresh(world) as s:
        s.lp_deposit(boa.env.generate_address("lp"), 1_000_000)
        yield s


@pytest.fixture
def s(system):
    """The system a minute later, with fresh rounds at the current prices."""
    system.warp(60)
    for market_id in system.aggregators:
        system.publish(market_id)
    return system


@pytest.fixture
def stranger():
    return boa.env.generate_address("stranger")


def events(s: System, name: str) -> list:
    return [e for e in s.last_logs if type(e).__name__ == name]


def land(s: System, price: int, market_id: int = BTC) -> int:
    """A new round at `price` (WAD) on the market's feed; its round id."""
    assert price % FEED_TO_WAD == 0
    with boa.env.prank(s.owner):
        s.aggregators[market_id].update_answer(price // FEED_TO_WAD)
    s.model.index[market_id] = price
    return s.aggregators[market_id].latestRound()


def next_round(s: System, price: int | None = None, market_id: int = BTC) -> int:
    """One second later, a round at `price` (default: the current answer)."""
    s.warp(1)
    return s.publish(market_id) if price is None else land(s, price, market_id)


def execute(s: System, order_id: int, round_id: int, executor: str):
    """Execute on both sides; returns (the model's result, the OrderExecuted or OrderCancelled event)."""
    result = s.execute_order(order_id, round_id, executor=executor)
    [event] = events(s, "OrderExecuted" if result.filled else "OrderCancelled")
    return result, event


def fill_price(index: int, skew: int, size: int, skew_scale: int = 1_000 * WAD) -> int:
    """The exchange's fill price (default_params' skew scale), rounded against the trader."""
    numerator = index * (2 * skew + size)
    impact = -(-numerator // (2 * skew_scale)) if size > 0 else numerator // (2 * skew_scale)
    return index + impact


def size_of(s: System, who: str, market_id: int = BTC, sub_account: int = 0) -> int:
    return s.exchange.position_state(who, sub_account, market_id)[0]


def state_of(s: System, order_id: int) -> int:
    return s.order_book.order(order_id).state


# ============================================================================================
# trigger orders: the right side of the trigger, the crossing round only
# ============================================================================================

# (kind, position before, order size, trigger, a round on the wrong side, a round that does
# not reach the trigger): the trigger is reached at the trigger price itself
TRIGGER_CASES = {
    "limit-buy": (KIND_LIMIT, 0, usd(1), usd(39_000), usd(40_500), usd(39_010)),
    "limit-sell": (KIND_LIMIT, 0, -usd(1), usd(41_000), usd(39_500), usd(40_990)),
    "stop-loss-of-a-long": (KIND_STOP_LOSS, usd(1), -usd(1), usd(39_000), usd(40_500), usd(39_010)),
    "stop-loss-of-a-short": (KIND_STOP_LOSS, -usd(1), usd(1), usd(41_000), usd(39_500), usd(40_990)),
    "take-profit-of-a-long": (KIND_TAKE_PROFIT, usd(1), -usd(1), usd(41_000), usd(39_500), usd(40_990)),
    "take-profit-of-a-short": (KIND_TAKE_PROFIT, -usd(1), usd(1), usd(39_000), usd(40_500), usd(39_010)),
}


@pytest.mark.parametrize("case", list(TRIGGER_CASES))
def test_trigger_order_fires_only_at_the_round_crossing_its_trigger(s, trader, keeper, case):
    kind, position, size, trigger, wrong_side, short_of_it = TRIGGER_CASES[case]
    s.deposit(trader, 20_000)
    if position:
        s.trade(trader, BTC, position)
    order_id = s.commit_order(trader, BTC, size, MAX_UINT if size > 0 else 0, kind, trigger)
    assert s.order_book.order(order_id).reduce_only == (kind != KIND_LIMIT)
    for price in (wrong_side, short_of_it):
        round_id = next_round(s, price)
        with pytest.raises(ModelRevert, match="^order: not triggered at this round$"):
            s.execute_order(order_id, round_id, executor=keeper)
    crossing = next_round(s, trigger)  # at the trigger price exactly: reached
    beyond = next_round(s, 2 * trigger - short_of_it)  # still triggered, but not the crossing
    with pytest.raises(ModelRevert, match=r"^order: already triggered at the round before \(not the crossing\)$"):
        s.execute_order(order_id, beyond, executor=keeper)
    assert state_of(s, order_id) == STATE_OPEN

    result, executed = execute(s, order_id, crossing, keeper)
    skew = s.model.markets[BTC].skew - size  # the skew the order met
    assert (executed.index_price, executed.size_delta) == (trigger, size)
    assert executed.fill_price == result.fill_price == fill_price(trigger, skew, size)
    assert size_of(s, trader) == position + size
    assert state_of(s, order_id) == STATE_EXECUTED
    assert s.order_book.open_orders(trader, 0) == []


def test_trigger_order_never_fires_at_a_round_published_before_its_commit(s, trader, keeper):
    """A crossing round published before the commit, or in the commit's own second (before
    `not_before`), cannot execute the order; the next genuine crossing can."""
    s.deposit(trader, 20_000)
    old_crossing = next_round(s, usd(38_900))
    next_round(s, usd(40_000))
    order_id = s.commit_order(trader, BTC, usd(1), MAX_UINT, KIND_LIMIT, usd(39_000))
    with pytest.raises(ModelRevert, match="^order: round published before the order could trigger$"):
        s.execute_order(order_id, old_crossing, executor=keeper)
    same_second = land(s, usd(38_900))  # lands in the commit's block time
    with pytest.raises(ModelRevert, match="^order: round published before the order could trigger$"):
        s.execute_order(order_id, same_second, executor=keeper)
    # the index stays below the limit: no later round is a crossing until it goes back above
    still_below = next_round(s, usd(38_800))
    with pytest.raises(ModelRevert, match=r"^order: already triggered at the round before"):
        s.execute_order(order_id, still_below, executor=keeper)
    next_round(s, usd(39_500))
    crossing = next_round(s, usd(38_950))
    _, executed = execute(s, order_id, crossing, keeper)
    assert executed.index_price == usd(38_950)
    assert size_of(s, trader) == usd(1)


def test_trigger_order_committed_already_triggered_is_refused(s, trader):
    s.deposit(trader, 20_000)
    s.trade(trader, BTC, usd(1))
    index = s.exchange.index_price(BTC)
    reason = f"order: trigger already reached at the index {index} (WAD); use a market order"
    for kind, size, trigger in (
        (KIND_LIMIT, usd(1), usd(41_000)),  # a buy limit above the index
        (KIND_LIMIT, -usd(1), index),  # a sell limit at the index
        (KIND_STOP_LOSS, -usd(1), usd(41_000)),  # a long's stop above the index
        (KIND_TAKE_PROFIT, -usd(1), usd(39_000)),  # a long's take-profit below the index
    ):
        with pytest.raises(ModelRevert) as refusal:
            s.commit_order(trader, BTC, size, 0 if size < 0 else MAX_UINT, kind, trigger)
        assert refusal.value.reason == reason
    assert s.order_book.open_orders(trader, 0) == []


# ============================================================================================
# acceptable price
# ============================================================================================


@pytest.mark.parametrize("side", [1, -1], ids=["buy", "sell"])
def test_market_order_beyond_its_acceptable_price_is_cancelled_and_the_keeper_paid(s, trader, keeper, side):
    s.set_order_params(execution_fee=FEE)
    s.deposit(trader, 10_000)
    fill = fill_price(usd(40_000), 0, side * WAD)  # 40,020 for a buy, 39,980 for a sell
    acceptable = fill - side * usd(10)
    order_id = s.commit_order(trader, BTC, side * WAD, acceptable)
    result, cancelled = execute(s, order_id, next_round(s), keeper)
    assert not result.filled
    assert (cancelled.reason, cancelled.fee, cancelled.fee_to, cancelled.by) == (
        "exchange: price beyond acceptable",
        FEE,
        keeper,
        keeper,
    )
    assert s.vault.cash(keeper, 0) == FEE
    assert s.vault.cash(trader, 0) == usd(10_000) - FEE
    assert size_of(s, trader) == 0
    assert state_of(s, order_id) == STATE_CANCELLED
    assert s.order_book.pending_market_orders(trader, 0) == 0


def test_trigger_order_beyond_its_acceptable_price_keeps_resting_and_fills_at_the_next_crossing(s, trader, keeper):
    """A buy limit at 39,000 that accepts no worse than 39,000: at a crossing round at 39,000 the
    fill (39,019.50, the price impact) is beyond it, so the execution reverts and the order
    rests; at the next crossing, at 38,950, the fill is 38,969.475 and it executes."""
    s.set_order_params(execution_fee=FEE)
    s.deposit(trader, 20_000)
    order_id = s.commit_order(trader, BTC, usd(1), usd(39_000), KIND_LIMIT, usd(39_000))
    crossing = next_round(s, usd(39_000))
    with pytest.raises(ModelRevert, match="^exchange: price beyond acceptable$"):
        s.execute_order(order_id, crossing, executor=keeper)
    assert state_of(s, order_id) == STATE_OPEN
    assert s.order_book.open_orders(trader, 0) == [order_id]
    assert s.vault.cash(keeper, 0) == 0
    assert s.vault.order_escrow_cash() == FEE
    next_round(s, usd(39_500))
    second = next_round(s, usd(38_950))
    _, executed = execute(s, order_id, second, keeper)
    assert executed.fill_price == usd("38969.475")
    assert size_of(s, trader) == usd(1)
    assert s.vault.cash(keeper, 0) == FEE


# ============================================================================================
# market order lifetime and cancellation
# ============================================================================================


def test_market_order_expires_after_max_order_age(s, trader, keeper, stranger):
    """Nobody executed it while it could; from its expiry no round executes it, its owner still
    cannot have cancelled it before, and then anyone cancels it for the fee."""
    s.set_order_params(execution_fee=FEE)
    s.deposit(trader, 10_000)
    order_id = s.commit_order(trader, BTC, usd(1))
    expiry = s.order_book.order(order_id).expiry
    assert expiry == s.now + 3600
    first = next_round(s)
    s.warp(expiry - s.now - 1)
    for who in (trader, stranger):
        with pytest.raises(ModelRevert) as refusal:
            s.cancel_order(who, order_id)
        assert refusal.value.reason == f"order: a market order cannot be cancelled before it expires at {expiry}"
    s.warp(1)
    s.publish(BTC)
    with pytest.raises(ModelRevert, match="^order: expired$"):
        s.execute_order(order_id, first, executor=keeper)
    s.cancel_order(stranger, order_id)
    [cancelled] = events(s, "OrderCancelled")
    assert (cancelled.order_id, cancelled.by, cancelled.reason, cancelled.fee, cancelled.fee_to) == (
        order_id,
        stranger,
        "expired",
        FEE,
        stranger,
    )
    assert s.vault.cash(stranger, 0) == FEE
    assert s.vault.cash(trader, 0) == usd(10_000) - FEE
    assert s.order_book.pending_market_orders(trader, 0) == 0
    assert size_of(s, trader) == 0


def test_owner_cancelling_its_expired_market_order_gets_the_fee_back_in_that_sub_account(s, trader):
    s.set_order_params(execution_fee=FEE)
    s.deposit(trader, 1_000, sub_account=3)
    order_id = s.commit_order(trader, BTC, usd("0.1"), sub_account=3)
    s.warp(3600)
    s.cancel_order(trader, order_id)
    [cancelled] = events(s, "OrderCancelled")
    assert (cancelled.reason, cancelled.fee_to, cancelled.sub_account) == ("expired", trader, 3)
    assert s.vault.cash(trader, 3) == usd(1_000)
    assert s.vault.cash(trader, 0) == 0


def test_trigger_order_expiry_and_cancellation_by_anyone_after_it(s, trader, keeper, stranger):
    """A limit order with its own expiry: a crossing round published from its expiry does not
    execute it; strangers may cancel it (taking the fee) only from expiry + max_order_age, when
    no earlier round can execute it any more."""
    s.set_order_params(execution_fee=FEE)
    s.deposit(trader, 10_000)
    expiry = s.now + 600
    order_id = s.commit_order(trader, BTC, usd(1), MAX_UINT, KIND_LIMIT, usd(39_000), expiry=expiry)
    s.warp(expiry - s.now)
    late_crossing = land(s, usd(38_900))
    with pytest.raises(ModelRevert, match="^order: round published after the order's expiry or cancellation$"):
        s.execute_order(order_id, late_crossing, executor=keeper)
    with pytest.raises(ModelRevert) as refusal:
        s.cancel_order(stranger, order_id)
    assert refusal.value.reason == f"order: not expired; anyone may cancel it from {expiry + 3600}"
    s.warp(3599)
    with pytest.raises(ModelRevert, match="^order: not expired"):
        s.cancel_order(stranger, order_id)
    s.warp(1)
    s.cancel_order(stranger, order_id)
    [cancelled] = events(s, "OrderCancelled")
    assert (cancelled.reason, cancelled.fee, cancelled.fee_to) == ("expired", FEE, stranger)
    assert s.vault.cash(stranger, 0) == FEE


def test_triggering_round_older_than_max_order_age_no_longer_executes(s, trader, keeper):
    """A keeper that misses a crossing by more than max_order_age (here 10 minutes, within the
    feed's one-hour heartbeat) lets the order rest until the next crossing."""
    s.set_order_params(max_order_age=600)
    s.deposit(trader, 20_000)
    order_id = s.commit_order(trader, BTC, usd(1), MAX_UINT, KIND_LIMIT, usd(39_000))
    crossing = next_round(s, usd(38_900))
    s.warp(600)
    with fresh(s) as on_time:  # max_order_age after the round: still executable
        execute(on_time, order_id, crossing, keeper)
        assert size_of(on_time, trader) == usd(1)
    s.warp(1)
    with pytest.raises(ModelRevert, match="^order: triggering round too old to execute$"):
        s.execute_order(order_id, crossing, executor=keeper)
    assert state_of(s, order_id) == STATE_OPEN
    next_round(s, usd(39_500))
    _, executed = execute(s, order_id, next_round(s, usd(38_950)), keeper)
    assert executed.index_price == usd(38_950)


# ============================================================================================
# reduce-only orders, margin at execution
# ============================================================================================


def test_reduce_only_order_is_clipped_to_what_is_left_of_the_position(s, trader, keeper):
    s.deposit(trader, 20_000)
    s.trade(trader, BTC, usd(2))
    order_id = s.commit_order(trader, BTC, -usd(2), 0, KIND_TAKE_PROFIT, usd(41_000))
    s.trade(trader, BTC, -usd("1.5"))
    result, executed = execute(s, order_id, next_round(s, usd(41_000)), keeper)
    assert executed.size_delta == result.size_delta == -usd("0.5")
    assert size_of(s, trader) == 0
    assert s.order_book.order(order_id).size_delta == -usd(2)  # as committed


def test_reduce_only_market_order_is_clipped_too(s, trader, keeper):
    s.deposit(trader, 20_000)
    s.trade(trader, BTC, usd(1))
    order_id = s.commit_order(trader, BTC, -usd(5), 0, reduce_only=True)
    _, executed = execute(s, order_id, next_round(s), keeper)
    assert executed.size_delta == -usd(1)
    assert size_of(s, trader) == 0


@pytest.mark.parametrize("after", [-usd(1), -usd(2)], ids=["closed", "flipped"])
def test_reduce_only_order_with_nothing_left_to_reduce_is_cancelled_and_the_keeper_paid(s, trader, keeper, after):
    s.set_order_params(execution_fee=FEE)
    s.deposit(trader, 20_000)
    s.trade(trader, BTC, usd(1))
    order_id = s.commit_order(trader, BTC, -usd(1), 0, KIND_STOP_LOSS, usd(39_000))
    s.trade(trader, BTC, after)
    position = size_of(s, trader)
    cash = s.vault.cash(trader, 0)
    result, cancelled = execute(s, order_id, next_round(s, usd(38_900)), keeper)
    assert not result.filled
    assert (cancelled.reason, cancelled.fee, cancelled.fee_to) == ("order: nothing left to reduce", FEE, keeper)
    assert size_of(s, trader) == position == usd(1) + after
    assert s.vault.cash(trader, 0) == cash  # the fee was escrowed at the commit
    assert s.vault.cash(keeper, 0) == FEE


@pytest.mark.parametrize("kind", [KIND_MARKET, KIND_LIMIT], ids=["market", "limit"])
def test_order_failing_its_margin_at_execution_is_cancelled_with_the_reason_and_the_keeper_paid(
    s, trader, keeper, kind
):
    """Margin is checked at execution, not at the commit: 1 BTC (about 2,000 USD of initial
    margin at 5 %) on 1,000 USD commits, then is cancelled at its round (a limit order too: it
    does not keep resting, as it does for its acceptable price)."""
    s.set_order_params(execution_fee=FEE)
    s.deposit(trader, 1_000)
    if kind == KIND_MARKET:
        order_id = s.commit_order(trader, BTC, usd(1))
        round_id = next_round(s)
    else:
        order_id = s.commit_order(trader, BTC, usd(1), MAX_UINT, KIND_LIMIT, usd(39_000))
        round_id = next_round(s, usd(38_900))
    result, cancelled = execute(s, order_id, round_id, keeper)
    assert not result.filled
    assert (cancelled.reason, cancelled.fee, cancelled.fee_to) == ("exchange: insufficient margin", FEE, keeper)
    assert size_of(s, trader) == 0
    assert s.vault.cash(trader, 0) == usd(1_000) - FEE
    assert s.vault.cash(keeper, 0) == FEE
    assert state_of(s, order_id) == STATE_CANCELLED


# ============================================================================================
# the fee escrow and the ledger
# ============================================================================================


def test_fee_is_escrowed_at_commit_paid_to_the_executor_and_refunded_on_cancellation(s, trader, keeper):
    """With a 5 USD fee: each commit moves 5 USD of cash into the vault's order escrow; an
    execution pays it to the executor's sub-account 0; the owner's cancellation of a trigger
    order refunds it. The ledger identity (cash + system balances + escrow == tokens) holds
    after every step."""
    s.set_order_params(execution_fee=FEE)
    s.deposit(trader, 1_000, sub_account=1)
    s.check_invariants()
    market = s.commit_order(trader, BTC, usd("0.01"), sub_account=1)
    assert (s.vault.cash(trader, 1), s.vault.order_escrow_cash()) == (usd(995), FEE)
    s.check_invariants()
    limit = s.commit_order(trader, BTC, usd("0.01"), MAX_UINT, KIND_LIMIT, usd(30_000), sub_account=1)
    assert (s.vault.cash(trader, 1), s.vault.order_escrow_cash()) == (usd(990), 2 * FEE)
    s.check_invariants()
    execute(s, market, next_round(s), keeper)
    assert (s.vault.cash(keeper, 0), s.vault.order_escrow_cash()) == (FEE, FEE)
    s.check_invariants()
    cash = s.vault.cash(trader, 1)
    s.cancel_order(trader, limit)
    assert (s.vault.cash(trader, 1), s.vault.order_escrow_cash()) == (cash + FEE, 0)
    s.check_invariants()


def test_orders_keep_the_fee_they_were_committed_with(s, trader, keeper):
    s.set_order_params(execution_fee=FEE)
    s.deposit(trader, 1_000)
    order_id = s.commit_order(trader, BTC, usd("0.01"))
    s.set_order_params(execution_fee=7 * WAD)
    _, executed = execute(s, order_id, next_round(s), keeper)
    assert executed.fee == FEE
    assert s.vault.cash(keeper, 0) == FEE
    assert s.vault.order_escrow_cash() == 0
    s.check_invariants()


def test_fee_above_the_cash_is_refused_at_commit(s, trader):
    s.set_order_params(execution_fee=FEE)
    s.deposit(trader, 4)
    with pytest.raises(ModelRevert, match="^vault: execution fee above cash$"):
        s.commit_order(trader, BTC, usd("0.01"))
    assert (s.vault.cash(trader, 0), s.vault.order_escrow_cash()) == (usd(4), 0)
    s.deposit(trader, 1)
    s.commit_order(trader, BTC, usd("0.01"))
    assert (s.vault.cash(trader, 0), s.vault.order_escrow_cash()) == (0, FEE)


# ============================================================================================
# events
# ============================================================================================


def test_events_carry_the_amounts(s, trader, keeper):
    s.set_order_params(execution_fee=FEE)
    s.deposit(trader, 20_000, sub_account=2)
    s.trade(trader, BTC, usd(1), sub_account=2)
    commit_time = s.now
    order_id = s.commit_order(trader, BTC, -usd(1), usd(38_000), KIND_STOP_LOSS, usd(39_000), sub_account=2)
    [committed] = events(s, "OrderCommitted")
    assert tuple(committed)[1:] == (
        order_id,
        trader,
        2,
        BTC,
        -usd(1),
        usd(38_000),
        KIND_STOP_LOSS,
        usd(39_000),
        True,  # stop-losses are always reduce-only
        commit_time + 1,
        commit_time + 365 * 86400,
        FEE,
    )
    assert committed._fields[1:] == (
        "order_id", "owner", "sub_account", "market_id", "size_delta", "acceptable_price", "kind",
        "trigger_price", "reduce_only", "not_before", "expiry", "fee",
    )
    crossing = next_round(s, usd(38_900))
    published = s.now
    result, executed = execute(s, order_id, crossing, keeper)
    [trade] = events(s, "Trade")
    assert tuple(executed)[1:] == (
        order_id, trader, keeper, 2, BTC, -usd(1), trade.fill_price, usd(38_900), published, FEE,
    )
    assert trade.fill_price == result.fill_price == fill_price(usd(38_900), usd(1), -usd(1))
    assert trade.size_delta == -usd(1)

    # a cancellation at execution, one by the owner, one of an expired order
    market = s.commit_order(trader, BTC, usd(100), sub_account=2)  # far beyond the margin
    _, cancelled = execute(s, market, next_round(s), keeper)
    assert tuple(cancelled)[1:] == (market, trader, keeper, 2, "exchange: insufficient margin", FEE, keeper)
    limit = s.commit_order(trader, BTC, usd(1), MAX_UINT, KIND_LIMIT, usd(30_000), sub_account=2)
    s.cancel_order(trader, limit)
    [cancelled] = events(s, "OrderCancelled")
    assert tuple(cancelled)[1:] == (limit, trader, trader, 2, "cancelled by owner", FEE, trader)
    market = s.commit_order(trader, BTC, usd(1), sub_account=2)
    s.warp(3600)
    s.cancel_order(keeper, market)
    [cancelled] = events(s, "OrderCancelled")
    assert tuple(cancelled)[1:] == (market, trader, keeper, 2, "expired", FEE, keeper)


def test_order_params_are_bounded_owner_only_and_logged(s, stranger):
    with boa.env.prank(stranger), boa.reverts("ownable: caller is not the owner"):
        s.order_book.set_order_params((1, 3600, 0, 16))
    for params, reason in (
        ((0, 3600, 0, 16), "order: min order delay out of bounds"),
        ((601, 3600, 0, 16), "order: min order delay out of bounds"),
        ((10, 10, 0, 16), "order: max order age out of bounds"),
        ((1, 2 * 86400 + 1, 0, 16), "order: max order age out of bounds"),
        ((1, 3600, 50 * WAD + 1, 16), "order: execution fee above the cap"),
        ((1, 3600, 0, 0), "order: max open orders out of bounds"),
        ((1, 3600, 0, 17), "order: max open orders out of bounds"),
    ):
        with boa.env.prank(s.owner), boa.reverts(reason):
            s.order_book.set_order_params(params)
        with pytest.raises(ModelRevert, match=f"^{reason}$"):
            s.model.set_order_params(OrderParams(*params))
    assert tuple(s.order_book.order_params()) == (1, 3600, 0, 16)
    s.set_order_params(min_order_delay=600, max_order_age=2 * 86400, execution_fee=50 * WAD, max_open_orders=1)
    [logged] = [e for e in s.order_book.get_logs() if type(e).__name__ == "OrderParamsSet"]
    assert tuple(logged)[1:] == (600, 2 * 86400, 50 * WAD, 1)
    assert tuple(s.order_book.order_params()) == (600, 2 * 86400, 50 * WAD, 1)


# ============================================================================================
# slots and ids
# ============================================================================================


def test_an_ended_orders_slot_is_reused_with_a_new_id_and_the_old_id_is_unknown(s, trader, keeper):
    s.deposit(trader, 10_000, sub_account=7)
    first = s.commit_order(trader, BTC, usd("0.1"), sub_account=7)
    assert decode_order_id(first) == (trader.lower(), 7, 0, 1)
    round_id = next_round(s)
    execute(s, first, round_id, keeper)
    second = s.commit_order(trader, BTC, -usd("0.1"), sub_account=7)
    assert second == order_id_of(trader, 7, 0, 2) != first
    assert s.order_book.open_orders(trader, 7) == [second]
    with boa.reverts("order: unknown order"):
        s.order_book.order(first)
    with pytest.raises(ModelRevert, match="^order: unknown order$"):
        s.model.order(first)
    with pytest.raises(ModelRevert, match="^order: unknown order$"):
        s.cancel_order(trader, first)
    with boa.env.prank(keeper), boa.reverts("order: unknown order"):
        s.order_book.execute_order(first, [round_id])
    # a second open order takes the next slot
    third = s.commit_order(trader, BTC, usd("0.1"), MAX_UINT, KIND_LIMIT, usd(30_000), sub_account=7)
    assert decode_order_id(third)[2:] == (1, 1)
    assert s.order_book.open_orders(trader, 7) == [second, third]


def test_a_limit_order_cancelled_after_its_crossing_still_opens_at_that_crossing(s, trader, keeper):
    """Found by the order machine (tests/fuzz/test_orders_stateful.py): a buy limit crosses at a
    round, its owner cancels it a second later, and a keeper executes it at the crossing round,
    which was published before the cancellation (DESIGN.md, Orders: the cancellation does not
    take back a crossing already published). The fill opens the position, as the model says;
    the open-interest cap's check reverted every such late execution that grows a position,
    with an empty reason."""
    s.deposit(trader, 20_000)
    order_id = s.commit_order(trader, BTC, usd(1), MAX_UINT, KIND_LIMIT, usd(39_000))
    next_round(s, usd(40_000))
    crossing = next_round(s, usd(38_950))
    s.warp(1)
    s.cancel_order(trader, order_id)
    _, executed = execute(s, order_id, crossing, keeper)
    assert executed.index_price == usd(38_950)
    assert size_of(s, trader) == usd(1)


def limit_orders(s: System, who: str, count: int) -> list[int]:
    """`count` resting buy limits far below the index."""
    return [s.commit_order(who, BTC, usd("0.01"), MAX_UINT, KIND_LIMIT, usd(30_000 - i)) for i in range(count)]


def test_a_cancelled_trigger_order_holds_its_slot_for_max_order_age(s, trader):
    """16 open orders fill the 16 slots. The owner cancels one: 15 are open, but the 17th order
    finds no slot, because the cancelled one can still be executed at a round published before
    its cancellation. max_order_age later its slot is free again (with a new id)."""
    s.deposit(trader, 10_000)
    ids = limit_orders(s, trader, MAX_OPEN_ORDERS)
    assert [decode_order_id(i)[2] for i in ids] == list(range(16))
    s.cancel_order(trader, ids[5])
    assert len(s.order_book.open_orders(trader, 0)) == 15
    with pytest.raises(ModelRevert) as refusal:
        limit_orders(s, trader, 1)
    assert refusal.value.reason == "order: every slot is held by a cancelled order that can still execute; retry later"
    s.warp(3600)
    s.publish(BTC)
    with pytest.raises(ModelRevert, match="^order: every slot is held"):
        limit_orders(s, trader, 1)
    s.warp(1)
    [reused] = limit_orders(s, trader, 1)
    assert decode_order_id(reused)[2:] == (5, 2)
    with boa.reverts("order: unknown order"):
        s.order_book.order(ids[5])
    assert len(s.order_book.open_orders(trader, 0)) == 16


# ============================================================================================
# a market priced by three feeds
# ============================================================================================


@pytest.fixture
def med(s):
    """MED: three 8-decimal feeds at 40,000, 40,100 and 39,900 (index: their median, 40,000),
    which may differ by at most 1 %."""
    answers = [40_000, 40_100, 39_900]
    with boa.env.prank(s.owner):
        feeds = [s.aggregators[BTC].deployer.deploy(FEED_DECIMALS, f"feed {i}", a * 10**8) for i, a in enumerate(answers)]
        p = default_params()
        s.exchange.list_market(MED, "MED-USD", [(f.address, HEARTBEAT) for f in feeds], WAD // 100, params_tuple(p))
    s.model.list_market(MED, p)
    s.model.index[MED] = usd(40_000)
    assert s.exchange.index_price(MED) == usd(40_000)
    s.med_feeds = feeds
    s.warp(1)
    publish_feeds(s, feeds, answers)  # a second round on each feed (an execution round needs one before it)
    return feeds


def publish_feeds(s: System, feeds, answers) -> list[int]:
    """A new round on each of `feeds` (USD answers); their round ids. The model's MED index
    follows the median of the latest answers."""
    with boa.env.prank(s.owner):
        for feed, answer in zip(feeds, answers):
            feed.update_answer(answer * 10**8)
    s.model.index[MED] = sorted(f.latestAnswer() for f in s.med_feeds)[1] * FEED_TO_WAD
    assert s.exchange.index_price(MED) == s.model.index[MED]
    return [feed.latestRound() for feed in feeds]


def med_round_price(feeds, round_ids) -> RoundPrice:
    """IndexOracle.round_price for three 8-decimal feeds, computed from the aggregators."""
    rounds = [f.getRoundData(r) for f, r in zip(feeds, round_ids)]
    previous = [f.getRoundData(r - 1) for f, r in zip(feeds, round_ids)]
    median = lambda values: sorted(values)[1] * FEED_TO_WAD  # noqa: E731
    return RoundPrice(
        median([r[1] for r in rounds]),
        median([r[1] for r in previous]),
        min(r[3] for r in rounds),
        max(r[3] for r in previous),
    )


def execute_med(s: System, order_id: int, round_ids, executor: str):
    """OrderBook.execute_order on MED on both sides (System.execute_order knows single feeds)."""
    s.accounts.add((executor, 0))
    expected, filled = s.mirror(
        executor,
        lambda: s.model.execute_order(order_id, executor, med_round_price(s.med_feeds, round_ids)),
        lambda: s.order_book.execute_order(order_id, round_ids),
    )
    s.last_logs = s.order_book.get_logs()
    assert filled == expected.filled
    s.assert_order_matches(order_id)
    s.assert_account_matches(*s.model.order(order_id).account)
    return expected


def test_three_feed_market_executes_at_the_median_of_the_named_rounds(s, med, trader, keeper):
    s.deposit(trader, 10_000)
    order_id = s.commit_order(trader, MED, usd("0.5"))
    s.warp(1)
    # two feeds publish after the delay; the third's latest round is from before the commit
    early = [med[0].latestRound(), med[1].latestRound(), med[2].latestRound()]
    first_two = publish_feeds(s, med[:2], [40_100, 40_200])
    with pytest.raises(ModelRevert, match="^order: round published before the order's delay ended at"):
        execute_med(s, order_id, first_two + early[2:], keeper)
    third = publish_feeds(s, med[2:], [40_150])
    rounds = first_two + third
    # one round id per feed: two or four are refused by the oracle (the model names no rounds)
    for wrong in (rounds[:2], rounds + rounds[:1], []):
        with boa.env.prank(keeper), boa.reverts("oracle: one round id per feed expected"):
            s.order_book.execute_order(order_id, wrong)
    assert state_of(s, order_id) == STATE_OPEN
    # a later round on one feed is not that feed's first after the delay
    s.warp(1)
    later = publish_feeds(s, med[:1], [40_120])
    with pytest.raises(ModelRevert, match="^order: not the first round after the order's delay$"):
        execute_med(s, order_id, later + rounds[1:], keeper)

    result = execute_med(s, order_id, rounds, keeper)
    [executed] = events(s, "OrderExecuted")
    assert executed.index_price == usd(40_150)  # the median of 40,100, 40,200 and 40,150
    assert executed.fill_price == result.fill_price == fill_price(usd(40_150), 0, usd("0.5"))
    assert executed.round_published == s.now - 1  # the earliest of the named rounds
    assert size_of(s, trader, MED) == usd("0.5")


# ============================================================================================
# batches: several orders in one transaction, the ones that cannot execute skipped
# ============================================================================================


def test_a_batch_executes_what_it_can_and_skips_the_rest_without_reverting(s, trader, other_trader, keeper, stranger):
    s.set_order_params(execution_fee=FEE)
    for who in (trader, other_trader, stranger):
        s.deposit(who, 10_000)
    buy = s.commit_order(trader, BTC, usd("0.1"))
    sell = s.commit_order(other_trader, BTC, -usd("0.2"))
    taken = s.commit_order(stranger, BTC, usd("0.05"))
    round_id = next_round(s)
    later = next_round(s)
    # another keeper was faster for one of them
    execute(s, taken, round_id, stranger)
    keeper_cash = s.vault.cash(keeper, 0)
    with boa.env.prank(keeper):
        acted = s.order_book.execute_orders([taken, buy, sell, sell], [[round_id], [round_id], [later], [round_id]])
    # skipped: the order already executed, and `sell` at a round that is not its first; then
    # `sell` at its first round
    assert acted == 2
    executed = [e for e in s.order_book.get_logs() if type(e).__name__ == "OrderExecuted"]
    assert [e.order_id for e in executed] == [buy, sell]
    assert all(e.executor == keeper for e in executed)
    for order_id in (buy, sell):
        s.model.execute_order(order_id, keeper, s.round_price(BTC, round_id))
    for order_id in (buy, sell):
        s.assert_order_matches(order_id)
    s.accounts.add((keeper, 0))
    assert s.vault.cash(keeper, 0) == keeper_cash + 2 * FEE
    assert size_of(s, trader) == usd("0.1") and size_of(s, other_trader) == -usd("0.2")
    s.assert_account_matches(trader)
    s.assert_account_matches(other_trader)
    s.check_invariants()


def test_a_batch_needs_one_list_of_rounds_per_order_and_only_it_calls_the_batch_step(s, trader, keeper):
    s.deposit(trader, 1_000)
    order_id = s.commit_order(trader, BTC, usd("0.01"))
    round_id = next_round(s)
    with boa.reverts("order: one list of round ids per order expected"), boa.env.prank(keeper):
        s.order_book.execute_orders([order_id], [])
    with boa.reverts("order: only execute_orders calls this"), boa.env.prank(keeper):
        s.order_book.execute_order_in_batch(order_id, [round_id], keeper)
    assert state_of(s, order_id) == STATE_OPEN
