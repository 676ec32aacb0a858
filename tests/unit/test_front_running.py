"""Front-running and free options against two-step orders (DESIGN.md "Orders").

An oracle answer is public before it lands (a deviation threshold or a heartbeat makes it
predictable), so on an exchange that fills at once at the latest answer anyone who sees the
move coming opens before it and closes after it, at the liquidity vault's expense. Two-step
orders close that door: an order fills at the first round published at least
`min_order_delay` after its commit, so an order committed before the answer lands fills at
the answer itself. These tests play the attacker with the default fees of
config/markets.json (maker 0.0002, taker 0.0006, skew scale 100,000 BTC) and show, against the
contracts and the reference model at once (tests/system.py), that every round trip nets <= 0
and the liquidity vault loses nothing — while the same attack through the model's atomic
`ExchangeModel.trade` would have profited (the counterfactual).

The second half covers the options a trader or a keeper might try to keep: executing a market
order at a later round than the first qualifying one, escaping a triggered stop-loss by
cancelling it after the trigger round, and dodging a margin failure by withdrawing while a
market order is pending.
"""

from __future__ import annotations

import copy
from decimal import Decimal

import boa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from perpdex.model import ModelRevert
from perpdex.orders import KIND_STOP_LOSS, STATE_CANCELLED, STATE_EXECUTED
from system import FEED_DECIMALS, System, fresh

BTC = 0
WAD = 10**18
USD = WAD  # cash is WAD USD
FEED_TO_WAD = 10 ** (18 - FEED_DECIMALS)
ATTACKER_CAPITAL = 1_000_000  # USD
EXECUTION_FEE = WAD // 2  # config/markets.json: 0.5 USD

pytestmark = pytest.mark.ignore_isolation


def usd(amount) -> int:
    """An exact decimal amount (USD, price or size) in WAD."""
    value = Decimal(str(amount)) * WAD
    assert value == value.to_integral_value()
    return int(value)


P0 = usd(40_000)  # the latest answer when the attack starts


# ============================================================================================
# fixtures and helpers
# ============================================================================================


@pytest.fixture(scope="module")
def world(world):
    """The session's deployment with BTC at config/markets.json's fees and skew scale, 10M USD
    of liquidity vault capital, and the config's 0.5 USD execution fee."""
    with fresh(world) as s:
        s.set_market_params(BTC, maker_fee=usd("0.0002"), taker_fee=usd("0.0006"), skew_scale=usd(100_000))
        s.lp_deposit(boa.env.generate_address("lp"), 10_000_000)
        s.set_order_params(execution_fee=EXECUTION_FEE)
        yield s


def events(logs, name: str) -> list:
    return [e for e in logs if type(e).__name__ == name]


