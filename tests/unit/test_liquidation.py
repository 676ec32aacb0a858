"""Liquidation, the insurance fund and auto-deleveraging: the issue's scenarios.

Every liquidation and ADL runs on the contracts and on `perpdex.model` (tests/system.py) and
is compared to the wei; the `system` fixture checks the ledger and zero-sum invariants after
each test."""

import boa
import pytest

from perpdex.fixed_point import WAD
from perpdex.model import ModelRevert

BTC, ETH = 0, 1
KEEPER_FLOOR = 5 * WAD
DEEP_SKEW_SCALE = 250_000 * WAD


@pytest.fixture
def market(system, lp):
    """An LP-backed exchange with a 5 USD keeper floor and a 20 % keeper share, its markets
    deep enough (skew_scale 250,000) that the liquidation capacity at one index, 2 x maker fee
    x skew_scale = 100, is a whole `max_liquidation_size` slice (tests/unit/test_capacity.py
    covers the capacity itself)."""
    system.lp_deposit(lp, 1_000_000)
    system.set_globals(keeper_min_reward=KEEPER_FLOOR)
    for market_id in (BTC, ETH):
        system.set_market_params(market_id, skew_scale=DEEP_SKEW_SCALE)
    return system


def open_long(s, who, collateral_usd, size, sub=0, market_id=BTC):
    s.deposit(who, collateral_usd, sub)
    s.trade(who, market_id, size, sub_account=sub)


def logs_named(s, name):
    """Events of the last liquidation or ADL call."""
    return [e for e in s.last_logs if type(e).__name__ == name]


def test_20x_long_liquidated_keeper_paid_fund_grows_trader_keeps_rest(market, trader, keeper):
    s = market
    open_long(s, trader, 2_200, WAD)  # ~19x at 40,000
    assert not s.liquidator.is_liquidatable(trader, 0)
    s.set_price(BTC, 39_500)
    assert not s.liquidator.is_liquidatable(trader, 0)
    s.set_price(BTC, 39_000)
    assert s.liquidator.is_liquidatable(trader, 0)

    insurance_before = s.vault.insurance_cash()
    result = s.liquidate(keeper, trader)
    (event,) = logs_named(s, "Liquidation")
    assert event.fully_closed and event.keeper == keeper
    assert s.exchange.position_state(trader, 0, BTC)[0] == 0
    # keeper: 20 % of the penalty + the 5 USD floor, credited in the vault
    assert result.keeper_reward == result.penalty * 2 // 10 + KEEPER_FLOOR
    assert s.vault.cash(keeper, 0) == result.keeper_reward == event.keeper_reward
    # the insurance fund gets the rest of the penalty
    assert s.vault.insurance_cash() - insurance_before == result.to_insurance == event.to_insurance > 0
    # the trader keeps what is left, which is positive
    assert s.vault.cash(trader, 0) == result.equity_after > 0
    assert s.exchange.withdrawable(trader, 0) == s.vault.cash(trader, 0)


def test_gap_through_bankruptcy_price_insurance_pays_exactly(market, trader, keeper, attacker):
    s = market
    s.donate(attacker, 50_000)  # anyone can fund the insurance fund
    open_long(s, trader, 2_200, WAD)
    s.set_price(BTC, 37_000)  # gap: equity deeply negative
    assert s.exchange.equity(trader, 0) < 0
    insurance_before = s.vault.insurance_cash()
    result = s.liquidate(keeper, trader)
    (bad_debt,) = logs_named(s, "BadDebt")
    assert result.penalty == 0 and result.keeper_reward == 0  # nothing left to pay a penalty from
    assert bad_debt.uncovered == 0
    assert bad_debt.covered_by_insurance == bad_debt.deficit > 0
    assert insurance_before - s.vault.insurance_cash() == bad_debt.deficit
    assert s.vault.cash(trader, 0) == 0  # back to exactly zero
    assert s.liquidator.uncovered_deficit(BTC) == 0


def test_liquidation_works_with_an_empty_insurance_fund(market, trader, keeper):
    s = market
    s.set_globals(insurance_fee_share=0)  # no fee share: the fund stays at zero
    open_long(s, trader, 2_200, WAD)
    assert s.vault.insurance_cash() == 0
    s.set_price(BTC, 37_000)
    result = s.liquidate(keeper, trader)  # does not revert
    assert result.fully_closed and result.covered_by_insurance == 0
    assert s.exchange.position_state(trader, 0, BTC)[0] == 0
    assert s.vault.insurance_cash() == 0
    # the whole deficit stays as the account's negative cash and is recorded for ADL
    assert s.vault.cash(trader, 0) < 0
    assert s.liquidator.uncovered_deficit(BTC) == -s.vault.cash(trader, 0) == result.uncovered
    assert s.liquidator.deficit_side(BTC) == 1  # longs lost


def test_healthy_account_cannot_be_liquidated(market, trader, keeper):
    s = market
    open_long(s, trader, 10_000, WAD)
    with pytest.raises(ModelRevert, match="account healthy"):
        s.liquidate(keeper, trader)
    assert s.exchange.position_state(trader, 0, BTC)[0] == WAD
    with pytest.raises(ModelRevert, match="account healthy"):
        s.liquidate(keeper, boa.env.generate_address("nobody"))


