"""The keeper's off-chain computations against the reference model, with no chain.

`Snapshot.health` is the model's `account_view` inlined over cached positions (the keeper's hot
loop over every account); it must give the same equity, initial and maintenance requirements
to the wei, and the same liquidation verdict, for any account in any market state. The ADL
plans the keeper builds must replay on the full model without a revert and do what the trigger
asks."""

import random
from dataclasses import replace

import pytest

from perpdex.config import load_markets
from perpdex.fixed_point import WAD
from perpdex.keeper import (
    TRIGGER_DEFICIT,
    TRIGGER_PNL_FACTOR,
    AccountState,
    Snapshot,
    plan_deficit_adl,
    plan_pnl_factor_adl,
    realized_at_index,
    replay_adl,
    smallest_close,
    states_from_model,
)
from perpdex.model import INSURANCE_FUND, LIQUIDITY_VAULT, ExchangeModel, MarketState, Position

MARKETS, GLOBALS = load_markets()
BTC, ETH = 0, 1
START = 1_700_000_000


def listed_model(**overrides) -> ExchangeModel:
    model = ExchangeModel(**{"globals": GLOBALS, "now": START, **overrides})
    for m in MARKETS:
        model.index[m.id] = int(m.initial_price) * WAD
        model.list_market(m.id, m.params)
    return model


