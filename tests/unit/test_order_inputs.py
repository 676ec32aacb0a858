"""Bad input to the order book: every refusal is a clear revert with its exact reason, and
nothing changes (cash, escrow, open orders, pending market orders, positions, the orders
themselves).

Commits, executions and cancellations go through `System` (tests/system.py), whose `mirror`
runs the reference model first and expects the contract to revert with the model's reason; the
tests here assert that reason exactly and compare a snapshot of the contracts' state before and
after. The inputs the model does not see (the round ids an executor names) are sent to the
contract directly.
"""

from __future__ import annotations


import boa
import pytest

from perpdex.model import ModelRevert
from perpdex.orders import (
    KIND_LIMIT,
    KIND_MARKET,
    KIND_STOP_LOSS,
    KIND_TAKE_PROFIT,
    MAX_OPEN_ORDERS,
    MAX_PRICE,
    MAX_TRIGGER_LIFETIME,
    order_id_of,
)
from system import System, fresh, usd

BTC = 0
WAD = 10**18
MAX_UINT = 2**256 - 1
FEE = 5 * WAD

pytestmark = pytest.mark.ignore_isolation


@pytest.fixture(scope="module")
def world(world):
    """The session's deployment plus the liquidity vault's capital."""
    with fresh(world) as s:
        s.lp_deposit(boa.env.generate_address("lp"), 1_000_000)
        yield s


@pytest.fixture
def s(system, trader):
    """A minute later with fresh rounds, a 5 USD execution fee and a trader with 10,000 USD."""
    system.warp(60)
    for market_id in system.aggregators:
        system.publish(market_id)
    system.set_order_params(execution_fee=FEE)
    system.deposit(trader, 10_000)
    return system


@pytest.fixture
def stranger():
    return boa.env.generate_address("stranger")


def snapshot(s: System, accounts: list) -> tuple:
    """What a refused call could have changed for `accounts`, read from the contracts."""
    orders = [
        tuple(s.order_book.order(order_id))
        for who, sub in accounts
        for order_id in s.order_book.open_orders(who, sub)
    ]
    return (
        [s.vault.cash(who, sub) for who, sub in accounts],
        [tuple(s.exchange.position_state(who, sub, m)) for who, sub in accounts for m in s.model.params],
        [tuple(s.order_book.open_orders(who, sub)) for who, sub in accounts],
        [s.order_book.pending_market_orders(who, sub) for who, sub in accounts],
        orders,
        s.vault.order_escrow_cash(),
        s.vault.liquidity_cash(),
        s.usdc.balanceOf(s.vault.address),
    )


def refused(s: System, action, reason: str) -> None:
    """`action` (a System call: model and contract) is refused with exactly `reason`, and the
    contracts' state is unchanged."""
    accounts = sorted(s.accounts)
    before = snapshot(s, accounts)
    with pytest.raises(ModelRevert) as refusal:
        action()
    assert refusal.value.reason == reason
    assert snapshot(s, accounts) == before


def contract_refused(s: System, who: str, action, reason: str) -> None:
    """`action` on the contract alone (inputs the model does not take), as `who`."""
    accounts = sorted(s.accounts)
    before = snapshot(s, accounts)
    with boa.env.prank(who), boa.reverts(reason):
        action()
    assert snapshot(s, accounts) == before


# ============================================================================================
# commit
# ============================================================================================

# name -> (commit arguments as a function of now, the reason as a function of now)
BAD_COMMITS = {
    "zero size": (lambda now: dict(size_delta=0), lambda now: "order: zero size"),
    "unknown market": (lambda now: dict(market_id=9), lambda now: "order: unknown market"),
    "unknown kind": (
        lambda now: dict(kind=4, trigger_price=usd(30_000)),
        lambda now: "order: unknown kind (0 market, 1 limit, 2 stop-loss, 3 take-profit)",
    ),
    "size above the max position size": (
        lambda now: dict(size_delta=-(10_000 * WAD + 1)),
        lambda now: f"order: size above the market's max position size of {10_000 * WAD} (WAD)",
    ),
    "market order with a trigger price": (
        lambda now: dict(trigger_price=usd(30_000)),
        lambda now: "order: a market order takes no trigger price",
    ),
    "trigger order without a trigger price": (
        lambda now: dict(kind=KIND_LIMIT, trigger_price=0),
        lambda now: "order: zero trigger price",
    ),
    "trigger price out of range": (
        lambda now: dict(kind=KIND_TAKE_PROFIT, size_delta=-WAD, acceptable_price=0, trigger_price=MAX_PRICE + 1),
        lambda now: "order: trigger price out of range",
    ),
    "sub-account out of range": (
        lambda now: dict(sub_account=2**32),
        lambda now: "order: sub-account above 2**32 - 1",
    ),
    "expiry in the past": (
        lambda now: dict(expiry=now - 1),
        lambda now: "order: expiry before the order can execute",
    ),
    "expiry at the commit": (
        lambda now: dict(expiry=now),
        lambda now: "order: expiry before the order can execute",
    ),
    "expiry when the delay ends": (
        lambda now: dict(expiry=now + 1),
        lambda now: "order: expiry before the order can execute",
    ),
    "market expiry beyond max_order_age": (
        lambda now: dict(expiry=now + 3601),
        lambda now: f"order: expiry after the latest allowed, {now + 3600}",
    ),
    "trigger expiry beyond a year": (
        lambda now: dict(kind=KIND_LIMIT, trigger_price=usd(30_000), expiry=now + MAX_TRIGGER_LIFETIME + 1),
        lambda now: f"order: expiry after the latest allowed, {now + MAX_TRIGGER_LIFETIME}",
    ),
}


