"""What the invariant-7 machine (tests/fuzz/test_invariant7.py) found, shown failing now: an
executor's power to place its own liquidity-vault flows inside a round (docs/SECURITY.md,
finding 9).

Orders, liquidations and LP requests of one oracle round execute in whatever order their
executors send them. An attacker that could execute LP requests would place its own deposit
before the round's fee-paying orders (its shares take part of the fees the honest round leaves
to the other LPs), or its own redemption before a liquidation that books a loss (it leaves at
the price before the loss). Nothing is mispriced — each flow is priced at the share price of
the moment it executes — so the fix is who places the flows: only the LP executor role
executes a request from its `not_before`, and perpdex's keeper runs its liquidations and order
executions before its LP flows. Anyone else may execute from `OPEN_EXECUTION_AFTER` later, so a
dead keeper delays flows and never traps them.

Each test replays the attack's steps: the attacker's own execution is refused with the
contract's sentence, and the keeper's order leaves the attacker no better off and the seed LP
no worse off than the honest round. Every step runs on the contracts and the reference model,
compared to the wei (tests/system.py).
"""

from __future__ import annotations

import boa
import pytest

from perpdex.config import load_markets
from perpdex.fixed_point import WAD
from perpdex.model import ModelRevert
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


def open_at(s: System, request_id: int) -> int:
    return s.model.lp_request(request_id).not_before + s.liquidity_vault.OPEN_EXECUTION_AFTER()


def test_an_attacker_cannot_place_its_deposit_before_the_rounds_fees(s):
    """The attacker requests a 10M USD deposit beside the 10M USD vault; an honest trader
    commits a 100 BTC market buy (at 40,000 the taker fee is ~2,400 USD, 80 % of it, ~1,920
    USD, to the liquidity vault). At the round the attacker executes the order and tries to
    execute its deposit first: refused, it is no LP executor. Placed first, the deposit would
    have taken ~960 USD of the fee (shown on a copy by granting it the role); the keeper
    executes it after the order, and the attacker's shares are worth what it paid while the
    seed LP keeps the whole fee, as in the honest round."""
    trader = boa.env.generate_address("trader")
    s.deposit(trader, 1_000_000)
    assets = s.fund_lp(s.attacker, SEED)
    request_id = s.request_deposit(s.attacker, assets)
    order_id = s.commit_order(trader, BTC, 100 * WAD)
    round_id = next_round(s)
    with fresh(s) as honest:
        honest.execute_order(order_id, round_id, executor=s.attacker)
        seed_honest = lp_wealth(honest, honest.seed_lp)
    with fresh(s) as unguarded:  # what the attack took before the role
        unguarded.set_lp_executor(s.attacker, True)
        unguarded.execute_lp(request_id, executor=s.attacker)
        unguarded.execute_order(order_id, round_id, executor=s.attacker)
        taken = seed_honest - lp_wealth(unguarded, unguarded.seed_lp)
        assert 900 * WAD < taken < 1_000 * WAD
    with pytest.raises(ModelRevert, match=f"only an LP executor may execute before {open_at(s, request_id)}"):
        s.execute_lp(request_id, executor=s.attacker)
    fill = s.execute_order(order_id, round_id, executor=s.attacker)
    assert fill.filled and s.model.last_trade.fee > 2_400 * WAD  # the taker fee
    assert s.execute_lp(request_id).executed  # the keeper (the LP executor), after the round's order
    assert share_value(s, s.model.lv_shares[s.attacker]) <= assets * SCALE
    assert lp_wealth(s, s.seed_lp) >= seed_honest


def test_an_attacker_cannot_redeem_ahead_of_a_bankruptcys_liquidation(s):
    """The attacker holds half the vault's shares and requests to redeem them; a 1 BTC long
    with 2,500 USD gaps to 36,000 and goes bankrupt (the insurance fund is empty: the deficit is
    netted from the vault's value at once). At that round the attacker tries to execute its
    redemption before it liquidates: refused. Placed first, the redemption would have left
    ~756 USD of its share of the loss to the seed LP (shown on a copy by granting the role); the
    keeper liquidates first and redeems after, and the attacker bears its half of the loss, as
    in the honest round (its shares still pending there)."""
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
    with fresh(s) as unguarded:  # what the attack took before the role
        unguarded.set_lp_executor(s.attacker, True)
        unguarded.execute_lp(request_id, executor=s.attacker)
        unguarded.liquidate(s.attacker, victim)
        escaped = seed_honest - lp_wealth(unguarded, unguarded.seed_lp)
        assert 700 * WAD < escaped < 800 * WAD
    with pytest.raises(ModelRevert, match="only an LP executor may execute before"):
        s.execute_lp(request_id, executor=s.attacker)
    s.liquidate(s.attacker, victim)
    assert s.execute_lp(request_id).executed  # the keeper, after the round's liquidation
    assert lp_wealth(s, s.attacker) <= attacker_honest
    assert lp_wealth(s, s.seed_lp) >= seed_honest
