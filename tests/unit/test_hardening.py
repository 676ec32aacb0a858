"""The attacks of the hardening review (docs/SECURITY.md findings 1-4), replayed step by step on
the markets of config/markets.json with a 10M USD liquidity vault and a 1M USD insurance fund,
and shown failing: a liquidation's skew move sandwiched at one index pays less than its fees,
self-liquidation is never a better exit than closing, an account cannot walk itself into
liquidation with reductions at a pushed price, the ADL role credits only recorded bankrupt
accounts, and a deficit nobody can cover is netted at once and then written off.

Every step runs on the contracts and on the reference model and is compared to the wei
(tests/system.py); the model also shows what the attack made before the rules."""

from __future__ import annotations

import copy

import boa
import pytest

from perpdex.config import load_markets
from perpdex.fixed_point import WAD
from perpdex.model import REDUCTION_REASON, ModelRevert
from system import System, fresh, usd

MARKETS, _ = load_markets()
BTC, ETH = 0, 1
BTC_PRICE = 40_000
CAPACITY_REASON = "liquidator: liquidation capacity at this index used up; retry at the next price"

pytestmark = pytest.mark.ignore_isolation


@pytest.fixture(scope="module")
def config_world():
    """config/markets.json's BTC and ETH markets and a 10M USD liquidity vault; an empty
    insurance fund that takes no fee share (so every bankruptcy leaves a deficit)."""
    eoa = boa.env.eoa
    with boa.env.anchor():
        s = System()
        for m in MARKETS:
            s.list_market(m.id, m.symbol, int(m.initial_price), m.params)
        s.lp_deposit(boa.env.generate_address("honest_lp"), 10_000_000)
        s.set_globals(insurance_fee_share=0)
        yield s
    boa.env.eoa = eoa


@pytest.fixture
def s(config_world, request):
    with fresh(config_world) as system:
        yield system
        if not getattr(request.node, "rep_call_failed", False):
            system.check_invariants(gifts=getattr(system, "gifts", 0))
            system.assert_system_matches()


def publish(s: System, market_id: int, price_usd: int) -> None:
    s.set_price(market_id, price_usd)


def lift_caps(s: System) -> None:
    """BTC's position and open-interest caps out of the way: one account pushes the skew."""
    s.set_market_params(BTC, max_long_oi=20_000 * WAD, max_short_oi=20_000 * WAD, max_position_size=10_000 * WAD)


def capacity(s: System, market_id: int) -> int:
    p = s.model.params[market_id]
    return 2 * min(p.maker_fee, p.taker_fee) * p.skew_scale // WAD


