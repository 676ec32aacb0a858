"""DESIGN.md invariant 6, cost independent of scale: depositing, committing a market order,
executing it (opening a position) and withdrawing cost the same gas whether 10 or 1,000 other
accounts hold positions.

The two worlds differ only in how many accounts hold positions: the extra 990 are half long,
half short, so the market's skew (hence fill price and funding) is the same in both, and every
storage slot the measured transactions touch is non-zero in both (same SSTORE pricing), except
the new trader's own, which is new in both. Each measurement runs in a snapshot that is rolled
back, with the same new trader, after the same time has passed.
"""

import boa
import pytest

from perpdex.orders import KIND_MARKET
from perpdex.sim.evm import fast_evm
from system import System

BTC, ETH = 0, 1
WAD = 10**18
USDC = 10**6
MAX_UINT = 2**256 - 1
SIZE = WAD // 10

# the test isolates itself with explicit anchors (see test_trading.py on the boa plugin)
pytestmark = [pytest.mark.ignore_isolation, pytest.mark.metered]


def _commit(s: System, size: int, market_id: int) -> tuple[int, int]:
    """A market order of the caller's sub-account 0, accepting any price: (order id, market)."""
    acceptable = MAX_UINT if size > 0 else 0
    return s.order_book.commit_order(0, market_id, size, acceptable, KIND_MARKET, 0, False, 0), market_id


def _publish(s: System, market_id: int) -> int:
    """A new round of the market's feed at the current answer; its round id."""
    agg = s.aggregators[market_id]
    with boa.env.prank(s.owner):
        agg.update_answer(agg.latestAnswer())
    return agg.latestRound()


def _execute_all(s: System, orders: list[tuple[int, int]]) -> None:
    """Let the orders' delay pass, publish one round per market and execute every order there."""
    boa.env.time_travel(seconds=s.model.order_params.min_order_delay)
    rounds = {market_id: _publish(s, market_id) for market_id in {m for _, m in orders}}
    with boa.env.prank(s.executor):
        for order_id, market_id in orders:
            assert s.order_book.execute_order(order_id, [rounds[market_id]])


def _open_positions(s: System, longs: int, shorts: int) -> tuple[int, int]:
    """`longs` + `shorts` new wallets, each depositing and opening 0.1 BTC through a market
    order; every tenth also 1 ETH on the same side (cross margin). Returns the ETH (long, short)
    sizes opened. Their transactions are the setting, not what is measured: they run on the
    simulator's interpreter (perpdex.sim.evm: the same opcodes on the same state, without gas
    metering or tracing); `_measure` runs on titanoboa's own."""
    with fast_evm():
        return _open_positions_now(s, longs, shorts)


def _open_positions_now(s: System, longs: int, shorts: int) -> tuple[int, int]:
    eth = [0, 0]
    orders = []
    for i in range(longs + shorts):
        who = boa.env.generate_address()
        size = SIZE if i < longs else -SIZE
        with boa.env.prank(who):
            s.usdc.faucet(10_000 * USDC)
            s.usdc.approve(s.vault.address, MAX_UINT)
            s.vault.deposit(0, 10_000 * USDC)
            orders.append(_commit(s, size, BTC))
            if i % 10 == 0:  # some accounts are cross-margined in two markets
                orders.append(_commit(s, WAD if size > 0 else -WAD, ETH))
                eth[size < 0] += WAD
    _execute_all(s, orders)
    return eth[0], eth[1]


def _gas(contract) -> int:
    return contract._computation.get_gas_used()


def _measure(s: System, trader) -> dict[str, int]:
    """Gas of a new trader's deposit, first market order (commit, then execution by a keeper at
    the next round) and withdrawal, in a rolled-back snapshot."""
    with boa.env.anchor():
        boa.env.time_travel(seconds=60)  # a new block: funding accrues at the execution
        for market_id in s.aggregators:
            _publish(s, market_id)
        with boa.env.prank(trader):
            s.usdc.faucet(10_000 * USDC)
            s.usdc.approve(s.vault.address, MAX_UINT)
            s.vault.deposit(0, 10_000 * USDC)
            gas = {"deposit": _gas(s.vault)}
            order_id, _ = _commit(s, SIZE, BTC)
            gas["commit_order"] = _gas(s.order_book)
        boa.env.time_travel(seconds=s.model.order_params.min_order_delay)
        round_id = _publish(s, BTC)
        with boa.env.prank(s.executor):
            assert s.order_book.execute_order(order_id, [round_id])
            gas["execute_order"] = _gas(s.order_book)
            [executed] = [e for e in s.order_book.get_logs() if type(e).__name__ == "OrderExecuted"]
        with boa.env.prank(trader):
            s.vault.withdraw(0, 1_000 * USDC)
            gas["withdraw"] = _gas(s.vault)
        # the measured calls did what they should
        assert s.exchange.position_state(trader, 0, BTC)[0] == SIZE
        assert s.usdc.balanceOf(trader) == 1_000 * USDC
        gas["fill"] = executed.fill_price
    return gas


def test_gas_is_independent_of_the_number_of_accounts(trader):
    eoa = boa.env.eoa
    with boa.env.anchor():
        s = System()
        s.list_market(BTC, "BTC-USD", 40_000)
        s.list_market(ETH, "ETH-USD", 2_000)

        eth = _open_positions(s, longs=6, shorts=4)  # skew +0.2 BTC, so funding accrues
        assert tuple(s.exchange.open_interest(BTC)) == (6 * SIZE, 4 * SIZE)
        assert tuple(s.exchange.open_interest(ETH)) == eth
        small = _measure(s, trader)

        more = _open_positions(s, longs=495, shorts=495)  # 990 more: 1,000 accounts with positions
        assert tuple(s.exchange.open_interest(BTC)) == (501 * SIZE, 499 * SIZE)
        assert tuple(s.exchange.open_interest(ETH)) == (eth[0] + more[0], eth[1] + more[1])
        large = _measure(s, trader)
    boa.env.eoa = eoa

    print(f"gas with 10 / 1,000 accounts: {small} / {large}")
    assert small["fill"] == large["fill"]  # same skew: same market conditions
    for op in ("deposit", "commit_order", "execute_order", "withdraw"):
        assert small[op] > 0
        assert abs(large[op] - small[op]) <= small[op] // 100, (op, small[op], large[op])