def test_liquidate_many_liquidates_exactly_the_unhealthy(market, keeper):
    s = market
    traders = [boa.env.generate_address(f"trader{i}") for i in range(6)]
    collateral = [2_200, 10_000, 2_300, 50_000, 2_250, 8_000]
    for who, usd in zip(traders, collateral):
        open_long(s, who, usd, WAD)
    s.set_price(BTC, 39_000)
    unhealthy = {who for who in traders if s.liquidator.is_liquidatable(who, 0)}
    assert 0 < len(unhealthy) < len(traders)
    batch = [(who, 0) for who in traders] + [(boa.env.generate_address("empty"), 0)]
    count = s.liquidate_many(keeper, batch)
    assert count == len(unhealthy)
    for who in traders:
        closed = s.exchange.position_state(who, 0, BTC)[0] == 0
        assert closed == (who in unhealthy)
    (batch_event,) = logs_named(s, "LiquidationBatch")
    assert (batch_event.checked, batch_event.liquidated) == (len(batch), len(unhealthy))


def test_large_position_liquidated_in_slices_each_healthier(market, trader, keeper):
    s = market
    slice_size = WAD // 4
    s.set_market_params(BTC, max_liquidation_size=slice_size)
    open_long(s, trader, 2_200, WAD)
    s.set_price(BTC, 38_500)  # deep enough that one slice does not restore health
    sizes, rewards = [WAD], []
    while s.liquidator.is_liquidatable(trader, 0):
        _, equity, _, maintenance = s.exchange.account_state(trader, 0)
        health_before = equity - maintenance
        result = s.liquidate(keeper, trader)
        rewards.append(result.keeper_reward)
        sizes.append(s.exchange.position_state(trader, 0, BTC)[0])
        assert sizes[-2] - sizes[-1] == min(slice_size, sizes[-2])  # at most one slice per call
        _, equity, _, maintenance = s.exchange.account_state(trader, 0)
        assert equity - maintenance > health_before  # strictly healthier after each slice
    assert len(rewards) >= 2  # several slices, each paying its own keeper reward
    assert all(r >= KEEPER_FLOOR for r in rewards)
    assert s.vault.cash(keeper, 0) == sum(rewards)


def bankrupt_long(s, trader, keeper):
    open_long(s, trader, 2_200, WAD)
    s.set_price(BTC, 37_000)
    s.liquidate(keeper, trader)
    assert s.vault.cash(trader, 0) < 0