@pytest.mark.parametrize("case", list(BAD_COMMITS))
def test_bad_commit_is_refused_and_changes_nothing(s, trader, case):
    arguments, reason = BAD_COMMITS[case]
    commit = dict(market_id=BTC, size_delta=WAD, acceptable_price=MAX_UINT, kind=KIND_MARKET)
    commit.update(arguments(s.now))
    refused(s, lambda: s.commit_order(trader, **commit), reason(s.now))


def test_expiry_bounds_themselves_are_accepted(s, trader):
    """The refusals above are one second away from what is accepted."""
    now = s.now
    market = s.commit_order(trader, BTC, WAD, expiry=now + 3600)
    assert s.order_book.order(market).expiry == now + 3600
    soonest = s.commit_order(trader, BTC, WAD, expiry=now + 2)
    assert s.order_book.order(soonest).expiry == now + 2
    limit = s.commit_order(trader, BTC, WAD, MAX_UINT, KIND_LIMIT, usd(30_000), expiry=now + MAX_TRIGGER_LIFETIME)
    assert s.order_book.order(limit).expiry == now + MAX_TRIGGER_LIFETIME
    top = s.commit_order(trader, BTC, -(10_000 * WAD), 0, KIND_LIMIT, MAX_PRICE)
    assert s.order_book.order(top).trigger_price == MAX_PRICE


def test_more_than_the_maximum_of_open_orders_is_refused(s, trader):
    for i in range(MAX_OPEN_ORDERS):
        s.commit_order(trader, BTC, usd("0.01"), MAX_UINT, KIND_LIMIT, usd(30_000 - i))
    refused(
        s,
        lambda: s.commit_order(trader, BTC, usd("0.01"), MAX_UINT, KIND_LIMIT, usd(29_000)),
        "order: too many open orders, the maximum is 16",
    )
    refused(s, lambda: s.commit_order(trader, BTC, usd("0.01")), "order: too many open orders, the maximum is 16")
    # the bound is per sub-account
    s.deposit(trader, 100, sub_account=1)
    s.commit_order(trader, BTC, usd("0.01"), sub_account=1)


def test_a_lower_configured_maximum_of_open_orders(s, trader, keeper):
    s.set_order_params(max_open_orders=3)
    ids = [s.commit_order(trader, BTC, usd("0.01"), MAX_UINT, KIND_LIMIT, usd(30_000 - i)) for i in range(3)]
    refused(
        s,
        lambda: s.commit_order(trader, BTC, usd("0.01")),
        "order: too many open orders, the maximum is 3",
    )
    # lowered below what is open: the open orders stay, new ones wait until enough have ended
    s.set_order_params(max_open_orders=2)
    assert s.order_book.open_orders(trader, 0) == ids
    s.cancel_order(trader, ids[0])
    refused(s, lambda: s.commit_order(trader, BTC, usd("0.01")), "order: too many open orders, the maximum is 2")
    s.cancel_order(trader, ids[1])
    s.commit_order(trader, BTC, usd("0.01"))


