"""PnL-factor ADL and a fresh skew-reducing position (DESIGN.md, Auto-deleveraging, trigger 2).

A position opened against the skew fills better than the index, so at the index it is
"profitable" the moment it opens. Measured and closed at the index, PnL-factor ADL would see
more traders' profit, rank that position among the profitable ones and pay it the premium.
The design measures the factor at the closing price and closes at the ordinary fill: opening the
position moves the factor by nothing, and ADL closing it pays it its own entry back, no
premium. Every step runs on the contracts and the reference model, compared to the wei.
"""

from __future__ import annotations

import boa
import pytest

from perpdex.fixed_point import WAD
from perpdex.model import closing_price, split_fee
from system import System

BTC = 0
MAX_PNL_FACTOR, TARGET_PNL_FACTOR = WAD // 50, WAD // 100


@pytest.fixture
def adl_keeper(system):
    keeper = boa.env.generate_address("adl_keeper")
    with boa.env.prank(system.owner):
        system.liquidator.set_adl_keeper(keeper, True)
        system.liquidator.set_pnl_factors(MAX_PNL_FACTOR, TARGET_PNL_FACTOR)
    system.model.max_pnl_factor, system.model.target_pnl_factor = MAX_PNL_FACTOR, TARGET_PNL_FACTOR
    return keeper


def trigger_held(s: System) -> None:
    """A 1M USD liquidity vault and a 10 BTC long that a rise to 44,000 puts ~40,000 USD in
    profit: traders' profit above 2 % of the vault, PnL-factor ADL allowed. Then a crowd sells
    60 BTC: the skew is short, so a buy now fills under the index."""
    s.lp_deposit(boa.env.generate_address("lp"), 1_000_000)
    winner, crowd = boa.env.generate_address("winner"), boa.env.generate_address("crowd")
    s.deposit(winner, 100_000)
    s.trade(winner, BTC, 10 * WAD)
    s.set_price(BTC, 44_000)
    s.deposit(crowd, 1_000_000)
    s.trade(crowd, BTC, -60 * WAD)
    assert s.liquidator.pnl_factor(BTC) > MAX_PNL_FACTOR


def traders_profit(s: System) -> int:
    """Traders' net unrealized profit in BTC at the closing price (the PnL factor's numerator)."""
    market, params = s.model.markets[BTC], s.model.params[BTC]
    closing = closing_price(s.model.index[BTC], market.skew, params.skew_scale)
    return market.skew * closing // WAD - market.open_notional_sum


def test_a_fresh_skew_reducing_position_looks_profitable_at_the_index_but_moves_no_pnl_factor(system, adl_keeper):
    """A 90 BTC buy against a 50 BTC short skew fills ~0.5 % under the index (and flips the skew
    long, the side PnL-factor ADL targets): ~19,800 USD of profit at the index at once. The
    factor, at the closing price, does not move, and neither does the liquidity vault's value."""
    s = system
    trigger_held(s)
    fresh_trader = boa.env.generate_address("fresh_trader")
    s.deposit(fresh_trader, 400_000)
    factor, value, profit = s.liquidator.pnl_factor(BTC), s.exchange.liquidity_vault_value(), traders_profit(s)
    fill = s.trade(fresh_trader, BTC, 90 * WAD)
    index = s.exchange.index_price(BTC)
    assert fill.fill_price < index and s.exchange.skew(BTC) == 40 * WAD
    _, _, pnl_at_index, _ = s.exchange.position(fresh_trader, 0, BTC)
    assert pnl_at_index > 19_000 * WAD  # "profitable" the moment it opened
    # the vault's share of the fee is all the trade added to its value; the factor moved by
    # that (and rounding) only
    to_vault, _, _ = split_fee(s.model.last_trade.fee, s.model.globals)
    assert s.exchange.liquidity_vault_value() - value == to_vault
    # traders' profit at the closing price is what it was (the factor's numerator); the factor
    # moved only because the fee raised the vault's value (its denominator)
    assert abs(traders_profit(s) - profit) <= 10**6
    assert s.liquidator.pnl_factor(BTC) <= factor


def test_pnl_factor_adl_closing_a_fresh_skew_reducing_position_pays_it_no_premium(system, adl_keeper):
    """The ADL keeper names the fresh position (on the skew's side and profitable at the index,
    so the contract accepts it) for what the liquidation capacity allows. It closes at the
    ordinary fill — what a market decrease of that size pays — not at the index: the
    liquidity vault's value does not move (closed at the index, the vault would pay the slice
    the premium between the index and the closing price)."""
    s = system
    trigger_held(s)
    fresh_trader = boa.env.generate_address("fresh_trader")
    s.deposit(fresh_trader, 400_000)
    s.trade(fresh_trader, BTC, 90 * WAD)
    amount = s.liquidator.liquidation_capacity(BTC)
    quote = s.exchange.fill_price(BTC, -amount)
    value = s.exchange.liquidity_vault_value()
    [(score, fill, haircut)] = s.auto_deleverage(adl_keeper, BTC, [((fresh_trader, 0), amount)])
    assert score > 0 and haircut == 0
    assert fill.fill_price == quote != s.exchange.index_price(BTC)
    assert abs(s.exchange.liquidity_vault_value() - value) <= 10**6
    assert s.exchange.position_state(fresh_trader, 0, BTC)[0] == 90 * WAD - amount
