"""The owner behind the Timelock (contracts/Timelock.vy): a hostile parameter change is public
the moment it is scheduled and lands only after the delay, so traders close and withdraw first;
proposer, executor and canceller roles hold; the old owner account can no longer act.

The `system` deployment is handed over as `ape run deploy` does it: ownership offered to a
timelock with a minimum delay of 0, which accepts every contract, sets its final delay and is
left to its roles in one operation (perpdex/deploy.py)."""

from dataclasses import dataclass, replace

import boa
import pytest

from perpdex.fixed_point import WAD
from perpdex.governance import Call, Operation, salt
from system import params_tuple, usd

BTC = 0
DELAY = 86_400  # the timelock's minimum delay, as on a real network
OWNED = ("oracle", "vault", "exchange", "liquidity_vault", "liquidator", "insurance_fund", "order_book")
NOT_OWNER = "ownable: caller is not the owner"
MISSING_ROLE = "access_control: account is missing role"
NOT_READY = "timelock_controller: operation is not ready"


def calldata(contract, method: str, *args) -> bytes:
    return getattr(contract, method).prepare_calldata(*args)


@dataclass
class Governed:
    """The system with its timelock and the timelock's role holders."""

    s: object
    timelock: object
    proposer: str
    executor: str
    canceller: str

    def call(self, contract, method: str, *args) -> Call:
        return Call(contract.address, calldata(contract, method, *args))

    def schedule(self, calls: list[Call], delay: int = DELAY, n: int = 0) -> Operation:
        op = Operation(tuple(calls), salt=salt(n))
        with boa.env.prank(self.proposer):
            if op.is_batch:
                self.timelock.schedule_batch(*op.args(), delay)
            else:
                self.timelock.schedule(*op.args(), delay)
        return op

    def execute(self, op: Operation, sender: str | None = None) -> None:
        with boa.env.prank(sender or self.executor):
            if op.is_batch:
                self.timelock.execute_batch(*op.args())
            else:
                self.timelock.execute(*op.args())

    def wait_and_republish(self, seconds: int) -> None:
        """Time passes; the feeds publish again (the index stays fresh)."""
        self.s.warp(seconds)
        for market_id in list(self.s.aggregators):
            self.s.publish(market_id)


@pytest.fixture
def proposer():
    return boa.env.generate_address("proposer")


@pytest.fixture
def executor():
    return boa.env.generate_address("executor")


@pytest.fixture
def guardian():
    return boa.env.generate_address("guardian")


@pytest.fixture
def governed(system, proposer, executor, guardian):
    s = system
    s.lp_deposit(s.owner, 1_000_000)  # the liquidity vault seeded at launch, before the handover
    zero = "0x" + "00" * 20
    timelock = boa.load("contracts/Timelock.vy", 0, [s.owner], [s.owner], zero)
    g = Governed(s, timelock, s.owner, s.owner, guardian)
    calls = []
    with boa.env.prank(s.owner):
        for name in OWNED:
            getattr(s, name).transfer_ownership(timelock.address)
            calls.append(g.call(getattr(s, name), "accept_ownership"))
    roles = [("PROPOSER_ROLE", proposer), ("CANCELLER_ROLE", proposer), ("EXECUTOR_ROLE", executor),
             ("CANCELLER_ROLE", guardian)]
    calls += [g.call(timelock, "grantRole", getattr(timelock, role)(), who) for role, who in roles]
    calls += [g.call(timelock, "revokeRole", getattr(timelock, role)(), s.owner)
              for role in ("PROPOSER_ROLE", "CANCELLER_ROLE", "EXECUTOR_ROLE")]
    calls.append(g.call(timelock, "update_delay", DELAY))
    bootstrap = g.schedule(calls, delay=0)
    g.execute(bootstrap)
    g.proposer, g.executor = proposer, executor
    return g