def victim_near_maintenance(s: System, victim: str, size: int, leverage: int = 18) -> None:
    """A long of `size` BTC at about `leverage`, then a price at which it is just under maintenance."""
    s.deposit(victim, size * BTC_PRICE // WAD // leverage)
    s.trade(victim, BTC, size)
    price = BTC_PRICE
    while not s.liquidator.is_liquidatable(victim, 0):
        price -= 50
        publish(s, BTC, price)


# ============================================================================================
# finding 1: the skew move of a forced close, sandwiched at one index
# ============================================================================================


@pytest.mark.parametrize("push", [-30, 10, 50, 200, 1_000, 5_000])
def test_sandwiching_a_liquidation_at_one_index_pays_less_than_its_fees(s, push):
    """Sell ΔS before a 50 BTC long is liquidated and buy ΔS back after, every order executed at
    the same index by the attacker (its own keeper): the liquidation closes at most the capacity
    at that index (2 x maker fee x skew_scale = 40 BTC), so the attacker's two legs gain at most
    `index x 40 x ΔS / skew_scale`, less than their fees of at least `2 x maker x index x ΔS`.
    A push of 30 the other way (buy before, sell after) loses too. With the 50 BTC long alone in
    the market a sale of 50 takes the skew to zero and the liquidation flips it, so both legs
    are maker (the cheapest sandwich): at exactly the capacity it breaks even at best."""
    lift_caps(s)
    victim, attacker = boa.env.generate_address("victim"), boa.env.generate_address("attacker")
    victim_near_maintenance(s, victim, 50 * WAD)
    s.deposit(attacker, 20_000_000)
    before = s.vault.cash(attacker, 0)

    s.trade(attacker, BTC, -push * WAD)
    result = s.liquidate(attacker, victim)
    assert s.exchange.position_state(victim, 0, BTC)[0] == 50 * WAD - capacity(s, BTC)  # the rest waits
    assert s.liquidator.liquidation_capacity(BTC) == 0
    s.trade(attacker, BTC, push * WAD)

    gain = s.vault.cash(attacker, 0) - before - result.keeper_reward
    assert gain <= 0, f"push {push}: the sandwich made {gain / WAD:,.2f} USD besides the keeper reward"


def test_without_the_capacity_the_same_sandwich_profits(s):
    """The rule's counterfactual, on the model: with an unbounded capacity the whole 50 BTC long
    closes into the pushed skew, and the cheapest sandwich (sell 50 to zero skew, the
    liquidation flips it, buy 50 back: both legs maker) gains index x 50 x 50 / 100,000 = 1,000
    USD against 800 USD of fees. With the rule (40 BTC at this index) it breaks even at best."""
    lift_caps(s)
    victim, attacker = boa.env.generate_address("victim"), boa.env.generate_address("attacker")
    victim_near_maintenance(s, victim, 50 * WAD)
    model = copy.deepcopy(s.model)
    model.capacity_multiplier = 10**30  # no bound
    model.deposit((attacker, 0), 20_000_000 * 10**6)
    before = model.cash_of((attacker, 0))
    model.trade((attacker, 0), BTC, -50 * WAD, 0)
    result = model.liquidate((victim, 0), attacker)
    assert model.position((victim, 0), BTC).size == 0
    model.trade((attacker, 0), BTC, 50 * WAD, 2**256 - 1)
    gain = model.cash_of((attacker, 0)) - before - result.keeper_reward
    assert usd(150) < gain < usd(250)


def test_capacity_reopens_at_the_next_index_and_liquidate_many_skips(s):
    """What exceeds the capacity waits for the next price: `liquidate_many` skips it without
    reverting, and a new index lets the rest close."""
    victims = [boa.env.generate_address(f"victim{i}") for i in range(2)]
    keeper = boa.env.generate_address("keeper")
    for victim in victims:
        s.deposit(victim, 50 * BTC_PRICE // 18)
        s.trade(victim, BTC, 30 * WAD)
    price = BTC_PRICE
    while not all(s.liquidator.is_liquidatable(v, 0) for v in victims):
        price -= 50
        publish(s, BTC, price)
    assert s.liquidate_many(keeper, [(v, 0) for v in victims]) == 2  # 30 + 10 of 40
    assert [s.exchange.position_state(v, 0, BTC)[0] for v in victims] == [0, 20 * WAD]
    assert s.liquidator.liquidation_capacity(BTC) == 0
    assert s.liquidate_many(keeper, [(v, 0) for v in victims]) == 0  # skipped, no revert
    publish(s, BTC, price - 2_000)  # a new index: a new window
    assert s.liquidator.liquidation_capacity(BTC) == capacity(s, BTC)
    s.liquidate(keeper, victims[1])
    assert s.exchange.position_state(victims[1], 0, BTC)[0] == 0


# ============================================================================================
# finding 1: self-liquidation and walking an account into liquidation
# ============================================================================================


def test_self_liquidation_with_the_skew_in_the_accounts_favour_is_no_better_than_closing(s):
    """Traders are net long, so a long closing sells into a premium. A long just under
    maintenance that liquidates itself (as its own keeper) closes at its own-impact price
    instead, under the index, and pays the penalty: closing is the better exit."""
    lift_caps(s)
    trader, crowd = boa.env.generate_address("trader"), boa.env.generate_address("crowd")
    s.deposit(crowd, 5_000_000)
    s.trade(crowd, BTC, 1_500 * WAD)  # a long skew: longs close at a premium
    victim_near_maintenance(s, trader, 30 * WAD, leverage=10)
    with fresh(s) as closing:
        closing.trade(trader, BTC, -30 * WAD)
        by_closing = closing.vault.cash(trader, 0)
    s.liquidate(trader, trader)  # its own keeper: the reward comes back to it
    assert s.exchange.position_state(trader, 0, BTC)[0] == 0
    [event] = [e for e in s.last_logs if type(e).__name__ == "Liquidation"]
    assert s.vault.cash(trader, 0) < by_closing, (s.vault.cash(trader, 0), by_closing, event)


def test_an_account_cannot_walk_itself_into_liquidation_with_reductions_at_a_pushed_price(s):
    """The self-made victim of the review: an account at maximum leverage sells into a skew its
    twin pushed down, a little at a time, to fall under maintenance at an unchanged index. Once
    a sale would leave it under maintenance with a smaller margin surplus it is refused, so the
    account is never liquidatable at that index; closing everything stays allowed. (The
    config's OI caps of 2,000 BTC alone stop a push deep enough for this: a premium beyond the
    2.5 % that each sold unit releases from maintenance. The caps are lifted here.)"""
    lift_caps(s)
    victim, pusher = boa.env.generate_address("victim"), boa.env.generate_address("pusher")
    s.deposit(victim, 100_000)
    while True:  # as large a long as the initial requirement allows
        try:
            s.trade(victim, BTC, 5 * WAD)
        except ModelRevert as err:
            assert "insufficient margin" in str(err)
            break
    s.deposit(pusher, 20_000_000)
    s.trade(pusher, BTC, -5_000 * WAD)  # a 5 % discount for sellers
    with pytest.raises(ModelRevert) as refused:
        for _ in range(100):
            s.trade(victim, BTC, -WAD)
            assert not s.liquidator.is_liquidatable(victim, 0)
    assert str(refused.value) == REDUCTION_REASON
    assert not s.liquidator.is_liquidatable(victim, 0)
    s.trade(pusher, BTC, 5_000 * WAD)  # the twin takes its push back: nothing was gained
    s.trade(victim, BTC, -s.exchange.position_state(victim, 0, BTC)[0])  # closing it all is allowed
    assert s.exchange.open_markets(victim, 0) == 0


# ============================================================================================
# finding 4: the ADL role credits only recorded bankrupt accounts
# ============================================================================================


def test_adl_cannot_credit_a_healthy_account_with_negative_cash(s):
    """A cross-margined account realizes a loss in ETH (negative cash) while its BTC short is in
    profit: healthy. The ADL keeper names it as the beneficiary of a deficit ADL (the review's
    keeper named its own account and was credited ~25,800 USD): refused, because no liquidation
    recorded a deficit for it. The recorded bankrupt account is credited, up to its record."""
    adl_keeper, schemer, victim = (boa.env.generate_address(n) for n in ("adl_keeper", "schemer", "victim"))
    with boa.env.prank(s.owner):
        s.liquidator.set_adl_keeper(adl_keeper, True)
    s.deposit(victim, 2_500)
    s.trade(victim, BTC, WAD)
    s.deposit(schemer, 40_000)
    s.trade(schemer, BTC, -5 * WAD)
    s.trade(schemer, ETH, 100 * WAD)
    publish(s, BTC, 36_000)
    publish(s, ETH, 1_500)
    s.trade(schemer, ETH, -100 * WAD)  # realized: cash < 0, the BTC short keeps equity positive
    assert s.vault.cash(schemer, 0) < 0 and not s.liquidator.is_liquidatable(schemer, 0)
    s.liquidate(adl_keeper, victim)
    recorded = s.liquidator.deficit_record(victim, 0, BTC)[0]
    assert recorded > 0
    with pytest.raises(ModelRevert, match="no deficit recorded for this account in this market"):
        s.auto_deleverage(adl_keeper, BTC, [((schemer, 0), WAD)], (schemer, 0))
    [(_, _, haircut)] = s.auto_deleverage(adl_keeper, BTC, [((schemer, 0), 5 * WAD)], (victim, 0))
    assert haircut == recorded and s.vault.cash(victim, 0) == 0
    assert s.liquidator.deficit_record(victim, 0, BTC) == (0, 0, 0)


# ============================================================================================
# finding 3: a deficit nobody can cover is netted at once and written off
# ============================================================================================


def bankrupt_long(s: System, victim: str, keeper: str) -> int:
    """A BTC long gaps through its bankruptcy price; the insurance fund is empty."""
    s.deposit(victim, 2_500)
    s.trade(victim, BTC, WAD)
    publish(s, BTC, 36_000)
    s.liquidate(keeper, victim)
    return -s.vault.cash(victim, 0)


def test_a_deficit_without_any_adl_target_is_netted_at_once_then_written_off(s):
    """The review's crash replay left 52,700 USD of uncovered deficit on the books forever, the
    shares priced as if it did not exist. Now the liquidity vault's value nets it the moment it
    is recorded, and with no short left to deleverage anyone may write it off: the vault's cash
    pays the account back to zero, its value does not move again, and nothing is left."""
    victim, keeper = boa.env.generate_address("victim"), boa.env.generate_address("keeper")
    deficit = bankrupt_long(s, victim, keeper)
    assert deficit > 0 and s.liquidator.total_uncovered_deficit() == deficit
    assert s.liquidator.can_write_off(victim, 0, BTC)  # no short position: no ADL target
    indices = [s.exchange.index_price(m.id) for m in MARKETS]
    value_netted = s.exchange.liquidity_vault_value()
    assert value_netted == s.exchange.liquidity_vault_value_at(indices) - deficit
    paid = s.write_off(keeper, victim, BTC)
    assert paid == deficit and s.vault.cash(victim, 0) == 0
    assert s.liquidator.total_uncovered_deficit() == s.liquidator.uncovered_deficit(BTC) == 0
    assert s.exchange.liquidity_vault_value() == value_netted  # already netted: the write-off moves nothing
    assert {e.amount for e in s.last_logs if type(e).__name__ == "DeficitWrittenOff"} == {deficit}


def test_a_deficit_with_adl_targets_waits_for_its_grace_period(s):
    """While a profitable short exists ADL may still cover the deficit: a write-off is refused
    with the time it becomes possible, and accepted from then on."""
    victim, keeper, short = (boa.env.generate_address(n) for n in ("victim", "keeper", "short"))
    s.deposit(short, 10_000)
    s.trade(short, BTC, -WAD)
    deficit = bankrupt_long(s, victim, keeper)
    _, side, recorded_at = s.liquidator.deficit_record(victim, 0, BTC)
    assert side == 1 and not s.liquidator.can_write_off(victim, 0, BTC)
    grace = s.liquidator.deficit_grace_period()
    with pytest.raises(ModelRevert, match=f"write-off possible from {recorded_at + grace}"):
        s.write_off(keeper, victim, BTC)
    s.warp(grace)
    publish(s, BTC, 36_000)
    assert s.write_off(keeper, victim, BTC) == deficit
    assert s.liquidator.total_uncovered_deficit() == 0