def test_fee_not_covered_by_cash_is_refused(s, trader, other_trader):
    s.deposit(other_trader, 4)
    refused(s, lambda: s.commit_order(other_trader, BTC, usd("0.01")), "vault: execution fee above cash")
    # only the cash is checked at commit: a position whose margin holds all the collateral can
    # still get a stop-loss (its margin is checked when an order executes)
    s.trade(trader, BTC, usd(4))  # 160,000 USD of notional: 8,000 of initial margin
    free = s.exchange.withdrawable(trader, 0)
    s.withdraw(trader, free // 10**12 - 4 * 10**6)  # leaves 4 USD free
    assert 4 * WAD <= s.exchange.withdrawable(trader, 0) < FEE
    cash = s.vault.cash(trader, 0)
    assert cash > 1_000 * WAD
    s.commit_order(trader, BTC, -usd(4), 0, KIND_STOP_LOSS, usd(30_000))
    assert s.vault.cash(trader, 0) == cash - FEE


# ============================================================================================
# cancel
# ============================================================================================


def test_nobody_cancels_someone_elses_open_order(s, trader, stranger):
    limit = s.commit_order(trader, BTC, usd("0.1"), MAX_UINT, KIND_LIMIT, usd(30_000))
    expiry = s.order_book.order(limit).expiry
    refused(s, lambda: s.cancel_order(stranger, limit), f"order: not expired; anyone may cancel it from {expiry + 3600}")
    market = s.commit_order(trader, BTC, usd("0.1"))
    expiry = s.order_book.order(market).expiry
    refused(
        s,
        lambda: s.cancel_order(stranger, market),
        f"order: a market order cannot be cancelled before it expires at {expiry}",
    )


# ============================================================================================
# execute and cancel what is not there
# ============================================================================================


def test_unknown_order_ids_are_refused(s, trader, keeper):
    round_id = s.aggregators[BTC].latestRound()
    never = order_id_of(trader, 0, 3, 1)  # a slot never used
    past_slots = order_id_of(trader, 0, 16, 1)  # there are 16 slots
    for order_id in (never, past_slots, 0, 12345):
        contract_refused(s, keeper, lambda: s.order_book.execute_order(order_id, [round_id]), "order: unknown order")
        refused(s, lambda: s.cancel_order(keeper, order_id), "order: unknown order")
        with boa.reverts("order: unknown order"):
            s.order_book.order(order_id)
    # a committed order's id with the next sequence number, or another sub-account
    order_id = s.commit_order(trader, BTC, usd("0.1"))
    for other in (order_id + (1 << 200), order_id_of(trader, 1, 0, 1)):
        contract_refused(s, keeper, lambda: s.order_book.execute_order(other, [round_id]), "order: unknown order")
        refused(s, lambda: s.cancel_order(trader, other), "order: unknown order")


def test_an_executed_order_cannot_execute_or_be_cancelled_again(s, trader, keeper):
    order_id = s.commit_order(trader, BTC, usd("0.1"))
    s.warp(1)
    round_id = s.publish(BTC)
    s.execute_order(order_id, round_id, executor=keeper)
    refused(s, lambda: s.execute_order(order_id, round_id, executor=keeper), "order: not open")
    refused(s, lambda: s.cancel_order(trader, order_id), "order: not open")
    assert s.vault.cash(keeper, 0) == FEE  # paid once


@pytest.mark.parametrize("how", ["expired-and-cancelled", "cancelled-at-execution"])
def test_a_cancelled_market_order_cannot_execute_or_be_cancelled_again(s, trader, keeper, how):
    if how == "expired-and-cancelled":
        order_id = s.commit_order(trader, BTC, usd("0.1"))
        s.warp(3600)
        round_id = s.publish(BTC)
        s.cancel_order(keeper, order_id)
    else:
        order_id = s.commit_order(trader, BTC, usd(100))  # beyond the margin
        s.warp(1)
        round_id = s.publish(BTC)
        assert not s.execute_order(order_id, round_id, executor=keeper).filled
    refused(s, lambda: s.execute_order(order_id, round_id, executor=keeper), "order: not open")
    refused(s, lambda: s.cancel_order(keeper, order_id), "order: not open")
    refused(s, lambda: s.cancel_order(trader, order_id), "order: not open")
    assert s.vault.cash(keeper, 0) == FEE


def test_an_owner_cancelled_trigger_order_cannot_be_cancelled_again(s, trader, stranger):
    limit = s.commit_order(trader, BTC, usd("0.1"), MAX_UINT, KIND_LIMIT, usd(30_000))
    s.cancel_order(trader, limit)
    refused(s, lambda: s.cancel_order(trader, limit), "order: not open")
    refused(s, lambda: s.cancel_order(stranger, limit), "order: not open")


# ============================================================================================
# the rounds an executor names (the contract checks them; the model takes a price)
# ============================================================================================


def test_wrong_rounds_are_refused_and_change_nothing(s, trader, keeper):
    order_id = s.commit_order(trader, BTC, usd("0.1"))
    s.warp(1)
    round_id = s.publish(BTC)
    execute = s.order_book.execute_order
    contract_refused(s, keeper, lambda: execute(order_id, []), "oracle: one round id per feed expected")
    contract_refused(s, keeper, lambda: execute(order_id, [round_id, round_id]), "oracle: one round id per feed expected")
    contract_refused(s, keeper, lambda: execute(order_id, [round_id + 1]), "aggregator: no data")  # not yet published
    contract_refused(s, keeper, lambda: execute(order_id, [1]), "oracle: no previous round")
    # a round older than the feed's heartbeat is refused by the oracle (the order stays open)
    limit = s.commit_order(trader, BTC, usd("0.1"), MAX_UINT, KIND_LIMIT, usd(39_000))
    s.warp(1)
    with boa.env.prank(s.owner):
        s.aggregators[BTC].update_answer(38_900 * 10**8)
    crossing = s.aggregators[BTC].latestRound()
    s.model.index[BTC] = usd(38_900)
    s.warp(3601)
    s.set_price(BTC, 38_900)
    contract_refused(s, keeper, lambda: execute(limit, [crossing]), "oracle: stale price")
    assert s.order_book.order(limit).state == 1