def random_model(rng: random.Random, accounts: int) -> ExchangeModel:
    """Arbitrary (not trade-reachable) states: any sizes, bases, funding snapshots and cash,
    markets with any skew, funding accumulator and time since their last touch."""
    model = listed_model()
    for m in MARKETS:
        base = int(m.initial_price) * WAD
        model.index[m.id] = base * rng.randint(50, 150) // 100 + rng.randint(0, WAD)
        model.markets[m.id] = MarketState(
            long_oi=rng.randint(0, 10**4) * WAD // 7,
            short_oi=rng.randint(0, 10**4) * WAD // 7,
            funding_per_unit=rng.randint(-10**21, 10**21),
            last_funding_time=START - rng.choice([0, 1, 3599, 86_400]),
        )
    for i in range(accounts):
        owner = f"0x{i:040x}"
        account = (owner, rng.randint(0, 3))
        model.cash[account] = rng.randint(-500, 8_000) * WAD + rng.randint(0, WAD)
        for m in MARKETS:
            if rng.random() < 0.7:
                size = rng.choice([1, -1]) * rng.randint(1, 10**23 // int(m.initial_price))  # up to 100,000 USD
                entry = int(m.initial_price) * WAD * rng.randint(80, 120) // 100
                basis = size * entry // WAD + rng.randint(-3, 3)
                snapshot = model.markets[m.id].funding_per_unit - rng.randint(-10**20, 10**20)
                model.positions[(account, m.id)] = Position(size, basis, snapshot)
    return model


def near_threshold(rng: random.Random, model: ExchangeModel) -> None:
    """Move cash so that equity sits within a few wei of maintenance: both verdicts occur."""
    for account in [a for a in model.cash if isinstance(a, tuple)]:
        view = model.account_view(account)
        if view.maintenance:
            model.cash[account] += view.maintenance - view.equity + rng.randint(-2, 2)


@pytest.mark.parametrize("seed", range(8))
def test_health_equals_the_model_for_random_accounts(seed):
    rng = random.Random(seed)
    model = random_model(rng, 120)
    if seed % 2:
        near_threshold(rng, model)
    snapshot = Snapshot(model)
    states = states_from_model(model)
    evaluation = snapshot.evaluate(states)

    verdicts = set()
    for account, state in states.items():
        view = model.account_view(account)
        health = snapshot.health(state)
        assert (health.equity, health.initial, health.maintenance) == (view.equity, view.initial, view.maintenance)
        assert health.liquidatable == model.is_liquidatable(account)
        assert (account in evaluation.liquidatable) == model.is_liquidatable(account)
        verdicts.add(health.liquidatable)
    assert verdicts == {True, False}
    assert evaluation.liquidatable == sorted(evaluation.liquidatable)


def test_health_equals_the_model_after_trades_funding_and_a_price_move():
    """Trade-reachable states: the model trades, time passes, prices move."""
    rng = random.Random(7)
    model = listed_model()
    model.lp_deposit("lp", 5_000_000 * 10**6)
    traders = [(f"0x{i:040x}", i % 3) for i in range(40)]
    for account in traders:
        model.deposit(account, rng.randint(1_000, 20_000) * 10**6)
        for m in MARKETS:
            if rng.random() < 0.8:
                notional = rng.randint(1, 10) * model.account_view(account).equity
                size = rng.choice([1, -1]) * notional * WAD // model.index[m.id]
                if size:
                    try:
                        model.trade(account, m.id, size, 2**256 - 1 if size > 0 else 0)
                    except Exception:
                        pass  # beyond the margin: skipped, as the contract would revert
    model.now += 5 * 3600
    model.index[BTC] = model.index[BTC] * 93 // 100
    model.index[ETH] = model.index[ETH] * 108 // 100

    snapshot = Snapshot(model)
    states = states_from_model(model)
    evaluation = snapshot.evaluate(states)
    assert evaluation.liquidatable, "the price move makes some accounts liquidatable"
    for account in traders:
        view = model.account_view(account)
        if account in states and states[account].positions:
            assert snapshot.health(states[account]) == (view.equity, view.initial, view.maintenance)
        assert (account in evaluation.liquidatable) == model.is_liquidatable(account)


def test_unpriced_market_and_bankrupt_accounts_are_set_apart():
    model = listed_model()
    priced, unpriced, bankrupt = ("0x" + "a" * 40, 0), ("0x" + "b" * 40, 0), ("0x" + "c" * 40, 1)
    model.cash.update({priced: 1_000 * WAD, unpriced: 1_000 * WAD, bankrupt: -7 * WAD})
    model.positions[(priced, BTC)] = Position(WAD, 40_000 * WAD, 0)
    model.positions[(unpriced, ETH)] = Position(WAD, 2_000 * WAD, 0)
    del model.index[ETH]  # the oracle has no valid ETH price

    snapshot = Snapshot(model)
    states = states_from_model(model)
    evaluation = snapshot.evaluate(states)
    assert snapshot.health(states[unpriced]) is None
    assert evaluation.unpriced == [unpriced]
    assert evaluation.bankrupt == [bankrupt]
    assert set(evaluation.health) == {priced}


def test_smallest_close_realizes_just_enough():
    size, basis, index = 3 * WAD, 3 * 40_000 * WAD, 44_000 * WAD  # 12,000 profit at the index
    amount = smallest_close(size, basis, index, 5_000 * WAD)
    assert realized_at_index(size, basis, amount, index) >= 5_000 * WAD
    assert realized_at_index(size, basis, amount - 1, index) < 5_000 * WAD
    assert smallest_close(size, basis, index, 13_000 * WAD) == size  # not enough: all of it
    short = smallest_close(-size, -basis, 36_000 * WAD, 1_000 * WAD)
    assert realized_at_index(-size, -basis, short, 36_000 * WAD) >= 1_000 * WAD


def bankrupt_world() -> tuple[ExchangeModel, tuple, list]:
    """A BTC long gaps through its bankruptcy price with an empty insurance fund: the rest of
    its loss is an uncovered deficit on the long side; three shorts are in profit."""
    model = listed_model(globals=replace(GLOBALS, insurance_fee_share=0))
    model.lp_deposit("lp", 1_000_000 * 10**6)
    victim = ("0x" + "1" * 40, 0)
    shorts = [("0x" + "2" * 40, 0), ("0x" + "3" * 40, 0), ("0x" + "4" * 40, 2)]
    model.deposit(victim, 6_600 * 10**6)
    model.trade(victim, BTC, 3 * WAD, 2**256 - 1)
    for i, account in enumerate(shorts):
        model.deposit(account, (5_000 + 3_000 * i) * 10**6)
        model.trade(account, BTC, -WAD * (5 - i) // 5, 0)
    model.index[BTC] = 36_000 * WAD
    model.liquidate(victim, "keeper")
    assert model.cash_of(INSURANCE_FUND) == 0 and model.uncovered_deficit[BTC] > 0
    return model, victim, shorts


def test_deficit_plan_ranks_by_score_covers_the_deficit_and_replays():
    model, victim, shorts = bankrupt_world()
    snapshot = Snapshot(model)
    states = states_from_model(model)
    evaluation = snapshot.evaluate(states)
    assert evaluation.bankrupt == [victim]

    plan = plan_deficit_adl(snapshot, states, BTC, victim)
    assert plan.trigger == TRIGGER_DEFICIT and plan.bankrupt == victim
    scores = [t.score for t in plan.targets]
    assert scores == sorted(scores, reverse=True)
    assert scores == [model.adl_score(t.account, BTC)[0] for t in plan.targets]
    assert {t.account for t in plan.targets} <= set(shorts) and len(plan.targets) >= 2
    # every target but the last closes fully; the last only what the deficit still needs
    assert all(t.size == abs(states[t.account].positions[BTC][0]) for t in plan.targets[:-1])
    assert plan.targets[-1].size < abs(states[plan.targets[-1].account].positions[BTC][0])

    deficit = model.uncovered_deficit[BTC]
    results = replay_adl(snapshot, states, plan)  # on a copy: the snapshot is untouched
    assert sum(haircut for _, _, haircut in results) == deficit
    assert model.uncovered_deficit[BTC] == deficit

    model.auto_deleverage(BTC, [(t.account, t.size) for t in plan.targets], victim)  # the full model agrees
    assert model.uncovered_deficit[BTC] == 0 and model.cash_of(victim) == 0


def test_pnl_factor_plan_brings_the_factor_under_target():
    model = listed_model(max_pnl_factor=WAD // 50, target_pnl_factor=WAD // 100)  # 2 % / 1 %
    model.lp_deposit("lp", 1_000_000 * 10**6)
    longs = [("0x" + "5" * 40, 0), ("0x" + "6" * 40, 1), ("0x" + "7" * 40, 0)]
    for i, account in enumerate(longs):
        model.deposit(account, 40_000 * 10**6)
        model.trade(account, BTC, (i + 2) * WAD, 2**256 - 1)
    model.index[BTC] = 46_000 * WAD
    assert model.pnl_factor(BTC) > model.max_pnl_factor

    snapshot = Snapshot(model)
    states = states_from_model(model)
    plan = plan_pnl_factor_adl(snapshot, states, BTC)
    assert plan.trigger == TRIGGER_PNL_FACTOR
    replay_adl(snapshot, states, plan)
    model.auto_deleverage(BTC, [(t.account, t.size) for t in plan.targets], (None, 0))
    assert model.pnl_factor(BTC) <= model.target_pnl_factor
    # no more than needed: without the last target's close the factor would still be above target
    assert len(plan.targets) < len(longs) or plan.targets[-1].size < abs(states[plan.targets[-1].account].positions[BTC][0])


def test_no_plan_without_a_trigger():
    model = listed_model()
    model.lp_deposit("lp", 1_000_000 * 10**6)
    trader = ("0x" + "8" * 40, 0)
    model.deposit(trader, 10_000 * 10**6)
    model.trade(trader, BTC, WAD, 2**256 - 1)
    snapshot = Snapshot(model)
    states = states_from_model(model)
    assert plan_pnl_factor_adl(snapshot, states, BTC) is None
    assert snapshot.model.cash_of(LIQUIDITY_VAULT) == model.cash_of(LIQUIDITY_VAULT)
    assert isinstance(states[trader], AccountState) and states[trader].positions[BTC][0] == WAD
