"""Minimal reproductions of defects found by the stateful fuzzers (tests/fuzz/test_stateful.py,
tests/fuzz/test_orders_stateful.py).

Each test states the behaviour the project should have (the two insolvency findings are fixed);
the one documented design trade-off is a strict xfail instead (it turns into a failure once the
behaviour changes, so that the marker gets removed). All actions go through `System`, i.e. to
the contracts and to the reference model, compared to the wei.

Shared setup (`insolvent_vault`): the liquidity vault holds 20,000 USDC and takes the other side
of a 20 BTC (800,000 USD) long, which only the per-market caps bound; BTC then gaps +30 %. The
vault's value is about -211,000 USD, `totalAssets()` is floored at 0, and its 2e22 shares are
still outstanding.
"""

import boa
import pytest

from perpdex.fixed_point import WAD
from perpdex.model import ModelRevert

BTC = 0
USDC = 10**6


def insolvent_vault(s, lp, trader) -> None:
    s.lp_deposit(lp, 20_000)
    s.deposit(trader, 60_000)
    s.trade(trader, BTC, 20 * WAD)
    s.set_price(BTC, 52_000)
    assert s.exchange.liquidity_vault_value() < 0
    assert s.liquidity_vault.totalAssets() == 0 and s.liquidity_vault.totalSupply() > 0


def test_lp_deposits_into_insolvent_vault_revert_on_chain_but_not_in_model(system, lp, trader):
    """Found by LiquidityVaultMachine (contract/model disagreement), now fixed: deposits are
    refused on both sides while the vault is insolvent.

    With `totalAssets() == 0` and shares outstanding, `LiquidityVault.deposit` mints
    `assets * (totalSupply + 1e12) / 1` shares: each 1-USDC deposit multiplies the supply by
    about 1e6. The 10th such deposit (supply ~2e76) makes `_to_shares` revert with
    "math: mul_div overflow" (so do previewDeposit/convertToShares), while the model's
    `lp_deposit` keeps minting (2e82 shares, beyond uint256). From then on no deposit of any size
    can succeed, even after the vault's value turns positive again: LP deposits are bricked for
    good, for 10 USDC.

    Expected: contract and model agree on every deposit (e.g. both refuse deposits while the
    vault is insolvent, see the next test)."""
    s = system
    insolvent_vault(s, lp, trader)
    newcomer = boa.env.generate_address("newcomer")
    for _ in range(12):
        try:
            s.lp_deposit(newcomer, 1)  # 1 USDC; today the 10th raises BoaError (mul_div overflow)
        except ModelRevert:
            pass  # refused on both sides with the same reason: consistent


def test_one_usdc_deposit_into_insolvent_vault_takes_the_whole_vault(system, lp, trader):
    """Found while fuzzing LiquidityVaultMachine, now fixed: deposits are refused (maxDeposit 0)
    while the vault's value is not positive.

    `totalAssets()` floors a negative vault value at 0, so a deposit made while the vault is
    insolvent is priced as if the outstanding shares were worth nothing: 1 USDC mints 2e28
    shares against the LP's 2e22. When the price comes back (BTC 52,000 -> 40,000, the vault is
    worth 28,647 USDC again), the 1-USDC depositor can redeem 28,647.37 USDC and the LP who put
    in 20,000 USDC can redeem 0.03. Anyone watching for a momentary insolvency can take the
    whole vault for 1 USDC.

    Expected: a deposit never buys a claim on value that existing LPs own; e.g. deposits are
    refused (maxDeposit 0) while the vault's value is not positive."""
    s = system
    insolvent_vault(s, lp, trader)
    newcomer = boa.env.generate_address("newcomer")
    try:
        s.lp_deposit(newcomer, 1)
    except ModelRevert:
        return  # refused while insolvent: fixed
    s.set_price(BTC, 40_000)  # the price comes back
    assert s.liquidity_vault.totalAssets() > 20_000 * USDC
    newcomer_can_redeem = s.liquidity_vault.convertToAssets(s.liquidity_vault.balanceOf(newcomer))
    lp_can_redeem = s.liquidity_vault.convertToAssets(s.liquidity_vault.balanceOf(lp))
    assert newcomer_can_redeem <= 1 * USDC, (newcomer_can_redeem, lp_can_redeem)


@pytest.mark.xfail(
    strict=True,
    reason="design gap: the global open-interest cap is checked only on LP redemptions "
    "(docs/DECISIONS.md), so trades can take the liquidity vault far beyond its capital",
)
def test_trader_profit_can_exceed_every_token_the_vault_holds(system, lp, trader):
    """DESIGN.md invariant 4 ("once liquidations and ADL have run ... every positive claim can be
    paid from the vault's balance") does not hold: after the +30 % gap the keepers run ADL
    (trigger 2 fires, the PnL factor is max_uint because the vault's value is negative) and close
    the long at the index without a haircut. The trader's withdrawable cash is then 281,192 USD
    while the vault holds 70,000 USDC in total; its withdrawal reverts inside the token transfer.

    DESIGN.md asks for "a global cap on open interest relative to the liquidity vault's value
    (the vault must be able to pay)"; docs/DECISIONS.md enforces it on redemptions only. Note
    that even a 5x cap enforced on trades would not cover a 30 % gap against a fully skewed book
    (a loss of 150 % of the vault). The stateful fuzzer therefore allows a negative vault value
    in its solvency check and reports it as an event."""
    s = system
    s.lp_deposit(lp, 20_000)
    s.deposit(trader, 60_000)  # enough for the initial requirement (close impact and penalty included)
    try:
        s.trade(trader, BTC, 20 * WAD)
    except ModelRevert:
        return  # the trade is refused for the vault's capital: the gap is closed
    s.set_price(BTC, 52_000)
    adl_keeper = boa.env.generate_address("adl_keeper")
    with boa.env.prank(s.owner):
        s.liquidator.set_adl_keeper(adl_keeper, True)
    s.auto_deleverage(adl_keeper, BTC, [((trader, 0), 20 * WAD)])
    assert s.exchange.withdrawable(trader, 0) <= s.usdc.balanceOf(s.vault.address) * 10**12


def test_withdrawal_beyond_the_vault_tokens_is_refused_with_a_reason(system, lp, trader):
    """Found by LiquidationMachine in a 100,000-step `make fuzz` run, now fixed: once the
    liquidity vault has lost more than its capital (the design gap above), a trader's cash can
    exceed every token the vault holds. Withdrawing it reverted inside the token transfer
    ("erc20: transfer amount exceeds balance"), a reason that tells a wallet nothing; the vault
    now refuses with "vault: insufficient token balance", changes nothing, and still pays what
    it holds."""
    s = system
    s.lp_deposit(lp, 20_000)
    s.deposit(trader, 60_000)
    s.trade(trader, BTC, 20 * WAD)
    s.set_price(BTC, 52_000)
    s.trade(trader, BTC, -20 * WAD)  # the profit is now cash
    held = s.usdc.balanceOf(s.vault.address)
    cash = s.vault.cash(trader, 0)
    assert s.exchange.withdrawable(trader, 0) == cash > held * 10**12
    with pytest.raises(ModelRevert, match="vault: insufficient token balance"):
        s.withdraw(trader, cash // 10**12)  # the contract reverted with the model's reason
    assert (s.vault.cash(trader, 0), s.usdc.balanceOf(s.vault.address)) == (cash, held)
    s.withdraw(trader, held)  # everything the vault holds can still be paid
    assert s.usdc.balanceOf(trader) == held and s.usdc.balanceOf(s.vault.address) == 0