def test_adl_covers_deficit_from_top_ranked_opposite_profitable(market, trader, keeper, owner):
    s = market
    adl_keeper = boa.env.generate_address("adl_keeper")
    with boa.env.prank(s.owner):
        s.liquidator.set_adl_keeper(adl_keeper, True)
    high, low, late = (boa.env.generate_address(n) for n in ("high_lev_short", "low_lev_short", "late_short"))
    s.deposit(high, 3_000)
    s.trade(high, BTC, -WAD)  # ~13x short
    s.deposit(low, 40_000)
    s.trade(low, BTC, -WAD)  # ~1x short
    other_long = boa.env.generate_address("other_long")
    s.deposit(other_long, 20_000)
    s.trade(other_long, BTC, WAD // 2)
    bankrupt_long(s, trader, keeper)
    s.deposit(late, 10_000)
    s.trade(late, BTC, -WAD // 10)  # opened after the gap
    s.set_price(BTC, 37_050)  # the late short now loses; the early shorts are far in profit
    deficit = s.liquidator.uncovered_deficit(BTC)
    assert deficit > 0

    score_high = s.liquidator.adl_score(high, 0, BTC)
    score_low = s.liquidator.adl_score(low, 0, BTC)
    assert score_high > score_low > 0
    bankrupt = (trader, 0)
    with pytest.raises(ModelRevert, match="wrong side"):
        s.auto_deleverage(adl_keeper, BTC, [((other_long, 0), WAD // 2)], bankrupt)
    with pytest.raises(ModelRevert, match="not profitable"):
        s.auto_deleverage(adl_keeper, BTC, [((late, 0), WAD // 10)], bankrupt)
    with pytest.raises(ModelRevert, match="out of order"):
        s.auto_deleverage(adl_keeper, BTC, [((low, 0), WAD // 10), ((high, 0), WAD)], bankrupt)
    with boa.reverts("liquidator: caller is not an ADL keeper"), boa.env.prank(keeper):
        s.liquidator.auto_deleverage(BTC, [(high, 0, WAD)], trader, 0)

    # the late short's order filled a second after the liquidation's price: the shorts owe that
    # second's funding, which the ADL settles besides their profit
    assert s.exchange.position(high, 0, BTC)[3] > 0
    cash_before = {w: s.vault.cash(w, 0) - s.exchange.position(w, 0, BTC)[3] for w in (high, low)}
    # a tenth of the top-ranked short's profit does not cover the deficit; the next one does
    out = s.auto_deleverage(adl_keeper, BTC, [((high, 0), WAD // 10), ((low, 0), WAD)], bankrupt)
    assert out[0][2] < deficit
    events = logs_named(s, "AutoDeleveraged")
    assert [e.owner for e in events][: len(out)] == [high, low][: len(out)]
    for (score, fill, haircut), e in zip(out, events):
        assert e.score == score and e.haircut == haircut
        assert haircut <= fill.realized_pnl  # never more than the profit: no principal lost
    assert sum(h for _, _, h in out) == deficit
    assert s.liquidator.uncovered_deficit(BTC) == 0
    assert s.vault.cash(trader, 0) == 0  # the bankrupt account is whole again
    for w in (high, low):
        assert s.vault.cash(w, 0) >= cash_before[w]  # each kept part of its profit (net of funding)


def test_adl_brings_pnl_factor_under_target(system, lp, owner):
    s = system
    s.set_market_params(BTC, skew_scale=DEEP_SKEW_SCALE)  # an ADL of 6 BTC within one index's capacity
    assert s.liquidity_vault.totalAssets() == 100_000 * 10**6  # the owner's seed is the whole vault
    adl_keeper = boa.env.generate_address("adl_keeper")
    with boa.env.prank(s.owner):
        s.liquidator.set_adl_keeper(adl_keeper, True)
    big, small = boa.env.generate_address("big_long"), boa.env.generate_address("small_long")
    s.deposit(big, 30_000)
    s.trade(big, BTC, 6 * WAD)
    s.deposit(small, 80_000)
    s.trade(small, BTC, 4 * WAD)
    s.set_price(BTC, 44_000)
    assert s.liquidator.pnl_factor(BTC) > s.liquidator.max_pnl_factor()
    assert s.liquidator.adl_score(big, 0, BTC) > s.liquidator.adl_score(small, 0, BTC)
    # more targets than needed: the contract refuses to go past the target factor
    with pytest.raises(ModelRevert, match="under target"):
        s.auto_deleverage(adl_keeper, BTC, [((big, 0), 6 * WAD), ((small, 0), 4 * WAD)])
    s.auto_deleverage(adl_keeper, BTC, [((big, 0), 6 * WAD)])
    assert s.liquidator.pnl_factor(BTC) <= s.liquidator.target_pnl_factor()
    assert s.exchange.position_state(big, 0, BTC)[0] == 0
    (event,) = logs_named(s, "AutoDeleveraged")
    # no haircut, at the ordinary fill price: closing longs into a long skew gets its premium
    assert event.haircut == 0 and event.price > s.exchange.index_price(BTC)
    with pytest.raises(ModelRevert, match="no ADL trigger"):
        s.auto_deleverage(adl_keeper, BTC, [((small, 0), WAD)])


def bisect_liquidation_price(s, who, sub, market_id, lo, hi):
    """The oracle price where is_liquidatable flips, by bisection over real oracle updates."""
    def liquidatable_at(price):
        with boa.env.anchor():
            with boa.env.prank(s.owner):
                s.aggregators[market_id].update_answer(round(price * 10**8))
            return s.liquidator.is_liquidatable(who, sub)

    bad_low = liquidatable_at(lo)
    for _ in range(80):
        mid = (lo + hi) / 2
        if liquidatable_at(mid) == bad_low:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@pytest.mark.parametrize("side", [1, -1])
@pytest.mark.parametrize("cross", [False, True])
def test_liquidation_price_matches_bisection(market, trader, side, cross):
    s = market
    s.deposit(trader, 4_000)
    s.trade(trader, BTC, side * WAD)
    if cross:
        s.trade(trader, ETH, -side * 2 * WAD)  # a second position in the same sub-account
    quoted = s.liquidator.liquidation_price(trader, 0, BTC) / WAD
    assert quoted == s.model.liquidation_price((trader, 0), BTC) / WAD
    assert quoted > 0
    lo, hi = (1_000, 40_000) if side > 0 else (40_000, 200_000)
    found = bisect_liquidation_price(s, trader, 0, BTC, lo, hi)
    assert abs(found - quoted) / quoted < 1e-9


def test_insurance_fund_surplus_only_above_target(market, attacker):
    s = market
    s.donate(attacker, 10_000)
    fund = s.insurance_fund
    with boa.env.prank(s.owner):
        fund.set_target(8_000 * WAD)
    assert fund.surplus() == (s.vault.insurance_cash() - 8_000 * WAD) // 10**12
    with boa.reverts("insurance fund: below target"), boa.env.prank(s.owner):
        fund.withdraw_surplus(s.owner, fund.surplus() + 1)
    with boa.reverts("ownable: caller is not the owner"), boa.env.prank(attacker):
        fund.withdraw_surplus(attacker, 1)
    amount = fund.surplus()
    with boa.env.prank(s.owner):
        fund.withdraw_surplus(s.owner, amount)
    s.model.token_balance -= amount
    s.model._credit("insurance_fund", -amount * 10**12)
    assert s.usdc.balanceOf(s.owner) == amount
    assert fund.surplus() == 0
