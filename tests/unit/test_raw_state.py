"""tests/raw_state.py reads the contracts' storage directly (the fuzzers' per-step checks rely on
it): every reader must agree with the contract's own view, including negative values, packed
neighbours and a bankrupt account with an uncovered deficit."""

import boa
import pytest

from perpdex.fixed_point import WAD
from raw_state import mapping_slot, storage_slots

BTC, ETH = 0, 1


@pytest.fixture
def busy(system):
    """Longs and shorts in two markets, funding accrued, fees paid, a liquidation with bad debt
    beyond the insurance fund, and LP shares held by two LPs."""
    s = system
    for market_id in (BTC, ETH):  # deep enough that carol's liquidation closes at one index
        s.set_market_params(market_id, skew_scale=250_000 * WAD)
    lp1, lp2 = boa.env.generate_address("raw_lp1"), boa.env.generate_address("raw_lp2")
    s.lp_deposit(lp1, 1_000_000)
    s.lp_deposit(lp2, 250_000)
    alice, bob, carol = (boa.env.generate_address(n) for n in ("raw_alice", "raw_bob", "raw_carol"))
    s.deposit(alice, 50_000)
    s.deposit(alice, 7_000, sub_account=3)
    s.deposit(bob, 30_000)
    s.deposit(carol, 2_200)
    s.trade(alice, BTC, 2 * WAD)
    s.trade(alice, ETH, -30 * WAD, sub_account=3)
    s.trade(bob, BTC, -WAD // 3)
    s.trade(bob, ETH, 7 * WAD)
    s.trade(carol, BTC, WAD)  # ~20x: bankrupt after a 10 % gap
    s.warp(3_000)
    s.set_price(ETH, 2_100)
    s.trade(bob, ETH, -2 * WAD)
    s.set_price(BTC, 36_000)
    keeper = boa.env.generate_address("raw_keeper")
    s.liquidate(keeper, carol)
    return s, [(alice, 0), (alice, 3), (bob, 0), (carol, 0), (keeper, 0)], (lp1, lp2)


def test_slots_come_from_the_compiler_layout(system):
    slots = storage_slots(system.vault)
    assert {"_accounts", "_system_a", "_system_b", "ownable.owner"} <= set(slots)
    assert slots["_system_b"] == slots["_system_a"] + 1
    assert "erc20.totalSupply" in storage_slots(system.liquidity_vault)


def test_mapping_slot_is_vyper_hashing(system):
    """A raw write at mapping_slot(...) is what the contract reads back."""
    s = system
    who = boa.env.generate_address("raw_slot")
    slot = mapping_slot(storage_slots(s.vault)["_accounts"], who, 5)
    boa.env.set_storage(s.vault.address, slot, ((123 + 2**191) << 64) | 0b101)
    assert tuple(s.vault.account(who, 5)) == (123, 0b101)
    assert tuple(s.vault.account(who, 4)) == (0, 0)


def test_every_reader_matches_its_view(busy):
    s, accounts, lps = busy
    raw = s.raw
    assert s.vault.insurance_cash() == 0 < s.liquidator.uncovered_deficit(BTC)  # the fund ran dry
    for who, sub in accounts:
        assert raw.account(who, sub) == tuple(s.vault.account(who, sub))
        for market_id in (BTC, ETH):
            assert raw.position(who, sub, market_id) == tuple(s.exchange.position_state(who, sub, market_id))
    assert raw.account(*accounts[3])[0] < 0  # the bankrupt account's debt is negative cash
    assert any(raw.position(*a, ETH)[0] < 0 for a in accounts)
    assert raw.system_cash() == (
        s.vault.liquidity_cash(),
        s.vault.insurance_cash(),
        s.vault.fee_cash(),
        s.vault.funding_pool_cash(),
    )
    for market_id in (BTC, ETH):
        assert raw.open_interest(market_id) == tuple(s.exchange.open_interest(market_id))
        assert raw.funding(market_id) == tuple(s.exchange.funding_state(market_id))
        assert raw.open_notional_sum(market_id) == s.exchange.open_notional_sum(market_id)
        assert raw.uncovered_deficit(market_id) == s.liquidator.uncovered_deficit(market_id)
        assert raw.deficit_side(market_id) == s.liquidator.deficit_side(market_id)
    assert raw.lv_supply() == s.liquidity_vault.totalSupply()
    for lp in lps:
        assert raw.lv_shares(lp) == s.liquidity_vault.balanceOf(lp) > 0


def test_state_comparison_catches_a_one_wei_difference(busy):
    """assert_state_matches and check_invariants fail on a single wei of drift in storage."""
    s, accounts, _ = busy
    s.assert_state_matches()
    s.check_invariants()
    who, sub = accounts[2]
    slot = mapping_slot(storage_slots(s.vault)["_accounts"], who, sub)
    boa.env.set_storage(s.vault.address, slot, boa.env.get_storage(s.vault.address, slot) + (1 << 64))
    with pytest.raises(AssertionError, match="cash/mask"):
        s.assert_state_matches()
    with pytest.raises(AssertionError):
        s.check_invariants()
    boa.env.set_storage(s.vault.address, slot, boa.env.get_storage(s.vault.address, slot) - (1 << 64))
    s.assert_state_matches()
    position = mapping_slot(storage_slots(s.exchange)["_position"], who, sub, ETH)
    packed = boa.env.get_storage(s.exchange.address, position)
    boa.env.set_storage(s.exchange.address, position, packed + (1 << 128))
    with pytest.raises(AssertionError, match="in market 1"):
        s.assert_state_matches()
    with pytest.raises(AssertionError, match="open interest"):
        s.check_invariants()
    boa.env.set_storage(s.exchange.address, position, packed)  # the fixture checks again