def land(s: System, price: int, market_id: int = BTC) -> int:
    """A new oracle round at `price` (WAD) on the market's feed; its round id."""
    assert price % FEED_TO_WAD == 0
    with boa.env.prank(s.owner):
        s.aggregators[market_id].update_answer(price // FEED_TO_WAD)
    s.model.index[market_id] = price
    return s.aggregators[market_id].latestRound()


def moved(price: int, bps: int) -> int:
    """`price` moved by `bps` basis points, on the feed's 8-decimal grid."""
    return price * (10_000 + bps) // 10_000 // FEED_TO_WAD * FEED_TO_WAD


def start(s: System, attacker: str) -> None:
    """The attacker's capital deposited and a fresh round at P0 (the round before the move)."""
    s.deposit(attacker, ATTACKER_CAPITAL)
    s.warp(60)
    land(s, P0)


def execute(s: System, order_id: int, round_id: int, executor: str):
    """Execute an order as `executor`; returns (the model's ExecutionResult, the OrderExecuted event)."""
    result = s.execute_order(order_id, round_id, executor=executor)
    assert result.filled, result.reason
    [executed] = events(s.last_logs, "OrderExecuted")
    return result, executed


def lv_value(s: System) -> int:
    value = s.exchange.liquidity_vault_value()
    assert value == s.model.liquidity_vault_value()
    return value


def atomic_round_trip(s: System, who: str, size: int, before: int, after: int) -> tuple[int, int]:
    """The counterfactual on a copy of the model: fill atomically at the latest answer
    `before`, then close atomically once `after` has landed. Returns (the trader's net cash,
    the liquidity vault's change in value)."""
    model = copy.deepcopy(s.model)
    account = (who, 0)
    model.index[BTC] = before
    cash, lv = model.cash_of(account), model.liquidity_vault_value()
    model.trade(account, BTC, size, 2**256 - 1 if size > 0 else 0)
    model.index[BTC] = after
    model.trade(account, BTC, -size, 0 if size > 0 else 2**256 - 1)
    assert model.position(account, BTC).size == 0
    return model.cash_of(account) - cash, model.liquidity_vault_value() - lv


# ============================================================================================
# the attacker who knows the next answer
# ============================================================================================

MOVES = [50, 100, -50, -100]  # basis points: Chainlink's 0.5 % deviation threshold, and 1 %
SIZES = [usd(10), usd(100), usd(350)]  # 0.4M to 14M USD of notional on 1M USD of collateral


def open_before_close_after(s: System, attacker: str, size: int, answer: int) -> list:
    """Commit the opening order while P0 is the latest answer, let `answer` land, execute the
    order at the first round it may (the attacker is its own keeper), then commit the closing
    order and execute it at the next round. Returns the OrderExecuted events."""
    opening = s.commit_order(attacker, BTC, size)
    # the round already published (P0) cannot execute an order committed after it
    with pytest.raises(ModelRevert, match="round published before the order's delay ended"):
        s.execute_order(opening, s.aggregators[BTC].latestRound(), executor=attacker)
    s.warp(1)
    landed = land(s, answer)
    _, opened = execute(s, opening, landed, attacker)
    closing = s.commit_order(attacker, BTC, -size)
    s.warp(1)
    heartbeat = s.publish(BTC)
    _, closed = execute(s, closing, heartbeat, attacker)
    return [opened, closed]


def both_committed_before(s: System, attacker: str, size: int, answer: int) -> list:
    """Commit the opening and the closing orders together before `answer` lands: both fill at
    the answer."""
    opening = s.commit_order(attacker, BTC, size)
    closing = s.commit_order(attacker, BTC, -size)
    s.warp(1)
    landed = land(s, answer)
    return [execute(s, opening, landed, attacker)[1], execute(s, closing, landed, attacker)[1]]


def answer_lands_within_the_delay(s: System, attacker: str, size: int, answer: int) -> list:
    """Commit in the very second the answer lands: that round is too early for the order, which
    fills at the next round (a heartbeat at the same answer)."""
    opening = s.commit_order(attacker, BTC, size)
    landed = land(s, answer)
    with pytest.raises(ModelRevert, match="round published before the order's delay ended"):
        s.execute_order(opening, landed, executor=attacker)
    s.warp(1)
    heartbeat = s.publish(BTC)
    _, opened = execute(s, opening, heartbeat, attacker)
    closing = s.commit_order(attacker, BTC, -size)
    s.warp(1)
    _, closed = execute(s, closing, s.publish(BTC), attacker)
    return [opened, closed]


STRATEGIES = {
    "open-before-close-after": open_before_close_after,
    "both-committed-before": both_committed_before,
    "answer-within-the-delay": answer_lands_within_the_delay,
}


@pytest.mark.parametrize("size", SIZES, ids=["10BTC", "100BTC", "350BTC"])
@pytest.mark.parametrize("move", MOVES, ids=["up0.5%", "up1%", "down0.5%", "down1%"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_front_runner_who_knows_the_next_answer_nets_nothing(system, attacker, strategy, move, size):
    s = system
    start(s, attacker)
    answer = moved(P0, move)
    side = 1 if move > 0 else -1  # with the move: long before a rise, short before a fall
    cash, lv = s.vault.cash(attacker, 0), lv_value(s)

    fills = STRATEGIES[strategy](s, attacker, side * size, answer)

    # every fill was priced at the answer the attacker knew in advance, never at P0
    assert [e.index_price for e in fills] == [answer, answer]
    assert [e.size_delta for e in fills] == [side * size, -side * size]
    assert tuple(s.exchange.position_state(attacker, 0, BTC))[0] == 0
    net = s.vault.cash(attacker, 0) - cash  # the attacker executed its own orders: fees to itself
    assert s.vault.cash(attacker, 0) == s.model.cash_of((attacker, 0))
    assert net <= 0, f"the attacker netted {net / USD:,.2f} USD"
    # it lost at least the trading fees: the taker fee on the way in, the maker fee on the way out
    opened, closed = fills
    assert -net >= (size * opened.fill_price * 6 + size * closed.fill_price * 2) // 10_000 // WAD
    assert lv_value(s) >= lv, "the liquidity vault lost to the attacker"

    # the counterfactual: the same knowledge on an atomic exchange fills at P0 and profits
    profit, lv_change = atomic_round_trip(s, attacker, side * size, P0, answer)
    assert profit > 0
    assert lv_change < 0
    # size x move (scaled by the premium: up for a long, down for a short) less 0.08 % of fees;
    # the price impact of the round trip cancels
    impact = size * WAD // (2 * usd(100_000))
    gain = size * abs(answer - P0) // WAD * (WAD - impact) // WAD
    fees = size * max(P0, answer) // WAD * (WAD + impact) // WAD * 8 // 10_000
    assert profit >= gain - fees


def test_counterfactual_a_million_usd_nets_tens_of_thousands_per_round_trip_on_the_atomic_path(system, attacker):
    """The scale of what orders prevent: 1M USD of collateral, 350 BTC (14M USD, near the most
    the 5 % initial margin allows once the open's price impact is counted) against a 0.5 %
    oracle lag nets about 59,000 USD per round trip on the atomic path, taken from the
    liquidity vault; through orders the same round trip pays its fees."""
    s = system
    start(s, attacker)
    profit, lv_change = atomic_round_trip(s, attacker, usd(350), P0, moved(P0, 50))
    assert profit > 58_000 * USD
    assert lv_change < -58_000 * USD
    cash = s.vault.cash(attacker, 0)
    open_before_close_after(s, attacker, usd(350), moved(P0, 50))
    # the taker fee on the way in, the maker fee on the way out: 0.08 % of ~14.2M USD
    assert s.vault.cash(attacker, 0) - cash < -11_000 * USD


def test_a_holder_who_knows_a_drop_is_coming_cannot_exit_before_it(system, attacker):
    """The other use of a known answer: a long commits its exit before a known 1 % drop lands.
    The exit fills at the drop; on the atomic path it would have escaped the loss."""
    s = system
    start(s, attacker)
    size = usd(100)
    opening = s.commit_order(attacker, BTC, size)
    s.warp(1)
    execute(s, opening, s.publish(BTC), attacker)
    cash = s.vault.cash(attacker, 0)
    drop = moved(P0, -100)
    # the counterfactual: an atomic exit at the latest answer, P0
    model, account = copy.deepcopy(s.model), (attacker, 0)
    model.trade(account, BTC, -size, 0)
    escape = model.cash_of(account) - cash
    exit_order = s.commit_order(attacker, BTC, -size)
    s.warp(1)
    landed = land(s, drop)
    _, closed = execute(s, exit_order, landed, attacker)
    assert closed.index_price == drop
    loss = s.vault.cash(attacker, 0) - cash
    # the exit realised the whole drop (1 % of 4M USD) and its fee
    assert loss <= -(size * (P0 - drop) // WAD)
    # the atomic exit would have lost only its fee
    assert escape > loss + 39_000 * USD
    assert escape > -size * P0 // WAD * 3 // 10_000


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(usd("0.001"), usd(350)),
    move=st.integers(20, 150) | st.integers(-150, -20),
    strategy=st.sampled_from(list(STRATEGIES)),
)
@example(size=usd(350), move=50, strategy="open-before-close-after")
@example(size=usd("0.001"), move=-20, strategy="both-committed-before")
def test_no_size_or_move_makes_front_running_pay(world, attacker, size, move, strategy):
    """Any size, any known move of 0.2 % to 1.5 % either way, any of the strategies: the two-step
    round trip nets <= 0 and the liquidity vault keeps its value, while the atomic round trip
    at P0 would have profited."""
    with fresh(world) as s:
        start(s, attacker)
        answer = moved(P0, move)
        side = 1 if move > 0 else -1
        cash, lv = s.vault.cash(attacker, 0), lv_value(s)
        STRATEGIES[strategy](s, attacker, side * size, answer)
        assert s.vault.cash(attacker, 0) - cash <= 0
        assert lv_value(s) >= lv
        profit, _ = atomic_round_trip(s, attacker, side * size, P0, answer)
        assert profit > 0
        s.check_invariants()
        s.assert_system_matches()


# ============================================================================================
# no free option
# ============================================================================================


def test_market_order_executes_at_the_first_qualifying_round_never_a_later_one(system, trader, keeper):
    """Round R is the first published after the delay; by the time anyone executes, R+1 (a
    better price for the buyer) is already visible. Neither the trader nor a keeper can pick
    R+1: the order fills at R's price."""
    s = system
    s.deposit(trader, 10_000)
    s.warp(60)
    land(s, P0)
    order_id = s.commit_order(trader, BTC, usd(1))
    s.warp(1)
    first = land(s, usd(40_100))
    s.warp(1)
    later = land(s, usd(39_000))
    for who in (trader, keeper):
        with pytest.raises(ModelRevert, match="^order: not the first round after the order's delay$"):
            s.execute_order(order_id, later, executor=who)
    # the round before the delay ended is refused too
    with pytest.raises(ModelRevert, match="^order: round published before the order's delay ended at"):
        s.execute_order(order_id, first - 1, executor=keeper)
    result, executed = execute(s, order_id, first, keeper)
    assert executed.index_price == usd(40_100)
    assert executed.fill_price == result.fill_price
    # 1 BTC into a zero skew of a 100,000 BTC scale: 40,100 x (1 + 1 / 200,000), rounded up
    assert executed.fill_price == usd(40_100) + -(-usd(40_100) // 200_000)
    assert tuple(s.exchange.position_state(trader, 0, BTC))[:2] == (usd(1), executed.fill_price)
    assert s.vault.cash(keeper, 0) == EXECUTION_FEE


def stop_loss_setup(s: System, trader: str, size: int, deposit: int) -> int:
    """A long of `size` BTC opened at 40,000 with `deposit` USD, and its stop-loss at 39,000;
    returns the stop-loss's order id."""
    s.deposit(trader, deposit)
    s.warp(60)
    land(s, P0)
    s.trade(trader, BTC, size)
    return s.commit_order(trader, BTC, -size, 0, KIND_STOP_LOSS, usd(39_000))


def test_cancelling_a_triggered_stop_loss_after_its_round_does_not_escape_it(system, trader, keeper):
    """The stop-loss's crossing round R lands; the trader, hoping for a rebound, cancels (fee
    refunded). The cancellation counts only for rounds published after it: a crossing published
    later cannot execute the order, but R still can (a late execution, the fee charged again
    and paid to the keeper)."""
    s = system
    order_id = stop_loss_setup(s, trader, usd(1), 10_000)
    s.warp(10)
    crossing = land(s, usd(38_900))
    s.warp(1)
    cash = s.vault.cash(trader, 0)
    s.cancel_order(trader, order_id)
    [cancelled] = events(s.last_logs, "OrderCancelled")
    assert (cancelled.reason, cancelled.fee, cancelled.fee_to) == ("cancelled by owner", EXECUTION_FEE, trader)
    assert s.vault.cash(trader, 0) == cash + EXECUTION_FEE  # refunded
    assert s.order_book.open_orders(trader, 0) == []

    # the price rebounds and crosses again after the cancellation: that crossing cannot execute it
    s.warp(1)
    land(s, usd(39_500))
    s.warp(1)
    later_crossing = land(s, usd(38_800))
    with pytest.raises(ModelRevert, match="^order: round published after the order's expiry or cancellation$"):
        s.execute_order(order_id, later_crossing, executor=keeper)

    # R itself still executes it: the position is closed at R's index
    cash = s.vault.cash(trader, 0)
    result, executed = execute(s, order_id, crossing, keeper)
    assert executed.index_price == usd(38_900)
    assert executed.size_delta == -usd(1)
    assert executed.fee == EXECUTION_FEE
    assert s.exchange.position_state(trader, 0, BTC)[0] == 0
    assert s.vault.cash(keeper, 0) == EXECUTION_FEE
    trade = s.model.last_trade
    assert s.vault.cash(trader, 0) == cash + trade.realized_pnl - trade.fee - trade.funding_paid - EXECUTION_FEE
    assert s.order_book.order(order_id).state == STATE_EXECUTED
    # executed once: a second try is refused
    with pytest.raises(ModelRevert, match="^order: not open$"):
        s.execute_order(order_id, crossing, executor=keeper)


def test_a_leveraged_trader_cannot_escape_a_triggered_stop_loss_by_cancelling_with_no_free_collateral(
    system, trader, keeper
):
    """A 16x long whose stop-loss crossing leaves it with no free collateral (equity below the
    initial requirement) cancels after the crossing: the late execution still closes it at the
    crossing round, charging the fee from what the close frees."""
    s = system
    order_id = stop_loss_setup(s, trader, usd(10), 25_000)
    s.warp(10)
    crossing = land(s, usd(38_900))
    assert s.exchange.withdrawable(trader, 0) == 0
    s.warp(1)
    s.cancel_order(trader, order_id)
    assert s.exchange.withdrawable(trader, 0) == 0  # the refund does not free anything either
    s.warp(1)
    _, executed = execute(s, order_id, crossing, keeper)
    assert executed.index_price == usd(38_900)
    assert s.exchange.position_state(trader, 0, BTC)[0] == 0
    assert s.vault.cash(keeper, 0) == EXECUTION_FEE


def test_a_cancellation_back_running_the_crossing_round_in_its_own_second_does_not_escape_it(system, trader, keeper):
    """The owner sees the crossing round in the mempool and places its cancellation right after
    it, in the same block: that round was not published after the cancellation, so it still
    executes the order."""
    s = system
    order_id = stop_loss_setup(s, trader, usd(1), 10_000)
    s.warp(10)
    crossing = land(s, usd(38_900))
    s.cancel_order(trader, order_id)  # same block time as the crossing round
    assert s.order_book.order(order_id).cancelled_at == s.aggregators[BTC].getRoundData(crossing)[3]
    s.warp(1)
    _, executed = execute(s, order_id, crossing, keeper)
    assert (executed.index_price, executed.size_delta) == (usd(38_900), -usd(1))
    assert s.exchange.position_state(trader, 0, BTC)[0] == 0


def test_a_late_execution_with_nothing_left_to_reduce_changes_nothing(system, trader, keeper):
    """After cancelling its triggered stop-loss the owner closes the position itself (a market
    order, at the first round after its commit). The crossing round can no longer execute the
    stop-loss: nothing is left to reduce, and a cancelled order is not cancelled twice, so the
    execution reverts and nobody is paid the fee again."""
    s = system
    order_id = stop_loss_setup(s, trader, usd(1), 10_000)
    s.warp(10)
    crossing = land(s, usd(38_900))
    s.warp(1)
    s.cancel_order(trader, order_id)
    s.trade(trader, BTC, -usd(1))
    cash, keeper_cash = s.vault.cash(trader, 0), s.vault.cash(keeper, 0)
    with pytest.raises(ModelRevert, match="^order: nothing left to reduce$"):
        s.execute_order(order_id, crossing, executor=keeper)
    assert (s.vault.cash(trader, 0), s.vault.cash(keeper, 0)) == (cash, keeper_cash)
    assert s.order_book.order(order_id).state == STATE_CANCELLED


def test_cancelling_a_stop_loss_before_its_crossing_does_prevent_it(system, trader, keeper):
    s = system
    order_id = stop_loss_setup(s, trader, usd(1), 10_000)
    s.warp(10)
    s.cancel_order(trader, order_id)
    s.warp(1)
    crossing = land(s, usd(38_900))
    with pytest.raises(ModelRevert, match="^order: round published after the order's expiry or cancellation$"):
        s.execute_order(order_id, crossing, executor=keeper)
    assert s.exchange.position_state(trader, 0, BTC)[0] == usd(1)
    assert s.order_book.order(order_id).state == STATE_CANCELLED


PENDING = "^vault: a market order is pending; withdraw after it executes or expires$"


def test_no_withdrawal_while_a_market_order_is_pending(system, trader, keeper):
    """A trader commits a 20x long; an adverse answer is coming. Pulling collateral so the order
    fails for margin (losing only the fee) is refused; the order fills with the collateral it
    was committed with, and the free collateral can be withdrawn afterwards."""
    s = system
    s.deposit(trader, 10_000)
    s.warp(60)
    land(s, P0)
    size = usd("4.5")  # 180,000 USD of notional: 9,000 USD of initial margin at 5 %
    order_id = s.commit_order(trader, BTC, size)
    assert s.order_book.pending_market_orders(trader, 0) == 1
    for amount in (s.to_token(2_000), s.to_token(1)):
        with pytest.raises(ModelRevert, match=PENDING):
            s.withdraw(trader, amount)
    s.warp(1)
    landed = land(s, usd(40_400))  # the adverse answer (the buyer pays more)
    _, executed = execute(s, order_id, landed, keeper)
    assert executed.size_delta == size
    assert s.order_book.pending_market_orders(trader, 0) == 0
    free = s.exchange.withdrawable(trader, 0)
    assert free > 0
    s.withdraw(trader, free // 10**12)
    assert s.exchange.withdrawable(trader, 0) < 10**12


def test_withdrawal_works_again_once_the_pending_market_order_expired(system, trader, keeper):
    """An order that nobody executed in time expires; from its expiry the collateral is free
    again (the order can never execute), before anyone cancels it."""
    s = system
    s.deposit(trader, 10_000)
    order_id = s.commit_order(trader, BTC, usd(1))
    expiry = s.order_book.order(order_id).expiry
    s.warp(expiry - s.now - 1)
    with pytest.raises(ModelRevert, match=PENDING):
        s.withdraw(trader, s.to_token(1_000))
    s.warp(1)
    assert s.order_book.pending_market_orders(trader, 0) == 0
    s.withdraw(trader, s.to_token(1_000))
    assert s.vault.cash(trader, 0) == usd(9_000) - EXECUTION_FEE
    # still open, and anyone cancels it for the fee
    s.cancel_order(keeper, order_id)
    assert s.vault.cash(keeper, 0) == EXECUTION_FEE
