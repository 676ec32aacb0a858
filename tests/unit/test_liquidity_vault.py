"""The liquidity vault: ERC-4626 shares over the market maker's cash, PnL and funding, entered
and left through two-step requests (tests/unit/test_lp_flows.py covers the requests themselves;
here `lp_deposit`/`lp_redeem` request, publish a round and execute, on contracts and model)."""

import boa
import pytest

from perpdex.fixed_point import WAD
from perpdex.model import ModelRevert
from system import fresh
from test_lp_flows import LpRequestCancelled, LpSystem

BTC, ETH = 0, 1

pytestmark = pytest.mark.ignore_isolation


@pytest.fixture(scope="module")
def lp_markets():
    eoa = boa.env.eoa
    with boa.env.anchor():
        s = LpSystem()
        s.list_market(BTC, "BTC-USD", 40_000)
        s.list_market(ETH, "ETH-USD", 2_000)
        yield s
    boa.env.eoa = eoa


@pytest.fixture
def system(lp_markets, request):
    with fresh(lp_markets) as s:
        yield s
        if not getattr(request.node, "rep_call_failed", False):
            s.check_invariants()
            s.assert_system_matches()
            s.assert_lp_matches()


def test_deposit_mints_shares_at_one_to_one_while_nothing_has_traded(system, lp):
    seed = system.seed_liquidity_usd  # the owner's seed, at one to one too
    assert system.liquidity_vault.balanceOf(system.owner) == seed * WAD
    shares = system.lp_deposit(lp, 1_000_000)
    assert shares == 1_000_000 * WAD  # 18-decimal shares for 6-decimal USDC
    assert system.liquidity_vault.totalAssets() == (seed + 1_000_000) * 10**6
    assert system.liquidity_vault.convertToAssets(shares) == 1_000_000 * 10**6
    assert system.vault.liquidity_cash() == (seed + 1_000_000) * WAD
    # the collateral does not stay in the liquidity vault contract once the deposit executed
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
    system.warp(1)  # a second later: the execution round is published now, at this index
    expected = system.liquidity_vault.convertToShares(100_000 * 10**6)
    late_lp = boa.env.generate_address("late_lp")
    assert system.lp_deposit(late_lp, 100_000) == expected  # executed at a round at this index
    assert expected < 100_000 * WAD  # shares cost more than at launch


def test_redeem_pays_what_the_shares_are_worth_at_the_execution_round(system, lp):
    shares = system.lp_deposit(lp, 1_000_000)
    worth = system.liquidity_vault.convertToAssets(shares // 4)
    before = system.usdc.balanceOf(lp)
    assert system.lp_redeem(lp, shares // 4) == worth
    assert system.usdc.balanceOf(lp) - before == worth


def test_redemption_refused_when_open_interest_would_exceed_the_cap(system, lp, trader):
    shares = system.lp_deposit(lp, 100_000)  # beside the owner's 100,000 USD seed
    system.set_max_oi_ratio(5 * WAD // 2)
    system.deposit(trader, 100_000)
    system.trade(trader, BTC, 10 * WAD)  # 400k notional: 2x the vault's value, cap is 2.5x
    with pytest.raises(LpRequestCancelled, match="open interest cap"):
        system.lp_redeem(lp, shares // 2)
    assert system.liquidity_vault.balanceOf(lp) == shares  # the shares came back
    # what free_assets allows does go through
    allowed = system.liquidity_vault.convertToShares(system.liquidity_vault.free_assets())
    assert 0 < allowed < shares // 2
    system.lp_redeem(lp, allowed)


def test_shares_of_someone_else_move_only_with_allowance(system, lp, attacker):
    shares = system.lp_deposit(lp, 10_000)
    with boa.reverts("erc20: insufficient allowance"), boa.env.prank(attacker):
        system.liquidity_vault.transferFrom(lp, attacker, shares)
    with pytest.raises(ModelRevert, match="transfer amount exceeds balance"):
        system.request_redeem(attacker, shares, attacker)  # a redemption is of the caller's own shares
    assert system.liquidity_vault.balanceOf(lp) == shares


def test_zero_amounts_revert(system, lp):
    with pytest.raises(ModelRevert, match="liquidity vault: zero amount"):
        system.request_deposit(lp, 0)
    with pytest.raises(ModelRevert, match="liquidity vault: zero amount"):
        system.request_redeem(lp, 0)


def test_only_the_owner_sets_the_open_interest_ratio(system, attacker):
    with boa.reverts("ownable: caller is not the owner"), boa.env.prank(attacker):
        system.liquidity_vault.set_max_oi_ratio(2 * WAD)
    with boa.reverts("liquidity vault: ratio out of bounds"), boa.env.prank(system.owner):
        system.liquidity_vault.set_max_oi_ratio(1000 * WAD)
    with boa.env.prank(system.owner):
        system.liquidity_vault.set_max_oi_ratio(2 * WAD)
    system.model.max_oi_ratio = 2 * WAD
    assert system.liquidity_vault.max_oi_ratio() == 2 * WAD
