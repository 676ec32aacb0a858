"""The liquidity vault: ERC-4626 shares over the market maker's cash, PnL and funding."""

import boa
import pytest

from perpdex.fixed_point import WAD
from perpdex.model import ModelRevert

BTC = 0


def test_first_deposit_mints_shares_at_one_to_one(system, lp):
    shares = system.lp_deposit(lp, 1_000_000)
    assert shares == 1_000_000 * WAD  # 18-decimal shares for 6-decimal USDC
    assert system.liquidity_vault.totalAssets() == 1_000_000 * 10**6
    assert system.liquidity_vault.convertToAssets(shares) == 1_000_000 * 10**6
    assert system.vault.liquidity_cash() == 1_000_000 * WAD
    # the collateral never rests in the liquidity vault contract
    assert system.usdc.balanceOf(system.liquidity_vault.address) == 0


def test_fees_and_trader_losses_raise_the_share_value(system, lp, trader):
    shares = system.lp_deposit(lp, 1_000_000)
    system.deposit(trader, 50_000)
    system.trade(trader, BTC, 5 * WAD)
    system.set_price(BTC, 39_000)  # the long loses, the vault (short) gains
    value = system.liquidity_vault.convertToAssets(shares)
    assert value > 1_000_000 * 10**6
    assert system.liquidity_vault.totalAssets() == system.model.lv_total_assets()


def test_trader_profit_lowers_the_share_value(system, lp, trader):
    shares = system.lp_deposit(lp, 1_000_000)
    system.deposit(trader, 50_000)
    system.trade(trader, BTC, 5 * WAD)
    system.set_price(BTC, 42_000)
    assert system.liquidity_vault.convertToAssets(shares) < 1_000_000 * 10**6


def test_second_lp_pays_the_current_share_price(system, lp, other_trader):
    system.lp_deposit(lp, 1_000_000)
    system.deposit(other_trader, 50_000)
    system.trade(other_trader, BTC, 5 * WAD)
    system.set_price(BTC, 39_000)
    expected = system.liquidity_vault.previewDeposit(100_000 * 10**6)
    late_lp = boa.env.generate_address("late_lp")
    assert system.lp_deposit(late_lp, 100_000) == expected
    assert expected < 100_000 * WAD  # shares cost more than at launch


def test_redeem_pays_the_previewed_assets(system, lp):
    shares = system.lp_deposit(lp, 1_000_000)
    preview = system.liquidity_vault.previewRedeem(shares // 4)
    before = system.usdc.balanceOf(lp)
    assert system.lp_redeem(lp, shares // 4) == preview
    assert system.usdc.balanceOf(lp) - before == preview


def test_redemption_refused_when_open_interest_would_exceed_the_cap(system, lp, trader):
    shares = system.lp_deposit(lp, 100_000)
    system.deposit(trader, 100_000)
    system.trade(trader, BTC, 10 * WAD)  # 400k notional: 4x the vault's value, cap is 5x
    with pytest.raises(ModelRevert, match="open interest cap"):
        system.lp_redeem(lp, shares // 2)
    assert system.liquidity_vault.balanceOf(lp) == shares  # nothing burned
    assert system.liquidity_vault.maxRedeem(lp) < shares // 2
    # what maxRedeem allows does go through
    allowed = system.liquidity_vault.maxRedeem(lp)
    assert allowed > 0
    system.lp_redeem(lp, allowed)


def test_redeem_of_someone_elses_shares_needs_allowance(system, lp, attacker):
    shares = system.lp_deposit(lp, 10_000)
    with boa.reverts("erc20: insufficient allowance"), boa.env.prank(attacker):
        system.liquidity_vault.redeem(shares, attacker, lp)
    assert system.liquidity_vault.balanceOf(lp) == shares


def test_zero_amounts_revert(system, lp):
    with boa.reverts("liquidity vault: zero amount"), boa.env.prank(lp):
        system.liquidity_vault.deposit(0, lp)
    with boa.reverts("liquidity vault: zero amount"), boa.env.prank(lp):
        system.liquidity_vault.redeem(0, lp, lp)


def test_only_the_owner_sets_the_open_interest_ratio(system, attacker):
    with boa.reverts("ownable: caller is not the owner"), boa.env.prank(attacker):
        system.liquidity_vault.set_max_oi_ratio(2 * WAD)
    with boa.reverts("liquidity vault: ratio out of bounds"), boa.env.prank(system.owner):
        system.liquidity_vault.set_max_oi_ratio(1000 * WAD)
    with boa.env.prank(system.owner):
        system.liquidity_vault.set_max_oi_ratio(2 * WAD)
    system.model.max_oi_ratio = 2 * WAD
    assert system.liquidity_vault.max_oi_ratio() == 2 * WAD
