"""What the invariant-7 machine (tests/fuzz/test_invariant7.py) found: the executor's power to
place its own liquidity-vault flows inside a round.

A keeper executes LP requests and orders at the same oracle round in any order it likes. An
attacker that is also the executor can place its own deposit before the round's fee-paying
orders (or a liquidation that books a gain for the vault), or its own redemption before a
liquidation that books a loss. Nothing is mispriced — each flow is priced at the share price at
the moment it executes — but the attacker's flow shares in (or escapes) what the rest of the
round books, which the honest round without the attacker's requests leaves to the honest LPs.
DESIGN.md invariant 7 says no sequence of LP flows and executions at one index takes value from
the liquidity vault's other LPs. No O(1) on-chain rule fixes the order inside one second
without letting anyone who executes an LP request block the second's trades and liquidations
(docs/SECURITY.md, finding 9, and docs/DECISIONS.md, Liquidity vault): it is an open, bounded
limitation. These tests pin its bound — the flow's pro-rata share of what the rest of the
round books, and nothing at all in the order perpdex's keeper uses (the round's trades and
liquidations first, LP flows last) — so that a change to either shows up.

Every step runs on the contracts and the reference model, compared to the wei (tests/system.py).
"""

from __future__ import annotations

import boa
import pytest

from perpdex.config import load_markets
from perpdex.fixed_point import WAD
from system import System, fresh

from fuzz.invariant7_actions import lp_wealth, share_value

MARKETS, GLOBALS = load_markets()
BTC, ETH = 0, 1
SEED = 10_000_000  # USD in the liquidity vault, from an honest LP
SCALE = 10**12

pytestmark = pytest.mark.ignore_isolation


@pytest.fixture(scope="module")
def lv_world():
    """config/markets.json's markets and globals, a 10M USD liquidity vault from an honest LP, an
    empty insurance fund."""
    eoa = boa.env.eoa
    with boa.env.anchor():
        s = System()
        for m in MARKETS:
            s.list_market(m.id, m.symbol, int(m.initial_price), m.params)
        s.set_globals(**GLOBALS.__dict__)
        s.seed_lp = boa.env.generate_address("seed_lp")
        s.lp_deposit(s.seed_lp, SEED)
        yield s
    boa.env.eoa = eoa


@pytest.fixture
def s(lv_world, request):
    with fresh(lv_world) as system:
        system.attacker = boa.env.generate_address("attacker")
        yield system
        if not getattr(request.node, "rep_call_failed", False):
            system.check_invariants()
            system.assert_system_matches()


def next_round(s: System) -> int:
    """The round every request and order committed a delay ago executes at (same prices)."""
    s.warp(max(s.model.order_params.min_order_delay, s.model.lp.params.min_delay))
    s.publish(ETH)
    return s.publish(BTC)


def test_limitation_a_deposit_placed_before_the_rounds_fees_shares_them_pro_rata(s):
    """The attacker requests a 10M USD deposit; an honest trader commits a 100 BTC market buy
    (at 40,000 the taker fee is ~2,400 USD, 80 % of it, ~1,920 USD, to the liquidity vault).
    At the round, the attacker (the executor) executes its deposit first, then the order: its
    shares, half the vault, take ~960 USD of the fee that the honest round leaves to the seed LP.
    That is the bound: the deposit's share of the vault times what the round booked after it.
    In the keeper's order (the order first, the deposit last) the deposit gains nothing."""
    trader = boa.env.generate_address("trader")
    s.deposit(trader, 1_000_000)
    assets = s.fund_lp(s.attacker, SEED)
    request_id = s.request_deposit(s.attacker, assets)
    order_id = s.commit_order(trader, BTC, 100 * WAD)
    round_id = next_round(s)
    with fresh(s) as honest:
        honest.execute_order(order_id, round_id, executor=s.attacker)
        seed_honest = lp_wealth(honest, honest.seed_lp)
    with fresh(s) as keeper_order:
        keeper_order.execute_order(order_id, round_id, executor=s.attacker)
        keeper_order.execute_lp(request_id, executor=s.attacker)
        shares = keeper_order.model.lv_shares[s.attacker]
        assert share_value(keeper_order, shares) <= assets * SCALE
        assert lp_wealth(keeper_order, keeper_order.seed_lp) >= seed_honest
    value_before = s.model.liquidity_vault_value()
    s.execute_lp(request_id, executor=s.attacker)
    booked_before = s.model.liquidity_vault_value()
    fill = s.execute_order(order_id, round_id, executor=s.attacker)
    assert fill.filled and s.model.last_trade.fee > 2_400 * WAD  # the taker fee
    booked = s.model.liquidity_vault_value() - booked_before  # what the order booked to the vault
    assert booked_before - value_before == assets * SCALE and booked > 0
    shares = s.model.lv_shares[s.attacker]
    edge = share_value(s, shares) - assets * SCALE
    seed_loss = seed_honest - lp_wealth(s, s.seed_lp)
    assert 900 * WAD < seed_loss < 1_000 * WAD and abs(edge - seed_loss) < seed_loss // 50
    assert 0 < edge <= booked * shares // s.model.lv_supply + WAD // 100  # to the cent


def test_limitation_a_redemption_placed_before_a_bankruptcy_escapes_its_share(s):
    """The attacker holds half the vault's shares and requests to redeem them; a 1 BTC long
    with 2,500 USD gaps to 36,000 and goes bankrupt (the insurance fund is empty: the deficit is
    netted from the vault's value at once). At that round the attacker executes its redemption
    first, then liquidates: it leaves at the price before the loss, and the seed LP, who in the
    honest round (without the attacker's request, its shares still pending) shares the loss
    half and half, bears all of it. The bound: the redeemed share of the vault times the loss.
    In the keeper's order (the liquidation first, the redemption last) nothing escapes."""
    victim = boa.env.generate_address("victim")
    s.lp_deposit(s.attacker, SEED)
    s.deposit(victim, 2_500)
    s.trade(victim, BTC, WAD)
    shares = s.model.lv_shares[s.attacker]
    request_id = s.request_redeem(s.attacker, shares)
    s.warp(1)
    s.set_price(BTC, 36_000)
    s.publish(ETH)
    assert s.liquidator.is_liquidatable(victim, 0)
    with fresh(s) as honest:
        honest.liquidate(s.attacker, victim)
        assert honest.model.total_uncovered_deficit > 0
        attacker_honest = lp_wealth(honest, s.attacker)
        seed_honest = lp_wealth(honest, honest.seed_lp)
    with fresh(s) as keeper_order:
        keeper_order.liquidate(s.attacker, victim)
        keeper_order.execute_lp(request_id, executor=s.attacker)
        assert lp_wealth(keeper_order, s.attacker) <= attacker_honest
        assert lp_wealth(keeper_order, keeper_order.seed_lp) >= seed_honest
    supply = s.model.lv_supply
    s.execute_lp(request_id, executor=s.attacker)
    before = s.model.liquidity_vault_value()
    s.liquidate(s.attacker, victim)
    loss = before - s.model.liquidity_vault_value()
    escaped = lp_wealth(s, s.attacker) - attacker_honest
    seed_loss = seed_honest - lp_wealth(s, s.seed_lp)
    assert 700 * WAD < seed_loss < 800 * WAD and abs(escaped - seed_loss) < seed_loss // 50
    assert 0 < escaped <= loss * shares // supply + WAD // 100  # to the cent (the share price rounds)
