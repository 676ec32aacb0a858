"""Trading through the exchange: funding, fill prices, fees, margin, slippage, oracle faults,
caps, pause, admin and the vault's ledger.

Trades are market orders: `System.trade` commits one, publishes the round it executes at and
executes it as a keeper; an order the exchange refuses at execution is cancelled with the
exchange's reason (`OrderCancelled`), one the order book refuses is never committed.
Almost every action goes through `System` (tests/system.py), which runs it on the contracts and
on the reference model and compares the two to the wei; the conftest `system` fixture gives each
test a fresh snapshot of `world` and asserts DESIGN.md's invariants 1-3 and full model parity on
teardown. This module's `world` adds the liquidity vault's capital; hypothesis examples take
their own `fresh` copy of it.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import boa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from perpdex.fixed_point import ceil_div, floor_div
from perpdex.fixed_point import sign as fp_sign
from perpdex.model import ModelRevert
from perpdex.orders import KIND_MARKET, STATE_CANCELLED, STATE_OPEN
from system import FEED_DECIMALS, HEARTBEAT, OrderCancelled, System, default_params, fresh, params_tuple

BTC, ETH = 0, 1
WAD = 10**18
MAX_UINT = 2**256 - 1
USDC = 10**6  # one token of the 6-decimal collateral
FEED_TO_WAD = 10 ** (18 - FEED_DECIMALS)

pytestmark = pytest.mark.ignore_isolation


def usd(amount) -> int:
    """An exact decimal amount (USD, price or size) in WAD."""
    value = Decimal(str(amount)) * WAD
    assert value == value.to_integral_value()
    return int(value)


# ============================================================================================
# fixtures and helpers
# ============================================================================================


@pytest.fixture(scope="module")
def world(world):
    """The session's deployment plus the liquidity vault's capital, for this module."""
    with fresh(world) as s:
        s.lp_deposit(boa.env.generate_address("lp"), 1_000_000)  # the market maker's capital
        yield s


def events(logs, name: str) -> list:
    return [e for e in logs if type(e).__name__ == name]


def trade_logged(s: System, who, market_id: int, size: int, acceptable: int | None = None, sub: int = 0):
    """`System.trade` (a market order committed, then executed by the keeper) with the logs of
    its execution: the order book's events and the exchange's, emitted in that transaction."""
    expected = s.trade(who, market_id, size, acceptable, sub_account=sub)
    logs = s.last_logs
    [executed] = events(logs, "OrderExecuted")
    assert (executed.owner, executed.sub_account, executed.size_delta) == (who, sub, size)
    assert executed.fill_price == expected.fill_price
    return expected, logs


def touch(s: System, market_id: int) -> list:
    """`exchange.touch_market` on both sides; returns the logs."""
    s.exchange.touch_market(market_id)
    logs = s.exchange.get_logs()
    s.model._accrue(market_id)
    return logs


def set_index(s: System, market_id: int, index: int) -> None:
    """Publish an exact WAD index (a multiple of 1e10) on the market's aggregator and the model."""
    assert index % FEED_TO_WAD == 0
    with boa.env.prank(s.owner):
        s.aggregators[market_id].update_answer(index // FEED_TO_WAD)
    s.model.index[market_id] = index


def refresh_prices(s: System) -> None:
    """Republish every market's current price (a fresh round), e.g. after a long warp."""
    for market_id in s.aggregators:
        set_index(s, market_id, s.model.index[market_id])


def warp(s: System, seconds: int) -> None:
    s.warp(seconds)
    refresh_prices(s)


def requirements(s: System, who: str, sub_account: int) -> tuple[int, int]:
    """(initial, maintenance) requirement of a sub-account, from `Exchange.account_state`."""
    return tuple(s.exchange.account_state(who, sub_account))[2:]


def set_market_params(s: System, market_id: int, **overrides):
    """System.set_market_params (skew_scale in steps of at most 2x); the last change's logs."""
    s.set_market_params(market_id, **overrides)
    return s.exchange.get_logs()


def set_global_params(s: System, **overrides) -> None:
    g = replace(s.model.globals, **overrides)
    with boa.env.prank(s.owner):
        s.exchange.set_global_params(
            g.insurance_fee_share, g.protocol_fee_share, g.keeper_min_reward, g.keeper_reward_share
        )
    s.model.globals = g


def system_cash(s: System) -> tuple:
    return s.vault.liquidity_cash(), s.vault.insurance_cash(), s.vault.fee_cash(), s.vault.funding_pool_cash()


def state(s: System) -> tuple:
    """Everything a trade can change, read without the oracle (the executor's sub-account and
    the escrowed execution fees included: a refused order must not pay anyone)."""
    accounts = sorted(s.accounts | {(s.executor, 0)})
    markets = sorted(s.model.params)
    return (
        [tuple(s.exchange.position_state(w, sub, m)) for w, sub in accounts for m in markets],
        [s.vault.cash(w, sub) for w, sub in accounts],
        [s.exchange.open_markets(w, sub) for w, sub in accounts],
        [tuple(s.exchange.open_interest(m)) for m in markets],
        [tuple(s.exchange.funding_state(m)) for m in markets],
        [s.exchange.open_notional_sum(m) for m in markets],
        system_cash(s),
        s.vault.order_escrow_cash(),
        s.usdc.balanceOf(s.vault.address),
    )


# ============================================================================================
# funding: the seed example of DESIGN.md
# ============================================================================================


def test_seed_example_longs_pay_shorts_and_liquidity_vault_receive(system, trader, other_trader):
    s = system
    s.deposit(trader, 100_000)
    s.deposit(other_trader, 50_000)
    s.trade(trader, BTC, 20 * WAD)  # fills at 40,400
    s.trade(other_trader, BTC, -usd(7.5))  # fills at 40,650: traders are net long 12.5
    assert s.exchange.skew(BTC) == usd(12.5)
    assert s.exchange.mark_price(BTC) == usd(40_500) == s.model.mark_price(BTC)
    assert s.exchange.funding_rate(BTC) == usd(0.0125) == s.model.funding_rate(BTC)

    warp(s, 8 * 3600)
    # 8 h at +1.25 % of 40,000: 500 USD per BTC; the long owes it, the short is owed it
    assert s.exchange.funding_per_unit(BTC) == usd(500)
    assert s.exchange.position(trader, 0, BTC)[3] == usd(10_000)
    assert s.exchange.position(other_trader, 0, BTC)[3] == -usd(3_750)

    lv_cash, pool_cash = s.vault.liquidity_cash(), s.vault.funding_pool_cash()
    logs = touch(s, BTC)
    [accrued] = events(logs, "FundingAccrued")
    assert (accrued.market_id, accrued.funding_rate, accrued.funding_per_unit) == (BTC, usd(0.0125), usd(500))
    assert accrued.liquidity_vault_funding == -usd(6_250)  # the LV's -12.5 receives 12.5 x 500
    assert s.vault.liquidity_cash() - lv_cash == usd(6_250)
    assert s.vault.funding_pool_cash() - pool_cash == -usd(6_250)
    s.assert_system_matches()

    # the long touches its position (sells 1): its 20 x 500 is charged to its cash
    cash = s.vault.cash(trader, 0)
    expected, logs = trade_logged(s, trader, BTC, -WAD)
    [t] = events(logs, "Trade")
    assert not events(logs, "FundingAccrued")  # already accrued in this block
    assert t.funding_paid == expected.funding_paid == usd(10_000)
    assert (t.fill_price, t.realized_pnl, t.fee) == (usd(40_480), usd(80), usd(8.096))
    assert s.vault.cash(trader, 0) - cash == usd(80) - usd(8.096) - usd(10_000)

    # the short closes: receives 7.5 x 500, so its cash rises despite the fee
    cash = s.vault.cash(other_trader, 0)
    expected, logs = trade_logged(s, other_trader, BTC, usd(7.5))
    [t] = events(logs, "Trade")
    assert t.funding_paid == expected.funding_paid == -usd(3_750)
    assert (t.fill_price, t.realized_pnl, t.fee, t.new_size) == (usd(40_610), usd(300), usd(304.575), 0)
    assert s.vault.cash(other_trader, 0) - cash == usd(300) - usd(304.575) + usd(3_750) > 0

    # paid (10,000) == received (6,250 + 3,750): nothing left in the pool
    assert s.vault.funding_pool_cash() == pool_cash == 0


def test_negative_skew_shorts_pay_through_a_trade(system, trader, other_trader):
    """Perp below the index: the rate is negative, shorts pay; a trade accrues the market."""
    s = system
    s.deposit(trader, 100_000)
    s.deposit(other_trader, 10_000)
    s.trade(trader, BTC, -usd(12.5))
    assert s.exchange.mark_price(BTC) == usd(39_500)
    assert s.exchange.funding_rate(BTC) == -usd(0.0125)

    warp(s, 4 * 3600)
    assert s.exchange.position(trader, 0, BTC)[3] == usd(3_125)  # 12.5 x 250
    lv_cash = s.vault.liquidity_cash()
    expected, logs = trade_logged(s, other_trader, BTC, WAD // 10)  # someone else trades
    [accrued] = events(logs, "FundingAccrued")
    assert (accrued.funding_rate, accrued.funding_per_unit, accrued.liquidity_vault_funding) == (
        -usd(0.0125),
        -usd(250),
        -usd(3_125),
    )
    # the LV (long 12.5) received 3,125 in that trade, besides the buyer's fee share and PnL
    [t] = events(logs, "Trade")
    to_lv = t.fee - ceil_div(t.fee * s.model.globals.insurance_fee_share, WAD)
    assert s.vault.liquidity_cash() - lv_cash == usd(3_125) + to_lv - t.realized_pnl

    cash = s.vault.cash(trader, 0)
    expected, logs = trade_logged(s, trader, BTC, usd(12.5))
    [t] = events(logs, "Trade")
    assert t.funding_paid == usd(3_125)
    assert s.vault.cash(trader, 0) - cash == t.realized_pnl - t.fee - usd(3_125)


def test_funding_rate_is_clamped_at_the_cap(system, trader):
    s = system
    s.deposit(trader, 3_000_000)
    s.trade(trader, BTC, 200 * WAD)  # premium 20 %, cap 10 %
    assert s.exchange.funding_rate(BTC) == s.model.params[BTC].max_funding_rate == WAD // 10
    warp(s, 8 * 3600)
    assert s.exchange.position(trader, 0, BTC)[3] == 200 * 4_000 * WAD  # 10 % of 40,000 each
    s.trade(trader, BTC, -200 * WAD)


def test_set_market_params_settles_funding_at_the_old_rate_first(system, trader):
    s = system
    s.deposit(trader, 100_000)
    s.trade(trader, BTC, usd(12.5))
    warp(s, 8 * 3600)
    lv_cash = s.vault.liquidity_cash()
    logs = set_market_params(s, BTC, max_funding_rate=WAD // 1_000)  # new cap 0.1 %
    [accrued] = events(logs, "FundingAccrued")
    assert (accrued.funding_rate, accrued.funding_per_unit) == (usd(0.0125), usd(500))
    assert s.vault.liquidity_cash() - lv_cash == usd(6_250)
    assert s.exchange.funding_rate(BTC) == WAD // 1_000
    [changed] = events(logs, "MarketParamsSet")
    assert tuple(changed.params) == params_tuple(s.model.params[BTC])


# ============================================================================================
# fill price: path independence
# ============================================================================================


def _fill_orders(base: System, trader, orders: list[int]) -> tuple[int, int, tuple, int]:
    """Run `orders` on a copy of `base`; (sum of size x fill, sum of fees, position, next fill)."""
    with fresh(base) as s:
        cost = fees = 0
        for size in orders:
            result = s.trade(trader, BTC, size)
            cost += size * result.fill_price
            fees += result.fee
        s.check_invariants()
        s.assert_system_matches()
        return cost, fees, tuple(s.exchange.position_state(trader, 0, BTC)), s.exchange.fill_price(BTC, WAD)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start_skew=st.integers(-40 * WAD, 40 * WAD).filter(lambda x: x != 0),
    total=st.integers(10**12, 20 * WAD),
    orders=st.integers(2, 5),
    side=st.sampled_from([1, -1]),
)
@example(start_skew=5 * WAD, total=8 * WAD, orders=4, side=-1)  # crosses zero skew
@example(start_skew=-usd(12.5), total=10 * WAD, orders=5, side=1)
@example(start_skew=usd(3.333333333333333333), total=7 * WAD + 1, orders=3, side=1)
def test_fill_price_is_path_independent(world, trader, other_trader, start_skew, total, orders, side):
    """One order of N costs what N/k orders of k cost, to rounding: each fill is rounded by
    less than 1 wei of price against the trader, so the notionals differ by less than 1 wei
    per base unit traded (|diff| < N / 1e18 wei)."""
    piece = total // orders
    total = piece * orders
    with fresh(world) as s:
        s.deposit(other_trader, 2_000_000)
        s.deposit(trader, 2_000_000)
        if start_skew:
            s.trade(other_trader, BTC, start_skew)
        single_cost, single_fees, single_position, single_next = _fill_orders(s, trader, [side * total])
        split_cost, split_fees, split_position, split_next = _fill_orders(s, trader, [side * piece] * orders)

    # sizes x WAD prices, in WAD x WAD units (1 wei of notional = 1e18 of these): the exact
    # costs are equal and each of the fills is off by less than 1 wei of price
    assert abs(split_cost - single_cost) < total
    assert split_position[0] == single_position[0] == side * total
    # the cost basis rounds up once per order on top of that
    assert abs(split_position[1] - single_position[1]) <= orders + total // WAD + 1
    assert split_next == single_next  # the market ends at the same skew, so the same price
    crosses_zero_skew = start_skew * side < 0 and total > abs(start_skew)
    if not crosses_zero_skew:
        # one fee rate, proportional to the cost: equal up to one rounding per order
        assert abs(split_fees - single_fees) <= orders + 1


# ============================================================================================
# increase, reduce, close, flip; fees and their split
# ============================================================================================


def test_increase_reduce_close_flip(system, trader):
    s = system
    # no funding: an order placed after a price change fills a second later (at the first round
    # after its delay) and this test holds the fills and fees to exact figures
    set_market_params(s, BTC, max_funding_rate=0)
    s.deposit(trader, 50_000)
    insurance_share = s.model.globals.insurance_fee_share

    def check(size, fill, fee, realized, new_size, new_basis):
        cash, (lv, insurance, fees, pool) = s.vault.cash(trader, 0), system_cash(s)
        expected, logs = trade_logged(s, trader, BTC, size)
        [t] = events(logs, "Trade")
        assert (t.owner, t.sub_account, t.market_id, t.size_delta) == (trader, 0, BTC, size)
        assert (t.fill_price, t.fee, t.realized_pnl, t.funding_paid) == (fill, fee, realized, 0)
        assert (t.new_size, t.new_open_notional) == (new_size, new_basis)
        assert tuple(s.exchange.position_state(trader, 0, BTC))[:2] == (new_size, new_basis)
        # trader: realized PnL minus the fee; the liquidity vault is the counterparty
        to_insurance = ceil_div(fee * insurance_share, WAD)
        assert s.vault.cash(trader, 0) - cash == realized - fee
        assert s.vault.insurance_cash() - insurance == to_insurance
        assert s.vault.liquidity_cash() - lv == fee - to_insurance - realized
        assert (s.vault.fee_cash(), s.vault.funding_pool_cash()) == (fees, pool)
        [settled] = events(logs, "Settled")
        assert (settled.trader, settled.liquidity, settled.insurance) == (
            realized - fee,
            fee - to_insurance - realized,
            to_insurance,
        )

    # open long 1 at skew 0: 40,000 x (1 + 1/2,000); taker 10 bp
    check(WAD, usd(40_020), usd(40.02), 0, WAD, usd(40_020))
    # increase by 1 at skew 1: 40,000 x (1 + 3/2,000); entry becomes the average 40,040
    check(WAD, usd(40_060), usd(40.06), 0, 2 * WAD, usd(80_080))
    assert s.exchange.position(trader, 0, BTC)[1] == usd(40_040)

    set_index(s, BTC, usd(41_000))
    assert s.exchange.position(trader, 0, BTC)[2] == usd(82_000) - usd(80_080)  # unrealized at the index
    # reduce by 0.5 at skew 2: fill 41,071.75, maker 2 bp (it reduces |skew|); PnL on half the basis... of 0.5/2
    check(-usd(0.5), usd(41_071.75), usd(4.107175), usd(515.875), usd(1.5), usd(60_060))
    assert s.exchange.position(trader, 0, BTC)[1] == usd(40_040)  # a reduce keeps the entry price
    # close the remaining 1.5 at skew 1.5: fill 41,030.75
    check(-usd(1.5), usd(41_030.75), usd(12.309225), usd(1_486.125), 0, 0)
    assert tuple(s.exchange.position(trader, 0, BTC)) == (0, 0, 0, 0)
    assert s.exchange.open_markets(trader, 0) == 0

    # flip: long 1 at 41,020.5, then sell 3 at skew 1: 1 is maker (reduces the skew to 0), 2 taker
    check(WAD, usd(41_020.5), usd(41.0205), 0, WAD, usd(41_020.5))
    check(-3 * WAD, usd(40_979.5), usd(90.1549), -usd(41), -2 * WAD, -usd(81_959))
    assert s.exchange.position(trader, 0, BTC)[:2] == (-2 * WAD, usd(40_979.5))
    assert s.exchange.open_markets(trader, 0) == 1 << BTC


def test_maker_taker_split_and_fee_shares(system, trader, other_trader):
    s = system
    set_global_params(s, insurance_fee_share=WAD // 5, protocol_fee_share=WAD // 10)
    s.deposit(other_trader, 20_000)
    s.deposit(trader, 50_000)
    s.trade(other_trader, BTC, 5 * WAD)  # skew +5

    lv, insurance, fees, _ = system_cash(s)
    expected, logs = trade_logged(s, trader, BTC, -8 * WAD)
    [t] = events(logs, "Trade")
    # fill 40,000 x (1 + (10 - 8)/2,000) = 40,040; 5 reduce |skew| (maker 2 bp), 3 add (taker 10 bp)
    assert t.fill_price == usd(40_040)
    assert t.fee == usd(160.16) == expected.fee  # all-taker would be 320.32
    assert s.vault.insurance_cash() - insurance == usd(32.032)  # 20 %
    assert s.vault.fee_cash() - fees == usd(16.016)  # 10 %
    assert s.vault.liquidity_cash() - lv == usd(112.112)  # the rest, no PnL realized
    [settled] = events(logs, "Settled")
    assert (settled.insurance, settled.fees, settled.liquidity, settled.trader) == (
        usd(32.032),
        usd(16.016),
        usd(112.112),
        -usd(160.16),
    )


def test_fee_split_dust_goes_to_the_insurance_fund(system, trader):
    s = system
    third = WAD // 3
    set_global_params(s, insurance_fee_share=third, protocol_fee_share=third)
    s.deposit(trader, 10_000)
    lv, insurance, fees, _ = system_cash(s)
    expected, logs = trade_logged(s, trader, BTC, WAD + 7)  # an odd size: an odd fee
    fee = events(logs, "Trade")[0].fee
    to_insurance, to_protocol = ceil_div(fee * third, WAD), floor_div(fee * third, WAD)
    assert to_insurance == to_protocol + 1  # not a round split: the dust exists
    assert s.vault.insurance_cash() - insurance == to_insurance
    assert s.vault.fee_cash() - fees == to_protocol
    assert s.vault.liquidity_cash() - lv == fee - to_insurance - to_protocol


def test_trades_on_unknown_market_or_of_zero_size_revert(system, trader):
    s = system
    s.deposit(trader, 10_000)
    with pytest.raises(ModelRevert, match="order: unknown market"):
        s.commit_order(trader, 7, WAD)  # no feed to make a round on: the commit alone
    with pytest.raises(ModelRevert, match="order: zero size"):
        s.trade(trader, BTC, 0)
    with boa.reverts("exchange: unknown market"):
        s.exchange.fill_price(7, WAD)
    with boa.reverts("exchange: unknown market"):
        s.exchange.touch_market(7)
    assert s.exchange.open_markets(trader, 0) == 0
    assert s.order_book.open_orders(trader, 0) == []


def test_zero_size_on_unknown_market_reverts_with_the_models_reason(system, trader):
    """Both faults at once: the contract and the model name the same one first (the size), so
    `System.commit_order(who, unknown, 0)` compares equal reasons."""
    s = system
    with pytest.raises(ModelRevert) as revert:
        s.model.commit_order((trader, 0), 7, 0, 0, KIND_MARKET)
    assert revert.value.reason == "order: zero size"
    with boa.reverts(revert.value.reason), boa.env.prank(trader):
        s.order_book.commit_order(0, 7, 0, 0, KIND_MARKET, 0, False, 0)


# ============================================================================================
# margin
# ============================================================================================


def test_trade_beyond_initial_margin_is_cancelled_and_changes_nothing(system, trader):
    s = system
    s.deposit(trader, 1_000)
    before = state(s)
    with pytest.raises(OrderCancelled, match="exchange: insufficient margin"):
        s.trade(trader, BTC, WAD)  # 40,000 notional needs 2,000 at 5 %
    # the keeper's execution cancelled the order with the exchange's reason; nothing else moved
    [cancelled] = events(s.last_logs, "OrderCancelled")
    assert (cancelled.owner, cancelled.reason, cancelled.by) == (trader, "exchange: insufficient margin", s.executor)
    assert s.model.order(cancelled.order_id).state == STATE_CANCELLED
    assert not events(s.last_logs, "Trade") and s.order_book.open_orders(trader, 0) == []
    assert state(s) == before
    s.trade(trader, BTC, usd(0.4))  # 800 initial: fits
    assert s.exchange.position(trader, 0, BTC)[0] == usd(0.4)


def test_initial_covers_the_closing_impact_of_large_positions(system, trader, other_trader):
    """A 500 BTC position's own closing impact (25 % of its notional) and penalty count in both
    requirements, so the initial one (4.5 % + 25 % + 0.5 %) stays above maintenance (2.5 % +
    25 % + 0.5 %) and a fresh position is never liquidatable at the same index."""
    s = system
    s.deposit(trader, 11_000_000)
    with pytest.raises(ModelRevert, match="exchange: insufficient margin"):
        s.trade(trader, BTC, 500 * WAD)
    s.deposit(other_trader, 12_000_000)
    s.trade(other_trader, BTC, 500 * WAD)
    equity, initial, maintenance = s.exchange.account_state(other_trader, 0)[1:]
    assert (initial, maintenance) == (usd(6_000_000), usd(5_600_000))
    assert equity == usd(12_000_000) - usd(25_000) - usd(5_000_000)
    assert not s.liquidator.is_liquidatable(other_trader, 0)


def test_withdrawable_is_min_of_cash_and_equity_above_initial(system, trader):
    s = system
    s.deposit(trader, 5_000)
    s.trade(trader, BTC, WAD)  # fill 40,020, fee 40.02
    cash, equity, initial, _ = s.exchange.account_state(trader, 0)
    # initial: 4.5 % of 40,000 + the close impact 40,000 x 1 / 2,000 + the 0.5 % penalty
    assert (cash, equity, initial) == (usd(4_959.98), usd(4_939.98), usd(1_800 + 20 + 200))
    assert s.exchange.withdrawable(trader, 0) == min(cash, equity - initial) == usd(2_919.98)

    before = state(s)
    with boa.reverts("vault: insufficient free collateral"), boa.env.prank(trader):
        s.vault.withdraw(0, 2_919_980_001)  # one token unit too many
    assert state(s) == before
    s.withdraw(trader, 2_919_980_000)
    assert s.usdc.balanceOf(trader) == 2_919_980_000
    assert s.exchange.withdrawable(trader, 0) == 0  # equity == initial requirement now
    with boa.reverts("vault: insufficient free collateral"), boa.env.prank(trader):
        s.vault.withdraw(0, 1)

    # in profit, the cash is the binding side: unrealized profit is not withdrawable
    set_index(s, BTC, usd(50_000))
    cash, equity, initial, _ = s.exchange.account_state(trader, 0)
    assert equity - initial > cash == usd(2_040)
    assert s.exchange.withdrawable(trader, 0) == cash
    s.withdraw(trader, 2_040 * USDC)
    assert s.vault.cash(trader, 0) == 0
    assert s.exchange.position(trader, 0, BTC)[0] == WAD


def test_reduce_only_trades_allowed_below_initial_until_bankrupt(system, trader):
    s = system
    s.deposit(trader, 3_000)
    s.trade(trader, BTC, WAD)
    set_index(s, BTC, usd(39_000))
    cash, equity, initial, maintenance = s.exchange.account_state(trader, 0)
    assert maintenance < equity < initial  # 1,189.5 < 1,939.98 < 1,950
    assert s.exchange.withdrawable(trader, 0) == 0
    with pytest.raises(ModelRevert, match="exchange: insufficient margin"):
        s.trade(trader, BTC, WAD // 10)
    with boa.reverts("vault: insufficient free collateral"), boa.env.prank(trader):
        s.vault.withdraw(0, 1)

    set_index(s, BTC, usd(38_000))
    cash, equity, initial, maintenance = s.exchange.account_state(trader, 0)
    assert 0 < equity < maintenance
    s.trade(trader, BTC, -WAD // 4)  # reducing is allowed even below maintenance
    assert s.exchange.position(trader, 0, BTC)[0] == usd(0.75)

    set_index(s, BTC, usd(36_000))
    assert s.exchange.equity(trader, 0) < 0
    with pytest.raises(ModelRevert, match="exchange: trade would leave account bankrupt"):
        s.trade(trader, BTC, -WAD // 4)


def test_cross_margin_shares_collateral_isolated_sub_accounts_do_not(system, trader):
    s = system
    # cross: BTC and ETH in sub-account 0 share 3,500
    s.deposit(trader, 3_500, sub_account=0)
    s.trade(trader, BTC, WAD, sub_account=0)  # fill 40,020
    s.trade(trader, ETH, 10 * WAD, sub_account=0)  # fill 2,010
    # summed; each: ratio + close impact (size / 2,000 of the notional) + 0.5 % penalty
    assert tuple(requirements(s, trader, 0)) == (usd(2_020 + 1_100), usd(1_220 + 700))
    assert s.exchange.equity(trader, 0) == usd(3_500) - usd(40.02) - usd(20.1) - usd(20) - usd(100)
    assert s.exchange.open_markets(trader, 0) == (1 << BTC) | (1 << ETH)

    # isolated: BTC in sub-account 1, ETH in sub-account 2; sub 1's spare equity cannot help sub 2
    s.deposit(trader, 2_500, sub_account=1)
    s.trade(trader, BTC, WAD, sub_account=1)
    s.deposit(trader, 1_000, sub_account=2)
    with pytest.raises(ModelRevert, match="exchange: insufficient margin"):
        s.trade(trader, ETH, 10 * WAD, sub_account=2)
    s.trade(trader, ETH, 5 * WAD, sub_account=2)
    assert requirements(s, trader, 1)[0] == usd(2_020)
    assert requirements(s, trader, 2)[0] == usd(450 + 25 + 50)

    # ETH falls 100: the cross account and the ETH sub-account lose, the BTC one does not
    equities = [s.exchange.equity(trader, sub) for sub in range(3)]
    withdrawable_1 = s.exchange.withdrawable(trader, 1)
    set_index(s, ETH, usd(1_900))
    assert s.exchange.equity(trader, 0) == equities[0] - usd(1_000)
    assert s.exchange.equity(trader, 1) == equities[1]
    assert s.exchange.equity(trader, 2) == equities[2] - usd(500)
    assert s.exchange.withdrawable(trader, 0) == 0  # the ETH loss locks the cross account
    assert s.exchange.withdrawable(trader, 1) == withdrawable_1 > 0


def test_keeper_reward_floor_adds_once_per_account_with_positions(system, trader, other_trader):
    s = system
    s.deposit(trader, 10_000)
    s.trade(trader, BTC, WAD)
    s.trade(trader, ETH, WAD)
    s.deposit(other_trader, 10_000)  # no position
    before = requirements(s, trader, 0)
    set_global_params(s, keeper_min_reward=100 * WAD)
    after = requirements(s, trader, 0)
    # both requirements: once per account, not per market (initial >= maintenance by construction)
    assert after[0] == before[0] + 100 * WAD
    assert after[1] == before[1] + 100 * WAD
    assert tuple(requirements(s, other_trader, 0)) == (0, 0)


# ============================================================================================
# slippage
# ============================================================================================


@pytest.mark.parametrize("side", [1, -1], ids=["buy", "sell"])
def test_trade_beyond_acceptable_price_reverts_and_changes_nothing(system, trader, other_trader, side):
    s = system
    s.deposit(other_trader, 50_000)
    s.trade(other_trader, BTC, 3 * WAD)  # a skew, so a touch would accrue funding
    s.deposit(trader, 50_000)
    warp(s, 600)
    size = side * 2 * WAD
    price = s.exchange.fill_price(BTC, size)
    assert price == s.model.fill_price(BTC, size)
    worse = price - 1 if side > 0 else price + 1

    before = state(s)
    with pytest.raises(ModelRevert, match="exchange: price beyond acceptable"):
        s.trade(trader, BTC, size, acceptable_price=worse)
    assert state(s) == before  # positions, cash, OI and even the funding accumulator

    result = s.trade(trader, BTC, size, acceptable_price=price)  # exactly the bound fills
    assert result.fill_price == price
    assert s.exchange.position_state(trader, 0, BTC)[0] == size


# ============================================================================================
# oracle faults
# ============================================================================================


def _break_oracle(s: System, fault: str) -> None:
    """Make the market's next round faulty: a round that goes stale, or a non-positive answer."""
    agg = s.aggregators[BTC]
    if fault == "stale":
        s.publish(BTC)
        s.warp(HEARTBEAT + 1)  # no round since
        return
    answer = {"zero": 0, "negative": -40_000 * 10**FEED_DECIMALS}[fault]
    round_id = agg.latestRound() + 1
    with boa.env.prank(s.owner):
        agg.set_round(round_id, answer, s.now, s.now, round_id)


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("stale", "oracle: stale price"),
        ("zero", "oracle: non-positive price"),
        ("negative", "oracle: non-positive price"),
    ],
)
def test_oracle_fault_blocks_trading_not_idle_collateral(system, trader, other_trader, keeper, fault, reason):
    s = system
    s.set_order_params(max_order_age=2 * HEARTBEAT)  # the orders outlive a round gone stale
    s.deposit(trader, 10_000)
    s.trade(trader, BTC, WAD)
    s.deposit(other_trader, 1_000)  # no position
    # market orders committed before the fault: the faulty round is the first they may execute at
    orders = [s.commit_order(trader, BTC, size) for size in (WAD, -WAD // 2, -2 * WAD)]  # buy, reduce, flip
    orders.append(s.commit_order(other_trader, BTC, WAD))
    s.warp(s.model.order_params.min_order_delay)
    _break_oracle(s, fault)
    round_id = s.aggregators[BTC].latestRound()
    assert s.aggregators[BTC].getRoundData(round_id)[3] >= s.model.order(orders[0]).not_before

    s.accounts.add((keeper, 0))  # it cancels them below
    before = state(s)
    for order_id in orders:
        with boa.reverts(reason), boa.env.prank(s.executor):
            s.order_book.execute_order(order_id, [round_id])
        assert s.model.order(order_id).state == STATE_OPEN
        s.assert_order_matches(order_id)  # still open, its fee still escrowed
    with boa.reverts(reason):
        s.exchange.fill_price(BTC, WAD)
    with boa.reverts(reason):
        s.exchange.touch_market(BTC)
    assert state(s) == before

    # that round was their only one: they expire unfilled and anyone cancels them
    s.warp(s.model.order_params.max_order_age)
    for order_id in orders:
        s.cancel_order(keeper, order_id)
    assert state(s) == before
    # an account with a position needs the price to withdraw
    with boa.reverts(reason), boa.env.prank(trader):
        s.vault.withdraw(0, USDC)
    assert state(s) == before

    # accounts without positions keep full use of their collateral
    s.deposit(other_trader, 500)
    s.withdraw(other_trader, 1_500 * USDC)
    assert s.usdc.balanceOf(other_trader) == 1_500 * USDC
    s.deposit(keeper, 100)
    s.withdraw(keeper, 100 * USDC)
    assert s.vault.cash(other_trader, 0) == s.vault.cash(keeper, 0) == 0

    # fresh rounds bring everything back (a market order's round needs a valid round before it)
    refresh_prices(s)
    s.warp(1)
    s.trade(trader, BTC, -WAD)
    assert s.exchange.open_markets(trader, 0) == 0


# ============================================================================================
# caps
# ============================================================================================


def test_position_and_open_interest_caps(system, trader, other_trader):
    s = system
    set_market_params(s, BTC, max_position_size=2 * WAD, max_long_oi=3 * WAD, max_short_oi=3 * WAD)
    for who in (trader, other_trader):
        for sub in (0, 1):
            s.deposit(who, 50_000, sub_account=sub)

    s.trade(trader, BTC, 2 * WAD, sub_account=0)
    with pytest.raises(ModelRevert, match="exchange: position above max size"):
        s.trade(trader, BTC, WAD // 10, sub_account=0)
    # an order beyond the maximum position size is refused at commit
    with pytest.raises(ModelRevert, match=f"order: size above the market's max position size of {2 * WAD} "):
        s.trade(other_trader, BTC, -usd(2.5), sub_account=1)
    s.trade(trader, BTC, WAD, sub_account=1)  # long OI 3: at the cap
    with pytest.raises(ModelRevert, match="exchange: long open interest cap"):
        s.trade(other_trader, BTC, WAD // 2, sub_account=0)

    s.trade(other_trader, BTC, -2 * WAD, sub_account=0)  # short OI 2
    with pytest.raises(ModelRevert, match="exchange: short open interest cap"):
        s.trade(other_trader, BTC, -usd(1.5), sub_account=1)
    # a flip to short 1.5 would take short OI to 3.5 (an order of 3.5 needs a maximum size above it)
    set_market_params(s, BTC, max_position_size=4 * WAD)
    with pytest.raises(ModelRevert, match="exchange: short open interest cap"):
        s.trade(trader, BTC, -usd(3.5), sub_account=0)
    assert tuple(s.exchange.open_interest(BTC)) == (3 * WAD, 2 * WAD)

    # caps lowered below the open interest: reducing still works, increasing does not
    set_market_params(s, BTC, max_long_oi=WAD)
    s.trade(trader, BTC, -WAD, sub_account=0)
    with pytest.raises(ModelRevert, match="exchange: long open interest cap"):
        s.trade(trader, BTC, WAD // 10, sub_account=1)
    assert tuple(s.exchange.open_interest(BTC)) == (2 * WAD, 2 * WAD)


# ============================================================================================
# pause
# ============================================================================================


def test_guardian_pause_is_reduce_only(system, trader, keeper, attacker):
    s = system
    s.deposit(trader, 10_000)
    s.trade(trader, BTC, WAD)

    with boa.reverts("exchange: caller is not the guardian"), boa.env.prank(attacker):
        s.exchange.set_paused(True)
    with boa.reverts("ownable: caller is not the owner"), boa.env.prank(attacker):
        s.exchange.set_guardian(attacker)
    with boa.env.prank(s.owner):
        s.exchange.set_guardian(keeper)
    assert s.exchange.guardian() == keeper

    with boa.env.prank(keeper):
        s.exchange.set_paused(True)
    [paused] = events(s.exchange.get_logs(), "PauseSet")
    assert (paused.paused, paused.by) == (True, keeper)
    assert s.exchange.paused()
    s.model.paused = True
    # pause and fee settings share a storage slot: changing one keeps the other
    assert s.exchange.insurance_fee_share() == WAD // 5
    set_global_params(s, insurance_fee_share=WAD // 4)
    assert s.exchange.paused()
    assert s.exchange.insurance_fee_share() == WAD // 4

    for market_id, size in ((BTC, WAD // 10), (ETH, WAD), (BTC, -2 * WAD)):  # increase, open, flip
        with pytest.raises(ModelRevert, match="exchange: paused, reduce-only"):
            s.trade(trader, market_id, size)
    s.trade(trader, BTC, -WAD // 2)  # reduce
    s.trade(trader, BTC, -WAD // 2)  # close
    cash = s.vault.cash(trader, 0)
    assert s.exchange.withdrawable(trader, 0) == cash
    s.withdraw(trader, cash // 10**12)
    assert s.usdc.balanceOf(trader) == cash // 10**12

    with boa.reverts("exchange: caller is not the guardian"), boa.env.prank(attacker):
        s.exchange.set_paused(False)
    with boa.reverts("exchange: only the owner unpauses"), boa.env.prank(keeper):
        s.exchange.set_paused(False)  # the guardian only tightens risk
    with boa.env.prank(s.owner):
        s.exchange.set_paused(False)
    s.model.paused = False
    s.deposit(trader, 5_000)
    s.trade(trader, ETH, WAD)


# ============================================================================================
# admin
# ============================================================================================

NON_OWNER_CALLS = {
    "list_market": lambda s, who: s.exchange.list_market(
        2, "SOL-USD", [(s.aggregators[BTC].address, HEARTBEAT)], 0, params_tuple(default_params())
    ),
    "set_market_params": lambda s, who: s.exchange.set_market_params(
        BTC, params_tuple(default_params(taker_fee=0, maker_fee=0))
    ),
    "set_global_params": lambda s, who: s.exchange.set_global_params(0, WAD, 0, 0),
    "set_guardian": lambda s, who: s.exchange.set_guardian(who),
    "exchange.transfer_ownership": lambda s, who: s.exchange.transfer_ownership(who),
    "vault.set_exchange": lambda s, who: s.vault.set_exchange(who),
    "vault.set_fee_receiver": lambda s, who: s.vault.set_fee_receiver(who),
}


def _admin_state(s: System) -> tuple:
    return (
        s.exchange.market_count(),
        tuple(s.exchange.market_params(BTC)),
        s.exchange.insurance_fee_share(),
        s.exchange.protocol_fee_share(),
        s.exchange.guardian(),
        s.exchange.pending_owner(),
        s.vault.exchange(),
        s.vault.fee_receiver(),
    )


@pytest.mark.parametrize("call", sorted(NON_OWNER_CALLS))
def test_admin_functions_are_owner_only(system, attacker, call):
    s = system
    before = _admin_state(s)
    with boa.reverts("ownable: caller is not the owner"), boa.env.prank(attacker):
        NON_OWNER_CALLS[call](s, attacker)
    assert _admin_state(s) == before


BAD_PARAMS = [
    (dict(skew_scale=0), "exchange: bad skew scale"),
    (dict(skew_scale=2**120 + 1), "exchange: bad skew scale"),
    (dict(max_funding_rate=10**17 + 1), "exchange: funding rate cap too high"),
    (dict(maker_fee=WAD // 500), "exchange: maker fee not in (0, taker fee]"),  # 20 bp > 10 bp
    (dict(maker_fee=0), "exchange: maker fee not in (0, taker fee]"),  # it bounds liquidation capacity
    (dict(taker_fee=10**16 + 1), "exchange: fee above cap"),
    (dict(initial_margin_ratio=WAD + 1), "exchange: initial margin above 100%"),
    (dict(maintenance_margin_ratio=0), "exchange: maintenance margin not in (0, 20%]"),
    (
        dict(maintenance_margin_ratio=WAD // 5 + 1, initial_margin_ratio=WAD),
        "exchange: maintenance margin not in (0, 20%]",
    ),
    (dict(liquidation_penalty_ratio=WAD // 50 + 1), "exchange: liquidation penalty above 2%"),
    (
        dict(maintenance_margin_ratio=WAD * 45 // 1_000),  # 4.5 % + 0.5 % == 5 %
        "exchange: maintenance + penalty must be below initial margin",
    ),
    (dict(initial_margin_ratio=WAD // 40), "exchange: maintenance + penalty must be below initial margin"),
    (dict(max_long_oi=2**120 + 1), "exchange: open interest cap too high"),
    (dict(max_short_oi=2**120 + 1), "exchange: open interest cap too high"),
    (dict(max_position_size=0), "exchange: bad max position size"),
    (dict(max_position_size=2**120 + 1), "exchange: bad max position size"),
    (dict(max_liquidation_size=0), "exchange: bad max liquidation size"),
    (dict(max_liquidation_size=2**120 + 1), "exchange: bad max liquidation size"),
]


@pytest.mark.parametrize("overrides, reason", BAD_PARAMS, ids=[r.split(": ")[1] + f" {o}" for o, r in BAD_PARAMS])
def test_market_params_hard_bounds(system, overrides, reason):
    s = system
    bad = params_tuple(default_params(**overrides))
    before = _admin_state(s)
    with boa.reverts(reason), boa.env.prank(s.owner):
        s.exchange.set_market_params(BTC, bad)
    with boa.reverts(reason), boa.env.prank(s.owner):
        s.exchange.list_market(2, "SOL-USD", [(s.aggregators[BTC].address, HEARTBEAT)], 0, bad)
    assert _admin_state(s) == before


def test_market_params_accept_the_bounds_themselves(system, trader):
    s = system
    logs = set_market_params(
        s,
        BTC,
        skew_scale=2**120,
        max_funding_rate=10**17,
        maker_fee=10**16,
        taker_fee=10**16,
        initial_margin_ratio=WAD,
        maintenance_margin_ratio=WAD // 5,
        liquidation_penalty_ratio=WAD // 50,
        max_long_oi=2**120,
        max_short_oi=2**120,
        max_position_size=2**120,
        max_liquidation_size=1,
    )
    [changed] = events(logs, "MarketParamsSet")
    assert tuple(changed.params) == tuple(s.exchange.market_params(BTC)) == params_tuple(s.model.params[BTC])
    s.deposit(trader, 100_000)
    s.trade(trader, BTC, WAD)  # 100 % initial margin, 1 % fee
    # 100 % of the notional + the 2 % penalty + the (tiny, at this skew_scale) close impact
    impact = -(-usd(40_000) * WAD // (2 * 2**120))
    assert requirements(s, trader, 0)[0] == usd(40_000) + usd(800) + impact


@pytest.mark.parametrize(
    "shares, reason",
    [
        ((WAD // 2, WAD // 2 + 1, 0, 0), "exchange: fee shares above 100%"),
        ((0, 0, 1_000 * WAD + 1, 0), "exchange: keeper reward floor too high"),
        ((0, 0, 0, WAD // 2 + 1), "exchange: keeper share above 50%"),
    ],
)
def test_global_params_hard_bounds(system, shares, reason):
    s = system
    before = _admin_state(s)
    with boa.reverts(reason), boa.env.prank(s.owner):
        s.exchange.set_global_params(*shares)
    assert _admin_state(s) == before


@pytest.mark.parametrize(
    "market_id, symbol, reason",
    [
        (32, "SOL-USD", "exchange: market id out of range"),
        (BTC, "BTC2-USD", "exchange: market already listed"),
        (2, "", "exchange: empty symbol"),
    ],
)
def test_list_market_checks(system, market_id, symbol, reason):
    s = system
    with boa.reverts(reason), boa.env.prank(s.owner):
        s.exchange.list_market(
            market_id, symbol, [(s.aggregators[BTC].address, HEARTBEAT)], 0, params_tuple(default_params())
        )
    assert s.exchange.market_count() == 2


def test_owner_lists_a_new_market_and_it_trades(system, trader):
    s = system
    s.list_market(2, "SOL-USD", 100)
    [listed] = events(s.exchange.get_logs(), "MarketListed")
    assert (listed.market_id, listed.symbol) == (2, "SOL-USD")
    assert s.exchange.market_count() == 3
    assert s.exchange.index_price(2) == usd(100)
    s.deposit(trader, 1_000)
    s.trade(trader, 2, 10 * WAD)
    assert s.exchange.position(trader, 0, 2)[0] == 10 * WAD


def test_two_step_ownership_transfer(system, lp, attacker):
    s = system
    new_owner = lp
    with boa.env.prank(s.owner):
        s.exchange.transfer_ownership(new_owner)
    assert (s.exchange.owner(), s.exchange.pending_owner()) == (s.owner, new_owner)
    with boa.reverts("ownable_2step: caller is not the new owner"), boa.env.prank(attacker):
        s.exchange.accept_ownership()
    with boa.env.prank(s.owner):  # the old owner is still in charge until acceptance
        s.exchange.set_guardian(s.owner)

    with boa.env.prank(new_owner):
        s.exchange.accept_ownership()
    assert (s.exchange.owner(), s.exchange.pending_owner()) == (new_owner, "0x" + "00" * 20)
    with boa.reverts("ownable: caller is not the owner"), boa.env.prank(s.owner):
        s.exchange.set_guardian(attacker)
    with boa.env.prank(new_owner):
        s.exchange.set_guardian(attacker)
    assert s.exchange.guardian() == attacker


# ============================================================================================
# vault
# ============================================================================================


def test_zero_amounts_revert(system, trader):
    s = system
    s.fund(trader, 10)
    with boa.reverts("vault: zero amount"), boa.env.prank(trader):
        s.vault.deposit(0, 0)
    with boa.reverts("vault: zero amount"), boa.env.prank(trader):
        s.vault.withdraw(0, 0)
    assert s.vault.cash(trader, 0) == 0


def test_six_decimal_token_scales_to_wad(system, trader):
    s = system
    assert s.vault.token_scale() == 10**12
    assert s.deposit(trader, Decimal("0.000001")) == 10**12  # one token unit
    [deposited] = events(s.vault.get_logs(), "Deposit")
    assert (deposited.owner, deposited.amount, deposited.credited) == (trader, 1, 10**12)
    s.withdraw(trader, 1)
    assert s.vault.cash(trader, 0) == 0
    assert s.usdc.balanceOf(trader) == 1


def test_token_with_18_decimals(trader):
    eoa = boa.env.eoa
    with boa.env.anchor():
        s = System(token_decimals=18)
        s.list_market(BTC, "BTC-USD", 40_000)
        assert s.vault.token_scale() == 1
        assert s.deposit(trader, 5_000) == 5_000 * WAD == s.vault.cash(trader, 0)
        s.trade(trader, BTC, WAD)
        free = s.exchange.withdrawable(trader, 0)
        assert free == usd(2_919.98)
        s.withdraw(trader, free)  # token units are WAD: every wei is withdrawable
        assert s.usdc.balanceOf(trader) == free
        with boa.reverts("vault: insufficient free collateral"), boa.env.prank(trader):
            s.vault.withdraw(0, 1)
        s.check_invariants()
        s.assert_system_matches()
    boa.env.eoa = eoa


FEE_ON_TRANSFER_TOKEN = """
# pragma version ~=0.4.3
# A minimal ERC-20 whose transferFrom delivers 99 % and burns 1 % (rounded up).

balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
totalSupply: public(uint256)
decimals: public(uint8)

@deploy
def __init__():
    self.decimals = 6

@external
def mint(to: address, amount: uint256):
    self.balanceOf[to] += amount
    self.totalSupply += amount

@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    return True

@external
def transfer(to: address, amount: uint256) -> bool:
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[to] += amount
    return True

@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    self.allowance[owner][msg.sender] -= amount
    self.balanceOf[owner] -= amount
    burned: uint256 = (amount + 99) // 100
    self.balanceOf[to] += amount - burned
    self.totalSupply -= burned
    return True
"""


def test_fee_on_transfer_token_credits_only_what_arrived(trader):
    with boa.env.anchor():
        token = boa.loads(FEE_ON_TRANSFER_TOKEN, name="FeeOnTransferToken")
        vault = boa.load("contracts/Vault.vy", token.address)
        token.mint(trader, 2_000 * USDC)
        with boa.env.prank(trader):
            token.approve(vault.address, MAX_UINT)
            credited = vault.deposit(3, 1_000 * USDC)
        [deposited] = events(vault.get_logs(), "Deposit")
        assert credited == 990 * USDC * 10**12 == vault.cash(trader, 3)
        assert (deposited.amount, deposited.credited) == (990 * USDC, credited)
        assert token.balanceOf(vault.address) * 10**12 == vault.cash(trader, 3)  # ledger == balance

        with boa.reverts("vault: nothing received"), boa.env.prank(trader):
            vault.deposit(3, 1)  # 1 % of 1 unit rounds up to everything
        with boa.reverts("vault: insufficient free collateral"), boa.env.prank(trader):
            vault.withdraw(3, 990 * USDC + 1)
        with boa.env.prank(trader):
            vault.withdraw(3, 990 * USDC)
        assert vault.cash(trader, 3) == 0 == token.balanceOf(vault.address)
        assert token.balanceOf(trader) == 1_990 * USDC


def test_only_the_exchange_settles(system, trader, attacker):
    s = system
    s.deposit(trader, 100)
    before = state(s)
    # pay the caller 10 USD from the liquidity vault; zero for every further parameter
    [settle] = [f for f in s.vault.abi if f.get("name") == "settle"]
    rest = ["0x" + "00" * 20 if p["type"] == "address" else 0 for p in settle["inputs"][4:]]
    for caller in (attacker, s.owner, trader):
        with boa.reverts("vault: caller is not the exchange"), boa.env.prank(caller):
            s.vault.settle(caller, 0, 10 * WAD, -10 * WAD, *rest)
    with boa.reverts("vault: exchange already set"), boa.env.prank(s.owner):
        s.vault.set_exchange(attacker)
    assert state(s) == before
    assert s.vault.exchange() == s.exchange.address


# ============================================================================================
# randomized differential sequence
# ============================================================================================


class TradingSequence(RuleBasedStateMachine):
    """Deposits, trades, withdrawals, price moves and time on both markets and four accounts;
    every step on contracts and model (System compares them), invariants after every step."""

    world: System = None
    traders: tuple = ()
    SIZE_LIMIT = {BTC: 2 * WAD, ETH: 40 * WAD}

    def __init__(self):
        super().__init__()
        self._fresh = fresh(self.world)
        self.s = self._fresh.__enter__()
        trader, other_trader = self.traders
        self.accounts = [(trader, 0), (trader, 1), (trader, 2), (other_trader, 0)]

    def teardown(self):
        try:
            self.s.assert_system_matches()
        finally:
            self._fresh.__exit__(None, None, None)

    @initialize()
    def fund_everyone(self):
        for who, sub in self.accounts:
            self.s.deposit(who, 20_000, sub_account=sub)

    @rule(account=st.integers(0, 3), dollars=st.integers(1, 20_000))
    def deposit(self, account, dollars):
        who, sub = self.accounts[account]
        self.s.deposit(who, dollars, sub_account=sub)

    def _trade(self, account: int, market_id: int, size: int) -> None:
        who, sub = self.accounts[account]
        try:
            self.s.trade(who, market_id, size, sub_account=sub)
        except ModelRevert:
            pass  # System checked that the contract reverted with the same reason

    def _size(self, market_id: int, fraction: int, dust: int) -> int:
        """A size up to SIZE_LIMIT, with wei-level dust so that every rounding path runs."""
        size = fraction * self.SIZE_LIMIT[market_id] // 1_000
        return size + dust if size >= 0 else size - dust

    @rule(account=st.integers(0, 3), fraction=st.integers(-1_000, 1_000), dust=st.integers(0, 10**6))
    def trade_btc(self, account, fraction, dust):
        self._trade(account, BTC, self._size(BTC, fraction, dust) or 1)

    @rule(account=st.integers(0, 3), fraction=st.integers(-1_000, 1_000), dust=st.integers(0, 10**6))
    def trade_eth(self, account, fraction, dust):
        self._trade(account, ETH, self._size(ETH, fraction, dust) or 1)

    @rule(account=st.integers(0, 3), market_id=st.sampled_from([BTC, ETH]), extra=st.integers(0, 1_000))
    def close_or_flip(self, account, market_id, extra):
        who, sub = self.accounts[account]
        size = self.s.exchange.position_state(who, sub, market_id)[0]
        if size:
            # close exactly (extra == 0) or flip to the other side
            self._trade(account, market_id, -size - fp_sign(size) * extra * self.SIZE_LIMIT[market_id] // 1_000)

    @rule(account=st.integers(0, 3), percent=st.integers(1, 100))
    def withdraw(self, account, percent):
        who, sub = self.accounts[account]
        amount = self.s.exchange.withdrawable(who, sub) * percent // 100 // 10**12
        if amount:
            self.s.withdraw(who, amount, sub_account=sub)

    @rule(market_id=st.sampled_from([BTC, ETH]), bps=st.integers(-300, 300))
    def move_price(self, market_id, bps):
        index = self.s.model.index[market_id] * (10_000 + bps) // 10_000
        set_index(self.s, market_id, index - index % FEED_TO_WAD)

    @rule(seconds=st.integers(1, HEARTBEAT - 1))
    def time_passes(self, seconds):
        warp(self.s, seconds)

    @rule(market_id=st.sampled_from([BTC, ETH]))
    def touch_market(self, market_id):
        touch(self.s, market_id)

    @invariant()
    def invariants_hold(self):
        self.s.check_invariants()


def test_randomized_sequence_matches_model(world, trader, other_trader):
    TradingSequence.world = world
    TradingSequence.traders = (trader, other_trader)
    run_state_machine_as_test(
        TradingSequence,
        settings=settings(max_examples=6, stateful_step_count=50, deadline=None),
    )