def hostile_params(s):
    """Maintenance margin and penalty at their hard bounds (20 %, 2 %); initial above both."""
    return replace(s.model.params[BTC], maintenance_margin_ratio=WAD // 5, liquidation_penalty_ratio=WAD // 50,
                   initial_margin_ratio=WAD * 3 // 10)


def open_long(s, who: str, collateral_usd: int, leverage: int) -> int:
    s.deposit(who, collateral_usd)
    size = usd(collateral_usd * leverage) * WAD // (40_000 * WAD)
    s.trade(who, BTC, size)
    return size


# ---------------------------------------------------------------------------------------------


def test_handover_leaves_every_contract_to_the_timelock_with_its_delay_and_roles(governed, proposer, executor):
    s, tl = governed.s, governed.timelock
    assert all(getattr(s, name).owner() == tl.address for name in OWNED)
    assert tl.get_minimum_delay() == DELAY
    assert tl.hasRole(tl.PROPOSER_ROLE(), proposer) and tl.hasRole(tl.EXECUTOR_ROLE(), executor)
    assert tl.hasRole(tl.CANCELLER_ROLE(), governed.canceller)
    for role in ("PROPOSER_ROLE", "CANCELLER_ROLE", "EXECUTOR_ROLE", "DEFAULT_ADMIN_ROLE"):
        assert not tl.hasRole(getattr(tl, role)(), s.owner), f"the deploying account kept {role}"


def test_operation_ids_match_the_contract(governed):
    """perpdex.governance hashes operations exactly as the timelock does (an operator can check
    an id before sending anything)."""
    s, tl = governed.s, governed.timelock
    one = Operation((governed.call(s.exchange, "set_global_params", 0, 0, 0, 0),), salt=salt(7))
    assert one.id == tl.hash_operation(*one.args())
    batch = Operation((governed.call(s.exchange, "set_paused", True), governed.call(s.oracle, "accept_ownership")),
                      predecessor=one.id)
    assert batch.id == tl.hash_operation_batch(*batch.args())


def test_hostile_change_is_public_at_once_and_lands_only_after_the_delay(governed, trader, other_trader, keeper):
    """Finding 5, replayed against the timelock: the owner raises maintenance margin, penalty
    and the keeper share to their bounds and wants to liquidate everyone with its own keeper.
    The change is in the logs the moment it is scheduled; nobody is liquidatable before the
    delay; a trader who reads it closes and withdraws in between; after the delay the change
    lands and only the trader who stayed at 10x is liquidated (the 1x trader stays healthy)."""
    s, tl = governed.s, governed.timelock
    leaver, stayer, careful = trader, other_trader, boa.env.generate_address("careful_trader")
    open_long(s, leaver, 10_000, 10)
    stayer_size = open_long(s, stayer, 10_000, 10)
    open_long(s, careful, 10_000, 1)
    hostile = hostile_params(s)
    g = s.model.globals
    hostile_globals = (g.insurance_fee_share, g.protocol_fee_share, g.keeper_min_reward, WAD // 2)
    calls = [governed.call(s.exchange, "set_market_params", BTC, params_tuple(hostile)),
             governed.call(s.exchange, "set_global_params", *hostile_globals)]
    op = governed.schedule(calls)

    # everyone sees what is coming: the scheduled calls, their calldata and the delay
    scheduled = [e for e in tl.get_logs() if type(e).__name__ == "CallScheduled"]
    assert [(e.target, bytes(e.payload), e.delay) for e in scheduled] == [
        (c.target, c.payload, DELAY) for c in calls
    ]
    assert tl.get_timestamp(op.id) == s.now + DELAY

    # the owner's keeper cannot act on it yet: not executable, nobody liquidatable
    for early in (0, DELAY - 1):
        governed.wait_and_republish(early)
        with boa.reverts(NOT_READY):
            governed.execute(op)
        for who in (leaver, stayer, careful):
            assert not s.liquidator.is_liquidatable(who, 0)
            with boa.reverts("liquidator: account healthy"), boa.env.prank(keeper):
                s.liquidator.liquidate(who, 0)
    assert s.exchange.market_params(BTC).maintenance_margin_ratio == s.model.params[BTC].maintenance_margin_ratio

    # in between (the clock is at DELAY - 1 s), the leaver closes and takes everything out
    s.trade(leaver, BTC, -s.exchange.position_state(leaver, 0, BTC)[0])
    free = s.exchange.withdrawable(leaver, 0)
    s.withdraw(leaver, free // 10**12)
    assert s.vault.cash(leaver, 0) < 10**12 and s.exchange.open_markets(leaver, 0) == 0
    received = s.usdc.balanceOf(leaver)  # 10,000 USD less fees and a day of funding

    # the delay has passed: the change lands, for everyone at once
    governed.wait_and_republish(1)
    governed.execute(op)
    s.model._accrue(BTC)
    s.model.params[BTC] = hostile
    s.model.globals = replace(g, keeper_reward_share=WAD // 2)
    assert s.exchange.market_params(BTC).maintenance_margin_ratio == WAD // 5
    assert s.exchange.keeper_reward_share() == WAD // 2

    # the 10x trader who stayed is now liquidatable; the 1x trader is not; the leaver is gone
    assert s.liquidator.is_liquidatable(stayer, 0)
    s.liquidate(keeper, stayer)
    assert s.exchange.position_state(stayer, 0, BTC)[0] != stayer_size
    assert not s.liquidator.is_liquidatable(careful, 0)
    # the same position, the same day: leaving before the change kept more than staying
    assert received * 10**12 > s.exchange.equity(stayer, 0), (received, s.exchange.equity(stayer, 0))
    assert s.usdc.balanceOf(leaver) == received


def test_only_proposers_schedule_and_only_executors_execute(governed, attacker):
    s, tl = governed.s, governed.timelock
    change = [governed.call(s.liquidator, "set_adl_keeper", attacker, True)]
    op = Operation(tuple(change))
    for outsider in (attacker, governed.executor, s.owner):
        with boa.reverts(MISSING_ROLE), boa.env.prank(outsider):
            tl.schedule(*op.args(), DELAY)
    with boa.reverts("timelock_controller: insufficient delay"), boa.env.prank(governed.proposer):
        tl.schedule(*op.args(), DELAY - 1)
    governed.schedule(change)
    governed.wait_and_republish(DELAY)
    for outsider in (attacker, governed.proposer, s.owner):
        with boa.reverts(MISSING_ROLE):
            governed.execute(op, sender=outsider)
    assert not s.liquidator.adl_keeper(attacker)
    governed.execute(op)
    assert s.liquidator.adl_keeper(attacker)
    with boa.reverts("timelock_controller: operation is not ready"):
        governed.execute(op)  # done: not twice


def test_the_delay_and_roles_change_only_through_the_timelock(governed, attacker):
    tl = governed.timelock
    with boa.reverts("timelock_controller: caller must be timelock"), boa.env.prank(governed.proposer):
        tl.update_delay(0)
    with boa.reverts(MISSING_ROLE), boa.env.prank(governed.proposer):
        tl.grantRole(tl.PROPOSER_ROLE(), attacker)
    assert tl.get_minimum_delay() == DELAY and not tl.hasRole(tl.PROPOSER_ROLE(), attacker)


def test_a_canceller_stops_a_scheduled_change(governed, attacker):
    s, tl = governed.s, governed.timelock
    before = s.exchange.market_params(BTC).maintenance_margin_ratio
    op = governed.schedule([governed.call(s.exchange, "set_market_params", BTC, params_tuple(hostile_params(s)))])
    with boa.reverts(MISSING_ROLE), boa.env.prank(attacker):
        tl.cancel(op.id)
    with boa.env.prank(governed.canceller):  # the guardian, granted the canceller role at the handover
        tl.cancel(op.id)
    assert not tl.is_operation(op.id)
    governed.wait_and_republish(DELAY)
    with boa.reverts(NOT_READY):
        governed.execute(op)
    assert s.exchange.market_params(BTC).maintenance_margin_ratio == before


def test_the_old_owner_account_can_no_longer_act(governed):
    s = governed.s
    p = params_tuple(hostile_params(s))
    attempts = {
        "exchange.set_market_params": lambda: s.exchange.set_market_params(BTC, p),
        "exchange.set_global_params": lambda: s.exchange.set_global_params(0, 0, 0, WAD // 2),
        "exchange.list_market": lambda: s.exchange.list_market(5, "X-USD", [(s.aggregators[BTC].address, 3600)], 0, p),
        "oracle.set_configurator": lambda: s.oracle.set_configurator(s.owner),
        "vault.set_fee_receiver": lambda: s.vault.set_fee_receiver(s.owner),
        "liquidator.set_adl_keeper": lambda: s.liquidator.set_adl_keeper(s.owner, True),
        "insurance_fund.withdraw_surplus": lambda: s.insurance_fund.withdraw_surplus(s.owner, 1),
        "order_book.set_order_params": lambda: s.order_book.set_order_params((1, 3600, 0, 16)),
        "exchange.transfer_ownership": lambda: s.exchange.transfer_ownership(s.owner),
    }
    for name, attempt in attempts.items():
        with boa.reverts(NOT_OWNER), boa.env.prank(s.owner):
            attempt()
    assert all(getattr(s, name).owner() == governed.timelock.address for name in OWNED)
